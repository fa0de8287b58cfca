//! The twin task (src/twin.rs) in the module binary, against the in-process edgeHub
//! (tests/support/inprocess_hub.rs), the test answering the twin requests as edgeHub does:
//! on each connection GET, PUT and the reported PATCH in that order; desired patches applied
//! live and reported; a version gap read whole with a GET; after a reconnection, no PATCH
//! when the twin's reported already holds what is in force. The same with the Proton
//! stand-in, and a failing GET, is tests/twin_task.rs; the end-to-end proof with events is
//! tests/twin_live.rs.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use azureiotsecurity::config::agent::OBJECT_NAME;
use azureiotsecurity::config::settings::Settings;
use azureiotsecurity::config::twin::{DesiredState, load_kept};
use azureiotsecurity::twin::merge;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    Body, Data, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Value as AmqpValue};
use serde_json::{Value, json};
use support::certs::Certs;
use support::inprocess_hub::{self, Hub, Rec, ToClient, script};
use support::standin::{DEVICE, MODULE, Module};

const TWIN: &str = "/devices/dev1/modules/azureiotsecurity/twin";
const WAIT: Duration = Duration::from_secs(30);

/// A twin request the module sent: (correlation-id, operation, body).
type Request = (String, String, String);

fn twin_requests(hub: &Hub) -> Vec<Request> {
    hub.records()
        .into_iter()
        .filter_map(|r| match r {
            Rec::Request {
                address,
                correlation_id,
                operation,
                body,
                ..
            } if address == TWIN => Some((correlation_id, operation, body)),
            _ => None,
        })
        .collect()
}

