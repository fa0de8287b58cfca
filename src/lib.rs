//! `azureiotsecurity`: an IoT Edge module that turns auditd's live event stream into
//! Microsoft Defender for IoT security messages.
//!
//! # Layout
//!
//! ```text
//! auditd --af_unix socket--> audit::source --lines--> audit::parse --records-->
//!   audit::coalesce --audit events--> events::derive --security events-->
//!   outgoing::aggregate --> outgoing::state --> outbox --> outgoing::batch --messages-->
//!   edge::amqp::telemetry --AMQP 1.0--> edgeHub
//! ```
//!
//! Every module, along the path (private parts in plain text):
//!
//! - [`audit`]: the audit path, its imports running one way (bottom first below).
//!   - [`audit::decimal`]: decimal numbers as the kernel writes them.
//!   - [`audit::types`]: record type numbers and which types are whole events.
//!   - [`audit::syscalls`]: architectures, syscall numbers, endianness.
//!   - [`audit::parse`]: the zero-copy record parser.
//!   - [`audit::decode`]: values the kernel encodes, one decoder per file:
//!     [`audit::decode::value`] (quoted or hex strings), [`audit::decode::execve`] (argv),
//!     [`audit::decode::proctitle`](mod@audit::decode::proctitle), [`audit::decode::sockaddr`](mod@audit::decode::sockaddr).
//!   - [`audit::coalesce`]: records into events (EOE, single-record types, timeouts, bounds).
//!   - [`audit::source`]: readers of the socket (reconnecting) and of audit.log text.
//! - [`events`]: the security events and how they are derived.
//!   - [`events::kind`]: [`events::EventKind`], every event the schema names (shared with the
//!     agent configuration).
//!   - [`events::derive`]: audit events into security events (the deriver state machine).
//!   - [`events::process_create`], [`events::connection_create`], [`events::login`]: the
//!     payloads.
//!   - [`events::operational`]: ConfigurationError and the statistics events.
//!   - [`events::system_information`], [`events::local_users`], [`events::listening_ports`],
//!     [`events::firewall_configuration`], [`events::os_baseline`]: the snapshot payloads.
//! - [`collectors`]: periodic snapshots of the host, read under the host root
//!   ([`collectors::HostRoot`]), one file per kind, and the registry of collectors.
//!   - [`collectors::system_information`], [`collectors::local_users`]: the collectors.
//!   - [`collectors::listening_ports`]: ListeningPorts from `/proc/1/net` and the fd tables.
//!   - [`collectors::watch`]: the within-a-minute watcher of accounts and listening sockets.
//!   - [`collectors::schedule`]: when to snapshot and which to send (the scheduler state
//!     machine).
//!   - [`collectors::os_baseline`]: OSBaseline, the CIS Debian 12 checks decided read-only;
//!     [`collectors::os_baseline::sshd`] (sshd_config as sshd reads it),
//!     [`collectors::os_baseline::parse`] (sysctl, limits.conf, accounts, mounts).
//! - [`pipeline`]: lines → records → audit events → security events, shared by run and replay.
//! - [`outgoing`]: the outgoing state, security events to stored messages.
//!   - [`outgoing::aggregate`]: identical events within a window become one with a hit count.
//!   - [`outgoing::state`]: priorities, the store, statistics ([`outgoing::Outgoing`]).
//!   - [`outgoing::batch`]: the message envelope and batching events into messages.
//!   - [`outgoing::properties`]: the application properties of each message
//!     (`MessagePriority`, `HubResourceId`).
//!   - [`outgoing::owner`]: the outgoing state on a thread of its own, fed by commands.
//! - [`outbox`]: where events wait; the [`outbox::Store`] contract.
//!   - [`outbox::memory`]: the store in memory.
//!   - [`outbox::sqlite`]: the durable store in SQLite.
//!   - [`outbox::fallback`]: the durable store falling back to memory when the disk fails.
//!   - `outbox::policy`: the drop rule both stores share.
//! - [`validate`]: the module's own schema check of messages, in parts: `validate::json`
//!   (the reader), `validate::schema` (the tables), `validate::check` (the checker),
//!   `validate::formats` (date-time, IPv4, IPv6).
//! - [`edge`]: IoT Edge.
//!   - [`edge::identity`]: who the module is, from the environment.
//!   - [`edge::credentials`]: what a connection needs from an identity.
//!   - [`edge::sas`]: SAS tokens.
//!   - [`edge::workload`]: the IoT Edge workload API client.
//!   - [`edge::tls`]: TLS to edgeHub.
//!   - [`edge::amqp`]: AMQP 1.0 to edgeHub: [`edge::amqp::connection`] (TLS, open, session,
//!     CBS, renewal, reconnect) runs link services: [`edge::amqp::telemetry`] (the telemetry
//!     sender), [`edge::amqp::request`] (request → reply on a link pair),
//!     [`edge::amqp::receiver`] (unsolicited messages), [`edge::amqp::twin`] (the module
//!     twin: requests and desired-property patches); [`edge::amqp::cbs`] (put-token
//!     format), [`edge::amqp::backoff`] (schedules).
//! - [`stats`]: one counters snapshot, filled by each stage, for the statistics line and
//!   `/metrics`.
//! - [`agent_id`]: the AgentId kept in the data directory.
//! - [`rules`]: the audit rules the module needs.
//! - [`config`]: the configuration room.
//!   - [`config::settings`]: defaults < file < environment, check-config's ranges.
//!   - [`config::agent`]: the agent configuration (the security module twin's settings).
//!     - `config::keys`: the table of settings and the parsing of one setting.
//!     - `config::layers`: one update parsed, layers resolved per key, their sources.
//!   - [`config::duration`]: ISO 8601 durations.
//!   - [`config::stages`]: one function per stage building its small config struct.
//!   - [`config::twin`]: the twin's desired configuration as the top layer, the kept
//!     desired file, the reported form.
//! - [`twin`]: the twin task: from edgeHub's module twin to the configuration in force.
//! - [`echo`]: `azureiotsecurity echo`, the echo module: the inputs link and what it prints.
//! - [`app`]: wiring of `run` and `replay`: tasks, channels, shutdown.
//!
//! Each stage that does the work is a plain synchronous state machine with no I/O and no
//! clock of its own: time comes in as an argument, so tests are deterministic.

