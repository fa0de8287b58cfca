//! The agent configuration: the module twin object [`OBJECT_NAME`] (message frequencies,
//! sizes, event priorities, aggregation), described by one table of keys (`KEYS`: name,
//! kind of value, default) that parsing, checking, the defaults and the reported form read.
//!
//! Contract (the published twin schema and DESIGN.md's "Configuration"): parsing is pure
//! and has the same rules whatever feeds it: [`Layer::parse`] turns an update `{"key":
//! {"value": …}, …}` into the values it gives, or one [`ConfigurationError`] per type error
//! (a type error refuses all of it). [`resolve`] lays layers over the defaults per key (the
//! settings file, the environment, the twin: [`LocalLayers`], [`crate::config::twin`]), runs
//! the checks between settings (which fix what they report) and records each value's
//! [`Source`]. [`apply`] is one update on the defaults (a missing key is its default).
//! [`AgentConfig::to_twin_json`] is the reported form, and `apply` of it gives it back.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};
use thiserror::Error;

use super::settings::Settings;
use crate::events::EventKind;
use crate::events::operational::ConfigurationError;
use crate::outgoing::batch::{CHUNK, HUB_MAX_MESSAGE};

/// The module twin's desired (and reported) property object holding the settings.
pub const OBJECT_NAME: &str = "ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration";

/// `maxMessageSizeInBytes` range (schema description: "minimum 8192, maximum 262144"; the
/// maximum is IoT Hub's own message size limit).
pub const MIN_MESSAGE_SIZE: u64 = 8192;
pub const MAX_MESSAGE_SIZE: u64 = HUB_MAX_MESSAGE as u64;
/// `maxLocalCacheSizeInBytes` minimum (schema description: "minimum 8192", the smallest
/// message size).
pub const MIN_CACHE_SIZE: u64 = MIN_MESSAGE_SIZE;
/// Messages are billed per 4 KB chunk.
pub const BILLING_CHUNK: u64 = CHUNK as u64;
/// The shortest `highPriorityMessageFrequency` / `lowPriorityMessageFrequency` used: at most
/// 8,640 messages a day per priority.
pub const MIN_MESSAGE_FREQUENCY: Duration = Duration::from_secs(10);
/// The shortest `snapshotFrequency` used: at most 1,440 statistics reports a day.
pub const MIN_SNAPSHOT_FREQUENCY: Duration = Duration::from_secs(60);
/// The shortest `aggregationInterval<Event>` used (a window closing at every tick would
/// aggregate nothing and checkpoint at every tick).
pub const MIN_AGGREGATION_INTERVAL: Duration = Duration::from_secs(10);

pub(super) const DEFAULT_HIGH_FREQUENCY: Duration = Duration::from_secs(7 * 60);
pub(super) const DEFAULT_LOW_FREQUENCY: Duration = Duration::from_secs(5 * 3600);
pub(super) const DEFAULT_SNAPSHOT_FREQUENCY: Duration = Duration::from_secs(13 * 3600);
pub(super) const DEFAULT_CACHE_SIZE: u64 = 2_560_000;
pub(super) const DEFAULT_MESSAGE_SIZE: u64 = 204_800;
pub(super) const DEFAULT_AGGREGATION: Aggregation = Aggregation {
    enabled: true,
    interval: Duration::from_secs(3600),
};

// The cache default resolves every cache/message size conflict.
const _: () = assert!(DEFAULT_CACHE_SIZE >= MAX_MESSAGE_SIZE);
// The defaults are above the minimums.
const _: () = assert!(DEFAULT_HIGH_FREQUENCY.as_secs() >= MIN_MESSAGE_FREQUENCY.as_secs());
const _: () = assert!(DEFAULT_SNAPSHOT_FREQUENCY.as_secs() >= MIN_SNAPSHOT_FREQUENCY.as_secs());
const _: () = assert!(DEFAULT_AGGREGATION.interval.as_secs() >= MIN_AGGREGATION_INTERVAL.as_secs());

/// The events that can be aggregated, in schema order. [`AgentConfig::aggregations`] is
/// indexed like this.
pub const AGGREGATED_EVENTS: [EventKind; 3] = [
    EventKind::ProcessCreate,
    EventKind::ConnectionCreate,
    EventKind::ProcessTerminate,
];

/// The queue an event goes to; `Off` drops it (and turns its collector off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    High,
    Low,
    Off,
}

impl Priority {
    /// The schema's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "High",
            Priority::Low => "Low",
            Priority::Off => "Off",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority that is none of `High`, `Low`, `Off` (in any case).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{} is not a priority: expected \"High\", \"Low\" or \"Off\"", quote(.0))]
pub struct PriorityError(pub String);

impl FromStr for Priority {
    type Err = PriorityError;

    /// Ignores ASCII case: `high`, `LOW` and `Off` are all accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Priority::High, Priority::Low, Priority::Off]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| PriorityError(s.to_string()))
    }
}

/// Aggregation of one event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregation {
    pub enabled: bool,
    /// The window length.
    pub interval: Duration,
}

/// The agent configuration in force. `Default` is the published default configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Longest wait before the pending high-priority events are sent.
    pub high_priority_message_frequency: Duration,
    /// Longest wait before the pending low-priority events are sent.
    pub low_priority_message_frequency: Duration,
    /// Period of the snapshot (Periodic) collectors.
    pub snapshot_frequency: Duration,
    /// Bytes of events held on the device before they are sent.
    pub max_local_cache_size_in_bytes: u64,
    /// Largest message.
    pub max_message_size_in_bytes: u64,
    /// Indexed by [`EventKind::index`]; read with [`AgentConfig::priority`].
    pub event_priorities: [Priority; EventKind::ALL.len()],
    /// One per [`AGGREGATED_EVENTS`] entry, same order; read with
    /// [`AgentConfig::aggregation`].
    pub aggregations: [Aggregation; AGGREGATED_EVENTS.len()],
    /// The IoT Hub's resource id (the twin's `hubResourceId`), sent with each security
    /// message as the application property `HubResourceId` when set and not empty; `None`
    /// until the twin gives one (not a schema key with a default).
    pub hub_resource_id: Option<String>,
}

impl Default for AgentConfig {
    /// The defaults of the table of keys (`KEYS`).
    fn default() -> Self {
        let mut c = AgentConfig {
            high_priority_message_frequency: Duration::ZERO,
            low_priority_message_frequency: Duration::ZERO,
            snapshot_frequency: Duration::ZERO,
            max_local_cache_size_in_bytes: 0,
            max_message_size_in_bytes: 0,
            event_priorities: [Priority::Low; EventKind::ALL.len()],
            aggregations: [DEFAULT_AGGREGATION; AGGREGATED_EVENTS.len()],
            hub_resource_id: None,
        };
        for spec in &KEYS {
            spec.key.set(&mut c, spec.default);
        }
        c
    }
}

impl AgentConfig {
    /// The priority of events of `kind`.
    pub fn priority(&self, kind: EventKind) -> Priority {
        self.event_priorities[kind.index()]
    }

