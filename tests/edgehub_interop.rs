//! The module against independent peers: an edgeHub stand-in made with Qpid Proton (TLS,
//! `$cbs`, token checks as edgeHub makes them), a workload API stand-in on a unix socket, and
//! the official Azure IoT Node.js SDK sending through the same stand-ins as the reference for
//! the wire contract. Audit input comes from a replay source (a capture served on a unix
//! socket as auditd's af_unix plugin serves it); the real auditd is covered by tests/live.rs.
//!
//! These tests need /usr/bin/python3 with python3-qpid-proton, openssl and Node.js with the
//! SDK installed in tests/standin/node (`.ci/run` installs them); without them they fail.

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::audit_feed::AuditFeed;
use support::standin::{
    self, Certs, DEVICE, EdgeHub, EdgeHubOptions, HUB, KEY, MODULE, Module, Workload, hub_options,
};

/// base64("module-key-for-the-interop-tests")
/// base64("a-different-key")
const OTHER_KEY: &str = "YS1kaWZmZXJlbnQta2V5";

/// Tests that bind the fixed AMQPS port 5671 (a connection string straight to a hub has no
/// port) take this lock.
static PORT_5671: Mutex<()> = Mutex::new(());

struct Setup {
    dir: tempfile::TempDir,
    certs: Certs,
    workload: Workload,
    hub: EdgeHub,
}

fn setup(workload_key: &str, opts: EdgeHubOptions) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), workload_key, MODULE, "g1", &certs.ca);
    let hub = EdgeHub::start(dir.path(), &certs, &opts);
    Setup {
        dir,
        certs,
        workload,
        hub,
    }
}

/// The module's environment: IoT Edge's, a replay audit socket, a data dir, the most
/// verbose logging.
fn module_env(s: &Setup, feed: &AuditFeed, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = standin::edge_env(&s.workload, HUB, DEVICE, MODULE, s.hub.port);
    env.push((
        "AZUREIOTSECURITY_AUDIT__SOCKET_PATH".into(),
        feed.path.display().to_string(),
    ));
    env.push((
        "AZUREIOTSECURITY_MODULE__DATA_DIR".into(),
        s.dir.path().join("data").display().to_string(),
    ));
    env.push(("RUST_LOG".into(), "trace".into()));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    env
}

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(support::root().join("tests/data").join(name)).unwrap()
}

/// The connection ids of the records, in order of first appearance.
fn conns(records: &[Value]) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for r in records {
        if r["kind"] == "connection" {
            out.push(r["conn"].as_u64().unwrap());
        }
    }
    out
}

fn only(records: &[Value], kind: &str, conn: u64) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["kind"] == kind && r["conn"] == conn)
        .cloned()
        .collect()
}

