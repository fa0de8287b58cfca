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

use super::duration::{format_duration, parse_duration};
use super::settings::Settings;
use crate::events::operational::{ConfigurationError, ConfigurationErrorType};
use crate::events::{EventKind, ExtraDetails};
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

const DEFAULT_HIGH_FREQUENCY: Duration = Duration::from_secs(7 * 60);
const DEFAULT_LOW_FREQUENCY: Duration = Duration::from_secs(5 * 3600);
const DEFAULT_SNAPSHOT_FREQUENCY: Duration = Duration::from_secs(13 * 3600);
const DEFAULT_CACHE_SIZE: u64 = 2_560_000;
const DEFAULT_MESSAGE_SIZE: u64 = 204_800;
const DEFAULT_AGGREGATION: Aggregation = Aggregation {
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

/// The twin key of the IoT Hub's resource id, read into [`AgentConfig::hub_resource_id`]:
/// `{"value": "/subscriptions/…/IotHubs/<hub>"}`, as the classic C# agent reads it
/// (RemoteConfiguration's `hubResourceId`). Not a key of the published schema (which allows
/// unknown keys), so it has no default and is reported only when set.
pub const HUB_RESOURCE_ID: &str = "hubResourceId";

/// The longest `hubResourceId` taken, in bytes. An IoT hub's resource id is about 200 bytes
/// (`/subscriptions/<guid>/resourceGroups/<≤ 90>/providers/Microsoft.Devices/IotHubs/<≤ 50>`);
/// it rides on every message (counted in the size cap) and in the reported properties,
/// where a value may hold 4096 bytes at most.
pub const MAX_HUB_RESOURCE_ID: usize = 1024;

/// Where a value in force came from. The layers, lowest first: the published defaults, the
/// settings file, the environment, the module twin; try-out (a local debug switch) sits
/// above the twin for the values it sets; `Check` marks a value a check between settings
/// replaced (its ConfigurationError says why). `Base` is the configuration a
/// [`crate::config::twin::DesiredState`] was made with when its layers are not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Default,
    Base,
    File,
    Env,
    Twin,
    Tryout,
    Check,
}

impl Source {
    /// As `check-config` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Base => "base",
            Source::File => "file",
            Source::Env => "env",
            Source::Twin => "twin",
            Source::Tryout => "tryout",
            Source::Check => "check",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One layer of agent settings, parsed: the values it gives. A key it does not give (absent,
/// `null`, `{}` or `{"value": null}`) is left to the layers below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    source: Source,
    values: [Option<Setting>; KEYS.len()],
    /// `Some(None)`: given as `""` (no id, whatever the layers below say).
    hub_resource_id: Option<Option<String>>,
}

/// What [`Layer::parse`] made of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLayer {
    /// The values given; empty when `errors` is not.
    pub layer: Layer,
    /// Type errors, one per bad key in key order: the whole update is refused.
    pub errors: Vec<ConfigurationError>,
    /// Keys that are not settings, as given (ignored; worth a log line).
    pub ignored: Vec<String>,
}

impl Layer {
    /// A layer that gives nothing.
    pub fn empty(source: Source) -> Layer {
        Layer {
            source,
            values: [None; KEYS.len()],
            hub_resource_id: None,
        }
    }

    /// A layer that gives every value of `c`.
    pub fn of_config(source: Source, c: &AgentConfig) -> Layer {
        Layer {
            source,
            values: KEYS.map(|s| Some(s.key.get(c))),
            hub_resource_id: Some(c.hub_resource_id.clone()),
        }
    }

    /// A layer that gives the message frequencies, the snapshot frequency and every
    /// aggregation window (try-out's).
    pub fn frequencies(
        source: Source,
        high: Duration,
        low: Duration,
        snapshot: Duration,
        aggregation_interval: Duration,
    ) -> Layer {
        let mut layer = Layer::empty(source);
        for (spec, value) in KEYS.iter().zip(&mut layer.values) {
            *value = match spec.key {
                Key::HighFrequency => Some(Setting::Duration(high)),
                Key::LowFrequency => Some(Setting::Duration(low)),
                Key::SnapshotFrequency => Some(Setting::Duration(snapshot)),
                Key::AggregationInterval(_) => Some(Setting::Duration(aggregation_interval)),
                _ => None,
            };
        }
        layer
    }

