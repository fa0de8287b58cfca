//! The module twin's link service: requests and desired-property patches on
//! `/devices/{d}/modules/{m}/twin`, as the official SDKs exchange them with edgeHub
//! (shared/reference/iotedge-amqp.md §4; the Node SDK's frames are the reference,
//! tests/twin_interop.rs).
//!
//! Contract: on every connection, a sender then a receiver link on the twin node, both with
//! the same fresh `com.microsoft:channel-correlation-id` = `twin:<uuid>`, the SDK's
//! api-version and our client-version, through the [`super::request`] helper; then
//! [`TwinEvent::Connected`] on the caller's channel (patches may have been missed while
//! disconnected: the caller GETs again). The [`Twin`] handle outlives connections:
//! [`Twin::get`], [`Twin::subscribe_desired`] and [`Twin::report`] each wait for the reply's
//! `status` (bounded by the requester's timeout); a status outside 2xx is
//! [`TwinError::Status`]. Messages without a correlation-id are desired patches: parsed into
//! [`TwinEvent::Desired`]; a body that is not a JSON object is counted and logged
//! (W-TWIN-PATCH-BAD, once per process at warn). Nothing from edgeHub is unwrapped.
//! Retrying, applying and persisting the configuration are the caller's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{Body, Data, Header, Message, MessageAnnotations, Properties};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Value};
use serde_json::Value as Json;
use thiserror::Error;
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use super::AmqpError;
use super::connection::{Attached, BoxFuture, LinkContext, LinkService, finish_requested};
use super::request::{self, AmqpMessage, RequestError, RequestLinks, RequestSpec, Requester};
use crate::edge::sas::encode_component;

/// The link property the SDKs send with the twin links; edgeHub does not check its value.
pub const API_VERSION_PROPERTY: &str = "com.microsoft:api-version";
/// The Node SDK's (azure-iot-common `endpoint.apiVersion`, 1.18.4); the C SDK sends
/// "2020-09-30". We match the SDK our wire is compared with.
pub const API_VERSION: &str = "2021-04-12";
/// The resource of a reported-properties PATCH.
pub const RESOURCE_REPORTED: &str = "/properties/reported";
/// The resource of the desired-properties subscription (PUT) and its end (DELETE).
pub const RESOURCE_DESIRED: &str = "/notifications/twin/properties/desired";

// edgeHub's ReportedPropertiesValidator.cs ("taken from IoTHub"), ref §4.3.
const REPORTED_MAX_DEPTH: usize = 10;
const REPORTED_VALUE_MAX: usize = 4096;
const REPORTED_NAME_MAX: usize = 1024;
const REPORTED_INT_MAX: i64 = (1 << 52) - 1;
const REPORTED_INT_MIN: i64 = -(1 << 52);
const REPORTED_DOC_MAX: usize = 32 * 1024;

/// A twin request's `operation` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    Patch,
    Put,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "GET",
            Operation::Patch => "PATCH",
            Operation::Put => "PUT",
            Operation::Delete => "DELETE",
        }
    }

    /// The `resource` annotation: none on GET (the SDK sends none; edgeHub ignores it).
    pub fn resource(self) -> Option<&'static str> {
        match self {
            Operation::Get => None,
            Operation::Patch => Some(RESOURCE_REPORTED),
            Operation::Put | Operation::Delete => Some(RESOURCE_DESIRED),
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a twin request failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TwinError {
    #[error("twin {operation} answered with status {status}")]
    Status { status: i32, operation: Operation },
    #[error("twin {operation}: no reply within {after:?}")]
    Timeout {
        operation: Operation,
        after: Duration,
    },
    #[error("twin {operation}: {source}")]
    Request {
        operation: Operation,
        source: RequestError,
    },
    #[error("twin {operation}: the reply has no int `status` annotation ({found})")]
    NoStatus { operation: Operation, found: String },
    #[error("twin GET: the reply's body is not a twin document: {0}")]
    Body(String),
    #[error("reported properties edgeHub would refuse: {0}")]
    Refused(String),
}

/// The twin as a GET returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinDocument {
    pub desired: Json,
    pub reported: Json,
}

