//! Issue 12 end to end: the module binary (`run`) configured live through its module twin by
//! the Qpid Proton edgeHub stand-in (tests/standin/edgehub.py: it answers the twin as edgeHub
//! does and pushes desired patches from the test's control file), fed through a replay audit
//! socket with the real `activity.log` capture (150 s of an ordinary device: ProcessCreate and
//! ConnectionCreate; tests/data/README.md) and a few smaller real captures.
//!
//! What makes messages come quickly, said once: `debug.short_agent_intervals` (as the other
//! module-binary tests), agent frequencies and aggregation intervals of 10 s (the agent
//! configuration's minimums, so the same values are valid from the twin), the agent settings
//! given in the environment (the "env" layer under the twin). The long "old" period the
//! frequency test starts from is 5 minutes.
//!
//! Needs `.venv` with python-qpid-proton (TLS) and openssl (scripts/install-test-deps.sh):
//! without them the tests fail, never skip. Every wait is bounded; the bounds are generous
//! (2 shared cores) and never a measure of speed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::standin::{
    self, Certs, DEVICE, EdgeHub, EdgeHubOptions, HUB, KEY, MODULE, Module, Workload, free_port,
    hub_options,
};

/// The twin's configuration object (`azureiotsecurity_schema.json`).
use azureiotsecurity::config::agent::OBJECT_NAME as CONFIG;
/// The operator's status object beside it in the reported properties (issue 12 point 6).
use azureiotsecurity::config::twin::STATUS_NAME as STATUS;
/// The generous bound of a wait for something the module does on its own (a reported patch,
/// a message due at a 10 s frequency): far above what it needs, far below the 5 minutes of
/// the "old" period the frequency test tells apart.
const WAIT: Duration = Duration::from_secs(90);

/// A replay audit socket that serves what the test gives it, when it gives it: stage by
/// stage (each spread evenly over a duration), to the module connected at the time. Unlike
/// `support::audit_feed`, a test can apply a twin change between two parts of a capture and
/// know which events were derived under which configuration.
struct StagedFeed {
    path: PathBuf,
    tx: Option<mpsc::Sender<(Vec<u8>, Duration)>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StagedFeed {
    fn start(dir: &Path) -> StagedFeed {
        let path = dir.join("audit.sock");
        let listener = UnixListener::bind(&path).expect("bind the audit feed socket");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<(Vec<u8>, Duration)>();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut client: Option<std::os::unix::net::UnixStream> = None;
            while !s.load(Ordering::Relaxed) {
                if let Ok((c, _)) = listener.accept() {
                    let _ = c.set_nonblocking(false);
                    client = Some(c); // a reconnecting module: the newest connection
                }
                let Some(c) = client.as_mut() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let Ok((text, over)) = rx.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
                let gap = over / u32::try_from(lines.len().max(1)).unwrap_or(1);
                for l in lines {
                    if s.load(Ordering::Relaxed) || c.write_all(l).is_err() {
                        break;
                    }
                    std::thread::sleep(gap);
                }
            }
        });
        StagedFeed {
            path,
            tx: Some(tx),
            stop,
            thread: Some(thread),
        }
    }

    /// Serve `text`, its lines spread over `over`, after what was given before.
    fn send(&self, text: &[u8], over: Duration) {
        self.tx
            .as_ref()
            .expect("the feed is running")
            .send((text.to_vec(), over))
            .expect("the feed thread is alive");
    }
}

impl Drop for StagedFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The certificates, the workload stand-in and the module's data directory of one test.
struct Rig {
    dir: tempfile::TempDir,
    certs: Certs,
    workload: Workload,
    data: PathBuf,
    metrics_port: u16,
}

impl Rig {
    fn new() -> Rig {
        standin::require_proton();
        let dir = tempfile::tempdir().expect("a temp dir");
        let certs = Certs::make(dir.path());
        let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
        let data = dir.path().join("data");
        Rig {
            dir,
            certs,
            workload,
            data,
            metrics_port: free_port(),
        }
    }

    /// The edgeHub stand-in on `port` (0: any) whose twin starts with `desired`.
    fn hub(&self, port: u16, desired: Value, tweak: impl FnOnce(&mut EdgeHubOptions)) -> EdgeHub {
        let mut o = hub_options(port);
        o.twin_desired = desired;
        tweak(&mut o);
        EdgeHub::start(self.dir.path(), &self.certs, &o)
    }