/// What of a link's properties must agree: the keys and the AMQP types of keys and values
/// (the values name the client and its version, so they differ by design).
fn property_shape(v: &Value) -> BTreeMap<String, (String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, p)| {
                    (
                        k.clone(),
                        (
                            p["key_type"].as_str().unwrap_or("").to_owned(),
                            p["value_type"].as_str().unwrap_or("").to_owned(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn secrets_absent(output: &str, what: &str) {
    for needle in [KEY, "sig=", "SharedAccessSignature", "\"digest\""] {
        assert!(
            !output.contains(needle),
            "{what}: the output contains {needle:?}; it must never show keys, signatures or tokens"
        );
    }
}

/// The twin's `hubResourceId` in the wire test (synthetic: the shape of an IoT hub's id).
const HUB_RESOURCE_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/hub";

#[test]
fn module_wire_equals_the_node_sdks_and_messages_arrive_valid() {
    let mut opts = hub_options(0);
    opts.twin_desired = serde_json::json!({
        "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration": {
            "hubResourceId": {"value": HUB_RESOURCE_ID}
        }
    });
    let s = setup(KEY, opts);
    let env = standin::edge_env(&s.workload, HUB, DEVICE, MODULE, s.hub.port);

    // The reference: the official Node SDK, the way a module sends a security message, with
    // the application properties the classic C# agent adds (`message.properties.add`).
    let node = standin::node_send_with(
        &env,
        r#"{"AgentVersion":"node-sdk","Events":[]}"#,
        "8d6c1a4e-7b1f-5c3a-9e2d-0f1e2d3c4b5a",
        &[
            ("MessagePriority", "Low"),
            ("HubResourceId", HUB_RESOURCE_ID),
        ],
    );
    assert!(
        node.status.success(),
        "the Node SDK failed: {}{}",
        String::from_utf8_lossy(&node.stdout),
        String::from_utf8_lossy(&node.stderr)
    );
    let recs = s
        .hub
        .wait("the SDK's message", Duration::from_secs(20), |r| {
            r.iter().any(|x| x["kind"] == "message")
        });
    let sdk_conn = conns(&recs)[0];

    // The module, on a replayed capture, stopped with SIGTERM once connected: it flushes
    // what it derived and sends it before it exits.
    let feed = AuditFeed::start(s.dir.path(), capture("exec_args.log"));
    let mut module = Module::start(s.dir.path(), "wire", &module_env(&s, &feed, &[]), &["run"]);
    let recs = s.hub.wait(
        "the module's telemetry link",
        Duration::from_secs(30),
        |r| {
            conns(r).len() == 2
                && r.iter().any(|x| {
                    x["kind"] == "attach"
                        && x["conn"] == conns(r)[1]
                        && x["role"] == "sender"
                        && x["address"] != "$cbs"
                })
        },
    );
    let mod_conn = conns(&recs)[1];
    // The twin's configuration is in force once the module reported it (its PATCH).
    s.hub.wait(
        "the module's reported properties",
        Duration::from_secs(30),
        |r| {
            r.iter().any(|x| {
                x["kind"] == "twin-request" && x["conn"] == mod_conn && x["operation"] == "PATCH"
            })
        },
    );
    std::thread::sleep(Duration::from_secs(2)); // the replay is read and coalesced
    let st = module.stop(Duration::from_secs(10));
    assert!(
        st.success(),
        "the module exits 0 on SIGTERM: {st:?}\n{}",
        module.output()
    );
    let recs = s.hub.records();
    let output = module.output();

    // Open: hostname and idle-timeout as the SDK's.
    let open = |c| only(&recs, "connection", c)[0].clone();
    let (sdk_open, mod_open) = (open(sdk_conn), open(mod_conn));
    assert_eq!(mod_open["hostname"], sdk_open["hostname"]);
    assert_eq!(mod_open["hostname"], "localhost");
    assert_eq!(mod_open["idle_timeout_ms"], sdk_open["idle_timeout_ms"]);

    // CBS: one valid put-token each, same type, same name, same audience, same shapes.
    let put = |c| {
        let p = only(&recs, "put-token", c);
        assert_eq!(p.len(), 1, "one put-token on connection {c}: {p:#?}");
        p[0].clone()
    };
    let (sdk_put, mod_put) = (put(sdk_conn), put(mod_conn));
    assert_eq!(sdk_put["token_valid"], true, "{sdk_put}");
    assert_eq!(mod_put["token_valid"], true, "{mod_put}");
    for field in [
        "operation",
        "type",
        "name",
        "audience",
        "app_property_types",
        "body_type",
        "message_id_type",
        "reply_to",
        "status",
    ] {
        assert_eq!(mod_put[field], sdk_put[field], "put-token {field}");
    }
    assert_eq!(
        mod_put["audience"],
        format!("{HUB}/devices/{DEVICE}/modules/{MODULE}")
    );

    // The telemetry link: same address, same property keys and types.
    let events_link = |c| {
        let a: Vec<Value> = only(&recs, "attach", c)
            .into_iter()
            // The module's connection also carries the twin's sender link.
            .filter(|a| {
                a["role"] == "sender"
                    && a["address"]
                        .as_str()
                        .is_some_and(|x| x.ends_with("/messages/events"))
            })
            .collect();
        assert_eq!(a.len(), 1, "one telemetry link on connection {c}: {a:#?}");
        a[0].clone()
    };
    let (sdk_link, mod_link) = (events_link(sdk_conn), events_link(mod_conn));
    assert_eq!(mod_link["address"], sdk_link["address"]);
    assert_eq!(
        mod_link["address"],
        format!("/devices/{DEVICE}/modules/{MODULE}/messages/events")
    );
    assert_eq!(
        property_shape(&mod_link["properties"]),
        property_shape(&sdk_link["properties"])
    );
    assert_eq!(mod_link["refused"], Value::Null);

    // Messages: properties and annotations as the SDK's.
    let sdk_msg = only(&recs, "message", sdk_conn)[0].clone();
    let mod_msgs = only(&recs, "message", mod_conn);
    assert!(!mod_msgs.is_empty(), "the module sent messages:\n{output}");
    assert_eq!(
        sdk_msg["application_properties"],
        serde_json::json!({"MessagePriority": "Low", "HubResourceId": HUB_RESOURCE_ID})
    );
    for m in &mod_msgs {
        for field in [
            "content_type",
            "content_encoding",
            "to",
            "message_id_type",
            "annotations",
            "application_property_types",
            "body_section",
        ] {
            assert_eq!(m[field], sdk_msg[field], "message {field}");
        }
        // The application properties: the same keys, string keys and values (above), the
        // twin's resource id, and the priority of what the message holds (High with any
        // event of a type High by default).
        let body: Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
        let high = body["Events"].as_array().unwrap().iter().any(|e| {
            ["ListeningPorts", "LocalUsers", "Login"].contains(&e["Name"].as_str().unwrap())
        });
        let priority = if high { "High" } else { "Low" };
        assert_eq!(
            m["application_properties"],
            serde_json::json!({"MessagePriority": priority, "HubResourceId": HUB_RESOURCE_ID}),
            "message {}",
            m["message_id"]
        );
        assert_eq!(
            m["annotations"]["iothub-interface-id"],
            serde_json::json!({"key_type": "symbol", "value": "urn:azureiot:Security:SecurityAgent:1", "value_type": "string"})
        );
        assert_eq!(m["outcome"], "accept");
    }
    let ids: std::collections::HashSet<_> =
        mod_msgs.iter().map(|m| m["message_id"].clone()).collect();
    assert_eq!(ids.len(), mod_msgs.len(), "message ids are unique");

    // What arrived is schema-valid and carries the capture's processes.
    let bodies: Vec<String> = mod_msgs
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    let verdicts = support::reference_validate(&bodies);
    assert!(verdicts.iter().all(|v| v == "ok"), "{verdicts:?}");
    let names: Vec<String> = bodies
        .iter()
        .flat_map(|b| {
            let v: Value = serde_json::from_str(b).unwrap();
            v["Events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["Name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(names.iter().any(|n| n == "ProcessCreate"), "{names:?}");

    // The most verbose logging shows no secret.
    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "logging was verbose"
    );
    assert!(output.contains("connected to edgeHub"), "{output}");
    secrets_absent(&output, "the module at trace level");
}

#[test]
fn a_wrong_signature_audience_or_expiry_is_refused_and_the_module_keeps_trying() {
    // (workload key, IoT Hub host name, clock skew of the stand-in, the reason expected)
    let cases: [(&str, &str, i64, &str); 3] = [
        (OTHER_KEY, HUB, 0, "signature"),
        (KEY, "other-hub.example.net", 0, "audience"),
        // A device clock over an hour behind: the 1-hour token is already expired.
        (KEY, HUB, -4000, "expired"),
    ];
    for (key, hub, skew, reason) in cases {
        let mut opts = hub_options(0);
        opts.clock_skew_secs = skew;
        let s = setup(key, opts);
        let feed = AuditFeed::start(s.dir.path(), capture("exec_args.log"));
        let mut env = module_env(
            &s,
            &feed,
            &[("AZUREIOTSECURITY_EDGEHUB__RECONNECT_MIN_MS", "200")],
        );
        for (k, v) in env.iter_mut() {
            if k == "IOTEDGE_IOTHUBHOSTNAME" {
                *v = hub.to_owned();
            }
        }
        let mut module = Module::start(s.dir.path(), reason, &env, &["run"]);
        let recs = s
            .hub
            .wait("two refused attaches", Duration::from_secs(30), |r| {
                r.iter()
                    .filter(|x| x["kind"] == "attach" && !x["refused"].is_null())
                    .count()
                    >= 2
            });
        let refused: Vec<&Value> = recs
            .iter()
            .filter(|x| x["kind"] == "attach" && !x["refused"].is_null())
            .collect();
        assert!(
            refused[0]["refused"].as_str().unwrap().contains(reason),
            "{reason}: {refused:?}"
        );
        assert!(
            recs.iter().all(|x| x["kind"] != "message"),
            "nothing is delivered on a refused link"
        );
        assert!(module.alive(), "the module keeps running");
        let st = module.stop(Duration::from_secs(10));
        assert!(st.success());
        let output = module.output();
        assert!(
            output.contains("edgeHub refused the telemetry link"),
            "{reason}: the log says why:\n{output}"
        );
        secrets_absent(&output, reason);
    }
}

#[test]
fn the_token_is_renewed_every_16_s_on_one_connection_and_nothing_is_lost() {
    let s = setup(KEY, hub_options(0));
    let feed = AuditFeed::start(s.dir.path(), capture("activity.log"));
    let env = module_env(
        &s,
        &feed,
        &[
            ("AZUREIOTSECURITY_EDGEHUB__TOKEN_LIFETIME_SECS", "20"),
            ("AZUREIOTSECURITY_MODULE__TRYOUT", "true"),
            ("RUST_LOG", "info"),
        ],
    );
    let started = Instant::now();
    let mut module = Module::start(s.dir.path(), "renew", &env, &["run"]);
    let recs = s.hub.wait(
        "three put-tokens and a message after the first token expired",
        Duration::from_secs(75),
        |r| {
            let puts: Vec<&Value> = r.iter().filter(|x| x["kind"] == "put-token").collect();
            let first_expiry = puts
                .first()
                .and_then(|p| p["expiry"].as_f64())
                .unwrap_or(f64::MAX);
            puts.len() >= 3
                && r.iter().any(|x| {
                    x["kind"] == "message" && x["time"].as_f64().unwrap_or(0.0) > first_expiry
                })
        },
    );
    let st = module.stop(Duration::from_secs(10));
    assert!(st.success());
    let recs_after = s.hub.records();
    assert!(started.elapsed() >= Duration::from_secs(20));
    assert_eq!(conns(&recs_after), [1], "one connection: {recs_after:#?}");
    let puts = only(&recs, "put-token", 1);
    assert!(puts.len() >= 3);
    assert!(puts.iter().all(|p| p["token_valid"] == true), "{puts:#?}");
    assert!(
        recs_after.iter().all(|x| x["kind"] != "closed"),
        "no transfer ever arrived on an expired token"
    );
    // Every message the module built was accepted: its count of deliveries equals what the
    // stand-in received, and none was released or rejected.
    let msgs = only(&recs_after, "message", 1);
    assert!(msgs.iter().all(|m| m["outcome"] == "accept"));
    let output = module.output();
    let line = output
        .lines()
        .rev()
        .find(|l| l.contains(" statistics ") && l.contains(" delivered="))
        .unwrap_or_else(|| panic!("no statistics line:\n{output}"));
    assert!(
        line.contains(&format!("delivered={} ", msgs.len())),
        "delivered = received ({}): {line}",
        msgs.len()
    );
    assert!(line.contains("rejected=0"), "{line}");
}

#[test]
fn connection_strings_for_local_debugging_reach_the_stand_in() {
    let _port = PORT_5671.lock().unwrap_or_else(|e| e.into_inner());
    // EdgeHubConnectionString + EdgeModuleCACertificateFile: through a gateway on a port.
    let s = setup(KEY, hub_options(0));
    let feed = AuditFeed::start(s.dir.path(), capture("exec_args.log"));
    let base = |extra: (&str, String)| -> Vec<(String, String)> {
        vec![
            (
                "AZUREIOTSECURITY_AUDIT__SOCKET_PATH".into(),
                feed.path.display().to_string(),
            ),
            (
                "AZUREIOTSECURITY_MODULE__DATA_DIR".into(),
                s.dir.path().join("data").display().to_string(),
            ),
            ("RUST_LOG".into(), "debug".into()),
            (
                "EdgeModuleCACertificateFile".into(),
                s.certs.ca.display().to_string(),
            ),
            (extra.0.to_owned(), extra.1),
        ]
    };
    let cs = format!(
        "HostName={HUB};DeviceId={DEVICE};ModuleId={MODULE};SharedAccessKey={KEY};GatewayHostName=localhost:{}",
        s.hub.port
    );
    let mut module = Module::start(
        s.dir.path(),
        "edgehub-cs",
        &base(("EdgeHubConnectionString", cs)),
        &["run"],
    );
    s.hub.wait_telemetry_link();
    std::thread::sleep(Duration::from_secs(1));
    assert!(module.stop(Duration::from_secs(10)).success());
    let recs = s.hub.records();
    assert!(
        recs.iter()
            .any(|x| x["kind"] == "put-token" && x["token_valid"] == true)
    );
    assert!(
        recs.iter()
            .any(|x| x["kind"] == "message" && x["outcome"] == "accept")
    );
    secrets_absent(&module.output(), "EdgeHubConnectionString");

    // IotHubConnectionString straight to "IoT Hub" (no gateway, so port 5671), the CA
    // overridden by EdgeModuleCACertificateFile.
    let mut opts = hub_options(5671);
    opts.hub = "localhost".into();
    let direct = EdgeHub::start(s.dir.path(), &s.certs, &opts);
    let cs =
        format!("HostName=localhost;DeviceId={DEVICE};ModuleId={MODULE};SharedAccessKey={KEY}");
    let mut module = Module::start(
        s.dir.path(),
        "iothub-cs",
        &base(("IotHubConnectionString", cs)),
        &["run"],
    );
    direct.wait_telemetry_link();
    std::thread::sleep(Duration::from_secs(1));
    assert!(module.stop(Duration::from_secs(10)).success());
    let recs = direct.records();
    let put = recs.iter().find(|x| x["kind"] == "put-token").unwrap();
    assert_eq!(
        put["audience"],
        format!("localhost/devices/{DEVICE}/modules/{MODULE}")
    );
    assert_eq!(put["token_valid"], true);
    assert!(
        recs.iter()
            .any(|x| x["kind"] == "message" && x["outcome"] == "accept")
    );
    secrets_absent(&module.output(), "IotHubConnectionString");
}

#[test]
fn released_is_resent_rejected_is_dropped_and_a_dropped_connection_resends() {
    let mut opts = hub_options(0);
    opts.outcomes = vec!["release", "reject", "drop"];
    let s = setup(KEY, opts);
    let feed = AuditFeed::start(s.dir.path(), capture("activity.log"));
    let env = module_env(
        &s,
        &feed,
        &[
            ("RUST_LOG", "info"),
            ("AZUREIOTSECURITY_EDGEHUB__RETRY_DELAY_MS", "100"),
            ("AZUREIOTSECURITY_EDGEHUB__RECONNECT_MIN_MS", "100"),
            ("AZUREIOTSECURITY_EDGEHUB__SHUTDOWN_GRACE_MS", "8000"),
        ],
    );
    let mut module = Module::start(s.dir.path(), "outcomes", &env, &["run"]);
    s.hub.wait_telemetry_link();
    std::thread::sleep(Duration::from_secs(2));
    // SIGTERM: the module builds its messages and sends them within the grace period.
    assert!(module.stop(Duration::from_secs(15)).success());
    let recs = s.hub.records();
    let msgs: Vec<(u64, String, String)> = recs
        .iter()
        .filter(|r| r["kind"] == "message")
        .map(|r| {
            (
                r["conn"].as_u64().unwrap(),
                r["message_id"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(msgs.len() >= 4, "{msgs:#?}\n{}", module.output());
    let (a, b) = (&msgs[0].1, &msgs[2].1);
    assert_ne!(a, b);
    assert_eq!(
        msgs[..4],
        [
            (1, a.clone(), "release".to_owned()),
            (1, a.clone(), "reject".to_owned()),
            (1, b.clone(), "drop".to_owned()),
            (2, b.clone(), "accept".to_owned()),
        ],
        "released: sent again with the same id; rejected: never again; dropped: resent on a new connection"
    );
    assert!(msgs[4..].iter().all(|m| m.1 != *a && m.2 == "accept"));
    let output = module.output();
    assert!(
        output.contains("edgeHub rejected a message")
            && output.contains("Message size exceeds the limit"),
        "the rejection is logged with edgeHub's reason:\n{output}"
    );
    let stats = output
        .lines()
        .rev()
        .find(|l| l.contains(" statistics ") && l.contains(" delivered="))
        .expect("statistics line");
    assert!(stats.contains("rejected=1 "), "{stats}");
    assert!(stats.contains("released_or_modified=1 "), "{stats}");
    assert!(
        stats.contains(&format!("delivered={} ", msgs.len() - 3)),
        "{stats}"
    );
}
