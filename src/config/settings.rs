//! Settings: built-in defaults < a settings file (TOML) < environment variables.
//!
//! Environment variables are named `AZUREIOTSECURITY_<SECTION>__<KEY>`, for example
//! `AZUREIOTSECURITY_AUDIT__SOCKET_PATH=/run/audit/audispd_events`. The module twin is a
//! layer above these for the agent configuration only (`[agent]`; see
//! [`crate::config::twin`]): every other setting is local.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::agent::{self, Applied};
use super::duration::millis as ms;
use crate::audit::coalesce::CoalesceConfig;
use crate::edge::amqp::AmqpConfig;
use crate::events::DeriveConfig;

/// Why the settings could not be built.
#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("settings: {0}")]
    Load(#[from] ::config::ConfigError),
    #[error("settings file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("setting {key}: {why}")]
    Invalid { key: &'static str, why: String },
}

/// Everything the module can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub audit: AuditSettings,
    pub events: EventSettings,
    pub debug: DebugSettings,
    pub module: ModuleSettings,
    pub edgehub: EdgeHubSettings,
    pub metrics: MetricsSettings,
    pub host: HostSettings,
    pub snapshot: SnapshotSettings,
    /// `[agent]`: the agent configuration (the module twin's
    /// `ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration` settings), as plain values
    /// (`highPriorityMessageFrequency = "PT7M"`) or `{ value = "PT7M" }` tables. Key names are
    /// matched ignoring case (the environment's are lowercased). Read by
    /// [`crate::config::agent::agent_config_from_settings`].
    pub agent: serde_json::Map<String, serde_json::Value>,
    /// `[agent]` of the settings file alone and of the environment alone, as
    /// [`Settings::load_from`] read them: the merged `agent` cannot say which layer a key
    /// came from (the `config` crate lowercases the environment's names and keeps the
    /// file's). `None` when these settings were not loaded (built, or deserialized): `agent`
    /// is then taken as the file's.
    #[serde(skip)]
    pub agent_layers: Option<AgentLayers>,
}

/// The agent settings of each local layer, as given (see [`Settings::agent_layers`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentLayers {
    /// The settings file's `[agent]`.
    pub file: serde_json::Map<String, serde_json::Value>,
    /// The environment's `AZUREIOTSECURITY_AGENT__<KEY>` (names lowercased by the `config`
    /// crate; `__VALUE` suffixes make `{"value": …}` tables).
    pub env: serde_json::Map<String, serde_json::Value>,
}

/// Where the audit stream comes from and how much of it may be held.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// auditd's af_unix plugin socket. `scripts/setup-host.sh` puts it in its own directory,
    /// `/run/audit/` (auditd's own default only from 4.1.2; older ones ship
    /// `/var/run/audispd_events`), so the container can bind the directory read-only: auditd
    /// re-creates the socket (a new inode) on every restart, which a file bind would miss.
    pub socket_path: PathBuf,
    /// First reconnect delay, doubled up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// The queue between the socket reader and the pipeline, in bytes.
    pub queue_max_bytes: usize,
    /// A line longer than this is counted and skipped (auditd's longest record is 8970 bytes).
    pub max_line_bytes: usize,
    /// Events without EOE complete this long (record time) after their timestamp.
    pub record_timeout_ms: u64,
    /// On the live socket, an event that received nothing for this long completes.
    pub idle_ms: u64,
    pub max_inflight_events: usize,
    pub max_inflight_bytes: usize,
    pub max_event_bytes: usize,
    /// With no event carrying the module's rule key for this long, say once that the rules
    /// may not be loaded.
    pub rules_warning_after_secs: u64,
}

/// How security events are derived.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// Entries of the pid → command line cache ConnectionCreate reads.
    pub process_cache_entries: usize,
    /// Bytes of command lines held by that cache.
    pub process_cache_bytes: usize,
    /// A command line longer than this is shortened (and the event says so).
    pub max_command_line_bytes: usize,
    /// Bytes of the login tracker's per-pid state (held Logins); beyond it the oldest pid is
    /// forgotten and its held Login emitted early.
    pub login_tracking_bytes: usize,
}

