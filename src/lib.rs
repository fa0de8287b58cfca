//! `azureiotsecurity`: an IoT Edge module that turns auditd's live event stream into
//! Microsoft Defender for IoT security messages.
//!
//! # Layout
//!
//! ```text
//! auditd --af_unix socket--> source --lines--> parse --records--> coalesce --audit events-->
//!   derive (ProcessCreate, ConnectionCreate, Login) --security events--> sink
//! ```
//!
//! - [`audit::source`]: readers of the socket (reconnecting) and of audit.log text.
//! - [`audit::parse`]: the zero-copy record parser.
//! - [`audit::coalesce`]: records into events (EOE, single-record types, timeouts, bounds).
//! - [`audit::decode`]: hex values, EXECVE argv, PROCTITLE, SOCKADDR.
//! - [`events`]: the security events and how they are derived.
//! - [`rules`]: the audit rules the module needs.
//! - [`settings`]: defaults < file < environment.
//! - [`stats`]: one counters snapshot, filled by each stage, for the statistics line and
//!   `/metrics`.
//!
//! Each stage that does the work is a plain synchronous state machine with no I/O and no
//! clock of its own: time comes in as an argument, so tests are deterministic.

pub mod agent_config;
pub mod agent_id;
pub mod aggregate;
pub mod app;
pub mod audit;
pub mod delivery;
pub mod edge;
pub mod events;
pub mod message;
pub mod outbox;
pub mod pipeline;
pub mod rules;
pub mod settings;
pub mod stats;
pub mod validate;