/// A desired-properties patch as edgeHub pushes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPatch {
    /// Its `$version` (None when absent or not an integer).
    pub version: Option<i64>,
    /// The whole patch, `$version` included.
    pub body: Json,
}

/// What the twin service tells its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum TwinEvent {
    /// The twin links are attached on a new connection: patches may have been missed since
    /// the last one, so a fresh GET is due.
    Connected,
    Desired(DesiredPatch),
}

/// Counters of the twin service.
#[derive(Debug, Default)]
pub struct TwinStats {
    /// Desired patches handed to the caller.
    pub patches: AtomicU64,
    /// Messages without a correlation-id whose body is not a JSON object: dropped.
    pub bad_patches: AtomicU64,
}

/// The twin node of a module (`/devices/{d}/twin` for a device identity), ids
/// percent-encoded as for the events link.
pub fn twin_address(device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(m) => format!(
            "/devices/{}/modules/{}/twin",
            encode_component(device_id),
            encode_component(m)
        ),
        None => format!("/devices/{}/twin", encode_component(device_id)),
    }
}

/// The pair's spec on one connection: a fresh channel id each time, as the SDKs make one per
/// twin client (edgeHub only needs the two links of a connection to agree).
fn spec(address: String) -> RequestSpec {
    RequestSpec {
        name: "twin".into(),
        address,
        // rhea leaves the receiver's target without an address; so do we.
        reply_to: None,
        channel_correlation_id: Some(format!("twin:{}", Uuid::new_v4())),
        properties: vec![(API_VERSION_PROPERTY.into(), API_VERSION.into())],
        // Both links AtMostOnce, as the SDKs and edgeHub's twin handlers (ref §4.1).
        settled_replies: true,
    }
}

/// A twin request as the Node SDK sends it (the requester adds the string correlation-id):
/// rhea's default header, annotations `operation` (+ `resource` but on GET), symbol keys and
/// string values, one data section; an empty body is one space (the C SDK's
/// `EMPTY_TWIN_BODY_DATA`, the Node SDK's too).
pub fn twin_request(operation: Operation, body: Option<Vec<u8>>) -> AmqpMessage {
    let mut annotations = MessageAnnotations::builder().insert(
        OwnedKey::Symbol(Symbol::from("operation")),
        Value::String(operation.as_str().into()),
    );
    if let Some(r) = operation.resource() {
        annotations = annotations.insert(
            OwnedKey::Symbol(Symbol::from("resource")),
            Value::String(r.into()),
        );
    }
    let body = match body {
        Some(b) if !b.is_empty() => b,
        _ => b" ".to_vec(),
    };
    Message::builder()
        .header(Header::default())
        .message_annotations(annotations.build())
        .properties(Properties::default())
        .body(Body::Data(vec![Data(Binary::from(body))].into()))
        .build()
}

/// A reply's `status` annotation (edgeHub: an int; others' widths taken too).
pub fn reply_status(m: &AmqpMessage) -> Result<i32, String> {
    let found = m.message_annotations.as_ref().and_then(|a| {
        a.0.iter().find_map(|(k, v)| match k {
            OwnedKey::Symbol(s) if s.0 == "status" => Some(v),
            _ => None,
        })
    });
    match found {
        None => Err("none".into()),
        Some(Value::Int(i)) => Ok(*i),
        Some(Value::Long(i)) => i32::try_from(*i).map_err(|_| i.to_string()),
        Some(Value::Uint(i)) => i32::try_from(*i).map_err(|_| i.to_string()),
        Some(Value::Short(i)) => Ok(i32::from(*i)),
        Some(Value::Ushort(i)) => Ok(i32::from(*i)),
        Some(other) => Err(format!("{other:?}")),
    }
}

/// The body's bytes: data sections joined; a string or binary amqp-value taken as is;
/// no body (or null) is empty. A sequence body is not a twin body (None).
pub fn body_bytes(m: &AmqpMessage) -> Option<Vec<u8>> {
    match &m.body {
        Body::Data(sections) => Some(sections.iter().flat_map(|d| d.0.iter().copied()).collect()),
        Body::Value(v) => match &v.0 {
            Value::Binary(b) => Some(b.to_vec()),
            Value::String(s) => Some(s.as_bytes().to_vec()),
            Value::Null => Some(Vec::new()),
            _ => None,
        },
        Body::Empty => Some(Vec::new()),
        Body::Sequence(_) => None,
    }
}

