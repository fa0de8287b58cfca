//! An edgeHub in the test process, made with fe2o3-amqp's acceptor, over real TLS (the
//! `localhost` certificate of `support::certs`): it answers CBS put-tokens (checking the token
//! as edgeHub does: signature over `sr` as sent, audience, expiry), takes the telemetry link and
//! settles each message as its script says, and records what it saw. Any other address is a
//! request node: it records and accepts what the client sends there and answers nothing on
//! its own; the test sends replies, patches or input messages to a client receiver link with
//! [`Hub::send`], and the hub records how the client settled each. Needs nothing outside the
//! test process (no Python, Node or root), so its tests belong to the quick tier.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use azureiotsecurity::edge::sas::SharedAccessKey;
use fe2o3_amqp::acceptor::{ConnectionAcceptor, LinkAcceptor, LinkEndpoint, SessionAcceptor};
use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErr};
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Modified, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{SimpleValue, Symbol, Value};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use super::certs::Certs;

/// The module's shared access key (base64) the hub checks tokens against.
pub const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGhlLWluLXByb2Nlc3MtaHVi"; // base64("secret-key-for-the-in-process-hub")
/// A runtime for the hub (the module binary under test runs as its own process).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the hub")
}

/// The environment that points module `module` of device `device` at the hub on `port`:
/// its connection string (signed with [`KEY`]), the CA to verify the hub's certificate,
/// fast reconnections and info logs. Tests add what their part needs.
pub fn module_env(
    device: &str,
    module: &str,
    port: u16,
    ca: &std::path::Path,
) -> Vec<(String, String)> {
    let cs = format!(
        "HostName={HUB};DeviceId={device};ModuleId={module};SharedAccessKey={KEY};GatewayHostName=localhost:{port}"
    );
    [
        ("EdgeHubConnectionString", cs),
        ("EdgeModuleCACertificateFile", ca.display().to_string()),
        ("AZUREIOTSECURITY_EDGEHUB__RECONNECT_MIN_MS", "100".into()),
        ("AZUREIOTSECURITY_EDGEHUB__RECONNECT_MAX_MS", "500".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The IoT hub name the token's audience must carry.
pub const HUB: &str = "hub.example.net";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Release,
    Modify,
    Reject,
    /// Close the TCP connection without settling.
    Drop,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rec {
    Connection(usize),
    PutToken {
        conn: usize,
        token_type: String,
        name: String,
        valid: Result<(), String>,
        expiry: u64,
    },
    /// The client attached a sender (other than `$cbs`'s).
    Attach {
        conn: usize,
        address: String,
        client_version: Option<String>,
        channel_correlation_id: Option<String>,
    },
    /// The client attached a receiver (other than `$cbs`'s) with this source.
    ReceiverAttach {
        conn: usize,
        address: String,
        channel_correlation_id: Option<String>,
    },
    /// A message the client sent to a request node (any address but `$cbs` and events):
    /// `id` its message-id; a twin request's `correlation_id` and `operation` annotation
    /// (empty when absent).
    Request {
        conn: usize,
        address: String,
        id: String,
        correlation_id: String,
        operation: String,
        body: String,
    },
    /// How the client settled a message the hub sent it.
    Outcome {
        conn: usize,
        address: String,
        id: String,
        outcome: String,
    },
    Message {
        conn: usize,
        id: String,
        marker: Option<(bool, String)>,
        content_type: Option<String>,
        content_encoding: Option<String>,
        /// The application properties in their order: a string value as itself, any other
        /// type as `not a string: …`.
        application_properties: Vec<(String, String)>,
        body: String,
        action: Action,
    },
}

#[derive(Clone)]
pub struct HubScript {
    /// Settlements to give, in order; `Accept` after the end.
    pub actions: Arc<Mutex<VecDeque<Action>>>,
    /// Put-token statuses to answer, in order; 200 after the end.
    pub cbs_status: Arc<Mutex<VecDeque<i32>>>,
}

/// A message the hub sends to the client.
pub type ToClient = Message<Body<Value>>;

/// The client's receiver links, by source address (the latest attach wins).
type Outlets = Arc<Mutex<HashMap<String, mpsc::Sender<ToClient>>>>;

pub struct Hub {
    pub port: u16,
    records: Arc<Mutex<Vec<Rec>>>,
    outlets: Outlets,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hub {
    pub async fn start(certs: &Certs, script: HubScript, port: u16) -> Hub {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let records = Arc::new(Mutex::new(Vec::new()));
        let outlets: Outlets = Arc::new(Mutex::new(HashMap::new()));
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config());
        let recs = records.clone();
        let outs = outlets.clone();
        let task = tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                n += 1;
                let (acceptor, recs, script, outs) =
                    (acceptor.clone(), recs.clone(), script.clone(), outs.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(n, tls, recs, script, outs).await;
                    }
                });
            }
        });
        Hub {
            port,
            records,
            outlets,
            task,
        }
    }

    /// Send `m` to the client's receiver link on `address` (false: no such link). The hub
    /// sends them one at a time, each after the client settled the one before.
    pub async fn send(&self, address: &str, m: ToClient) -> bool {
        let outlet = self.outlets.lock().unwrap().get(address).cloned();
        match outlet {
            Some(o) => o.send(m).await.is_ok(),
            None => false,
        }
    }

    /// The requests the client sent to `address`: (message-id, body).
    pub fn requests(&self, address: &str) -> Vec<(String, String)> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Rec::Request {
                    address: a,
                    id,
                    body,
                    ..
                } if a == address => Some((id, body)),
                _ => None,
            })
            .collect()
    }

    /// How the client settled what the hub sent on `address`: (message-id, outcome).
    pub fn outcomes(&self, address: &str) -> Vec<(String, String)> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Rec::Outcome {
                    address: a,
                    id,
                    outcome,
                    ..
                } if a == address => Some((id, outcome)),
                _ => None,
            })
            .collect()
    }

    pub fn records(&self) -> Vec<Rec> {
        self.records.lock().unwrap().clone()
    }

    pub fn messages(&self) -> Vec<(usize, String, Action)> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Rec::Message {
                    conn, id, action, ..
                } => Some((conn, id, action)),
                _ => None,
            })
            .collect()
    }

    pub fn put_tokens(&self) -> Vec<(usize, Result<(), String>)> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Rec::PutToken { conn, valid, .. } => Some((conn, valid)),
                _ => None,
            })
            .collect()
    }
}

