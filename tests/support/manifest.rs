//! Reading the deployment templates (`deployment.template.json`, production, and
//! `deployment.debug.template.json`, the same plus debug logging, try-out and the echo module):
//! the modules' entries, their createOptions, the routes and the resource limits, for the
//! manifest tests (quick tier) and the load test (full suite).
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::{Map, Value};

/// The module's name in the manifest: Defender for IoT reads its twin under this name, and
/// the route names it.
pub const MODULE: &str = "azureiotsecurity";

/// The echo module's name in the debug template (the route's `/modules/echo/inputs/…`).
pub const ECHO: &str = "echo";

/// The production template.
pub const TEMPLATE: &str = "deployment.template.json";
/// The debug template: the production one plus debug logging, try-out and the echo module.
pub const DEBUG_TEMPLATE: &str = "deployment.debug.template.json";
/// Both templates: what holds for the module holds in each.
pub const TEMPLATES: [&str; 2] = [TEMPLATE, DEBUG_TEMPLATE];

/// edgeAgent's longest twin string (`TwinMaxValueSize` in Azure/iotedge
/// edge-agent/src/Microsoft.Azure.Devices.Edge.Agent.Docker/Constants.cs); a longer
/// createOptions has to be split into createOptions01…
pub const TWIN_MAX_VALUE_SIZE: usize = 512;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(name: &str) -> String {
    std::fs::read_to_string(root().join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// A template (one of [`TEMPLATES`]) as JSON.
pub fn template(name: &str) -> Value {
    let text = read(name);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The production template.
pub fn manifest() -> Value {
    template(TEMPLATE)
}

/// The debug template.
pub fn debug_manifest() -> Value {
    template(DEBUG_TEMPLATE)
}

/// `v` at `path`, or a failure naming the path.
pub fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("the manifest has no {}", path.join(" / ")))
    })
}

pub fn modules_content(m: &Value) -> &Map<String, Value> {
    at(m, &["modulesContent"]).as_object().unwrap()
}

pub fn agent_desired(m: &Value) -> &Value {
    at(m, &["modulesContent", "$edgeAgent", "properties.desired"])
}

pub fn module(m: &Value) -> &Value {
    module_named(m, MODULE)
}

/// The entry of the module `name` in `$edgeAgent`'s modules.
pub fn module_named<'a>(m: &'a Value, name: &str) -> &'a Value {
    at(agent_desired(m), &["modules", name])
}

/// The names of the modules the manifest deploys (system modules aside), sorted.
pub fn module_names(m: &Value) -> Vec<String> {
    at(agent_desired(m), &["modules"])
        .as_object()
        .expect("modules is an object")
        .keys()
        .cloned()
        .collect()
}

/// `$edgeHub`'s routes as (name, route text); a route may be a string or `{ "route": … }`.
pub fn routes(m: &Value) -> Vec<(String, String)> {
    at(
        m,
        &["modulesContent", "$edgeHub", "properties.desired", "routes"],
    )
    .as_object()
    .expect("routes is an object")
    .iter()
    .map(|(name, r)| {
        let text = match r {
            Value::String(s) => s.clone(),
            other => at(other, &["route"])
                .as_str()
                .expect("a route is a string")
                .to_owned(),
        };
        (name.clone(), text)
    })
    .collect()
}

/// A module's createOptions as a JSON object: edgeAgent takes a string (at most
/// [`TWIN_MAX_VALUE_SIZE`] bytes a field) holding JSON, a longer one split into
/// `createOptions01` … `createOptions07` after it, joined in order (iotedgedev's
/// `convert_create_options`).
pub fn create_options(module: &Value) -> Value {
    let settings = at(module, &["settings"]);
    let mut raw = String::new();
    for (i, key) in std::iter::once("createOptions".to_owned())
        .chain((1..=7).map(|n| format!("createOptions{n:02}")))
        .enumerate()
    {
        let Some(part) = settings.get(&key) else {
            break;
        };
        let part = part
            .as_str()
            .unwrap_or_else(|| panic!("{key} is a string, as the twin holds it"));
        assert!(
            part.len() <= TWIN_MAX_VALUE_SIZE,
            "{key} is {} bytes: edgeAgent takes at most {TWIN_MAX_VALUE_SIZE} per field",
            part.len()
        );
        assert!(i == 0 || !raw.is_empty());
        raw.push_str(part);
    }
    assert!(
        !raw.is_empty(),
        "createOptions is a string, as the twin holds it"
    );
    let v: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("createOptions: {e}"));
    assert!(v.is_object(), "createOptions is not an object: {v}");
    v
}

/// The module's limits in the manifest: `HostConfig.Memory` (bytes), `MemorySwap`,
/// `NanoCpus`, `PidsLimit`; 0 where missing or not a positive integer (Docker's "no
/// limit").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory: u64,
    pub memory_swap: u64,
    pub nano_cpus: u64,
    pub pids: u64,
}

pub const LIMIT_KEYS: [&str; 4] = ["Memory", "MemorySwap", "NanoCpus", "PidsLimit"];

pub fn limits(m: &Value) -> Limits {
    limits_of(module(m))
}

/// [`limits`] of any module's entry.
pub fn limits_of(module: &Value) -> Limits {
    let create = create_options(module);
    let host = at(&create, &["HostConfig"]);
    let number = |key: &str| host.get(key).and_then(Value::as_u64).unwrap_or(0);
    Limits {
        memory: number("Memory"),
        memory_swap: number("MemorySwap"),
        nano_cpus: number("NanoCpus"),
        pids: number("PidsLimit"),
    }
}
