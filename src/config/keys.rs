//! The table of agent settings (`KEYS`: each key's twin name, kind of value and default)
//! and the parsing of one setting's JSON, which the layers, the checks, the defaults and the
//! reported form all read. Private to [`super`]'s configuration modules.

use std::time::Duration;

use serde_json::Value;

use super::agent::{
    AGGREGATED_EVENTS, AgentConfig, Aggregation, DEFAULT_AGGREGATION, DEFAULT_CACHE_SIZE,
    DEFAULT_HIGH_FREQUENCY, DEFAULT_LOW_FREQUENCY, DEFAULT_MESSAGE_SIZE,
    DEFAULT_SNAPSHOT_FREQUENCY, MAX_MESSAGE_SIZE, MIN_CACHE_SIZE, MIN_MESSAGE_SIZE, Priority,
};
use super::duration::{format_duration, parse_duration};
use crate::events::operational::{ConfigurationError, ConfigurationErrorType};
use crate::events::{EventKind, ExtraDetails};

/// One setting of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    HighFrequency,
    LowFrequency,
    SnapshotFrequency,
    CacheSize,
    MessageSize,
    Priority(EventKind),
    /// One of [`AGGREGATED_EVENTS`].
    AggregationEnabled(EventKind),
    AggregationInterval(EventKind),
}

/// One row of [`KEYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeySpec {
    pub(super) key: Key,
    /// The name in the twin schema.
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    pub(super) default: Setting,
}

pub(super) const fn spec(key: Key, name: &'static str, kind: Kind, default: Setting) -> KeySpec {
    KeySpec {
        key,
        name,
        kind,
        default,
    }
}

pub(super) const fn priority(event: EventKind, name: &'static str, default: Priority) -> KeySpec {
    spec(
        Key::Priority(event),
        name,
        Kind::Priority,
        Setting::Priority(default),
    )
}

pub(super) const DURATION: Kind = Kind::Duration;

