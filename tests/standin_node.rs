//! The IoT Edge stand-ins (tests/standin) against the official Azure IoT Node.js SDK
//! (azure-iot-device + azure-iot-device-amqp, pinned by tests/standin/node/package-lock.json)
//! used the way an IoT Edge module uses it: `ModuleClient.fromEnvironment(Amqp)` with the
//! IOTEDGE_* environment. The SDK's run must be accepted exactly as edgeHub would accept it
//! (shared/reference/iotedge-amqp.md §3, §5), and a token edgeHub would refuse must be
//! refused, so the stand-ins' checks are shown to fail when they should.
//!
//! The records of the accepted run are printed and saved as
//! `$CARGO_TARGET_TMPDIR/standin-node/sdk-edgehub.jsonl` and `sdk-workload.jsonl`: the
//! reference for comparing our module's wire behaviour field by field. The module twin
//! (tests/standin/node/twin.js: getTwin, a reported update, desired patches) is checked the
//! same way; its frames are saved as `sdk-twin.jsonl` (and `sdk-twin-fail.jsonl` for the
//! failures the control channel injects), the reference for issue 12's twin. The stand-in's
//! own twin rules that the SDK never exercises are checked with tests/standin/twin_client.py.
//!
//! Needs `.venv` with python-qpid-proton (TLS), openssl and Node.js with the SDK installed:
//! scripts/install-test-deps.sh. Without them the tests fail, never skip.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::standin::{self, Certs, EdgeHub, EdgeHubOptions, Workload};

/// base64("module-key-for-the-node-sdk-test")
const KEY: &str = "bW9kdWxlLWtleS1mb3ItdGhlLW5vZGUtc2RrLXRlc3Q=";
/// base64("some-other-module-key")
const OTHER_KEY: &str = "c29tZS1vdGhlci1tb2R1bGUta2V5";
const HUB: &str = "hub.example.net";
const DEVICE: &str = "dev1";
const MODULE: &str = "azureiotsecurity";
const BODY: &str = r#"{"AgentVersion":"node-sdk","AgentId":"00000000-0000-4000-8000-000000000001","MessageSchemaVersion":"1.0","Events":[]}"#;
const MESSAGE_ID: &str = "8d6c1a4e-7b1f-5c3a-9e2d-0f1e2d3c4b5a";

fn options(hub: &str, clock_skew_secs: i64) -> EdgeHubOptions {
    EdgeHubOptions {
        port: 0,
        key_b64: KEY.into(),
        hub: hub.into(),
        device: DEVICE.into(),
        module: MODULE.into(),
        outcomes: vec![],
        clock_skew_secs,
        twin_desired: json!({}),
        ..EdgeHubOptions::default()
    }
}

struct Run {
    _dir: tempfile::TempDir,
    hub: EdgeHub,
    workload: Workload,
    node: std::process::Output,
}

/// Certificates, both stand-ins, and one `node send.js` through them.
fn run(workload_key: &str, opts: EdgeHubOptions) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), workload_key, MODULE, "g1", &certs.ca);
    let hub = EdgeHub::start(dir.path(), &certs, &opts);
    // IOTEDGE_GATEWAYHOSTNAME=localhost:<port>: the SDK honours the port (see send.js).
    let env = standin::edge_env(&workload, HUB, DEVICE, MODULE, hub.port);
    let node = standin::node_send(&env, BODY, MESSAGE_ID);
    Run {
        _dir: dir,
        hub,
        workload,
        node,
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn of<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

fn one<'a>(records: &'a [Value], kind: &str) -> &'a Value {
    let v = of(records, kind);
    assert_eq!(v.len(), 1, "exactly one {kind:?} record: {records:#?}");
    v[0]
}

fn position(records: &[Value], r: &Value) -> usize {
    records.iter().position(|x| x == r).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn save(name: &str, records: &[Value]) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("standin-node");
    std::fs::create_dir_all(&dir).unwrap();
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.join(name), &lines).unwrap();
    println!("{} ({}):\n{lines}", name, dir.join(name).display());
}

