//! The module holds to the manifest's memory limit under load: the module binary runs on the
//! load capture (replayed, with the Proton edgeHub stand-in away, then back) and its peak RSS
//! is read, against the limit of both templates (production and debug). Needs the Proton stand-in (full suite); the manifest's other checks are in
//! `tests/quick/deployment_manifest.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

mod support;

use support::manifest::{TEMPLATES, limits, template};
use support::root;

/// What one run of the module under the load capture used.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // the fields not asserted on are printed for the README
struct Measured {
    /// VmHWM: the peak resident set, bytes.
    peak_rss: u64,
    /// Threads at the end (after sending).
    threads: u64,
    /// utime + stime while the capture was read, seconds.
    cpu_secs: f64,
    /// Wall time the capture took to be read, seconds.
    wall_secs: f64,
    records: u64,
    dropped_lines: u64,
    events_dropped: u64,
    messages_sent: u64,
}

/// The module binary: `MEASURE_MODULE_BIN` (to measure the release build) or the one
/// cargo built for the tests.
fn module_binary() -> PathBuf {
    std::env::var_os("MEASURE_MODULE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_azureiotsecurity")))
}

fn load_capture() -> Vec<u8> {
    use std::io::Read;
    let f = std::fs::File::open(root().join("tests/data/load.log.gz")).expect("load capture");
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut text)
        .expect("gunzip load.log.gz");
    text
}

/// The `/metrics` values, or none while it does not answer.
fn metrics(port: u16) -> BTreeMap<String, u64> {
    use std::io::{Read, Write};
    let mut out = BTreeMap::new();
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return out;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, v)) = line.split_once(' ')
            && let Ok(v) = v.trim().parse::<u64>()
        {
            out.insert(name.trim_start_matches("azureiotsecurity_").to_owned(), v);
        }
    }
    out
}

/// A `/proc/<pid>/status` field in bytes (`VmHWM:   12345 kB`).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"));
    kb * 1024
}

/// The `Threads:` count of `/proc/<pid>/status`.
fn proc_status_threads(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Threads in /proc/{pid}/status"))
}

