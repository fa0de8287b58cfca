//! The module twin's desired properties, turned into the agent configuration in force, and
//! the reported properties that say what is in force.
//!
//! Contract (issue 12, points 3–6; the wire is [`crate::edge::amqp::twin`]):
//! - Layers, per key: published defaults < settings file < environment < twin, then try-out
//!   above the twin for the values it sets ([`LocalLayers`]); a key the twin does not give
//!   takes the value of the layers below, not the default. Only the agent configuration
//!   ([`OBJECT_NAME`]) is read from the twin: local-only settings (socket, data directory,
//!   log level, bounds) never are.
//! - [`DesiredState`] is pure and has one owner (the twin task). It keeps the twin's
//!   desired object as merged so far (a patch is a JSON merge patch of the desired
//!   document: `null` removes a key) and the `$version` it belongs to. A GET's document is
//!   the whole truth and applies unless it is older than what was taken; a patch applies
//!   only as the next version (`$version` = taken + 1): a later one is a [`Step::Gap`] (GET
//!   the twin), an older or equal one [`Step::Stale`].
//! - A type error anywhere in the object refuses the whole update ([`Step::Rejected`]): the
//!   configuration in force stays, and so does the kept document ([`DesiredState::kept`]).
//! - The last applied desired object and its `$version` are kept in the data directory
//!   ([`save_kept`], [`load_kept`]) so a restart while edgeHub is away starts with the
//!   cloud's configuration.
//! - [`DesiredState::reported`] is the reported-properties patch: the configuration in
//!   force, twin-shaped, and a status object; always within edgeHub's limits.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use thiserror::Error;
use uuid::Uuid;

use super::agent::{
    AgentConfig, Layer, LocalLayers, OBJECT_NAME, Resolved, Source, applied_locally,
};
use super::settings::Settings;
use crate::events::ExtraDetails;
use crate::events::operational::{ConfigurationError, ConfigurationErrorType};

/// The kept desired configuration's file name in the data directory (`module.data_dir`).
pub const KEPT_FILE: &str = "twin-desired.json";
/// Where [`save_kept`] writes before the rename.
const KEPT_TMP_FILE: &str = "twin-desired.json.tmp";
/// The largest kept file read: IoT Hub's whole desired document is at most 32 KiB, so a
/// larger file is not one [`save_kept`] wrote.
pub const KEPT_MAX_BYTES: u64 = 1 << 20;

/// The name of the operator's status object in the reported properties, beside
/// [`OBJECT_NAME`].
pub const STATUS_NAME: &str = "securityModuleStatus";

/// The twin's desired configuration as last applied, and its `$version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptDesired {
    pub version: i64,
    /// A desired document: `{OBJECT_NAME: {…}}` (the other desired properties are not
    /// kept), or `{}` when the twin had no agent configuration.
    pub desired: Json,
}

/// Why the kept desired configuration could not be read or written.
#[derive(Debug, Error)]
pub enum KeptError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is {size} bytes, more than the {KEPT_MAX_BYTES} a kept desired configuration can be"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error(
        "{path} is not a kept desired configuration ({{\"version\": n, \"desired\": {{…}}}}): {source}"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The kept file's path in `data_dir`.
pub fn kept_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEPT_FILE)
}

/// The kept desired configuration: `Ok(None)` when there is none (no file); `Err` when the
/// file cannot be read or is not one (the caller logs W-TWIN-KEPT and starts without it).
pub fn load_kept(data_dir: &Path) -> Result<Option<KeptDesired>, KeptError> {
    let path = kept_path(data_dir);
    let read = |source| KeptError::Read {
        path: path.clone(),
        source,
    };
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    let size = f.metadata().map_err(read)?.len();
    if size > KEPT_MAX_BYTES {
        return Err(KeptError::TooLarge { path, size });
    }
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, KEPT_MAX_BYTES), &mut text)
        .map_err(read)?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| KeptError::Corrupt { path, source })
}

