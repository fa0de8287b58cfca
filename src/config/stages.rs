//! One function per stage, each building that stage's own small config struct from the
//! settings and the agent configuration in force. The stages (audit/, events/, outgoing/,
//! edge/) import their struct, never `config::settings`; a test below keeps it so.

use std::time::Duration;

use super::agent::AgentConfig;
use super::duration::millis as ms;
use super::settings::{AuditSettings, EdgeHubSettings, EventSettings};
use crate::audit::coalesce::CoalesceConfig;
use crate::audit::source::SocketConfig;
use crate::edge::amqp::AmqpConfig;
use crate::events::{DeriveConfig, EventKind};
use crate::outgoing::aggregate::AggregateConfig;
use crate::outgoing::batch::BatchConfig;

/// The socket reader's part of `[audit]`.
pub fn source(a: &AuditSettings) -> SocketConfig {
    SocketConfig {
        path: a.socket_path.clone(),
        reconnect_min: Duration::from_millis(a.reconnect_min_ms),
        reconnect_max: Duration::from_millis(a.reconnect_max_ms),
        max_line: a.max_line_bytes,
    }
}

/// The coalescer's part of `[audit]`.
pub fn coalesce(a: &AuditSettings) -> CoalesceConfig {
    CoalesceConfig {
        max_inflight_events: a.max_inflight_events,
        max_inflight_bytes: a.max_inflight_bytes,
        max_event_bytes: a.max_event_bytes,
        record_timeout_ms: a.record_timeout_ms,
        idle_ms: a.idle_ms,
        ..CoalesceConfig::default()
    }
}

/// The deriver's part of `[events]`.
pub fn derive(e: &EventSettings) -> DeriveConfig {
    DeriveConfig {
        process_cache_entries: e.process_cache_entries,
        process_cache_bytes: e.process_cache_bytes,
        max_command_line_bytes: e.max_command_line_bytes,
        login_tracking_bytes: e.login_tracking_bytes,
    }
}

/// Aggregation: the agent configuration's windows and cache size, and `max_entries`
/// (`module.aggregation_max_entries`) per event type.
pub fn aggregate(c: &AgentConfig, max_entries: usize) -> AggregateConfig {
    AggregateConfig {
        process_create: c.aggregation(EventKind::ProcessCreate).map(ms),
        connection_create: c.aggregation(EventKind::ConnectionCreate).map(ms),
        max_entries,
        max_bytes: usize::try_from(c.max_local_cache_size_in_bytes).unwrap_or(usize::MAX),
    }
}

/// Batching: the agent configuration's message size and frequencies, and the bytes of the
/// application properties every message carries.
pub fn batch(c: &AgentConfig, app_properties_bytes: usize) -> BatchConfig {
    BatchConfig {
        max_message_bytes: usize::try_from(c.max_message_size_in_bytes).unwrap_or(usize::MAX),
        app_properties_bytes,
        high_frequency_ms: ms(c.high_priority_message_frequency),
        low_frequency_ms: ms(c.low_priority_message_frequency),
    }
}

