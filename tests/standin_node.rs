//! The IoT Edge stand-ins (tests/standin) against the official Azure IoT Node.js SDK
//! (azure-iot-device + azure-iot-device-amqp, pinned by tests/standin/node/package-lock.json)
//! used the way an IoT Edge module uses it: `ModuleClient.fromEnvironment(Amqp)` with the
//! IOTEDGE_* environment. The SDK's run must be accepted exactly as edgeHub would accept it
//! (shared/reference/iotedge-amqp.md §3, §5), and a token edgeHub would refuse must be
//! refused, so the stand-ins' checks are shown to fail when they should.
//!
//! The records of the accepted run are printed and saved as
//! `$CARGO_TARGET_TMPDIR/standin-node/sdk-edgehub.jsonl` and `sdk-workload.jsonl`: the
//! reference for comparing our module's wire behaviour field by field.
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
