//! The AMQP client against an in-process edgeHub made with fe2o3-amqp's acceptor, over real
//! TLS (a CA and a `localhost` server certificate made with rcgen): CBS put-token, the
//! telemetry link and its messages, every outcome, reconnection and token renewal.
//!
//! The in-process hub checks what edgeHub checks of the token (signature over `sr` as sent,
//! audience, expiry) and records what it saw; the tests assert on those records and on what
//! the outbox was told. The interoperability with an independent implementation (Qpid
//! Proton) and with the official Node SDK is in `tests/edgehub_interop.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azureiotsecurity::edge::amqp::{AmqpConfig, AmqpStats, Client, Control, Outbox};
use azureiotsecurity::edge::credentials::Credentials;
use azureiotsecurity::edge::identity::Identity;
use azureiotsecurity::edge::sas::SharedAccessKey;
use azureiotsecurity::outbox::{StoreError, StoredMessage};
use fe2o3_amqp::acceptor::{ConnectionAcceptor, LinkAcceptor, LinkEndpoint, SessionAcceptor};
use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErr};
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Modified, Properties,
};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};

const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGhlLWluLXByb2Nlc3MtaHVi"; // base64("secret-key-for-the-in-process-hub")
const HUB: &str = "hub.example.net";

// ---------------------------------------------------------------- certificates

struct Certs {
    _dir: tempfile::TempDir,
    ca_path: std::path::PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn certs() -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "in-process test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    Certs {
        _dir: dir,
        ca_path,
        server: Arc::new(server),
    }
}

// ---------------------------------------------------------------- the in-process hub

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Accept,
    Release,
    Modify,
    Reject,
    /// Close the TCP connection without settling.
    Drop,
}

#[derive(Debug, Clone, PartialEq)]
enum Rec {
    Connection(usize),
    PutToken {
        conn: usize,
        token_type: String,
        name: String,
        valid: Result<(), String>,
        expiry: u64,
    },
    Attach {
        conn: usize,
        address: String,
        client_version: Option<String>,
    },
    Message {
        conn: usize,
        id: String,
        marker: Option<(bool, String)>,
        content_type: Option<String>,
        content_encoding: Option<String>,
        body: String,
        action: Action,
    },
}

#[derive(Clone)]
struct HubScript {
    /// Settlements to give, in order; `Accept` after the end.
    actions: Arc<Mutex<VecDeque<Action>>>,
    /// Put-token statuses to answer, in order; 200 after the end.
    cbs_status: Arc<Mutex<VecDeque<i32>>>,
}