    /// `run` against edgeHub on `port`, reading `feed`, with the agent settings `agent`
    /// (`AZUREIOTSECURITY_AGENT__<KEY>`).
    fn module(&self, tag: &str, port: u16, feed: &Path, agent: &[(&str, &str)]) -> Module {
        let mut env = standin::edge_env(&self.workload, HUB, DEVICE, MODULE, port);
        let listen = format!("127.0.0.1:{}", self.metrics_port);
        for (k, v) in [
            (
                "AZUREIOTSECURITY_AUDIT__SOCKET_PATH",
                feed.display().to_string(),
            ),
            (
                "AZUREIOTSECURITY_MODULE__DATA_DIR",
                self.data.display().to_string(),
            ),
            ("AZUREIOTSECURITY_EDGEHUB__RECONNECT_MIN_MS", "200".into()),
            ("AZUREIOTSECURITY_EDGEHUB__RECONNECT_MAX_MS", "1000".into()),
            (
                "AZUREIOTSECURITY_DEBUG__SHORT_AGENT_INTERVALS",
                "true".into(),
            ),
            ("AZUREIOTSECURITY_METRICS__ENABLED", "true".into()),
            ("AZUREIOTSECURITY_METRICS__LISTEN", listen),
            ("RUST_LOG", "info".into()),
        ] {
            env.push((k.to_owned(), v));
        }
        for (k, v) in agent {
            env.push((
                format!("AZUREIOTSECURITY_AGENT__{}", k.to_uppercase()),
                v.to_string(),
            ));
        }
        Module::start(self.dir.path(), tag, &env, &["run"])
    }

    /// Wait until `/metrics` satisfies `f` (the module publishes its counters each second).
    fn wait_metrics(&self, m: &mut Module, what: &str, f: impl Fn(&Metrics) -> bool) -> Metrics {
        let start = Instant::now();
        loop {
            assert!(m.alive(), "the module ended:\n{}", m.output());
            if let Some(t) = metrics(self.metrics_port) {
                if f(&t) {
                    return t;
                }
                assert!(
                    start.elapsed() < WAIT,
                    "no {what} within {WAIT:?}:\n{}\n{}",
                    t.0,
                    m.output()
                );
            }
            assert!(start.elapsed() < WAIT, "no /metrics within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The module's `/metrics` text.
struct Metrics(String);

impl Metrics {
    fn get(&self, name: &str) -> u64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(&format!("azureiotsecurity_{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{}", self.0))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name} is not a number ({e}) in\n{}", self.0))
    }
}

/// `/metrics` of the module on `port`, or None while it does not answer yet.
fn metrics(port: u16) -> Option<Metrics> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let body = out.split_once("\r\n\r\n")?.1;
    body.contains("audit_records_read_total")
        .then(|| Metrics(body.to_owned()))
}

fn capture(name: &str) -> Vec<u8> {
    let p = support::root().join("tests/data").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Audit records (non-empty lines) of a capture part, as `audit_records_read_total` counts.
fn record_count(text: &[u8]) -> u64 {
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64
}

/// `capture` cut into `parts` pieces of about equal size, each made of whole audit events:
/// a cut falls only where no event (`msg=audit(TIME:SERIAL)`) has records on both sides.
fn split_events(capture: &[u8], parts: usize) -> Vec<Vec<u8>> {
    let text = std::str::from_utf8(capture).expect("the capture is UTF-8");
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let key = |l: &str| -> String {
        let from = l.find("msg=audit(").expect("every record has msg=audit(") + 10;
        let to = from + l[from..].find(')').expect("msg=audit(…)");
        l[from..to].to_owned()
    };
    let keys: Vec<String> = lines.iter().map(|l| key(l)).collect();
    // The last line of each event: a cut after line i is clean when every event seen up to
    // i ends by i.
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        last.insert(k, i);
    }
    let mut clean = Vec::new();
    let mut reach = 0;
    for (i, k) in keys.iter().enumerate() {
        reach = reach.max(last[k.as_str()]);
        if reach == i {
            clean.push(i + 1);
        }
    }
    let mut cuts = Vec::new();
    for p in 1..parts {
        let want = lines.len() * p / parts;
        let at = *clean
            .iter()
            .find(|&&c| c >= want)
            .expect("a clean cut after the wanted line");
        cuts.push(at);
    }
    cuts.push(lines.len());
    let mut out = Vec::new();
    let mut from = 0;
    for to in cuts {
        assert!(to > from, "an empty part: the capture is too small to cut");
        out.push(lines[from..to].concat().into_bytes());
        from = to;
    }
    out
}

/// `replay` (one security event a line, no aggregation) of `text`: (Id, Name) in order.
fn replay(dir: &Path, text: &[u8]) -> Vec<(String, String)> {
    let file = dir.join(format!("replay-{}.log", uuid_like(text)));
    std::fs::write(&file, text).expect("write the part");
    let out = Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
        .env("TZ", "UTC")
        .arg("replay")
        .arg(&file)
        .output()
        .expect("run replay");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("replay prints JSON lines");
            (
                v["Id"].as_str().expect("Id").to_owned(),
                v["Name"].as_str().expect("Name").to_owned(),
            )
        })
        .collect()
}