/// utime + stime of `pid`, seconds (clock ticks of 100 Hz, as on every Linux build the
/// module targets).
fn proc_cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')').expect("stat has (comm)") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The load capture through `run` with the durable outbox at its default cap: edgeHub
/// (the Proton stand-in) is away while the capture is read, so the outbox fills and drops;
/// then it comes up and the module sends. `pace`: spread the capture over this long (its
/// own 15 s measures the CPU the real rate needs); none: all at once (the memory peak).
fn run_load(pace: Option<std::time::Duration>) -> Measured {
    use std::time::{Duration, Instant};
    use support::standin::{self, Certs, EdgeHub, HUB, KEY, Proc, Workload, hub_options};
    let text = load_capture();
    let lines = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, standin::MODULE, "g1", &certs.ca);
    let port = standin::free_port(); // edgeHub away: nothing listens here yet
    let metrics_port = standin::free_port();
    let feed = match pace {
        Some(over) => support::audit_feed::AuditFeed::paced(dir.path(), text, over),
        None => support::audit_feed::AuditFeed::start(dir.path(), text),
    };
    let mut env = standin::edge_env(&workload, HUB, standin::DEVICE, standin::MODULE, port);
    for (k, v) in [
        (
            "AZUREIOTSECURITY_AUDIT__SOCKET_PATH",
            feed.path.display().to_string(),
        ),
        (
            "AZUREIOTSECURITY_MODULE__DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("AZUREIOTSECURITY_METRICS__ENABLED", "true".to_owned()),
        (
            "AZUREIOTSECURITY_METRICS__LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        ),
        (
            "AZUREIOTSECURITY_EDGEHUB__RECONNECT_MIN_MS",
            "200".to_owned(),
        ),
        (
            "AZUREIOTSECURITY_EDGEHUB__RECONNECT_MAX_MS",
            "1000".to_owned(),
        ),
        ("RUST_LOG", "warn".to_owned()),
    ] {
        env.push((k.to_owned(), v));
    }
    let child = std::process::Command::new(module_binary())
        .arg("run")
        .env_remove("RuntimeLogLevel")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::fs::File::create(dir.path().join("module.out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("module.err")).unwrap())
        .spawn()
        .expect("start the module");
    let mut module = Proc {
        child,
        name: "module",
    };
    let pid = module.child.id();
    let log = || std::fs::read_to_string(dir.path().join("module.err")).unwrap_or_default();
    let wait = |what: &str,
                limit: Duration,
                module: &mut Proc,
                f: &dyn Fn(&BTreeMap<String, u64>) -> bool| {
        let start = Instant::now();
        loop {
            let m = metrics(metrics_port);
            if f(&m) {
                return m;
            }
            assert!(
                module.child.try_wait().ok().flatten().is_none(),
                "the module exited waiting for {what}:\n{}",
                log()
            );
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; metrics {m:?}\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let read_all = |m: &BTreeMap<String, u64>| {
        m.get("audit_records_read_total").copied().unwrap_or(0)
            + m.get("audit_lines_dropped_total").copied().unwrap_or(0)
            >= lines
    };
    let started = Instant::now();
    let cpu_before = proc_cpu_secs(pid);
    let m = wait(
        "the whole capture to be read",
        Duration::from_secs(600),
        &mut module,
        &read_all,
    );
    let wall_secs = started.elapsed().as_secs_f64();
    let cpu_secs = proc_cpu_secs(pid) - cpu_before;
    // Then edgeHub comes up and the module sends what the outbox holds.
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(port));
    let sent = wait(
        "messages sent after edgeHub came up",
        Duration::from_secs(120),
        &mut module,
        &|m| m.get("messages_sent_total").copied().unwrap_or(0) >= 3,
    );
    let peak_rss = proc_status_bytes(pid, "VmHWM");
    let threads = proc_status_threads(pid);
    module.terminate();
    drop(hub);
    Measured {
        peak_rss,
        threads,
        cpu_secs,
        wall_secs,
        records: m.get("audit_records_read_total").copied().unwrap_or(0),
        dropped_lines: m.get("audit_lines_dropped_total").copied().unwrap_or(0),
        events_dropped: sent.get("events_dropped_high_total").copied().unwrap_or(0)
            + sent.get("events_dropped_low_total").copied().unwrap_or(0),
        messages_sent: sent.get("messages_sent_total").copied().unwrap_or(0),
    }
}

#[test]
fn the_module_stays_under_half_the_manifest_memory_at_the_load_peak() {
    // The production and the debug template run the module under these limits: the
    // smallest Memory of the two is the one it must hold to.
    let memory = TEMPLATES
        .iter()
        .map(|name| limits(&template(name)).memory)
        .min()
        .expect("two templates");
    assert!(memory > 0, "the templates set a Memory limit");
    let m = run_load(None);
    eprintln!("load capture, all at once: {m:?}");
    assert!(m.records > 0 && m.messages_sent > 0, "{m:?}");
    assert!(
        m.peak_rss * 2 < memory,
        "peak RSS {} MiB is not under half the manifest's Memory ({} MiB): {m:?}",
        m.peak_rss >> 20,
        memory >> 20
    );
}

/// The measurement behind the README's numbers, with the release binary:
/// `cargo build --release --bin azureiotsecurity && MEASURE_MODULE_BIN=target/release/azureiotsecurity cargo test --test deployment_load measure -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement for the README, run by hand with the release binary"]
fn measure_the_load_capture() {
    let burst = run_load(None);
    eprintln!("all at once: {burst:?}");
    let paced = run_load(Some(std::time::Duration::from_secs(15)));
    eprintln!("paced over 15 s: {paced:?}");
}
