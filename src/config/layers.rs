//! The layers of the agent configuration: one update parsed into the values it gives
//! ([`Layer::parse`]; a type error refuses all of it), layers laid over the defaults per key
//! ([`resolve`]: defaults < settings file < environment < twin, the checks between settings,
//! then try-out on top), the [`Source`] of each value in force, and the settings' own layers
//! ([`settings_layers`], [`LocalLayers`]). Pure. Re-exported by [`super::agent`].

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use super::agent::{AgentConfig, Applied, OBJECT_NAME};
use super::agent::{
    BILLING_CHUNK, MIN_AGGREGATION_INTERVAL, MIN_MESSAGE_FREQUENCY, MIN_SNAPSHOT_FREQUENCY,
};
use super::agent::{DEFAULT_CACHE_SIZE, DEFAULT_HIGH_FREQUENCY};
use super::duration::format_duration;
use super::keys::{
    KEYS, Key, Setting, configuration_error, describe, parse_entry, quote, type_mismatch,
    unwrap_value,
};
use super::settings::Settings;
use crate::events::operational::{ConfigurationError, ConfigurationErrorType};

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
    let Some(inner) = unwrap_value(value, &expected)? else {
        return Ok(None);
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