/// A file-name tag for a byte string (its length and a cheap sum: distinct parts differ).
fn uuid_like(text: &[u8]) -> String {
    let sum = text
        .iter()
        .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    format!("{}-{sum:x}", text.len())
}

fn ids_of<'a>(events: &'a [(String, String)], name: &str) -> BTreeSet<&'a str> {
    events
        .iter()
        .filter(|(_, n)| n == name)
        .map(|(id, _)| id.as_str())
        .collect()
}

/// One message edgeHub accepted (each message id once: a message sent again after a lost
/// connection is the same message).
struct Msg {
    time: f64,
    body: Value,
    properties: Value,
    property_types: Value,
}

impl Msg {
    /// Its audit-derived events (ProcessCreate, ConnectionCreate, Login).
    fn security(&self) -> Vec<&Value> {
        self.events()
            .into_iter()
            .filter(|e| e["EventType"] == "Security" && e["Category"] != "Periodic")
            .collect()
    }

    fn events(&self) -> Vec<&Value> {
        self.body["Events"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }
}

fn messages(hub: &EdgeHub) -> Vec<Msg> {
    let mut seen = BTreeSet::new();
    hub.accepted()
        .into_iter()
        .filter(|r| seen.insert(r["message_id"].to_string()))
        .map(|r| Msg {
            time: r["time"].as_f64().expect("a record time"),
            body: serde_json::from_str(r["body"].as_str().expect("a text body"))
                .unwrap_or_else(|e| panic!("a message body that is not JSON ({e}): {r}")),
            properties: r["application_properties"].clone(),
            property_types: r["application_property_types"].clone(),
        })
        .collect()
}

/// The audit-derived events delivered, over every distinct message.
fn delivered(hub: &EdgeHub) -> Vec<Value> {
    messages(hub)
        .iter()
        .flat_map(|m| m.security().into_iter().cloned().collect::<Vec<_>>())
        .collect()
}

fn hit_count(e: &Value) -> Option<u64> {
    e["Payload"][0]["ExtraDetails"]["HitCount"]
        .as_str()
        .map(|h| h.parse().unwrap_or_else(|_| panic!("HitCount {h:?}")))
}

/// The first accepted reported-properties PATCH whose status says `version` is applied:
/// (its stand-in record time, the reported properties after it).
fn wait_applied(hub: &EdgeHub, version: i64) -> (f64, Value) {
    let find = |r: &[Value]| {
        r.iter()
            .find(|x| {
                x["kind"] == "twin-request"
                    && x["operation"] == "PATCH"
                    && x["reply_status"] == 204
                    && x["twin"]["reported"][STATUS]["appliedVersion"] == version
            })
            .map(|x| {
                (
                    x["time"].as_f64().expect("a record time"),
                    x["twin"]["reported"].clone(),
                )
            })
    };
    let what = format!("reported properties saying $version {version} is applied");
    find(&hub.wait(&what, WAIT, |r| find(r).is_some())).expect("found above")
}

/// `{OBJECT: {key: {"value": v}, …}}`, the desired form.
fn desired(values: &[(&str, Value)]) -> Value {
    let object: serde_json::Map<String, Value> = values
        .iter()
        .map(|(k, v)| (k.to_string(), json!({ "value": v })))
        .collect();
    json!({ CONFIG: object })
}

/// The value in force of `key` in reported properties.
fn reported_value<'a>(reported: &'a Value, key: &str) -> &'a Value {
    &reported[CONFIG][key]["value"]
}

// ------------------------------------------------------------------ a. patches while events flow

/// The agent settings of the live-patch test: both types High (the frequency under test is
/// the high one), frequencies of 5 minutes (the "old" period), 10 s aggregation windows (so
/// windows close while the first part flows).
const LIVE_AGENT: [(&str, &str); 7] = [
    ("eventPriorityProcessCreate", "High"),
    ("eventPriorityConnectionCreate", "High"),
    ("highPriorityMessageFrequency", "PT5M"),
    ("lowPriorityMessageFrequency", "PT5M"),
    ("aggregationIntervalProcessCreate", "PT10S"),
    ("aggregationIntervalConnectionCreate", "PT10S"),
    ("snapshotFrequency", "PT13H"),
];