/// The AMQP connection's timing, from `[edgehub]`.
pub fn amqp(s: &EdgeHubSettings) -> AmqpConfig {
    AmqpConfig {
        token_lifetime: Duration::from_secs(s.token_lifetime_secs),
        idle_timeout: Duration::from_millis(s.idle_timeout_ms),
        connect_timeout: Duration::from_millis(s.connect_timeout_ms),
        request_timeout: Duration::from_millis(s.request_timeout_ms),
        send_timeout: Duration::from_millis(s.send_timeout_ms),
        retry_delay: Duration::from_millis(s.retry_delay_ms),
        reconnect_min: Duration::from_millis(s.reconnect_min_ms),
        reconnect_max: Duration::from_millis(s.reconnect_max_ms),
        output_name: (!s.output_name.is_empty()).then(|| s.output_name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::agent::Priority;
    use crate::config::settings::Settings;
    use std::path::{Path, PathBuf};

    /// Synthetic settings: every field differs from its default, so a field read from the
    /// wrong place shows.
    fn custom() -> Settings {
        let mut s = Settings::default();
        let a = &mut s.audit;
        a.socket_path = PathBuf::from("/tmp/sock");
        a.reconnect_min_ms = 7;
        a.reconnect_max_ms = 70;
        a.max_line_bytes = 10_000;
        a.max_inflight_events = 11;
        a.max_inflight_bytes = 12_000;
        a.max_event_bytes = 13_000;
        a.record_timeout_ms = 14;
        a.idle_ms = 15;
        let e = &mut s.events;
        e.process_cache_entries = 21;
        e.process_cache_bytes = 22;
        e.max_command_line_bytes = 300;
        e.login_tracking_bytes = 24;
        let h = &mut s.edgehub;
        h.token_lifetime_secs = 31;
        h.idle_timeout_ms = 32_000;
        h.connect_timeout_ms = 33;
        h.request_timeout_ms = 34;
        h.send_timeout_ms = 35;
        h.retry_delay_ms = 36;
        h.reconnect_min_ms = 37;
        h.reconnect_max_ms = 38;
        s
    }

    #[test]
    fn each_stage_gets_its_own_fields() {
        let s = custom();
        let ms = Duration::from_millis;
        let src = source(&s.audit);
        assert_eq!(src.path, PathBuf::from("/tmp/sock"));
        assert_eq!((src.reconnect_min, src.reconnect_max), (ms(7), ms(70)));
        assert_eq!(src.max_line, 10_000);
        let c = coalesce(&s.audit);
        assert_eq!(
            c,
            CoalesceConfig {
                max_inflight_events: 11,
                max_inflight_bytes: 12_000,
                max_event_bytes: 13_000,
                record_timeout_ms: 14,
                idle_ms: 15,
                ..CoalesceConfig::default()
            }
        );
        assert_eq!(
            derive(&s.events),
            DeriveConfig {
                process_cache_entries: 21,
                process_cache_bytes: 22,
                max_command_line_bytes: 300,
                login_tracking_bytes: 24,
            }
        );
        let a = amqp(&s.edgehub);
        assert_eq!(a.token_lifetime, Duration::from_secs(31));
        assert_eq!(a.idle_timeout, ms(32_000));
        assert_eq!(
            [
                a.connect_timeout,
                a.request_timeout,
                a.send_timeout,
                a.retry_delay
            ],
            [ms(33), ms(34), ms(35), ms(36)]
        );
        assert_eq!((a.reconnect_min, a.reconnect_max), (ms(37), ms(38)));
        assert_eq!(a.output_name, None, "an empty output name is none");
        let mut named = s.edgehub.clone();
        named.output_name = "security".into();
        assert_eq!(amqp(&named).output_name.as_deref(), Some("security"));
    }

    #[test]
    fn the_agent_configuration_reaches_aggregation_and_batching() {
        let mut c = AgentConfig {
            high_priority_message_frequency: Duration::from_secs(41),
            low_priority_message_frequency: Duration::from_secs(42),
            max_local_cache_size_in_bytes: 43_000,
            max_message_size_in_bytes: 16_384,
            ..AgentConfig::default()
        };
        c.aggregations[0].interval = Duration::from_secs(44);
        c.aggregations[1].enabled = false;
        c.set_priority(EventKind::Login, Priority::Off);
        assert_eq!(
            aggregate(&c, 45),
            AggregateConfig {
                process_create: Some(44_000),
                connection_create: None,
                max_entries: 45,
                max_bytes: 43_000,
            }
        );
        assert_eq!(
            batch(&c, 46),
            BatchConfig {
                max_message_bytes: 16_384,
                app_properties_bytes: 46,
                high_frequency_ms: 41_000,
                low_frequency_ms: 42_000,
            }
        );
    }

    /// The defaults of the settings are the stages' own: building a stage's config from
    /// the default settings gives the stage's default.
    #[test]
    fn default_settings_give_the_stages_defaults() {
        let s = Settings::default();
        assert_eq!(coalesce(&s.audit), CoalesceConfig::default());
        assert_eq!(derive(&s.events), DeriveConfig::default());
        let (a, d) = (amqp(&s.edgehub), AmqpConfig::default());
        assert_eq!(
            (
                a.token_lifetime,
                a.idle_timeout,
                a.connect_timeout,
                a.request_timeout
            ),
            (
                d.token_lifetime,
                d.idle_timeout,
                d.connect_timeout,
                d.request_timeout
            )
        );
        assert_eq!(
            (
                a.send_timeout,
                a.retry_delay,
                a.reconnect_min,
                a.reconnect_max
            ),
            (
                d.send_timeout,
                d.retry_delay,
                d.reconnect_min,
                d.reconnect_max
            )
        );
    }

    /// The stages take their small structs: no file under audit/, events/, edge/ or
    /// outgoing/ names the settings.
    #[test]
    fn stages_do_not_import_the_settings() {
        fn sources(path: &Path, out: &mut Vec<PathBuf>) {
            if path.is_dir() {
                for entry in std::fs::read_dir(path).unwrap() {
                    sources(&entry.unwrap().path(), out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.to_path_buf());
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        for stage in ["audit", "events", "edge", "outgoing"] {
            sources(&src.join(stage), &mut files);
        }
        assert!(files.len() > 20, "{files:?}");
        let offending: Vec<String> = files
            .iter()
            .filter(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                text.contains("crate::settings") || text.contains("config::settings")
            })
            .map(|f| f.display().to_string())
            .collect();
        assert_eq!(offending, Vec::<String>::new());
    }
}
