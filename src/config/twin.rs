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
    /// The configuration in force changed to `config`, or the checks have new findings
    /// about it; `errors` are the checks' fixes and findings (Conflict, NotOptimal), to send
    /// upstream as a ConfigurationError event.
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
        // New findings are news even when a check's fix leaves the configuration as it was
        // (a twin value replaced by the value already in force): the operator must hear of
        // them. The same findings again (a GET after a reconnect) are not.
        let changed = resolved.config != self.resolved.config
            || (!resolved.errors.is_empty() && resolved.errors != self.resolved.errors);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::agent::{HUB_RESOURCE_ID, MAX_HUB_RESOURCE_ID, Priority};
    use crate::edge::amqp::twin::reported_error;
    use crate::events::EventKind;
    use crate::test_support::capture_log;
    use serde_json::json;
    use std::collections::HashMap;
    use std::time::Duration;

    const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/schemas/");

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The published default desired document (`azureiotsecurity_default.json`), with a
    /// `$version` as edgeHub's GET gives it.
    fn published_desired(version: i64) -> Json {
        let text =
            std::fs::read_to_string(format!("{SCHEMAS}azureiotsecurity_default.json")).unwrap();
        let file: Json = serde_json::from_str(&text).unwrap();
        let mut desired = file["properties"]["desired"].clone();
        desired["$version"] = json!(version);
        desired
    }

    // Synthetic desired documents and patches below: hand-written edge cases in the shape
    // edgeHub sends (`{"$version": n, OBJECT_NAME: {"key": {"value": …}}}`).
    fn doc(version: i64, object: Json) -> Json {
        json!({ "$version": version, OBJECT_NAME: object })
    }

    fn patch(version: i64, object: Json) -> (Option<i64>, Json) {
        (Some(version), doc(version, object))
    }

    fn on_patch(s: &mut DesiredState, (version, body): (Option<i64>, Json)) -> Step {
        s.on_patch(version, &body)
    }

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Settings from a settings file holding `text` and the environment `pairs`.
    fn settings(text: &str, pairs: &[(&str, &str)]) -> Settings {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        Settings::load_from(Some(f.path()), env(pairs)).unwrap()
    }

    fn source(s: &DesiredState, key: &str) -> &'static str {
        s.sources().get(key).unwrap().as_str()
    }

    fn applied(step: Step) -> (AgentConfig, Vec<ConfigurationError>) {
        match step {
            Step::Applied { config, errors } => (config, errors),
            other => panic!("not applied: {other:?}"),
        }
    }

    fn rejected(step: Step) -> Vec<ConfigurationError> {
        match step {
            Step::Rejected { errors } => errors,
            other => panic!("not rejected: {other:?}"),
        }
    }

    // ---- layers ----

    /// Defaults < file < environment < twin per key; a key the twin does not give, or no
    /// longer gives, takes the value of the layers below it, not the default.
    #[test]
    fn a_key_missing_from_the_twin_takes_the_value_of_the_layers_below() {
        let s = settings(
            "[agent]\nhighPriorityMessageFrequency = \"PT2M\"\nlowPriorityMessageFrequency = \"PT3H\"\nsnapshotFrequency = \"PT2H\"\n",
            &[("AZUREIOTSECURITY_AGENT__SNAPSHOTFREQUENCY", "P1D")],
        );
        let mut state = DesiredState::from_settings(&s);
        assert_eq!(state.config().snapshot_frequency, secs(86_400));
        assert_eq!(source(&state, "snapshotFrequency"), "env");
        assert_eq!(source(&state, "highPriorityMessageFrequency"), "file");
        assert_eq!(source(&state, "maxMessageSizeInBytes"), "default");

        let (c, errors) = applied(state.on_document(&doc(
            4,
            json!({"lowPriorityMessageFrequency": {"value": "PT4H"}}),
        )));
        assert_eq!(errors, vec![]);
        assert_eq!(c.high_priority_message_frequency, secs(120));
        assert_eq!(c.low_priority_message_frequency, secs(4 * 3600));
        assert_eq!(c.snapshot_frequency, secs(86_400));
        assert_eq!(c.max_message_size_in_bytes, 204_800);
        assert_eq!(source(&state, "lowPriorityMessageFrequency"), "twin");
        assert_eq!(source(&state, "highPriorityMessageFrequency"), "file");

        // `{"value": null}` unsets the twin's key: the file's value again.
        let (c, _) = applied(on_patch(
            &mut state,
            patch(5, json!({"lowPriorityMessageFrequency": {"value": null}})),
        ));
        assert_eq!(c.low_priority_message_frequency, secs(3 * 3600));
        assert_eq!(source(&state, "lowPriorityMessageFrequency"), "file");
        // The twin gives snapshotFrequency, then removes it (null): the environment's again.
        let (c, _) = applied(on_patch(
            &mut state,
            patch(6, json!({"snapshotFrequency": {"value": "PT1H"}})),
        ));
        assert_eq!(c.snapshot_frequency, secs(3600));
        let (c, _) = applied(on_patch(
            &mut state,
            patch(7, json!({"snapshotFrequency": null})),
        ));
        assert_eq!(c.snapshot_frequency, secs(86_400));
        assert_eq!(source(&state, "snapshotFrequency"), "env");
        // Removing the whole object: the local layers alone.
        assert_eq!(
            on_patch(
                &mut state,
                (Some(8), json!({"$version": 8, OBJECT_NAME: null}))
            ),
            Step::Unchanged
        );
        assert_eq!(state.config(), &s.agent_config().config);
    }

    /// The file and the environment are read apart: a lowercase key in the file is the
    /// file's (the old merged table took an all-lowercase spelling for the environment's).
    #[test]
    fn the_file_and_the_environment_are_told_apart() {
        let s = settings(
            "[agent]\nsnapshotfrequency = \"PT2H\"\nhighPriorityMessageFrequency = \"PT1M\"\n",
            &[(
                "AZUREIOTSECURITY_AGENT__HIGHPRIORITYMESSAGEFREQUENCY",
                "PT3M",
            )],
        );
        let state = DesiredState::from_settings(&s);
        assert_eq!(source(&state, "snapshotFrequency"), "file");
        assert_eq!(state.config().snapshot_frequency, secs(7200));
        assert_eq!(source(&state, "highPriorityMessageFrequency"), "env");
        assert_eq!(state.config().high_priority_message_frequency, secs(180));
        let layers = s.agent_layers.as_ref().unwrap();
        assert_eq!(layers.file.len(), 2);
        assert_eq!(layers.env.len(), 1);
    }

    /// Only the agent configuration object is read: local-only settings in the desired
    /// properties (top level or inside the object) change nothing, not even try-out.
    #[test]
    fn local_only_settings_are_never_taken_from_the_twin() {
        let s = settings("[agent]\nmaxMessageSizeInBytes = 65536\n", &[]);
        let mut state = DesiredState::from_settings(&s);
        let before = state.config().clone();
        let step = state.on_document(&json!({
            "$version": 2,
            "audit": {"socket_path": "/tmp/elsewhere"},
            "module": {"tryout": true, "data_dir": "/tmp"},
            OBJECT_NAME: {
                "socket_path": {"value": "/tmp/elsewhere"},
                "tryout": {"value": true},
                "data_dir": {"value": "/tmp"},
                "log_level": {"value": "trace"},
            },
        }));
        assert_eq!(step, Step::Unchanged);
        assert_eq!(state.config(), &before);
        assert_eq!(state.config().high_priority_message_frequency, secs(420));
        assert_eq!(state.version(), Some(2));
    }

    /// Try-out (a local debug switch) stays above the twin for the values it sets; the twin
    /// still decides the others.
    #[test]
    fn tryout_stays_above_the_twin_for_the_values_it_sets() {
        let s = settings("[module]\ntryout = true\n", &[]);
        let mut state = DesiredState::from_settings(&s);
        let (c, errors) = applied(state.on_document(&doc(
            1,
            json!({
                "highPriorityMessageFrequency": {"value": "PT1H"},
                "lowPriorityMessageFrequency": {"value": "PT2H"},
                "maxMessageSizeInBytes": {"value": 65536},
                "aggregationEnabledProcessCreate": {"value": false},
                "aggregationIntervalProcessCreate": {"value": "PT2H"},
            }),
        )));
        assert_eq!(errors, vec![]);
        assert_eq!(c.high_priority_message_frequency, secs(10));
        assert_eq!(c.low_priority_message_frequency, secs(20));
        assert_eq!(c.snapshot_frequency, secs(30));
        assert_eq!(c.max_message_size_in_bytes, 65_536);
        assert!(!c.aggregations[0].enabled);
        assert_eq!(c.aggregations[0].interval, secs(15));
        assert_eq!(source(&state, "highPriorityMessageFrequency"), "tryout");
        assert_eq!(source(&state, "aggregationIntervalProcessCreate"), "tryout");
        assert_eq!(source(&state, "maxMessageSizeInBytes"), "twin");
        assert_eq!(source(&state, "aggregationEnabledProcessCreate"), "twin");
    }

    /// A value a check between settings replaced shows as `check`, and the fix is reported.
    #[test]
    fn a_value_fixed_by_a_check_shows_as_check() {
        let s = settings("[agent]\nlowPriorityMessageFrequency = \"PT1H\"\n", &[]);
        let mut state = DesiredState::from_settings(&s);
        let twin = doc(
            3,
            json!({"highPriorityMessageFrequency": {"value": "PT2H"}}),
        );
        // The fix gives the value already in force: applied all the same, for the news.
        let (c, errors) = applied(state.on_document(&twin));
        assert_eq!(&c, state.config());
        assert_eq!(c.high_priority_message_frequency, secs(420));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].error_type, ConfigurationErrorType::Conflict);
        assert_eq!(errors[0].configuration_name, "highPriorityMessageFrequency");
        assert_eq!(source(&state, "highPriorityMessageFrequency"), "check");
        assert_eq!(state.last_error(), errors.first());
        // The same document again (a GET after a reconnect): nothing new.
        assert_eq!(state.on_document(&twin), Step::Unchanged);
        assert_eq!(state.last_error(), errors.first());
    }

    /// `new(base)`: the base is one layer below the twin.
    #[test]
    fn new_puts_the_base_below_the_twin() {
        let mut base = AgentConfig::default();
        base.set_priority(EventKind::Login, Priority::Off);
        base.max_message_size_in_bytes = 16_384;
        let mut state = DesiredState::new(base.clone());
        assert_eq!(state.config(), &base);
        assert_eq!(source(&state, "eventPriorityLogin"), "base");
        let (c, _) =
            applied(state.on_document(&doc(1, json!({"eventPriorityLogin": {"value": "Low"}}))));
        assert_eq!(c.priority(EventKind::Login), Priority::Low);
        assert_eq!(c.max_message_size_in_bytes, 16_384);
    }

    // ---- twin semantics ----

    /// The published default document applies as the defaults; its other keys (none but
    /// the object here) are not read.
    #[test]
    fn the_published_default_document_is_the_defaults() {
        let s = settings("[agent]\neventPriorityLogin = \"Off\"\n", &[]);
        let mut state = DesiredState::from_settings(&s);
        assert_eq!(state.config().priority(EventKind::Login), Priority::Off);
        let (c, errors) = applied(state.on_document(&published_desired(1)));
        assert_eq!(errors, vec![]);
        assert_eq!(c, AgentConfig::default());
        assert_eq!(source(&state, "eventPriorityLogin"), "twin");
        assert_eq!(state.version(), Some(1));
        assert_eq!(state.applied_version(), Some(1));
    }

    /// A patch is a JSON merge of the desired document: one key inside the object changes,
    /// the others stay as the document had them.
    #[test]
    fn a_patch_changes_one_key_inside_the_object() {
        let mut state = DesiredState::new(AgentConfig::default());
        let mut object = published_desired(10)[OBJECT_NAME].clone();
        object["eventPriorityLogin"] = json!({"value": "Off"});
        object["maxMessageSizeInBytes"] = json!({"value": 65536});
        applied(state.on_document(&doc(10, object)));
        let (c, _) = applied(on_patch(
            &mut state,
            patch(11, json!({"maxMessageSizeInBytes": {"value": 131072}})),
        ));
        assert_eq!(c.max_message_size_in_bytes, 131_072);
        assert_eq!(c.priority(EventKind::Login), Priority::Off);
        let kept = state.kept().unwrap();
        assert_eq!(kept.version, 11);
        assert_eq!(
            kept.desired[OBJECT_NAME]["maxMessageSizeInBytes"],
            json!({"value": 131072})
        );
        assert_eq!(
            kept.desired[OBJECT_NAME]["eventPriorityLogin"],
            json!({"value": "Off"})
        );
        // A patch without the object leaves it as it is (another module's property).
        assert_eq!(
            state.on_patch(Some(12), &json!({"$version": 12, "other": {"x": 1}})),
            Step::Unchanged
        );
        assert_eq!(state.version(), Some(12));
    }

    /// RFC 7386's examples (its appendix A), which twin patches follow.
    #[test]
    fn merge_patch_follows_rfc_7386() {
        for (target, p, want) in [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ] {
            let mut t = target.clone();
            merge_patch(&mut t, &p);
            assert_eq!(t, want, "{target} + {p}");
        }
    }

    /// hubResourceId (`{"value": "…"}`, as the classic C# agent reads it) fills
    /// `hub_resource_id`; `""` clears it; a wrong type or more than 1024 bytes refuses the
    /// update like any type error.
    #[test]
    fn hub_resource_id_is_read_from_the_object() {
        let id = "/subscriptions/0b5c1f3e-0000-4000-8000-000000000000/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/hub1";
        let mut state = DesiredState::new(AgentConfig::default());
        let (c, _) = applied(state.on_document(&doc(1, json!({"hubResourceId": {"value": id}}))));
        assert_eq!(c.hub_resource_id.as_deref(), Some(id));
        assert_eq!(source(&state, HUB_RESOURCE_ID), "twin");
        let errors = rejected(on_patch(
            &mut state,
            patch(2, json!({"hubResourceId": {"value": 42}})),
        ));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].configuration_name, "hubResourceId");
        assert_eq!(errors[0].error_type, ConfigurationErrorType::TypeMismatch);
        assert_eq!(errors[0].used_configuration, id);
        assert_eq!(
            errors[0].message,
            "\"value\" must be a string of at most 1024 bytes, found the number 42"
        );
        let long = "r".repeat(MAX_HUB_RESOURCE_ID + 1);
        let errors = rejected(on_patch(
            &mut state,
            patch(3, json!({"hubResourceId": {"value": long}})),
        ));
        assert_eq!(
            errors[0].message,
            "\"value\" is 1025 bytes long: expected a string of at most 1024 bytes"
        );
        assert_eq!(state.config().hub_resource_id.as_deref(), Some(id));
        let longest = "r".repeat(MAX_HUB_RESOURCE_ID);
        let (c, _) = applied(on_patch(
            &mut state,
            patch(4, json!({"hubResourceId": {"value": longest.clone()}})),
        ));
        assert_eq!(c.hub_resource_id, Some(longest));
        let (c, _) = applied(on_patch(
            &mut state,
            patch(5, json!({"hubResourceId": {"value": ""}})),
        ));
        assert_eq!(c.hub_resource_id, None);
    }

    // ---- consistency ----

    #[test]
    fn patches_apply_in_version_order_a_gap_asks_for_a_get() {
        let mut state = DesiredState::new(AgentConfig::default());
        applied(state.on_document(&doc(5, json!({"eventPriorityLogin": {"value": "Off"}}))));
        let (c, _) = applied(on_patch(
            &mut state,
            patch(6, json!({"eventPriorityLogin": {"value": "Low"}})),
        ));
        assert_eq!(c.priority(EventKind::Login), Priority::Low);
        let high = patch(6, json!({"eventPriorityLogin": {"value": "High"}}));
        assert_eq!(
            on_patch(&mut state, high.clone()),
            Step::Stale {
                version: 6,
                applied: 6
            }
        );
        assert_eq!(
            on_patch(&mut state, patch(5, json!({}))),
            Step::Stale {
                version: 5,
                applied: 6
            }
        );
        // Version 7 was missed: nothing of 8 applies.
        assert_eq!(
            on_patch(
                &mut state,
                patch(8, json!({"eventPriorityLogin": {"value": "High"}}))
            ),
            Step::Gap {
                expected: 7,
                got: 8
            }
        );
        assert_eq!(
            state.on_patch(None, &json!({OBJECT_NAME: {}})),
            Step::Gap {
                expected: 7,
                got: -1
            }
        );
        assert_eq!(state.config().priority(EventKind::Login), Priority::Low);
        assert_eq!(state.version(), Some(6));
        // A document older than what was taken is stale; as old, the whole truth again.
        assert_eq!(
            state.on_document(&doc(4, json!({}))),
            Step::Stale {
                version: 4,
                applied: 6
            }
        );
        assert_eq!(
            state.on_document(&doc(6, json!({"eventPriorityLogin": {"value": "Low"}}))),
            Step::Unchanged
        );
        // The GET after the gap: version 8 as a whole.
        let (c, _) = applied(state.on_document(&doc(
            8,
            json!({"eventPriorityLogin": {"value": "High"}, "eventPriorityProcessCreate": {"value": "Off"}}),
        )));
        assert_eq!(c.priority(EventKind::Login), Priority::High);
        assert_eq!(c.priority(EventKind::ProcessCreate), Priority::Off);
        assert_eq!(state.version(), Some(8));
        let (c, _) = applied(on_patch(
            &mut state,
            patch(9, json!({"eventPriorityProcessCreate": {"value": "High"}})),
        ));
        assert_eq!(c.priority(EventKind::ProcessCreate), Priority::High);
        assert_eq!(c.priority(EventKind::Login), Priority::High);
    }

    /// Before any document (or kept version), a patch cannot be placed: a gap, GET first.
    #[test]
    fn a_patch_before_any_document_is_a_gap() {
        let mut state = DesiredState::new(AgentConfig::default());
        assert_eq!(
            on_patch(
                &mut state,
                patch(1, json!({"eventPriorityLogin": {"value": "Off"}}))
            ),
            Step::Gap {
                expected: 0,
                got: 1
            }
        );
        assert_eq!(
            state.on_patch(None, &json!({})),
            Step::Gap {
                expected: 0,
                got: -1
            }
        );
        assert_eq!(state.config(), &AgentConfig::default());
        assert_eq!(state.version(), None);
        assert_eq!(state.kept(), None);
    }

    // ---- bad configuration ----

    /// A type error anywhere refuses the whole patch: the configuration in force and the
    /// kept document stay; the version is taken.
    #[test]
    fn a_type_error_refuses_the_whole_patch() {
        let mut state = DesiredState::new(AgentConfig::default());
        applied(state.on_document(&doc(
            1,
            json!({"highPriorityMessageFrequency": {"value": "PT2M"}}),
        )));
        let before = state.config().clone();
        let kept = state.kept();
        let errors = rejected(on_patch(
            &mut state,
            patch(
                2,
                json!({
                    "lowPriorityMessageFrequency": {"value": "PT2H"},
                    "eventPriorityLogin": {"value": 3},
                }),
            ),
        ));
        assert_eq!(
            errors,
            vec![ConfigurationError {
                configuration_name: "eventPriorityLogin".to_string(),
                error_type: ConfigurationErrorType::TypeMismatch,
                used_configuration: "High".to_string(),
                message:
                    "\"value\" must be one of \"High\", \"Low\" or \"Off\", found the number 3"
                        .to_string(),
                extra_details: ExtraDetails::new(),
            }]
        );
        assert_eq!(state.config(), &before);
        assert_eq!(state.kept(), kept);
        assert_eq!(state.applied_version(), Some(1));
        assert_eq!(state.version(), Some(2));
        assert_eq!(state.last_error(), errors.first());
    }

    /// After a refused patch the next one merges into the cloud's document (the refused
    /// patch included): a patch that fixes the bad key applies the refused patch's good keys
    /// too, exactly as a GET of that version would; one that leaves it is refused again.
    #[test]
    fn after_a_refused_patch_the_next_merges_into_the_clouds_document() {
        let start = doc(
            1,
            json!({"highPriorityMessageFrequency": {"value": "PT2M"}}),
        );
        let bad = patch(
            2,
            json!({
                "lowPriorityMessageFrequency": {"value": "PT2H"},
                "eventPriorityLogin": {"value": 3},
            }),
        );
        let mut state = DesiredState::new(AgentConfig::default());
        applied(state.on_document(&start));
        rejected(on_patch(&mut state, bad.clone()));
        // Version 3 leaves the bad key: refused again, with the same error.
        let mut other = state.clone();
        let errors = rejected(on_patch(
            &mut other,
            patch(3, json!({"snapshotFrequency": {"value": "PT2H"}})),
        ));
        assert_eq!(errors[0].configuration_name, "eventPriorityLogin");
        assert_eq!(other.config(), state.config());
        // Version 3 fixes it: versions 1–3 as a whole.
        let (c, errors) = applied(on_patch(
            &mut state,
            patch(3, json!({"eventPriorityLogin": {"value": "Off"}})),
        ));
        assert_eq!(errors, vec![]);
        assert_eq!(c.high_priority_message_frequency, secs(120));
        assert_eq!(c.low_priority_message_frequency, secs(7200));
        assert_eq!(c.priority(EventKind::Login), Priority::Off);
        assert_eq!(state.last_error(), None);
        // The same as a GET of version 3 gives.
        let mut got = DesiredState::new(AgentConfig::default());
        applied(got.on_document(&doc(
            3,
            json!({
                "highPriorityMessageFrequency": {"value": "PT2M"},
                "lowPriorityMessageFrequency": {"value": "PT2H"},
                "eventPriorityLogin": {"value": "Off"},
            }),
        )));
        assert_eq!(got.config(), state.config());
        assert_eq!(got.kept(), state.kept());
    }

    /// The object (or the desired properties, or a patch) not being an object is a
    /// TypeMismatch of the object; nothing changes.
    #[test]
    fn an_object_that_is_not_an_object_is_a_type_mismatch() {
        let mut state = DesiredState::new(AgentConfig::default());
        applied(state.on_document(&doc(1, json!({"eventPriorityLogin": {"value": "Off"}}))));
        let before = state.config().clone();
        let errors = rejected(on_patch(&mut state, patch(2, json!("PT7M"))));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].configuration_name, OBJECT_NAME);
        assert_eq!(errors[0].error_type, ConfigurationErrorType::TypeMismatch);
        assert!(
            errors[0].message.ends_with("found the string \"PT7M\""),
            "{}",
            errors[0].message
        );
        let errors = rejected(state.on_document(&json!([1, 2])));
        assert_eq!(
            errors[0].message,
            "the desired properties must be a JSON object, found an array"
        );
        let errors = rejected(state.on_patch(Some(3), &json!(7)));
        assert_eq!(
            errors[0].message,
            "a desired patch must be a JSON object, found a number"
        );
        assert_eq!(state.version(), Some(3));
        assert_eq!(state.config(), &before);
        assert_eq!(state.applied_version(), Some(1));
        // The object replaced by a valid one applies.
        let (c, _) = applied(on_patch(
            &mut state,
            patch(4, json!({"eventPriorityLogin": {"value": "Low"}})),
        ));
        assert_eq!(c.priority(EventKind::Login), Priority::Low);
    }

    /// Unknown keys are ignored and said once per name, not once per update.
    #[test]
    fn unknown_keys_are_said_once() {
        let log = capture_log(|| {
            let mut state = DesiredState::new(AgentConfig::default());
            let object = json!({"baselineCustomChecksEnabled": {"value": true}, "eventPriorityLogin": {"value": "Off"}});
            applied(state.on_document(&doc(1, object)));
            assert_eq!(
                on_patch(
                    &mut state,
                    patch(2, json!({"baselineCustomChecksEnabled": {"value": false}}))
                ),
                Step::Unchanged
            );
            assert_eq!(
                on_patch(
                    &mut state,
                    patch(3, json!({"eventPriorityOperational": {"value": "Off"}}))
                ),
                Step::Unchanged
            );
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(
            lines[0].contains("key=baselineCustomChecksEnabled"),
            "{log}"
        );
        assert!(lines[1].contains("key=eventPriorityOperational"), "{log}");
    }

    // ---- the kept file ----

    #[test]
    fn the_kept_file_round_trips_and_is_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        assert!(load_kept(&dir).unwrap().is_none());
        let mut state = DesiredState::new(AgentConfig::default());
        applied(state.on_document(&doc(7, json!({"eventPriorityLogin": {"value": "Off"}}))));
        let k = state.kept().unwrap();
        save_kept(&dir, &k).unwrap();
        assert_eq!(load_kept(&dir).unwrap(), Some(k.clone()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kept_path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(kept_path(&dir)).unwrap();
        assert_eq!(
            serde_json::from_str::<Json>(&text).unwrap(),
            json!({"version": 7, "desired": {OBJECT_NAME: {"eventPriorityLogin": {"value": "Off"}}}})
        );
        // A temporary file left by a crash before the rename does not stop the next save.
        std::fs::write(dir.join(KEPT_TMP_FILE), "{\"vers").unwrap();
        let k2 = KeptDesired {
            version: 8,
            desired: json!({}),
        };
        save_kept(&dir, &k2).unwrap();
        assert_eq!(load_kept(&dir).unwrap(), Some(k2));
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![KEPT_FILE.to_string()]);
    }

    /// A truncated, foreign or oversized file is an error (the module logs W-TWIN-KEPT and
    /// starts from the layers below); a missing one is none.
    #[test]
    fn a_truncated_or_foreign_kept_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let k = KeptDesired {
            version: 3,
            desired: json!({OBJECT_NAME: {"eventPriorityLogin": {"value": "Off"}}}),
        };
        save_kept(dir, &k).unwrap();
        let whole = std::fs::read(kept_path(dir)).unwrap();
        std::fs::write(kept_path(dir), &whole[..whole.len() / 2]).unwrap();
        let e = load_kept(dir).unwrap_err();
        assert!(matches!(e, KeptError::Corrupt { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("twin-desired.json is not a kept desired configuration"),
            "{e}"
        );
        std::fs::write(kept_path(dir), "{\"version\": \"3\", \"desired\": {}}").unwrap();
        assert!(matches!(load_kept(dir), Err(KeptError::Corrupt { .. })));
        std::fs::write(
            kept_path(dir),
            "{\"version\": 3, \"desired\": {}, \"x\": 1}",
        )
        .unwrap();
        assert!(matches!(load_kept(dir), Err(KeptError::Corrupt { .. })));
        std::fs::write(kept_path(dir), vec![b' '; KEPT_MAX_BYTES as usize + 1]).unwrap();
        assert!(matches!(load_kept(dir), Err(KeptError::TooLarge { .. })));
        std::fs::remove_file(kept_path(dir)).unwrap();
        std::fs::create_dir(kept_path(dir)).unwrap();
        assert!(matches!(load_kept(dir), Err(KeptError::Read { .. })));
        assert!(matches!(save_kept(dir, &k), Err(KeptError::Write { .. })));
    }

    /// A restart starts with the kept configuration and takes the next patch.
    #[test]
    fn restore_starts_from_the_kept_configuration() {
        let d = tempfile::tempdir().unwrap();
        let s = settings("[agent]\nmaxMessageSizeInBytes = 65536\n", &[]);
        let mut first = DesiredState::from_settings(&s);
        applied(first.on_document(&doc(
            12,
            json!({"eventPriorityProcessCreate": {"value": "Off"}}),
        )));
        save_kept(d.path(), &first.kept().unwrap()).unwrap();

        let mut second = DesiredState::from_settings(&s);
        let kept = load_kept(d.path()).unwrap().unwrap();
        let (c, _) = applied(second.restore(kept));
        assert_eq!(&c, first.config());
        assert_eq!(c.max_message_size_in_bytes, 65_536);
        assert_eq!(second.version(), Some(12));
        let (c, _) = applied(on_patch(
            &mut second,
            patch(13, json!({"eventPriorityLogin": {"value": "Off"}})),
        ));
        assert_eq!(c.priority(EventKind::ProcessCreate), Priority::Off);
        assert_eq!(c.priority(EventKind::Login), Priority::Off);
        // A kept configuration the rules now refuse: the layers below, and said.
        let mut third = DesiredState::from_settings(&s);
        let errors = rejected(third.restore(KeptDesired {
            version: 4,
            desired: json!({OBJECT_NAME: {"maxMessageSizeInBytes": {"value": 1}}}),
        }));
        assert_eq!(errors[0].configuration_name, "maxMessageSizeInBytes");
        assert_eq!(third.config(), &s.agent_config().config);
        assert_eq!(third.kept(), None);
    }

    // ---- the reported form ----

    #[test]
    fn reported_is_the_configuration_in_force_and_a_status() {
        let agent = Uuid::from_u128(0x8a3b3c4e_5f60_4718_9a2b_3c4d5e6f7a80);
        let mut state = DesiredState::new(AgentConfig::default());
        let r = state.reported(agent, "0.1.0");
        assert_eq!(r[OBJECT_NAME], AgentConfig::default().to_twin_json());
        assert_eq!(
            r[STATUS_NAME],
            json!({
                "moduleVersion": "0.1.0",
                "agentId": "8a3b3c4e-5f60-4718-9a2b-3c4d5e6f7a80",
                "appliedVersion": null,
                "lastConfigurationError": null,
            })
        );
        assert_eq!(r.as_object().unwrap().len(), 2);
        applied(state.on_document(&doc(
            3,
            json!({"maxMessageSizeInBytes": {"value": 10000}, "hubResourceId": {"value": "/subscriptions/s/x"}}),
        )));
        let r = state.reported(agent, "0.1.0");
        assert_eq!(
            r[OBJECT_NAME]["maxMessageSizeInBytes"],
            json!({"value": 10000})
        );
        assert_eq!(
            r[OBJECT_NAME]["hubResourceId"],
            json!({"value": "/subscriptions/s/x"})
        );
        assert_eq!(r[OBJECT_NAME].as_object().unwrap().len(), 26);
        assert_eq!(
            r[STATUS_NAME],
            json!({
                "moduleVersion": "0.1.0",
                "agentId": "8a3b3c4e-5f60-4718-9a2b-3c4d5e6f7a80",
                "appliedVersion": 3,
                "lastConfigurationError": {
                    "type": "NotOptimal",
                    "setting": "maxMessageSizeInBytes",
                    "message": "maxMessageSizeInBytes (10000) is not a multiple of 4096: messages are billed in 4 KB chunks, so the last chunk of a full message is paid for but not filled; the value is kept",
                    "version": 3,
                },
            })
        );
        assert_eq!(reported_error(&r), None);
    }

    /// The longest reported properties the state can make still pass edgeHub's validator:
    /// the longest hubResourceId, a cache beyond 2^52 (capped), a version beyond 2^52 (as
    /// text), and an error with a long name and message (cut, on a character boundary).
    #[test]
    fn reported_stays_within_edgehubs_limits_at_its_longest() {
        // A local cache of u64::MAX bytes (the twin cannot carry more than 2^52).
        let mut state = DesiredState::new(AgentConfig {
            max_local_cache_size_in_bytes: u64::MAX,
            ..AgentConfig::default()
        });
        assert_eq!(state.config().max_local_cache_size_in_bytes, u64::MAX);
        let id = "é".repeat(MAX_HUB_RESOURCE_ID / 2);
        applied(state.on_document(&doc(i64::MAX - 1, json!({"hubResourceId": {"value": id}}))));
        state.last_error = Some((
            ConfigurationError {
                configuration_name: "n".repeat(5000),
                error_type: ConfigurationErrorType::TypeMismatch,
                used_configuration: "u".repeat(5000),
                message: "ü".repeat(5000),
                extra_details: ExtraDetails::new(),
            },
            Some(i64::MIN),
        ));
        let r = state.reported(Uuid::from_u128(1), &"v".repeat(10_000));
        assert_eq!(reported_error(&r), None, "{}", r.to_string().len());
        assert_eq!(
            r[OBJECT_NAME]["maxLocalCacheSizeInBytes"],
            json!({"value": 4_503_599_627_370_495u64})
        );
        assert_eq!(r[OBJECT_NAME]["hubResourceId"]["value"], json!(id));
        let status = &r[STATUS_NAME];
        assert_eq!(status["appliedVersion"], json!("9223372036854775806"));
        assert_eq!(
            status["lastConfigurationError"]["version"],
            json!("-9223372036854775808")
        );
        let message = status["lastConfigurationError"]["message"]
            .as_str()
            .unwrap();
        assert_eq!(message.len(), 1023);
        assert_eq!(message, format!("{}…", "ü".repeat(510)));
        let setting = status["lastConfigurationError"]["setting"]
            .as_str()
            .unwrap();
        assert_eq!(setting, format!("{}…", "n".repeat(253)));
        assert_eq!(status["moduleVersion"].as_str().unwrap().len(), 128);
        // Uncut, the same document breaks edgeHub's limits.
        let mut uncut = r.clone();
        uncut[STATUS_NAME]["lastConfigurationError"]["message"] = json!("ü".repeat(5000));
        assert!(reported_error(&uncut).is_some());
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "…");
        assert_eq!(cut("abcdefg", 5), "ab…");
        // "é" is 2 bytes: 5 - 3 (the ellipsis) = 2 bytes, one é.
        assert_eq!(cut("ééé", 5), "é…");
        assert_eq!(cut("ééé", 4), "…");
        assert_eq!(cut("", 0), "");
    }

    // ---- check-config ----

    #[test]
    fn check_report_shows_each_value_s_layer_and_the_kept_twin() {
        let d = tempfile::tempdir().unwrap();
        let data_dir = d.path().display().to_string();
        let s = settings(
            &format!(
                "[module]\ndata_dir = \"{data_dir}\"\n[agent]\nmaxMessageSizeInBytes = 65536\neventPriorityLogin = \"Off\"\n"
            ),
            &[("AZUREIOTSECURITY_AGENT__EVENTPRIORITYLOGIN", "Low")],
        );
        let kept = KeptDesired {
            version: 9,
            desired: json!({OBJECT_NAME: {"snapshotFrequency": {"value": "PT2H"}}}),
        };
        let r = check_report(&s, Ok(Some(kept.clone())));
        assert_eq!(r.errors, vec![]);
        assert_eq!(r.kept_error, None);
        let sources = &r.report["agent_sources"];
        assert_eq!(sources["maxMessageSizeInBytes"], json!("file"));
        assert_eq!(sources["eventPriorityLogin"], json!("env"));
        assert_eq!(sources["snapshotFrequency"], json!("twin"));
        assert_eq!(sources["lowPriorityMessageFrequency"], json!("default"));
        assert_eq!(sources.as_object().unwrap().len(), 26);
        assert_eq!(
            r.report["agent"]["snapshotFrequency"],
            json!({"value": "PT2H"})
        );
        assert_eq!(
            r.report["agent"]["eventPriorityLogin"],
            json!({"value": "Low"})
        );
        assert_eq!(
            r.report["twin"],
            json!({
                "kept_file": format!("{data_dir}/twin-desired.json"),
                "state": "applied",
                "version": 9,
            })
        );
        // A kept configuration the rules refuse: its TypeMismatch, and the layers below.
        let refused = KeptDesired {
            version: 10,
            desired: json!({OBJECT_NAME: {"snapshotFrequency": {"value": 5}}}),
        };
        let r = check_report(&s, Ok(Some(refused)));
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].configuration_name, "snapshotFrequency");
        assert_eq!(r.report["twin"]["state"], json!("refused"));
        assert_eq!(
            r.report["agent_sources"]["snapshotFrequency"],
            json!("default")
        );
        // An unreadable one: said, and the layers below.
        let r = check_report(
            &s,
            Err(KeptError::TooLarge {
                path: kept_path(d.path()),
                size: 2 << 20,
            }),
        );
        assert!(
            r.kept_error
                .as_deref()
                .unwrap()
                .contains("more than the 1048576")
        );
        assert_eq!(r.report["twin"]["state"], json!("unreadable"));
        assert_eq!(
            r.report["agent_sources"]["snapshotFrequency"],
            json!("default")
        );
    }
}
