//! The module's life with the module binary: settings it refuses before it starts, a task
//! that dies (the module ends, non-zero, so IoT Edge restarts it), and the stop on each
//! signal (SIGTERM, SIGHUP, a second SIGINT), with stdout that nobody reads and with an
//! edgeHub that cannot be reached. Every wait is bounded: a regression fails, it does not
//! hang the suite.

use crate::support;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use azureiotsecurity::outbox::Store;
use azureiotsecurity::outbox::sqlite::SqliteStore;
use support::audit_feed::AuditFeed;
use support::standin::{DEVICE, HUB, KEY, MODULE, Module, free_port};

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

/// Runs the module binary with `args` and `env`, no audit socket (`none.sock` in `dir`) and
/// `dir` as its data directory, stdout dropped: its exit status within 20 s (`what` names the
/// run in a failure) and what it wrote to stderr (through a file, which never fills up).
fn run_without_socket(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    what: &str,
) -> (ExitStatus, String) {
    let err_path = dir.join("module.err");
    let mut child = module()
        .args(args)
        .envs(env.iter().copied())
        .env("AZUREIOTSECURITY_AUDIT__SOCKET_PATH", dir.join("none.sock"))
        .env("AZUREIOTSECURITY_MODULE__DATA_DIR", dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let st = wait_exit(&mut child, Duration::from_secs(20), what);
    (st, std::fs::read_to_string(&err_path).unwrap())
}

/// An IoT Edge environment with the workload URI but not the rest (a manifest that lost
/// variables) is a configuration problem: exit 1 naming the missing variable, as the README
/// says (it was 2, the code of a failure while running).
#[test]
fn an_incomplete_iot_edge_environment_exits_1_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (st, err) = run_without_socket(
        dir.path(),
        &["run"],
        &[(
            "IOTEDGE_WORKLOADURI",
            "unix:///var/run/iotedge/workload.sock",
        )],
        "run",
    );
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("IOTEDGE_AUTHSCHEME is missing"), "{err}");
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

        let (st, err) = run_without_socket(
            dir.path(),
            &["run", "--print"],
            &[("AZUREIOTSECURITY_EDGEHUB__TOKEN_LIFETIME_SECS", value)],
            "run",
        );
        assert_eq!(st.code(), Some(1), "run {value}: {err}");
        assert!(
            err.contains("setting edgehub.token_lifetime_secs: must be from 10 to 86400"),
            "run {value}: {err}"
        );
    }
}

