//! `azureiotsecurity echo`: an IoT Edge echo module that shows what edgeHub routes to it.
//!
//! Contract: [`inputs`] is the link service: one receiver on the module's inputs address,
//! `/devices/{d}/modules/{m}/messages/events` (the telemetry path, receiver role; edgeHub's
//! `ModuleMessageLinkHandler`, docs/edgehub-inputs.md), with bounded credit. [`run`] accepts
//! every delivery at once (edgeHub sends the next only after a disposition, and waits 30 s
//! for it), then describes it: [`describe`] is pure (message in, [`Echoed`] out) and never
//! fails on what the network brought, a body it cannot read included. [`Echoed::line`] and
//! [`Echoed::json`] are the two printed forms. Nothing is sent: no telemetry, no outbox, no
//! twin.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fe2o3_amqp::types::messaging::{MessageId, annotations::OwnedKey};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;

use crate::edge::amqp::receiver::{self, Inbound, ReceiverService, ReceiverSpec};
use crate::edge::amqp::request::AmqpMessage;
use crate::edge::amqp::telemetry::events_address;
use crate::edge::amqp::twin::body_bytes;
use crate::edge::amqp::{AmqpConfig, AmqpStats, Connection, Control};
use crate::edge::credentials::Credentials;

/// IoT Hub's message size is counted in 4 KB chunks (its metering unit).
pub const CHUNK_BYTES: usize = 4096;

/// Said once at start: edgeHub keeps the security marker for the upstream and does not pass
/// it on to a module.
pub const MARKER_NOTE: &str = "the security marker (message annotation iothub-interface-id) is not visible to a module: edgeHub does not pass it on; a security message is recognised here by its body";

/// The inputs link service for the module `device`/`module`, at most `credit` messages
/// outstanding, and the channel the messages come out of.
pub fn inputs(
    device: &str,
    module: Option<&str>,
    credit: u32,
) -> (ReceiverService, tokio::sync::mpsc::Receiver<Inbound>) {
    receiver::service(ReceiverSpec {
        // The Node SDK names its inputs link `…-receiver-link-<uuid>`; the name is free.
        name: "InputsReceiverLink".to_owned(),
        address: events_address(device, module),
        credit,
    })
}

/// What a security message holds, as the echo summarises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    #[serde(rename = "AgentId")]
    pub agent_id: String,
    /// Events by `Name`, with how many.
    pub events: BTreeMap<String, usize>,
    /// The module's own validation: "valid", or the first violation.
    pub validation: String,
}

/// One received message, described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Echoed {
    /// `x-opt-input-name`: the input the route named.
    pub input: Option<String>,
    /// `iothub-connection-device-id` / `-module-id`: who sent it.
    pub device: Option<String>,
    pub module: Option<String>,
    pub message_id: Option<String>,
    /// `iothub-enqueuedtime` as edgeHub gave it (milliseconds since the epoch as text).
    pub enqueued_time: Option<String>,
    /// `x-opt-sequence-number`.
    pub sequence_number: Option<String>,
    /// Application properties, as text.
    pub properties: BTreeMap<String, String>,
    pub size: usize,
    /// `size` in 4 KB chunks, at least 1.
    pub chunks: usize,
    /// The body as text (lossy UTF-8); None when it could not be read.
    pub body: Option<String>,
    /// Set when the body is not something the echo can read (not a data/string body).
    pub unreadable: Option<String>,
    /// For a security message (a JSON object with `AgentId` and `Events`).
    pub security: Option<Summary>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Symbol(s) => s.to_string(),
        Value::Long(n) => n.to_string(),
        Value::Ulong(n) => n.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Uint(n) => n.to_string(),
        Value::Timestamp(t) => t.milliseconds().to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn simple_text(v: &SimpleValue) -> String {
    match v {
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn message_id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => format!("{b:?}"),
    }
}

