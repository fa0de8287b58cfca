//! The module's life with the module binary: settings it refuses before it starts, a task
//! that dies (the module ends, non-zero, so IoT Edge restarts it), and the stop on each
//! signal (SIGTERM, SIGHUP, a second SIGINT), with stdout that nobody reads and with an
//! edgeHub that cannot be reached. Every wait is bounded: a regression fails, it does not
//! hang the suite.

mod support;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The module binary with a clean logging environment.
fn module() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"));
    c.env_remove("RUST_LOG")
        .env_remove("RuntimeLogLevel")
        .env_remove("EdgeHubConnectionString")
        .env_remove("IotHubConnectionString")
        .env_remove("IOTEDGE_WORKLOADURI");
    c
}

/// The exit status within `limit`, or the process is killed and the test fails.
fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the module did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} failed");
}

/// Wait until `path` contains `needle` (the module's log), up to `limit`.
fn wait_for_text(path: &Path, needle: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < limit,
            "no {needle:?} within {limit:?}; the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A token lifetime an `Instant` cannot carry (1.2e19 s made the sender panic after
/// check-config had passed it) and the environment's 2e19 (read as u64::MAX) are refused
/// by check-config and by run, exit 1, naming the setting and its range.
#[test]
fn check_config_and_run_refuse_a_token_lifetime_beyond_a_day() {
    let dir = tempfile::tempdir().unwrap();
    for value in ["12000000000000000000", "20000000000000000000"] {
        let out = module()
            .arg("check-config")
            .env("AZUREIOTSECURITY_EDGEHUB__TOKEN_LIFETIME_SECS", value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "check-config {value}: {err}");
        assert!(
            err.contains("setting edgehub.token_lifetime_secs: must be from 10 to 86400"),
            "check-config {value}: {err}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");

        let mut child = module()
            .args(["run", "--print"])
            .env("AZUREIOTSECURITY_EDGEHUB__TOKEN_LIFETIME_SECS", value)
            .env(
                "AZUREIOTSECURITY_AUDIT__SOCKET_PATH",
                dir.path().join("none.sock"),
            )
            .env("AZUREIOTSECURITY_MODULE__DATA_DIR", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let st = wait_exit(&mut child, Duration::from_secs(20), "run");
        let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
        assert_eq!(st.code(), Some(1), "run {value}: {err}");
        assert!(
            err.contains("setting edgehub.token_lifetime_secs: must be from 10 to 86400"),
            "run {value}: {err}"
        );
    }
}

/// A task that really dies (the socket reader, made to panic by `debug.panic_task`) ends the
/// module with a non-zero status and E-TASK-ENDED naming it, within a bounded time; before,
/// nothing watched the tasks and the module stayed up without them.
#[test]
fn a_task_that_dies_ends_the_module_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("module.err");
    let mut child = module()
        .args(["run", "--print"])
        .env(
            "AZUREIOTSECURITY_AUDIT__SOCKET_PATH",
            dir.path().join("none.sock"),
        )
        .env("AZUREIOTSECURITY_MODULE__DATA_DIR", dir.path())
        .env("AZUREIOTSECURITY_DEBUG__PANIC_TASK", "reader")
        .env("AZUREIOTSECURITY_DEBUG__PANIC_TASK_AFTER_MS", "300")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let st = wait_exit(&mut child, Duration::from_secs(20), "a dead reader");
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(st.code(), Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("E-TASK-ENDED"))
        .unwrap_or_else(|| panic!("no E-TASK-ENDED in:\n{err}"));
    assert!(line.contains("task=\"reader\""), "{line}");
    assert!(
        err.contains(
            "the reader task ended: it panicked: debug.panic_task: the reader task was made to fail"
        ),
        "{err}"
    );
}