/// What edgeHub checks of a token (DeviceScopeTokenAuthenticator, SharedAccessSignature).
pub fn check_token(token: &str) -> (Result<(), String>, u64) {
    let Some(fields) = token.strip_prefix("SharedAccessSignature ") else {
        return (Err("not a SharedAccessSignature".into()), 0);
    };
    let mut map = HashMap::new();
    for kv in fields.split('&') {
        if let Some((k, v)) = kv.split_once('=') {
            map.insert(k, v);
        }
    }
    let (Some(sr), Some(sig), Some(se)) = (map.get("sr"), map.get("sig"), map.get("se")) else {
        return (Err("sr, sig or se missing".into()), 0);
    };
    let expiry: u64 = se.parse().unwrap_or(0);
    // edgeHub signs `sr` exactly as sent (already url-encoded) + "\n" + se.
    let expected = SharedAccessKey::from_base64(KEY)
        .unwrap()
        .sign(&format!("{sr}\n{expiry}"))
        .unwrap();
    let sig = percent_decode(sig);
    if sig != expected {
        return (Err("signature".into()), expiry);
    }
    if percent_decode(sr) != format!("{HUB}/devices/dev1/modules/azureiotsecurity") {
        return (Err(format!("audience {}", percent_decode(sr))), expiry);
    }
    let now = chrono::Utc::now().timestamp() as u64;
    if expiry <= now {
        return (Err("expired".into()), expiry);
    }
    (Ok(()), expiry)
}

pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