#[test]
fn the_node_sdk_as_an_edge_module_is_accepted_like_edgehub_accepts_it() {
    let r = run(KEY, options(HUB, 0));
    assert!(
        r.node.status.success(),
        "the Node SDK failed: {}",
        text(&r.node)
    );
    let out = String::from_utf8_lossy(&r.node.stdout);
    assert_eq!(out.trim(), format!("sent {MESSAGE_ID} MessageEnqueued"));
    let recs = r
        .hub
        .wait("the SDK's disconnect", Duration::from_secs(10), |r| {
            r.iter().any(|x| x["kind"] == "disconnect")
        });
    let wl = r.workload.records();
    save("sdk-edgehub.jsonl", &recs);
    save("sdk-workload.jsonl", &wl);

    // Workload API (ref §5.2): the trust bundle, then one sign request for this module.
    assert_eq!(wl.len(), 2, "{wl:#?}");
    assert_eq!(
        (&wl[0]["method"], &wl[0]["path"], &wl[0]["status"]),
        (&json!("GET"), &json!("/trust-bundle"), &json!(200))
    );
    let sign = &wl[1];
    assert_eq!(sign["method"], "POST");
    assert_eq!(sign["path"], format!("/modules/{MODULE}/genid/g1/sign"));
    assert_eq!(sign["status"], 200);
    assert_eq!(sign["api_version"], "2018-06-28");
    assert_eq!(
        (&sign["key_id"], &sign["algo"]),
        (&json!("primary"), &json!("HMACSHA256"))
    );

    // Open: one connection, TLS, the gateway host name as the AMQP hostname.
    let conn = one(&recs, "connection");
    assert_eq!(conn["conn"], 1);
    assert_eq!(conn["hostname"], "localhost", "{conn}");
    assert!(
        conn["tls_protocol"].as_str().unwrap().starts_with("TLS"),
        "{conn}"
    );
    // rhea, as the SDK drives it for a SAS-token module, skips SASL (the AMQP header right
    // after TLS); the stand-in accepts that as edgeHub does.
    assert_eq!(conn["sasl"], Value::Null, "{conn}");

    // CBS put-token (ref §3.4).
    let put = one(&recs, "put-token");
    let audience = format!("{HUB}/devices/{DEVICE}/modules/{MODULE}");
    assert_eq!(put["operation"], "put-token");
    assert_eq!(put["type"], "servicebus.windows.net:sastoken");
    // The Node SDK puts the url-encoded audience in `name` (the same text as `sr`).
    assert_eq!(put["name"], audience.replace('/', "%2F"), "{put}");
    assert_eq!(put["audience"], audience);
    assert_eq!(
        put["app_property_types"],
        json!({"name": "string", "operation": "string", "type": "string"})
    );
    assert_eq!(put["body_type"], "string");
    assert_eq!(put["token_valid"], true, "{put}");
    assert_eq!(put["reason"], Value::Null);
    assert_eq!(put["status"], 200);
    assert_eq!(put["reply_to"], "cbs");
    assert_eq!(put["message_id_type"], "string");
    let expiry = put["expiry"].as_i64().unwrap();
    assert!(
        (now() + 3500..=now() + 3700).contains(&expiry),
        "a one-hour token: se={expiry}"
    );
    // The workload signed exactly `sr` + "\n" + se of this token.
    assert_eq!(
        sign["data"],
        format!("{}\n{expiry}", audience.replace('/', "%2F"))
    );
    let reply = one(&recs, "cbs-reply");
    assert_eq!(reply["correlation_id"], put["message_id"]);
    assert_eq!(reply["status"], 200);
    let cbs_receiver = of(&recs, "attach")
        .into_iter()
        .find(|a| a["role"] == "receiver" && a["address"] == "$cbs")
        .unwrap_or_else(|| panic!("the SDK's $cbs receiver link: {recs:#?}"));
    assert_eq!(reply["link"], cbs_receiver["name"]);

    // The telemetry link (ref §3.5), opened after the token was put.
    let events: Vec<&Value> = of(&recs, "attach")
        .into_iter()
        .filter(|a| a["address"] != "$cbs")
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    let link = events[0];
    assert_eq!(link["role"], "sender");
    assert_eq!(
        link["address"],
        format!("/devices/{DEVICE}/modules/{MODULE}/messages/events")
    );
    assert_eq!(link["refused"], Value::Null);
    assert!(position(&recs, link) > position(&recs, put));
    let cv = &link["properties"]["com.microsoft:client-version"];
    assert_eq!(
        (&cv["key_type"], &cv["value_type"]),
        (&json!("symbol"), &json!("string"))
    );
    assert!(
        cv["value"]
            .as_str()
            .unwrap()
            .starts_with("azure-iot-device/1.18.4 "),
        "{cv}"
    );
    assert_eq!(
        link["properties"].as_object().unwrap().len(),
        1,
        "only the client version: {link}"
    );
    // rhea's defaults: sender settle mode mixed (2), receiver settle mode first (0).
    assert_eq!(
        (&link["snd_settle_mode"], &link["rcv_settle_mode"]),
        (&json!(2), &json!(0))
    );

    // The security message (ref §1.2, §2).
    let msg = one(&recs, "message");
    assert_eq!(msg["link"], link["name"]);
    assert_eq!(
        msg["annotations"],
        json!({"iothub-interface-id": {
            "key_type": "symbol",
            "value": "urn:azureiot:Security:SecurityAgent:1",
            "value_type": "string"}})
    );
    assert_eq!(msg["content_type"], "application/json");
    assert_eq!(msg["content_encoding"], "utf-8");
    assert_eq!(msg["body_sections"], "data");
    assert_eq!(msg["body"], BODY);
    assert_eq!(msg["message_id"], MESSAGE_ID);
    // The SDK sends a message id that looks like a UUID as an AMQP uuid.
    assert_eq!(msg["message_id_type"], "uuid");
    assert_eq!(msg["to"], link["address"]);
    assert_eq!(msg["application_properties"], json!({}));
    assert_eq!(msg["settled_by_client"], false);
    assert_eq!(msg["outcome"], "accept");

    // A clean close, and nothing the stand-in had to refuse or ignore.
    let bye = one(&recs, "disconnect");
    assert_eq!(bye["client_closed"], true, "{bye}");
    assert_eq!(bye["client_condition"], Value::Null);
    for kind in ["closed", "ignored"] {
        assert!(of(&recs, kind).is_empty(), "{kind}: {recs:#?}");
    }
}

