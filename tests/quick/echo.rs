//! `azureiotsecurity echo` (the module binary) against the in-process edgeHub: it attaches one
//! receiver on its inputs address (the telemetry path), no telemetry sender; the hub sends
//! what edgeHub routes to a module (its annotations), one at a time; the echo accepts each,
//! prints one JSON object per message with what the hub sent, and exits 0 after `--count`.
//! A body that is not JSON is accepted and reported unreadable. With `--timeout` and too few
//! messages it exits 3 and says how many came.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value as AmqpValue};
use serde_json::Value;
use support::certs::Certs;
use support::inprocess_hub::{self, Hub, Rec, ToClient, script};
use support::standin::{DEVICE, Module};

const ECHO: &str = "echo";
const INPUTS: &str = "/devices/dev1/modules/echo/messages/events";
const WAIT: Duration = Duration::from_secs(30);

fn env(port: u16, ca: &Path) -> Vec<(String, String)> {
    inprocess_hub::module_env(DEVICE, ECHO, port, ca)
}

/// Synthetic routing: a message as edgeHub hands one from `azureiotsecurity` to input
/// `input`: its annotations, the sender's application properties, the body in a data section.
fn routed(id: &str, input: &str, seq: i64, body: &[u8]) -> ToClient {
    let ann = MessageAnnotations::builder()
        .insert(
            OwnedKey::Symbol(Symbol::from("x-opt-input-name")),
            AmqpValue::String(input.into()),
        )
        .insert(
            OwnedKey::Symbol(Symbol::from("iothub-connection-device-id")),
            AmqpValue::String(DEVICE.into()),
        )
        .insert(
            OwnedKey::Symbol(Symbol::from("iothub-connection-module-id")),
            AmqpValue::String("azureiotsecurity".into()),
        )
        .insert(
            OwnedKey::Symbol(Symbol::from("x-opt-sequence-number")),
            AmqpValue::Long(seq),
        )
        .insert(
            OwnedKey::Symbol(Symbol::from("iothub-enqueuedtime")),
            AmqpValue::Timestamp(Timestamp::from_milliseconds(1_764_000_000_000 + seq)),
        )
        .build();
    Message::builder()
        .properties(Properties {
            message_id: Some(MessageId::String(id.into())),
            ..Default::default()
        })
        .message_annotations(ann)
        .application_properties(
            ApplicationProperties::builder()
                .insert("MessagePriority", SimpleValue::String("Low".into()))
                .build(),
        )
        .body(Body::Data(vec![Data(Binary::from(body.to_vec()))].into()))
        .build()
}

/// A security message `replay --messages` makes of the real capture tests/data/activity.log.
fn security_message() -> String {
    let log = support::root().join("tests/data/activity.log");
    let (code, out, err) =
        support::run_bin(&["replay", "--messages", &log.display().to_string()], b"");
    assert_eq!(code, 0, "{err}");
    out.lines().next().expect("a message").to_owned()
}

fn wait_inputs_link(hub: &Hub, module: &mut Module) {
    let start = Instant::now();
    while !hub
        .records()
        .iter()
        .any(|r| matches!(r, Rec::ReceiverAttach { address, .. } if address == INPUTS))
    {
        assert!(module.alive(), "the echo exited: {}", module.output());
        assert!(
            start.elapsed() < WAIT,
            "no inputs link: {:#?}",
            hub.records()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(module: &mut Module) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = module.proc.child.try_wait() {
            return st.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < WAIT,
            "the echo did not exit: {}",
            module.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_echo_accepts_and_prints_what_edgehub_routes_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let rt = inprocess_hub::runtime();
    let hub = rt.block_on(Hub::start(&certs, script(&[], &[]), 0));
    let env = env(hub.port, &certs.ca);
    let mut echo = Module::start(
        dir.path(),
        "echo",
        &env,
        &["echo", "--json", "--count", "2", "--timeout", "60"],
    );
    wait_inputs_link(&hub, &mut echo);
    let body = security_message();
    assert!(rt.block_on(hub.send(INPUTS, routed("m-1", "input1", 1, body.as_bytes()))));
    assert!(rt.block_on(hub.send(INPUTS, routed("m-2", "input1", 2, b"not json"))));
    assert_eq!(wait_exit(&mut echo), 0, "{}", echo.output());

    // Receive-only: one receiver on the inputs address, no telemetry or twin link.
    let attaches: Vec<String> = hub
        .records()
        .into_iter()
        .filter_map(|r| match r {
            Rec::Attach { address, .. } | Rec::ReceiverAttach { address, .. } => Some(address),
            _ => None,
        })
        .collect();
    assert_eq!(attaches, [INPUTS]);
    assert_eq!(
        hub.outcomes(INPUTS),
        [
            ("m-1".to_owned(), "accepted".to_owned()),
            ("m-2".to_owned(), "accepted".to_owned())
        ]
    );
    let out = std::fs::read_to_string(&echo.out).unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    let sent: Value = serde_json::from_str(&body).unwrap();
    let first = &lines[0];
    assert_eq!(first["input"], "input1");
    assert_eq!(first["device"], DEVICE);
    assert_eq!(first["module"], "azureiotsecurity");
    assert_eq!(first["message_id"], "m-1");
    assert_eq!(first["enqueued_time"], "1764000000001");
    assert_eq!(first["sequence_number"], "1");
    assert_eq!(first["properties"]["MessagePriority"], "Low");
    assert_eq!(first["size"], body.len());
    assert_eq!(first["chunks"], body.len().div_ceil(4096));
    assert_eq!(first["body"], body.as_str());
    assert_eq!(first["security"]["AgentId"], sent["AgentId"]);
    assert_eq!(first["security"]["validation"], "valid");
    let counted: u64 = first["security"]["events"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(counted as usize, sent["Events"].as_array().unwrap().len());
    let second = &lines[1];
    assert_eq!(second["message_id"], "m-2");
    assert!(second["security"].is_null());
    assert!(
        second["unreadable"]
            .as_str()
            .unwrap()
            .starts_with("not JSON"),
        "{second}"
    );
    let log = echo.output();
    assert!(
        log.contains("iothub-interface-id) is not visible to a module"),
        "{log}"
    );
}

#[test]
fn too_few_messages_within_the_timeout_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let rt = inprocess_hub::runtime();
    let hub = rt.block_on(Hub::start(&certs, script(&[], &[]), 0));
    let env = env(hub.port, &certs.ca);
    let mut echo = Module::start(
        dir.path(),
        "echo-few",
        &env,
        &["echo", "--count", "2", "--timeout", "3"],
    );
    wait_inputs_link(&hub, &mut echo);
    assert!(rt.block_on(hub.send(INPUTS, routed("m-1", "input1", 1, b"{}"))));
    assert_eq!(wait_exit(&mut echo), 3, "{}", echo.output());
    let log = echo.output();
    assert!(log.contains("1 of 2 messages arrived within 3s"), "{log}");
    assert!(
        log.contains("input=input1 from=dev1/azureiotsecurity message-id=m-1"),
        "{log}"
    );
    assert_eq!(
        hub.outcomes(INPUTS),
        [("m-1".to_owned(), "accepted".to_owned())]
    );
}