    /// Where this layer's values come from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// True when it gives no value.
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none) && self.hub_resource_id.is_none()
    }

    /// Parses an update, the content of the twin object [`OBJECT_NAME`] (`{"key": {"value":
    /// …}, …}`; `null` gives nothing). A type error (not `{"value": …}`, a wrong JSON type, a
    /// bad duration or priority, an integer outside the schema descriptions' range, a key
    /// given twice in two cases, an update that is not an object) refuses the whole update:
    /// one TypeMismatch per bad key, in key order, naming the value of `in_force`.
    pub fn parse(source: Source, update: &Value, in_force: &AgentConfig) -> ParsedLayer {
        let mut layer = Layer::empty(source);
        let empty = Map::new();
        let object = match update {
            Value::Null => &empty,
            Value::Object(m) => m,
            other => {
                return ParsedLayer {
                    layer,
                    errors: vec![configuration_error(
                        OBJECT_NAME,
                        ConfigurationErrorType::TypeMismatch,
                        in_force.to_twin_json().to_string(),
                        format!(
                            "expected an object of settings such as {{\"highPriorityMessageFrequency\": {{\"value\": \"PT7M\"}}}}, found {}",
                            describe(other)
                        ),
                    )],
                    ignored: Vec::new(),
                };
            }
        };
        // (index in KEYS, or KEYS.len() for hubResourceId; the error)
        let mut errors: Vec<(usize, ConfigurationError)> = Vec::new();
        let mut ignored = Vec::new();
        // The spelling each key was given with; the last slot is hubResourceId's.
        let mut given: [Option<&str>; KEYS.len() + 1] = [None; KEYS.len() + 1];
        for (name, value) in object {
            // Key names match ignoring ASCII case, as the classic C# agent (Json.NET) did, and
            // because the `config` crate lowercases environment variable names. Unknown keys
            // are ignored without an error: the schema has no `additionalProperties: false`,
            // and twins written for the classic agents carry keys we do not implement
            // (`baselineCustomChecksEnabled`, `eventPriorityOperational`).
            let index = if HUB_RESOURCE_ID.eq_ignore_ascii_case(name) {
                KEYS.len()
            } else if let Some(i) = KEYS.iter().position(|k| k.name.eq_ignore_ascii_case(name)) {
                i
            } else {
                ignored.push(name.clone());
                continue;
            };
            let Some(slot) = given.get_mut(index) else {
                continue;
            };
            if let Some(first) = *slot {
                if !errors.iter().any(|(i, _)| *i == index) {
                    let why = format!(
                        "given more than once, as {} and {} (key names are matched ignoring case)",
                        quote(first),
                        quote(name)
                    );
                    errors.push((index, key_type_mismatch(index, in_force, why)));
                }
                continue;
            }
            *slot = Some(name.as_str());
            if index == KEYS.len() {
                match parse_hub_resource_id(value) {
                    Ok(id) => layer.hub_resource_id = id,
                    Err(why) => errors.push((index, key_type_mismatch(index, in_force, why))),
                }
                continue;
            }
            let Some(key) = KEYS.get(index).map(|s| s.key) else {
                continue;
            };
            match parse_entry(key, value) {
                Ok(setting) => {
                    if let Some(v) = layer.values.get_mut(index) {
                        *v = setting;
                    }
                }
                Err(why) => errors.push((index, type_mismatch(key, in_force, why))),
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|(i, _)| *i);
            return ParsedLayer {
                layer: Layer::empty(source),
                errors: errors.into_iter().map(|(_, e)| e).collect(),
                ignored,
            };
        }
        ParsedLayer {
            layer,
            errors: Vec::new(),
            ignored,
        }
    }
}

/// A TypeMismatch for the key at `index` of [`Layer::parse`]'s slots.
fn key_type_mismatch(index: usize, in_force: &AgentConfig, why: String) -> ConfigurationError {
    match KEYS.get(index) {
        Some(spec) => type_mismatch(spec.key, in_force, why),
        None => configuration_error(
            HUB_RESOURCE_ID,
            ConfigurationErrorType::TypeMismatch,
            in_force.hub_resource_id.clone().unwrap_or_default(),
            why,
        ),
    }
}