#[test]
fn tokens_edgehub_would_refuse_are_refused_and_the_sdk_fails() {
    // (workload key, --hub of the stand-in, its clock skew, the reason it must give)
    let cases: [(&str, &str, i64, &str); 3] = [
        // The workload signs with another key than edgeHub knows for the module.
        (OTHER_KEY, HUB, 0, "signature does not match"),
        // The token's audience names a hub that is neither edgeHub's hub nor its host name.
        (KEY, "other-hub.example.net", 0, "names neither the hub"),
        // A clock over an hour ahead: the SDK's one-hour token has already expired.
        (KEY, HUB, -4000, "token expired"),
    ];
    for (key, hub, skew, reason) in cases {
        let r = run(key, options(hub, skew));
        assert!(
            !r.node.status.success(),
            "{reason}: the SDK must not succeed: {}",
            text(&r.node)
        );
        let recs = r
            .hub
            .wait("a refused attach", Duration::from_secs(10), |r| {
                r.iter()
                    .any(|x| x["kind"] == "attach" && !x["refused"].is_null())
            });
        let put = of(&recs, "put-token")[0];
        // Like edgeHub, put-token itself succeeds; the link is what is refused.
        assert_eq!(put["status"], 200, "{reason}: {put}");
        assert_eq!(put["token_valid"], false, "{reason}: {put}");
        assert!(put["reason"].as_str().unwrap().contains(reason), "{put}");
        let refused = of(&recs, "attach")
            .into_iter()
            .find(|a| !a["refused"].is_null())
            .unwrap();
        assert_eq!(
            refused["address"],
            format!("/devices/{DEVICE}/modules/{MODULE}/messages/events")
        );
        let why = refused["refused"].as_str().unwrap();
        assert!(
            why.contains("could not be authenticated") && why.contains(reason),
            "{reason}: {why}"
        );
        assert!(of(&recs, "message").is_empty(), "{reason}: {recs:#?}");
        let err = String::from_utf8_lossy(&r.node.stderr);
        assert!(
            err.contains("unauthorized") || err.contains("Unauthorized"),
            "{reason}: the SDK reports the refusal: {}",
            text(&r.node)
        );
    }
}

// ------------------------------------------------------------------ the module twin

const CONFIG: &str = "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration";

/// The desired properties the stand-in starts with (as the published defaults shape them).
fn initial_desired() -> Value {
    json!({
        CONFIG: {
            "highPriorityMessageFrequency": {"value": "PT7M"},
            "eventPriorityProcessCreate": {"value": "Low"},
            "maxLocalCacheSizeInBytes": {"value": 2560000}
        },
        "$version": 4
    })
}

/// Certificates, both stand-ins (the twin's desired = `desired`), and the environment.
fn twin_setup(desired: Value, workload_key: &str) -> (tempfile::TempDir, EdgeHub, Workload) {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), workload_key, MODULE, "g1", &certs.ca);
    let mut opts = options(HUB, 0);
    opts.twin_desired = desired;
    let hub = EdgeHub::start(dir.path(), &certs, &opts);
    (dir, hub, workload)
}

fn json_line(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The twin records of one kind.
fn twin_of<'a>(frames: &'a [Value], kind: &str, op: Option<&str>) -> Vec<&'a Value> {
    frames
        .iter()
        .filter(|r| r["kind"] == kind && op.is_none_or(|o| r["operation"] == o))
        .collect()
}

