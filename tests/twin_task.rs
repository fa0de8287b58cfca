//! The twin task in the running module (src/twin.rs): the module binary `run` against the
//! Qpid Proton edgeHub stand-in, which answers twin requests as edgeHub does. The module
//! GETs the twin, subscribes (PUT) and reports (PATCH) the configuration in force, in the
//! Node SDK's order; a GET that fails with a status is logged and retried until it succeeds;
//! the desired configuration is kept in the data directory. The end-to-end behaviour
//! (patches while events flow, gaps, restarts) is tests/twin_live.rs's.
//!
//! Needs `.venv` with python-qpid-proton (TLS) and openssl: scripts/install-test-deps.sh.
//! Without them the test fails, never skips.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use azureiotsecurity::config::agent::OBJECT_NAME;
use azureiotsecurity::config::settings::Settings;
use azureiotsecurity::config::twin::{DesiredState, load_kept};
use azureiotsecurity::twin::merge;
use serde_json::{Value, json};
use support::standin::{
    self, Certs, DEVICE, EdgeHub, HUB, KEY, MODULE, Module, Workload, hub_options,
};

/// The module's environment: the stand-ins, a data directory, no audit socket (nothing to
/// read: the twin does not need events), fast reconnections and twin retries.
fn env(workload: &Workload, port: u16, dir: &Path, data: &Path) -> Vec<(String, String)> {
    let mut env = standin::edge_env(workload, HUB, DEVICE, MODULE, port);
    for (k, v) in [
        (
            "AZUREIOTSECURITY_AUDIT__SOCKET_PATH",
            dir.join("no-audit-socket").display().to_string(),
        ),
        (
            "AZUREIOTSECURITY_MODULE__DATA_DIR",
            data.display().to_string(),
        ),
        ("AZUREIOTSECURITY_EDGEHUB__RECONNECT_MIN_MS", "200".into()),
        ("AZUREIOTSECURITY_EDGEHUB__RECONNECT_MAX_MS", "1000".into()),
        ("RUST_LOG", "info".into()),
    ] {
        env.push((k.to_owned(), v));
    }
    env
}

/// The settings the module reads from `env` (its `AZUREIOTSECURITY_*` part).
fn settings_of(env: &[(String, String)]) -> Settings {
    let map: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("AZUREIOTSECURITY_"))
        .cloned()
        .collect();
    Settings::load_from(None, Some(map)).expect("the test's settings")
}

/// Requests of the twin, in order: (operation, reply status).
fn exchange(hub: &EdgeHub) -> Vec<(String, Value)> {
    hub.twin_frames()
        .iter()
        .filter(|r| r["kind"] == "twin-request")
        .map(|r| {
            (
                r["operation"].as_str().unwrap_or_default().to_owned(),
                r["reply_status"].clone(),
            )
        })
        .collect()
}

fn without_version(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("$version");
    }
    v
}

/// The statistics line's value of `key` (the last line: the one at stop).
fn statistic(log: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(" statistics "))?;
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

/// The twin's first two GETs fail with 503 (the stand-in is told before the module
/// connects): each is logged with its status and retried; the third succeeds, then the PUT
/// and the reported PATCH follow, in that order. The reported properties the stand-in holds
/// are what the same settings and desired document give `DesiredState::reported`, the
/// desired configuration is kept in the data directory, and the counters at stop say so.
#[test]
fn the_module_gets_the_twin_retrying_failures_subscribes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let certs = Certs::make(dir.path());
    let desired = json!({
        OBJECT_NAME: {
            "eventPriorityProcessCreate": {"value": "Off"},
            "highPriorityMessageFrequency": {"value": "PT1M"}
        },
        "$version": 3
    });
    let mut opts = hub_options(0);
    opts.twin_desired = desired.clone();
    opts.control_at_start =
        vec![json!({"cmd": "fail", "operation": "GET", "status": 503, "count": 2})];
    let hub = EdgeHub::start(dir.path(), &certs, &opts);
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let env = env(&workload, hub.port, dir.path(), &data);
    let mut module = Module::start(dir.path(), "twin", &env, &["run"]);

    let reported = hub.wait_reported("the configuration in force", Duration::from_secs(60), |r| {
        r[OBJECT_NAME]["eventPriorityProcessCreate"]["value"] == "Off"
    });
    assert_eq!(
        exchange(&hub),
        [
            ("GET".to_owned(), json!(503)),
            ("GET".to_owned(), json!(503)),
            ("GET".to_owned(), json!(200)),
            ("PUT".to_owned(), json!(200)),
            ("PATCH".to_owned(), json!(204)),
        ],
        "{:#?}",
        hub.twin_frames()
    );

    // What the module reported is what its settings and the twin's document give.
    let agent_id = std::fs::read_to_string(data.join(azureiotsecurity::agent_id::FILE))
        .ok()
        .and_then(|t| uuid::Uuid::parse_str(t.trim()).ok())
        .expect("the module's AgentId in the data directory");
    let mut state = DesiredState::from_settings(&settings_of(&env));
    state.on_document(&desired);
    // As edgeHub merges a PATCH: a null (no last error) removes the key.
    let mut want = json!({});
    merge(
        &mut want,
        &state.reported(agent_id, env!("CARGO_PKG_VERSION")),
    );
    assert_eq!(without_version(&reported), want);
    assert_eq!(
        reported[OBJECT_NAME]["highPriorityMessageFrequency"]["value"],
        "PT1M"
    );

    // Kept for a restart while edgeHub is away.
    let kept = load_kept(&data)
        .expect("the kept file reads")
        .expect("a kept desired configuration");
    assert_eq!(kept.version, 3);
    let mut restored = DesiredState::from_settings(&settings_of(&env));
    restored.restore(kept);
    assert_eq!(restored.config(), state.config());

    let status = module.stop(Duration::from_secs(20));
    let log = module.output();
    assert!(status.success(), "{status:?}\n{log}");
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("W-TWIN-REQUEST"))
        .collect();
    assert_eq!(failures.len(), 2, "{log}");
    for l in &failures {
        assert!(
            l.contains("operation=\"GET\"") && l.contains("status=503"),
            "{l}"
        );
    }
    for (key, want) in [
        ("twin_gets", 1),
        ("twin_request_failures", 2),
        ("twin_reports", 1),
        ("twin_applied", 1),
    ] {
        assert_eq!(statistic(&log, key), Some(want), "{key}: {log}");
    }
}