/// `hubResourceId`'s JSON: `Ok(None)` when not given, `Ok(Some(None))` for `""`.
fn parse_hub_resource_id(value: &Value) -> Result<Option<Option<String>>, String> {
    let expected = format!("a string of at most {MAX_HUB_RESOURCE_ID} bytes");
    let inner = match value {
        Value::Null => return Ok(None),
        Value::Object(m) => match m.get("value") {
            Some(Value::Null) => return Ok(None),
            None if m.is_empty() => return Ok(None),
            None => {
                let members: Vec<String> = m.keys().take(4).map(|k| quote(k)).collect();
                return Err(format!(
                    "expected {{\"value\": …}} holding {expected}, found an object without \"value\" (members: {})",
                    members.join(", ")
                ));
            }
            Some(v) => v,
        },
        other => {
            return Err(format!(
                "expected {{\"value\": …}} holding {expected}, found {}",
                describe(other)
            ));
        }
    };
    match inner {
        Value::String(s) if s.len() > MAX_HUB_RESOURCE_ID => Err(format!(
            "\"value\" is {} bytes long: expected {expected}",
            s.len()
        )),
        Value::String(s) if s.is_empty() => Ok(Some(None)),
        Value::String(s) => Ok(Some(Some(s.clone()))),
        other => Err(format!(
            "\"value\" must be {expected}, found {}",
            describe(other)
        )),
    }
}

/// The source of each value in force, beside a [`Resolved`] configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    keys: [Source; KEYS.len()],
    hub_resource_id: Source,
}

impl Sources {
    /// Every key of the schema, in its order, then [`HUB_RESOURCE_ID`], with its source.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Source)> + '_ {
        KEYS.iter()
            .zip(self.keys.iter())
            .map(|(spec, source)| (spec.name, *source))
            .chain(std::iter::once((HUB_RESOURCE_ID, self.hub_resource_id)))
    }

    /// The source of the key `name` (the schema's spelling, or [`HUB_RESOURCE_ID`]).
    pub fn get(&self, name: &str) -> Option<Source> {
        self.iter().find(|(n, _)| *n == name).map(|(_, s)| s)
    }

    /// `{"key": "file", …}`, every key.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.iter()
                .map(|(n, s)| (n.to_string(), Value::String(s.as_str().to_string())))
                .collect(),
        )
    }
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub config: AgentConfig,
    /// What the checks between settings fixed or found (Conflict, NotOptimal).
    pub errors: Vec<ConfigurationError>,
    pub sources: Sources,
}

/// The configuration in force from layers: the defaults, then each of `layers` (lowest first)
/// per key, then the checks between settings (which fix what they report), then each of
/// `on_top` (try-out: set after the checks, which its short intervals would not pass).
pub fn resolve(layers: &[&Layer], on_top: &[&Layer], minimums: bool) -> Resolved {
    let mut c = AgentConfig::default();
    let mut sources = Sources {
        keys: [Source::Default; KEYS.len()],
        hub_resource_id: Source::Default,
    };
    let lay = |c: &mut AgentConfig, sources: &mut Sources, layer: &Layer| {
        for ((spec, value), source) in KEYS.iter().zip(&layer.values).zip(&mut sources.keys) {
            if let Some(v) = value {
                spec.key.set(c, *v);
                *source = layer.source;
            }
        }
        if let Some(id) = &layer.hub_resource_id {
            c.hub_resource_id = id.clone();
            sources.hub_resource_id = layer.source;
        }
    };
    for layer in layers {
        lay(&mut c, &mut sources, layer);
    }
    let before = c.clone();
    let errors = check(&mut c, minimums);
    for (spec, source) in KEYS.iter().zip(&mut sources.keys) {
        if spec.key.get(&c) != spec.key.get(&before) {
            *source = Source::Check;
        }
    }
    for layer in on_top {
        lay(&mut c, &mut sources, layer);
    }
    Resolved {
        config: c,
        errors,
        sources,
    }
}