/// Every setting, in the schema's order: its name in the twin schema, what its value is
/// (with the range) and its default (`azureiotsecurity_default.json`; a test compares this
/// table with the schema files). Parsing, the checks, [`AgentConfig::default`] and the
/// reported form all read this one table.
pub(super) const KEYS: [KeySpec; 25] = [
    spec(
        Key::HighFrequency,
        "highPriorityMessageFrequency",
        DURATION,
        Setting::Duration(DEFAULT_HIGH_FREQUENCY),
    ),
    spec(
        Key::LowFrequency,
        "lowPriorityMessageFrequency",
        DURATION,
        Setting::Duration(DEFAULT_LOW_FREQUENCY),
    ),
    spec(
        Key::SnapshotFrequency,
        "snapshotFrequency",
        DURATION,
        Setting::Duration(DEFAULT_SNAPSHOT_FREQUENCY),
    ),
    spec(
        Key::CacheSize,
        "maxLocalCacheSizeInBytes",
        Kind::Integer {
            min: MIN_CACHE_SIZE,
            max: u64::MAX,
        },
        Setting::Integer(DEFAULT_CACHE_SIZE),
    ),
    spec(
        Key::MessageSize,
        "maxMessageSizeInBytes",
        Kind::Integer {
            min: MIN_MESSAGE_SIZE,
            max: MAX_MESSAGE_SIZE,
        },
        Setting::Integer(DEFAULT_MESSAGE_SIZE),
    ),
    priority(
        EventKind::ConnectedHardware,
        "eventPriorityConnectedHardware",
        Priority::Low,
    ),
    priority(
        EventKind::ListeningPorts,
        "eventPriorityListeningPorts",
        Priority::High,
    ),
    priority(
        EventKind::ProcessCreate,
        "eventPriorityProcessCreate",
        Priority::Low,
    ),
    priority(
        EventKind::ProcessTerminate,
        "eventPriorityProcessTerminate",
        Priority::Low,
    ),
    priority(
        EventKind::SystemInformation,
        "eventPrioritySystemInformation",
        Priority::Low,
    ),
    priority(
        EventKind::LocalUsers,
        "eventPriorityLocalUsers",
        Priority::High,
    ),
    priority(EventKind::Login, "eventPriorityLogin", Priority::High),
    priority(
        EventKind::ConnectionCreate,
        "eventPriorityConnectionCreate",
        Priority::Low,
    ),
    priority(
        EventKind::FirewallConfiguration,
        "eventPriorityFirewallConfiguration",
        Priority::Low,
    ),
    priority(
        EventKind::OSBaseline,
        "eventPriorityOSBaseline",
        Priority::Low,
    ),
    // Low as azureiotsecurity_default.json has it, although the documentation's table says Off.
    priority(
        EventKind::Diagnostic,
        "eventPriorityDiagnostic",
        Priority::Low,
    ),
    priority(
        EventKind::ConfigurationError,
        "eventPriorityConfigurationError",
        Priority::Low,
    ),
    priority(
        EventKind::DroppedEventsStatistics,
        "eventPriorityDroppedEventsStatistics",
        Priority::Low,
    ),
    priority(
        EventKind::MessageStatistics,
        "eventPriorityMessageStatistics",
        Priority::Low,
    ),
    spec(
        Key::AggregationEnabled(EventKind::ProcessCreate),
        "aggregationEnabledProcessCreate",
        Kind::Bool,
        Setting::Bool(DEFAULT_AGGREGATION.enabled),
    ),
    spec(
        Key::AggregationInterval(EventKind::ProcessCreate),
        "aggregationIntervalProcessCreate",
        DURATION,
        Setting::Duration(DEFAULT_AGGREGATION.interval),
    ),
    spec(
        Key::AggregationEnabled(EventKind::ConnectionCreate),
        "aggregationEnabledConnectionCreate",
        Kind::Bool,
        Setting::Bool(DEFAULT_AGGREGATION.enabled),
    ),
    spec(
        Key::AggregationInterval(EventKind::ConnectionCreate),
        "aggregationIntervalConnectionCreate",
        DURATION,
        Setting::Duration(DEFAULT_AGGREGATION.interval),
    ),
    spec(
        Key::AggregationEnabled(EventKind::ProcessTerminate),
        "aggregationEnabledProcessTerminate",
        Kind::Bool,
        Setting::Bool(DEFAULT_AGGREGATION.enabled),
    ),
    spec(
        Key::AggregationInterval(EventKind::ProcessTerminate),
        "aggregationIntervalProcessTerminate",
        DURATION,
        Setting::Duration(DEFAULT_AGGREGATION.interval),
    ),
];

/// What a setting's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Duration,
    Integer { min: u64, max: u64 },
    Priority,
    Bool,
}

/// A setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Setting {
    Duration(Duration),
    Integer(u64),
    Priority(Priority),
    Bool(bool),
}

impl Key {
    /// This key's row of [`KEYS`].
    pub(super) fn spec(self) -> Option<&'static KeySpec> {
        KEYS.iter().find(|s| s.key == self)
    }

    pub(super) fn name(self) -> &'static str {
        self.spec().map_or("", |s| s.name)
    }

    pub(super) fn kind(self) -> Kind {
        self.spec().map_or(Kind::Bool, |s| s.kind)
    }

    pub(super) fn get(self, c: &AgentConfig) -> Setting {
        match self {
            Key::HighFrequency => Setting::Duration(c.high_priority_message_frequency),
            Key::LowFrequency => Setting::Duration(c.low_priority_message_frequency),
            Key::SnapshotFrequency => Setting::Duration(c.snapshot_frequency),
            Key::CacheSize => Setting::Integer(c.max_local_cache_size_in_bytes),
            Key::MessageSize => Setting::Integer(c.max_message_size_in_bytes),
            Key::Priority(k) => Setting::Priority(c.priority(k)),
            Key::AggregationEnabled(k) => Setting::Bool(
                aggregation_of(&c.aggregations, k)
                    .map_or(DEFAULT_AGGREGATION.enabled, |a| a.enabled),
            ),
            Key::AggregationInterval(k) => Setting::Duration(
                aggregation_of(&c.aggregations, k)
                    .map_or(DEFAULT_AGGREGATION.interval, |a| a.interval),
            ),
        }
    }

    /// Stores `v`; a value of another kind than the key's is ignored ([`parse_entry`] only
    /// makes the key's kind).
    pub(super) fn set(self, c: &mut AgentConfig, v: Setting) {
        match (self, v) {
            (Key::HighFrequency, Setting::Duration(d)) => c.high_priority_message_frequency = d,
            (Key::LowFrequency, Setting::Duration(d)) => c.low_priority_message_frequency = d,
            (Key::SnapshotFrequency, Setting::Duration(d)) => c.snapshot_frequency = d,
            (Key::CacheSize, Setting::Integer(n)) => c.max_local_cache_size_in_bytes = n,
            (Key::MessageSize, Setting::Integer(n)) => c.max_message_size_in_bytes = n,
            (Key::Priority(k), Setting::Priority(p)) => c.set_priority(k, p),
            (Key::AggregationEnabled(k), Setting::Bool(b)) => {
                if let Some(a) = aggregation_of_mut(&mut c.aggregations, k) {
                    a.enabled = b;
                }
            }
            (Key::AggregationInterval(k), Setting::Duration(d)) => {
                if let Some(a) = aggregation_of_mut(&mut c.aggregations, k) {
                    a.interval = d;
                }
            }
            _ => {}
        }
    }
}

