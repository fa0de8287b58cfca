//! The AMQP 1.0 connection to edgeHub: TLS, CBS put-token, the telemetry sender link, token
//! renewal, outcomes and reconnection.
//!
//! The wire contract is the official SDKs' (shared/reference/iotedge-amqp.md):
//!
//! - TLS to the gateway host (port 5671 unless the host name carries one), verified against
//!   the workload API's trust bundle ([`super::tls`]); then the AMQP header straight away,
//!   with no SASL layer, as the C# SDK does (edgeHub also takes ANONYMOUS and MSSBCBS).
//! - Open: a fresh container id, `hostname` = the gateway host, and by default no
//!   idle-timeout, as the Node SDK (edgeHub then heartbeats every 2 minutes); a configured
//!   one must be at least 5000 ms on the wire (edgeHub closes the connection on less).
//! - One session; a CBS sender and receiver on `$cbs`; a put-token ([`cbs`]); then the
//!   telemetry sender link ([`telemetry`]). edgeHub checks the token only when a link
//!   attaches, so a wrong key, audience or expiry shows up as a refused attach.
//! - The token is renewed on the open connection by another put-token at 80 % of its
//!   lifetime; a renewal that fails ends the connection (and a new one starts with a fresh
//!   token) rather than leaving the module sending on an expiring token.
//! - Messages are read from the [`Outbox`], one at a time, oldest first. A message leaves
//!   the outbox only when edgeHub accepts it (delivered) or rejects it (final, counted as
//!   failed). Released, Modified, a send timeout or a lost connection leave it where it is,
//!   so the retry is a re-read of the same message with the same message-id. (The Node SDK
//!   reports a Released message as sent and loses it.)
//! - Any failure closes the connection; the next attempt waits an exponential back-off with
//!   jitter ([`backoff`]), so the module survives edgeHub starting after it, restarting, or
//!   refusing it, and never crashes for it.
//!
//! Secrets: the token goes only into the put-token body; it is never logged, and errors
//! carry no part of it. fe2o3-amqp is built without its `tracing`/`log` features, so it does
//! not log frames.

pub mod backoff;
pub mod cbs;
pub mod telemetry;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{Fields, ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Connection, Session};
use thiserror::Error;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::credentials::{Credentials, CredentialsError};
use super::tls::{self, TlsError};
use crate::config::settings::EdgeHubSettings;
use crate::stats::Snapshot;

use backoff::Backoff;
use telemetry::Settlement;

/// A connection that lasted this long counts as working: the back-off starts over.
const STABLE: Duration = Duration::from_secs(10);

/// Largest frame we offer (the SDKs' default, 64 KiB); messages span frames.
const MAX_FRAME_SIZE: u32 = 65_536;

/// The connection's timing, from the `[edgehub]` settings.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub token_lifetime: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub send_timeout: Duration,
    pub retry_delay: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl From<&EdgeHubSettings> for AmqpConfig {
    fn from(s: &EdgeHubSettings) -> Self {
        AmqpConfig {
            token_lifetime: Duration::from_secs(s.token_lifetime_secs),
            idle_timeout: Duration::from_millis(s.idle_timeout_ms),
            connect_timeout: Duration::from_millis(s.connect_timeout_ms),
            request_timeout: Duration::from_millis(s.request_timeout_ms),
            send_timeout: Duration::from_millis(s.send_timeout_ms),
            retry_delay: Duration::from_millis(s.retry_delay_ms),
            reconnect_min: Duration::from_millis(s.reconnect_min_ms),
            reconnect_max: Duration::from_millis(s.reconnect_max_ms),
        }
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig::from(&EdgeHubSettings::default())
    }
}

/// A message handed to the telemetry link by whoever owns the outgoing messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Stable across retries: a retry re-reads the same message with the same id.
    pub message_id: String,
    pub body: String,
    /// How many of its events came from each queue (said when edgeHub rejects it).
    pub high_events: u64,
    pub low_events: u64,
}

/// How edgeHub settled a message for good (Released/Modified are not final: a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Accepted: the message leaves the outbox, counted as sent.
    Delivered,
    /// Rejected: the message leaves the outbox, counted as failed, its events as dropped.
    Rejected,
}

/// The outgoing side could not answer (its store failed, or it has stopped).
#[derive(Debug, Error)]
#[error("the outbox: {0}")]
pub struct OutboxError(pub String);