/// The checks between settings, on a parsed configuration; fixes `c` and reports each fix:
/// the minimums first (so the high/low check sees the values in force), then the cache
/// smaller than a message (`Conflict`: the default cache, larger than any message), a message
/// size that is not a whole number of billing chunks (`NotOptimal`, kept), and a high
/// frequency longer than the low one (`Conflict`: the default, or the low frequency when that
/// is shorter still). A fix takes the default rather than the previous value because the
/// previous value may conflict with the new settings as well; the default never does.
fn check(c: &mut AgentConfig, minimums: bool) -> Vec<ConfigurationError> {
    let mut errors = Vec::new();
    if minimums {
        raise_to_minimums(c, &mut errors);
    }
    let message = c.max_message_size_in_bytes;
    if c.max_local_cache_size_in_bytes < message {
        let used = DEFAULT_CACHE_SIZE.max(message);
        errors.push(configuration_error(
            Key::CacheSize.name(),
            ConfigurationErrorType::Conflict,
            used.to_string(),
            format!(
                "maxLocalCacheSizeInBytes ({}) is smaller than maxMessageSizeInBytes ({message}), so the cache could not hold one full message; using the default {used} instead",
                c.max_local_cache_size_in_bytes
            ),
        ));
        c.max_local_cache_size_in_bytes = used;
    }
    if message % BILLING_CHUNK != 0 {
        errors.push(configuration_error(
            Key::MessageSize.name(),
            ConfigurationErrorType::NotOptimal,
            message.to_string(),
            format!(
                "maxMessageSizeInBytes ({message}) is not a multiple of {BILLING_CHUNK}: messages are billed in 4 KB chunks, so the last chunk of a full message is paid for but not filled; the value is kept"
            ),
        ));
    }
    let (high, low) = (
        c.high_priority_message_frequency,
        c.low_priority_message_frequency,
    );
    if high > low {
        let (used, how) = if DEFAULT_HIGH_FREQUENCY <= low {
            (
                DEFAULT_HIGH_FREQUENCY,
                format!("the default {}", format_duration(DEFAULT_HIGH_FREQUENCY)),
            )
        } else {
            (
                low,
                format!(
                    "{} (lowPriorityMessageFrequency, as the default {} is longer too)",
                    format_duration(low),
                    format_duration(DEFAULT_HIGH_FREQUENCY)
                ),
            )
        };
        errors.push(configuration_error(
            Key::HighFrequency.name(),
            ConfigurationErrorType::Conflict,
            format_duration(used),
            format!(
                "highPriorityMessageFrequency ({}) is longer than lowPriorityMessageFrequency ({}), so high-priority events would wait longer than low-priority ones; using {how} instead",
                format_duration(high),
                format_duration(low)
            ),
        ));
        c.high_priority_message_frequency = used;
    }
    errors
}

/// Frequencies and intervals under their minimums are raised to them, each with a
/// `NotOptimal` error (in key order). The schema allows `PT0S`, but a zero frequency means a
/// message (or a statistics report, or a checkpoint of closed windows) at every tick of the
/// module: about 860,000 a day, each billed.
fn raise_to_minimums(c: &mut AgentConfig, errors: &mut Vec<ConfigurationError>) {
    for key in KEYS.map(|s| s.key) {
        let min = match key {
            Key::HighFrequency | Key::LowFrequency => MIN_MESSAGE_FREQUENCY,
            Key::SnapshotFrequency => MIN_SNAPSHOT_FREQUENCY,
            Key::AggregationInterval(_) => MIN_AGGREGATION_INTERVAL,
            _ => continue,
        };
        let Setting::Duration(d) = key.get(c) else {
            continue;
        };
        if d >= min {
            continue;
        }
        let what = match key {
            Key::SnapshotFrequency => "a statistics report",
            Key::AggregationInterval(_) => "a closed aggregation window",
            _ => "a message",
        };
        errors.push(configuration_error(
            key.name(),
            ConfigurationErrorType::NotOptimal,
            format_duration(min),
            format!(
                "{} ({}) is under the minimum {}: {what} that often costs more than it tells; using {} instead",
                key.name(),
                format_duration(d),
                format_duration(min),
                format_duration(min)
            ),
        ));
        key.set(c, Setting::Duration(min));
    }
}

/// The local layers of the agent configuration: what the settings file and the environment
/// give (`[agent]`, `AZUREIOTSECURITY_AGENT__<KEY>`), and try-out's values above the twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLayers {
    /// The file's, then the environment's; none when they were refused.
    pub layers: Vec<Layer>,
    /// Set after the checks and above the twin: try-out's (`module.tryout`), when on.
    pub on_top: Vec<Layer>,
    /// False with `debug.short_agent_intervals` (tests only).
    pub minimums: bool,
    /// Type errors in the file or the environment: both are refused as one update (the
    /// defaults are used), as when they were one merged table.
    pub errors: Vec<ConfigurationError>,
    /// One TypeMismatch per unknown key (ignored; the rest applies).
    pub unknown: Vec<ConfigurationError>,
    /// Keys that are not settings, as given.
    pub ignored: Vec<String>,
}

