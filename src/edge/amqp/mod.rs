//! The AMQP 1.0 connection to edgeHub and the links it carries, as the official SDKs speak
//! it (shared/reference/iotedge-amqp.md).
//!
//! - [`connection`]: TLS, Open, session, CBS put-token and its renewal, reconnection with
//!   [`backoff`]; it runs the [`LinkService`]s its caller chose.
//! - Link services: [`telemetry`] (security messages from an [`Outbox`]), [`request`]
//!   (correlated request → reply on a link pair; [`cbs`] uses it), [`twin`] (the module
//!   twin on that pair: GET, subscribe, report, desired patches) and [`receiver`]
//!   (unsolicited messages, each accepted or rejected by the caller).
//! - [`Client`]: the module's connection: telemetry, and the twin when the caller gives it a
//!   [`twin::TwinService`]. `edge/` does not import the outgoing state: it reaches it through
//!   the [`Outbox`] trait defined here.

pub mod backoff;
pub mod cbs;
pub mod connection;
pub mod receiver;
pub mod request;
pub mod telemetry;
pub mod twin;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::{Notify, watch};

use super::credentials::{Credentials, CredentialsError};
use super::tls::TlsError;
use crate::stats::Snapshot;

pub use connection::{Attached, Connection, LinkContext, LinkService};
use telemetry::Telemetry;

/// The connection's timing (built by `config::stages::amqp` from `[edgehub]`).
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
    /// The module output each security message is sent to (the application property
    /// `iothub-outputname`, as the SDKs' `sendOutputEvent`), for edgeHub routes
    /// `FROM /messages/modules/<m>/outputs/<name>`; None: no output name (routes on
    /// `/messages/modules/<m>/*` still see the message).
    pub output_name: Option<String>,
}

impl Default for AmqpConfig {
    /// The connection's defaults; the `[edgehub]` settings default to them.
    fn default() -> Self {
        AmqpConfig {
            token_lifetime: Duration::from_secs(super::sas::DEFAULT_LIFETIME_SECS),
            idle_timeout: Duration::ZERO,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            retry_delay: Duration::from_secs(1),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            output_name: None,
        }
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
    /// The AMQP application properties it is sent with (string keys, string values, in
    /// this order), e.g. `MessagePriority`; chosen by the outbox when it hands the message
    /// over, under the configuration in force then.
    pub application_properties: Vec<(String, String)>,
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
    /// edgeHub settled `m` for good. By value: the owner keeps nothing of a settled message,
    /// so its body (up to 256 KiB) is handed back rather than copied.
    fn settled(
        &self,
        m: Outbound,
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
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
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
    #[error("the link on {address} failed: {reason}")]
    Link { address: String, reason: String },
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

/// The module's connection: the telemetry sender, and beside it the twin links when
/// `twin` is given, on every connection until told to finish.
pub struct Client<O: Outbox> {
    pub credentials: Arc<Credentials>,
    pub config: AmqpConfig,
    pub outbox: Arc<O>,
    /// Notified when a message may be waiting (the sender also looks every second).
    pub wake: Arc<Notify>,
    pub stats: Arc<AmqpStats>,
    /// The module twin's link service ([`twin::service`]); None: no twin links.
    pub twin: Option<twin::TwinService>,
}

impl<O: Outbox> Client<O> {
    pub async fn run(self, control: watch::Receiver<Control>) {
        let telemetry = Telemetry::new(self.outbox, self.wake, self.stats.clone(), &self.config);
        let mut connection =
            Connection::new(self.credentials, self.config, self.stats).with(telemetry);
        if let Some(twin) = self.twin {
            connection = connection.with(twin);
        }
        connection.run(control).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `edge/` reaches the outgoing state only through [`Outbox`]: no file under src/edge
    /// imports delivery, outgoing, outbox, aggregation or the message envelope.
    #[test]
    fn edge_imports_nothing_of_the_outgoing_state() {
        fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let edge = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/edge");
        let mut all = Vec::new();
        files(&edge, &mut all);
        assert!(all.len() >= 10, "{all:?}");
        let forbidden = [
            "crate::delivery",
            "crate::outgoing",
            "crate::outbox",
            "crate::aggregate",
            "crate::message",
        ];
        let mut found = Vec::new();
        for f in &all {
            let text = std::fs::read_to_string(f).unwrap();
            for (n, line) in text.lines().enumerate() {
                for bad in forbidden {
                    // A path in quotes is this list, not an import.
                    if line.contains(bad) && !line.contains("\"crate::") {
                        found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "edge/ imports the outgoing state:\n{}",
            found.join("\n")
        );
    }

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
