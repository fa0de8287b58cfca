//! Full tier: the module's path through edgeHub's routes to the echo module, on real peers.
//! The Qpid Proton edgeHub stand-in (tests/standin/edgehub.py) routes as edgeHub does (a
//! route table; a message from a module delivered to the target module's inputs link with
//! edgeHub's annotations, one at a time, waiting for the disposition), and the official
//! Node.js SDK's `ModuleClient` (tests/standin/node/receive.js, output.js) is the reference
//! the stand-in and the module are held to: what the SDK's `on('inputMessage')` receives,
//! the echo receives the same; the inputs link the echo attaches is the SDK's, field by
//! field; the module's `iothub-outputname` is the SDK's `sendOutputEvent`'s.
//!
//! Audit input is a real capture served on a replay socket (tests/support/audit_feed.rs).
//! Needs the venv's Proton with TLS and Node with the SDK: without them these tests fail
//! (`scripts/install-test-deps.sh`).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::audit_feed::AuditFeed;
use support::standin::{
    self, Certs, DEVICE, EdgeHub, EdgeHubOptions, HUB, KEY, MODULE, Module, NodeScript, Workload,
    hub_options,
};

const ECHO: &str = "echo";
/// The Node SDK's modules: one receives (receive.js), one sends to outputs (output.js).
const NODE_RECEIVER: &str = "nodeecho";
const NODE_SENDER: &str = "nodesender";
const WAIT: Duration = Duration::from_secs(90);

struct Setup {
    dir: tempfile::TempDir,
    certs: Certs,
    workload: Workload,
    hub: EdgeHub,
}

/// Certificates, the workload stand-in for the module and the edgeHub stand-in serving the
/// module, the echo and the Node SDK's modules (one key for all), with `routes`.
fn setup(routes: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let opts = EdgeHubOptions {
        module: [MODULE, ECHO, NODE_RECEIVER, NODE_SENDER].join(","),
        ..hub_options(0)
    };
    let hub = EdgeHub::start(dir.path(), &certs, &opts);
    for r in routes {
        hub.route(r);
    }
    Setup {
        dir,
        certs,
        workload,
        hub,
    }
}

/// The IoT Edge environment of a Node SDK module `module` (its own workload stand-in, in a
/// directory of its own).
fn node_env(s: &Setup, module: &str) -> (Workload, Vec<(String, String)>) {
    let dir = s.dir.path().join(module);
    std::fs::create_dir_all(&dir).unwrap();
    let w = Workload::start(&dir, KEY, module, "g1", &s.certs.ca);
    let env = standin::edge_env(&w, HUB, DEVICE, module, s.hub.port);
    (w, env)
}