impl LocalLayers {
    /// No local setting: the defaults, with the minimums.
    pub fn none() -> LocalLayers {
        LocalLayers {
            layers: Vec::new(),
            on_top: Vec::new(),
            minimums: true,
            errors: Vec::new(),
            unknown: Vec::new(),
            ignored: Vec::new(),
        }
    }

    /// The configuration these layers make with `twin` (a layer of [`Source::Twin`]) between
    /// them and `on_top`.
    pub fn resolve(&self, twin: Option<&Layer>) -> Resolved {
        let layers: Vec<&Layer> = self.layers.iter().chain(twin).collect();
        let on_top: Vec<&Layer> = self.on_top.iter().collect();
        resolve(&layers, &on_top, self.minimums)
    }
}

/// The settings file's and the environment's agent configuration as layers (no try-out).
///
/// Plain values are wrapped as `{"value": v}`; tables are taken as they are. The file and
/// the environment are read apart by [`Settings::load_from`] (`Settings::agent_layers`), so
/// each key's layer is known; settings not loaded from there (built, or deserialized) give
/// their `agent` table as the file's. Unknown keys are errors here (`TypeMismatch`, the rest
/// still applies), unlike in the twin, to match the settings file's `deny_unknown_fields`.
pub fn settings_layers(s: &Settings) -> LocalLayers {
    let empty = Map::new();
    let given: [(Source, &Map<String, Value>); 2] = match &s.agent_layers {
        Some(l) => [(Source::File, &l.file), (Source::Env, &l.env)],
        None => [(Source::File, &s.agent), (Source::Env, &empty)],
    };
    let defaults = AgentConfig::default();
    let mut local = LocalLayers::none();
    local.minimums = !s.debug.short_agent_intervals;
    for (source, table) in given {
        let update: Map<String, Value> = table
            .iter()
            .map(|(name, value)| {
                let wrapped = if value.is_object() {
                    value.clone()
                } else {
                    let mut m = Map::new();
                    m.insert("value".to_string(), value.clone());
                    Value::Object(m)
                };
                (name.clone(), wrapped)
            })
            .collect();
        let parsed = Layer::parse(source, &Value::Object(update), &defaults);
        local.errors.extend(parsed.errors);
        local.ignored.extend(parsed.ignored);
        local.layers.push(parsed.layer);
    }
    if !local.errors.is_empty() {
        local.layers.clear();
    }
    for name in &local.ignored {
        local.unknown.push(configuration_error(
            name,
            ConfigurationErrorType::TypeMismatch,
            String::new(),
            format!(
                "unknown setting {} in [agent] (AZUREIOTSECURITY_AGENT__<KEY>), ignored: the settings are the keys of {OBJECT_NAME}, such as highPriorityMessageFrequency",
                quote(name)
            ),
        ));
    }
    local
}

/// The agent configuration of the settings file and environment, on the defaults (no
/// try-out: [`Settings::agent_config`] adds it): the [`settings_layers`] resolved.
pub fn agent_config_from_settings(s: &Settings) -> Applied {
    applied_locally(&settings_layers(s))
}

/// `local` resolved without a twin, as an [`Applied`]: the errors are the type errors (the
/// local layers refused) or the checks', then one per unknown key.
pub fn applied_locally(local: &LocalLayers) -> Applied {
    let resolved = local.resolve(None);
    let rejected = !local.errors.is_empty();
    let mut errors = if rejected {
        local.errors.clone()
    } else {
        resolved.errors
    };
    errors.extend(local.unknown.iter().cloned());
    Applied {
        config: resolved.config,
        errors,
        rejected,
        ignored: local.ignored.clone(),
    }
}

/// For `azureiotsecurity check-config` without a kept twin configuration: the effective
/// settings as JSON and the agent configuration's problems
/// ([`crate::config::twin::check_report`]).
pub fn check_report(s: &Settings) -> (Value, Vec<ConfigurationError>) {
    let r = super::twin::check_report(s, Ok(None));
    (r.report, r.errors)
}

/// One setting of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
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
struct KeySpec {
    key: Key,
    /// The name in the twin schema.
    name: &'static str,
    kind: Kind,
    default: Setting,
}

const fn spec(key: Key, name: &'static str, kind: Kind, default: Setting) -> KeySpec {
    KeySpec {
        key,
        name,
        kind,
        default,
    }
}

const fn priority(event: EventKind, name: &'static str, default: Priority) -> KeySpec {
    spec(
        Key::Priority(event),
        name,
        Kind::Priority,
        Setting::Priority(default),
    )
}

