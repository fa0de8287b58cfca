//! One AMQP connection to edgeHub, apart from what runs on it.
//!
//! Contract: [`Connection::run`] connects (TLS, Open, one session, a CBS put-token through the
//! [`request`] helper), attaches the [`LinkService`]s the caller chose, renews
//! the token at 80 % of its lifetime and watches the connection's end; any failure (a
//! service's included) ends the connection, is logged (E-EDGEHUB-CONNECT) and a new one
//! follows after a back-off, until [`Control::Finish`]. It knows nothing of what the services
//! carry: the module runs the telemetry sender, a receive-only client runs no telemetry.
//!
//! Secrets: the token goes only into the put-token body; it is never logged, and errors carry
//! no part of it. fe2o3-amqp is built without its `tracing`/`log` features, so it does not
//! log frames.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use fe2o3_amqp::link::Sender;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{Fields, ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Connection as AmqpConnection, Session};
use tokio::sync::watch;
use uuid::Uuid;

use super::backoff::{self, Backoff};
use super::request::{self, RequestError, RequestLinks, RequestSpec, Requester};
use super::{AmqpConfig, AmqpError, AmqpStats, Control, cbs, telemetry};
use crate::edge::credentials::Credentials;
use crate::edge::tls;

/// A connection that lasted this long counts as working: the back-off starts over.
const STABLE: Duration = Duration::from_secs(10);

/// Largest frame we offer (the SDKs' default, 64 KiB); messages span frames.
const MAX_FRAME_SIZE: u32 = 65_536;

/// A boxed future, as link services return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a connection tells the services it attaches.
#[derive(Debug, Clone)]
pub struct LinkContext {
    /// One id per connection, in every link name (as the SDKs name their links).
    pub link_id: Uuid,
    pub device_id: String,
    pub module_id: Option<String>,
    /// Bound for each attach.
    pub attach_timeout: Duration,
    /// Run, or finish by a deadline.
    pub control: watch::Receiver<Control>,
}

/// A service's links, attached: its address (for the log) and what runs on them.
pub struct Attached<'s> {
    pub address: String,
    /// Ends `Ok` when the service is done (at the latest once told to finish, its links
    /// closed), `Err` when a link fails, which ends the connection.
    pub run: BoxFuture<'s, Result<(), AmqpError>>,
}

/// What runs on a connected session: attached again on every connection.
pub trait LinkService: Send + Sync {
    /// Attach this service's links on a new connection's session.
    fn attach<'s, 'a>(
        &'s self,
        session: &'a mut SessionHandle<()>,
        cx: &'a LinkContext,
    ) -> BoxFuture<'a, Result<Attached<'s>, AmqpError>>
    where
        's: 'a;

    /// Whether a finishing module should still connect for this service (telemetry: a
    /// message is waiting). Receiving services have nothing to finish.
    fn has_work(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { false })
    }
}

/// A connection to edgeHub with the link services the caller chose.
pub struct Connection {
    credentials: Arc<Credentials>,
    config: AmqpConfig,
    stats: Arc<AmqpStats>,
    services: Vec<Box<dyn LinkService>>,
}

enum Ended {
    Finished,
}

impl Connection {
    /// A connection that runs no service yet (add them with [`Connection::with`]).
    pub fn new(credentials: Arc<Credentials>, config: AmqpConfig, stats: Arc<AmqpStats>) -> Self {
        Connection {
            credentials,
            config,
            stats,
            services: Vec::new(),
        }
    }

    /// Run `service` on every connection, attached after the ones added before it.
    pub fn with(mut self, service: impl LinkService + 'static) -> Self {
        self.services.push(Box::new(service));
        self
    }

    async fn has_work(&self) -> bool {
        for s in &self.services {
            if s.has_work().await {
                return true;
            }
        }
        false
    }