/// The echo's environment: a module connection string for `echo` through the stand-in.
fn echo_env(s: &Setup) -> Vec<(String, String)> {
    let cs = format!(
        "HostName={HUB};DeviceId={DEVICE};ModuleId={ECHO};SharedAccessKey={KEY};GatewayHostName=localhost:{}",
        s.hub.port
    );
    [
        ("EdgeHubConnectionString", cs),
        (
            "EdgeModuleCACertificateFile",
            s.certs.ca.display().to_string(),
        ),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The module `run`'s environment: IoT Edge's, the replay socket, a data directory.
fn run_env(s: &Setup, feed: &AuditFeed, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = standin::edge_env(&s.workload, HUB, DEVICE, MODULE, s.hub.port);
    env.push((
        "AZUREIOTSECURITY_AUDIT__SOCKET_PATH".into(),
        feed.path.display().to_string(),
    ));
    env.push((
        "AZUREIOTSECURITY_MODULE__DATA_DIR".into(),
        s.dir.path().join("data").display().to_string(),
    ));
    env.push(("RUST_LOG".into(), "info".into()));
    // Messages every 2 s (under the agent configuration's minimums), no aggregation: a
    // capture is sent within the test's bounds.
    for (k, v) in [
        ("AZUREIOTSECURITY_DEBUG__SHORT_AGENT_INTERVALS", "true"),
        (
            "AZUREIOTSECURITY_AGENT__HIGHPRIORITYMESSAGEFREQUENCY",
            "PT2S",
        ),
        (
            "AZUREIOTSECURITY_AGENT__LOWPRIORITYMESSAGEFREQUENCY",
            "PT2S",
        ),
        (
            "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDPROCESSCREATE",
            "false",
        ),
        (
            "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDCONNECTIONCREATE",
            "false",
        ),
    ] {
        env.push((k.into(), v.into()));
    }
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    env
}

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(support::root().join("tests/data").join(name)).unwrap()
}

/// The module's messages the stand-in accepted, once no new one came for 3 s (bounded).
fn wait_quiet(hub: &EdgeHub, at_least: usize, module: &Module) -> Vec<Value> {
    let start = Instant::now();
    let mut last = (usize::MAX, Instant::now());
    loop {
        let n = hub
            .accepted()
            .iter()
            .filter(|r| r["address"].as_str().unwrap_or("").contains(MODULE))
            .count();
        if n != last.0 {
            last = (n, Instant::now());
        } else if n >= at_least && last.1.elapsed() > Duration::from_secs(3) {
            return hub.accepted();
        }
        hub.proc.assert_alive();
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the module's messages did not settle within 120 s: {n} so far; {}; records {:#?}",
            module.output(),
            hub.records()
                .iter()
                .map(|r| format!("{} {} {}", r["kind"], r["address"], r["outcome"]))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The exit code of `m` within `limit`.
fn wait_exit(m: &mut Module, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = m.proc.child.try_wait() {
            return st.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < limit,
            "did not exit within {limit:?}: {}",
            m.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The echo's JSON lines.
fn echo_lines(m: &Module) -> Vec<Value> {
    std::fs::read_to_string(&m.out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Events by Name in a security message's body.
fn events_by_name(body: &str) -> BTreeMap<String, u64> {
    let v: Value = serde_json::from_str(body).unwrap();
    let mut out = BTreeMap::new();
    for e in v["Events"].as_array().unwrap() {
        *out.entry(e["Name"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    out
}

/// Run the module on a real capture until its messages settle, then stop it: returns the
/// message records the stand-in accepted from it.
fn run_module(s: &Setup, capture_name: &str, extra: &[(&str, &str)]) -> Vec<Value> {
    let feed = AuditFeed::start(s.dir.path(), capture(capture_name));
    let mut m = Module::start(s.dir.path(), "run", &run_env(s, &feed, extra), &["run"]);
    wait_quiet(&s.hub, 1, &m);
    assert!(m.stop(Duration::from_secs(20)).success(), "{}", m.output());
    let sent: Vec<Value> = wait_quiet(&s.hub, 1, &m)
        .into_iter()
        .filter(|r| r["address"].as_str().unwrap_or("").contains(MODULE))
        .collect();
    assert!(!sent.is_empty());
    sent
}

/// The module runs on a real capture and sends through the stand-in, whose route takes
/// each message to the echo's input1 (and upstream); `echo --json --count N` prints, for
/// every message the stand-in recorded as sent, its message id, size, events by name and
/// the verdict valid, with edgeHub's annotations (input, sender, sequence number); the
/// stand-in records Accepted for each delivery, one at a time, in the order sent.
#[test]
fn what_the_module_sends_reaches_the_echo_through_the_route_and_is_accepted() {
    let s = setup(&[
        r#"FROM /messages/modules/azureiotsecurity/* INTO BrokeredEndpoint("/modules/echo/inputs/input1")"#,
        "FROM /messages/modules/azureiotsecurity/* INTO $upstream",
    ]);
    let sent = run_module(&s, "activity.log", &[]);
    for r in &sent {
        assert_eq!(r["output_name"], Value::Null);
        assert_eq!(r["routes"].as_array().unwrap().len(), 2, "{r}");
    }
    let n = sent.len();
    let count = n.to_string();
    let mut echo = Module::start(
        s.dir.path(),
        "echo",
        &echo_env(&s),
        &["echo", "--json", "--count", &count, "--timeout", "60"],
    );
    assert_eq!(wait_exit(&mut echo, WAIT), 0, "{}", echo.output());
    let lines = echo_lines(&echo);
    assert_eq!(lines.len(), n, "{}", echo.output());
    let outcomes = s.hub.routed_outcomes(ECHO);
    let routed = s.hub.routed(ECHO);
    assert_eq!(routed.len(), n);
    assert_eq!(outcomes.len(), n);
    for (i, ((line, r), o)) in lines.iter().zip(&sent).zip(&outcomes).enumerate() {
        let body = r["body"].as_str().unwrap();
        assert_eq!(line["message_id"], r["message_id"], "#{i}");
        assert_eq!(line["input"], "input1");
        assert_eq!(line["device"], DEVICE);
        assert_eq!(line["module"], MODULE);
        assert_eq!(line["sequence_number"], routed[i]["sequence"].to_string());
        assert_eq!(line["size"], body.len(), "#{i}");
        assert_eq!(line["body"], body);
        assert_eq!(
            line["properties"],
            serde_json::to_value(&r["application_properties"]).unwrap()
        );
        let events: BTreeMap<String, u64> =
            serde_json::from_value(line["security"]["events"].clone()).unwrap();
        assert_eq!(events, events_by_name(body), "#{i}");
        assert_eq!(line["security"]["validation"], "valid", "#{i}");
        assert_eq!(o["message_id"], r["message_id"]);
        assert_eq!(o["outcome"], "accepted", "{o}");
        assert_eq!(o["settled_by_client"], true, "{o}");
    }
    // One at a time: each delivery went out after the one before was accepted.
    let recs = s.hub.records();
    let order: Vec<&str> = recs
        .iter()
        .filter(|r| r["kind"] == "routed" || r["kind"] == "routed-outcome")
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    let alternating: Vec<&str> = (0..n).flat_map(|_| ["routed", "routed-outcome"]).collect();
    assert_eq!(order, alternating);
    // edgeHub's annotations, and not the security marker.
    let ann = routed[0]["annotations"].as_object().unwrap();
    let keys: Vec<&str> = ann.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "iothub-connection-device-id",
            "iothub-connection-module-id",
            "iothub-enqueuedtime",
            "x-opt-input-name",
            "x-opt-lock-token",
            "x-opt-sequence-number"
        ]
    );
    assert_eq!(ann["x-opt-sequence-number"]["value_type"], "ulong");
    assert_eq!(ann["iothub-enqueuedtime"]["value_type"], "timestamp");
    assert!(sent[0]["annotations"]["iothub-interface-id"].is_object());
}

/// With `edgehub.output_name` = security, the route on `/outputs/security` delivers every
/// message to the echo and the route on another output name delivers none.
#[test]
fn with_an_output_name_the_outputs_route_delivers_and_another_output_name_does_not() {
    let s = setup(&[
        r#"FROM /messages/modules/azureiotsecurity/outputs/security INTO BrokeredEndpoint("/modules/echo/inputs/sec")"#,
        r#"FROM /messages/modules/azureiotsecurity/outputs/other INTO BrokeredEndpoint("/modules/echo/inputs/other")"#,
    ]);
    let sent = run_module(
        &s,
        "exec_args.log",
        &[("AZUREIOTSECURITY_EDGEHUB__OUTPUT_NAME", "security")],
    );
    let n = sent.len();
    for r in &sent {
        assert_eq!(r["output_name"], "security");
        assert_eq!(r["application_properties"]["iothub-outputname"], "security");
        let routes: Vec<&str> = r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(routes.len(), 1);
        assert!(routes[0].contains("/outputs/security "), "{routes:?}");
    }
    let count = n.to_string();
    let mut echo = Module::start(
        s.dir.path(),
        "echo",
        &echo_env(&s),
        &["echo", "--json", "--count", &count, "--timeout", "60"],
    );
    assert_eq!(wait_exit(&mut echo, WAIT), 0, "{}", echo.output());
    let lines = echo_lines(&echo);
    assert_eq!(lines.len(), n);
    for (line, r) in lines.iter().zip(&sent) {
        assert_eq!(line["input"], "sec");
        assert_eq!(line["message_id"], r["message_id"]);
        // edgeHub keeps the output name as a system property: not handed on.
        assert!(
            line["properties"].get("iothub-outputname").is_none(),
            "{line}"
        );
    }
    let inputs: Vec<String> = s
        .hub
        .routed(ECHO)
        .iter()
        .map(|r| r["input"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(inputs, vec!["sec"; n]);
    assert!(
        s.hub
            .routed_outcomes(ECHO)
            .iter()
            .all(|o| o["outcome"] == "accepted")
    );
}

/// The same routed messages (a security message and a body that is not JSON, sent by the
/// Node SDK's `sendOutputEvent` to the output `raw`) reach the Node SDK's
/// `on('inputMessage')` and `azureiotsecurity echo --json` with the same input name,
/// properties and body; the echo accepts the non-JSON one and reports it unreadable; the
/// two inputs links attach alike, field by field.
#[test]
fn the_echo_and_the_node_sdk_receive_the_same_routed_messages_and_attach_alike() {
    let s = setup(&[
        r#"FROM /messages/modules/nodesender/outputs/raw INTO BrokeredEndpoint("/modules/echo/inputs/input1")"#,
        r#"FROM /messages/modules/nodesender/outputs/raw INTO BrokeredEndpoint("/modules/nodeecho/inputs/input1")"#,
    ]);
    let (_w_recv, recv_env) = node_env(&s, NODE_RECEIVER);
    let (_w_send, send_env) = node_env(&s, NODE_SENDER);
    let mut node = NodeScript::start(s.dir.path(), "receive.js", &["2"], &recv_env);
    let mut echo = Module::start(
        s.dir.path(),
        "echo",
        &echo_env(&s),
        &["echo", "--json", "--count", "2", "--timeout", "90"],
    );
    let node_attach = s.hub.wait_inputs_link(NODE_RECEIVER, WAIT);
    let echo_attach = s.hub.wait_inputs_link(ECHO, WAIT);

    // A security message of the module's (replay --messages of a real capture), then text.
    let log = support::root().join("tests/data/exec_args.log");
    let (code, out, err) =
        support::run_bin(&["replay", "--messages", &log.display().to_string()], b"");
    assert_eq!(code, 0, "{err}");
    let security = out.lines().next().unwrap().to_owned();
    let bodies = [security.as_str(), "plain text, not JSON"];
    for (i, body) in bodies.iter().enumerate() {
        let id = format!("node-out-{i}");
        let o = standin::node_output(&send_env, "raw", body, &id, &[("MessagePriority", "Low")]);
        assert!(
            o.status.success(),
            "output.js: {} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let got = node.wait_lines("input", 2, WAIT);
    assert!(node.finish(WAIT).success());
    assert_eq!(wait_exit(&mut echo, WAIT), 0, "{}", echo.output());
    let lines = echo_lines(&echo);
    assert_eq!(lines.len(), 2);
    for (i, (n, e)) in got.iter().zip(&lines).enumerate() {
        let n: Value = serde_json::from_str(n).unwrap();
        assert_eq!(n["input"], "input1", "#{i}");
        assert_eq!(e["input"], n["input"], "#{i}");
        assert_eq!(n["messageId"], format!("node-out-{i}"));
        assert_eq!(e["message_id"], n["messageId"], "#{i}");
        assert_eq!(e["properties"], n["properties"], "#{i}");
        assert_eq!(
            n["properties"],
            serde_json::json!({"MessagePriority": "Low"})
        );
        assert_eq!(n["body"], bodies[i]);
        assert_eq!(e["body"], n["body"], "#{i}");
        assert_eq!(e["size"], bodies[i].len());
        assert_eq!(n["annotations"]["iothub-connection-module-id"], NODE_SENDER);
        assert_eq!(e["module"], NODE_SENDER);
        assert_eq!(e["device"], n["annotations"]["iothub-connection-device-id"]);
        // Each endpoint's own sequence number and enqueued time, as the stand-in sent them.
        let (re, rn) = (&s.hub.routed(ECHO)[i], &s.hub.routed(NODE_RECEIVER)[i]);
        for (k, got_e, got_n) in [
            (
                "x-opt-sequence-number",
                &e["sequence_number"],
                &n["annotations"]["x-opt-sequence-number"],
            ),
            (
                "iothub-enqueuedtime",
                &e["enqueued_time"],
                &n["annotations"]["iothub-enqueuedtime"],
            ),
        ] {
            assert_eq!(*got_e, re["annotations"][k]["value"].to_string(), "{k}");
            assert_eq!(*got_n, rn["annotations"][k]["value"], "{k}");
        }
    }
    assert_eq!(lines[0]["security"]["validation"], "valid");
    assert!(lines[1]["security"].is_null());
    assert!(
        lines[1]["unreadable"]
            .as_str()
            .unwrap()
            .starts_with("not JSON"),
        "{}",
        lines[1]
    );
    for m in [ECHO, NODE_RECEIVER] {
        let o: Vec<Value> = s
            .hub
            .routed_outcomes(m)
            .iter()
            .map(|o| o["outcome"].clone())
            .collect();
        assert_eq!(o, ["accepted", "accepted"], "{m}");
    }
    // The inputs links, field by field (the link name is free; the rest is the SDK's).
    for f in [
        "role",
        "snd_settle_mode",
        "rcv_settle_mode",
        "max_message_size",
        "refused",
    ] {
        assert_eq!(echo_attach[f], node_attach[f], "{f}");
    }
    let path = |a: &Value, m: &str| {
        a.as_str()
            .unwrap()
            .replace(m, "{m}")
            .rsplit_once("/devices/")
            .map(|(_, p)| format!("/devices/{p}"))
    };
    assert_eq!(
        path(&echo_attach["source"], ECHO),
        path(&node_attach["source"], NODE_RECEIVER)
    );
    assert_eq!(
        path(&echo_attach["address"], ECHO),
        Some("/devices/dev1/modules/{m}/messages/events".to_owned())
    );
    let keys = |a: &Value| {
        a["properties"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["key_type"].clone(), v["value_type"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&echo_attach), keys(&node_attach));
}

/// The module's `iothub-outputname` is the Node SDK's `sendOutputEvent`'s, field by field:
/// the same key and value types, the value as given, on the telemetry link.
#[test]
fn the_modules_output_name_is_the_node_sdks_send_output_event() {
    let s = setup(&[]);
    let (_w, send_env) = node_env(&s, NODE_SENDER);
    let o = standin::node_output(&send_env, "security", "{}", "node-1", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sent = run_module(
        &s,
        "exec_args.log",
        &[("AZUREIOTSECURITY_EDGEHUB__OUTPUT_NAME", "security")],
    );
    let node = s
        .hub
        .accepted()
        .into_iter()
        .find(|r| r["message_id"] == "node-1")
        .expect("the Node SDK's message");
    let ours = &sent[0];
    assert_eq!(node["output_name"], "security");
    assert_eq!(ours["output_name"], node["output_name"]);
    assert_eq!(
        ours["application_properties"]["iothub-outputname"],
        node["application_properties"]["iothub-outputname"]
    );
    assert_eq!(
        ours["application_property_types"]["iothub-outputname"],
        node["application_property_types"]["iothub-outputname"]
    );
    assert_eq!(
        node["application_property_types"]["iothub-outputname"],
        serde_json::json!({"key_type": "string", "value_type": "string"})
    );
    // Both on the module's telemetry address.
    let tail = |r: &Value, m: &str| r["address"].as_str().unwrap().replace(m, "{m}");
    assert_eq!(tail(ours, MODULE), tail(&node, NODE_SENDER));
}

/// edgeHub's dispositions, as the stand-in plays them against the Node SDK's settlements:
/// one message at a time; Rejected (`reject`) and Released (`abandon`) fail the send and the
/// same message is sent again before any later one (DeviceMessageHandler +
/// ModuleEndpoint's retryable EdgeHubIOException), Accepted (`complete`) completes it; each
/// recorded in order.
#[test]
fn rejected_and_released_routed_messages_are_sent_again_before_the_next() {
    let s = setup(&[
        r#"FROM /messages/modules/nodesender/outputs/* INTO BrokeredEndpoint("/modules/nodeecho/inputs/in")"#,
    ]);
    let (_w_recv, recv_env) = node_env(&s, NODE_RECEIVER);
    let (_w_send, send_env) = node_env(&s, NODE_SENDER);
    let mut node = NodeScript::start(
        s.dir.path(),
        "receive.js",
        &["5", "reject,abandon,complete"],
        &recv_env,
    );
    s.hub.wait_inputs_link(NODE_RECEIVER, WAIT);
    for i in 0..3 {
        let id = format!("d-{i}");
        let o = standin::node_output(&send_env, "any", "{}", &id, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let got = node.wait_lines("input", 5, WAIT);
    assert!(node.finish(WAIT).success());
    let ids: Vec<Value> = got
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["messageId"].clone())
        .collect();
    // The refused d-0 comes back (after the stand-in's 1 s back-off) before d-1 and d-2.
    assert_eq!(ids, ["d-0", "d-0", "d-0", "d-1", "d-2"]);
    let outcomes: Vec<(Value, Value)> = s
        .hub
        .routed_outcomes(NODE_RECEIVER)
        .iter()
        .map(|o| (o["message_id"].clone(), o["outcome"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("d-0".into(), "rejected".into()),
            ("d-0".into(), "released".into()),
            ("d-0".into(), "accepted".into()),
            ("d-1".into(), "accepted".into()),
            ("d-2".into(), "accepted".into())
        ]
    );
    // Sent again, not dropped: five deliveries for three messages; a retry keeps its
    // sequence number and gets a new lock token, as edgeHub's SendMessageAsync makes one
    // for every send.
    let routed: Vec<(Value, Value, Value)> = s
        .hub
        .routed(NODE_RECEIVER)
        .iter()
        .map(|r| {
            (
                r["message_id"].clone(),
                r["sequence"].clone(),
                r["lock_token"].clone(),
            )
        })
        .collect();
    let ids: Vec<&Value> = routed.iter().map(|r| &r.0).collect();
    assert_eq!(ids, ["d-0", "d-0", "d-0", "d-1", "d-2"]);
    assert_eq!(routed[0].1, routed[2].1, "{routed:?}");
    assert_ne!(routed[2].1, routed[3].1, "{routed:?}");
    let tokens: std::collections::HashSet<&Value> = routed.iter().map(|r| &r.2).collect();
    assert_eq!(tokens.len(), 5, "{routed:?}");
}
