//! The twin link service (src/edge/amqp/twin.rs) against the Qpid Proton edgeHub stand-in,
//! which answers twin requests as edgeHub does, and compared frame by frame with the official
//! Node SDK's twin exchange on another stand-in in the same test (tests/standin/node/twin.js,
//! the reference `tests/standin_node.rs` checks on its own).
//!
//! The module has no twin command yet: the test drives the library directly (a `Connection`
//! running only the twin service on a Tokio runtime of its own, the test thread making the
//! requests and handling the stand-in).
//!
//! Needs `.venv` with python-qpid-proton (TLS), openssl and Node.js with the SDK installed:
//! scripts/install-test-deps.sh. Without them the tests fail, never skip.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azureiotsecurity::edge::amqp::twin::{self, Operation, TwinError, TwinEvent};
use azureiotsecurity::edge::amqp::{AmqpConfig, AmqpStats, Connection, Control};
use azureiotsecurity::edge::credentials::Credentials;
use serde_json::{Value, json};
use support::standin::{self, Certs, DEVICE, EdgeHub, HUB, KEY, MODULE, Workload, hub_options};
use tokio::sync::{mpsc, watch};

const CONFIG: &str = "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration";
/// The requester's timeout: short, so that the never-answered GET is quick to see.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

fn initial_desired() -> Value {
    json!({
        CONFIG: {
            "highPriorityMessageFrequency": {"value": "PT7M"},
            "eventPriorityProcessCreate": {"value": "Low"}
        },
        "$version": 4
    })
}

fn patches() -> [Value; 2] {
    [
        json!({CONFIG: {"highPriorityMessageFrequency": {"value": "PT10S"}}}),
        json!({CONFIG: {"eventPriorityProcessCreate": {"value": "Off"}}}),
    ]
}

fn with_version(p: &Value, v: i64) -> Value {
    let mut p = p.clone();
    p["$version"] = v.into();
    p
}

fn reported() -> Value {
    json!({"agent": {"version": "rust", "applied": 6}, "gone": null})
}

fn json_line(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn credentials(certs: &Certs, port: u16) -> Arc<Credentials> {
    certs.module_credentials(HUB, DEVICE, MODULE, KEY, port)
}

fn config() -> AmqpConfig {
    AmqpConfig {
        token_lifetime: Duration::from_secs(3600),
        idle_timeout: Duration::ZERO,
        connect_timeout: Duration::from_secs(5),
        request_timeout: REQUEST_TIMEOUT,
        send_timeout: Duration::from_secs(5),
        retry_delay: Duration::from_millis(50),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(400),
        output_name: None,
    }
}

fn next_event(
    rt: &tokio::runtime::Runtime,
    events: &mut mpsc::Receiver<TwinEvent>,
    what: &str,
) -> TwinEvent {
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(15), events.recv()).await })
        .unwrap_or_else(|_| panic!("no twin event within 15 s: waiting for {what}"))
        .expect("the twin service's event channel is open")
}

fn of<'a>(frames: &'a [Value], kind: &str, op: Option<&str>) -> Vec<&'a Value> {
    frames
        .iter()
        .filter(|r| r["kind"] == kind && op.is_none_or(|o| r["operation"] == o))
        .collect()
}