pub mod agent_id;
pub mod app;
pub mod audit;
pub mod collectors;
pub mod config;
pub mod echo;
pub mod edge;
pub mod events;
pub mod outbox;
pub mod outgoing;
pub mod pipeline;
pub mod rules;
pub mod stats;
pub mod twin;
pub mod validate;

/// Support shared by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::{Arc, Mutex};

    /// What `f` logs, as the module's plain log writes it (fmt, no colours).
    pub(crate) fn capture_log(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The module paths of the source files under `dir` (`audit::decode::value`, …).
    fn modules(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                modules(&path, &format!("{prefix}{name}::"), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                match name.as_str() {
                    "lib" | "main" => {}
                    "mod" => out.push(prefix.trim_end_matches("::").to_string()),
                    _ => out.push(format!("{prefix}{name}")),
                }
            }
        }
    }

    #[test]
    fn the_layout_lists_every_module() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        modules(&src, "", &mut all);
        let layout = include_str!("lib.rs");
        let missing: Vec<&String> = all
            .iter()
            .filter(|m| !layout.contains(&format!("`{m}`")))
            .collect();
        assert!(all.len() > 40, "{all:?}");
        assert_eq!(missing, Vec::<&String>::new());
    }

    #[test]
    fn one_module_file_style() {
        // `foo/mod.rs`, never `foo.rs` beside a `foo/` folder.
        fn check(dir: &Path, mixed: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if path.with_extension("rs").exists() {
                        mixed.push(path.display().to_string());
                    }
                    check(&path, mixed);
                }
            }
        }
        let mut mixed = Vec::new();
        check(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut mixed,
        );
        assert_eq!(mixed, Vec::<String>::new());
    }
}