/// One SDK run against the stand-in: getTwin, a reported update, a second GET, then two
/// desired patches pushed once the SDK listens. Checks what the SDK saw and what the stand-in
/// recorded; saves the twin frames as the reference for the Rust module.
#[test]
fn the_node_sdk_twin_gets_the_desired_receives_patches_and_reports() {
    let (dir, hub, workload) = twin_setup(initial_desired(), KEY);
    let env = standin::edge_env(&workload, HUB, DEVICE, MODULE, hub.port);
    let reported = json!({"agent": {"version": "node-sdk", "applied": 4}, "gone": null});
    let mut node = standin::NodeTwin::start(dir.path(), &env, 2, &reported);

    // 1. getTwin returns exactly the desired the stand-in was given.
    let got = json_line(&node.wait_line("desired", Duration::from_secs(30)));
    assert_eq!(got, initial_desired());

    // 2. The reported update is merged into the stand-in's reported, read back by a GET.
    node.wait_line("reported-updated", Duration::from_secs(10));
    let reread = json_line(&node.wait_line("reported", Duration::from_secs(10)));
    let merged = json!({"agent": {"version": "node-sdk", "applied": 4}, "$version": 2});
    assert_eq!(reread, merged);
    assert_eq!(hub.twin()["reported"], merged);

    // 3. Patches pushed by the stand-in reach the SDK's properties.desired with $version.
    let initial = json_line(&node.wait_line("initial", Duration::from_secs(10)));
    assert_eq!(initial, initial_desired());
    node.wait_line("listening", Duration::from_secs(10));
    let p1 = json!({CONFIG: {"highPriorityMessageFrequency": {"value": "PT10S"}}});
    let p2 = json!({CONFIG: {"eventPriorityProcessCreate": {"value": "Off"}}});
    assert_eq!(
        hub.push_desired(p1.clone()),
        json!({"version": 5, "sent": 1})
    );
    let got1 = json_line(&node.wait_line("patch", Duration::from_secs(10)));
    let mut want1 = p1.clone();
    want1["$version"] = 5.into();
    assert_eq!(got1, want1);
    assert_eq!(
        hub.push_desired(p2.clone()),
        json!({"version": 6, "sent": 1})
    );
    let status = node.finish(Duration::from_secs(20));
    assert!(status.success(), "{:#?} {}", node.seen, node.stderr_text());
    let patches: Vec<Value> = node
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix("patch "))
        .map(json_line)
        .collect();
    let mut want2 = p2.clone();
    want2["$version"] = 6.into();
    assert_eq!(patches, vec![want1.clone(), want2.clone()]);
    assert_eq!(node.seen.last().map(String::as_str), Some("done"));

    // The stand-in's twin now: both patches merged, $version 6.
    let twin = hub.twin();
    assert_eq!(
        twin["desired"],
        json!({
            CONFIG: {
                "highPriorityMessageFrequency": {"value": "PT10S"},
                "eventPriorityProcessCreate": {"value": "Off"},
                "maxLocalCacheSizeInBytes": {"value": 2560000}
            },
            "$version": 6
        })
    );

    // 4. The frames, saved as the reference (the SDK's disconnect ends the run).
    hub.wait("the SDK's disconnect", Duration::from_secs(10), |r| {
        r.iter().any(|x| x["kind"] == "disconnect")
    });
    let frames = hub.twin_frames();
    save("sdk-twin.jsonl", &frames);
    check_sdk_twin_frames(&frames, &want1, &want2);
}