/// Where the telemetry link takes its messages from: the one interface through which `edge/`
/// talks to the outgoing state, which it does not import. The sender holds no copy of its
/// own beyond the message in flight.
pub trait Outbox: Send + Sync + 'static {
    /// The oldest message waiting, if any.
    fn next(&self) -> impl Future<Output = Result<Option<Outbound>, OutboxError>> + Send;
    /// edgeHub settled `m` for good.
    fn settled(
        &self,
        m: &Outbound,
        how: Settled,
    ) -> impl Future<Output = Result<(), OutboxError>> + Send;
}

/// Counters of the connection, since start.
#[derive(Debug, Default)]
pub struct AmqpStats {
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub put_tokens: AtomicU64,
    pub delivered: AtomicU64,
    pub delivered_bytes: AtomicU64,
    pub rejected: AtomicU64,
    pub released: AtomicU64,
    pub send_timeouts: AtomicU64,
}

impl AmqpStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The sender's part of the counters snapshot.
    pub fn fill(&self, s: &mut Snapshot) {
        s.connects = Self::get(&self.connects);
        s.connect_failures = Self::get(&self.connect_failures);
        s.put_tokens = Self::get(&self.put_tokens);
        s.delivered = Self::get(&self.delivered);
        s.delivered_bytes = Self::get(&self.delivered_bytes);
        s.rejected = Self::get(&self.rejected);
        s.released_or_modified = Self::get(&self.released);
        s.send_timeouts = Self::get(&self.send_timeouts);
    }
}

/// Why a connection ended.
#[derive(Debug, Error)]
pub enum AmqpError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("AMQP open failed: {0}")]
    Open(String),
    #[error("AMQP session failed: {0}")]
    Session(String),
    #[error("attaching the link to {address} failed: {reason}")]
    Attach { address: String, reason: String },
    #[error(
        "edgeHub refused the telemetry link ({reason}): usually the SAS token was not accepted (wrong key, audience or expiry, or the clock is off)"
    )]
    Unauthorized { reason: String },
    #[error("put-token failed with status {status}: {description}")]
    PutToken { status: i32, description: String },
    #[error("put-token: {0}")]
    Cbs(String),
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("sending failed: {0}")]
    Send(String),
    #[error("edgeHub detached the telemetry link: {0}")]
    Detached(String),
    #[error("the connection ended: {0}")]
    Closed(String),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// What the sender is asked to do; `Finish` = send what is ready until the deadline, then
/// close and return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Run,
    Finish { deadline: Instant },
}

/// The deadline of a `Finish`, if the sender was told to finish.
fn finish_deadline(control: &watch::Receiver<Control>) -> Option<Instant> {
    match *control.borrow() {
        Control::Run => None,
        Control::Finish { deadline } => Some(deadline),
    }
}

/// The sender task: connect, send, reconnect, until told to finish.
pub struct Client<O: Outbox> {
    pub credentials: Arc<Credentials>,
    pub config: AmqpConfig,
    pub outbox: Arc<O>,
    /// Notified when a message may be waiting (the sender also looks every second).
    pub wake: Arc<Notify>,
    pub stats: Arc<AmqpStats>,
}

enum Ended {
    Finished,
}

