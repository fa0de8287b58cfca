//! Reading `deployment.template.json`: the module's entry, its createOptions and its resource
//! limits, for the manifest tests (quick tier) and the load test (full suite).
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::{Map, Value};

/// The module's name in the manifest: Defender for IoT reads its twin under this name, and
/// the route names it.
pub const MODULE: &str = "azureiotsecurity";

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

pub fn manifest() -> Value {
    let text = read("deployment.template.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("deployment.template.json: {e}"))
}

/// `v` at `path`, or a failure naming the path.
pub fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("deployment.template.json has no {}", path.join(" / ")))
    })
}

pub fn modules_content(m: &Value) -> &Map<String, Value> {
    at(m, &["modulesContent"]).as_object().unwrap()
}

pub fn agent_desired(m: &Value) -> &Value {
    at(m, &["modulesContent", "$edgeAgent", "properties.desired"])
}

pub fn module(m: &Value) -> &Value {
    at(agent_desired(m), &["modules", MODULE])
}

/// A module's createOptions as a JSON object: edgeAgent takes a string (at most
/// [`TWIN_MAX_VALUE_SIZE`] bytes) holding JSON.
pub fn create_options(module: &Value) -> Value {
    let settings = at(module, &["settings"]);
    let raw = settings
        .get("createOptions")
        .and_then(Value::as_str)
        .expect("createOptions is a string, as the twin holds it");
    assert!(
        raw.len() <= TWIN_MAX_VALUE_SIZE,
        "createOptions is {} bytes: edgeAgent takes at most {TWIN_MAX_VALUE_SIZE} per field",
        raw.len()
    );
    let v: Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("createOptions: {e}"));
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
    let create = create_options(module(m));
    let host = at(&create, &["HostConfig"]);
    let number = |key: &str| host.get(key).and_then(Value::as_u64).unwrap_or(0);
    Limits {
        memory: number("Memory"),
        memory_swap: number("MemorySwap"),
        nano_cpus: number("NanoCpus"),
        pids: number("PidsLimit"),
    }
}