/// The outcome of a reply: `Ok(body)` for a 2xx status.
pub fn parse_reply(operation: Operation, m: &AmqpMessage) -> Result<Vec<u8>, TwinError> {
    let status = reply_status(m).map_err(|found| TwinError::NoStatus { operation, found })?;
    if !(200..300).contains(&status) {
        // edgeHub's error replies have an EMPTY data section (DeviceMessageHandler.cs
        // HandleTwinOperationException): never read it as JSON.
        return Err(TwinError::Status { status, operation });
    }
    Ok(body_bytes(m).unwrap_or_default())
}

/// A GET reply's body: `{"desired": {…}, "reported": {…}}`.
pub fn parse_twin_document(body: &[u8]) -> Result<TwinDocument, TwinError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(TwinError::Body("empty".into()));
    }
    let v: Json =
        serde_json::from_slice(body).map_err(|e| TwinError::Body(format!("not JSON ({e})")))?;
    let Json::Object(mut o) = v else {
        return Err(TwinError::Body("not a JSON object".into()));
    };
    let mut part = |name: &str| match o.remove(name) {
        Some(p @ Json::Object(_)) => Ok(p),
        Some(_) => Err(TwinError::Body(format!("`{name}` is not an object"))),
        None => Err(TwinError::Body(format!("no `{name}`"))),
    };
    Ok(TwinDocument {
        desired: part("desired")?,
        reported: part("reported")?,
    })
}

/// A desired patch (a message without correlation-id); Err says why it is not one.
pub fn parse_desired_patch(m: &AmqpMessage) -> Result<DesiredPatch, String> {
    let body = body_bytes(m).ok_or("a sequence body")?;
    let v: Json = serde_json::from_slice(&body).map_err(|e| format!("not JSON ({e})"))?;
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    Ok(DesiredPatch {
        version: v.get("$version").and_then(Json::as_i64),
        body: v,
    })
}

/// Why edgeHub would refuse these reported properties (its ReportedPropertiesValidator), or
/// None. Names: no `.`, `$`, `#`, whitespace or control characters, at most 1024 bytes; depth
/// at most 10; strings at most 4096 bytes; integers within ±2^52; no null in arrays; the
/// document at most 32 KiB.
pub fn reported_error(patch: &Json) -> Option<String> {
    if !patch.is_object() {
        return Some("the reported properties are not a JSON object".into());
    }
    let size = patch.to_string().len();
    if size > REPORTED_DOC_MAX {
        return Some(format!(
            "the document is {size} bytes, more than {REPORTED_DOC_MAX}"
        ));
    }
    fn name_error(name: &str) -> Option<String> {
        if name.len() > REPORTED_NAME_MAX {
            return Some(format!(
                "the name {:?}… is longer than {REPORTED_NAME_MAX} bytes",
                name.chars().take(10).collect::<String>()
            ));
        }
        name.chars()
            .find(|&c| {
                matches!(c, '.' | '$' | '#')
                    || c.is_whitespace()
                    || (c as u32) < 32
                    || (127..160).contains(&(c as u32))
            })
            .map(|c| format!("the name {name:?} contains {c:?}"))
    }
    fn check(name: &str, v: &Json, depth: usize, in_array: bool) -> Option<String> {
        if let Some(e) = name_error(name) {
            return Some(e);
        }
        match v {
            Json::Object(o) => {
                if depth > REPORTED_MAX_DEPTH {
                    return Some(format!("nested deeper than {REPORTED_MAX_DEPTH}"));
                }
                o.iter().find_map(|(k, x)| check(k, x, depth + 1, in_array))
            }
            Json::Array(a) => {
                if depth > REPORTED_MAX_DEPTH {
                    return Some(format!("nested deeper than {REPORTED_MAX_DEPTH}"));
                }
                a.iter().find_map(|x| {
                    if x.is_null() {
                        Some("an array holds null".into())
                    } else {
                        check("", x, depth + 1, true)
                    }
                })
            }
            Json::Null if in_array => Some(format!("{name:?} in an array is null")),
            Json::Null | Json::Bool(_) => None,
            Json::Number(n) => match n.as_i64() {
                Some(i) if !(REPORTED_INT_MIN..=REPORTED_INT_MAX).contains(&i) => {
                    Some(format!("{name:?} = {i} is beyond ±2^52"))
                }
                // A u64 beyond i64 is beyond 2^52 too.
                None if n.is_u64() => Some(format!("{name:?} = {n} is beyond ±2^52")),
                _ => None,
            },
            Json::String(s) if s.len() > REPORTED_VALUE_MAX => Some(format!(
                "the value of {name:?} is {} bytes, more than {REPORTED_VALUE_MAX}",
                s.len()
            )),
            Json::String(_) => None,
        }
    }
    check("", patch, 0, false)
}