    /// Sets the priority of events of `kind`.
    pub fn set_priority(&mut self, kind: EventKind, priority: Priority) {
        self.event_priorities[kind.index()] = priority;
    }

    /// The aggregation window of `kind`, or `None` when its aggregation is disabled or it is
    /// not one of [`AGGREGATED_EVENTS`].
    pub fn aggregation(&self, kind: EventKind) -> Option<Duration> {
        aggregation_of(&self.aggregations, kind)
            .filter(|a| a.enabled)
            .map(|a| a.interval)
    }

    /// The reported-properties form: the content of [`OBJECT_NAME`], every schema key
    /// wrapped as `{"value": …}`, durations as ISO 8601, priorities `High|Low|Off`.
    /// [`apply`] of it gives this configuration back.
    pub fn to_twin_json(&self) -> Value {
        let mut m = Map::new();
        for spec in &KEYS {
            let mut v = Map::new();
            v.insert("value".to_string(), spec.key.get(self).to_json());
            m.insert(spec.name.to_string(), Value::Object(v));
        }
        if let Some(id) = &self.hub_resource_id {
            let mut v = Map::new();
            v.insert("value".to_string(), Value::String(id.clone()));
            m.insert(HUB_RESOURCE_ID.to_string(), Value::Object(v));
        }
        Value::Object(m)
    }
}

/// The outcome of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The configuration now in force: `previous` when rejected.
    pub config: AgentConfig,
    /// One per problem, in schema key order; send them as one ConfigurationError event.
    pub errors: Vec<ConfigurationError>,
    /// The update had a type error and was not applied.
    pub rejected: bool,
    /// Keys that are not settings, as given (ignored; worth a log line).
    pub ignored: Vec<String>,
}

/// Applies `update`, the content of the twin object [`OBJECT_NAME`] (`{"key": {"value":
/// …}, …}`), on top of the defaults. A missing key takes its default, not its `previous`
/// value; `previous` is kept whole when the update has a type error. See the module
/// documentation for every rule.
pub fn apply(previous: &AgentConfig, update: &Value) -> Applied {
    apply_with(previous, update, true)
}

/// [`apply`], with the minimums lifted when `minimums` is false (only the settings'
/// `debug.short_agent_intervals`, for tests). Every other rule is the same whatever the
/// update comes from (twin, settings file or environment).
fn apply_with(previous: &AgentConfig, update: &Value, minimums: bool) -> Applied {
    // The update is the whole configuration: a missing key means its default, not its
    // previous value, as in the classic agents (removing a key from the twin's desired
    // properties returns it to the default). The twin on a base is [`resolve`].
    let parsed = Layer::parse(Source::Twin, update, previous);
    if !parsed.errors.is_empty() {
        return Applied {
            config: previous.clone(),
            errors: parsed.errors,
            rejected: true,
            ignored: parsed.ignored,
        };
    }
    let resolved = resolve(&[&parsed.layer], &[], minimums);
    Applied {
        config: resolved.config,
        errors: resolved.errors,
        rejected: false,
        ignored: parsed.ignored,
    }
}

use super::keys::{KEYS, aggregation_of, quote};
pub use super::layers::{
    HUB_RESOURCE_ID, Layer, LocalLayers, MAX_HUB_RESOURCE_ID, ParsedLayer, Resolved, Source,
    Sources, agent_config_from_settings, applied_locally, resolve, settings_layers,
};