/// Keeps `k` in `data_dir` (created if missing): written to a temporary file of its own
/// (0600), synced, then renamed over [`KEPT_FILE`], so a crash leaves the old file or the
/// new one, never half of one.
pub fn save_kept(data_dir: &Path, k: &KeptDesired) -> Result<(), KeptError> {
    let path = kept_path(data_dir);
    let tmp = data_dir.join(KEPT_TMP_FILE);
    let write = |source| KeptError::Write {
        path: path.clone(),
        source,
    };
    let text = serde_json::to_vec(k).map_err(|e| write(std::io::Error::other(e)))?;
    std::fs::create_dir_all(data_dir).map_err(write)?;
    let mut f = match create_private(&tmp) {
        // Left by a crash between create and rename: unlink the name, create again.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp).map_err(write)?;
            create_private(&tmp).map_err(write)?
        }
        r => r.map_err(write)?,
    };
    f.write_all(&text).map_err(write)?;
    f.sync_all().map_err(write)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(write)?;
    // The rename itself survives a power cut once the directory is synced.
    if let Ok(d) = std::fs::File::open(data_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new file, 0600, created exclusively (never written through a planted symlink).
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// What a desired document or patch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The configuration in force changed to `config`; `errors` are the checks' fixes and
    /// findings (Conflict, NotOptimal), to send upstream as a ConfigurationError event.
    Applied {
        config: AgentConfig,
        errors: Vec<ConfigurationError>,
    },
    /// A type error: the configuration in force stays; the TypeMismatch errors go upstream.
    /// The version is taken (not asked for again).
    Rejected { errors: Vec<ConfigurationError> },
    /// The version was taken but the configuration in force is the same.
    Unchanged,
    /// Older than or equal to the version taken: ignored.
    Stale { version: i64, applied: i64 },
    /// Not the next version: nothing applied; GET the whole twin. `expected` is 0 when no
    /// version was taken yet; `got` is -1 for a patch without `$version`.
    Gap { expected: i64, got: i64 },
}

/// The agent configuration from the twin's desired properties on top of the local layers.
/// Pure; one owner (the twin task).
#[derive(Debug, Clone)]
pub struct DesiredState {
    local: LocalLayers,
    /// The desired object ([`OBJECT_NAME`]) as the cloud has it, every patch taken merged
    /// in, refused ones too (`None`: the twin has none).
    object: Option<Json>,
    /// The `$version` of `object`: the last one taken.
    version: Option<i64>,
    /// The desired configuration in force, when the twin gave one.
    applied: Option<KeptDesired>,
    resolved: Resolved,
    /// The last configuration error and the `$version` it came with.
    last_error: Option<(ConfigurationError, Option<i64>)>,
    /// Unknown keys of the object already logged.
    said_unknown: BTreeSet<String>,
}

/// At most this many unknown key names are remembered (and logged).
const UNKNOWN_NAMES_MAX: usize = 64;

impl DesiredState {
    /// A state whose layers below the twin are `base` as a whole (shown as `base`), with the
    /// minimums. The module uses [`DesiredState::from_settings`], which keeps each layer and
    /// try-out above the twin.
    pub fn new(base: AgentConfig) -> Self {
        let mut local = LocalLayers::none();
        local.layers.push(Layer::of_config(Source::Base, &base));
        Self::with_layers(local)
    }

    /// A state on the settings' local layers ([`Settings::agent_layers`]): file,
    /// environment, try-out. Its first [`DesiredState::last_error`] is the settings' first
    /// problem.
    pub fn from_settings(s: &Settings) -> Self {
        Self::with_layers(s.agent_layers())
    }

    /// A state on `local`.
    pub fn with_layers(local: LocalLayers) -> Self {
        let applied = applied_locally(&local);
        let resolved = local.resolve(None);
        DesiredState {
            local,
            object: None,
            version: None,
            applied: None,
            resolved,
            last_error: applied.errors.into_iter().next().map(|e| (e, None)),
            said_unknown: BTreeSet::new(),
        }
    }

    /// At start: the kept desired configuration, applied whatever its version.
    pub fn restore(&mut self, kept: KeptDesired) -> Step {
        let object = object_of(&kept.desired);
        match object {
            Ok(object) => self.take(Some(kept.version), object),
            Err(e) => self.refuse(Some(kept.version), None, e),
        }
    }