/// Keys and AMQP types of a typed map (the values name the client, so they differ).
fn shape(v: &Value) -> BTreeMap<String, (Value, Value)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, p)| (k.clone(), (p["key_type"].clone(), p["value_type"].clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn ends_with_uuid(name: &str) -> bool {
    name.len() > 36 && uuid::Uuid::parse_str(&name[name.len() - 36..]).is_ok()
}

/// The reference: the Node SDK's getTwin, reported update, GET, PUT and two patches.
fn node_sdk_frames(dir: &std::path::Path, certs: &Certs) -> Vec<Value> {
    let mut opts = hub_options(0);
    opts.twin_desired = initial_desired();
    let hub = EdgeHub::start(dir, certs, &opts);
    let workload = Workload::start(dir, KEY, MODULE, "g1", &certs.ca);
    let env = standin::edge_env(&workload, HUB, DEVICE, MODULE, hub.port);
    let mut node = standin::NodeTwin::start(dir, &env, 2, &reported());
    assert_eq!(
        json_line(&node.wait_line("desired", Duration::from_secs(30))),
        initial_desired()
    );
    node.wait_line("listening", Duration::from_secs(15));
    for p in patches() {
        hub.push_desired(p);
    }
    let status = node.finish(Duration::from_secs(20));
    assert!(status.success(), "{:#?} {}", node.seen, node.stderr_text());
    hub.wait("the SDK's disconnect", Duration::from_secs(10), |r| {
        r.iter().any(|x| x["kind"] == "disconnect")
    });
    hub.twin_frames()
}

/// The twin service on one connection: GET, PUT, two patches with their `$version`, a
/// reported PATCH merged, a local refusal, a 429 and a never-answered GET, then edgeHub
/// restarted (a new connection: Connected again, a new channel id, the twin read again); the
/// frames compared field by field with the Node SDK's.
#[test]
fn the_twin_link_gets_subscribes_receives_patches_reports_and_speaks_as_the_node_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let sdk = node_sdk_frames(dir.path(), &certs);

    let mut opts = hub_options(0);
    opts.twin_desired = initial_desired();
    let hub = EdgeHub::start(dir.path(), &certs, &opts);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (service, twin, mut events, stats) = twin::service(REQUEST_TIMEOUT, 8);
    assert_eq!(twin.timeout(), REQUEST_TIMEOUT);
    let amqp_stats = Arc::new(AmqpStats::default());
    let connection =
        Connection::new(credentials(&certs, hub.port), config(), amqp_stats.clone()).with(service);
    let (control, control_rx) = watch::channel(Control::Run);
    let task = rt.spawn(connection.run(control_rx));

    // 1. Attached: the caller is told a GET is due; the GET gives the stand-in's twin.
    assert_eq!(
        next_event(&rt, &mut events, "Connected"),
        TwinEvent::Connected
    );
    let doc = rt.block_on(twin.get()).expect("GET");
    assert_eq!(doc.desired, initial_desired());
    assert_eq!(doc.reported, json!({"$version": 1}));

    // 2. Subscribed; the patches pushed arrive in order with their $version.
    rt.block_on(twin.subscribe_desired()).expect("PUT");
    let [p1, p2] = patches();
    assert_eq!(
        hub.push_desired(p1.clone()),
        json!({"version": 5, "sent": 1})
    );
    assert_eq!(
        hub.push_desired(p2.clone()),
        json!({"version": 6, "sent": 1})
    );
    for (p, v) in [(&p1, 5), (&p2, 6)] {
        match next_event(&rt, &mut events, "a desired patch") {
            TwinEvent::Desired(d) => {
                assert_eq!(d.version, Some(v));
                assert_eq!(d.body, with_version(p, v));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stats.patches.load(std::sync::atomic::Ordering::Relaxed), 2);

    // 3. A reported patch, merged by the stand-in (null removes), read back by a GET.
    rt.block_on(twin.report(&reported())).expect("PATCH");
    let merged = json!({"agent": {"version": "rust", "applied": 6}, "$version": 2});
    assert_eq!(hub.twin()["reported"], merged);
    let doc = rt.block_on(twin.get()).expect("GET");
    assert_eq!(doc.reported, merged);
    assert_eq!(doc.desired["$version"], 6);

    // 4. A name edgeHub refuses is refused here, and never sent.
    let patches_sent = of(&hub.twin_frames(), "twin-request", Some("PATCH")).len();
    match rt.block_on(twin.report(&json!({"bad.name": 1}))) {
        Err(TwinError::Refused(why)) => assert!(why.contains("bad.name"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        of(&hub.twin_frames(), "twin-request", Some("PATCH")).len(),
        patches_sent
    );

    // 5. A 429 (an empty body) is a status error; a GET never answered times out; then the
    // links still serve.
    hub.fail_twin("GET", Some(429), 1);
    assert_eq!(
        rt.block_on(twin.get()),
        Err(TwinError::Status {
            status: 429,
            operation: Operation::Get
        })
    );
    hub.fail_twin("GET", None, 1);
    let asked = Instant::now();
    assert_eq!(
        rt.block_on(twin.get()),
        Err(TwinError::Timeout {
            operation: Operation::Get,
            after: REQUEST_TIMEOUT
        })
    );
    assert!(asked.elapsed() >= REQUEST_TIMEOUT);
    assert_eq!(rt.block_on(twin.get()).expect("GET").reported, merged);
    assert!(!task.is_finished());

    // The frames of this connection, compared with the SDK's.
    let frames = hub.twin_frames();
    compare_with_the_sdk(&frames, &sdk);

    // 6. edgeHub goes away and comes back on the same port: a new connection, Connected
    // again, a new channel id, and the twin (kept by the test: the stand-in's is new) read.
    let port = hub.port;
    let first_channel = frames
        .iter()
        .find(|r| r["kind"] == "attach")
        .map(|a| a["properties"]["com.microsoft:channel-correlation-id"]["value"].clone())
        .unwrap();
    drop(hub);
    let mut opts = hub_options(port);
    opts.twin_desired = json!({"k": 1, "$version": 9});
    let hub = EdgeHub::start(dir.path(), &certs, &opts);
    assert_eq!(
        next_event(&rt, &mut events, "Connected after the restart"),
        TwinEvent::Connected
    );
    let doc = rt.block_on(twin.get()).expect("GET after the reconnection");
    assert_eq!(doc.desired, json!({"k": 1, "$version": 9}));
    let again = hub.twin_frames();
    let attaches = of(&again, "attach", None);
    assert_eq!(attaches.len(), 2, "{again:#?}");
    let channels: Vec<&Value> = attaches
        .iter()
        .map(|a| &a["properties"]["com.microsoft:channel-correlation-id"]["value"])
        .collect();
    assert_eq!(channels[0], channels[1]);
    assert_ne!(
        channels[0], &first_channel,
        "a fresh channel id per connection"
    );

    control
        .send(Control::Finish {
            deadline: Instant::now() + Duration::from_secs(5),
        })
        .unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
        .expect("the connection finishes")
        .expect("no panic");
    assert!(
        AmqpStats::get(&amqp_stats.connects) >= 2,
        "{:?}",
        amqp_stats.connects
    );
}

/// Field by field: ours (`m`) against the Node SDK's (`s`).
fn compare_with_the_sdk(m: &[Value], s: &[Value]) {
    let address = format!("/devices/{DEVICE}/modules/{MODULE}/twin");
    let (ma, sa) = (of(m, "attach", None), of(s, "attach", None));
    assert_eq!(ma.len(), 2, "{m:#?}");
    assert_eq!(sa.len(), 2, "{s:#?}");
    // The sender first, then the receiver, as the SDK.
    let roles = |a: &[&Value]| a.iter().map(|x| x["role"].clone()).collect::<Vec<_>>();
    assert_eq!(roles(&ma), roles(&sa));
    assert_eq!(roles(&ma), [json!("sender"), json!("receiver")]);
    for (x, y) in ma.iter().zip(&sa) {
        for field in [
            "address",
            "source",
            "target",
            "snd_settle_mode",
            "rcv_settle_mode",
            "refused",
        ] {
            assert_eq!(x[field], y[field], "attach {field}: ours {x}\nSDK {y}");
        }
        assert_eq!(x["address"], address);
        assert_eq!(shape(&x["properties"]), shape(&y["properties"]), "{x}\n{y}");
        assert_eq!(
            x["properties"]["com.microsoft:api-version"]["value"],
            y["properties"]["com.microsoft:api-version"]["value"]
        );
        // Link names: a per-connection UUID at the end (rhea: rheaSender_<uuid>; ours
        // twin-sender-<uuid>, as the $cbs and events links are named).
        for n in [&x["name"], &y["name"]] {
            assert!(ends_with_uuid(n.as_str().unwrap()), "{n}");
        }
    }
    assert_ne!(ma[0]["name"], ma[1]["name"]);
    let channel = |a: &Value| {
        a["properties"]["com.microsoft:channel-correlation-id"]["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        channel(ma[0]),
        channel(ma[1]),
        "one channel id on both links"
    );
    let id = channel(ma[0]);
    let uuid = id.strip_prefix("twin:").expect("twin:<uuid>");
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{id}");
    assert!(
        of(m, "link-closed", None).is_empty(),
        "edgeHub closed a link: {m:#?}"
    );
    let (sender, receiver) = (&ma[0]["name"], &ma[1]["name"]);

    // Requests: each of ours as the SDK's request of the same operation.
    let requests = of(m, "twin-request", None);
    let ops: Vec<&str> = requests
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["GET", "PUT", "PATCH", "GET", "GET", "GET", "GET"],
        "{requests:#?}"
    );
    for r in &requests {
        let op = r["operation"].as_str().unwrap();
        let y = of(s, "twin-request", Some(op))[0];
        for field in [
            "annotations",
            "sections",
            "header",
            "body_sections",
            "correlation_id_type",
            "message_id",
            "message_id_type",
            "settled_by_client",
            "application_properties",
            "content_type",
            "content_encoding",
            "to",
            "resource",
        ] {
            assert_eq!(r[field], y[field], "{op} {field}: ours {r}\nSDK {y}");
        }
        let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
        assert_eq!(
            keys(&r["message_properties"]),
            keys(&y["message_properties"])
        );
        assert!(
            uuid::Uuid::parse_str(r["correlation_id"].as_str().unwrap()).is_ok(),
            "{r}"
        );
        assert_eq!(r["link"], *sender);
        match op {
            "PATCH" => assert_eq!(json_line(r["body"].as_str().unwrap()), reported()),
            _ => assert_eq!(r["body"], y["body"], "{op}: the SDK's one-space body"),
        }
    }
    // Correlation ids are fresh per request.
    let ids: std::collections::HashSet<&Value> =
        requests.iter().map(|r| &r["correlation_id"]).collect();
    assert_eq!(ids.len(), requests.len());

    // Replies came on our receiver, to our ids; the 429 and the unanswered GET as asked.
    let replies = of(m, "twin-reply", None);
    assert_eq!(replies.len(), requests.len() - 1, "one GET never answered");
    for a in &replies {
        assert_eq!(a["link"], *receiver, "{a}");
        assert!(
            requests
                .iter()
                .any(|r| r["correlation_id"] == a["correlation_id"]),
            "{a}"
        );
    }
    let statuses: Vec<&Value> = requests.iter().map(|r| &r["reply_status"]).collect();
    assert_eq!(
        statuses,
        [
            &json!(200),
            &json!(200),
            &json!(204),
            &json!(200),
            &json!(429),
            &Value::Null,
            &json!(200)
        ]
    );

    // Patches on our receiver, as they went to the SDK's.
    let (mp, sp) = (of(m, "twin-desired", None), of(s, "twin-desired", None));
    assert_eq!(mp.len(), 2);
    assert_eq!(sp.len(), 2);
    for (x, y) in mp.iter().zip(&sp) {
        assert_eq!(x["link"], *receiver);
        assert_eq!(x["sent"], true);
        for field in ["correlation_id", "annotations", "body"] {
            assert_eq!(x[field], y[field], "patch {field}");
        }
    }
}