impl<O: Outbox> Client<O> {
    pub async fn run(self, mut control: watch::Receiver<Control>) {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        let mut last_error: Option<String> = None;
        loop {
            if let Some(d) = finish_deadline(&control) {
                if Instant::now() >= d || matches!(self.outbox.next().await, Ok(None)) {
                    return;
                }
            }
            let mut connected_at = None;
            let result = {
                let mut attempt_control = control.clone();
                let attempt = self.connection(&mut attempt_control, &mut connected_at);
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
        control: &mut watch::Receiver<Control>,
        connected_at: &mut Option<Instant>,
    ) -> Result<Ended, AmqpError> {
        let cfg = &self.config;
        let creds = &self.credentials;
        let endpoint = creds.endpoint();
        let tls_config = creds.tls_config().await?;
        let stream = tls::connect(
            tls_config,
            &endpoint.host,
            endpoint.amqps_port(),
            cfg.connect_timeout,
        )
        .await?;
        let container_id = Uuid::new_v4().to_string();
        let mut builder = Connection::builder()
            .container_id(container_id)
            .scheme("amqp")
            .hostname(endpoint.host.as_str())
            .max_frame_size(MAX_FRAME_SIZE);
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
        let mut cbs_tx = attach_sender(
            &mut session,
            format!("cbs-sender-{link_id}"),
            cbs::CBS_ADDRESS.into(),
            SenderSettleMode::Settled,
            link_properties(),
            cfg.request_timeout,
        )
        .await?;
        let mut cbs_rx = within(cfg.request_timeout, "attach $cbs receiver", async {
            Receiver::builder()
                .name(format!("cbs-receiver-{link_id}"))
                .source(cbs::CBS_ADDRESS)
                .target(cbs::REPLY_TO)
                .receiver_settle_mode(ReceiverSettleMode::First)
                .auto_accept(true)
                .properties(link_properties())
                .attach(&mut session)
                .await
                .map_err(|e| AmqpError::Attach {
                    address: cbs::CBS_ADDRESS.into(),
                    reason: e.to_string(),
                })
        })
        .await?;
        let mut expiry = self.put_token(&mut cbs_tx, &mut cbs_rx).await?;

        let address = telemetry::events_address(creds.device_id(), creds.module_id());
        let mut events = attach_sender(
            &mut session,
            format!("TelemetrySenderLink-{link_id}"),
            address.clone(),
            SenderSettleMode::Unsettled,
            link_properties(),
            cfg.request_timeout,
        )
        .await
        .map_err(|e| match e {
            AmqpError::Attach { reason, .. } => AmqpError::Unauthorized { reason },
            other => other,
        })?;
        AmqpStats::add(&self.stats.connects, 1);
        *connected_at = Some(Instant::now());
        tracing::info!(host = %endpoint.host, port = endpoint.amqps_port(), %address, "connected to edgeHub");

        let renew = async {
            loop {
                let renew_at = backoff::renew_at(Instant::now(), self.config.token_lifetime);
                tokio::time::sleep_until(renew_at.into()).await;
                expiry = self.put_token(&mut cbs_tx, &mut cbs_rx).await?;
                tracing::debug!(expiry, "SAS token renewed");
            }
        };
        let send = self.send_loop(&mut events, &address, control);
        // The connection's end is watched too: a message waiting for its settlement is not
        // told when edgeHub closes the connection or the TCP connection drops.
        let ended: Result<Ended, AmqpError> = tokio::select! {
            r = renew => r,
            r = send => r,
            r = connection.on_close() => Err(AmqpError::Closed(match r {
                Ok(()) => "closed by edgeHub".to_owned(),
                Err(e) => e.to_string(),
            })),
        };
        if ended.is_ok() {
            // A clean goodbye; errors here change nothing.
            let _ = events.close().await;
            let _ = cbs_tx.close().await;
            let _ = cbs_rx.close().await;
            let _ = session.end().await;
            let _ = connection.close().await;
        }
        ended
    }

    /// Put a fresh token; returns its expiry.
    async fn put_token(&self, tx: &mut Sender, rx: &mut Receiver) -> Result<u64, AmqpError> {
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let lifetime = self.config.token_lifetime.as_secs();
        let token = self.credentials.token(now, lifetime).await?;
        let expiry = token.expiry();
        let message_id = Uuid::new_v4().to_string();
        // `name` is the token's `sr` as sent (url-encoded), as the Node SDK puts it; edgeHub
        // only needs it non-empty and takes the identity from the token itself.
        let request = cbs::put_token_request(token.expose(), token.resource(), &message_id);
        drop(token);
        let reply = within(self.config.request_timeout, "put-token", async {
            tx.send(request)
                .await
                .map_err(|e| AmqpError::Cbs(format!("sending the request: {e}")))?;
            loop {
                let d = rx
                    .recv::<Body<Value>>()
                    .await
                    .map_err(|e| AmqpError::Cbs(format!("waiting for the reply: {e}")))?;
                match cbs::parse_reply(d.message()) {
                    Ok(r) if r.correlation_id.as_deref() == Some(message_id.as_str()) => {
                        return Ok(r);
                    }
                    Ok(r) => {
                        tracing::debug!(correlation_id = ?r.correlation_id, "ignoring a CBS reply to another request")
                    }
                    Err(e) => return Err(AmqpError::Cbs(e.to_string())),
                }
            }
        })
        .await?;
        if !reply.is_success() {
            return Err(AmqpError::PutToken {
                status: reply.status,
                description: reply.description.unwrap_or_default(),
            });
        }
        AmqpStats::add(&self.stats.put_tokens, 1);
        Ok(expiry)
    }

    async fn send_loop(
        &self,
        events: &mut Sender,
        address: &str,
        control: &mut watch::Receiver<Control>,
    ) -> Result<Ended, AmqpError> {
        loop {
            let finishing = matches!(*control.borrow(), Control::Finish { .. });
            let Some(m) = self.outbox.next().await? else {
                if finishing {
                    return Ok(Ended::Finished);
                }
                // While idle, watch the link too: edgeHub refuses a bad token by detaching
                // the link right after the attach, and closes links when it shuts down.
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = control.changed() => {}
                    e = events.on_detach() => return Err(detached(e)),
                }
                continue;
            };
            let msg = telemetry::security_message(&m, address);
            let outcome =
                match tokio::time::timeout(self.config.send_timeout, events.send(msg)).await {
                    Err(_) => {
                        AmqpStats::add(&self.stats.send_timeouts, 1);
                        return Err(AmqpError::Timeout {
                            what: "waiting for edgeHub to settle a message",
                            after: self.config.send_timeout,
                        });
                    }
                    Ok(Err(e)) => return Err(send_failed(e)),
                    Ok(Ok(o)) => o,
                };
            match telemetry::settlement(&outcome) {
                Settlement::Delivered => {
                    self.outbox.settled(&m, Settled::Delivered).await?;
                    AmqpStats::add(&self.stats.delivered, 1);
                    AmqpStats::add(&self.stats.delivered_bytes, m.body.len() as u64);
                    tracing::debug!(message_id = %m.message_id, bytes = m.body.len(), "message delivered");
                }
                Settlement::Rejected {
                    condition,
                    description,
                } => {
                    tracing::warn!(
                        error_id = "E-EDGEHUB-REJECTED",
                        message_id = %m.message_id,
                        %condition,
                        %description,
                        high_events = m.high_events,
                        low_events = m.low_events,
                        "edgeHub rejected a message: it is dropped and counted as failed"
                    );
                    self.outbox.settled(&m, Settled::Rejected).await?;
                    AmqpStats::add(&self.stats.rejected, 1);
                }
                Settlement::Retry { outcome } => {
                    AmqpStats::add(&self.stats.released, 1);
                    tracing::info!(message_id = %m.message_id, outcome, "edgeHub did not take a message now; it will be sent again");
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.retry_delay) => {}
                        _ = control.changed() => {}
                    }
                }
            }
        }
    }
}