/// For `azureiotsecurity check-config` without a kept twin configuration: the effective
/// settings as JSON and the agent configuration's problems
/// ([`crate::config::twin::check_report`]).
pub fn check_report(s: &Settings) -> (Value, Vec<ConfigurationError>) {
    let r = super::twin::check_report(s, Ok(None));
    (r.report, r.errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::tests::any_duration;
    use crate::config::keys::*;
    use crate::events::ExtraDetails;
    use crate::events::operational::ConfigurationErrorType;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::HashMap;
    use std::io::Write;

    const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/schemas/");

    fn read_schema(name: &str) -> Value {
        let path = format!("{SCHEMAS}{name}");
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn error(
        name: &str,
        error_type: ConfigurationErrorType,
        used: &str,
        message: &str,
    ) -> ConfigurationError {
        ConfigurationError {
            configuration_name: name.to_string(),
            error_type,
            used_configuration: used.to_string(),
            message: message.to_string(),
            extra_details: ExtraDetails::new(),
        }
    }

    /// A valid configuration that differs from the defaults in every setting.
    fn custom() -> AgentConfig {
        AgentConfig {
            high_priority_message_frequency: secs(90),
            low_priority_message_frequency: secs(2 * 86_400),
            snapshot_frequency: Duration::from_millis(61_500),
            max_local_cache_size_in_bytes: 1_000_000,
            max_message_size_in_bytes: 65_536,
            event_priorities: [Priority::Off; 14],
            aggregations: [Aggregation {
                enabled: false,
                interval: secs(300),
            }; 3],
            hub_resource_id: None,
        }
    }

    fn ok(applied: &Applied) {
        assert_eq!(applied.errors, vec![]);
        assert!(!applied.rejected);
    }

    // ---- defaults and the published files ----

    #[test]
    fn defaults_equal_the_published_default_desired_object() {
        let file = read_schema("azureiotsecurity_default.json");
        let desired = &file["properties"]["desired"][OBJECT_NAME];
        assert!(desired.is_object());
        assert_eq!(&AgentConfig::default().to_twin_json(), desired);
        let applied = apply(&custom(), desired);
        ok(&applied);
        assert_eq!(applied.config, AgentConfig::default());
        assert_eq!(applied.ignored, Vec::<String>::new());
    }

    #[test]
    fn keys_and_defaults_equal_the_schema() {
        let schema = read_schema("azureiotsecurity_schema.json");
        let props = schema["properties"]["desired"]["properties"][OBJECT_NAME]["properties"]
            .as_object()
            .unwrap();
        // The schema does not forbid unknown keys: that is why they are ignored.
        assert_eq!(
            schema["properties"]["desired"]["properties"][OBJECT_NAME].get("additionalProperties"),
            None
        );
        let ours = AgentConfig::default().to_twin_json();
        let ours = ours.as_object().unwrap();
        let mut a: Vec<&String> = props.keys().collect();
        let mut b: Vec<&String> = ours.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(props.len(), 25);
        for (k, p) in props {
            assert_eq!(ours[k]["value"], p["default"], "{k}");
        }
    }

    /// The constants taken from elsewhere keep the values the schema's descriptions give.
    #[test]
    fn size_constants_are_the_schemas() {
        assert_eq!(
            (
                MIN_MESSAGE_SIZE,
                MAX_MESSAGE_SIZE,
                MIN_CACHE_SIZE,
                BILLING_CHUNK
            ),
            (8192, 262_144, 8192, 4096)
        );
    }

    /// Each key's kind is the schema's type for it (read from `shared/schemas` at test
    /// time), and an integer's range is the one its description gives.
    #[test]
    fn kinds_and_ranges_equal_the_schema() {
        let schema = read_schema("azureiotsecurity_schema.json");
        let props = &schema["properties"]["desired"]["properties"][OBJECT_NAME]["properties"];
        for s in &KEYS {
            let p = &props[s.name];
            let reference = p["$ref"].as_str().unwrap();
            let want = match s.kind {
                Kind::Duration => "TimeConfiguration",
                Kind::Integer { .. } => "IntegerConfiguration",
                Kind::Priority => "EventPriorityConfiguration",
                Kind::Bool => "BooleanConfiguration",
            };
            assert_eq!(
                reference,
                format!("azureiotsecurity_schema_definitions.json#/definitions/{want}"),
                "{}",
                s.name
            );
            if let Kind::Integer { min, max } = s.kind {
                let description = p["description"].as_str().unwrap();
                assert!(
                    description.contains(&format!("minimum {min}")),
                    "{description}"
                );
                if max != u64::MAX {
                    assert!(
                        description.contains(&format!("maximum {max}")),
                        "{description}"
                    );
                } else {
                    assert!(!description.contains("maximum"), "{description}");
                }
            }
        }
    }

    #[test]
    fn tables_are_consistent() {
        // Each key once, each event's settings named after the event.
        for (i, s) in KEYS.iter().enumerate() {
            assert_eq!(
                KEYS.iter().position(|o| o.key == s.key),
                Some(i),
                "{}",
                s.name
            );
            assert_eq!(
                KEYS.iter().position(|o| o.name == s.name),
                Some(i),
                "{}",
                s.name
            );
            assert_eq!(s.key.name(), s.name);
            assert_eq!(s.key.kind(), s.kind);
            let want = match s.key {
                Key::Priority(k) => format!("eventPriority{k}"),
                Key::AggregationEnabled(k) => format!("aggregationEnabled{k}"),
                Key::AggregationInterval(k) => format!("aggregationInterval{k}"),
                _ => s.name.to_string(),
            };
            assert_eq!(s.name, want);
            // The default is of the key's kind.
            let same_kind = matches!(
                (s.kind, s.default),
                (Kind::Duration, Setting::Duration(_))
                    | (Kind::Integer { .. }, Setting::Integer(_))
                    | (Kind::Priority, Setting::Priority(_))
                    | (Kind::Bool, Setting::Bool(_))
            );
            assert!(same_kind, "{}", s.name);
        }
        // Every event has a priority, in the order of EventKind::ALL; the aggregated ones
        // have both aggregation settings.
        let priorities: Vec<EventKind> = KEYS
            .iter()
            .filter_map(|s| match s.key {
                Key::Priority(k) => Some(k),
                _ => None,
            })
            .collect();
        assert_eq!(priorities, EventKind::ALL);
        for k in AGGREGATED_EVENTS {
            assert!(Key::AggregationEnabled(k).spec().is_some(), "{k}");
            assert!(Key::AggregationInterval(k).spec().is_some(), "{k}");
        }
        assert_eq!(Key::AggregationEnabled(EventKind::Login).spec(), None);
    }

    #[test]
    fn default_values() {
        let c = AgentConfig::default();
        assert_eq!(c.high_priority_message_frequency, secs(420));
        assert_eq!(c.low_priority_message_frequency, secs(18_000));
        assert_eq!(c.snapshot_frequency, secs(46_800));
        assert_eq!(c.max_local_cache_size_in_bytes, 2_560_000);
        assert_eq!(c.max_message_size_in_bytes, 204_800);
        for (name, want) in [
            ("ConnectedHardware", Priority::Low),
            ("ListeningPorts", Priority::High),
            ("ProcessCreate", Priority::Low),
            ("ProcessTerminate", Priority::Low),
            ("SystemInformation", Priority::Low),
            ("LocalUsers", Priority::High),
            ("Login", Priority::High),
            ("ConnectionCreate", Priority::Low),
            ("FirewallConfiguration", Priority::Low),
            ("OSBaseline", Priority::Low),
            ("Diagnostic", Priority::Low),
            ("ConfigurationError", Priority::Low),
            ("DroppedEventsStatistics", Priority::Low),
            ("MessageStatistics", Priority::Low),
        ] {
            let kind = EventKind::from_name(name).unwrap();
            assert_eq!(c.priority(kind), want, "{name}");
        }
        // A name the schema does not have is no kind (it was a Low priority when priorities
        // were looked up by name; an event of this module always has a kind now).
        assert_eq!(EventKind::from_name("SBoM"), None);
        assert_eq!(EventKind::from_name("login"), None);
        for name in AGGREGATED_EVENTS {
            assert_eq!(c.aggregation(name), Some(secs(3600)), "{name}");
        }
        assert_eq!(c.aggregation(EventKind::Login), None);
    }

    #[test]
    fn accessors() {
        let mut c = AgentConfig::default();
        c.set_priority(EventKind::Login, Priority::Off);
        assert_eq!(c.priority(EventKind::Login), Priority::Off);
        assert_eq!(c.event_priorities[6], Priority::Off);
        assert_eq!(c.priority(EventKind::LocalUsers), Priority::High);
        c.aggregations[1].enabled = false;
        c.aggregations[2].interval = secs(60);
        assert_eq!(c.aggregation(EventKind::ProcessCreate), Some(secs(3600)));
        assert_eq!(c.aggregation(EventKind::ConnectionCreate), None);
        assert_eq!(c.aggregation(EventKind::ProcessTerminate), Some(secs(60)));
    }

    #[test]
    fn priority_parse_and_display() {
        for (s, p) in [
            ("High", Priority::High),
            ("high", Priority::High),
            ("HIGH", Priority::High),
            ("Low", Priority::Low),
            ("lOw", Priority::Low),
            ("Off", Priority::Off),
            ("off", Priority::Off),
        ] {
            assert_eq!(s.parse::<Priority>(), Ok(p), "{s}");
        }
        for s in ["", "Medium", " High", "High ", "Of", "Offf"] {
            assert_eq!(s.parse::<Priority>(), Err(PriorityError(s.to_string())));
        }
        assert_eq!(
            "Medium".parse::<Priority>().unwrap_err().to_string(),
            "\"Medium\" is not a priority: expected \"High\", \"Low\" or \"Off\""
        );
        assert_eq!(Priority::High.to_string(), "High");
        assert_eq!(Priority::Low.to_string(), "Low");
        assert_eq!(Priority::Off.to_string(), "Off");
    }

    // ---- the twin form ----

    #[test]
    fn to_twin_json_of_a_custom_config() {
        let j = custom().to_twin_json();
        assert_eq!(
            j["highPriorityMessageFrequency"],
            json!({"value": "PT1M30S"})
        );
        assert_eq!(j["lowPriorityMessageFrequency"], json!({"value": "P2D"}));
        assert_eq!(j["snapshotFrequency"], json!({"value": "PT1M1.5S"}));
        assert_eq!(j["maxLocalCacheSizeInBytes"], json!({"value": 1_000_000}));
        assert_eq!(j["maxMessageSizeInBytes"], json!({"value": 65_536}));
        assert_eq!(j["eventPriorityLogin"], json!({"value": "Off"}));
        assert_eq!(
            j["aggregationEnabledConnectionCreate"],
            json!({"value": false})
        );
        assert_eq!(
            j["aggregationIntervalProcessTerminate"],
            json!({"value": "PT5M"})
        );
        assert_eq!(j.as_object().unwrap().len(), 25);
    }

    #[test]
    fn round_trip() {
        for c in [AgentConfig::default(), custom()] {
            let applied = apply(&AgentConfig::default(), &c.to_twin_json());
            ok(&applied);
            assert_eq!(applied.config, c);
        }
    }

    // ---- missing keys, nulls, unknown keys, case ----

    #[test]
    fn a_missing_key_means_its_default_not_the_previous_value() {
        let applied = apply(
            &custom(),
            &json!({"maxMessageSizeInBytes": {"value": 8192}}),
        );
        ok(&applied);
        let want = AgentConfig {
            max_message_size_in_bytes: 8192,
            ..AgentConfig::default()
        };
        assert_eq!(applied.config, want);
        // An empty object or none at all: all defaults.
        for update in [json!({}), Value::Null] {
            let applied = apply(&custom(), &update);
            ok(&applied);
            assert_eq!(applied.config, AgentConfig::default());
        }
    }

    #[test]
    fn null_and_empty_settings_mean_the_default() {
        for v in [Value::Null, json!({}), json!({"value": null})] {
            let applied = apply(
                &custom(),
                &json!({"snapshotFrequency": v, "eventPriorityLogin": v}),
            );
            ok(&applied);
            assert_eq!(applied.config, AgentConfig::default(), "{v}");
        }
    }

    #[test]
    fn a_setting_object_without_value_is_a_type_mismatch() {
        // Synthetic: a typo for "value" in the twin; the whole update is rejected.
        let applied = apply(
            &custom(),
            &json!({
                "eventPriorityLogin": {"valu": "Off"},
                "snapshotFrequency": {"value": "PT2H"},
            }),
        );
        assert_eq!(
            applied.errors,
            vec![error(
                "eventPriorityLogin",
                ConfigurationErrorType::TypeMismatch,
                "Off",
                "expected {\"value\": …} holding one of \"High\", \"Low\" or \"Off\", found an object without \"value\" (members: \"valu\")",
            )]
        );
        assert!(applied.rejected);
        assert_eq!(applied.config, custom());
    }

    #[test]
    fn an_agent_setting_without_value_in_the_settings_file_is_a_type_mismatch() {
        // Synthetic: `{ valu = "Off" }` (a typo) in the settings file.
        let text = "[agent]\neventPriorityLogin = { valu = \"Off\" }\n";
        let f = settings_file(text);
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        let applied = agent_config_from_settings(&s);
        assert_eq!(
            applied.errors,
            vec![error(
                "eventPriorityLogin",
                ConfigurationErrorType::TypeMismatch,
                "High",
                "expected {\"value\": …} holding one of \"High\", \"Low\" or \"Off\", found an object without \"value\" (members: \"valu\")",
            )],
        );
        assert!(applied.rejected);
        assert_eq!(applied.config.priority(EventKind::Login), Priority::High);
    }

    /// One rule for `{}` whatever the source: unset, the default, no error. (The settings
    /// file's `k = {}` was a TypeMismatch of its own before; the twin's `{}`, what a patch
    /// setting "value" to null leaves, always meant the default.)
    #[test]
    fn an_empty_agent_setting_means_the_default_in_the_settings_file_as_in_the_twin() {
        // Synthetic: `{}` for Login (default High) beside a real change.
        let f = settings_file(
            "[agent]\neventPriorityLogin = {}\neventPriorityListeningPorts = \"Low\"\n",
        );
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        let from_file = agent_config_from_settings(&s);
        let from_twin = apply(
            &custom(),
            &json!({"eventPriorityLogin": {}, "eventPriorityListeningPorts": {"value": "Low"}}),
        );
        for applied in [&from_file, &from_twin] {
            assert_eq!(applied.errors, Vec::new());
            assert!(!applied.rejected);
            assert_eq!(applied.config.priority(EventKind::Login), Priority::High);
            assert_eq!(
                applied.config.priority(EventKind::ListeningPorts),
                Priority::Low
            );
        }
        assert_eq!(from_file.config, from_twin.config);
    }

    #[test]
    fn frequencies_and_intervals_under_their_minimums_are_raised_and_reported() {
        let applied = apply(
            &AgentConfig::default(),
            &json!({
                "highPriorityMessageFrequency": {"value": "PT0S"},
                "lowPriorityMessageFrequency": {"value": "PT9.5S"},
                "snapshotFrequency": {"value": "PT0S"},
                "aggregationIntervalConnectionCreate": {"value": "PT1S"},
                "aggregationIntervalProcessTerminate": {"value": "PT10S"},
            }),
        );
        assert!(!applied.rejected);
        let mut want = AgentConfig {
            high_priority_message_frequency: secs(10),
            low_priority_message_frequency: secs(10),
            snapshot_frequency: secs(60),
            ..AgentConfig::default()
        };
        want.aggregations[1].interval = secs(10);
        want.aggregations[2].interval = secs(10);
        assert_eq!(applied.config, want);
        let not_optimal = |name: &str, given: &str, min: &str, what: &str| {
            error(
                name,
                ConfigurationErrorType::NotOptimal,
                min,
                &format!(
                    "{name} ({given}) is under the minimum {min}: {what} that often costs more than it tells; using {min} instead"
                ),
            )
        };
        assert_eq!(
            applied.errors,
            vec![
                not_optimal("highPriorityMessageFrequency", "PT0S", "PT10S", "a message"),
                not_optimal(
                    "lowPriorityMessageFrequency",
                    "PT9.5S",
                    "PT10S",
                    "a message"
                ),
                not_optimal("snapshotFrequency", "PT0S", "PT1M", "a statistics report"),
                not_optimal(
                    "aggregationIntervalConnectionCreate",
                    "PT1S",
                    "PT10S",
                    "a closed aggregation window"
                ),
            ]
        );
        // The minimums come before the conflict check: a low frequency raised to 10 s is what
        // the high one is compared with.
        let applied = apply(
            &AgentConfig::default(),
            &json!({
                "highPriorityMessageFrequency": {"value": "PT1M"},
                "lowPriorityMessageFrequency": {"value": "PT0S"},
            }),
        );
        assert_eq!(applied.config.high_priority_message_frequency, secs(10));
        assert_eq!(applied.config.low_priority_message_frequency, secs(10));
        assert_eq!(
            applied
                .errors
                .iter()
                .map(|e| (
                    e.configuration_name.as_str(),
                    e.error_type,
                    e.used_configuration.as_str()
                ))
                .collect::<Vec<_>>(),
            vec![
                (
                    "lowPriorityMessageFrequency",
                    ConfigurationErrorType::NotOptimal,
                    "PT10S"
                ),
                (
                    "highPriorityMessageFrequency",
                    ConfigurationErrorType::Conflict,
                    "PT10S"
                ),
            ]
        );
    }

    #[test]
    fn the_debug_setting_lifts_the_minimums_for_tests() {
        let f = settings_file(
            "[debug]\nshort_agent_intervals = true\n[agent]\nsnapshotFrequency = \"PT2S\"\nhighPriorityMessageFrequency = \"PT1S\"\n",
        );
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        let applied = agent_config_from_settings(&s);
        ok(&applied);
        assert_eq!(applied.config.snapshot_frequency, secs(2));
        assert_eq!(applied.config.high_priority_message_frequency, secs(1));
        // Without it the same file is raised to the minimums.
        let f = settings_file("[agent]\nsnapshotFrequency = \"PT2S\"\n");
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        let applied = agent_config_from_settings(&s);
        assert_eq!(applied.config.snapshot_frequency, secs(60));
        assert_eq!(applied.errors.len(), 1);
    }

    #[test]
    fn unknown_keys_are_ignored_and_listed() {
        let applied = apply(
            &custom(),
            &json!({
                "hubResourceId": {"value": "/subscriptions/x"},
                "baselineCustomChecksEnabled": {"value": true},
                "eventPriorityOperational": "garbage",
                "eventPriorityLogin": {"value": "Off", "comment": "extra members are ignored"},
            }),
        );
        ok(&applied);
        let mut want = AgentConfig::default();
        want.set_priority(EventKind::Login, Priority::Off);
        // hubResourceId is read (issue 12): the classic C# agent's key, not the schema's.
        want.hub_resource_id = Some("/subscriptions/x".to_string());
        assert_eq!(applied.config, want);
        assert_eq!(
            applied.ignored,
            vec!["baselineCustomChecksEnabled", "eventPriorityOperational"]
        );
    }

    #[test]
    fn key_names_and_priorities_ignore_case() {
        let applied = apply(
            &AgentConfig::default(),
            &json!({
                "HIGHPRIORITYMESSAGEFREQUENCY": {"value": "PT1M"},
                "eventprioritylogin": {"value": "off"},
                "EventPriorityProcessCreate": {"value": "HIGH"},
            }),
        );
        ok(&applied);
        assert_eq!(applied.config.high_priority_message_frequency, secs(60));
        assert_eq!(applied.config.priority(EventKind::Login), Priority::Off);
        assert_eq!(
            applied.config.priority(EventKind::ProcessCreate),
            Priority::High
        );
        assert_eq!(
            applied.config.to_twin_json()["eventPriorityProcessCreate"],
            json!({"value": "High"})
        );
    }

    #[test]
    fn a_key_given_twice_in_different_cases_is_rejected() {
        let applied = apply(
            &custom(),
            &json!({
                "snapshotFrequency": {"value": "PT1H"},
                "SnapshotFrequency": {"value": "PT1H"},
                "SNAPSHOTFREQUENCY": {"value": "PT2H"},
            }),
        );
        assert!(applied.rejected);
        assert_eq!(applied.config, custom());
        // serde_json's map is ordered by key: "SNAPSHOT…" < "Snapshot…" < "snapshot…".
        assert_eq!(
            applied.errors,
            vec![error(
                "snapshotFrequency",
                ConfigurationErrorType::TypeMismatch,
                "PT1M1.5S",
                "given more than once, as \"SNAPSHOTFREQUENCY\" and \"SnapshotFrequency\" (key names are matched ignoring case)",
            )]
        );
    }

    // ---- type errors ----

    fn rejected_one(key: &str, value: Value) -> ConfigurationError {
        let previous = custom();
        let applied = apply(
            &previous,
            &json!({ key: value, "eventPriorityLogin": {"value": "High"} }),
        );
        assert!(applied.rejected, "{key}: {value}");
        assert_eq!(applied.config, previous);
        assert_eq!(applied.errors.len(), 1, "{:?}", applied.errors);
        let e = applied.errors.into_iter().next().unwrap();
        assert_eq!(e.configuration_name, key);
        assert_eq!(e.error_type, ConfigurationErrorType::TypeMismatch);
        e
    }

    #[test]
    fn type_errors_reject_the_whole_update() {
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            (
                "highPriorityMessageFrequency",
                json!("PT7M"),
                "PT1M30S",
                "expected {\"value\": …} holding an ISO 8601 duration such as \"PT7M\", found the string \"PT7M\"",
            ),
            (
                "highPriorityMessageFrequency",
                json!({"value": 420}),
                "PT1M30S",
                "\"value\" must be an ISO 8601 duration such as \"PT7M\", found the number 420",
            ),
            (
                "lowPriorityMessageFrequency",
                json!({"value": "PT"}),
                "P2D",
                "\"value\" \"PT\" is not an ISO 8601 duration: no value after T (expected P[nY][nM][nW][nD][T[nH][nM][nS]], such as \"PT7M\")",
            ),
            (
                "aggregationIntervalConnectionCreate",
                json!({"value": "-PT1H"}),
                "PT5M",
                "\"value\" \"-PT1H\" is not an ISO 8601 duration: durations cannot be negative (expected P[nY][nM][nW][nD][T[nH][nM][nS]], such as \"PT7M\")",
            ),
            (
                "snapshotFrequency",
                json!({"value": "13 hours"}),
                "PT1M1.5S",
                "\"value\" \"13 hours\" is not an ISO 8601 duration: it does not start with P (expected P[nY][nM][nW][nD][T[nH][nM][nS]], such as \"PT7M\")",
            ),
            (
                "eventPriorityListeningPorts",
                json!({"value": "Medium"}),
                "Off",
                "\"value\" \"Medium\" is not a priority: expected \"High\", \"Low\" or \"Off\"",
            ),
            (
                "eventPriorityListeningPorts",
                json!({"value": 1}),
                "Off",
                "\"value\" must be one of \"High\", \"Low\" or \"Off\", found the number 1",
            ),
            (
                "eventPriorityDiagnostic",
                json!(["High"]),
                "Off",
                "expected {\"value\": …} holding one of \"High\", \"Low\" or \"Off\", found an array",
            ),
            (
                "aggregationEnabledProcessCreate",
                json!({"value": "true"}),
                "false",
                "\"value\" must be true or false, found the string \"true\"",
            ),
            (
                "aggregationEnabledProcessCreate",
                json!(true),
                "false",
                "expected {\"value\": …} holding true or false, found the boolean true",
            ),
            (
                "maxMessageSizeInBytes",
                json!({"value": "204800"}),
                "65536",
                "\"value\" must be an integer from 8192 to 262144, found the string \"204800\"",
            ),
            (
                "maxMessageSizeInBytes",
                json!({"value": 8191}),
                "65536",
                "\"value\" 8191 is out of range: expected an integer from 8192 to 262144",
            ),
            (
                "maxMessageSizeInBytes",
                json!({"value": 262_145}),
                "65536",
                "\"value\" 262145 is out of range: expected an integer from 8192 to 262144",
            ),
            (
                "maxMessageSizeInBytes",
                json!({"value": -8192}),
                "65536",
                "\"value\" -8192 is out of range: expected an integer from 8192 to 262144",
            ),
            (
                "maxMessageSizeInBytes",
                json!({"value": 8192.5}),
                "65536",
                "\"value\" 8192.5 is not an integer: expected an integer from 8192 to 262144",
            ),
            (
                "maxMessageSizeInBytes",
                json!({"value": 1e300}),
                "65536",
                "\"value\" 1e+300 is out of range: expected an integer from 8192 to 262144",
            ),
            (
                "maxLocalCacheSizeInBytes",
                json!({"value": 0}),
                "1000000",
                "\"value\" 0 is out of range: expected an integer of at least 8192",
            ),
            (
                "maxLocalCacheSizeInBytes",
                json!({"value": -1.0}),
                "1000000",
                "\"value\" -1.0 is out of range: expected an integer of at least 8192",
            ),
            (
                "maxLocalCacheSizeInBytes",
                json!({"value": {"value": 10_000}}),
                "1000000",
                "\"value\" must be an integer of at least 8192, found an object",
            ),
        ];
        for (key, value, used, message) in cases {
            let e = rejected_one(key, value.clone());
            assert_eq!(e.used_configuration, used, "{key}: {value}");
            assert_eq!(e.message, message, "{key}: {value}");
            assert!(e.extra_details.is_empty());
        }
    }

    #[test]
    fn a_long_bad_value_is_quoted_shortened() {
        let long = format!("P{}", "x".repeat(100));
        let e = rejected_one("snapshotFrequency", json!({ "value": long }));
        assert_eq!(
            e.message,
            format!(
                "\"value\" \"P{}\"… is not an ISO 8601 duration: unexpected 'x' at character 2 (expected P[nY][nM][nW][nD][T[nH][nM][nS]], such as \"PT7M\")",
                "x".repeat(63)
            )
        );
    }

    #[test]
    fn every_bad_key_gets_one_error_in_schema_order() {
        let previous = custom();
        let applied = apply(
            &previous,
            &json!({
                "aggregationEnabledProcessTerminate": {"value": 1},
                "highPriorityMessageFrequency": {"value": "PT1X"},
                "maxMessageSizeInBytes": {"value": 4096},
                "eventPriorityLogin": {"value": "Off"},
                "unknownKey": {"value": "whatever"},
            }),
        );
        assert!(applied.rejected);
        assert_eq!(applied.config, previous);
        assert_eq!(applied.ignored, vec!["unknownKey"]);
        assert_eq!(
            applied.errors,
            vec![
                error(
                    "highPriorityMessageFrequency",
                    ConfigurationErrorType::TypeMismatch,
                    "PT1M30S",
                    "\"value\" \"PT1X\" is not an ISO 8601 duration: unexpected 'X' at character 4 (expected P[nY][nM][nW][nD][T[nH][nM][nS]], such as \"PT7M\")",
                ),
                error(
                    "maxMessageSizeInBytes",
                    ConfigurationErrorType::TypeMismatch,
                    "65536",
                    "\"value\" 4096 is out of range: expected an integer from 8192 to 262144",
                ),
                error(
                    "aggregationEnabledProcessTerminate",
                    ConfigurationErrorType::TypeMismatch,
                    "false",
                    "\"value\" must be true or false, found the number 1",
                ),
            ]
        );
    }

    #[test]
    fn an_update_that_is_not_an_object_is_rejected() {
        let previous = custom();
        for (update, found) in [
            (json!("PT7M"), "the string \"PT7M\""),
            (json!([1, 2]), "an array"),
            (json!(3), "the number 3"),
        ] {
            let applied = apply(&previous, &update);
            assert!(applied.rejected);
            assert_eq!(applied.config, previous);
            assert_eq!(
                applied.errors,
                vec![error(
                    OBJECT_NAME,
                    ConfigurationErrorType::TypeMismatch,
                    &previous.to_twin_json().to_string(),
                    &format!(
                        "expected an object of settings such as {{\"highPriorityMessageFrequency\": {{\"value\": \"PT7M\"}}}}, found {found}"
                    ),
                )]
            );
        }
    }

    #[test]
    fn integer_bounds_and_integral_floats() {
        for (key, v, want) in [
            ("maxMessageSizeInBytes", json!(8192), 8192),
            ("maxMessageSizeInBytes", json!(262_144), 262_144),
            ("maxMessageSizeInBytes", json!(16_384.0), 16_384),
            ("maxLocalCacheSizeInBytes", json!(u64::MAX), u64::MAX),
            (
                "maxLocalCacheSizeInBytes",
                json!(1e19),
                10_000_000_000_000_000_000,
            ),
            ("maxLocalCacheSizeInBytes", json!(1e30), u64::MAX),
        ] {
            let applied = apply(&AgentConfig::default(), &json!({ key: {"value": v} }));
            ok(&applied);
            let got = if key == "maxMessageSizeInBytes" {
                applied.config.max_message_size_in_bytes
            } else {
                applied.config.max_local_cache_size_in_bytes
            };
            assert_eq!(got, want, "{key} {v}");
        }
    }

    // ---- checks between settings ----

    #[test]
    fn cache_smaller_than_message_takes_the_default_cache() {
        let applied = apply(
            &custom(),
            &json!({
                "maxLocalCacheSizeInBytes": {"value": 100_000},
                "maxMessageSizeInBytes": {"value": 262_144},
            }),
        );
        assert!(!applied.rejected);
        assert_eq!(
            applied.errors,
            vec![error(
                "maxLocalCacheSizeInBytes",
                ConfigurationErrorType::Conflict,
                "2560000",
                "maxLocalCacheSizeInBytes (100000) is smaller than maxMessageSizeInBytes (262144), so the cache could not hold one full message; using the default 2560000 instead",
            )]
        );
        assert_eq!(
            applied.config,
            AgentConfig {
                max_message_size_in_bytes: 262_144,
                ..AgentConfig::default()
            }
        );
        // Equal sizes are fine.
        let applied = apply(
            &custom(),
            &json!({
                "maxLocalCacheSizeInBytes": {"value": 8192},
                "maxMessageSizeInBytes": {"value": 8192},
            }),
        );
        ok(&applied);
        assert_eq!(applied.config.max_local_cache_size_in_bytes, 8192);
    }

    #[test]
    fn message_size_not_a_multiple_of_4096_is_kept() {
        let applied = apply(
            &custom(),
            &json!({"maxMessageSizeInBytes": {"value": 10_000}}),
        );
        assert!(!applied.rejected);
        assert_eq!(
            applied.errors,
            vec![error(
                "maxMessageSizeInBytes",
                ConfigurationErrorType::NotOptimal,
                "10000",
                "maxMessageSizeInBytes (10000) is not a multiple of 4096: messages are billed in 4 KB chunks, so the last chunk of a full message is paid for but not filled; the value is kept",
            )]
        );
        assert_eq!(applied.config.max_message_size_in_bytes, 10_000);
    }

    #[test]
    fn high_frequency_longer_than_low_takes_the_default() {
        let applied = apply(
            &custom(),
            &json!({"highPriorityMessageFrequency": {"value": "PT10H"}}),
        );
        assert!(!applied.rejected);
        assert_eq!(
            applied.errors,
            vec![error(
                "highPriorityMessageFrequency",
                ConfigurationErrorType::Conflict,
                "PT7M",
                "highPriorityMessageFrequency (PT10H) is longer than lowPriorityMessageFrequency (PT5H), so high-priority events would wait longer than low-priority ones; using the default PT7M instead",
            )]
        );
        assert_eq!(applied.config, AgentConfig::default());
    }

    #[test]
    fn high_frequency_is_capped_at_a_low_frequency_below_the_default() {
        let applied = apply(
            &custom(),
            &json!({"lowPriorityMessageFrequency": {"value": "PT1M"}}),
        );
        assert!(!applied.rejected);
        assert_eq!(
            applied.errors,
            vec![error(
                "highPriorityMessageFrequency",
                ConfigurationErrorType::Conflict,
                "PT1M",
                "highPriorityMessageFrequency (PT7M) is longer than lowPriorityMessageFrequency (PT1M), so high-priority events would wait longer than low-priority ones; using PT1M (lowPriorityMessageFrequency, as the default PT7M is longer too) instead",
            )]
        );
        assert_eq!(applied.config.high_priority_message_frequency, secs(60));
        assert_eq!(applied.config.low_priority_message_frequency, secs(60));
        // Equal frequencies are fine.
        let applied = apply(
            &custom(),
            &json!({
                "highPriorityMessageFrequency": {"value": "PT1M"},
                "lowPriorityMessageFrequency": {"value": "PT60S"},
            }),
        );
        ok(&applied);
    }

    #[test]
    fn all_three_checks_at_once() {
        let applied = apply(
            &AgentConfig::default(),
            &json!({
                "maxLocalCacheSizeInBytes": {"value": 9000},
                "maxMessageSizeInBytes": {"value": 9001},
                "highPriorityMessageFrequency": {"value": "P1D"},
            }),
        );
        assert!(!applied.rejected);
        let kinds: Vec<(&str, ConfigurationErrorType)> = applied
            .errors
            .iter()
            .map(|e| (e.configuration_name.as_str(), e.error_type))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("maxLocalCacheSizeInBytes", ConfigurationErrorType::Conflict),
                ("maxMessageSizeInBytes", ConfigurationErrorType::NotOptimal),
                (
                    "highPriorityMessageFrequency",
                    ConfigurationErrorType::Conflict
                ),
            ]
        );
        assert_eq!(
            applied.config,
            AgentConfig {
                max_message_size_in_bytes: 9001,
                ..AgentConfig::default()
            }
        );
    }

    #[test]
    fn configuration_errors_serialize_as_the_schema_wants() {
        let applied = apply(
            &custom(),
            &json!({"maxMessageSizeInBytes": {"value": 10_000}}),
        );
        assert_eq!(
            serde_json::to_value(&applied.errors).unwrap(),
            json!([{
                "ConfigurationName": "maxMessageSizeInBytes",
                "ErrorType": "NotOptimal",
                "UsedConfiguration": "10000",
                "Message": "maxMessageSizeInBytes (10000) is not a multiple of 4096: messages are billed in 4 KB chunks, so the last chunk of a full message is paid for but not filled; the value is kept",
            }])
        );
    }

    // ---- settings file and environment ----

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn settings_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn no_agent_settings_means_defaults() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(s.agent.is_empty());
        let applied = agent_config_from_settings(&s);
        ok(&applied);
        assert_eq!(applied.config, AgentConfig::default());
    }

    #[test]
    fn settings_file_plain_values_and_value_tables() {
        let f = settings_file(
            "[audit]\nidle_ms = 900\n\n[agent]\n\
             highPriorityMessageFrequency = \"PT1M\"\n\
             lowPriorityMessageFrequency = { value = \"PT2H\" }\n\
             maxMessageSizeInBytes = 65536\n\
             maxLocalCacheSizeInBytes = { value = 1000000 }\n\
             eventPriorityLogin = \"off\"\n\
             aggregationEnabledProcessCreate = false\n\
             aggregationIntervalConnectionCreate = { value = \"PT5M\" }\n",
        );
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        assert_eq!(s.audit.idle_ms, 900);
        let applied = agent_config_from_settings(&s);
        ok(&applied);
        let mut want = AgentConfig {
            high_priority_message_frequency: secs(60),
            low_priority_message_frequency: secs(7200),
            max_message_size_in_bytes: 65_536,
            max_local_cache_size_in_bytes: 1_000_000,
            ..AgentConfig::default()
        };
        want.set_priority(EventKind::Login, Priority::Off);
        want.aggregations[0].enabled = false;
        want.aggregations[1].interval = secs(300);
        assert_eq!(applied.config, want);
    }

    #[test]
    fn environment_keys_are_lowercased_and_matched_ignoring_case() {
        let s = Settings::load_from(
            None,
            env(&[
                (
                    "AZUREIOTSECURITY_AGENT__HIGHPRIORITYMESSAGEFREQUENCY",
                    "PT2M",
                ),
                ("AZUREIOTSECURITY_AGENT__MAXMESSAGESIZEINBYTES", "131072"),
                (
                    "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDCONNECTIONCREATE",
                    "FALSE",
                ),
                ("AZUREIOTSECURITY_AGENT__EVENTPRIORITYPROCESSCREATE", "High"),
                ("AZUREIOTSECURITY_AGENT__SNAPSHOTFREQUENCY__VALUE", "P1D"),
            ]),
        )
        .unwrap();
        // The config crate lowercases the names and parses numbers and booleans.
        assert_eq!(s.agent["highprioritymessagefrequency"], json!("PT2M"));
        assert_eq!(s.agent["maxmessagesizeinbytes"], json!(131_072));
        assert_eq!(s.agent["aggregationenabledconnectioncreate"], json!(false));
        assert_eq!(s.agent["snapshotfrequency"], json!({"value": "P1D"}));
        let applied = agent_config_from_settings(&s);
        ok(&applied);
        let mut want = AgentConfig {
            high_priority_message_frequency: secs(120),
            max_message_size_in_bytes: 131_072,
            snapshot_frequency: secs(86_400),
            ..AgentConfig::default()
        };
        want.aggregations[1].enabled = false;
        want.set_priority(EventKind::ProcessCreate, Priority::High);
        assert_eq!(applied.config, want);
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = settings_file(
            "[agent]\nhighPriorityMessageFrequency = { value = \"PT1M\" }\nsnapshotFrequency = \"PT3H\"\n",
        );
        let s = Settings::load_from(
            Some(f.path()),
            env(&[(
                "AZUREIOTSECURITY_AGENT__HIGHPRIORITYMESSAGEFREQUENCY",
                "PT3M",
            )]),
        )
        .unwrap();
        // Both spellings arrive; the environment's (lowercase) one wins.
        assert_eq!(s.agent.len(), 3);
        let applied = agent_config_from_settings(&s);
        ok(&applied);
        assert_eq!(applied.config.high_priority_message_frequency, secs(180));
        assert_eq!(applied.config.snapshot_frequency, secs(3 * 3600));
    }

    #[test]
    fn bad_settings_values_leave_the_defaults_and_say_why() {
        let f = settings_file(
            "[agent]\nmaxMessageSizeInBytes = \"big\"\nsnapshotFrequency = \"PT1H\"\n",
        );
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        let applied = agent_config_from_settings(&s);
        assert!(applied.rejected);
        assert_eq!(applied.config, AgentConfig::default());
        assert_eq!(
            applied.errors,
            vec![error(
                "maxMessageSizeInBytes",
                ConfigurationErrorType::TypeMismatch,
                "204800",
                "\"value\" must be an integer from 8192 to 262144, found the string \"big\"",
            )]
        );
    }

    #[test]
    fn unknown_settings_keys_are_errors_but_the_rest_applies() {
        let f = settings_file(
            "[agent]\nhighPriorityFrequency = \"PT1M\"\nsnapshotFrequency = \"PT1H\"\n",
        );
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        let applied = agent_config_from_settings(&s);
        assert!(!applied.rejected);
        assert_eq!(applied.config.snapshot_frequency, secs(3600));
        assert_eq!(applied.ignored, vec!["highPriorityFrequency"]);
        assert_eq!(
            applied.errors,
            vec![error(
                "highPriorityFrequency",
                ConfigurationErrorType::TypeMismatch,
                "",
                "unknown setting \"highPriorityFrequency\" in [agent] (AZUREIOTSECURITY_AGENT__<KEY>), ignored: the settings are the keys of ms_iotn:urn_azureiot_Security_SecurityAgentConfiguration, such as highPriorityMessageFrequency",
            )]
        );
    }

    #[test]
    fn other_sections_still_deny_unknown_keys() {
        let f = settings_file("[audit]\nno_such_key = 1\n[agent]\nsnapshotFrequency = \"PT1H\"\n");
        let e = Settings::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(e.to_string().contains("no_such_key"), "{e}");
        let f = settings_file("[agents]\nsnapshotFrequency = \"PT1H\"\n");
        let e = Settings::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(e.to_string().contains("agents"), "{e}");
    }

    #[test]
    fn check_report_shows_the_effective_settings() {
        let f = settings_file("[agent]\nmaxMessageSizeInBytes = 10000\n");
        let s = Settings::load_from(Some(f.path()), env(&[])).unwrap();
        let (report, errors) = check_report(&s);
        let want_agent = AgentConfig {
            max_message_size_in_bytes: 10_000,
            ..AgentConfig::default()
        }
        .to_twin_json();
        assert_eq!(report["agent"], want_agent);
        assert_eq!(report["audit"], serde_json::to_value(&s.audit).unwrap());
        assert_eq!(report["events"], serde_json::to_value(&s.events).unwrap());
        assert_eq!(report["debug"], serde_json::to_value(&s.debug).unwrap());
        assert_eq!(report["module"], serde_json::to_value(&s.module).unwrap());
        assert_eq!(report["edgehub"], serde_json::to_value(&s.edgehub).unwrap());
        assert_eq!(report["metrics"], serde_json::to_value(&s.metrics).unwrap());
        assert_eq!(report["host"], json!({"root": "/"}));
        assert_eq!(
            report["snapshot"],
            json!({"baseline_include_passed": false})
        );
        // The eight sections, the agent configuration, its sources and the twin layer.
        assert_eq!(report.as_object().unwrap().len(), 11);
        assert_eq!(
            report["agent_sources"]["maxMessageSizeInBytes"],
            json!("file")
        );
        assert_eq!(
            report["agent_sources"]["snapshotFrequency"],
            json!("default")
        );
        assert_eq!(report["twin"]["state"], json!("none"));
        assert_eq!(report["twin"]["version"], Value::Null);
        assert_eq!(
            report["audit"]["socket_path"],
            json!("/run/audit/audispd_events")
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].error_type, ConfigurationErrorType::NotOptimal);
    }

    // ---- properties ----

    /// A duration at or above `min` (the valid range of a frequency or interval).
    fn at_least(min: Duration) -> impl Strategy<Value = Duration> {
        any_duration().prop_map(move |d| d.max(min))
    }

    fn any_priority() -> impl Strategy<Value = Priority> {
        prop_oneof![
            Just(Priority::High),
            Just(Priority::Low),
            Just(Priority::Off)
        ]
    }

    proptest! {
        #[test]
        fn apply_never_panics(v in proptest::collection::btree_map(
            prop_oneof![
                Just("maxMessageSizeInBytes".to_string()),
                Just("snapshotFrequency".to_string()),
                Just("eventPriorityLogin".to_string()),
                Just("aggregationEnabledProcessCreate".to_string()),
                "[a-zA-Z]{0,8}",
            ],
            prop_oneof![
                any::<i64>().prop_map(|n| json!({"value": n})),
                any::<f64>().prop_map(|f| json!({"value": f})),
                any::<bool>().prop_map(|b| json!({"value": b})),
                ".*".prop_map(|s| json!({"value": s})),
                "P[0-9YMWDTHS.]{0,10}".prop_map(|s| json!({"value": s})),
                ".*".prop_map(Value::String),
            ],
            0..6,
        )) {
            let update: Map<String, Value> = v.into_iter().collect();
            let applied = apply(&AgentConfig::default(), &Value::Object(update));
            prop_assert_eq!(applied.rejected, applied.errors.iter().any(|e| e.error_type == ConfigurationErrorType::TypeMismatch));
            if applied.rejected {
                prop_assert_eq!(applied.config, AgentConfig::default());
            }
        }

        #[test]
        fn valid_configs_round_trip_through_the_twin_form(
            high in at_least(MIN_MESSAGE_FREQUENCY),
            extra in any_duration(),
            snapshot in at_least(MIN_SNAPSHOT_FREQUENCY),
            message in MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE,
            cache_extra in 0u64..1 << 40,
            priorities in proptest::array::uniform14(any_priority()),
            enabled in proptest::array::uniform3(any::<bool>()),
            intervals in proptest::array::uniform3(at_least(MIN_AGGREGATION_INTERVAL)),
        ) {
            let c = AgentConfig {
                high_priority_message_frequency: high,
                low_priority_message_frequency: high.saturating_add(extra),
                snapshot_frequency: snapshot,
                max_local_cache_size_in_bytes: message + cache_extra,
                max_message_size_in_bytes: message,
                event_priorities: priorities,
                aggregations: [0, 1, 2].map(|i| Aggregation { enabled: enabled[i], interval: intervals[i] }),
                hub_resource_id: None,
            };
            let applied = apply(&custom(), &c.to_twin_json());
            prop_assert!(!applied.rejected);
            prop_assert!(applied.errors.iter().all(|e| e.error_type == ConfigurationErrorType::NotOptimal));
            prop_assert_eq!(applied.errors.len(), usize::from(message % 4096 != 0));
            prop_assert_eq!(applied.config, c);
        }
    }
}
