//! Correlated request → reply over one sender + receiver link pair on an address (CBS on
//! `$cbs`, the twin on `/devices/{d}/modules/{m}/twin`).
//!
//! Contract: [`Requester::request`] gives the message a fresh message-id, sends it and waits
//! (bounded by the requester's timeout) for the reply whose correlation-id is that id. Replies
//! may come in any order; a reply to an id nobody waits for is ignored (debug log); a message
//! with no correlation-id (the twin's desired-properties patches) is handed to the caller's
//! channel when there is one. [`RequestLinks`] is the pair on one connection; [`service`] makes
//! a [`LinkService`] that attaches it on every connection for a requester that outlives them.

use std::collections::HashMap;
use std::time::Duration;

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Body, Message, MessageId};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use thiserror::Error;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::AmqpError;
use super::connection::{
    Attached, BoxFuture, LinkContext, LinkService, attach_sender, finish_requested,
    link_properties, within,
};

/// A request or a reply: any body (the put-token's is an amqp-value string).
pub type AmqpMessage = Message<Body<Value>>;

/// The link property that ties a request pair's two links together (the twin's
/// `twin:<uuid>`, as the SDKs send it).
pub const CHANNEL_CORRELATION_ID: &str = "com.microsoft:channel-correlation-id";

/// Where and how a request pair attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    /// Link names are `{name}-sender-{link id}` and `{name}-receiver-{link id}`.
    pub name: String,
    /// The sender's target and the receiver's source.
    pub address: String,
    /// The receiver's target, if the peer wants one (CBS: `cbs`, the Node SDK's reply-to).
    pub reply_to: Option<String>,
    /// Put on both links as [`CHANNEL_CORRELATION_ID`] when set.
    pub channel_correlation_id: Option<String>,
    /// More link properties on both links: symbol key, string value (the twin's
    /// `com.microsoft:api-version`).
    pub properties: Vec<(String, String)>,
    /// The receiver asks for settled replies (snd-settle-mode settled: AtMostOnce, as the
    /// SDKs' twin receiver); otherwise it leaves the mode to the peer (mixed).
    pub settled_replies: bool,
}

/// Why a request got no reply, or why the pair stopped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the link pair ended before the reply came")]
    Closed,
    #[error("sending the request: {0}")]
    Send(String),
    #[error("waiting for the reply: {0}")]
    Receive(String),
}

/// A request on its way to the link pair.
#[derive(Debug)]
pub struct Pending {
    id: String,
    message: AmqpMessage,
    reply: oneshot::Sender<AmqpMessage>,
}

/// The caller's handle: cheap to clone, valid across connections.
#[derive(Debug, Clone)]
pub struct Requester {
    tx: mpsc::Sender<Pending>,
    timeout: Duration,
}

/// The link pair's end of the requesters' channel.
#[derive(Debug)]
pub struct Requests(mpsc::Receiver<Pending>);

/// A requester whose requests time out after `timeout`, and the queue the link pair serves.
pub fn channel(timeout: Duration, capacity: usize) -> (Requester, Requests) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Requester { tx, timeout }, Requests(rx))
}

impl Requester {
    /// Send `message` with a fresh message-id and wait for its reply.
    pub async fn request(&self, mut message: AmqpMessage) -> Result<AmqpMessage, RequestError> {
        let id = Uuid::new_v4().to_string();
        message
            .properties
            .get_or_insert_with(Default::default)
            .message_id = Some(MessageId::String(id.clone()));
        self.exchange(id, message).await
    }

    /// Send `message` with a fresh id as its **correlation-id** (a string; no message-id),
    /// as the SDKs send twin requests, and wait for the reply that carries the same one.
    pub async fn request_correlated(
        &self,
        mut message: AmqpMessage,
    ) -> Result<AmqpMessage, RequestError> {
        let id = Uuid::new_v4().to_string();
        message
            .properties
            .get_or_insert_with(Default::default)
            .correlation_id = Some(MessageId::String(id.clone()));
        self.exchange(id, message).await
    }