async fn attach_sender<R>(
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

/// The telemetry link was detached by edgeHub. `amqp:unauthorized-access` is edgeHub's answer
/// to a token it does not accept.
fn detached(e: fe2o3_amqp::link::DetachError) -> AmqpError {
    use fe2o3_amqp::link::DetachError;
    match e {
        DetachError::RemoteDetachedWithError(err) => link_error(err),
        other => AmqpError::Detached(other.to_string()),
    }
}

/// A send failed: a link closed with an error is told like a detach.
fn send_failed(e: fe2o3_amqp::link::SendError) -> AmqpError {
    use fe2o3_amqp::link::{LinkStateError, SendError};
    match e {
        SendError::Detached(e) => detached(e),
        SendError::LinkStateError(
            LinkStateError::RemoteClosedWithError(err)
            | LinkStateError::RemoteDetachedWithError(err),
        ) => link_error(err),
        other => AmqpError::Send(other.to_string()),
    }
}

fn link_error(err: fe2o3_amqp::types::definitions::Error) -> AmqpError {
    use fe2o3_amqp::types::definitions::{AmqpError as Condition, ErrorCondition};
    let description = err.description.unwrap_or_default();
    if err.condition == ErrorCondition::AmqpError(Condition::UnauthorizedAccess) {
        AmqpError::Unauthorized {
            reason: description,
        }
    } else {
        AmqpError::Detached(format!("{:?}: {description}", err.condition))
    }
}

/// `com.microsoft:client-version` on every link, as the Node SDK sends it.
fn link_properties() -> Fields {
    let mut properties = Fields::new();
    properties.insert(
        Symbol::from(telemetry::CLIENT_VERSION_PROPERTY),
        Value::String(telemetry::client_version()),
    );
    properties
}

async fn within<T>(
    after: Duration,
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, AmqpError>>,
) -> Result<T, AmqpError> {
    tokio::time::timeout(after, f)
        .await
        .map_err(|_| AmqpError::Timeout { what, after })?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each connection counter lands in its own field of the snapshot (`released` as
    /// `released_or_modified`), and nothing else is touched.
    #[test]
    fn the_sender_fills_its_part_of_the_snapshot() {
        let stats = AmqpStats::default();
        for (c, n) in [
            (&stats.connects, 1),
            (&stats.connect_failures, 2),
            (&stats.put_tokens, 3),
            (&stats.delivered, 4),
            (&stats.delivered_bytes, 5),
            (&stats.rejected, 6),
            (&stats.released, 7),
            (&stats.send_timeouts, 8),
        ] {
            AmqpStats::add(c, n);
        }
        let mut s = Snapshot::default();
        stats.fill(&mut s);
        let expected = Snapshot {
            connects: 1,
            connect_failures: 2,
            put_tokens: 3,
            delivered: 4,
            delivered_bytes: 5,
            rejected: 6,
            released_or_modified: 7,
            send_timeouts: 8,
            ..Snapshot::default()
        };
        assert_eq!(s, expected);
    }
}