pub fn text(v: &SimpleValue) -> String {
    match v {
        SimpleValue::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// A link property as text (a string's value, anything else's debug form).
fn property(props: &Option<fe2o3_amqp::types::definitions::Fields>, key: &str) -> Option<String> {
    props
        .as_ref()
        .and_then(|p| p.get(&Symbol::from(key)).cloned())
        .map(|v| match v {
            Value::String(s) => s,
            other => format!("{other:?}"),
        })
}

/// A message-id as text.
pub fn id_text(id: Option<MessageId>) -> String {
    match id {
        Some(MessageId::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// A body as text (data sections joined, an amqp-value string as is).
pub fn body_text(body: &Body<Value>) -> String {
    match body {
        Body::Data(batch) => batch
            .iter()
            .map(|d| String::from_utf8_lossy(&d.0).into_owned())
            .collect(),
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        },
        other => format!("{other:?}"),
    }
}

pub async fn serve(
    conn: usize,
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    recs: Arc<Mutex<Vec<Rec>>>,
    script: HubScript,
    outlets: Outlets,
) {
    let acceptor = ConnectionAcceptor::builder()
        .container_id("in-process-edgehub")
        .build();
    let Ok(mut connection) = acceptor.accept(tls).await else {
        return;
    };
    recs.lock().unwrap().push(Rec::Connection(conn));
    let Ok(mut session) = SessionAcceptor::new().accept(&mut connection).await else {
        return;
    };
    let links = LinkAcceptor::new();
    let (reply_tx, reply_rx) = mpsc::channel::<Message<AmqpValue<Value>>>(8);
    let mut reply_rx = Some(reply_rx);
    let stop = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    loop {
        let endpoint = tokio::select! {
            e = links.accept(&mut session) => e,
            _ = stop.notified() => break,
        };
        let Ok(endpoint) = endpoint else { break };
        match endpoint {
            LinkEndpoint::Receiver(rx) => {
                let address = rx
                    .target()
                    .as_ref()
                    .and_then(|t| t.address.clone())
                    .unwrap_or_default();
                if address == "$cbs" {
                    tasks.push(tokio::spawn(cbs_node(
                        conn,
                        rx,
                        reply_tx.clone(),
                        recs.clone(),
                        script.clone(),
                    )));
                } else {
                    let client_version =
                        rx.properties(|p| property(p, "com.microsoft:client-version"));
                    let channel_correlation_id =
                        rx.properties(|p| property(p, "com.microsoft:channel-correlation-id"));
                    recs.lock().unwrap().push(Rec::Attach {
                        conn,
                        address: address.clone(),
                        client_version,
                        channel_correlation_id,
                    });
                    if !address.ends_with("/messages/events") {
                        tasks.push(tokio::spawn(request_node(conn, address, rx, recs.clone())));
                        continue;
                    }
                    let (recs, script, stop) = (recs.clone(), script.clone(), stop.clone());
                    tasks.push(tokio::spawn(async move {
                        events_link(conn, rx, recs, script).await;
                        stop.notify_one();
                    }));
                }
            }
            LinkEndpoint::Sender(tx) => {
                let source = tx
                    .source()
                    .as_ref()
                    .and_then(|s| s.address.clone())
                    .unwrap_or_default();
                if source != "$cbs" {
                    let channel_correlation_id =
                        tx.properties(|p| property(p, "com.microsoft:channel-correlation-id"));
                    recs.lock().unwrap().push(Rec::ReceiverAttach {
                        conn,
                        address: source.clone(),
                        channel_correlation_id,
                    });
                    let (out_tx, out_rx) = mpsc::channel(16);
                    outlets.lock().unwrap().insert(source.clone(), out_tx);
                    tasks.push(tokio::spawn(outlet(conn, source, tx, out_rx, recs.clone())));
                    continue;
                }
                let mut tx = tx;
                // Replies go back on the client's $cbs receiver link.
                if let Some(mut rx) = reply_rx.take() {
                    tasks.push(tokio::spawn(async move {
                        while let Some(m) = rx.recv().await {
                            if tx.send(m).await.is_err() {
                                return;
                            }
                        }
                    }));
                }
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    // Dropping the handles tears the connection down (what `Drop` is for).
}

pub async fn cbs_node(
    conn: usize,
    mut rx: Receiver,
    replies: mpsc::Sender<Message<AmqpValue<Value>>>,
    recs: Arc<Mutex<Vec<Rec>>>,
    script: HubScript,
) {
    while let Ok(d) = rx.recv::<Body<Value>>().await {
        let _ = rx.accept(&d).await;
        let m = d.message();
        let props = m.application_properties.clone().unwrap_or_default();
        let get = |k: &str| props.0.get(k).map(text).unwrap_or_default();
        let token = match &m.body {
            Body::Value(v) => match &v.0 {
                Value::String(s) => s.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let (valid, expiry) = check_token(&token);
        recs.lock().unwrap().push(Rec::PutToken {
            conn,
            token_type: get("type"),
            name: get("name"),
            valid,
            expiry,
        });
        let status = script.cbs_status.lock().unwrap().pop_front().unwrap_or(200);
        let reply = Message::builder()
            .properties(Properties {
                correlation_id: m.properties.as_ref().and_then(|p| p.message_id.clone()),
                ..Default::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", SimpleValue::Int(status))
                    .insert("status-description", SimpleValue::String("test".into()))
                    .build(),
            )
            .value(Value::Null)
            .build();
        if replies.send(reply).await.is_err() {
            return;
        }
    }
}

/// A request node: records and accepts each message; answers come from the test.
pub async fn request_node(
    conn: usize,
    address: String,
    mut rx: Receiver,
    recs: Arc<Mutex<Vec<Rec>>>,
) {
    while let Ok(d) = rx.recv::<Body<Value>>().await {
        let m = d.message();
        let operation = m
            .message_annotations
            .as_ref()
            .and_then(|a| {
                a.0.iter().find_map(|(k, v)| match (k, v) {
                    (OwnedKey::Symbol(k), Value::String(v)) if k.0 == "operation" => {
                        Some(v.clone())
                    }
                    _ => None,
                })
            })
            .unwrap_or_default();
        recs.lock().unwrap().push(Rec::Request {
            conn,
            address: address.clone(),
            id: id_text(m.properties.as_ref().and_then(|p| p.message_id.clone())),
            correlation_id: m
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.clone())
                .map(|c| id_text(Some(c)))
                .unwrap_or_default(),
            operation,
            body: body_text(&m.body),
        });
        if rx.accept(&d).await.is_err() {
            return;
        }
    }
}

/// The hub's end of a client receiver link: sends what the test hands it, one at a time, and
/// records how the client settled each.
pub async fn outlet(
    conn: usize,
    address: String,
    mut tx: fe2o3_amqp::link::Sender,
    mut from_test: mpsc::Receiver<ToClient>,
    recs: Arc<Mutex<Vec<Rec>>>,
) {
    while let Some(m) = from_test.recv().await {
        let id = id_text(m.properties.as_ref().and_then(|p| p.message_id.clone()));
        let outcome = match tx.send(m).await {
            Ok(Outcome::Accepted(_)) => "accepted".to_owned(),
            Ok(Outcome::Rejected(r)) => format!(
                "rejected: {}",
                r.error.and_then(|e| e.description).unwrap_or_default()
            ),
            Ok(Outcome::Released(_)) => "released".to_owned(),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("send failed: {e}"),
        };
        let failed = outcome.starts_with("send failed");
        recs.lock().unwrap().push(Rec::Outcome {
            conn,
            address: address.clone(),
            id,
            outcome,
        });
        if failed {
            return;
        }
    }
}

pub async fn events_link(
    conn: usize,
    mut rx: Receiver,
    recs: Arc<Mutex<Vec<Rec>>>,
    script: HubScript,
) {
    while let Ok(d) = rx.recv::<Body<Value>>().await {
        let m = d.message();
        let p = m.properties.clone().unwrap_or_default();
        let id = match p.message_id {
            Some(MessageId::String(s)) => s,
            other => format!("{other:?}"),
        };
        let marker = m.message_annotations.as_ref().and_then(|a| {
            a.0.iter().find_map(|(k, v)| {
                let (is_symbol, key) = match k {
                    OwnedKey::Symbol(s) => (true, s.0.clone()),
                    OwnedKey::Ulong(_) => return None,
                };
                (key == "iothub-interface-id").then(|| {
                    let value = match v {
                        Value::String(s) => s.clone(),
                        other => format!("not a string: {other:?}"),
                    };
                    (is_symbol, value)
                })
            })
        });
        let application_properties = m
            .application_properties
            .as_ref()
            .map(|a| {
                a.0.iter()
                    .map(|(k, v)| {
                        let value = match v {
                            SimpleValue::String(s) => s.clone(),
                            other => format!("not a string: {other:?}"),
                        };
                        (k.clone(), value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = match &m.body {
            Body::Data(batch) => batch
                .iter()
                .map(|d| String::from_utf8_lossy(&d.0).into_owned())
                .collect(),
            other => format!("not data: {other:?}"),
        };
        let action = script
            .actions
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Action::Accept);
        recs.lock().unwrap().push(Rec::Message {
            conn,
            id,
            marker,
            content_type: p.content_type.map(|s| s.0),
            content_encoding: p.content_encoding.map(|s| s.0),
            application_properties,
            body,
            action,
        });
        let settled = match action {
            Action::Accept => rx.accept(&d).await,
            Action::Release => rx.release(&d).await,
            Action::Modify => {
                rx.modify(
                    &d,
                    Modified {
                        delivery_failed: Some(true),
                        undeliverable_here: None,
                        message_annotations: None,
                    },
                )
                .await
            }
            Action::Reject => {
                rx.reject(
                    &d,
                    AmqpErr::new(
                        AmqpError::NotAllowed,
                        Some("Message size exceeds the limit".to_owned()),
                        None,
                    ),
                )
                .await
            }
            Action::Drop => return,
        };
        if settled.is_err() {
            return;
        }
    }
}

/// A script: settlements in order (then `Accept`), put-token statuses in order (then 200).
pub fn script(actions: &[Action], cbs: &[i32]) -> HubScript {
    HubScript {
        actions: Arc::new(Mutex::new(actions.iter().copied().collect())),
        cbs_status: Arc::new(Mutex::new(cbs.iter().copied().collect())),
    }
}