/// The module's own state and modes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModuleSettings {
    /// Where the AgentId (and, later, the outbox) is kept: a volume in the deployment
    /// manifest.
    pub data_dir: PathBuf,
    /// Aggregation cache entries per event type.
    pub aggregation_max_entries: usize,
    /// Try-out mode, for seeing real messages within a minute: high-priority messages every
    /// 10 s, low every 20 s, statistics every 30 s, aggregation windows of 15 s. It overrides
    /// the agent configuration's frequencies; never for production.
    pub tryout: bool,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        ModuleSettings {
            data_dir: PathBuf::from("/var/lib/azureiotsecurity"),
            aggregation_max_entries: 256,
            tryout: false,
        }
    }
}

/// `[edgehub]`: the AMQP connection to edgeHub (or to IoT Hub from a connection string).
/// Where to connect and who the module is come from the IoT Edge environment, not from here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeHubSettings {
    /// Lifetime of each SAS token; renewed on the open connection at 80 % of it.
    pub token_lifetime_secs: u64,
    /// The idle-timeout the module's AMQP Open announces: 0 (none, as the Node SDK; edgeHub
    /// then sends heartbeats every 2 minutes) or at least 5000 ms (edgeHub refuses less).
    pub idle_timeout_ms: u64,
    /// TCP connect plus TLS handshake.
    pub connect_timeout_ms: u64,
    /// Open, begin, attach and each put-token reply.
    pub request_timeout_ms: u64,
    /// From sending a message to its settlement; after it the connection is dropped and the
    /// message sent again on the next one.
    pub send_timeout_ms: u64,
    /// Wait before resending a message edgeHub released or modified.
    pub retry_delay_ms: u64,
    /// Reconnection back-off: exponential from min to max, with jitter.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// On SIGTERM: how long to keep sending what is ready before exiting.
    pub shutdown_grace_ms: u64,
    /// Open the module twin's links on every connection and take the agent configuration
    /// from its desired properties (`crate::twin`); off: the settings' `[agent]` only, and
    /// no kept twin configuration is read at start.
    pub twin: bool,
    /// The module output the security messages are sent to (`iothub-outputname`), so that
    /// a route `FROM /messages/modules/<m>/outputs/<name>` takes them; empty (the default):
    /// none. At most 128 characters of `[A-Za-z0-9_.-]` (checked by [`Settings::validate`]).
    pub output_name: String,
}

impl Default for EdgeHubSettings {
    /// The connection's own defaults, and a 3 s shutdown grace.
    fn default() -> Self {
        let c = AmqpConfig::default();
        EdgeHubSettings {
            token_lifetime_secs: c.token_lifetime.as_secs(),
            idle_timeout_ms: ms(c.idle_timeout),
            connect_timeout_ms: ms(c.connect_timeout),
            request_timeout_ms: ms(c.request_timeout),
            send_timeout_ms: ms(c.send_timeout),
            retry_delay_ms: ms(c.retry_delay),
            reconnect_min_ms: ms(c.reconnect_min),
            reconnect_max_ms: ms(c.reconnect_max),
            shutdown_grace_ms: 3_000,
            twin: true,
            output_name: String::new(),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint (IoT Edge's metrics-collector convention).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `/metrics`; off by default.
    pub enabled: bool,
    /// Where: `0.0.0.0:9600` by default (the metrics-collector scrapes the module by name).
    pub listen: String,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: false,
            listen: "0.0.0.0:9600".to_owned(),
        }
    }
}

/// `[host]`: where the host is seen from (issue 14's snapshots).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HostSettings {
    /// The host's `/` as the module sees it: `/` on a plain host, `/host` in the container
    /// (the manifest bind-mounts the host's root there read-only). Every snapshot reads
    /// under it ([`crate::collectors::HostRoot`]); nothing under it is written or executed.
    pub root: PathBuf,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            root: PathBuf::from("/"),
        }
    }
}

impl HostSettings {
    /// The host root the collectors read under.
    pub fn host_root(&self) -> crate::collectors::HostRoot {
        crate::collectors::HostRoot::new(self.root.clone())
    }
}

/// `[snapshot]`: what the snapshots send (local only; when they run is the twin's
/// `snapshotFrequency`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSettings {
    /// OSBaseline: send the checks that passed too (false: only failed and errored ones, as
    /// the issue asks: a passed check is noise on every snapshot).
    pub baseline_include_passed: bool,
}