    /// Connect, run the services, reconnect, until told to finish.
    pub async fn run(self, mut control: watch::Receiver<Control>) {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        let mut last_error: Option<String> = None;
        loop {
            if let Some(d) = finish_deadline(&control) {
                if Instant::now() >= d || !self.has_work().await {
                    return;
                }
            }
            let mut connected_at = None;
            let result = {
                let attempt_control = control.clone();
                let attempt = self.connection(&attempt_control, &mut connected_at);
                tokio::pin!(attempt);
                loop {
                    match finish_deadline(&control) {
                        Some(d) => match tokio::time::timeout_at(d.into(), &mut attempt).await {
                            Ok(r) => break r,
                            Err(_) => return,
                        },
                        // A stop asked for during the attempt sets its deadline too: a
                        // gateway that accepts TCP and never answers would otherwise hold
                        // the stop for connect_timeout_ms, past the grace.
                        None => tokio::select! {
                            r = &mut attempt => break r,
                            changed = control.changed() => {
                                if changed.is_err() {
                                    break attempt.await;
                                }
                            }
                        },
                    }
                }
            };
            match result {
                Ok(Ended::Finished) => return,
                Err(e) => {
                    AmqpStats::add(&self.stats.connect_failures, 1);
                    // A connection that worked for a while starts the back-off afresh; one
                    // that edgeHub ends at once (a refused token) does not.
                    if connected_at.is_some_and(|t: Instant| t.elapsed() >= STABLE) {
                        backoff.reset();
                        last_error = None;
                    }
                    let text = e.to_string();
                    let delay = backoff.next_delay(backoff::random_unit());
                    // Say it once per change at warn level; repeats go to debug.
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error_id = "E-EDGEHUB-CONNECT", error = %text, retry_in_ms = delay.as_millis() as u64, "edgeHub connection failed");
                        last_error = Some(text);
                    } else {
                        tracing::debug!(error = %text, retry_in_ms = delay.as_millis() as u64, attempt = backoff.attempts(), "edgeHub connection failed again");
                    }
                    // Stopping, the wait ends with the grace: a refusing gateway must not
                    // keep the module past it.
                    let wait = match finish_deadline(&control) {
                        Some(d) => delay.min(d.saturating_duration_since(Instant::now())),
                        None => delay,
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = control.changed() => {}
                    }
                }
            }
        }
    }

    /// One connection, from TLS to its end.
    async fn connection(
        &self,
        control: &watch::Receiver<Control>,
        connected_at: &mut Option<Instant>,
    ) -> Result<Ended, AmqpError> {
        let cfg = &self.config;
        let creds = &self.credentials;
        let endpoint = creds.endpoint();
        let tls_config = creds.tls_config().await?;
        // TLS to the gateway host (5671 unless the host name carries a port), verified against
        // the workload API's trust bundle; then the AMQP header straight away, with no SASL
        // layer, as the C# SDK does (edgeHub also takes ANONYMOUS and MSSBCBS).
        let stream = tls::connect(
            tls_config,
            &endpoint.host,
            endpoint.amqps_port(),
            cfg.connect_timeout,
        )
        .await?;
        let mut builder = AmqpConnection::builder()
            .container_id(Uuid::new_v4().to_string())
            .scheme("amqp")
            .hostname(endpoint.host.as_str())
            .max_frame_size(MAX_FRAME_SIZE);
        // By default no idle-timeout, as the Node SDK (edgeHub then heartbeats every 2
        // minutes); a configured one must be at least 5000 ms on the wire (edgeHub closes
        // the connection on less).
        if !cfg.idle_timeout.is_zero() {
            // fe2o3-amqp advertises half of the threshold it is given (the spec's advice
            // against spurious timeouts); the setting is the value on the wire.
            let ms =
                u32::try_from(cfg.idle_timeout.as_millis().saturating_mul(2)).unwrap_or(u32::MAX);
            builder = builder.idle_time_out(ms);
        }
        let mut connection = within(cfg.request_timeout, "AMQP open", async {
            builder
                .open_with_stream(stream)
                .await
                .map_err(|e| AmqpError::Open(e.to_string()))
        })
        .await?;
        let mut session = within(cfg.request_timeout, "AMQP begin", async {
            Session::begin(&mut connection)
                .await
                .map_err(|e| AmqpError::Session(e.to_string()))
        })
        .await?;

        let link_id = Uuid::new_v4();
        let mut cbs_links =
            RequestLinks::attach(&mut session, &cbs_spec(), link_id, cfg.request_timeout).await?;
        // A queue of its own per connection: nothing outlives it.
        let (requester, mut requests) = request::channel(cfg.request_timeout, 1);
        let cx = LinkContext {
            link_id,
            device_id: creds.device_id().to_owned(),
            module_id: creds.module_id().map(str::to_owned),
            attach_timeout: cfg.request_timeout,
            control: control.clone(),
        };
        let ended = {
            let cbs_node = cbs_links.serve(&mut requests, None);
            tokio::pin!(cbs_node);
            // edgeHub checks the token only when a link attaches, so a wrong key, audience
            // or expiry shows up as a refused attach of a service's link.
            tokio::select! {
                r = self.put_token(&requester) => { r?; }
                r = &mut cbs_node => return Err(cbs_ended(r)),
            }
            let mut running = Vec::with_capacity(self.services.len());
            let mut addresses = Vec::with_capacity(self.services.len());
            for service in &self.services {
                let a = service.attach(&mut session, &cx).await?;
                addresses.push(a.address);
                running.push(a.run);
            }
            AmqpStats::add(&self.stats.connects, 1);
            *connected_at = Some(Instant::now());
            tracing::info!(host = %endpoint.host, port = endpoint.amqps_port(), address = %addresses.join(" "), "connected to edgeHub");

            // Renewed on the open connection by another put-token at 80 % of the lifetime;
            // a renewal that fails ends the connection (and a new one starts with a fresh
            // token) rather than leaving the services on an expiring token.
            let renew = async {
                loop {
                    let renew_at = backoff::renew_at(Instant::now(), cfg.token_lifetime);
                    tokio::time::sleep_until(renew_at.into()).await;
                    let expiry = self.put_token(&requester).await?;
                    tracing::debug!(expiry, "SAS token renewed");
                }
            };
            let services = async {
                all_ok(running).await?;
                finish_requested(control.clone()).await;
                Ok(Ended::Finished)
            };
            // The connection's end is watched too: a message waiting for its settlement is
            // not told when edgeHub closes the connection or the TCP connection drops.
            tokio::select! {
                r = renew => r,
                r = services => r,
                r = &mut cbs_node => Err(cbs_ended(r)),
                r = connection.on_close() => Err(AmqpError::Closed(match r {
                    Ok(()) => "closed by edgeHub".to_owned(),
                    Err(e) => e.to_string(),
                })),
            }
        };
        if ended.is_ok() {
            // A clean goodbye (the services closed their links); errors here change nothing.
            cbs_links.close().await;
            let _ = session.end().await;
            let _ = connection.close().await;
        }
        ended
    }

    /// Put a fresh token; returns its expiry.
    async fn put_token(&self, cbs_node: &Requester) -> Result<u64, AmqpError> {
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let lifetime = self.config.token_lifetime.as_secs();
        let token = self.credentials.token(now, lifetime).await?;
        let expiry = token.expiry();
        // `name` is the token's `sr` as sent (url-encoded), as the Node SDK puts it; edgeHub
        // only needs it non-empty and takes the identity from the token itself.
        let request = cbs::put_token_request(token.expose(), token.resource());
        drop(token);
        let reply = cbs_node.request(request).await.map_err(|e| match e {
            RequestError::Timeout(after) => AmqpError::Timeout {
                what: "put-token",
                after,
            },
            other => AmqpError::Cbs(other.to_string()),
        })?;
        let reply = cbs::parse_reply(&reply).map_err(|e| AmqpError::Cbs(e.to_string()))?;
        if !reply.is_success() {
            return Err(AmqpError::PutToken {
                status: reply.status,
                description: reply.description.unwrap_or_default(),
            });
        }
        AmqpStats::add(&self.stats.put_tokens, 1);
        Ok(expiry)
    }
}