/// The fields and AMQP types the Rust module's twin exchange has to match (the Node SDK's,
/// answered as edgeHub answers: shared/reference/iotedge-amqp.md §4).
fn check_sdk_twin_frames(frames: &[Value], want1: &Value, want2: &Value) {
    let address = format!("/devices/{DEVICE}/modules/{MODULE}/twin");
    // Two links on the twin node, one each way, both open, sharing the channel id "twin:<uuid>".
    let attaches = twin_of(frames, "attach", None);
    assert_eq!(attaches.len(), 2, "{attaches:#?}");
    let sender = attaches.iter().find(|a| a["role"] == "sender").unwrap();
    let receiver = attaches.iter().find(|a| a["role"] == "receiver").unwrap();
    for a in [sender, receiver] {
        assert_eq!(a["address"], address, "{a}");
        assert_eq!(a["refused"], Value::Null, "{a}");
        let props = a["properties"].as_object().unwrap();
        let keys: Vec<&str> = props.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "com.microsoft:api-version",
                "com.microsoft:channel-correlation-id",
                "com.microsoft:client-version"
            ],
            "{a}"
        );
        for (k, p) in props {
            assert_eq!(
                (&p["key_type"], &p["value_type"]),
                (&json!("symbol"), &json!("string")),
                "{k}: {a}"
            );
        }
        // The Node SDK's api-version (azure-iot-common endpoint.apiVersion); the C SDK sends
        // "2020-09-30" (ref §4.1). edgeHub does not check it.
        assert_eq!(props["com.microsoft:api-version"]["value"], "2021-04-12");
        assert!(
            props["com.microsoft:client-version"]["value"]
                .as_str()
                .unwrap()
                .starts_with("azure-iot-device/1.18.4 "),
            "{a}"
        );
        // AtMostOnce: the SDK asks for settled sends (1) and receiver-settle-first (0).
        assert_eq!(
            (&a["snd_settle_mode"], &a["rcv_settle_mode"]),
            (&json!(1), &json!(0)),
            "{a}"
        );
    }
    // The sender's target and the receiver's source are the twin node; rhea leaves the other
    // terminus without an address.
    assert_eq!(
        (&sender["target"], &sender["source"]),
        (&json!(address), &Value::Null)
    );
    assert_eq!(
        (&receiver["source"], &receiver["target"]),
        (&json!(address), &Value::Null)
    );
    let channel = |a: &Value| {
        a["properties"]["com.microsoft:channel-correlation-id"]["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let id = channel(sender);
    assert_eq!(id, channel(receiver), "one channel id on both links");
    let uuid = id.strip_prefix("twin:").expect("twin:<uuid>");
    assert_eq!(uuid.len(), 36, "{id}");
    assert_eq!(uuid.matches('-').count(), 4, "{id}");
    // The SDK attaches the sender first, then the receiver, and requests only then.
    let pos = |r: &Value| frames.iter().position(|x| x == r).unwrap();
    assert!(pos(sender) < pos(receiver));

    // Requests: GET, PATCH, GET, PUT, in that order, on the sender link.
    let requests = twin_of(frames, "twin-request", None);
    let ops: Vec<&str> = requests
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["GET", "PATCH", "GET", "PUT"], "{requests:#?}");
    assert!(pos(requests[0]) > pos(receiver));
    for r in &requests {
        let op = r["operation"].as_str().unwrap();
        assert_eq!(r["link"], sender["name"], "{r}");
        assert_eq!(r["settled_by_client"], true, "sent settled: {r}");
        // Annotations: symbol keys, string values; resource only where it names one.
        let ann = r["annotations"].as_object().unwrap();
        let resource = match op {
            "GET" => None,
            "PATCH" => Some("/properties/reported"),
            _ => Some("/notifications/twin/properties/desired"),
        };
        let mut want = json!({"operation": {
            "key_type": "symbol", "value": op, "value_type": "string"}});
        if let Some(res) = resource {
            want["resource"] = json!({"key_type": "symbol", "value": res, "value_type": "string"});
        }
        assert_eq!(Value::Object(ann.clone()), want, "{r}");
        // correlation-id: a UUID, sent as an AMQP string; no message-id; rhea's default
        // header, then one data section.
        assert_eq!(r["correlation_id_type"], "string", "{r}");
        assert_eq!(r["correlation_id"].as_str().unwrap().len(), 36, "{r}");
        assert_eq!(r["message_id"], Value::Null, "{r}");
        assert_eq!(
            r["sections"],
            json!(["header", "message-annotations", "properties", "data"]),
            "{r}"
        );
        let body = r["body"].as_str().unwrap();
        match op {
            "PATCH" => assert_eq!(
                json_line(body),
                json!({"agent": {"version": "node-sdk", "applied": 4}, "gone": null})
            ),
            // The SDK's "empty" body: one space (as the C SDK's EMPTY_TWIN_BODY_DATA).
            _ => assert_eq!(body, " ", "{r}"),
        }
        let expect = match op {
            "GET" | "PUT" | "DELETE" => 200,
            _ => 204,
        };
        assert_eq!(r["reply_status"], expect, "{r}");
    }

    // Replies: on the receiver link, the request's correlation-id as a string, status an int.
    let replies = twin_of(frames, "twin-reply", None);
    assert_eq!(replies.len(), requests.len());
    for (q, a) in requests.iter().zip(&replies) {
        assert_eq!(a["link"], receiver["name"], "{a}");
        assert_eq!(a["correlation_id"], q["correlation_id"], "{a}");
        assert_eq!(a["correlation_id_type"], "string");
        assert_eq!(
            a["annotations"],
            json!({"status": {"key_type": "symbol", "value": q["reply_status"],
                              "value_type": "int32"}})
        );
        if q["operation"] == "GET" {
            let body = json_line(a["body"].as_str().unwrap());
            let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["desired", "reported"], "{a}");
        } else {
            assert_eq!(a["body"], "", "edgeHub answers with an empty body: {a}");
        }
    }

    // One channel id, one link of each type: edgeHub closed nothing.
    assert!(
        twin_of(frames, "link-closed", None).is_empty(),
        "{frames:#?}"
    );

    // Desired patches: on the receiver link, no correlation-id, no status, body = patch.
    let pushed = twin_of(frames, "twin-desired", None);
    assert_eq!(pushed.len(), 2, "{pushed:#?}");
    for (p, want) in pushed.iter().zip([want1, want2]) {
        assert_eq!(p["link"], receiver["name"]);
        assert_eq!(p["correlation_id"], Value::Null);
        assert_eq!(p["annotations"], json!({}));
        assert_eq!(&json_line(p["body"].as_str().unwrap()), want);
    }
}