#[test]
fn patches_pushed_while_events_flow_change_what_arrives_and_every_event_arrives_once() {
    let rig = Rig::new();
    let hub = rig.hub(0, json!({CONFIG: {}, "$version": 1}), |_| {});
    let feed = StagedFeed::start(rig.dir.path());
    let mut m = rig.module("live", hub.port, &feed.path, &LIVE_AGENT);

    // The capture in three parts of whole events. What each part derives is what `replay`
    // gives for it (event ids are the audit events' identities, so they are the same ids
    // whichever way the events are cut or run); the parts together are the whole capture.
    let activity = capture("activity.log");
    let parts = split_events(&activity, 3);
    let replayed: Vec<Vec<(String, String)>> =
        parts.iter().map(|p| replay(rig.dir.path(), p)).collect();
    let whole = replay(rig.dir.path(), &activity);
    let mut joined: Vec<(String, String)> = replayed.concat();
    joined.sort();
    let mut whole_sorted = whole.clone();
    whole_sorted.sort();
    assert_eq!(joined, whole_sorted, "the parts derive what the whole does");
    for (i, r) in replayed.iter().enumerate() {
        for name in ["ProcessCreate", "ConnectionCreate"] {
            assert!(!ids_of(r, name).is_empty(), "part {i} has no {name}");
        }
    }

    // The twin's configuration (nothing in it: the layers below) is applied at connection.
    wait_applied(&hub, 1);

    // Part 1 flows for 40 s; meanwhile the high-priority frequency becomes 10 s.
    feed.send(&parts[0], Duration::from_secs(40));
    hub.push_desired(desired(&[("highPriorityMessageFrequency", json!("PT10S"))]));
    let (applied, reported) = wait_applied(&hub, 2);
    assert_eq!(
        reported_value(&reported, "highPriorityMessageFrequency"),
        "PT10S"
    );
    // "What is due is sent at once, then every 10 s": the first message with events after
    // the change, and the one after it, each come within 40 s (10 s of frequency + 10 s of
    // aggregation window + ticks, doubled). At the old period (5 minutes) neither would: the
    // bound tells the two periods apart, it does not measure how fast the module is.
    let bound = 40.0;
    let next_after = |t: f64| {
        let what = format!("a message with events within {bound} s of {t}");
        hub.wait(&what, WAIT, |_| {
            messages(&hub)
                .iter()
                .any(|m| m.time > t && !m.security().is_empty())
        });
        messages(&hub)
            .into_iter()
            .filter(|m| m.time > t && !m.security().is_empty())
            .map(|m| m.time)
            .fold(f64::INFINITY, f64::min)
    };
    let first = next_after(applied);
    assert!(first - applied <= bound, "{first} - {applied} > {bound} s");
    let second = next_after(first);
    assert!(second - first <= bound, "{second} - {first} > {bound} s");

    // Part 1 derived and handed to the outgoing state, then aggregation off: the open
    // windows are closed and emitted (their HitCounts count part 1), and part 2's events
    // arrive one by one, without HitCount.
    let through_1 = replayed[0].len() as u64;
    rig.wait_metrics(&mut m, "part 1 derived and handed on", |t| {
        t.get("security_events_total") == through_1 && t.get("outgoing_commands_waiting") == 0
    });
    hub.push_desired(desired(&[
        ("aggregationEnabledProcessCreate", json!(false)),
        ("aggregationEnabledConnectionCreate", json!(false)),
    ]));
    let (_, reported) = wait_applied(&hub, 3);
    assert_eq!(
        reported_value(&reported, "aggregationEnabledProcessCreate"),
        false
    );
    feed.send(&parts[1], Duration::from_secs(10));
    let through_2 = through_1 + replayed[1].len() as u64;
    rig.wait_metrics(&mut m, "part 2 derived and handed on", |t| {
        t.get("security_events_total") == through_2 && t.get("outgoing_commands_waiting") == 0
    });

    // ConnectionCreate Off: part 3's ConnectionCreate events are not collected; what was
    // collected before (pending) is still sent.
    hub.push_desired(desired(&[("eventPriorityConnectionCreate", json!("Off"))]));
    let (_, reported) = wait_applied(&hub, 4);
    assert_eq!(
        reported_value(&reported, "eventPriorityConnectionCreate"),
        "Off"
    );
    feed.send(&parts[2], Duration::from_secs(10));

    // The expected account, per type: every event of parts 1 and 2, and part 3's
    // ProcessCreate; an aggregated event stands for HitCount events.
    let want = |name: &str| -> u64 {
        let mut n = ids_of(&replayed[0], name).len() + ids_of(&replayed[1], name).len();
        if name == "ProcessCreate" {
            n += ids_of(&replayed[2], name).len();
        }
        n as u64
    };
    let account = |events: &[Value], name: &str| -> u64 {
        events
            .iter()
            .filter(|e| e["Name"] == name)
            .map(|e| hit_count(e).unwrap_or(1))
            .sum()
    };
    hub.wait("every collected event delivered", WAIT, |_| {
        let d = delivered(&hub);
        account(&d, "ProcessCreate") >= want("ProcessCreate")
            && account(&d, "ConnectionCreate") >= want("ConnectionCreate")
    });
    // The module's own account: it derived the whole capture, and what it did not collect
    // (part 3's ConnectionCreate, Off) it counted as configured out, not as lost.
    let whole_count = whole.len() as u64;
    let off = ids_of(&replayed[2], "ConnectionCreate").len() as u64;
    let t = rig.wait_metrics(&mut m, "the whole capture derived", |t| {
        t.get("security_events_total") == whole_count && t.get("outgoing_commands_waiting") == 0
    });
    assert_eq!(t.get("events_configured_out_total"), off, "{}", t.0);
    assert_eq!(t.get("events_dropped_high_total"), 0, "{}", t.0);
    assert_eq!(t.get("events_dropped_low_total"), 0, "{}", t.0);
    assert!(m.stop(Duration::from_secs(15)).success(), "{}", m.output());

    let events = delivered(&hub);
    // Once: no event id twice among the distinct messages, and the accounts are exact.
    let mut ids = BTreeSet::new();
    for e in &events {
        assert!(
            ids.insert(e["Id"].as_str().expect("Id")),
            "delivered twice: {e}"
        );
    }
    for name in ["ProcessCreate", "ConnectionCreate"] {
        assert_eq!(account(&events, name), want(name), "{name}");
    }
    // Part 1 went through the aggregation (some window saw a repeated command), parts 2
    // and 3 did not: each of their events arrived under its own id, without HitCount.
    assert!(
        events.iter().any(|e| hit_count(e).is_some_and(|h| h >= 2)),
        "part 1 was aggregated"
    );
    let part_ids = |i: usize, name: &str| ids_of(&replayed[i], name);
    for (i, name) in [
        (1, "ProcessCreate"),
        (1, "ConnectionCreate"),
        (2, "ProcessCreate"),
    ] {
        for id in part_ids(i, name) {
            let e = events
                .iter()
                .find(|e| e["Id"] == id)
                .unwrap_or_else(|| panic!("part {i}'s {name} {id} was not delivered"));
            assert_eq!(hit_count(e), None, "aggregation is off: {e}");
        }
    }
    // Off: none of part 3's ConnectionCreate events.
    for id in part_ids(2, "ConnectionCreate") {
        assert!(
            !ids.contains(id),
            "part 3's ConnectionCreate {id} was delivered"
        );
    }
    let verdicts = support::reference_validate(
        &messages(&hub)
            .iter()
            .map(|m| m.body.to_string())
            .collect::<Vec<_>>(),
    );
    assert!(verdicts.iter().all(|v| v == "ok"), "{verdicts:?}");
}