/// The `$cbs` node: a sender and a receiver on `$cbs`, replies asked to `cbs`.
fn cbs_spec() -> RequestSpec {
    RequestSpec {
        name: "cbs".into(),
        address: cbs::CBS_ADDRESS.into(),
        reply_to: Some(cbs::REPLY_TO.into()),
        channel_correlation_id: None,
        properties: Vec::new(),
        settled_replies: false,
    }
}

/// The `$cbs` links stopped (only a failure stops them while the requester lives).
fn cbs_ended(r: Result<(), RequestError>) -> AmqpError {
    match r {
        Err(e) => AmqpError::Cbs(e.to_string()),
        Ok(()) => AmqpError::Cbs("the $cbs links stopped".into()),
    }
}

/// The deadline of a `Finish`, if the connection was told to finish.
fn finish_deadline(control: &watch::Receiver<Control>) -> Option<Instant> {
    match *control.borrow() {
        Control::Run => None,
        Control::Finish { deadline } => Some(deadline),
    }
}

/// Resolves once the connection is told to finish (never, if the control is dropped).
pub async fn finish_requested(mut control: watch::Receiver<Control>) {
    loop {
        if finish_deadline(&control).is_some() {
            return;
        }
        if control.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Run the services side by side: `Ok` when all are done, the first error otherwise.
async fn all_ok(mut running: Vec<BoxFuture<'_, Result<(), AmqpError>>>) -> Result<(), AmqpError> {
    std::future::poll_fn(|cx| {
        let mut i = 0;
        while i < running.len() {
            match running[i].as_mut().poll(cx) {
                Poll::Ready(Ok(())) => {
                    drop(running.swap_remove(i));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => i += 1,
            }
        }
        if running.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Attach a sender link on `address`.
pub async fn attach_sender<R>(
    session: &mut SessionHandle<R>,
    name: String,
    address: String,
    settle: SenderSettleMode,
    properties: Fields,
    timeout: Duration,
) -> Result<Sender, AmqpError> {
    within(timeout, "attach sender", async {
        Sender::builder()
            .name(name)
            .target(address.clone())
            .sender_settle_mode(settle)
            .receiver_settle_mode(ReceiverSettleMode::First)
            .properties(properties)
            .attach(session)
            .await
            .map_err(|e| AmqpError::Attach {
                address: address.clone(),
                reason: e.to_string(),
            })
    })
    .await
}

/// `com.microsoft:client-version` on every link, as the Node SDK sends it.
pub fn link_properties() -> Fields {
    let mut properties = Fields::new();
    properties.insert(
        Symbol::from(telemetry::CLIENT_VERSION_PROPERTY),
        Value::String(telemetry::client_version()),
    );
    properties
}

/// `f`, bounded: past `after` it is a [`AmqpError::Timeout`] saying `what`.
pub async fn within<T>(
    after: Duration,
    what: &'static str,
    f: impl Future<Output = Result<T, AmqpError>>,
) -> Result<T, AmqpError> {
    tokio::time::timeout(after, f)
        .await
        .map_err(|_| AmqpError::Timeout { what, after })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(r: Result<(), AmqpError>) -> BoxFuture<'static, Result<(), AmqpError>> {
        Box::pin(async move { r })
    }

    #[tokio::test]
    async fn services_end_together_and_the_first_error_wins() {
        assert!(all_ok(vec![]).await.is_ok());
        assert!(all_ok(vec![done(Ok(())), done(Ok(()))]).await.is_ok());
        let never: BoxFuture<'static, _> = Box::pin(std::future::pending());
        match all_ok(vec![
            never,
            done(Ok(())),
            done(Err(AmqpError::Closed("x".into()))),
        ])
        .await
        {
            Err(AmqpError::Closed(r)) => assert_eq!(r, "x"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn finish_is_seen_whenever_it_was_asked() {
        let (tx, rx) = watch::channel(Control::Run);
        let waiting = tokio::spawn(finish_requested(rx.clone()));
        tx.send(Control::Finish {
            deadline: Instant::now(),
        })
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("finish seen")
            .unwrap();
        // Asked before the wait began: seen at once.
        tokio::time::timeout(Duration::from_secs(5), finish_requested(rx))
            .await
            .expect("finish seen at once");
    }

    #[test]
    fn the_cbs_pair_is_named_and_addressed_as_before() {
        let s = cbs_spec();
        assert_eq!(
            (s.name.as_str(), s.address.as_str(), s.reply_to.as_deref()),
            ("cbs", "$cbs", Some("cbs"))
        );
        assert_eq!(s.channel_correlation_id, None);
    }
}