    /// The `desired` of a GET (with its `$version`): the whole truth, applied unless older
    /// than the version taken. A document without `$version` is applied and leaves no
    /// version (the next patch is then a gap).
    pub fn on_document(&mut self, desired: &Json) -> Step {
        let version = desired.get("$version").and_then(Json::as_i64);
        if let (Some(v), Some(a)) = (version, self.version) {
            if v < a {
                return Step::Stale {
                    version: v,
                    applied: a,
                };
            }
        }
        match object_of(desired) {
            Ok(object) => self.take(version, object),
            Err(e) => self.refuse(version, self.object.clone(), e),
        }
    }

    /// A pushed desired patch, `version` its `$version`: merged into the desired object
    /// when it is the next version.
    pub fn on_patch(&mut self, version: Option<i64>, patch: &Json) -> Step {
        let Some(applied) = self.version else {
            return Step::Gap {
                expected: 0,
                got: version.unwrap_or(-1),
            };
        };
        let expected = applied.saturating_add(1);
        let Some(v) = version else {
            return Step::Gap { expected, got: -1 };
        };
        if v <= applied {
            return Step::Stale {
                version: v,
                applied,
            };
        }
        if v != expected {
            return Step::Gap { expected, got: v };
        }
        let Json::Object(p) = patch else {
            let e = object_error(format!(
                "a desired patch must be a JSON object, found {}",
                kind_of(patch)
            ));
            return self.refuse(Some(v), self.object.clone(), e);
        };
        let object = match p.get(OBJECT_NAME) {
            None => self.object.clone(),
            Some(Json::Null) => None,
            Some(change) => {
                let mut merged = self.object.clone().unwrap_or(Json::Null);
                merge_patch(&mut merged, change);
                Some(merged)
            }
        };
        self.take(Some(v), object)
    }

    /// The configuration in force.
    pub fn config(&self) -> &AgentConfig {
        &self.resolved.config
    }

    /// The last `$version` taken (applied, or refused: a refused version is not asked for
    /// again).
    pub fn version(&self) -> Option<i64> {
        self.version
    }

    /// The `$version` whose configuration is in force.
    pub fn applied_version(&self) -> Option<i64> {
        self.applied.as_ref().map(|k| k.version)
    }

    /// Where each value in force comes from.
    pub fn sources(&self) -> &super::agent::Sources {
        &self.resolved.sources
    }

    /// The last configuration error (the settings' or the twin's), or `None` when the last
    /// update was clean.
    pub fn last_error(&self) -> Option<&ConfigurationError> {
        self.last_error.as_ref().map(|(e, _)| e)
    }

    /// What to keep in the data directory: the desired configuration in force and its
    /// `$version` (a refused update leaves it as it was).
    pub fn kept(&self) -> Option<KeptDesired> {
        self.applied.clone()
    }

    /// The whole reported-properties patch: the configuration in force under
    /// [`OBJECT_NAME`], each key `{"value": …}`, and [`STATUS_NAME`]: the module version,
    /// the AgentId, the `$version` in force and the last configuration error (or `null`).
    /// Within edgeHub's limits whatever the configuration
    /// ([`crate::edge::amqp::twin::reported_error`]).
    pub fn reported(&self, agent_id: Uuid, module_version: &str) -> Json {
        let mut config = self.resolved.config.to_twin_json();
        // edgeHub refuses integers beyond ±2^52 in reported properties; only a local
        // setting can make a cache that large (IoT Hub's desired integers are bounded
        // alike), and 4 PiB is no bound at all: reported as the largest it can show.
        clamp_integers(&mut config);
        let error = match &self.last_error {
            None => Json::Null,
            Some((e, version)) => serde_json::json!({
                "type": format!("{:?}", e.error_type),
                "setting": cut(&e.configuration_name, SETTING_MAX_BYTES),
                "message": cut(&e.message, MESSAGE_MAX_BYTES),
                "version": version.map_or(Json::Null, reported_int),
            }),
        };
        let status = serde_json::json!({
            "moduleVersion": cut(module_version, MODULE_VERSION_MAX_BYTES),
            "agentId": agent_id.hyphenated().to_string(),
            "appliedVersion": self.applied_version().map_or(Json::Null, reported_int),
            "lastConfigurationError": error,
        });
        let mut m = Map::new();
        m.insert(OBJECT_NAME.to_string(), config);
        m.insert(STATUS_NAME.to_string(), status);
        Json::Object(m)
    }