// ------------------------------------------------------------------ b. a type mismatch

#[test]
fn a_type_mismatch_is_said_upstream_and_changes_nothing() {
    let rig = Rig::new();
    let hub = rig.hub(0, json!({CONFIG: {}, "$version": 1}), |_| {});
    let feed = StagedFeed::start(rig.dir.path());
    let agent = [
        ("eventPriorityProcessCreate", "High"),
        ("eventPriorityConnectionCreate", "High"),
        ("highPriorityMessageFrequency", "PT10S"),
        ("lowPriorityMessageFrequency", "PT10S"),
        ("aggregationEnabledProcessCreate", "false"),
        ("aggregationEnabledConnectionCreate", "false"),
    ];
    let mut m = rig.module("mismatch", hub.port, &feed.path, &agent);
    let (_, before) = wait_applied(&hub, 1);
    assert_eq!(
        reported_value(&before, "eventPriorityConnectionCreate"),
        "High"
    );

    // A number for a duration beside a valid change: the whole update is refused.
    hub.push_desired(desired(&[
        ("highPriorityMessageFrequency", json!(5)),
        ("eventPriorityConnectionCreate", json!("Off")),
    ]));
    let after = hub.wait_reported("a configuration error", WAIT, |r| {
        !r[STATUS]["lastConfigurationError"].is_null()
    });
    let error = &after[STATUS]["lastConfigurationError"];
    assert_eq!(error["type"], "TypeMismatch", "{after:#}");
    assert_eq!(
        after[CONFIG], before[CONFIG],
        "the configuration in force is unchanged"
    );
    assert_eq!(after[STATUS]["appliedVersion"], 1, "{after:#}");

    // Upstream: a ConfigurationError event, TypeMismatch, naming the setting.
    let is_mismatch = |e: &Value| {
        e["Name"] == "ConfigurationError"
            && e["Payload"][0]["ErrorType"] == "TypeMismatch"
            && [
                &e["Payload"][0]["ConfigurationName"],
                &e["Payload"][0]["Message"],
            ]
            .iter()
            .any(|s| {
                s.as_str()
                    .unwrap_or("")
                    .contains("highPriorityMessageFrequency")
            })
    };
    hub.wait("a TypeMismatch ConfigurationError upstream", WAIT, |_| {
        messages(&hub)
            .iter()
            .any(|m| m.events().into_iter().any(is_mismatch))
    });

    // Behaviour: ConnectionCreate is still collected (the refused update would have turned
    // it Off). net_tcp.log: 1 ProcessCreate, 7 ConnectionCreate.
    let net = capture("net_tcp.log");
    let want = replay(rig.dir.path(), &net);
    assert!(!ids_of(&want, "ConnectionCreate").is_empty());
    feed.send(&net, Duration::ZERO);
    hub.wait("every net_tcp event delivered", WAIT, |_| {
        let got: BTreeSet<String> = delivered(&hub)
            .iter()
            .map(|e| e["Id"].as_str().unwrap_or_default().to_owned())
            .collect();
        want.iter().all(|(id, _)| got.contains(id))
    });
    assert!(m.stop(Duration::from_secs(15)).success(), "{}", m.output());
}