/// The aggregation of `kind` in an [`AgentConfig::aggregations`] array.
pub(super) fn aggregation_of(
    aggregations: &[Aggregation],
    kind: EventKind,
) -> Option<&Aggregation> {
    let i = AGGREGATED_EVENTS.iter().position(|a| *a == kind)?;
    aggregations.get(i)
}

pub(super) fn aggregation_of_mut(
    aggregations: &mut [Aggregation],
    kind: EventKind,
) -> Option<&mut Aggregation> {
    let i = AGGREGATED_EVENTS.iter().position(|a| *a == kind)?;
    aggregations.get_mut(i)
}

impl Setting {
    pub(super) fn to_json(self) -> Value {
        match self {
            Setting::Duration(d) => Value::String(format_duration(d)),
            Setting::Integer(n) => Value::from(n),
            Setting::Priority(p) => Value::String(p.as_str().to_string()),
            Setting::Bool(b) => Value::Bool(b),
        }
    }

    /// As `UsedConfiguration` shows it.
    pub(super) fn text(self) -> String {
        match self {
            Setting::Duration(d) => format_duration(d),
            Setting::Integer(n) => n.to_string(),
            Setting::Priority(p) => p.as_str().to_string(),
            Setting::Bool(b) => b.to_string(),
        }
    }
}

impl Kind {
    /// What a value of this kind looks like, for messages.
    pub(super) fn expected(self) -> String {
        match self {
            Kind::Duration => "an ISO 8601 duration such as \"PT7M\"".to_string(),
            Kind::Integer { min, max } if max == u64::MAX => {
                format!("an integer of at least {min}")
            }
            Kind::Integer { min, max } => format!("an integer from {min} to {max}"),
            Kind::Priority => "one of \"High\", \"Low\" or \"Off\"".to_string(),
            Kind::Bool => "true or false".to_string(),
        }
    }
}

/// The `{"value": …}` wrapping every setting of the twin object has, wherever the update
/// comes from (twin, settings file, kept twin): `Ok(None)` for an unset key (`null`,
/// `{"value": null}` or `{}`), `Ok(Some(inner))` for `{"value": inner}`, and an error that
/// names `expected` for anything else. One rule for the schema's keys and for
/// `hubResourceId`.
pub(super) fn unwrap_value<'v>(
    value: &'v Value,
    expected: &str,
) -> Result<Option<&'v Value>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Object(m) => match m.get("value") {
            Some(Value::Null) => Ok(None),
            // The one rule for `{}`, wherever the update comes from: unset, like
            // `{"value": null}`. It is what a twin patch `{"k": {"value": null}}` leaves
            // behind; the settings file's `k = {}` (no patch makes that) is read the same way
            // rather than by a rule of its own.
            None if m.is_empty() => Ok(None),
            None => {
                // Members but no "value" (`{"valu": "Off"}`, a typo): not an unset key.
                let members: Vec<String> = m.keys().take(4).map(|k| quote(k)).collect();
                Err(format!(
                    "expected {{\"value\": …}} holding {expected}, found an object without \"value\" (members: {})",
                    members.join(", ")
                ))
            }
            Some(v) => Ok(Some(v)),
        },
        other => Err(format!(
            "expected {{\"value\": …}} holding {expected}, found {}",
            describe(other)
        )),
    }
}

