//! The AMQP client against the in-process edgeHub of `support::inprocess_hub` (fe2o3-amqp's
//! acceptor over real TLS): CBS put-token, the telemetry link and its messages, every outcome,
//! reconnection and token renewal.
//!
//! The hub checks what edgeHub checks of the token and records what it saw; the tests assert
//! on those records and on what the outbox was told. The interoperability with an independent
//! implementation (Qpid Proton) and with the official Node SDK is in `tests/edgehub_interop.rs`.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azureiotsecurity::edge::amqp::{
    AmqpConfig, AmqpStats, Client, Control, Outbound, Outbox, OutboxError, Settled,
};
use azureiotsecurity::edge::credentials::Credentials;
use support::certs::Certs;
use support::inprocess_hub::{Action, HUB, Hub, KEY, Rec, script};
use tokio::sync::{Notify, watch};

// ---------------------------------------------------------------- the client side

#[derive(Default)]
struct TestOutbox {
    pending: Mutex<VecDeque<Outbound>>,
    delivered: Mutex<Vec<String>>,
    rejected: Mutex<Vec<String>>,
}

impl TestOutbox {
    fn with(ids: &[&str]) -> Arc<Self> {
        let o = TestOutbox::default();
        for id in ids {
            o.pending.lock().unwrap().push_back(Outbound {
                message_id: id.to_string(),
                body: format!(r#"{{"AgentId":"a","Events":["{id}"]}}"#),
                high_events: 2,
                low_events: 1,
                application_properties: properties(id),
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
    async fn next(&self) -> Result<Option<Outbound>, OutboxError> {
        Ok(self.pending.lock().unwrap().front().cloned())
    }
    async fn settled(&self, m: Outbound, how: Settled) -> Result<(), OutboxError> {
        self.remove(&m.message_id);
        match how {
            Settled::Delivered => self.delivered.lock().unwrap().push(m.message_id.clone()),
            Settled::Rejected => self.rejected.lock().unwrap().push(m.message_id.clone()),
        }
        Ok(())
    }
}

/// The application properties of the message `id` (synthetic: the sender sends what it is
/// given; the outgoing state's choice of them is tested in `outgoing::properties`).
fn properties(id: &str) -> Vec<(String, String)> {
    vec![
        ("MessagePriority".into(), "High".into()),
        ("HubResourceId".into(), format!("/subscriptions/s/{id}")),
    ]
}

struct Running {
    stats: Arc<AmqpStats>,
    control: watch::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
}

fn credentials(certs: &Certs, port: u16) -> Arc<Credentials> {
    certs.module_credentials(HUB, "dev1", "azureiotsecurity", KEY, port)
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
        output_name: None,
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
        twin: None,
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

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    AmqpStats::get(c)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn delivers_security_messages_after_a_valid_put_token() {
    let certs = Certs::temp();
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
            application_properties,
            body,
            ..
        } = r
        {
            assert_eq!(application_properties, &properties(id));
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
    let certs = Certs::temp();
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
    let certs = Certs::temp();
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
    let certs = Certs::temp();
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
    let certs = Certs::temp();
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
    let certs = Certs::temp();
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
    let certs = Certs::temp();
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
    let certs = Certs::temp();
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
    outbox.pending.lock().unwrap().push_back(Outbound {
        message_id: "m2".into(),
        body: "{}".into(),
        high_events: 1,
        low_events: 0,
        application_properties: Vec::new(),
    });
    wait_until("m2", Duration::from_secs(10), || {
        outbox.delivered().len() == 2
    })
    .await;
    assert_eq!(outbox.delivered(), ["m1", "m2"]);
    run.task.abort();
}

// ---------------------------------------------------------------- link services

use azureiotsecurity::edge::amqp::Connection;
use azureiotsecurity::edge::amqp::receiver::{self, ReceiverSpec};
use azureiotsecurity::edge::amqp::request::{
    self, AmqpMessage, RequestError, RequestSpec, Requester,
};
use fe2o3_amqp::types::messaging::{AmqpValue, Body, Message, MessageId, Properties};
use fe2o3_amqp::types::primitives::Value;
use support::inprocess_hub::body_text;
use tokio::sync::mpsc;

const TWIN: &str = "/devices/dev1/modules/azureiotsecurity/twin";
const EVENTS: &str = "/devices/dev1/modules/azureiotsecurity/messages/events";
const CHANNEL: &str = "twin:6f1e4a3c-8f00-4b6a-9c1d-2e3f4a5b6c7d";

/// A request with a text body (synthetic: the helper does not look inside).
fn text_message(body: &str) -> AmqpMessage {
    Message::builder()
        .body(Body::Value(AmqpValue(Value::String(body.into()))))
        .build()
}

/// What the hub sends: a reply to `correlation` (or, without one, a patch or an input).
fn from_hub(id: &str, correlation: Option<&str>, body: &str) -> AmqpMessage {
    Message::builder()
        .properties(Properties {
            message_id: Some(MessageId::String(id.into())),
            correlation_id: correlation.map(|c| MessageId::String(c.into())),
            ..Default::default()
        })
        .body(Body::Value(AmqpValue(Value::String(body.into()))))
        .build()
}

struct Twin {
    hub: Hub,
    requester: Requester,
    unsolicited: mpsc::Receiver<AmqpMessage>,
    run: Running,
}

/// A connection that runs only a request pair on the twin address (no telemetry, no outbox),
/// its receiver link attached.
async fn start_twin(certs: &Certs, timeout: Duration) -> Twin {
    let hub = Hub::start(certs, script(&[], &[]), 0).await;
    let (service, requester, unsolicited) = request::service(
        RequestSpec {
            name: "twin".into(),
            address: TWIN.into(),
            reply_to: None,
            channel_correlation_id: Some(CHANNEL.into()),
            properties: Vec::new(),
            settled_replies: false,
        },
        timeout,
        8,
    );
    let stats = Arc::new(AmqpStats::default());
    let (control, rx) = watch::channel(Control::Run);
    let connection =
        Connection::new(credentials(certs, hub.port), config(), stats.clone()).with(service);
    let task = tokio::spawn(connection.run(rx));
    wait_until("the twin links", Duration::from_secs(20), || {
        hub.records()
            .iter()
            .any(|r| matches!(r, Rec::ReceiverAttach { address, .. } if address == TWIN))
    })
    .await;
    Twin {
        hub,
        requester,
        unsolicited,
        run: Running {
            stats,
            control,
            task,
        },
    }
}

fn body_of(m: &AmqpMessage) -> String {
    body_text(&m.body)
}

#[tokio::test]
async fn the_request_pair_matches_replies_answered_out_of_order() {
    let certs = Certs::temp();
    let t = start_twin(&certs, Duration::from_secs(10)).await;
    let ask = |body: &'static str| {
        let r = t.requester.clone();
        tokio::spawn(async move { r.request(text_message(body)).await })
    };
    let (a, b) = (ask("get a"), ask("get b"));
    wait_until("two requests", Duration::from_secs(10), || {
        t.hub.requests(TWIN).len() == 2
    })
    .await;
    let requests = t.hub.requests(TWIN);
    let id_of = |body: &str| {
        requests
            .iter()
            .find(|(_, b)| b == body)
            .map(|(id, _)| id.clone())
            .unwrap()
    };
    let (id_a, id_b) = (id_of("get a"), id_of("get b"));
    assert_ne!(id_a, id_b, "each request has a fresh message-id");
    assert!(uuid::Uuid::parse_str(&id_a).is_ok(), "{id_a}");
    // b's reply first.
    assert!(t.hub.send(TWIN, from_hub("r1", Some(&id_b), "for b")).await);
    assert!(t.hub.send(TWIN, from_hub("r2", Some(&id_a), "for a")).await);
    let reply = |h: tokio::task::JoinHandle<Result<AmqpMessage, RequestError>>| async move {
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("a reply")
            .unwrap()
            .unwrap()
    };
    assert_eq!(body_of(&reply(a).await), "for a");
    assert_eq!(body_of(&reply(b).await), "for b");

    // Both links carry the channel correlation id; no telemetry link was attached.
    let recs = t.hub.records();
    let attaches: Vec<_> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::Attach {
                address,
                channel_correlation_id,
                ..
            } => Some((address.clone(), channel_correlation_id.clone())),
            Rec::ReceiverAttach {
                address,
                channel_correlation_id,
                ..
            } => Some((address.clone(), channel_correlation_id.clone())),
            _ => None,
        })
        .collect();
    let expected = (TWIN.to_string(), Some(CHANNEL.to_string()));
    assert_eq!(attaches, [expected.clone(), expected]);
    assert_eq!(get(&t.run.stats.connects), 1);
    t.run.task.abort();
}

#[tokio::test]
async fn the_request_pair_ignores_a_reply_to_an_unknown_id() {
    let certs = Certs::temp();
    let mut t = start_twin(&certs, Duration::from_secs(10)).await;
    let r = t.requester.clone();
    let asked = tokio::spawn(async move { r.request(text_message("get")).await });
    wait_until("the request", Duration::from_secs(10), || {
        t.hub.requests(TWIN).len() == 1
    })
    .await;
    let id = t.hub.requests(TWIN)[0].0.clone();
    assert!(
        t.hub
            .send(TWIN, from_hub("r1", Some("nobody-asked"), "stray"))
            .await
    );
    assert!(
        t.hub
            .send(TWIN, from_hub("r2", Some(&id), "the reply"))
            .await
    );
    let got = tokio::time::timeout(Duration::from_secs(10), asked)
        .await
        .expect("a reply")
        .unwrap()
        .unwrap();
    assert_eq!(body_of(&got), "the reply");
    // The stray was taken off the link and went nowhere: not to the request, not to the
    // caller's channel of uncorrelated messages. (The hub records a settlement after the
    // client has the message: wait for both.)
    wait_until("both settled", Duration::from_secs(10), || {
        t.hub.outcomes(TWIN).len() == 2
    })
    .await;
    assert_eq!(
        t.hub.outcomes(TWIN),
        [
            ("r1".to_string(), "accepted".to_string()),
            ("r2".to_string(), "accepted".to_string())
        ]
    );
    assert!(t.unsolicited.try_recv().is_err());
    assert_eq!(get(&t.run.stats.connect_failures), 0);
    t.run.task.abort();
}

#[tokio::test]
async fn a_request_the_hub_never_answers_times_out_and_the_connection_stays() {
    let certs = Certs::temp();
    let mut t = start_twin(&certs, Duration::from_millis(300)).await;
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        t.requester.request(text_message("get")),
    )
    .await
    .expect("the request's own timeout ends it");
    assert_eq!(
        got.unwrap_err(),
        RequestError::Timeout(Duration::from_millis(300))
    );
    let requests = t.hub.requests(TWIN);
    assert_eq!(requests.len(), 1, "the request did reach the hub");
    // The late reply is taken and dropped; the connection carries on.
    assert!(
        t.hub
            .send(TWIN, from_hub("late", Some(&requests[0].0), "late"))
            .await
    );
    wait_until("the late reply settled", Duration::from_secs(10), || {
        t.hub.outcomes(TWIN).len() == 1
    })
    .await;
    assert!(t.unsolicited.try_recv().is_err());
    assert_eq!(get(&t.run.stats.connects), 1);
    assert_eq!(get(&t.run.stats.connect_failures), 0);
    t.run.task.abort();
}

#[tokio::test]
async fn a_message_without_correlation_id_goes_to_the_caller() {
    let certs = Certs::temp();
    let mut t = start_twin(&certs, Duration::from_secs(10)).await;
    let patch = r#"{"desired":{"$version":7}}"#;
    assert!(t.hub.send(TWIN, from_hub("p1", None, patch)).await);
    let got = tokio::time::timeout(Duration::from_secs(10), t.unsolicited.recv())
        .await
        .expect("the patch arrives")
        .expect("the channel is open");
    assert_eq!(body_of(&got), patch);
    assert_eq!(
        got.properties.as_ref().and_then(|p| p.message_id.clone()),
        Some(MessageId::String("p1".into()))
    );
    t.run.task.abort();
}

#[tokio::test]
async fn a_receive_only_connection_takes_messages_and_settles_them_as_told() {
    let certs = Certs::temp();
    let hub = Hub::start(&certs, script(&[], &[]), 0).await;
    let (service, mut inbox) = receiver::service(ReceiverSpec {
        name: "InputReceiverLink".into(),
        address: EVENTS.into(),
        credit: 4,
    });
    let stats = Arc::new(AmqpStats::default());
    let (control, rx) = watch::channel(Control::Run);
    // No telemetry service, no outbox.
    let connection =
        Connection::new(credentials(&certs, hub.port), config(), stats.clone()).with(service);
    let task = tokio::spawn(connection.run(rx));
    wait_until("the receiver link", Duration::from_secs(20), || {
        hub.records()
            .iter()
            .any(|r| matches!(r, Rec::ReceiverAttach { address, .. } if address == EVENTS))
    })
    .await;
    for (id, body) in [("in-1", "first"), ("in-2", "second"), ("in-3", "third")] {
        assert!(hub.send(EVENTS, from_hub(id, None, body)).await);
    }
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .expect("a message")
            .expect("the channel is open")
    };
    let m = next().await;
    assert_eq!(body_of(&m.message), "first");
    m.accept();
    let m = next().await;
    assert_eq!(body_of(&m.message), "second");
    m.reject("not for this module");
    let m = next().await;
    assert_eq!(body_of(&m.message), "third");
    drop(m); // undecided: released, edgeHub may offer it again
    wait_until("three settlements", Duration::from_secs(10), || {
        hub.outcomes(EVENTS).len() == 3
    })
    .await;
    assert_eq!(
        hub.outcomes(EVENTS),
        [
            ("in-1".to_string(), "accepted".to_string()),
            (
                "in-2".to_string(),
                "rejected: not for this module".to_string()
            ),
            ("in-3".to_string(), "released".to_string()),
        ]
    );
    let recs = hub.records();
    assert!(
        !recs.iter().any(|r| matches!(r, Rec::Attach { .. })),
        "no sender link (no telemetry on the events address): {recs:?}"
    );
    assert_eq!(hub.put_tokens(), [(1, Ok(()))]);
    assert_eq!(get(&stats.connects), 1);

    // Finish: the receiver closes its link and the connection returns.
    control
        .send(Control::Finish {
            deadline: Instant::now() + Duration::from_secs(5),
        })
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the connection returns when told to finish")
        .unwrap();
}