// ------------------------------------------------------------------ c. a version gap

#[test]
fn a_version_gap_makes_the_module_get_the_whole_twin() {
    let rig = Rig::new();
    let hub = rig.hub(
        0,
        json!({CONFIG: {"highPriorityMessageFrequency": {"value": "PT20M"}}, "$version": 1}),
        |_| {},
    );
    let feed = StagedFeed::start(rig.dir.path());
    let mut m = rig.module("gap", hub.port, &feed.path, &[]);
    wait_applied(&hub, 1);

    // Version 2 never reaches the module (a patch lost with a link); version 3 does.
    hub.set_desired(
        desired(&[("eventPriorityConnectionCreate", json!("Off"))]),
        None,
        false,
    );
    let pushed = hub.set_desired(
        desired(&[("maxLocalCacheSizeInBytes", json!(1_048_576))]),
        None,
        true,
    );
    assert_eq!(pushed, json!({"version": 3, "sent": 1}));
    let (_, reported) = wait_applied(&hub, 3);

    // A GET after the patch of version 3 reached the module.
    let frames = hub.twin_frames();
    let patch_at = frames
        .iter()
        .position(|f| {
            f["kind"] == "twin-desired"
                && serde_json::from_str::<Value>(f["body"].as_str().unwrap_or("null"))
                    .is_ok_and(|b| b["$version"] == 3)
        })
        .expect("the stand-in pushed version 3");
    assert!(
        frames[patch_at..]
            .iter()
            .any(|f| f["kind"] == "twin-request" && f["operation"] == "GET"),
        "no GET after the gap: {frames:#?}"
    );
    // The configuration in force is the whole desired document's.
    let twin = hub.twin();
    let object = twin["desired"][CONFIG].as_object().expect("the object");
    assert_eq!(object.len(), 3, "{twin:#}");
    for (key, v) in object {
        assert_eq!(
            reported_value(&reported, key),
            &v["value"],
            "{key}: {reported:#}"
        );
    }
    assert!(m.stop(Duration::from_secs(15)).success(), "{}", m.output());
}

// ------------------------------------------------------------------ d. restart, edgeHub away