/// One setting's JSON: `Ok(None)` when it is unset (takes the default), `Err(why)` on a
/// type error.
pub(super) fn parse_entry(key: Key, value: &Value) -> Result<Option<Setting>, String> {
    let kind = key.kind();
    let Some(inner) = unwrap_value(value, &kind.expected())? else {
        return Ok(None);
    };
    let wrong_type = || {
        format!(
            "\"value\" must be {}, found {}",
            kind.expected(),
            describe(inner)
        )
    };
    match kind {
        Kind::Duration => match inner {
            Value::String(s) => parse_duration(s).map(|d| Some(Setting::Duration(d))).map_err(|e| {
                format!(
                    "\"value\" {} is not an ISO 8601 duration: {e} (expected P[nY][nM][nW][nD][T[nH][nM][nS]], such as \"PT7M\")",
                    quote(s)
                )
            }),
            _ => Err(wrong_type()),
        },
        Kind::Integer { min, max } => {
            let Value::Number(n) = inner else {
                return Err(wrong_type());
            };
            let number = if let Some(u) = n.as_u64() {
                Some(u)
            } else if n.is_i64() {
                None // negative
            } else {
                match n.as_f64() {
                    // `8192.0` is an integer: JSON Schema (draft 6 and later) counts a number
                    // with no fraction as one.
                    Some(f) if f.is_finite() && f.fract() == 0.0 => {
                        // Saturating cast; a negative one is out of range.
                        (f >= 0.0).then_some(f as u64)
                    }
                    _ => {
                        return Err(format!(
                            "\"value\" {n} is not an integer: expected {}",
                            kind.expected()
                        ));
                    }
                }
            };
            match number {
                Some(u) if (min..=max).contains(&u) => Ok(Some(Setting::Integer(u))),
                _ => Err(format!(
                    "\"value\" {n} is out of range: expected {}",
                    kind.expected()
                )),
            }
        }
        Kind::Priority => match inner {
            Value::String(s) => s
                .parse::<Priority>()
                .map(|p| Some(Setting::Priority(p)))
                .map_err(|e| format!("\"value\" {e}")),
            _ => Err(wrong_type()),
        },
        Kind::Bool => match inner {
            Value::Bool(b) => Ok(Some(Setting::Bool(*b))),
            _ => Err(wrong_type()),
        },
    }
}

pub(super) fn type_mismatch(
    key: Key,
    previous: &AgentConfig,
    message: String,
) -> ConfigurationError {
    configuration_error(
        key.name(),
        ConfigurationErrorType::TypeMismatch,
        key.get(previous).text(),
        message,
    )
}

pub(super) fn configuration_error(
    name: &str,
    error_type: ConfigurationErrorType,
    used_configuration: String,
    message: String,
) -> ConfigurationError {
    ConfigurationError {
        configuration_name: name.to_string(),
        error_type,
        used_configuration,
        message,
        extra_details: ExtraDetails::new(),
    }
}

/// Longest piece of a given string quoted in a message (twin values can be long).
pub(super) const QUOTE_MAX_CHARS: usize = 64;

/// A string as JSON text, cut to [`QUOTE_MAX_CHARS`] characters (then ending in `…`).
pub(super) fn quote(s: &str) -> String {
    let cut: String = s.chars().take(QUOTE_MAX_CHARS).collect();
    let mut q = serde_json::to_string(&cut).unwrap_or_else(|_| String::from("\"?\""));
    if cut.len() < s.len() {
        q.push('…');
    }
    q
}

/// A JSON value described for a message.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quote(s)),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}