    /// Evaluates the desired `object` of `version`.
    fn take(&mut self, version: Option<i64>, object: Option<Json>) -> Step {
        let parsed = Layer::parse(
            Source::Twin,
            object.as_ref().unwrap_or(&Json::Null),
            &self.resolved.config,
        );
        for name in &parsed.ignored {
            if self.said_unknown.len() < UNKNOWN_NAMES_MAX && self.said_unknown.insert(name.clone())
            {
                tracing::info!(
                    key = %cut(name, SETTING_MAX_BYTES),
                    "unknown key in the twin's agent configuration, ignored"
                );
            }
        }
        if !parsed.errors.is_empty() {
            return self.refuse_with(version, object, parsed.errors);
        }
        let resolved = self.local.resolve(Some(&parsed.layer));
        self.object = object.clone();
        self.version = version;
        self.applied = version.map(|v| KeptDesired {
            version: v,
            desired: document_of(object),
        });
        self.last_error = resolved.errors.first().map(|e| (e.clone(), version));
        let changed = resolved.config != self.resolved.config;
        let errors = resolved.errors.clone();
        self.resolved = resolved;
        if changed {
            Step::Applied {
                config: self.resolved.config.clone(),
                errors,
            }
        } else {
            Step::Unchanged
        }
    }

    /// Refuses `version` for one error.
    fn refuse(
        &mut self,
        version: Option<i64>,
        object: Option<Json>,
        e: ConfigurationError,
    ) -> Step {
        self.refuse_with(version, object, vec![e])
    }

    /// Refuses `version`: the configuration in force and the kept document stay; the cloud's
    /// desired object is `object` (merged with the refused patch).
    ///
    /// Why the refused patch is merged into the object the next patch merges into: the
    /// cloud's desired document has it, and the next patch is a change of that document.
    /// Merging the next patch into the last *applied* document instead would drop the good
    /// keys of the refused patch for good, and the state after patches would differ from
    /// what a GET of the same version gives. So a patch that leaves the bad key in place is
    /// refused again (the cloud's configuration is still wrong), and one that fixes it
    /// applies the whole document.
    fn refuse_with(
        &mut self,
        version: Option<i64>,
        object: Option<Json>,
        errors: Vec<ConfigurationError>,
    ) -> Step {
        self.object = object;
        if version.is_some() {
            self.version = version;
        }
        self.last_error = errors.first().map(|e| (e.clone(), version));
        Step::Rejected { errors }
    }
}

/// The desired object of a desired document: `Ok(None)` when it has none.
fn object_of(desired: &Json) -> Result<Option<Json>, ConfigurationError> {
    match desired {
        Json::Object(m) => Ok(m.get(OBJECT_NAME).filter(|v| !v.is_null()).cloned()),
        other => Err(object_error(format!(
            "the desired properties must be a JSON object, found {}",
            kind_of(other)
        ))),
    }
}

/// The kept document of a desired object.
fn document_of(object: Option<Json>) -> Json {
    let mut m = Map::new();
    if let Some(o) = object {
        m.insert(OBJECT_NAME.to_string(), o);
    }
    Json::Object(m)
}

fn object_error(message: String) -> ConfigurationError {
    ConfigurationError {
        configuration_name: OBJECT_NAME.to_string(),
        error_type: ConfigurationErrorType::TypeMismatch,
        used_configuration: String::new(),
        message,
        extra_details: ExtraDetails::new(),
    }
}

fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// JSON merge patch (RFC 7386), as twin patches are: an object patch merges member by
/// member (`null` removes), anything else replaces.
pub fn merge_patch(target: &mut Json, patch: &Json) {
    let Json::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Json::Object(Map::new());
    }
    let Json::Object(t) = target else {
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Json::Null), v);
        }
    }
}