#[test]
fn a_wrong_key_is_refused_on_the_twin_link_as_on_telemetry() {
    let (dir, hub, workload) = twin_setup(initial_desired(), OTHER_KEY);
    let env = standin::edge_env(&workload, HUB, DEVICE, MODULE, hub.port);
    let mut node = standin::NodeTwin::start(dir.path(), &env, 0, &json!({}));
    let status = node.finish(Duration::from_secs(60));
    assert!(
        !status.success(),
        "the SDK must not get the twin: {:#?}",
        node.seen
    );
    assert!(
        node.seen.iter().all(|l| !l.starts_with("desired")),
        "{:#?}",
        node.seen
    );
    let err = node.stderr_text();
    assert!(
        err.contains("getTwin") && (err.contains("unauthorized") || err.contains("Unauthorized")),
        "the SDK reports the refusal: {err}"
    );
    let recs = hub.records();
    let put = of(&recs, "put-token")[0];
    assert_eq!(put["status"], 200, "{put}");
    assert_eq!(put["token_valid"], false, "{put}");
    let refused: Vec<&Value> = of(&recs, "attach")
        .into_iter()
        .filter(|a| !a["refused"].is_null())
        .collect();
    assert!(!refused.is_empty(), "{recs:#?}");
    let a = refused[0];
    assert_eq!(
        a["address"],
        format!("/devices/{DEVICE}/modules/{MODULE}/twin")
    );
    let why = a["refused"].as_str().unwrap();
    assert!(
        why.starts_with("Unable to open Twin link as the connection could not be authenticated")
            && why.contains("signature does not match"),
        "{why}"
    );
    // Nothing was asked or answered on a refused link.
    assert!(
        hub.twin_frames()
            .iter()
            .all(|r| !r["kind"].as_str().unwrap().starts_with("twin-")),
        "{recs:#?}"
    );
}

/// The control channel's failures, on the wire as edgeHub answers a failed twin operation
/// (DeviceMessageHandler.cs HandleTwinOperationException: the status, correlation-id, an
/// empty data section). Found here: the Node SDK 1.18.4 cannot read that empty body
/// (amqp_twin_client.js `_translateErrorResponse` JSON-parses it: "SyntaxError: Unexpected end
/// of JSON input", its links are torn down ~45 s later), so its runs are stopped once the
/// stand-in has answered; the Rust module must take an empty body on an error reply.
#[test]
fn twin_requests_fail_or_go_unanswered_as_the_control_channel_says() {
    let (dir, hub, workload) = twin_setup(initial_desired(), KEY);
    let env = standin::edge_env(&workload, HUB, DEVICE, MODULE, hub.port);
    let gets = |hub: &EdgeHub, n: usize| {
        let what = format!("{n} GET requests");
        hub.wait(&what, Duration::from_secs(30), |r| {
            r.iter()
                .filter(|x| x["kind"] == "twin-request" && x["operation"] == "GET")
                .count()
                >= n
        });
        hub.twin_frames()
    };

    // 1. A GET answered 429 (throttled).
    hub.fail_twin("GET", Some(429), 1);
    let node = standin::NodeTwin::start(dir.path(), &env, 0, &json!({"a": 1}));
    let frames = gets(&hub, 1);
    drop(node);
    let get = twin_of(&frames, "twin-request", Some("GET"))[0];
    assert_eq!(get["reply_status"], 429, "{get}");
    assert_eq!(get["note"], "failed with 429 (control)");
    let reply = twin_of(&frames, "twin-reply", None)[0];
    assert_eq!(reply["correlation_id"], get["correlation_id"]);
    assert_eq!(reply["status"], 429);
    assert_eq!(
        reply["annotations"],
        json!({"status": {"key_type": "symbol", "value": 429, "value_type": "int32"}})
    );
    assert_eq!(
        reply["body"], "",
        "edgeHub's error replies have an empty body"
    );

    // 2. A GET never answered.
    hub.fail_twin("GET", None, 1);
    let node = standin::NodeTwin::start(dir.path(), &env, 0, &json!({"a": 1}));
    let frames = gets(&hub, 2);
    std::thread::sleep(Duration::from_millis(500));
    drop(node);
    let get = twin_of(&frames, "twin-request", Some("GET"))[1];
    assert_eq!(get["reply_status"], Value::Null, "{get}");
    assert_eq!(get["note"], "never answered (control)");
    let replies = twin_of(&hub.twin_frames(), "twin-reply", None)
        .into_iter()
        .filter(|r| r["correlation_id"] == get["correlation_id"])
        .count();
    assert_eq!(replies, 0);

    // 3. The failures are used up: the next run gets its twin and reports.
    let mut node = standin::NodeTwin::start(dir.path(), &env, 0, &json!({"a": 1}));
    let status = node.finish(Duration::from_secs(60));
    assert!(status.success(), "{:#?} {}", node.seen, node.stderr_text());
    assert_eq!(
        json_line(&node.wait_line("desired", Duration::ZERO)),
        initial_desired()
    );
    assert_eq!(hub.twin()["reported"], json!({"a": 1, "$version": 2}));
    save("sdk-twin-fail.jsonl", &hub.twin_frames());
}

