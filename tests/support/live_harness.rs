//! The harness of the live tests: runs `azureiotsecurity run` against the real auditd socket
//! and collects what it prints.
//!
//! auditd 3.0.9's af_unix plugin serves ONE client at a time: a second `connect()` succeeds
//! but gets no data until the first client leaves, and auditd notices that only at its next
//! write (that event is lost). So every live test holds [`serial`] for its whole run, and
//! [`Module::start`] proves that the module is the client being served by running a marker
//! exec (`/bin/true azureiotsecurity-marker-<nonce>`) until the module prints its
//! ProcessCreate. [`Module::finish`] runs an end marker, waits for it, stops the module with
//! SIGTERM (which flushes everything in flight), checks its exit status, and validates every
//! event it printed with the reference schema validator.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;

/// auditd's af_unix socket as `scripts/setup-host.sh` configures it.
pub const SOCKET: &str = "/run/audit/audispd_events";
/// The rule key of the module's audit rules.
pub const RULE_KEY: &str = "azureiotsecurity";

/// How long the module may take to become the served client (a capture or another reader
/// holding the socket makes it wait).
const MARKER_TIMEOUT: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

/// Taken by every live test for its whole run: one socket client at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    // A test that panicked while holding it leaves nothing behind (its guards cleaned up).
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random hex token (marker nonces, user names).
pub fn nonce(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Run a command to completion; panics when it cannot be started.
pub fn output(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} {args:?}: {e}"))
}

/// Run a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = output(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// auditd must be running with its af_unix socket and the module's rules loaded; a live test
/// fails (never skips) otherwise.
pub fn require_auditd() {
    let meta = std::fs::metadata(SOCKET).unwrap_or_else(|e| {
        panic!(
            "auditd's af_unix socket {SOCKET} is missing ({e}): run scripts/setup-host.sh as root"
        )
    });
    assert!(
        meta.file_type().is_socket(),
        "{SOCKET} is not a socket: run scripts/setup-host.sh"
    );
    let status = run_ok("auditctl", &["-s"]);
    let pid = status
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .map(|p| p.trim().to_string())
        .unwrap_or_default();
    assert!(
        !pid.is_empty() && pid != "0",
        "auditd is not registered with the kernel (auditctl -s: pid {pid:?}): run scripts/setup-host.sh"
    );
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "auditd",
        "the audit pid {pid} is not auditd: run scripts/setup-host.sh"
    );
    let enabled = status
        .lines()
        .find_map(|l| l.strip_prefix("enabled "))
        .unwrap_or_default();
    assert_ne!(
        enabled.trim(),
        "0",
        "audit is disabled: run scripts/setup-host.sh"
    );
    let rules = run_ok("auditctl", &["-l"]);
    assert!(
        rules.contains(&format!("key={RULE_KEY}")),
        "the module's audit rules are not loaded (auditctl -l: {rules}): run scripts/setup-host.sh"
    );
}

/// The Payload object of an event.
pub fn payload(ev: &Value) -> &Value {
    &ev["Payload"][0]
}

/// The event's Name.
pub fn name(ev: &Value) -> &str {
    ev["Name"].as_str().unwrap_or_default()
}

/// A string field of the payload ("" when absent).
pub fn field<'a>(ev: &'a Value, key: &str) -> &'a str {
    payload(ev)[key].as_str().unwrap_or_default()
}

/// An ExtraDetails value of the payload.
pub fn extra<'a>(ev: &'a Value, key: &str) -> Option<&'a str> {
    payload(ev)["ExtraDetails"][key].as_str()
}

/// The ProcessId of the payload.
pub fn pid_of(ev: &Value) -> i64 {
    payload(ev)["ProcessId"].as_i64().unwrap_or(-1)
}

/// Whether `ev` is the ProcessCreate of exactly this command line.
pub fn is_exec_of(ev: &Value, command_line: &str) -> bool {
    name(ev) == "ProcessCreate" && field(ev, "CommandLine") == command_line
}

/// The auid/ses text of an id in /proc (4294967295 is "unset", as the module writes it).
pub fn proc_id_text(file: &str) -> String {
    let s = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let s = s.trim();
    if s == "4294967295" {
        "unset".to_string()
    } else {
        s.to_string()
    }
}

#[derive(Default)]
struct State {
    events: Vec<Value>,
    /// stdout lines that are not JSON objects.
    bad_lines: Vec<String>,
    stderr: String,
    stdout_done: bool,
    stderr_done: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a stopped module left.
pub struct Finished {
    /// Every event it printed, in order.
    pub events: Vec<Value>,
    /// Its log (stderr), ANSI colours removed.
    pub stderr: String,
    /// The fields of its final statistics log line.
    pub stats: BTreeMap<String, u64>,
}

impl Finished {
    /// Events matching `pred`.
    pub fn select(&self, pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
        self.events.iter().filter(|e| pred(e)).collect()
    }