impl SnapshotSettings {
    /// What the collectors are told (`snapshot` and the scheduler pass it to each one).
    pub fn collect_options(&self) -> crate::collectors::CollectOptions {
        crate::collectors::CollectOptions {
            include_passed_checks: self.baseline_include_passed,
        }
    }
}

/// An output name a route can name: empty (none), or up to 128 ASCII letters, digits, `_`,
/// `.` and `-`. IoT Edge route syntax puts it in a path (`/outputs/<name>`); a `/`, space or
/// quote would make a route that cannot name it.
pub fn output_name_ok(name: &str) -> bool {
    name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Test and diagnosis knobs; all off by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DebugSettings {
    /// Stop the pipeline (downstream of the socket reader) for `pause_pipeline_ms`, starting
    /// this long after start. 0 = never. Shows that the reader keeps draining auditd.
    pub pause_pipeline_after_ms: u64,
    pub pause_pipeline_ms: u64,
    /// Make a long-running task panic `panic_task_after_ms` after start: `reader` (the
    /// socket reader), `sender` (the AMQP sender), `owner` (the outgoing state's thread) or
    /// `twin` (the twin task); empty = never. Shows that a task that dies ends the module (E-TASK-ENDED) instead of
    /// leaving it half alive.
    pub panic_task: String,
    pub panic_task_after_ms: u64,
    /// Accept agent frequencies and aggregation intervals under their minimums
    /// (`config::agent::MIN_*`), for tests that need messages within seconds; never for
    /// production.
    pub short_agent_intervals: bool,
}

/// The tasks `debug.panic_task` can name.
pub const PANIC_TASKS: [&str; 4] = ["reader", "sender", "owner", "twin"];

impl Default for AuditSettings {
    /// The coalescer's bounds and timeouts are its own defaults.
    fn default() -> Self {
        let c = CoalesceConfig::default();
        AuditSettings {
            socket_path: PathBuf::from("/run/audit/audispd_events"),
            reconnect_min_ms: 100,
            reconnect_max_ms: 5_000,
            queue_max_bytes: 16 << 20,
            max_line_bytes: 64 << 10,
            record_timeout_ms: c.record_timeout_ms,
            idle_ms: c.idle_ms,
            max_inflight_events: c.max_inflight_events,
            max_inflight_bytes: c.max_inflight_bytes,
            max_event_bytes: c.max_event_bytes,
            rules_warning_after_secs: 300,
        }
    }
}

impl Default for EventSettings {
    /// The deriver's own defaults.
    fn default() -> Self {
        let d = DeriveConfig::default();
        EventSettings {
            process_cache_entries: d.process_cache_entries,
            process_cache_bytes: d.process_cache_bytes,
            max_command_line_bytes: d.max_command_line_bytes,
            login_tracking_bytes: d.login_tracking_bytes,
        }
    }
}

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const DAY_SECS: u64 = DAY_MS / 1000;

/// The range of each duration setting, in its own unit (the key's suffix), in the order of
/// [`Settings::durations`]. Wide enough for any sane deployment, small enough that no
/// `Instant` or millisecond arithmetic on them can overflow. The lower bounds other checks
/// in [`Settings::validate`] make (positive timeouts, edgeHub's 5 s idle-timeout) still apply.
pub const DURATION_RANGES: [(&str, (u64, u64)); 17] = [
    ("audit.reconnect_min_ms", (1, HOUR_MS)),
    ("audit.reconnect_max_ms", (1, HOUR_MS)),
    ("audit.record_timeout_ms", (0, HOUR_MS)),
    ("audit.idle_ms", (0, HOUR_MS)),
    // 0 = never warn.
    ("audit.rules_warning_after_secs", (0, 7 * DAY_SECS)),
    // A day: the SDKs use an hour; edgeHub takes any.
    ("edgehub.token_lifetime_secs", (10, DAY_SECS)),
    ("edgehub.idle_timeout_ms", (0, HOUR_MS)),
    ("edgehub.connect_timeout_ms", (1, 10 * MINUTE_MS)),
    ("edgehub.request_timeout_ms", (1, 10 * MINUTE_MS)),
    ("edgehub.send_timeout_ms", (1, HOUR_MS)),
    ("edgehub.retry_delay_ms", (0, HOUR_MS)),
    ("edgehub.reconnect_min_ms", (1, HOUR_MS)),
    ("edgehub.reconnect_max_ms", (1, HOUR_MS)),
    // IoT Edge kills a module some 30 s after SIGTERM anyway.
    ("edgehub.shutdown_grace_ms", (0, 2 * MINUTE_MS)),
    ("debug.pause_pipeline_after_ms", (0, DAY_MS)),
    ("debug.pause_pipeline_ms", (0, DAY_MS)),
    ("debug.panic_task_after_ms", (0, DAY_MS)),
];

/// The environment prefix.
pub const ENV_PREFIX: &str = "AZUREIOTSECURITY";

impl Settings {
    /// Defaults, then `file` (when given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_from(file, None)
    }

    /// As [`Settings::load`], with an explicit environment (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Settings, SettingsError> {
        let defaults = ::config::Config::try_from(&Settings::default())?;
        let mut b = ::config::Config::builder().add_source(defaults);
        let mut file_only = ::config::Config::builder();
        if let Some(f) = file {
            if !f.exists() {
                return Err(SettingsError::MissingFile(f.to_path_buf()));
            }
            let source = ::config::File::from(f).format(::config::FileFormat::Toml);
            b = b.add_source(source.clone());
            file_only = file_only.add_source(source);
        }
        let mut envsrc = ::config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true);
        if let Some(map) = env {
            envsrc = envsrc.source(Some(map));
        }
        let env_only = ::config::Config::builder().add_source(envsrc.clone());
        let mut s: Settings = b.add_source(envsrc).build()?.try_deserialize()?;
        // Each layer's `[agent]` alone, so that each agent value's layer is known (none:
        // `agent` is empty too, and the settings equal the defaults).
        let layers = AgentLayers {
            file: agent_table(file_only)?,
            env: agent_table(env_only)?,
        };
        if layers != AgentLayers::default() {
            s.agent_layers = Some(layers);
        }
        s.validate()?;
        Ok(s)
    }

    /// Reject values the module cannot work with.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let a = &self.audit;
        let bad = |key, why: &str| {
            Err(SettingsError::Invalid {
                key,
                why: why.to_string(),
            })
        };
        if a.max_line_bytes < 9000 {
            return bad(
                "audit.max_line_bytes",
                "must be at least 9000 (auditd records reach 8970 bytes)",
            );
        }
        if a.queue_max_bytes < a.max_line_bytes {
            return bad("audit.queue_max_bytes", "must hold at least one line");
        }
        if a.reconnect_min_ms == 0 || a.reconnect_max_ms < a.reconnect_min_ms {
            return bad(
                "audit.reconnect_max_ms",
                "need 0 < reconnect_min_ms <= reconnect_max_ms",
            );
        }
        if a.max_inflight_events == 0 || a.max_event_bytes == 0 {
            return bad("audit.max_inflight_events", "must be positive");
        }
        if a.max_inflight_bytes < a.max_event_bytes {
            return bad(
                "audit.max_inflight_bytes",
                "must be at least audit.max_event_bytes",
            );
        }
        for (key, value, (min, max)) in self.durations() {
            if !(min..=max).contains(&value) {
                return Err(SettingsError::Invalid {
                    key,
                    why: format!("must be from {min} to {max}, not {value}"),
                });
            }
        }
        let e = &self.edgehub;
        if e.idle_timeout_ms != 0 && e.idle_timeout_ms < 5000 {
            return bad(
                "edgehub.idle_timeout_ms",
                "must be 0 (none) or at least 5000: edgeHub refuses a shorter idle-timeout",
            );
        }
        if e.reconnect_min_ms == 0 || e.reconnect_max_ms < e.reconnect_min_ms {
            return bad(
                "edgehub.reconnect_max_ms",
                "need 0 < reconnect_min_ms <= reconnect_max_ms",
            );
        }
        if e.connect_timeout_ms == 0 || e.request_timeout_ms == 0 || e.send_timeout_ms == 0 {
            return bad("edgehub.send_timeout_ms", "timeouts must be positive");
        }
        if !output_name_ok(&e.output_name) {
            return bad(
                "edgehub.output_name",
                "must be empty or at most 128 characters of letters, digits, '_', '.' and '-'",
            );
        }
        if !self.host.root.is_absolute() {
            return bad(
                "host.root",
                "must be an absolute path (the host's / as the module sees it, e.g. /host)",
            );
        }
        if self.metrics.enabled && self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "metrics.listen",
                "must be an address:port such as 0.0.0.0:9600",
            );
        }
        let task = self.debug.panic_task.as_str();
        if !task.is_empty() && !PANIC_TASKS.contains(&task) {
            return bad(
                "debug.panic_task",
                "must be empty, reader, sender, owner or twin",
            );
        }
        if self.module.aggregation_max_entries == 0 {
            return bad("module.aggregation_max_entries", "must be positive");
        }
        if self.events.process_cache_entries == 0 {
            return bad("events.process_cache_entries", "must be positive");
        }
        if self.events.max_command_line_bytes < 256 {
            return bad("events.max_command_line_bytes", "must be at least 256");
        }
        Ok(())
    }

    /// Every duration setting with its value and the range [`Settings::validate`] allows
    /// (`DURATION_RANGES`). Without an upper bound a value such as a token lifetime of
    /// 1.2e19 s passed and then overflowed an `Instant` in the sender.
    pub fn durations(&self) -> [(&'static str, u64, (u64, u64)); DURATION_RANGES.len()] {
        let (a, e, d) = (&self.audit, &self.edgehub, &self.debug);
        let values = [
            a.reconnect_min_ms,
            a.reconnect_max_ms,
            a.record_timeout_ms,
            a.idle_ms,
            a.rules_warning_after_secs,
            e.token_lifetime_secs,
            e.idle_timeout_ms,
            e.connect_timeout_ms,
            e.request_timeout_ms,
            e.send_timeout_ms,
            e.retry_delay_ms,
            e.reconnect_min_ms,
            e.reconnect_max_ms,
            e.shutdown_grace_ms,
            d.pause_pipeline_after_ms,
            d.pause_pipeline_ms,
            d.panic_task_after_ms,
        ];
        std::array::from_fn(|i| (DURATION_RANGES[i].0, values[i], DURATION_RANGES[i].1))
    }

    /// The agent configuration in force: `[agent]` applied on the defaults
    /// ([`agent::agent_config_from_settings`]), then try-out's overrides when
    /// `module.tryout` is set. `check-config` shows `[agent]` without them.
    pub fn agent_config(&self) -> Applied {
        agent::applied_locally(&self.agent_layers())
    }

    /// The agent configuration's local layers: the settings file's and the environment's
    /// `[agent]` ([`agent::settings_layers`]) and, when `module.tryout` is set, try-out's
    /// values above them and above the twin. Try-out is a local debug switch: a twin
    /// configuration must not stretch its 10-second messages back to hours, so it stays on
    /// top, shown as its own source (`tryout`) by `check-config`.
    pub fn agent_layers(&self) -> agent::LocalLayers {
        let mut local = agent::settings_layers(self);
        if self.module.tryout {
            local.on_top.push(agent::Layer::frequencies(
                agent::Source::Tryout,
                TRYOUT_HIGH_FREQUENCY,
                TRYOUT_LOW_FREQUENCY,
                TRYOUT_SNAPSHOT_FREQUENCY,
                TRYOUT_AGGREGATION_INTERVAL,
            ));
        }
        local
    }
}