struct Hub {
    port: u16,
    records: Arc<Mutex<Vec<Rec>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hub {
    async fn start(certs: &Certs, script: HubScript, port: u16) -> Hub {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let records = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server.clone());
        let recs = records.clone();
        let task = tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                n += 1;
                let (acceptor, recs, script) = (acceptor.clone(), recs.clone(), script.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(n, tls, recs, script).await;
                    }
                });
            }
        });
        Hub {
            port,
            records,
            task,
        }
    }

    fn records(&self) -> Vec<Rec> {
        self.records.lock().unwrap().clone()
    }

    fn messages(&self) -> Vec<(usize, String, Action)> {
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

    fn put_tokens(&self) -> Vec<(usize, Result<(), String>)> {
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
fn check_token(token: &str) -> (Result<(), String>, u64) {
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

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn text(v: &SimpleValue) -> String {
    match v {
        SimpleValue::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

async fn serve(
    conn: usize,
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    recs: Arc<Mutex<Vec<Rec>>>,
    script: HubScript,
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
                    let client_version = rx.properties(|p| {
                        p.as_ref()
                            .and_then(|p| {
                                p.get(&fe2o3_amqp::types::primitives::Symbol::from(
                                    "com.microsoft:client-version",
                                ))
                                .cloned()
                            })
                            .map(|v| match v {
                                Value::String(s) => s,
                                other => format!("{other:?}"),
                            })
                    });
                    recs.lock().unwrap().push(Rec::Attach {
                        conn,
                        address,
                        client_version,
                    });
                    let (recs, script, stop) = (recs.clone(), script.clone(), stop.clone());
                    tasks.push(tokio::spawn(async move {
                        events_link(conn, rx, recs, script).await;
                        stop.notify_one();
                    }));
                }
            }
            LinkEndpoint::Sender(mut tx) => {
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

async fn cbs_node(
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

async fn events_link(conn: usize, mut rx: Receiver, recs: Arc<Mutex<Vec<Rec>>>, script: HubScript) {
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

// ---------------------------------------------------------------- the client side

#[derive(Default)]
struct TestOutbox {
    pending: Mutex<VecDeque<StoredMessage>>,
    delivered: Mutex<Vec<String>>,
    rejected: Mutex<Vec<String>>,
}

impl TestOutbox {
    fn with(ids: &[&str]) -> Arc<Self> {
        let o = TestOutbox::default();
        for id in ids {
            o.pending.lock().unwrap().push_back(StoredMessage {
                message_id: id.to_string(),
                body: format!(r#"{{"AgentId":"a","Events":["{id}"]}}"#),
                high_events: 2,
                low_events: 1,
            });
        }
        Arc::new(o)
    }
    fn delivered(&self) -> Vec<String> {
        self.delivered.lock().unwrap().clone()
    }
    fn rejected(&self) -> Vec<String> {
        self.rejected.lock().unwrap().clone()
    }
    fn remove(&self, id: &str) {
        let mut p = self.pending.lock().unwrap();
        assert_eq!(p.front().map(|m| m.message_id.as_str()), Some(id));
        p.pop_front();
    }
}

impl Outbox for TestOutbox {
    fn next(&self) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self.pending.lock().unwrap().front().cloned())
    }
    fn delivered(&self, m: &StoredMessage) -> Result<(), StoreError> {
        self.remove(&m.message_id);
        self.delivered.lock().unwrap().push(m.message_id.clone());
        Ok(())
    }
    fn rejected(&self, m: &StoredMessage) -> Result<(), StoreError> {
        self.remove(&m.message_id);
        self.rejected.lock().unwrap().push(m.message_id.clone());
        Ok(())
    }
}

struct Running {
    stats: Arc<AmqpStats>,
    control: watch::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
}

fn credentials(certs: &Certs, port: u16) -> Arc<Credentials> {
    let mut env = HashMap::new();
    env.insert(
        "IotHubConnectionString".to_string(),
        format!(
            "HostName={HUB};DeviceId=dev1;ModuleId=azureiotsecurity;SharedAccessKey={KEY};GatewayHostName=localhost:{port}"
        ),
    );
    env.insert(
        "EdgeModuleCACertificateFile".to_string(),
        certs.ca_path.display().to_string(),
    );
    let identity = Identity::from_env(&env).unwrap().unwrap();
    Arc::new(Credentials::new(identity))
}

fn config() -> AmqpConfig {
    AmqpConfig {
        token_lifetime: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(120),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        send_timeout: Duration::from_secs(5),
        retry_delay: Duration::from_millis(50),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(400),
    }
}

fn start_client(creds: Arc<Credentials>, cfg: AmqpConfig, outbox: Arc<TestOutbox>) -> Running {
    let stats = Arc::new(AmqpStats::default());
    let (control, rx) = watch::channel(Control::Run);
    let client = Client {
        credentials: creds,
        config: cfg,
        outbox,
        wake: Arc::new(Notify::new()),
        stats: stats.clone(),
    };
    let task = tokio::spawn(client.run(rx));
    Running {
        stats,
        control,
        task,
    }
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn script(actions: &[Action], cbs: &[i32]) -> HubScript {
    HubScript {
        actions: Arc::new(Mutex::new(actions.iter().copied().collect())),
        cbs_status: Arc::new(Mutex::new(cbs.iter().copied().collect())),
    }
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    AmqpStats::get(c)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn delivers_security_messages_after_a_valid_put_token() {
    let certs = certs();
    let hub = Hub::start(&certs, script(&[], &[]), 0).await;
    let outbox = TestOutbox::with(&["m1", "m2", "m3"]);
    let run = start_client(credentials(&certs, hub.port), config(), outbox.clone());
    wait_until("3 deliveries", Duration::from_secs(20), || {
        outbox.delivered().len() == 3
    })
    .await;
    assert_eq!(outbox.delivered(), ["m1", "m2", "m3"]);
    assert!(outbox.rejected().is_empty());

    let recs = hub.records();
    let tokens: Vec<_> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::PutToken {
                token_type,
                name,
                valid,
                expiry,
                ..
            } => Some((token_type.clone(), name.clone(), valid.clone(), *expiry)),
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 1, "{recs:?}");
    assert_eq!(tokens[0].0, "servicebus.windows.net:sastoken");
    assert_eq!(
        tokens[0].1, "hub.example.net%2Fdevices%2Fdev1%2Fmodules%2Fazureiotsecurity",
        "name is the token's sr as sent, as the Node SDK puts it"
    );
    assert_eq!(tokens[0].2, Ok(()));
    let now = chrono::Utc::now().timestamp() as u64;
    assert!(
        (now + 3500..=now + 3600).contains(&tokens[0].3),
        "expiry {}",
        tokens[0].3
    );

    let attaches: Vec<_> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::Attach {
                address,
                client_version,
                ..
            } => Some((address.clone(), client_version.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        attaches,
        [(
            "/devices/dev1/modules/azureiotsecurity/messages/events".to_string(),
            Some(format!("azureiotsecurity/{}", env!("CARGO_PKG_VERSION")))
        )]
    );
    for r in &recs {
        if let Rec::Message {
            id,
            marker,
            content_type,
            content_encoding,
            body,
            ..
        } = r
        {
            assert_eq!(
                marker,
                &Some((true, "urn:azureiot:Security:SecurityAgent:1".to_string()))
            );
            assert_eq!(content_type.as_deref(), Some("application/json"));
            assert_eq!(content_encoding.as_deref(), Some("utf-8"));
            assert_eq!(body, &format!(r#"{{"AgentId":"a","Events":["{id}"]}}"#));
        }
    }
    assert_eq!(get(&run.stats.connects), 1);
    assert_eq!(get(&run.stats.delivered), 3);
    assert_eq!(get(&run.stats.connect_failures), 0);
    run.task.abort();
}

#[tokio::test]
async fn every_outcome_does_what_it_means() {
    let certs = certs();
    use Action::*;
    // m1: released, modified, then rejected (final). m2: accepted. m3: the connection
    // drops mid-transfer, then accepted on the next connection with the same message-id.
    let hub = Hub::start(
        &certs,
        script(&[Release, Modify, Reject, Accept, Drop, Accept], &[]),
        0,
    )
    .await;
    let outbox = TestOutbox::with(&["m1", "m2", "m3"]);
    let run = start_client(credentials(&certs, hub.port), config(), outbox.clone());
    wait_until("m3 delivered", Duration::from_secs(20), || {
        outbox.delivered().len() == 2
    })
    .await;
    assert_eq!(outbox.rejected(), ["m1"]);
    assert_eq!(outbox.delivered(), ["m2", "m3"]);
    let seen = hub.messages();
    assert_eq!(
        seen,
        [
            (1, "m1".into(), Release),
            (1, "m1".into(), Modify),
            (1, "m1".into(), Reject),
            (1, "m2".into(), Accept),
            (1, "m3".into(), Drop),
            (2, "m3".into(), Accept),
        ]
    );
    assert_eq!(get(&run.stats.rejected), 1);
    assert_eq!(get(&run.stats.released), 2);
    assert_eq!(get(&run.stats.delivered), 2);
    assert_eq!(get(&run.stats.connects), 2);
    // Each connection authenticated with its own valid token.
    assert_eq!(hub.put_tokens(), [(1, Ok(())), (2, Ok(()))]);
    run.task.abort();
}

#[tokio::test]
async fn a_failed_put_token_reconnects_and_202_is_taken_as_success() {
    let certs = certs();
    let hub = Hub::start(&certs, script(&[], &[401, 202]), 0).await;
    let outbox = TestOutbox::with(&["m1"]);
    let run = start_client(credentials(&certs, hub.port), config(), outbox.clone());
    wait_until("delivery", Duration::from_secs(20), || {
        outbox.delivered().len() == 1
    })
    .await;
    let tokens = hub.put_tokens();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        (tokens[0].0, tokens[1].0),
        (1, 2),
        "a new connection after the 401"
    );
    // No telemetry link was attached on the connection whose put-token failed.
    let attach_conns: Vec<usize> = hub
        .records()
        .iter()
        .filter_map(|r| match r {
            Rec::Attach { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(attach_conns, [2]);
    assert_eq!(get(&run.stats.connect_failures), 1);
    run.task.abort();
}

#[tokio::test]
async fn survives_edgehub_starting_after_the_module() {
    let certs = certs();
    // A port that is free now and refused until the hub starts on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let outbox = TestOutbox::with(&["m1", "m2"]);
    let run = start_client(credentials(&certs, port), config(), outbox.clone());
    wait_until("two refused attempts", Duration::from_secs(10), || {
        get(&run.stats.connect_failures) >= 2
    })
    .await;
    assert!(outbox.delivered().is_empty());
    let hub = Hub::start(&certs, script(&[], &[]), port).await;
    wait_until("deliveries", Duration::from_secs(20), || {
        outbox.delivered().len() == 2
    })
    .await;
    assert_eq!(hub.messages().len(), 2);
    assert!(!run.task.is_finished(), "the client keeps running");
    run.task.abort();
}

#[tokio::test]
async fn renews_the_token_on_the_open_connection() {
    let certs = certs();
    let hub = Hub::start(&certs, script(&[], &[]), 0).await;
    let outbox = TestOutbox::with(&["m1"]);
    let mut cfg = config();
    cfg.token_lifetime = Duration::from_secs(10); // renewed after 8 s
    let run = start_client(credentials(&certs, hub.port), cfg, outbox.clone());
    wait_until("two put-tokens", Duration::from_secs(15), || {
        hub.put_tokens().len() >= 2
    })
    .await;
    assert_eq!(
        hub.put_tokens(),
        [(1, Ok(())), (1, Ok(()))],
        "both on connection 1"
    );
    assert_eq!(get(&run.stats.connects), 1);
    assert_eq!(outbox.delivered(), ["m1"]);
    run.task.abort();
}

#[tokio::test]
async fn finish_sends_what_is_ready_then_returns() {
    let certs = certs();
    let hub = Hub::start(&certs, script(&[], &[]), 0).await;
    let outbox = TestOutbox::with(&["m1", "m2"]);
    let run = start_client(credentials(&certs, hub.port), config(), outbox.clone());
    run.control
        .send(Control::Finish {
            deadline: Instant::now() + Duration::from_secs(10),
        })
        .unwrap();
    tokio::time::timeout(Duration::from_secs(12), run.task)
        .await
        .expect("the client returns after finishing")
        .unwrap();
    assert_eq!(outbox.delivered(), ["m1", "m2"]);
}

#[tokio::test]
async fn finish_gives_up_at_the_deadline_when_edgehub_is_away() {
    let certs = certs();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let outbox = TestOutbox::with(&["m1"]);
    let run = start_client(credentials(&certs, port), config(), outbox.clone());
    let started = Instant::now();
    run.control
        .send(Control::Finish {
            deadline: Instant::now() + Duration::from_millis(700),
        })
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), run.task)
        .await
        .expect("the client returns at the deadline")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(outbox.delivered().is_empty());
    assert_eq!(
        outbox.pending.lock().unwrap().len(),
        1,
        "the message is kept"
    );
}

#[tokio::test]
async fn a_failed_renewal_reconnects_instead_of_stalling() {
    let certs = certs();
    // First put-token 200, the renewal 500, then 200 on the new connection.
    let hub = Hub::start(&certs, script(&[], &[200, 500, 200]), 0).await;
    let outbox = TestOutbox::with(&["m1"]);
    let mut cfg = config();
    cfg.token_lifetime = Duration::from_secs(10); // renewal after 8 s
    let run = start_client(credentials(&certs, hub.port), cfg, outbox.clone());
    wait_until("a second connection", Duration::from_secs(20), || {
        get(&run.stats.connects) >= 2
    })
    .await;
    let tokens = hub.put_tokens();
    assert_eq!(
        tokens.iter().map(|t| t.0).collect::<Vec<_>>()[..3],
        [1, 1, 2],
        "renewal on connection 1 failed, connection 2 authenticated afresh"
    );
    assert_eq!(get(&run.stats.connect_failures), 1);
    // Messages put after the reconnect still go out.
    outbox.pending.lock().unwrap().push_back(StoredMessage {
        message_id: "m2".into(),
        body: "{}".into(),
        high_events: 1,
        low_events: 0,
    });
    wait_until("m2", Duration::from_secs(10), || {
        outbox.delivered().len() == 2
    })
    .await;
    assert_eq!(outbox.delivered(), ["m1", "m2"]);
    run.task.abort();
}