const DURATION: Kind = Kind::Duration;

/// Every setting, in the schema's order: its name in the twin schema, what its value is
/// (with the range) and its default (`azureiotsecurity_default.json`; a test compares this
/// table with the schema files). Parsing, the checks, [`AgentConfig::default`] and the
/// reported form all read this one table.
const KEYS: [KeySpec; 25] = [
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
enum Kind {
    Duration,
    Integer { min: u64, max: u64 },
    Priority,
    Bool,
}

/// A setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    Duration(Duration),
    Integer(u64),
    Priority(Priority),
    Bool(bool),
}

impl Key {
    /// This key's row of [`KEYS`].
    fn spec(self) -> Option<&'static KeySpec> {
        KEYS.iter().find(|s| s.key == self)
    }

    fn name(self) -> &'static str {
        self.spec().map_or("", |s| s.name)
    }

    fn kind(self) -> Kind {
        self.spec().map_or(Kind::Bool, |s| s.kind)
    }

    fn get(self, c: &AgentConfig) -> Setting {
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
    fn set(self, c: &mut AgentConfig, v: Setting) {
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
fn aggregation_of(aggregations: &[Aggregation], kind: EventKind) -> Option<&Aggregation> {
    let i = AGGREGATED_EVENTS.iter().position(|a| *a == kind)?;
    aggregations.get(i)
}

fn aggregation_of_mut(
    aggregations: &mut [Aggregation],
    kind: EventKind,
) -> Option<&mut Aggregation> {
    let i = AGGREGATED_EVENTS.iter().position(|a| *a == kind)?;
    aggregations.get_mut(i)
}

impl Setting {
    fn to_json(self) -> Value {
        match self {
            Setting::Duration(d) => Value::String(format_duration(d)),
            Setting::Integer(n) => Value::from(n),
            Setting::Priority(p) => Value::String(p.as_str().to_string()),
            Setting::Bool(b) => Value::Bool(b),
        }
    }

    /// As `UsedConfiguration` shows it.
    fn text(self) -> String {
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
    fn expected(self) -> String {
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

/// One setting's JSON: `Ok(None)` when it is unset (takes the default), `Err(why)` on a
/// type error.
fn parse_entry(key: Key, value: &Value) -> Result<Option<Setting>, String> {
    let kind = key.kind();
    let inner = match value {
        Value::Null => return Ok(None),
        Value::Object(m) => match m.get("value") {
            Some(Value::Null) => return Ok(None),
            // The one rule for `{}`, wherever the update comes from: unset, like
            // `{"value": null}`. It is what a twin patch `{"k": {"value": null}}` leaves
            // behind; the settings file's `k = {}` (no patch makes that) is read the same way
            // rather than by a rule of its own.
            None if m.is_empty() => return Ok(None),
            None => {
                // Members but no "value" (`{"valu": "Off"}`, a typo): not an unset key.
                let members: Vec<String> = m.keys().take(4).map(|k| quote(k)).collect();
                let found = format!(
                    "an object without \"value\" (members: {})",
                    members.join(", ")
                );
                return Err(format!(
                    "expected {{\"value\": …}} holding {}, found {found}",
                    kind.expected()
                ));
            }
            Some(v) => v,
        },
        other => {
            return Err(format!(
                "expected {{\"value\": …}} holding {}, found {}",
                kind.expected(),
                describe(other)
            ));
        }
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

fn type_mismatch(key: Key, previous: &AgentConfig, message: String) -> ConfigurationError {
    configuration_error(
        key.name(),
        ConfigurationErrorType::TypeMismatch,
        key.get(previous).text(),
        message,
    )
}

fn configuration_error(
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
const QUOTE_MAX_CHARS: usize = 64;

/// A string as JSON text, cut to [`QUOTE_MAX_CHARS`] characters (then ending in `…`).
fn quote(s: &str) -> String {
    let cut: String = s.chars().take(QUOTE_MAX_CHARS).collect();
    let mut q = serde_json::to_string(&cut).unwrap_or_else(|_| String::from("\"?\""));
    if cut.len() < s.len() {
        q.push('…');
    }
    q
}

/// A JSON value described for a message.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quote(s)),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::tests::any_duration;
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
        // The six sections, the agent configuration, its sources and the twin layer.
        assert_eq!(report.as_object().unwrap().len(), 9);
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