/// The caller's handle on the twin: cheap to clone, valid across connections.
#[derive(Debug, Clone)]
pub struct Twin {
    requester: Requester,
    timeout: Duration,
}

impl Twin {
    async fn ask(&self, operation: Operation, body: Option<Vec<u8>>) -> Result<Vec<u8>, TwinError> {
        let reply = self
            .requester
            .request_correlated(twin_request(operation, body))
            .await
            .map_err(|e| match e {
                RequestError::Timeout(after) => TwinError::Timeout { operation, after },
                source => TwinError::Request { operation, source },
            })?;
        parse_reply(operation, &reply)
    }

    /// The whole twin (GET).
    pub async fn get(&self) -> Result<TwinDocument, TwinError> {
        let body = self.ask(Operation::Get, None).await?;
        parse_twin_document(&body)
    }

    /// Subscribe this connection to desired patches (PUT). edgeHub already subscribes it
    /// when the twin receiver link opens; the SDKs send the PUT too.
    pub async fn subscribe_desired(&self) -> Result<(), TwinError> {
        self.ask(Operation::Put, None).await.map(drop)
    }

    /// Merge `patch` into the reported properties (PATCH; null removes a key). Refused here,
    /// without a request, when edgeHub would refuse it.
    pub async fn report(&self, patch: &Json) -> Result<(), TwinError> {
        if let Some(why) = reported_error(patch) {
            return Err(TwinError::Refused(why));
        }
        self.ask(Operation::Patch, Some(patch.to_string().into_bytes()))
            .await
            .map(drop)
    }

    /// The bound on each request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The twin links as a link service.
pub struct TwinService {
    requests: Mutex<request::Requests>,
    events: mpsc::Sender<TwinEvent>,
    stats: Arc<TwinStats>,
    bad_patch_said: AtomicBool,
}

/// A twin service, its handle (requests time out after `timeout`), the channel of its
/// events (the caller must drain it: a full channel holds the replies up too) and its
/// counters.
pub fn service(
    timeout: Duration,
    capacity: usize,
) -> (TwinService, Twin, mpsc::Receiver<TwinEvent>, Arc<TwinStats>) {
    let (requester, requests) = request::channel(timeout, capacity);
    let (events, rx) = mpsc::channel(capacity.max(1));
    let stats = Arc::new(TwinStats::default());
    let service = TwinService {
        requests: Mutex::new(requests),
        events,
        stats: stats.clone(),
        bad_patch_said: AtomicBool::new(false),
    };
    (service, Twin { requester, timeout }, rx, stats)
}

impl TwinService {
    /// A message without correlation-id: a desired patch for the caller, or counted.
    async fn unsolicited(&self, address: &str, m: AmqpMessage) {
        match parse_desired_patch(&m) {
            Ok(p) => {
                self.stats.patches.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(address, version = ?p.version, "desired patch");
                if self.events.send(TwinEvent::Desired(p)).await.is_err() {
                    tracing::debug!(address, "the twin's caller is gone; patch dropped");
                }
            }
            Err(why) => {
                let n = self.stats.bad_patches.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.bad_patch_said.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error_id = "W-TWIN-PATCH-BAD", address, reason = %why, "a desired-properties patch is not a JSON object: ignored (said once; counted)");
                } else {
                    tracing::debug!(address, reason = %why, count = n, "another desired patch ignored");
                }
            }
        }
    }
}