// ------------------------------------------------------------------ the stand-in's own twin rules
// edgeHub rules the Node SDK never exercises, checked with a bare Proton client
// (tests/standin/twin_client.py): ClientConnectionHandler.RegisterLinkHandler's channel
// correlation check, requests without a correlation-id, ReportedPropertiesValidator, DELETE.

/// tests/standin/twin_client.py (a bare Proton client) against `hub`, with these channel ids
/// and requests, lingering `linger` seconds for what comes back.
fn twin_client(
    hub: &EdgeHub,
    sender: &str,
    receiver: &str,
    requests: &Value,
    linger: f64,
) -> std::process::Child {
    standin::require_proton();
    std::process::Command::new(standin::python())
        .arg(support::root().join("tests/standin/twin_client.py"))
        .args([
            "--port",
            &hub.port.to_string(),
            "--key-base64",
            KEY,
            "--hub",
            HUB,
        ])
        .args(["--device", DEVICE, "--module", MODULE])
        .args(["--sender-channel", sender, "--receiver-channel", receiver])
        .args([
            "--requests",
            &requests.to_string(),
            "--linger",
            &linger.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the twin client")
}

fn client_output(child: std::process::Child) -> Vec<String> {
    let out = child.wait_with_output().expect("the twin client's output");
    assert!(
        out.status.success(),
        "the twin client failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn twin_links_with_different_channel_ids_are_closed_as_edgehub_closes_them() {
    let (_dir, hub, _workload) = twin_setup(initial_desired(), KEY);
    // The receiver first (twin:b), then the sender (twin:a): the receiver is closed.
    let lines = client_output(twin_client(&hub, "twin:a", "twin:b", &json!([]), 1.0));
    let frames = hub.twin_frames();
    let closed = twin_of(&frames, "link-closed", None);
    assert_eq!(closed.len(), 1, "{frames:#?}");
    assert_eq!(closed[0]["name"], "twin-receiver");
    assert_eq!(
        closed[0]["reason"],
        "the new twin link's channel correlation id differs"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""detached": "receiver""#)),
        "the client saw its receiver detached: {lines:#?}"
    );
}

#[test]
fn twin_requests_are_answered_by_edgehubs_rules() {
    let (_dir, hub, _workload) = twin_setup(initial_desired(), KEY);
    let desired = "/notifications/twin/properties/desired";
    let reported = "/properties/reported";
    let requests = json!([
        {"operation": "PATCH", "resource": reported, "body": r#"{"ok":1}"#, "correlation_id": "p1"},
        // A name edgeHub's ReportedPropertiesValidator refuses ('$' is reserved): 400.
        {"operation": "PATCH", "resource": reported, "body": r#"{"bad$key":1}"#,
         "correlation_id": "p2"},
        // No correlation-id: a PATCH is applied but not answered, a GET is dropped.
        {"operation": "PATCH", "resource": reported, "body": r#"{"n":{"x":2},"ok":null}"#},
        {"operation": "GET"},
        {"operation": "GET", "correlation_id": "g1"},
        {"operation": "DELETE", "resource": desired, "correlation_id": "d1"},
        {"operation": "FOO", "correlation_id": "f1"},
    ]);
    let child = twin_client(&hub, "twin:c", "twin:c", &requests, 3.0);
    hub.wait("the DELETE's reply", Duration::from_secs(20), |r| {
        r.iter()
            .any(|x| x["kind"] == "twin-reply" && x["correlation_id"] == "d1")
    });
    // Unsubscribed: a desired patch goes to nobody.
    assert_eq!(
        hub.push_desired(json!({"late": true})),
        json!({"version": 5, "sent": 0})
    );
    let lines = client_output(child);
    let replies: Vec<Value> = lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| json_line(l))
        .collect();
    let want_reported = json!({"n": {"x": 2}, "$version": 3});
    let got: Vec<(Value, Value)> = replies
        .iter()
        .map(|r| (r["correlation_id"].clone(), r["status"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!("p1"), json!(204)),
            (json!("p2"), json!(400)),
            (json!("g1"), json!(200)),
            (json!("d1"), json!(200)),
        ],
        "{lines:#?}"
    );
    let get = json_line(replies[2]["body"].as_str().unwrap());
    assert_eq!(get["reported"], want_reported);
    assert_eq!(get["desired"], initial_desired());
    for r in [&replies[0], &replies[1], &replies[3]] {
        assert_eq!(r["body"], "", "{r}");
    }
    let frames = hub.twin_frames();
    let notes: Vec<&Value> = twin_of(&frames, "twin-request", None)
        .iter()
        .map(|r| &r["note"])
        .collect();
    assert_eq!(notes[0], &Value::Null);
    assert!(
        notes[1].as_str().unwrap().contains("invalid character '$'"),
        "{:?}",
        notes[1]
    );
    assert_eq!(notes[2], &Value::Null, "applied");
    assert_eq!(
        notes[3],
        "GET without a correlation id: dropped, as edgeHub does"
    );
    assert_eq!(notes[6], "invalid operation 'FOO': not answered");
    assert_eq!(hub.twin()["reported"], want_reported);
}

#[test]
fn commands_given_at_start_apply_before_the_first_request_and_an_unpushed_patch_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let mut opts = options(HUB, 0);
    opts.twin_desired = initial_desired();
    // The first GET fails, from the very first connection on: no race with a client.
    opts.control_at_start = vec![json!({"cmd": "fail", "operation": "GET", "status": 503})];
    let hub = EdgeHub::start(dir.path(), &certs, &opts);
    let requests = json!([
        {"operation": "GET", "correlation_id": "g1"},
        {"operation": "GET", "correlation_id": "g2"},
    ]);
    let child = twin_client(&hub, "twin:e", "twin:e", &requests, 3.0);
    hub.wait("the second GET's reply", Duration::from_secs(20), |r| {
        r.iter()
            .any(|x| x["kind"] == "twin-reply" && x["correlation_id"] == "g2")
    });
    // A patch the client never sees (version 5), then one it does: it sees 4 → 6.
    let p5 = json!({CONFIG: {"eventPriorityProcessCreate": {"value": "Off"}}});
    let p6 = json!({CONFIG: {"maxLocalCacheSizeInBytes": {"value": 1048576}}});
    assert_eq!(
        hub.set_desired(p5, None, false),
        json!({"version": 5, "sent": 0})
    );
    assert_eq!(
        hub.set_desired(p6.clone(), None, true),
        json!({"version": 6, "sent": 1})
    );
    let lines = client_output(child);
    let got: Vec<Value> = lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| json_line(l))
        .collect();
    assert_eq!(got.len(), 3, "{lines:#?}");
    assert_eq!(
        (
            &got[0]["correlation_id"],
            &got[0]["status"],
            &got[0]["body"]
        ),
        (&json!("g1"), &json!(503), &json!("")),
        "{lines:#?}"
    );
    assert_eq!(got[1]["status"], 200);
    assert_eq!(
        json_line(got[1]["body"].as_str().unwrap())["desired"],
        initial_desired()
    );
    let mut pushed = p6;
    pushed["$version"] = 6.into();
    assert_eq!(got[2]["correlation_id"], Value::Null);
    assert_eq!(json_line(got[2]["body"].as_str().unwrap()), pushed);
    // The whole desired document holds both patches, as a fresh GET would return it.
    let desired = &hub.twin()["desired"];
    assert_eq!(desired["$version"], 6);
    assert_eq!(
        desired[CONFIG]["eventPriorityProcessCreate"]["value"],
        "Off"
    );
    assert_eq!(
        desired[CONFIG]["maxLocalCacheSizeInBytes"]["value"],
        1048576
    );
    assert_eq!(
        desired[CONFIG]["highPriorityMessageFrequency"]["value"],
        "PT7M"
    );
    // The start command's own record, written before the client's connection was accepted.
    let records = hub.records();
    let first = |kind: &str| {
        records
            .iter()
            .position(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} record: {records:#?}"))
    };
    assert!(first("control") < first("connection"), "{records:#?}");
    let start = &records[first("control")];
    assert_eq!(start["command"]["id"], 0);
    assert_eq!(start["command"]["cmd"], "fail");
}