/// Describe a message. Never fails: what is missing is None.
pub fn describe(m: &AmqpMessage) -> Echoed {
    let annotation = |key: &str| {
        m.message_annotations.as_ref().and_then(|a| {
            a.0.iter()
                .find(|(k, _)| match k {
                    OwnedKey::Symbol(s) => s.as_str() == key,
                    _ => false,
                })
                .map(|(_, v)| text(v))
        })
    };
    let mut properties = BTreeMap::new();
    if let Some(p) = &m.application_properties {
        for (k, v) in p.0.iter() {
            properties.insert(k.clone(), simple_text(v));
        }
    }
    // edgeHub puts the sender in the annotations; a property of the same name is a fallback.
    let or_prop = |key: &str| annotation(key).or_else(|| properties.get(key).cloned());
    let (body, unreadable) = match body_bytes(m) {
        Some(b) => (Some(b), None),
        None => (None, Some("a sequence body".to_owned())),
    };
    let size = body.as_ref().map_or(0, Vec::len);
    let text_body = body
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned());
    let (security, unreadable) = match &text_body {
        Some(t) => match serde_json::from_str::<serde_json::Value>(t) {
            Ok(v) => (summary(&v, t), unreadable),
            Err(e) => (None, Some(format!("not JSON: {e}"))),
        },
        None => (None, unreadable),
    };
    Echoed {
        input: annotation("x-opt-input-name"),
        device: or_prop("iothub-connection-device-id"),
        module: or_prop("iothub-connection-module-id"),
        message_id: m
            .properties
            .as_ref()
            .and_then(|p| p.message_id.as_ref())
            .map(message_id_text),
        enqueued_time: annotation("iothub-enqueuedtime"),
        sequence_number: annotation("x-opt-sequence-number"),
        properties,
        size,
        chunks: size.div_ceil(CHUNK_BYTES).max(1),
        body: text_body,
        unreadable,
        security,
    }
}

/// The summary of a body that is a security message (an object with `AgentId` and an
/// `Events` array), with the module's own validation of `text`.
fn summary(v: &serde_json::Value, text: &str) -> Option<Summary> {
    let agent_id = v.get("AgentId")?.as_str()?.to_owned();
    let list = v.get("Events")?.as_array()?;
    let mut events = BTreeMap::new();
    for e in list {
        let name = e
            .get("Name")
            .and_then(|n| n.as_str())
            .unwrap_or("(no Name)");
        *events.entry(name.to_owned()).or_insert(0) += 1;
    }
    let validation = match crate::validate::validate_message(text) {
        Ok(()) => "valid".to_owned(),
        Err(v) => match v.first() {
            Some(first) => format!(
                "invalid: {} {} ({} violations)",
                first.path,
                first.message,
                v.len()
            ),
            None => "invalid".to_owned(),
        },
    };
    Some(Summary {
        agent_id,
        events,
        validation,
    })
}

impl Echoed {
    /// One line for a person reading `iotedge logs echo`.
    pub fn line(&self) -> String {
        let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let props: Vec<String> = self
            .properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut s = format!(
            "input={} from={}/{} message-id={} enqueued={} properties={{{}}} size={} chunks={}",
            o(&self.input),
            o(&self.device),
            o(&self.module),
            o(&self.message_id),
            o(&self.enqueued_time),
            props.join(", "),
            self.size,
            self.chunks
        );
        if let Some(sec) = &self.security {
            let events: Vec<String> = sec.events.iter().map(|(k, n)| format!("{k}:{n}")).collect();
            s.push_str(&format!(
                " security: AgentId={} MessagePriority={} events={{{}}} validation={}",
                sec.agent_id,
                self.properties
                    .get("MessagePriority")
                    .map_or("-", String::as_str),
                events.join(", "),
                sec.validation
            ));
        }
        if let Some(why) = &self.unreadable {
            s.push_str(&format!(" unreadable: {why}"));
        }
        s.push_str(&format!(" body={}", o(&self.body)));
        s
    }