#[test]
fn a_restart_with_edgehub_away_starts_from_the_kept_configuration() {
    let rig = Rig::new();
    // The environment says both types High and 5 minutes; the twin says ConnectionCreate
    // Off and 10 s.
    let agent = [
        ("eventPriorityProcessCreate", "High"),
        ("eventPriorityConnectionCreate", "High"),
        ("highPriorityMessageFrequency", "PT5M"),
        ("lowPriorityMessageFrequency", "PT5M"),
        ("aggregationEnabledProcessCreate", "false"),
        ("aggregationEnabledConnectionCreate", "false"),
    ];
    let mut twin = desired(&[
        ("eventPriorityConnectionCreate", json!("Off")),
        ("highPriorityMessageFrequency", json!("PT10S")),
    ]);
    twin["$version"] = 7.into();
    let port;
    {
        let hub = rig.hub(0, twin, |_| {});
        port = hub.port;
        let feed = StagedFeed::start(rig.dir.path());
        let mut m = rig.module("run1", port, &feed.path, &agent);
        let (_, reported) = wait_applied(&hub, 7);
        assert_eq!(
            reported_value(&reported, "eventPriorityConnectionCreate"),
            "Off"
        );
        assert!(m.stop(Duration::from_secs(15)).success(), "{}", m.output());
    }

    // Run 2: edgeHub is away; the capture is read and its events derived meanwhile.
    let activity = capture("activity.log");
    let want = replay(rig.dir.path(), &activity);
    let feed = StagedFeed::start(rig.dir.path());
    let mut m = rig.module("run2", port, &feed.path, &agent);
    feed.send(&activity, Duration::ZERO);
    let records = record_count(&activity);
    let process_creates = ids_of(&want, "ProcessCreate").len() as u64;
    rig.wait_metrics(&mut m, "the capture read and handed on", |t| {
        t.get("audit_records_read_total") == records
            && t.get("security_events_process_create_total") == process_creates
            && t.get("outgoing_commands_waiting") == 0
    });

    // edgeHub returns, but its twin never answers a GET: what is sent can only follow the
    // kept configuration. Every ProcessCreate arrives within WAIT (at the environment's
    // 5 minutes it could not), and no ConnectionCreate.
    let hub = rig.hub(port, json!({}), |o| {
        o.control_at_start = vec![json!({"cmd": "fail", "operation": "GET", "status": null,
                                         "count": 1000})];
    });
    hub.wait("every ProcessCreate delivered", WAIT, |_| {
        let got: BTreeSet<String> = delivered(&hub)
            .iter()
            .map(|e| e["Id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids_of(&want, "ProcessCreate")
            .iter()
            .all(|id| got.contains(*id))
    });
    let events = delivered(&hub);
    assert!(
        events.iter().all(|e| e["Name"] != "ConnectionCreate"),
        "ConnectionCreate stayed Off: {events:#?}"
    );
    let gets = hub.twin_requests("GET");
    assert!(
        !gets.is_empty() && gets.iter().all(|g| g["reply_status"].is_null()),
        "the twin was asked and never answered: {gets:#?}"
    );
    assert!(m.stop(Duration::from_secs(15)).success(), "{}", m.output());
}

// ------------------------------------------------------------------ e. reported properties

#[test]
fn the_reported_properties_say_what_is_in_force_and_a_new_connection_reports_nothing_new() {
    let rig = Rig::new();
    let mut twin = desired(&[
        ("highPriorityMessageFrequency", json!("PT10S")),
        ("eventPriorityLogin", json!("Off")),
    ]);
    twin["$version"] = 3.into();
    // The first telemetry transfer cuts the connection: the module connects again.
    let hub = rig.hub(0, twin, |o| o.outcomes = vec!["drop"]);
    let feed = StagedFeed::start(rig.dir.path());
    let agent = [
        ("eventPriorityProcessCreate", "High"),
        ("lowPriorityMessageFrequency", "PT10S"),
        ("aggregationEnabledProcessCreate", "false"),
    ];
    let mut m = rig.module("reported", hub.port, &feed.path, &agent);
    let (_, reported) = wait_applied(&hub, 3);
    let first_conn = hub.twin_requests("PATCH")[0]["conn"].clone();

    // The configuration in force, every key of the published schema twin-shaped: the twin's
    // values, the environment's where the twin says nothing, the defaults elsewhere.
    let defaults: Value = serde_json::from_str(
        &std::fs::read_to_string(support::schema_dir().join("azureiotsecurity_default.json"))
            .expect("the published defaults"),
    )
    .expect("JSON");
    let published = defaults["properties"]["desired"][CONFIG]
        .as_object()
        .expect("the defaults object");
    let object = reported[CONFIG].as_object().expect("the reported object");
    for (key, default) in published {
        let v = object
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not reported: {reported:#}"));
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{key}: {v}");
        let want = match key.as_str() {
            "highPriorityMessageFrequency" => json!("PT10S"),
            "eventPriorityLogin" => json!("Off"),
            "eventPriorityProcessCreate" => json!("High"),
            "lowPriorityMessageFrequency" => json!("PT10S"),
            "aggregationEnabledProcessCreate" => json!(false),
            _ => default["value"].clone(),
        };
        assert_eq!(v["value"], want, "{key}");
    }
    let status = &reported[STATUS];
    assert_eq!(
        status["moduleVersion"],
        env!("CARGO_PKG_VERSION"),
        "{status}"
    );
    assert_eq!(status["appliedVersion"], 3, "{status}");
    assert_eq!(status["lastConfigurationError"], Value::Null, "{status}");

    // A message (dropped once, then sent again on a new connection) with the same AgentId.
    feed.send(&capture("exec_args.log"), Duration::ZERO);
    let records = hub.wait("a message accepted on a second connection", WAIT, |r| {
        r.iter()
            .any(|x| x["kind"] == "message" && x["outcome"] == "accept" && x["conn"] != first_conn)
    });
    let dropped = records
        .iter()
        .find(|x| x["kind"] == "message" && x["outcome"] == "drop")
        .expect("the stand-in dropped the first transfer");
    assert_eq!(
        dropped["conn"], first_conn,
        "the report came before the drop"
    );
    let agent_id = messages(&hub)[0].body["AgentId"].clone();
    assert_eq!(status["agentId"], agent_id);

    // The second connection GETs the twin; nothing changed, so no PATCH: the next PATCH is
    // the one a new desired version makes (the twin task handles a patch after the
    // connection's GET and any report it calls for).
    hub.wait("a GET answered on the second connection", WAIT, |r| {
        r.iter()
            .any(|x| x["kind"] == "twin-reply" && x["conn"] != first_conn && x["status"] == 200)
    });
    hub.push_desired(desired(&[("eventPriorityLogin", json!("Low"))]));
    let (_, reported) = wait_applied(&hub, 4);
    assert_eq!(reported_value(&reported, "eventPriorityLogin"), "Low");
    let patches = hub.twin_requests("PATCH");
    let on_first = patches.iter().filter(|p| p["conn"] == first_conn).count();
    assert_eq!(on_first, 1, "{patches:#?}");
    let later: Vec<&Value> = patches.iter().filter(|p| p["conn"] != first_conn).collect();
    assert_eq!(later.len(), 1, "only the new version's PATCH: {patches:#?}");
    assert_eq!(later[0]["twin"]["reported"][STATUS]["appliedVersion"], 4);
    assert!(m.stop(Duration::from_secs(15)).success(), "{}", m.output());
}

// ------------------------------------------------------------------ f. message properties

#[test]
fn messages_carry_message_priority_and_the_twins_hub_resource_id() {
    let rig = Rig::new();
    let twin = json!({CONFIG: {}, "$version": 1});
    let hub = rig.hub(0, twin, |_| {});
    let feed = StagedFeed::start(rig.dir.path());
    let agent = [
        ("eventPriorityProcessCreate", "High"),
        ("eventPriorityConnectionCreate", "Low"),
        ("highPriorityMessageFrequency", "PT10S"),
        ("lowPriorityMessageFrequency", "PT10S"),
        ("aggregationEnabledProcessCreate", "false"),
        ("aggregationEnabledConnectionCreate", "false"),
    ];
    let mut m = rig.module("properties", hub.port, &feed.path, &agent);
    wait_applied(&hub, 1);

    // Before hubResourceId: net_tcp.log (1 ProcessCreate High, 7 ConnectionCreate Low).
    let net = capture("net_tcp.log");
    let net_ids = replay(rig.dir.path(), &net);
    feed.send(&net, Duration::ZERO);
    let all_in = |want: &[(String, String)]| {
        let got: BTreeSet<String> = delivered(&hub)
            .iter()
            .map(|e| e["Id"].as_str().unwrap_or_default().to_owned())
            .collect();
        want.iter().all(|(id, _)| got.contains(id))
    };
    hub.wait("net_tcp delivered", WAIT, |_| all_in(&net_ids));

    let resource = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/hub";
    hub.push_desired(desired(&[("hubResourceId", json!(resource))]));
    let (applied, _) = wait_applied(&hub, 2);
    let exec = capture("exec_args.log");
    let exec_ids = replay(rig.dir.path(), &exec);
    feed.send(&exec, Duration::ZERO);
    hub.wait("exec_args delivered", WAIT, |_| all_in(&exec_ids));
    assert!(m.stop(Duration::from_secs(15)).success(), "{}", m.output());

    let msgs = messages(&hub);
    let (mut high, mut low) = (0, 0);
    for msg in &msgs {
        let p = &msg.properties;
        let prio = p["MessagePriority"]
            .as_str()
            .unwrap_or_else(|| panic!("no MessagePriority: {p} {}", msg.body));
        assert_eq!(
            msg.property_types["MessagePriority"]["value_type"], "string",
            "{}",
            msg.property_types
        );
        // High when the message holds a high-priority event (ProcessCreate here); a
        // message of Low events only (ConnectionCreate, statistics) is Low.
        let has_high = msg.security().iter().any(|e| e["Name"] == "ProcessCreate");
        assert_eq!(prio, if has_high { "High" } else { "Low" }, "{}", msg.body);
        if prio == "High" {
            high += 1;
        } else {
            low += 1;
        }
        // HubResourceId: on the messages with events collected after it was applied, never
        // on one accepted before.
        let after = msg
            .security()
            .iter()
            .any(|e| exec_ids.iter().any(|(id, _)| e["Id"] == id.as_str()));
        if after {
            assert_eq!(p["HubResourceId"], resource, "{p}");
            assert_eq!(msg.property_types["HubResourceId"]["value_type"], "string");
        }
        if msg.time < applied {
            assert_eq!(p.get("HubResourceId"), None, "{p}");
        }
    }
    assert!(
        high > 0 && low > 0,
        "both priorities seen: {high} High, {low} Low"
    );
}