    async fn exchange(
        &self,
        id: String,
        message: AmqpMessage,
    ) -> Result<AmqpMessage, RequestError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending { id, message, reply };
        // One bound for the whole exchange, queueing included, as put-token had.
        tokio::time::timeout(self.timeout, async {
            self.tx
                .send(pending)
                .await
                .map_err(|_| RequestError::Closed)?;
            answer.await.map_err(|_| RequestError::Closed)
        })
        .await
        .map_err(|_| RequestError::Timeout(self.timeout))?
    }
}

/// A message-id or correlation-id as text, for matching and logs.
pub fn message_id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => format!("{b:?}"),
    }
}

/// A message's correlation-id, as text.
pub fn correlation_id(m: &AmqpMessage) -> Option<String> {
    m.properties
        .as_ref()
        .and_then(|p| p.correlation_id.as_ref())
        .map(message_id_text)
}

/// Where an incoming message goes.
#[derive(Debug)]
pub enum Route<W> {
    /// The reply to a request that waits: hand it to this waiter.
    Reply(W),
    /// A reply to an id nobody waits for (answered late, or someone else's).
    Unknown(String),
    /// No correlation-id: not a reply at all.
    Unsolicited,
}

/// The requests waiting for their replies, by message-id (pure; `W` is the waiter).
#[derive(Debug)]
pub struct Correlator<W> {
    waiting: HashMap<String, W>,
}

impl<W> Default for Correlator<W> {
    fn default() -> Self {
        Correlator {
            waiting: HashMap::new(),
        }
    }
}

impl<W> Correlator<W> {
    /// Wait for the reply to `id`. `gone` says which waiters gave up (timed out): they are
    /// forgotten here, so that requests never answered do not pile up.
    pub fn expect(&mut self, id: String, waiter: W, gone: impl Fn(&W) -> bool) {
        self.waiting.retain(|_, w| !gone(w));
        self.waiting.insert(id, waiter);
    }