/// The `agent` table of one source (empty when it has none).
fn agent_table(
    b: ::config::ConfigBuilder<::config::builder::DefaultState>,
) -> Result<serde_json::Map<String, serde_json::Value>, SettingsError> {
    match b
        .build()?
        .get::<serde_json::Map<String, serde_json::Value>>("agent")
    {
        Ok(m) => Ok(m),
        Err(::config::ConfigError::NotFound(_)) => Ok(serde_json::Map::new()),
        Err(e) => Err(e.into()),
    }
}

/// Try-out mode's frequencies and aggregation window (`module.tryout`).
/// The high frequency is the shortest the agent configuration allows.
pub const TRYOUT_HIGH_FREQUENCY: Duration = agent::MIN_MESSAGE_FREQUENCY;
pub const TRYOUT_LOW_FREQUENCY: Duration = Duration::from_secs(20);
pub const TRYOUT_SNAPSHOT_FREQUENCY: Duration = Duration::from_secs(30);
pub const TRYOUT_AGGREGATION_INTERVAL: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn baseline_include_passed_is_off_by_default_and_reaches_the_collect_options() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(!s.snapshot.baseline_include_passed);
        assert!(!s.snapshot.collect_options().include_passed_checks);
        let s = Settings::load_from(
            None,
            env(&[("AZUREIOTSECURITY_SNAPSHOT__BASELINE_INCLUDE_PASSED", "true")]),
        )
        .unwrap();
        assert!(s.snapshot.collect_options().include_passed_checks);
    }

    #[test]
    fn host_root_is_slash_by_default_and_set_from_the_environment() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.host.root, PathBuf::from("/"));
        assert_eq!(s.host.host_root().root(), Path::new("/"));
        let s =
            Settings::load_from(None, env(&[("AZUREIOTSECURITY_HOST__ROOT", "/host")])).unwrap();
        assert_eq!(s.host.host_root().root(), Path::new("/host"));
        let e =
            Settings::load_from(None, env(&[("AZUREIOTSECURITY_HOST__ROOT", "host")])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("setting host.root: must be an absolute path"),
            "{e}"
        );
    }

    #[test]
    fn defaults_without_file_or_env() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(
            s.audit.socket_path,
            PathBuf::from("/run/audit/audispd_events")
        );
    }

    #[test]
    fn file_then_env_override() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[audit]\nsocket_path = \"/from/file\"\nidle_ms = 900\n[events]\nprocess_cache_entries = 10"
        )
        .unwrap();
        let s = Settings::load_from(
            Some(f.path()),
            env(&[("AZUREIOTSECURITY_AUDIT__SOCKET_PATH", "/from/env")]),
        )
        .unwrap();
        assert_eq!(s.audit.socket_path, PathBuf::from("/from/env"));
        assert_eq!(s.audit.idle_ms, 900);
        assert_eq!(s.events.process_cache_entries, 10);
        assert_eq!(s.audit.record_timeout_ms, 2000);
    }

    #[test]
    fn env_numbers_are_parsed() {
        let s =
            Settings::load_from(None, env(&[("AZUREIOTSECURITY_AUDIT__IDLE_MS", "42")])).unwrap();
        assert_eq!(s.audit.idle_ms, 42);
    }

    /// Every `*_ms`/`*_secs` setting has a range, and the defaults are in it.
    #[test]
    fn every_duration_setting_is_bounded() {
        let json = serde_json::to_value(Settings::default()).unwrap();
        let mut keys = Vec::new();
        for (section, fields) in json.as_object().unwrap() {
            for key in fields.as_object().map(|o| o.keys()).into_iter().flatten() {
                if key.ends_with("_ms") || key.ends_with("_secs") {
                    keys.push(format!("{section}.{key}"));
                }
            }
        }
        keys.sort();
        let mut ranged: Vec<String> = DURATION_RANGES.iter().map(|(k, _)| k.to_string()).collect();
        ranged.sort();
        assert_eq!(keys, ranged);
        let d = Settings::default();
        for (key, value, range) in d.durations() {
            assert_eq!(
                DURATION_RANGES.iter().find(|(k, _)| *k == key).unwrap().1,
                range
            );
            assert!((range.0..=range.1).contains(&value), "{key}");
        }
        // Each value is read from its own field.
        assert_eq!(
            d.durations().map(|(_, v, _)| v),
            DURATION_RANGES.map(|(k, _)| json[k.split_once('.').unwrap().0]
                [k.split_once('.').unwrap().1]
                .as_u64()
                .unwrap())
        );
    }

    /// `edgehub.output_name` comes from the environment; one a route cannot name (a `/`,
    /// a space, more than 128 characters) is refused, naming the setting.
    #[test]
    fn output_names_a_route_can_name_are_taken() {
        let s = Settings::load_from(
            None,
            env(&[("AZUREIOTSECURITY_EDGEHUB__OUTPUT_NAME", "security-1.a_b")]),
        )
        .unwrap();
        assert_eq!(s.edgehub.output_name, "security-1.a_b");
        assert_eq!(Settings::default().edgehub.output_name, "");
        for bad in ["a/b", "a b", &"x".repeat(129)] {
            let e =
                Settings::load_from(None, env(&[("AZUREIOTSECURITY_EDGEHUB__OUTPUT_NAME", bad)]))
                    .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("setting edgehub.output_name: must be empty or"),
                "{bad}: {e}"
            );
        }
        assert!(output_name_ok(&"x".repeat(128)));
    }

    /// A token lifetime beyond what an `Instant` can add (1.2e19 s) and the value the
    /// environment's 2e19 becomes (u64::MAX) are refused, naming the setting and the range.
    #[test]
    fn durations_beyond_their_range_are_refused() {
        for (key, value, want) in [
            (
                "AZUREIOTSECURITY_EDGEHUB__TOKEN_LIFETIME_SECS",
                "12000000000000000000",
                "setting edgehub.token_lifetime_secs: must be from 10 to 86400, not 12000000000000000000",
            ),
            (
                "AZUREIOTSECURITY_EDGEHUB__TOKEN_LIFETIME_SECS",
                "20000000000000000000",
                "setting edgehub.token_lifetime_secs: must be from 10 to 86400, not 18446744073709551615",
            ),
            (
                "AZUREIOTSECURITY_EDGEHUB__TOKEN_LIFETIME_SECS",
                "86401",
                "setting edgehub.token_lifetime_secs: must be from 10 to 86400, not 86401",
            ),
            (
                "AZUREIOTSECURITY_EDGEHUB__SHUTDOWN_GRACE_MS",
                "120001",
                "setting edgehub.shutdown_grace_ms: must be from 0 to 120000, not 120001",
            ),
            (
                "AZUREIOTSECURITY_DEBUG__PAUSE_PIPELINE_AFTER_MS",
                "18446744073709551615",
                "setting debug.pause_pipeline_after_ms: must be from 0 to 86400000, not 18446744073709551615",
            ),
        ] {
            let e = Settings::load_from(None, env(&[(key, value)])).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
        let s = Settings::load_from(
            None,
            env(&[("AZUREIOTSECURITY_EDGEHUB__TOKEN_LIFETIME_SECS", "86400")]),
        )
        .unwrap();
        assert_eq!(s.edgehub.token_lifetime_secs, 86_400);
    }

    #[test]
    fn errors_are_clear() {
        let e = Settings::load_from(Some(Path::new("/nonexistent.toml")), env(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "settings file /nonexistent.toml does not exist"
        );
        let e = Settings::load_from(
            None,
            env(&[("AZUREIOTSECURITY_AUDIT__MAX_LINE_BYTES", "10")]),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("setting audit.max_line_bytes:"),
            "{e}"
        );
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[audit]\nno_such_key = 1").unwrap();
        let e = Settings::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(e.to_string().contains("no_such_key"), "{e}");
    }

    /// Try-out replaces the frequencies and every aggregation window, and nothing else;
    /// without it the agent configuration is `[agent]`'s.
    #[test]
    fn tryout_overrides_the_agent_frequencies() {
        let s = Settings::load_from(
            None,
            env(&[
                ("AZUREIOTSECURITY_AGENT__MAXMESSAGESIZEINBYTES", "8192"),
                (
                    "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDCONNECTIONCREATE",
                    "false",
                ),
            ]),
        )
        .unwrap();
        let plain = s.agent_config();
        assert_eq!(plain.errors, Vec::new());
        assert_eq!(
            plain.config.high_priority_message_frequency,
            Duration::from_secs(420)
        );
        let mut t = s.clone();
        t.module.tryout = true;
        let tried = t.agent_config();
        let c = &tried.config;
        assert_eq!(tried.errors, plain.errors);
        assert_eq!(c.high_priority_message_frequency, Duration::from_secs(10));
        assert_eq!(c.low_priority_message_frequency, Duration::from_secs(20));
        assert_eq!(c.snapshot_frequency, Duration::from_secs(30));
        for (a, before) in c.aggregations.iter().zip(plain.config.aggregations) {
            assert_eq!(a.interval, Duration::from_secs(15));
            assert_eq!(a.enabled, before.enabled);
        }
        assert!(!c.aggregations[1].enabled);
        assert_eq!(c.max_message_size_in_bytes, 8192);
        assert_eq!(c.event_priorities, plain.config.event_priorities);
    }
}