    /// One JSON object (the fields of [`Echoed`]; None is null).
    pub fn json(&self) -> String {
        // Only strings, numbers and maps of strings: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What the echo is asked to do.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    pub json: bool,
    /// Print only messages of these inputs (all when empty); others are still accepted.
    pub inputs: Vec<String>,
    /// Exit 0 after this many printed messages.
    pub count: Option<u64>,
    /// Give up (an error) after this long.
    pub timeout: Option<Duration>,
}

/// Why the echo ended without its count.
#[derive(Debug, Error)]
pub enum EchoError {
    #[error("{got} of {want} messages arrived within {after:?}")]
    TooFew {
        got: u64,
        want: u64,
        after: Duration,
    },
    #[error("no message arrived within {after:?}")]
    Nothing { after: Duration },
    #[error("the connection's link service ended")]
    Ended,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Receive until `count` messages were printed (Ok(count)), the timeout (an error) or
/// `stop` (Ok(printed)). Each delivery is accepted before it is described.
pub async fn run<W: Write>(
    credentials: Arc<Credentials>,
    amqp: AmqpConfig,
    options: EchoOptions,
    mut out: W,
    stop: Arc<tokio::sync::Notify>,
) -> Result<u64, EchoError> {
    let (service, mut rx) = inputs(credentials.device_id(), credentials.module_id(), 16);
    let stats = Arc::new(AmqpStats::default());
    let (control, control_rx) = watch::channel(Control::Run);
    let connection = tokio::spawn(
        Connection::new(credentials, amqp, stats)
            .with(service)
            .run(control_rx),
    );
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let mut printed = 0u64;
    let result = loop {
        if options.count.is_some_and(|c| printed >= c) {
            break Ok(printed);
        }
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), rx.recv()).await.ok(),
                None => Some(rx.recv().await),
            }
        };
        let inbound = tokio::select! {
            n = next => n,
            _ = stop.notified() => break Ok(printed),
        };
        let m = match inbound {
            None => {
                let after = options.timeout.unwrap_or_default();
                break Err(match options.count {
                    _ if printed == 0 => EchoError::Nothing { after },
                    Some(want) => EchoError::TooFew {
                        got: printed,
                        want,
                        after,
                    },
                    None => EchoError::Nothing { after },
                });
            }
            Some(None) => break Err(EchoError::Ended),
            Some(Some(m)) => m,
        };
        let e = describe(&m.message);
        // Accepted at once: edgeHub completes it and sends the next.
        m.accept();
        if !options.inputs.is_empty()
            && !e.input.as_ref().is_some_and(|i| options.inputs.contains(i))
        {
            tracing::debug!(input = ?e.input, "a message of another input: accepted, not shown");
            continue;
        }
        let line = if options.json { e.json() } else { e.line() };
        if let Err(err) = writeln!(out, "{line}").and_then(|_| out.flush()) {
            break Err(err.into());
        }
        printed += 1;
    };
    let _ = control.send(Control::Finish {
        deadline: Instant::now() + Duration::from_secs(2),
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::{
        AmqpValue, ApplicationProperties, Body, Data, Message, MessageAnnotations, Properties,
    };
    use fe2o3_amqp::types::primitives::{Binary, Symbol};

    /// Synthetic: a message as edgeHub's `AmqpMessageConverter` would hand it to a module.
    fn routed(body: Body<Value>) -> AmqpMessage {
        let ann = MessageAnnotations::builder()
            .insert(
                OwnedKey::Symbol(Symbol::from("x-opt-input-name")),
                Value::String("input1".into()),
            )
            .insert(
                OwnedKey::Symbol(Symbol::from("iothub-connection-device-id")),
                Value::String("dev1".into()),
            )
            .insert(
                OwnedKey::Symbol(Symbol::from("iothub-connection-module-id")),
                Value::String("azureiotsecurity".into()),
            )
            .insert(
                OwnedKey::Symbol(Symbol::from("iothub-enqueuedtime")),
                Value::Timestamp(fe2o3_amqp::types::primitives::Timestamp::from_milliseconds(
                    1_700_000_000_123,
                )),
            )
            .insert(
                OwnedKey::Symbol(Symbol::from("x-opt-sequence-number")),
                Value::Long(7),
            )
            .build();
        Message::builder()
            .properties(Properties {
                message_id: Some(MessageId::String("m-1".into())),
                ..Default::default()
            })
            .message_annotations(ann)
            .application_properties(
                ApplicationProperties::builder()
                    .insert("MessagePriority", SimpleValue::String("High".into()))
                    .build(),
            )
            .body(body)
            .build()
    }

    fn data(b: &[u8]) -> Body<Value> {
        Body::Data(vec![Data(Binary::from(b.to_vec()))].into())
    }

    /// A message of the module's (the first `replay --messages` gives for the real capture
    /// tests/data/activity.log) is summarised and validated; the annotations and properties
    /// land in their fields.
    #[test]
    fn a_security_message_is_summarised_and_validated() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/activity.log");
        let log = std::fs::File::open(path).unwrap();
        let mut out = Vec::new();
        crate::app::replay(
            &crate::config::settings::Settings::default(),
            std::io::BufReader::new(log),
            &mut out,
            crate::app::Mode::Messages {
                agent_id: uuid::Uuid::nil(),
            },
        )
        .unwrap();
        let all = String::from_utf8(out).unwrap();
        let body = all.lines().next().unwrap();
        let e = describe(&routed(data(body.as_bytes())));
        assert_eq!(e.input.as_deref(), Some("input1"));
        assert_eq!(e.device.as_deref(), Some("dev1"));
        assert_eq!(e.module.as_deref(), Some("azureiotsecurity"));
        assert_eq!(e.message_id.as_deref(), Some("m-1"));
        assert_eq!(e.enqueued_time.as_deref(), Some("1700000000123"));
        assert_eq!(e.sequence_number.as_deref(), Some("7"));
        assert_eq!(
            e.properties.get("MessagePriority").map(String::as_str),
            Some("High")
        );
        assert_eq!(e.size, body.len());
        assert_eq!(e.chunks, body.len().div_ceil(4096));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let sec = e.security.as_ref().unwrap();
        assert_eq!(sec.agent_id, v["AgentId"].as_str().unwrap());
        assert_eq!(
            sec.events.values().sum::<usize>(),
            v["Events"].as_array().unwrap().len()
        );
        assert_eq!(sec.validation, "valid");
        assert!(e.unreadable.is_none());
        let line = e.line();
        assert!(line.starts_with("input=input1 from=dev1/azureiotsecurity message-id=m-1 enqueued=1700000000123 properties={MessagePriority=High}"), "{line}");
        assert!(line.contains("validation=valid"), "{line}");
        let j: serde_json::Value = serde_json::from_str(&e.json()).unwrap();
        assert_eq!(j["security"]["validation"], "valid");
        assert_eq!(j["size"], body.len());
    }

    /// A security message the validator refuses (synthetic: Events with a bad event) says
    /// invalid and why; a body that is not JSON, or a sequence, is reported unreadable.
    #[test]
    fn invalid_and_unreadable_bodies_are_reported() {
        let bad = br#"{"AgentId":"x","Events":[{"Name":"ProcessCreate"}]}"#;
        let e = describe(&routed(data(bad)));
        let sec = e.security.unwrap();
        assert_eq!(sec.events.get("ProcessCreate"), Some(&1));
        assert!(
            sec.validation.starts_with("invalid: "),
            "{}",
            sec.validation
        );

        let e = describe(&routed(data(b"\xff not json")));
        assert!(e.security.is_none());
        assert!(e.unreadable.as_deref().unwrap().starts_with("not JSON"));
        assert_eq!(e.size, 10);
        assert_eq!(e.chunks, 1);

        let e = describe(&routed(Body::Value(AmqpValue(Value::String("hi".into())))));
        assert_eq!(e.body.as_deref(), Some("hi"));
        let e = describe(&routed(Body::Sequence(vec![].into())));
        assert_eq!(e.unreadable.as_deref(), Some("a sequence body"));
        assert_eq!((e.size, e.chunks), (0, 1));
        assert!(e.line().ends_with("unreadable: a sequence body body=-"));
    }
}