/// edgeHub's largest reported integer (2^52 - 1).
const REPORTED_INT_MAX: u64 = (1 << 52) - 1;
/// Longest setting name, message and module version reported, in bytes (a value may have
/// 4096; these keep the whole document far under 32 KiB).
const SETTING_MAX_BYTES: usize = 256;
const MESSAGE_MAX_BYTES: usize = 1024;
const MODULE_VERSION_MAX_BYTES: usize = 128;

/// An integer as reported: a number within ±2^52, else its digits as a string (edgeHub
/// refuses larger numbers; twin versions never come near).
fn reported_int(n: i64) -> Json {
    if n.unsigned_abs() <= REPORTED_INT_MAX {
        Json::from(n)
    } else {
        Json::String(n.to_string())
    }
}

/// Caps every integer `{"value": n}` of the twin form at [`REPORTED_INT_MAX`].
fn clamp_integers(config: &mut Json) {
    let Some(o) = config.as_object_mut() else {
        return;
    };
    for entry in o.values_mut() {
        if let Some(v) = entry.get_mut("value") {
            if v.as_u64().is_some_and(|n| n > REPORTED_INT_MAX) {
                *v = Json::from(REPORTED_INT_MAX);
            }
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, ending in `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let ellipsis = '…';
    let mut end = max.saturating_sub(ellipsis.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_string();
    out.push(ellipsis);
    out
}

/// What `azureiotsecurity check-config` shows and finds.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// The effective settings as JSON: the module settings, `agent` the agent configuration
    /// in force in its twin form, `agent_sources` the layer of each of its values, `twin` the
    /// kept desired configuration's file, `$version` and state.
    pub report: Json,
    /// The agent configuration's problems (settings and kept twin configuration).
    pub errors: Vec<ConfigurationError>,
    /// The kept file could not be read (W-TWIN-KEPT): the layers below the twin are shown.
    pub kept_error: Option<String>,
}

/// The check-config report for `s` and the kept desired configuration `kept` (what
/// [`load_kept`] gave for `s.module.data_dir`). Errors: the local layers' type errors, the
/// kept configuration's, the checks', then one per unknown local key.
pub fn check_report(s: &Settings, kept: Result<Option<KeptDesired>, KeptError>) -> CheckReport {
    let mut state = DesiredState::from_settings(s);
    let mut errors = state.local.errors.clone();
    let path = kept_path(&s.module.data_dir);
    let mut twin = Map::new();
    twin.insert(
        "kept_file".to_string(),
        Json::String(path.display().to_string()),
    );
    let mut kept_error = None;
    let (state_name, version) = match kept {
        Ok(None) => ("none", None),
        Ok(Some(k)) => {
            let version = k.version;
            match state.restore(k) {
                Step::Rejected { errors: e } => {
                    errors.extend(e);
                    ("refused", Some(version))
                }
                _ => ("applied", Some(version)),
            }
        }
        Err(e) => {
            twin.insert("error".to_string(), Json::String(e.to_string()));
            kept_error = Some(e.to_string());
            ("unreadable", None)
        }
    };
    twin.insert("state".to_string(), Json::String(state_name.to_string()));
    twin.insert(
        "version".to_string(),
        version.map_or(Json::Null, Json::from),
    );
    errors.extend(state.resolved.errors.iter().cloned());
    errors.extend(state.local.unknown.iter().cloned());

    let mut report = match serde_json::to_value(s) {
        Ok(Json::Object(m)) => m,
        Ok(other) => {
            let mut m = Map::new();
            m.insert("settings".to_string(), other);
            m
        }
        Err(e) => {
            let mut m = Map::new();
            m.insert(
                "settings_error".to_string(),
                Json::String(format!("the module settings cannot be shown as JSON: {e}")),
            );
            m
        }
    };
    report.insert("agent".to_string(), state.config().to_twin_json());
    report.insert("agent_sources".to_string(), state.sources().to_json());
    report.insert("twin".to_string(), Json::Object(twin));
    CheckReport {
        report: Json::Object(report),
        errors,
        kept_error,
    }
}