    /// Route a message by its correlation-id; a reply ends the wait for its id.
    pub fn route(&mut self, correlation_id: Option<String>) -> Route<W> {
        match correlation_id {
            None => Route::Unsolicited,
            Some(id) => match self.waiting.remove(&id) {
                Some(w) => Route::Reply(w),
                None => Route::Unknown(id),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// The link pair attached on one connection.
pub struct RequestLinks {
    address: String,
    sender: Sender,
    receiver: Receiver,
}

impl RequestLinks {
    /// Attach the sender, then the receiver (the order the SDKs use for `$cbs`).
    pub async fn attach<R>(
        session: &mut SessionHandle<R>,
        spec: &RequestSpec,
        link_id: Uuid,
        timeout: Duration,
    ) -> Result<RequestLinks, AmqpError> {
        let mut properties = link_properties();
        if let Some(c) = &spec.channel_correlation_id {
            properties.insert(
                Symbol::from(CHANNEL_CORRELATION_ID),
                Value::String(c.clone()),
            );
        }
        for (k, v) in &spec.properties {
            properties.insert(Symbol::from(k.as_str()), Value::String(v.clone()));
        }
        // Requests go pre-settled: the reply is the answer, not the disposition.
        let sender = attach_sender(
            session,
            format!("{}-sender-{link_id}", spec.name),
            spec.address.clone(),
            SenderSettleMode::Settled,
            properties.clone(),
            timeout,
        )
        .await?;
        let receiver = within(timeout, "attach receiver", async {
            let mut b = Receiver::builder()
                .name(format!("{}-receiver-{link_id}", spec.name))
                .source(spec.address.clone());
            if let Some(t) = &spec.reply_to {
                b = b.target(t.clone());
            }
            if spec.settled_replies {
                b = b.sender_settle_mode(SenderSettleMode::Settled);
            }
            b.receiver_settle_mode(ReceiverSettleMode::First)
                .auto_accept(true)
                .properties(properties)
                .attach(session)
                .await
                .map_err(|e| AmqpError::Attach {
                    address: spec.address.clone(),
                    reason: e.to_string(),
                })
        })
        .await?;
        Ok(RequestLinks {
            address: spec.address.clone(),
            sender,
            receiver,
        })
    }

    /// Send the queued requests and route what comes back, until every [`Requester`] is gone
    /// (`Ok`) or a link fails. Messages without a correlation-id go to `unsolicited` (the
    /// caller must drain it: a full channel holds the replies up too), or are dropped.
    pub async fn serve(
        &mut self,
        requests: &mut Requests,
        unsolicited: Option<&mpsc::Sender<AmqpMessage>>,
    ) -> Result<(), RequestError> {
        let mut waiting = Correlator::default();
        loop {
            tokio::select! {
                p = requests.0.recv() => {
                    let Some(p) = p else { return Ok(()) };
                    // Timed out while queued (the connection was down): nobody would read
                    // the reply.
                    if p.reply.is_closed() {
                        continue;
                    }
                    waiting.expect(p.id, p.reply, |w| w.is_closed());
                    self.sender
                        .send(p.message)
                        .await
                        .map_err(|e| RequestError::Send(e.to_string()))?;
                }
                d = self.receiver.recv::<Body<Value>>() => {
                    let m = d.map_err(|e| RequestError::Receive(e.to_string()))?.into_message();
                    match waiting.route(correlation_id(&m)) {
                        Route::Reply(w) => {
                            if w.send(m).is_err() {
                                tracing::debug!(address = %self.address, "a reply came after its request gave up");
                            }
                        }
                        Route::Unknown(id) => {
                            tracing::debug!(address = %self.address, correlation_id = %id, "ignoring a reply to another request");
                        }
                        Route::Unsolicited => match unsolicited {
                            Some(u) if u.send(m).await.is_ok() => {}
                            _ => tracing::debug!(address = %self.address, "ignoring a message without correlation-id"),
                        },
                    }
                }
            }
        }
    }

    /// Detach both links (a clean goodbye; errors change nothing).
    pub async fn close(self) {
        let _ = self.sender.close().await;
        let _ = self.receiver.close().await;
    }
}

/// A request pair as a link service: attached on every connection, serving the same
/// [`Requester`] across them.
pub struct RequestService {
    spec: RequestSpec,
    requests: Mutex<Requests>,
    unsolicited: mpsc::Sender<AmqpMessage>,
}

/// A request pair service, its requester (requests time out after `timeout`) and the channel
/// of messages that carry no correlation-id.
pub fn service(
    spec: RequestSpec,
    timeout: Duration,
    capacity: usize,
) -> (RequestService, Requester, mpsc::Receiver<AmqpMessage>) {
    let (requester, requests) = channel(timeout, capacity);
    let (unsolicited, rx) = mpsc::channel(capacity.max(1));
    let service = RequestService {
        spec,
        requests: Mutex::new(requests),
        unsolicited,
    };
    (service, requester, rx)
}

impl LinkService for RequestService {
    fn attach<'s, 'a>(
        &'s self,
        session: &'a mut SessionHandle<()>,
        cx: &'a LinkContext,
    ) -> BoxFuture<'a, Result<Attached<'s>, AmqpError>>
    where
        's: 'a,
    {
        Box::pin(async move {
            let mut links =
                RequestLinks::attach(session, &self.spec, cx.link_id, cx.attach_timeout).await?;
            let control = cx.control.clone();
            let address = self.spec.address.clone();
            let run = Box::pin(async move {
                let mut requests = self.requests.lock().await;
                let served = tokio::select! {
                    r = links.serve(&mut requests, Some(&self.unsolicited)) => r,
                    _ = finish_requested(control) => Ok(()),
                };
                drop(requests);
                match served {
                    Ok(()) => {
                        links.close().await;
                        Ok(())
                    }
                    Err(e) => Err(AmqpError::Link {
                        address: self.spec.address.clone(),
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
    use fe2o3_amqp::types::messaging::Properties;

    fn reply_to(id: Option<&str>) -> AmqpMessage {
        Message::builder()
            .properties(Properties {
                correlation_id: id.map(|i| MessageId::String(i.into())),
                ..Default::default()
            })
            .body(Body::Value(fe2o3_amqp::types::messaging::AmqpValue(
                Value::Null,
            )))
            .build()
    }

    #[test]
    fn replies_find_their_requests_in_any_order() {
        let mut c = Correlator::default();
        c.expect("a".into(), 1, |_| false);
        c.expect("b".into(), 2, |_| false);
        assert!(matches!(c.route(Some("b".into())), Route::Reply(2)));
        assert!(matches!(c.route(Some("a".into())), Route::Reply(1)));
        assert!(c.is_empty());
    }

    #[test]
    fn a_second_reply_and_a_stranger_are_unknown_an_uncorrelated_message_unsolicited() {
        let mut c = Correlator::default();
        c.expect("a".into(), 1, |_| false);
        assert!(matches!(c.route(Some("a".into())), Route::Reply(1)));
        match c.route(Some("a".into())) {
            Route::Unknown(id) => assert_eq!(id, "a"),
            other => panic!("{other:?}"),
        }
        match c.route(Some("zzz".into())) {
            Route::Unknown(id) => assert_eq!(id, "zzz"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.route(None), Route::Unsolicited));
    }

    #[test]
    fn waiters_that_gave_up_are_forgotten_at_the_next_request() {
        let mut c = Correlator::default();
        c.expect("a".into(), 1, |_| false);
        c.expect("b".into(), 2, |_| false);
        // 1 gave up (its request timed out); 2 still waits.
        c.expect("c".into(), 3, |w| *w == 1);
        assert_eq!(c.len(), 2);
        match c.route(Some("a".into())) {
            Route::Unknown(id) => assert_eq!(id, "a"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.route(Some("b".into())), Route::Reply(2)));
    }

    #[test]
    fn correlation_ids_of_every_kind_read_as_text() {
        assert_eq!(
            correlation_id(&reply_to(Some("m-1"))).as_deref(),
            Some("m-1")
        );
        assert_eq!(correlation_id(&reply_to(None)), None);
        assert_eq!(message_id_text(&MessageId::Ulong(7)), "7");
        let u = Uuid::parse_str("6f1e4a3c-8f00-5b6a-9c1d-2e3f4a5b6c7d").unwrap();
        assert_eq!(
            message_id_text(&MessageId::Uuid(fe2o3_amqp::types::primitives::Uuid::from(
                u.into_bytes()
            ))),
            "6f1e4a3c-8f00-5b6a-9c1d-2e3f4a5b6c7d"
        );
    }

    #[tokio::test]
    async fn a_request_gets_a_fresh_message_id_and_times_out_when_unanswered() {
        let (requester, mut requests) = channel(Duration::from_millis(50), 4);
        let asked = tokio::spawn({
            let r = requester.clone();
            async move { r.request(reply_to(None)).await }
        });
        let first = tokio::time::timeout(Duration::from_secs(5), requests.0.recv())
            .await
            .unwrap()
            .unwrap();
        let id = first
            .message
            .properties
            .as_ref()
            .unwrap()
            .message_id
            .clone();
        assert_eq!(id, Some(MessageId::String(first.id.clone())));
        assert!(Uuid::parse_str(&first.id).is_ok(), "{}", first.id);
        let result = tokio::time::timeout(Duration::from_secs(5), asked)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            result,
            Err(RequestError::Timeout(Duration::from_millis(50)))
        );
        assert!(first.reply.is_closed(), "the waiter gave up");

        // Answered in time, the next request (another id) gets its reply. (A long bound
        // here: this half is about the reply, not the timeout.)
        let (requester, mut requests) = channel(Duration::from_secs(5), 4);
        let second = tokio::spawn(async move { requester.request(reply_to(None)).await });
        let p = tokio::time::timeout(Duration::from_secs(5), requests.0.recv())
            .await
            .unwrap()
            .unwrap();
        assert_ne!(p.id, first.id);
        p.reply.send(reply_to(Some(&p.id))).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(correlation_id(&got), Some(p.id));
    }
}