impl LinkService for TwinService {
    fn attach<'s, 'a>(
        &'s self,
        session: &'a mut SessionHandle<()>,
        cx: &'a LinkContext,
    ) -> BoxFuture<'a, Result<Attached<'s>, AmqpError>>
    where
        's: 'a,
    {
        Box::pin(async move {
            let address = twin_address(&cx.device_id, cx.module_id.as_deref());
            let spec = spec(address.clone());
            let mut links =
                RequestLinks::attach(session, &spec, cx.link_id, cx.attach_timeout).await?;
            let control = cx.control.clone();
            let run = Box::pin(async move {
                let mut requests = self.requests.lock().await;
                let (raw_tx, mut raw_rx) = mpsc::channel::<AmqpMessage>(8);
                // Told first, before any patch of this connection: edgeHub subscribed the
                // connection when our receiver opened, and what came before is unknown.
                let forward = async {
                    if self.events.send(TwinEvent::Connected).await.is_err() {
                        tracing::debug!(address = %spec.address, "the twin's caller is gone");
                    }
                    while let Some(m) = raw_rx.recv().await {
                        self.unsolicited(&spec.address, m).await;
                    }
                    std::future::pending::<()>().await
                };
                let served = tokio::select! {
                    r = links.serve(&mut requests, Some(&raw_tx)) => r,
                    _ = forward => Ok(()),
                    _ = finish_requested(control) => Ok(()),
                };
                drop(requests);
                match served {
                    Ok(()) => {
                        links.close().await;
                        Ok(())
                    }
                    Err(e) => Err(AmqpError::Link {
                        address: spec.address.clone(),
                        reason: e.to_string(),
                    }),
                }
            });
            Ok(Attached { address, run })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::{AmqpValue, MessageId};
    use serde_json::json;

    fn annotations(m: &AmqpMessage) -> Vec<(String, Value)> {
        m.message_annotations
            .as_ref()
            .map(|a| {
                a.0.iter()
                    .map(|(k, v)| match k {
                        OwnedKey::Symbol(s) => (s.0.clone(), v.clone()),
                        OwnedKey::Ulong(n) => (format!("ulong {n}"), v.clone()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn reply(status: Option<Value>, body: Body<Value>) -> AmqpMessage {
        let mut b = Message::builder().properties(Properties {
            correlation_id: Some(MessageId::String("c-1".into())),
            ..Default::default()
        });
        if let Some(s) = status {
            b = b.message_annotations(
                MessageAnnotations::builder()
                    .insert(OwnedKey::Symbol(Symbol::from("status")), s)
                    .build(),
            );
        }
        b.body(body).build()
    }

    fn data(text: &str) -> Body<Value> {
        Body::Data(vec![Data(Binary::from(text.as_bytes().to_vec()))].into())
    }

    #[test]
    fn requests_carry_the_sdks_annotations_and_one_data_section() {
        for (op, resource) in [
            (Operation::Get, None),
            (Operation::Patch, Some("/properties/reported")),
            (
                Operation::Put,
                Some("/notifications/twin/properties/desired"),
            ),
            (
                Operation::Delete,
                Some("/notifications/twin/properties/desired"),
            ),
        ] {
            let m = twin_request(op, None);
            let mut want = vec![("operation".to_owned(), Value::String(op.as_str().into()))];
            if let Some(r) = resource {
                want.push(("resource".to_owned(), Value::String(r.into())));
            }
            assert_eq!(annotations(&m), want, "{op}");
            // An empty body is one space, in one data section.
            assert_eq!(body_bytes(&m), Some(b" ".to_vec()), "{op}");
            assert!(matches!(&m.body, Body::Data(d) if d.len() == 1));
            assert_eq!(m.header, Some(Header::default()));
            // The requester gives it its correlation-id; no message-id, ever.
            let p = m.properties.as_ref().unwrap();
            assert_eq!((&p.message_id, &p.correlation_id), (&None, &None));
        }
        let m = twin_request(Operation::Patch, Some(br#"{"a":1}"#.to_vec()));
        assert_eq!(body_bytes(&m), Some(br#"{"a":1}"#.to_vec()));
        assert_eq!(Operation::Get.to_string(), "GET");
    }

    #[test]
    fn the_address_and_a_fresh_channel_id_per_connection() {
        assert_eq!(
            twin_address("dev 1", Some("azureiotsecurity")),
            "/devices/dev%201/modules/azureiotsecurity/twin"
        );
        assert_eq!(twin_address("d", None), "/devices/d/twin");
        let (a, b) = (spec("x".into()), spec("x".into()));
        let id = a.channel_correlation_id.clone().unwrap();
        let uuid = id.strip_prefix("twin:").unwrap();
        assert!(Uuid::parse_str(uuid).is_ok(), "{id}");
        assert_ne!(a.channel_correlation_id, b.channel_correlation_id);
        assert_eq!(
            a.properties,
            [(
                "com.microsoft:api-version".to_owned(),
                "2021-04-12".to_owned()
            )]
        );
        assert_eq!((a.name.as_str(), a.reply_to.as_deref()), ("twin", None));
        assert!(a.settled_replies);
    }

    #[test]
    fn replies_are_read_by_their_int_status_and_an_error_reply_may_be_empty() {
        let ok = reply(
            Some(Value::Int(200)),
            data(r#"{"desired":{},"reported":{}}"#),
        );
        assert_eq!(
            parse_reply(Operation::Get, &ok).unwrap(),
            br#"{"desired":{},"reported":{}}"#.to_vec()
        );
        assert_eq!(
            parse_reply(Operation::Patch, &reply(Some(Value::Int(204)), data(""))).unwrap(),
            Vec::<u8>::new()
        );
        // edgeHub's error replies: an empty data section, or no body at all.
        for body in [data(""), Body::Empty] {
            assert_eq!(
                parse_reply(Operation::Get, &reply(Some(Value::Int(429)), body)),
                Err(TwinError::Status {
                    status: 429,
                    operation: Operation::Get
                })
            );
        }
        for (status, want) in [
            (Value::Int(500), Err(500)),
            (Value::Int(199), Err(199)),
            (Value::Long(200), Ok(())),
            (Value::Ushort(204), Ok(())),
        ] {
            let got = parse_reply(Operation::Put, &reply(Some(status), data("")));
            match want {
                Ok(()) => assert!(got.is_ok(), "{got:?}"),
                Err(s) => assert_eq!(
                    got,
                    Err(TwinError::Status {
                        status: s,
                        operation: Operation::Put
                    })
                ),
            }
        }
        assert!(matches!(
            parse_reply(Operation::Get, &reply(None, data("{}"))),
            Err(TwinError::NoStatus { .. })
        ));
        assert!(matches!(
            parse_reply(
                Operation::Get,
                &reply(Some(Value::String("200".into())), data("{}"))
            ),
            Err(TwinError::NoStatus { .. })
        ));
        assert!(matches!(
            parse_reply(
                Operation::Get,
                &reply(Some(Value::Long(1 << 40)), data("{}"))
            ),
            Err(TwinError::NoStatus { .. })
        ));
    }

    #[test]
    fn a_get_body_must_be_a_twin_document() {
        let doc =
            parse_twin_document(br#"{"desired":{"a":1,"$version":3},"reported":{"$version":1}}"#)
                .unwrap();
        assert_eq!(doc.desired, json!({"a": 1, "$version": 3}));
        assert_eq!(doc.reported, json!({"$version": 1}));
        for bad in [
            &b""[..],
            b" ",
            b"not json",
            b"[1]",
            b"\"x\"",
            br#"{"desired":{}}"#,
            br#"{"reported":{}}"#,
            br#"{"desired":1,"reported":{}}"#,
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_twin_document(bad), Err(TwinError::Body(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn desired_patches_are_objects_with_their_version() {
        let m = reply(None, data(r#"{"x":{"value":"PT10S"},"$version":5}"#));
        assert_eq!(
            parse_desired_patch(&m),
            Ok(DesiredPatch {
                version: Some(5),
                body: json!({"x": {"value": "PT10S"}, "$version": 5})
            })
        );
        let no_version = reply(None, data(r#"{"x":1}"#));
        assert_eq!(parse_desired_patch(&no_version).unwrap().version, None);
        let text_version = reply(None, data(r#"{"$version":"5"}"#));
        assert_eq!(parse_desired_patch(&text_version).unwrap().version, None);
        // An amqp-value string body is read too.
        let value = reply(
            None,
            Body::Value(AmqpValue(Value::String(r#"{"$version":2}"#.into()))),
        );
        assert_eq!(parse_desired_patch(&value).unwrap().version, Some(2));
        for bad in [
            data(""),
            data("[1,2]"),
            data("null"),
            data("{"),
            Body::Empty,
            Body::Value(AmqpValue(Value::Int(3))),
        ] {
            assert!(parse_desired_patch(&reply(None, bad)).is_err());
        }
    }

    #[test]
    fn reported_names_and_values_edgehub_refuses_are_refused_here() {
        for ok in [
            json!({}),
            json!({"a": {"b": [1, "x", true]}, "gone": null, "n": 4503599627370495_i64}),
            json!({"s": "x".repeat(4096)}),
        ] {
            assert_eq!(reported_error(&ok), None, "{ok}");
        }
        // Objects nested at depth 0..=10 pass (the stand-in's and edgeHub's count); 11 not.
        let nest = |n: usize| (0..n).fold(json!(1), |v, _| json!({"d": v}));
        assert_eq!(reported_error(&nest(11)), None);
        let deep = nest(12);
        for bad in [
            json!([1]),
            json!({"a.b": 1}),
            json!({"$version": 1}),
            json!({"a#": 1}),
            json!({"a b": 1}),
            json!({"a": {"tab\t": 1}}),
            json!({"a\u{7}": 1}),
            json!({"k".repeat(1025): 1}),
            json!({"s": "x".repeat(4097)}),
            json!({"n": 4503599627370496_i64}),
            json!({"n": -4503599627370497_i64}),
            json!({"n": u64::MAX}),
            json!({"a": [1, null]}),
            json!({"a": [{"b": null}]}),
            deep,
            json!({"big": (0..9).map(|i| (format!("k{i}"), json!("x".repeat(4000)))).collect::<serde_json::Map<_, _>>()}),
        ] {
            assert!(reported_error(&bad).is_some(), "{bad}");
        }
    }

    #[tokio::test]
    async fn report_refuses_locally_and_sends_nothing() {
        let (_service, twin, _events, _stats) = service(Duration::from_millis(50), 4);
        assert!(matches!(
            twin.report(&json!({"a.b": 1})).await,
            Err(TwinError::Refused(_))
        ));
        // Nothing serves the requests here: a valid report times out, as an unanswered one.
        assert_eq!(
            twin.report(&json!({"a": 1})).await,
            Err(TwinError::Timeout {
                operation: Operation::Patch,
                after: Duration::from_millis(50)
            })
        );
        assert_eq!(twin.timeout(), Duration::from_millis(50));
    }

    #[tokio::test]
    async fn unsolicited_messages_become_patches_or_are_counted() {
        let (service, _twin, mut events, stats) = service(Duration::from_secs(1), 4);
        service
            .unsolicited("a", reply(None, data(r#"{"$version":7}"#)))
            .await;
        service.unsolicited("a", reply(None, data("[]"))).await;
        service.unsolicited("a", reply(None, data(""))).await;
        assert_eq!(
            events.try_recv(),
            Ok(TwinEvent::Desired(DesiredPatch {
                version: Some(7),
                body: json!({"$version": 7})
            }))
        );
        assert!(events.try_recv().is_err());
        assert_eq!(stats.patches.load(Ordering::Relaxed), 1);
        assert_eq!(stats.bad_patches.load(Ordering::Relaxed), 2);
    }
}