/// The `n`-th twin request (from 0), waiting for it.
fn request(hub: &Hub, n: usize, module: &mut Module) -> Request {
    let start = Instant::now();
    loop {
        if let Some(r) = twin_requests(hub).get(n) {
            return r.clone();
        }
        assert!(module.alive(), "the module exited: {}", module.output());
        assert!(
            start.elapsed() < WAIT,
            "no twin request #{n} within {WAIT:?}: {:#?}\n{}",
            twin_requests(hub),
            module.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until the module's log has `needle` `count` times.
fn wait_log(module: &mut Module, needle: &str, count: usize) {
    let start = Instant::now();
    while module.output().matches(needle).count() < count {
        assert!(module.alive(), "the module exited: {}", module.output());
        assert!(
            start.elapsed() < WAIT,
            "no {needle:?} (x{count}) within {WAIT:?}: {}",
            module.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A reply as edgeHub sends it: the request's correlation-id, an int `status` annotation,
/// the body in one data section.
fn reply(correlation: &str, status: i32, body: &str) -> ToClient {
    Message::builder()
        .properties(Properties {
            correlation_id: Some(MessageId::String(correlation.into())),
            ..Default::default()
        })
        .message_annotations(
            MessageAnnotations::builder()
                .insert(
                    OwnedKey::Symbol(Symbol::from("status")),
                    AmqpValue::Int(status),
                )
                .build(),
        )
        .body(Body::Data(
            vec![Data(Binary::from(body.as_bytes().to_vec()))].into(),
        ))
        .build()
}

/// A desired patch as edgeHub pushes it: no correlation-id.
fn pushed(patch: &Value) -> ToClient {
    Message::builder()
        .body(Body::Data(
            vec![Data(Binary::from(patch.to_string().into_bytes()))].into(),
        ))
        .build()
}

fn answer(rt: &tokio::runtime::Runtime, hub: &Hub, m: ToClient) {
    assert!(
        rt.block_on(hub.send(TWIN, m)),
        "the twin receiver link is attached"
    );
}

fn settings(env: &[(String, String)]) -> Settings {
    let map: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("AZUREIOTSECURITY_"))
        .cloned()
        .collect();
    Settings::load_from(None, Some(map)).expect("the test's settings")
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn frequency(value: &str, version: i64) -> Value {
    json!({OBJECT_NAME: {"highPriorityMessageFrequency": {"value": value}}, "$version": version})
}

fn env(port: u16, ca: &Path, dir: &Path, data: &Path) -> Vec<(String, String)> {
    let mut env = inprocess_hub::module_env(DEVICE, MODULE, port, ca);
    env.extend([
        (
            "AZUREIOTSECURITY_AUDIT__SOCKET_PATH".to_owned(),
            dir.join("no-audit-socket").display().to_string(),
        ),
        (
            "AZUREIOTSECURITY_MODULE__DATA_DIR".to_owned(),
            data.display().to_string(),
        ),
    ]);
    env
}

/// Connection 1: GET (version 3), PUT, PATCH of what is in force; a patch (version 4) is
/// applied and reported; a patch that skips version 5 makes the module GET (version 6) and
/// report that. Connection 2 (the hub restarted on the same port, the twin as edgeHub keeps
/// it): GET, PUT and no PATCH, until a patch (version 7) changes something. Every PATCH is
/// exactly `DesiredState::reported` for the same settings and desired updates.
#[test]
fn the_twin_task_applies_patches_gets_on_a_gap_and_reports_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let certs = Certs::make(dir.path());
    let rt = inprocess_hub::runtime();
    let hub = rt.block_on(Hub::start(&certs, script(&[], &[]), 0));
    let port = hub.port;
    let env = env(port, &certs.ca, dir.path(), &data);
    let mut module = Module::start(dir.path(), "twin-inprocess", &env, &["run"]);
    // The test's own desired state, fed what the module is fed.
    let mut state = DesiredState::from_settings(&settings(&env));
    // The twin's reported properties, as edgeHub merges the PATCHes it accepts.
    let mut held = json!({});
    let agent_id = || {
        std::fs::read_to_string(data.join(azureiotsecurity::agent_id::FILE))
            .ok()
            .and_then(|t| uuid::Uuid::parse_str(t.trim()).ok())
            .expect("the module's AgentId in the data directory")
    };
    let version = env!("CARGO_PKG_VERSION");

    // Connection 1.
    let off = json!({OBJECT_NAME: {"eventPriorityProcessCreate": {"value": "Off"}}, "$version": 3});
    let (id, op, _) = request(&hub, 0, &mut module);
    assert_eq!(op, "GET");
    let doc = json!({"desired": off, "reported": {"$version": 1}});
    answer(&rt, &hub, reply(&id, 200, &doc.to_string()));
    state.on_document(&off);
    let (id, op, _) = request(&hub, 1, &mut module);
    assert_eq!(op, "PUT");
    answer(&rt, &hub, reply(&id, 200, ""));
    let (id, op, body) = request(&hub, 2, &mut module);
    assert_eq!(op, "PATCH");
    assert_eq!(json_of(&body), state.reported(agent_id(), version));
    answer(&rt, &hub, reply(&id, 204, ""));
    merge(&mut held, &json_of(&body));

    // A patch, the next version: applied, kept, reported.
    let p4 = frequency("PT1M", 4);
    answer(&rt, &hub, pushed(&p4));
    state.on_patch(Some(4), &p4);
    let (id, op, body) = request(&hub, 3, &mut module);
    assert_eq!(op, "PATCH");
    let body = json_of(&body);
    assert_eq!(body, state.reported(agent_id(), version));
    assert_eq!(
        body[OBJECT_NAME]["highPriorityMessageFrequency"]["value"],
        "PT1M"
    );
    answer(&rt, &hub, reply(&id, 204, ""));
    merge(&mut held, &body);

    // Version 5 never came: the patch of version 6 is a gap, and the twin is read whole.
    answer(&rt, &hub, pushed(&frequency("PT2M", 6)));
    let (id, op, _) = request(&hub, 4, &mut module);
    assert_eq!(op, "GET", "a gap reads the twin again");
    let mut desired6 = off.clone();
    merge(&mut desired6, &frequency("PT3M", 6));
    let doc = json!({"desired": desired6, "reported": held});
    answer(&rt, &hub, reply(&id, 200, &doc.to_string()));
    state.on_document(&desired6);
    let (id, op, body) = request(&hub, 5, &mut module);
    assert_eq!(op, "PATCH");
    let body = json_of(&body);
    assert_eq!(body, state.reported(agent_id(), version));
    assert_eq!(
        body[OBJECT_NAME]["highPriorityMessageFrequency"]["value"], "PT3M",
        "the GET's document, not the gap's patch"
    );
    answer(&rt, &hub, reply(&id, 204, ""));
    merge(&mut held, &body);
    held["$version"] = json!(4);

    // Connection 2: the hub restarts on the same port (every connection of the old one
    // ends with its runtime), once the module has the last reply (a reply still on its way
    // would be lost with the connection, and the PATCH failed).
    wait_log(&mut module, "reported properties updated version=6", 1);
    drop(hub);
    rt.shutdown_timeout(Duration::from_secs(5));
    let rt = inprocess_hub::runtime();
    let hub = rt.block_on(Hub::start(&certs, script(&[], &[]), port));
    let (id, op, _) = request(&hub, 0, &mut module);
    assert_eq!(op, "GET");
    let doc = json!({"desired": desired6, "reported": held});
    answer(&rt, &hub, reply(&id, 200, &doc.to_string()));
    let (id, op, _) = request(&hub, 1, &mut module);
    assert_eq!(op, "PUT");
    answer(&rt, &hub, reply(&id, 200, ""));
    // The twin holds what is in force: the next request is the PATCH of the next change,
    // not a PATCH of the same again.
    let p7 = frequency("PT4M", 7);
    answer(&rt, &hub, pushed(&p7));
    state.on_patch(Some(7), &p7);
    let (id, op, body) = request(&hub, 2, &mut module);
    assert_eq!(op, "PATCH");
    let body = json_of(&body);
    assert_eq!(body, state.reported(agent_id(), version));
    assert_eq!(body["securityModuleStatus"]["appliedVersion"], 7);
    answer(&rt, &hub, reply(&id, 204, ""));

    // Kept for a restart while edgeHub is away.
    let start = Instant::now();
    while load_kept(&data).ok().flatten().map(|k| k.version) != Some(7) {
        assert!(
            start.elapsed() < WAIT,
            "version 7 is not kept: {:?}",
            load_kept(&data)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = module.stop(Duration::from_secs(20));
    let log = module.output();
    assert!(st.success(), "{st:?}\n{log}");
    assert!(!log.contains("W-TWIN-"), "{log}");
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(" statistics "))
        .unwrap_or_else(|| panic!("no statistics line: {log}"));
    for (key, want) in [
        ("twin_gets", 3),
        ("twin_patches", 3),
        ("twin_applied", 4),
        ("twin_gaps", 1),
        ("twin_reports", 4),
        ("twin_request_failures", 0),
    ] {
        let pair = format!("{key}={want}");
        assert!(line.split_whitespace().any(|w| w == pair), "{pair}: {line}");
    }
}