    /// A statistics field that must be there.
    pub fn stat(&self, key: &str) -> u64 {
        *self.stats.get(key).unwrap_or_else(|| {
            panic!(
                "the module's statistics line has no {key}: {:?}\n{}",
                self.stats, self.stderr
            )
        })
    }
}

/// A running `azureiotsecurity run`; killed when dropped (a test that panics leaves no module
/// behind).
pub struct Module {
    child: Option<Child>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    nonce: String,
    started: Instant,
}

impl Module {
    /// Start the module with extra environment and wait until it is the client auditd serves.
    pub fn start(env: &[(&str, &str)]) -> Module {
        let mut m = Module::spawn(env);
        m.wait_marker("begin");
        m
    }

    /// Start the module without waiting for the begin marker.
    pub fn spawn(env: &[(&str, &str)]) -> Module {
        require_auditd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"));
        cmd.args(["run", "--events"]);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AZUREIOTSECURITY_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("TZ", "UTC")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("AZUREIOTSECURITY_AUDIT__SOCKET_PATH", SOCKET);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn azureiotsecurity run");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        });
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let s1 = shared.clone();
        let t1 = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut st = s1.lock();
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.is_object() => st.events.push(v),
                    _ => st.bad_lines.push(line),
                }
                drop(st);
                s1.cond.notify_all();
            }
            s1.lock().stdout_done = true;
            s1.cond.notify_all();
        });
        let s2 = shared.clone();
        let t2 = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut st = s2.lock();
                st.stderr.push_str(&strip_ansi(&line));
                st.stderr.push('\n');
                drop(st);
                s2.cond.notify_all();
            }
            s2.lock().stderr_done = true;
            s2.cond.notify_all();
        });
        Module {
            child: Some(child),
            shared,
            threads: vec![t1, t2],
            nonce: nonce(8),
            started: Instant::now(),
        }
    }

    /// Its process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log so far.
    pub fn stderr(&self) -> String {
        self.shared.lock().stderr.clone()
    }

    /// Wait until an event matching `pred` has been printed (the first one); `None` after
    /// `timeout`.
    pub fn wait_event(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut checked = 0;
        let mut st = self.shared.lock();
        loop {
            if let Some(e) = st.events[checked..].iter().find(|e| pred(e)) {
                return Some(e.clone());
            }
            checked = st.events.len();
            let now = Instant::now();
            if now >= deadline || st.stdout_done {
                return None;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait until the log contains `text`; false after `timeout`.
    pub fn wait_log(&self, timeout: Duration, text: &str) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if st.stderr.contains(text) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.stderr_done {
                return false;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("module running");
        if let Ok(Some(status)) = child.try_wait() {
            // Let the log reader finish so that the log is complete.
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut st = self.shared.lock();
            while !st.stderr_done && Instant::now() < deadline {
                st = self
                    .shared
                    .cond
                    .wait_timeout(st, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            drop(st);
            panic!(
                "azureiotsecurity run exited early ({status}):\n{}",
                self.stderr()
            );
        }
    }

    /// The marker command line of `what` ("begin", "end").
    pub fn marker(&self, what: &str) -> String {
        format!("/bin/true azureiotsecurity-marker-{}-{what}", self.nonce)
    }

    /// Run the marker exec until the module prints its ProcessCreate. The first exec after
    /// a previous client left may be lost (auditd notices the departure at that write).
    pub fn wait_marker(&mut self, what: &str) {
        let line = self.marker(what);
        let arg = line.strip_prefix("/bin/true ").expect("marker");
        let deadline = Instant::now() + MARKER_TIMEOUT;
        let mut tries = 0;
        loop {
            self.assert_running();
            tries += 1;
            let st = Command::new("/bin/true")
                .arg(arg)
                .status()
                .expect("run the marker");
            assert!(st.success());
            if self
                .wait_event(Duration::from_millis(300), |e| is_exec_of(e, &line))
                .is_some()
            {
                return;
            }
            if Instant::now() > deadline {
                let ss = output("ss", &["-x", "-p"]);
                let holders: Vec<String> = String::from_utf8_lossy(&ss.stdout)
                    .lines()
                    .filter(|l| l.contains(SOCKET))
                    .map(str::to_string)
                    .collect();
                panic!(
                    "the module did not see its {what} marker in {MARKER_TIMEOUT:?} ({tries} tries): \
                     is another reader holding {SOCKET}? {holders:#?}\nmodule log:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// End marker, SIGTERM, wait for exit 0, and validate every event printed.
    pub fn finish(mut self) -> Finished {
        self.wait_marker("end");
        let mut child = self.child.take().expect("module running");
        let pid = child.id().to_string();
        let st = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for the module") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                let _ = child.wait();
                panic!(
                    "the module did not exit within 30 s of SIGTERM:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for t in self.threads.drain(..) {
            t.join().expect("reader thread");
        }
        let st = std::mem::take(&mut *self.shared.lock());
        assert!(
            status.success(),
            "the module exited with {status} after SIGTERM:\n{}",
            st.stderr
        );
        assert!(
            st.bad_lines.is_empty(),
            "stdout lines that are not JSON events: {:?}",
            st.bad_lines
        );
        let stats = parse_stats(&st.stderr);
        let fin = Finished {
            events: st.events,
            stderr: st.stderr,
            stats,
        };
        assert!(
            !fin.stats.is_empty(),
            "no final statistics line in the log:\n{}",
            fin.stderr
        );
        if std::env::var_os("LIVE_TEST_DUMP_EVENTS").is_some() {
            for e in &fin.events {
                eprintln!("{e}");
            }
        }
        validate_all(&fin.events);
        let mut ids = std::collections::BTreeSet::new();
        for e in &fin.events {
            let id = e["Id"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_string()),
                "two events with the Id {id}: {e}"
            );
        }
        eprintln!(
            "module: {} events in {:.1} s; {:?}",
            fin.events.len(),
            self.started.elapsed().as_secs_f64(),
            fin.stats
        );
        fin
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status();
            let _ = child.wait();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
            if std::thread::panicking() {
                eprintln!("module log:\n{}", self.shared.lock().stderr);
            }
        }
    }
}

/// Every event, wrapped in a message envelope, must validate against the official schemas.
pub fn validate_all(events: &[Value]) {
    if events.is_empty() {
        return;
    }
    let messages: Vec<String> = events
        .iter()
        .map(|e| support::envelope(std::slice::from_ref(e)))
        .collect();
    let verdicts = support::reference_validate(&messages);
    let bad: Vec<String> = verdicts
        .iter()
        .zip(&messages)
        .filter(|(v, _)| v.as_str() != "ok")
        .take(5)
        .map(|(v, m)| format!("{v}\n  {m}"))
        .collect();
    let n_bad = verdicts.iter().filter(|v| v.as_str() != "ok").count();
    assert_eq!(
        n_bad,
        0,
        "{n_bad} of {} live events fail the reference schema validation, e.g.:\n{}",
        events.len(),
        bad.join("\n")
    );
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The numeric key=value fields of the last statistics line.
fn parse_stats(log: &str) -> BTreeMap<String, u64> {
    let statistics = |l: &&str| l.contains(" statistics ") && l.contains(" bytes_read=");
    let Some(line) = log.lines().rev().find(statistics) else {
        return BTreeMap::new();
    };
    line.split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Compile a C program of `tests/programs` into `dir`; returns the executable's path.
pub fn compile(program: &str, dir: &Path, extra_flags: &[&str]) -> std::path::PathBuf {
    let src = support::root().join("tests/programs").join(program);
    let exe = dir.join(program.trim_end_matches(".c"));
    let mut args: Vec<&str> = extra_flags.to_vec();
    let src_s = src.to_str().expect("utf-8 path");
    let exe_s = exe.to_str().expect("utf-8 path");
    args.extend(["-O2", "-Wall", "-Wextra", "-o", exe_s, src_s]);
    run_ok("gcc", &args);
    exe
}

/// The pid auditd registered with the kernel (`auditctl -s`), 0 when none.
pub fn auditd_pid() -> u32 {
    run_ok("auditctl", &["-s"])
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
}

/// The inode of the audit socket (auditd re-creates the socket on every start).
pub fn socket_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(SOCKET)
        .unwrap_or_else(|e| panic!("{SOCKET}: {e}"))
        .ino()
}

/// Restart auditd as `scripts/setup-host.sh` starts it: SIGTERM, wait for it to leave, start
/// `/sbin/auditd` again and wait until it is registered and its socket is there. auditd keeps
/// every descriptor it inherits, so it is started with none but stdin/out/err (the test runs
/// under `flock /tmp/auditd-live.lock`, whose descriptor it would otherwise hold for good).
pub fn restart_auditd() {
    let pid = auditd_pid();
    assert_ne!(pid, 0, "auditd is not running");
    run_ok("kill", &["-TERM", &pid.to_string()]);
    let gone = wait_until(Duration::from_secs(20), || {
        auditd_pid() == 0 && !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(
        gone,
        "auditd (pid {pid}) did not exit within 20 s of SIGTERM"
    );
    run_ok(
        "bash",
        &[
            "-c",
            r#"for fd in /proc/$BASHPID/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done; exec /sbin/auditd </dev/null >/dev/null 2>&1"#,
        ],
    );
    let up = wait_until(Duration::from_secs(20), || {
        auditd_pid() != 0 && std::fs::metadata(SOCKET).is_ok_and(|m| m.file_type().is_socket())
    });
    assert!(
        up,
        "auditd did not come back with its socket {SOCKET} within 20 s"
    );
}

/// Poll `cond` every 50 ms until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