/// A task that really dies (the socket reader, the outgoing state's owner thread and the
/// twin task, made to panic by `debug.panic_task`) ends the module with a non-zero status and E-TASK-ENDED
/// naming it, within a bounded time; before, nothing watched the tasks and the module stayed
/// up without them.
#[test]
fn a_task_that_dies_ends_the_module_non_zero() {
    for task in ["reader", "owner", "twin"] {
        let dir = tempfile::tempdir().unwrap();
        // The owner thread and the twin task run only when sending: a gateway nobody serves
        // (the sender keeps retrying; the owner thread or the twin task is what dies).
        let port = free_port().to_string();
        let cs = format!(
            "HostName={HUB};DeviceId={DEVICE};ModuleId={MODULE};SharedAccessKey={KEY};GatewayHostName=localhost:{port}"
        );
        let mut env = vec![
            ("AZUREIOTSECURITY_DEBUG__PANIC_TASK", task),
            ("AZUREIOTSECURITY_DEBUG__PANIC_TASK_AFTER_MS", "300"),
        ];
        let args: &[&str] = if task == "owner" || task == "twin" {
            env.push(("EdgeHubConnectionString", &cs));
            &["run"]
        } else {
            &["run", "--print"]
        };
        let (st, err) = run_without_socket(dir.path(), args, &env, task);
        assert_eq!(st.code(), Some(2), "{task}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("E-TASK-ENDED"))
            .unwrap_or_else(|| panic!("{task}: no E-TASK-ENDED in:\n{err}"));
        assert!(line.contains(&format!("task=\"{task}\"")), "{line}");
        assert!(
            err.contains(&format!(
                "the {task} task ended: it panicked: debug.panic_task: the {task} task was made to fail"
            )),
            "{err}"
        );
    }
}

/// A gateway that accepts TCP connections and never says a word (no TLS handshake).
struct SilentGateway {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentGateway {
    fn start() -> SilentGateway {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        held.push(c);
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        SilentGateway {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentGateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const GRACE_MS: u64 = 1000;
/// What the stop may take beyond the grace: flushing into the outbox and exiting.
const STOP_MARGIN_MS: u64 = 1500;

/// The module sending through a gateway on `port` (a connection string: no workload API
/// needed), fed a real capture, with a 1 s grace and long connect and back-off times that
/// would hold the stop if the grace did not cut them.
fn start_sending(dir: &Path, tag: &str, port: u16, feed: &AuditFeed) -> Module {
    start_sending_with(dir, tag, port, feed, &[])
}

fn start_sending_with(
    dir: &Path,
    tag: &str,
    port: u16,
    feed: &AuditFeed,
    extra: &[(&str, &str)],
) -> Module {
    let cs = format!(
        "HostName={HUB};DeviceId={DEVICE};ModuleId={MODULE};SharedAccessKey={KEY};GatewayHostName=localhost:{port}"
    );
    let env: Vec<(String, String)> = [
        ("EdgeHubConnectionString", cs),
        (
            "AZUREIOTSECURITY_AUDIT__SOCKET_PATH",
            feed.path.display().to_string(),
        ),
        (
            "AZUREIOTSECURITY_MODULE__DATA_DIR",
            dir.join("data").display().to_string(),
        ),
        (
            "AZUREIOTSECURITY_EDGEHUB__SHUTDOWN_GRACE_MS",
            GRACE_MS.to_string(),
        ),
        (
            "AZUREIOTSECURITY_EDGEHUB__CONNECT_TIMEOUT_MS",
            "60000".into(),
        ),
        ("AZUREIOTSECURITY_EDGEHUB__RECONNECT_MIN_MS", "30000".into()),
        ("AZUREIOTSECURITY_EDGEHUB__RECONNECT_MAX_MS", "60000".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    .collect();
    Module::start(dir, tag, &env, &["run"])
}

/// After the stop: the outbox holds messages with the capture's events.
fn assert_flushed_into_the_outbox(dir: &Path, log: &str) {
    let store = SqliteStore::open(&dir.join("data/outbox.sqlite"), 1 << 30).unwrap();
    assert!(store.message_count() > 0, "nothing in the outbox:\n{log}");
}

/// SIGTERM with a gateway that accepts TCP and never answers: the module stops within the
/// grace (+ the margin), exit 0, what was in flight in the outbox. Before, the connection
/// attempt under way did not see the stop and held it until the sender was aborted 2 s
/// after the grace.
#[test]
fn the_stop_keeps_to_the_grace_with_a_silent_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = SilentGateway::start();
    let feed = AuditFeed::start(dir.path(), capture("exec_args.log"));
    let mut m = start_sending(dir.path(), "silent", gateway.port, &feed);
    let start = Instant::now();
    while gateway.accepted.load(Ordering::Relaxed) == 0 {
        assert!(m.alive(), "the module exited:\n{}", m.output());
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no connection to the gateway:\n{}",
            m.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for_text(&m.err, "connected to auditd", Duration::from_secs(20));
    let st = m.stop(Duration::from_millis(GRACE_MS + STOP_MARGIN_MS));
    assert_eq!(st.code(), Some(0), "{}", m.output());
    assert_flushed_into_the_outbox(dir.path(), &m.output());
}

/// SIGTERM with a gateway that refuses connections (nothing listens on its port): the stop
/// keeps to the grace. Before, the back-off wait after a refused attempt (here 15 to 60 s)
/// ran past the grace until the sender was aborted.
#[test]
fn the_stop_keeps_to_the_grace_with_a_refusing_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let feed = AuditFeed::start(dir.path(), capture("exec_args.log"));
    let mut m = start_sending(dir.path(), "refused", free_port(), &feed);
    wait_for_text(&m.err, "E-EDGEHUB-CONNECT", Duration::from_secs(20));
    wait_for_text(&m.err, "connected to auditd", Duration::from_secs(20));
    let st = m.stop(Duration::from_millis(GRACE_MS + STOP_MARGIN_MS));
    assert_eq!(st.code(), Some(0), "{}", m.output());
    assert_flushed_into_the_outbox(dir.path(), &m.output());
}

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(support::root().join("tests/data").join(name)).unwrap()
}

/// `run --print` fed a real capture (activity.log, aggregation off so the messages are
/// larger than a pipe holds).
fn start_printing(dir: &Path, feed: &AuditFeed, stdout: Stdio, err: &Path) -> Child {
    module()
        .args(["run", "--print"])
        .env("AZUREIOTSECURITY_AUDIT__SOCKET_PATH", &feed.path)
        .env("AZUREIOTSECURITY_MODULE__DATA_DIR", dir.join("data"))
        .env(
            "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDPROCESSCREATE",
            "false",
        )
        .env(
            "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDCONNECTIONCREATE",
            "false",
        )
        .env("RUST_LOG", "info")
        .stdout(stdout)
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .unwrap()
}

/// The non-periodic events of the printed messages.
fn printed_events(stdout: &str) -> usize {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .flat_map(|m| m["Events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["Category"] != "Periodic")
        .count()
}

/// SIGTERM while stdout is a pipe nobody reads (full after 64 KiB): the module stops
/// within the grace (3 s) + a margin, exit 0, and says what it could not print. Before, the
/// pipeline was stuck in the write and SIGTERM was never honoured.
#[test]
fn sigterm_is_honoured_while_stdout_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("module.err");
    let feed = AuditFeed::start(dir.path(), capture("activity.log"));
    let mut child = start_printing(dir.path(), &feed, Stdio::piped(), &err);
    // Held open and never read.
    let _unread = child.stdout.take().unwrap();
    wait_for_text(&err, "connected to auditd", Duration::from_secs(20));
    // The capture is in the queue or digested by now; either way the stop prints it.
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "TERM");
    let st = wait_exit(&mut child, Duration::from_millis(3000 + 2000), "SIGTERM");
    let log = std::fs::read_to_string(&err).unwrap();
    assert_eq!(st.code(), Some(0), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("W-STDOUT-BLOCKED") && l.contains("not printed"))
        .unwrap_or_else(|| panic!("no W-STDOUT-BLOCKED at stop:\n{log}"));
    assert!(
        line.contains("lines=") || line.contains("messages="),
        "{line}"
    );
}

/// SIGHUP stops like SIGTERM: exit 0, and what was in flight is printed (every event the
/// same capture gives in `replay --messages`). Before, SIGHUP killed the module (no status,
/// nothing printed).
#[test]
fn sighup_stops_like_sigterm_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("module.err");
    let out = dir.path().join("module.out");
    let feed = AuditFeed::start(dir.path(), capture("exec_args.log"));
    let mut child = start_printing(
        dir.path(),
        &feed,
        Stdio::from(std::fs::File::create(&out).unwrap()),
        &err,
    );
    wait_for_text(&err, "connected to auditd", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "HUP");
    let st = wait_exit(&mut child, Duration::from_secs(10), "SIGHUP");
    let log = std::fs::read_to_string(&err).unwrap();
    assert_eq!(st.code(), Some(0), "{log}");
    assert!(log.contains("signal=\"SIGHUP\""), "{log}");
    let replayed = module()
        .args(["replay", "--messages"])
        .arg(support::root().join("tests/data/exec_args.log"))
        .env(
            "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDPROCESSCREATE",
            "false",
        )
        .env(
            "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDCONNECTIONCREATE",
            "false",
        )
        .output()
        .unwrap();
    assert!(replayed.status.success());
    let want = printed_events(&String::from_utf8_lossy(&replayed.stdout));
    assert!(want > 0);
    assert_eq!(
        printed_events(&std::fs::read_to_string(&out).unwrap()),
        want,
        "{log}"
    );
}

/// A second SIGINT while the stop waits on an unreachable edgeHub (a 60 s grace) exits at
/// once, status 130. Before, it was ignored and the module kept to the grace.
#[test]
fn a_second_sigint_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = SilentGateway::start();
    let feed = AuditFeed::start(dir.path(), capture("exec_args.log"));
    let mut m = start_sending_with(
        dir.path(),
        "sigint",
        gateway.port,
        &feed,
        &[("AZUREIOTSECURITY_EDGEHUB__SHUTDOWN_GRACE_MS", "60000")],
    );
    wait_for_text(&m.err, "connected to auditd", Duration::from_secs(20));
    signal(&m.proc.child, "INT");
    wait_for_text(
        &m.err,
        "stopping: flushing what is in flight",
        Duration::from_secs(10),
    );
    signal(&m.proc.child, "INT");
    let st = wait_exit(&mut m.proc.child, Duration::from_secs(10), "second SIGINT");
    assert_eq!(st.code(), Some(130), "{}", m.output());
    assert!(m.output().contains("W-STOP-FORCED"), "{}", m.output());
}
