//! The durable outbox under faults, with real processes: the module binary, a replay audit
//! source, the Proton edgeHub stand-in and the workload stand-in (see tests/edgehub_interop.rs
//! for those). Mounting tmpfs needs root, as the whole suite does; without it these fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use azureiotsecurity::config::agent::{AgentConfig, Priority};
use azureiotsecurity::events::EventKind;
use azureiotsecurity::events::operational::QueueName;
use azureiotsecurity::outbox::fallback::Resilient;
use azureiotsecurity::outbox::sqlite::SqliteStore;
use azureiotsecurity::outbox::{Pending, Store};
use serde_json::Value;
use support::audit_feed::AuditFeed;
use support::standin::{
    self, Certs, DEVICE, EdgeHub, HUB, KEY, MODULE, Module, Workload, free_port, hub_options,
};

const NO_AGGREGATION: [(&str, &str); 2] = [
    (
        "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDPROCESSCREATE",
        "false",
    ),
    (
        "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDCONNECTIONCREATE",
        "false",
    ),
];

/// The overflow tests' settings: a 256 KB cap on disk (about 80 KB for events), 8 KB
/// messages, every queue and snapshot due every 2 s, ProcessCreate High and ConnectionCreate
/// Low, no aggregation ([`overflow_config`] says the same to `queue_of`).
const OVERFLOW: [(&str, &str); 9] = [
    ("AZUREIOTSECURITY_AGENT__MAXLOCALCACHESIZEINBYTES", "262144"),
    ("AZUREIOTSECURITY_AGENT__MAXMESSAGESIZEINBYTES", "8192"),
    (
        "AZUREIOTSECURITY_AGENT__HIGHPRIORITYMESSAGEFREQUENCY",
        "PT2S",
    ),
    (
        "AZUREIOTSECURITY_AGENT__LOWPRIORITYMESSAGEFREQUENCY",
        "PT2S",
    ),
    ("AZUREIOTSECURITY_AGENT__SNAPSHOTFREQUENCY", "PT2S"),
    ("AZUREIOTSECURITY_AGENT__EVENTPRIORITYPROCESSCREATE", "High"),
    (
        "AZUREIOTSECURITY_AGENT__EVENTPRIORITYCONNECTIONCREATE",
        "Low",
    ),
    NO_AGGREGATION[0],
    NO_AGGREGATION[1],
];

/// The agent configuration of [`OVERFLOW`], for telling the queue of an event by its name.
fn overflow_config() -> AgentConfig {
    let mut config = AgentConfig::default();
    config.set_priority(EventKind::ProcessCreate, Priority::High);
    config.set_priority(EventKind::ConnectionCreate, Priority::Low);
    config
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(path: &Path, options: &str) -> Mount {
        std::fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount -t tmpfs -o {options} failed (the tests run as root)"
        );
        Mount(path.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn env(
    workload: &Workload,
    port: u16,
    feed: &AuditFeed,
    data: &Path,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = standin::edge_env(workload, HUB, DEVICE, MODULE, port);
    env.push((
        "AZUREIOTSECURITY_AUDIT__SOCKET_PATH".into(),
        feed.path.display().to_string(),
    ));
    env.push((
        "AZUREIOTSECURITY_MODULE__DATA_DIR".into(),
        data.display().to_string(),
    ));
    env.push((
        "AZUREIOTSECURITY_EDGEHUB__RECONNECT_MIN_MS".into(),
        "200".into(),
    ));
    env.push((
        "AZUREIOTSECURITY_EDGEHUB__RECONNECT_MAX_MS".into(),
        "1000".into(),
    ));
    env.push(("RUST_LOG".into(), "info".into()));
    // Some tests set frequencies of seconds, under the agent configuration's minimums.
    env.push((
        "AZUREIOTSECURITY_DEBUG__SHORT_AGENT_INTERVALS".into(),
        "true".into(),
    ));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    env
}

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(support::root().join("tests/data").join(name)).unwrap()
}

fn delivered_ids(hub: &EdgeHub) -> Vec<String> {
    hub.accepted()
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_owned())
        .collect()
}

fn event_ids(hub: &EdgeHub) -> Vec<String> {
    hub.accepted()
        .iter()
        .flat_map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            body["Events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["Category"] != "Periodic")
                .map(|e| e["Id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A Diagnostic event with Severity Error naming `id` arrived, in schema-valid messages.
fn assert_diagnostic(hub: &EdgeHub, id: &str) {
    let bodies: Vec<String> = hub
        .accepted()
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect();
    let verdicts = support::reference_validate(&bodies);
    assert!(verdicts.iter().all(|v| v == "ok"), "{verdicts:?}");
    let found = bodies.iter().any(|b| {
        let v: Value = serde_json::from_str(b).unwrap();
        v["Events"].as_array().unwrap().iter().any(|e| {
            e["Name"] == "Diagnostic"
                && e["EventType"] == "Diagnostic"
                && e["Payload"][0]["Severity"] == "Error"
                && e["Payload"][0]["Message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(id)
        })
    });
    assert!(found, "no Diagnostic event for {id} in {bodies:#?}");
}

#[test]
fn what_was_committed_while_edgehub_was_down_is_delivered_after_restarts_with_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let data = dir.path().join("data");
    let port = free_port(); // edgeHub is down: nothing listens here yet

    // Run 1: edgeHub down; the capture is derived, SIGTERM puts everything into the outbox.
    let feed = AuditFeed::start(dir.path(), capture("exec_args.log"));
    let mut m = Module::start(
        dir.path(),
        "run1",
        &env(&workload, port, &feed, &data, &[]),
        &["run"],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(m.stop(Duration::from_secs(10)).success(), "{}", m.output());
    drop(feed);
    let stored: Vec<String> = {
        let s = SqliteStore::open(&data.join("outbox.sqlite"), 1 << 30).unwrap();
        assert!(
            s.message_count() > 0,
            "the outbox holds the messages:\n{}",
            m.output()
        );
        let mut ids = Vec::new();
        // Read them without removing: copy the file and drain the copy.
        let copy = dir.path().join("copy.sqlite");
        std::fs::copy(data.join("outbox.sqlite"), &copy).unwrap();
        drop(s);
        let mut c = SqliteStore::open(&copy, 1 << 30).unwrap();
        while let Some(msg) = c.next_message().unwrap() {
            ids.push(msg.message_id.clone());
            c.ack(&msg.message_id).unwrap();
        }
        ids
    };

    // Run 2: still down, killed hard: nothing committed is lost.
    let empty = AuditFeed::start(dir.path(), Vec::new());
    let mut m = Module::start(
        dir.path(),
        "run2",
        &env(&workload, port, &empty, &data, &[]),
        &["run"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let _ = m.proc.child.kill();
    let _ = m.proc.child.wait();

    // Run 3: edgeHub is back; the stored messages go out with their ids.
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(port));
    let mut m = Module::start(
        dir.path(),
        "run3",
        &env(&workload, port, &empty, &data, &[]),
        &["run"],
    );
    hub.wait("the stored messages", Duration::from_secs(30), |_| {
        let got = delivered_ids(&hub);
        stored.iter().all(|id| got.contains(id))
    });
    assert!(m.stop(Duration::from_secs(10)).success());
    let events = event_ids(&hub);
    assert!(!events.is_empty());
    assert!(
        m.output().contains("outbox opened"),
        "the outbox was reopened:\n{}",
        m.output()
    );
    // Run 3's own statistics messages come on top; none of the stored ones is missing.
    let got = delivered_ids(&hub);
    for id in &stored {
        assert_eq!(
            got.iter().filter(|g| *g == id).count(),
            1,
            "{id} delivered once"
        );
    }
}

#[test]
fn a_corrupt_outbox_is_moved_aside_and_the_module_still_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(0));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("outbox.sqlite"), vec![0x5a; 8192]).unwrap();
    let feed = AuditFeed::start(dir.path(), capture("exec_args.log"));
    let mut m = Module::start(
        dir.path(),
        "corrupt",
        &env(&workload, hub.port, &feed, &data, &[]),
        &["run"],
    );
    hub.wait_telemetry_link();
    std::thread::sleep(Duration::from_secs(2));
    assert!(m.stop(Duration::from_secs(10)).success());
    let out = m.output();
    assert!(out.contains("E-OUTBOX-CORRUPT"), "{out}");
    let aside: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("outbox.sqlite.corrupt-")
        })
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the corrupt file is kept aside for inspection"
    );
    assert!(!event_ids(&hub).is_empty(), "the module delivered");
    assert_diagnostic(&hub, "E-OUTBOX-CORRUPT");
}

#[test]
fn a_read_only_data_directory_forwards_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(0));
    let data = dir.path().join("ro");
    // Root ignores file modes: a read-only mount is what makes it read-only.
    let _mount = Mount::tmpfs(&data, "size=1m,ro");
    let feed = AuditFeed::start(dir.path(), capture("exec_args.log"));
    let mut m = Module::start(
        dir.path(),
        "ro",
        &env(&workload, hub.port, &feed, &data, &[]),
        &["run"],
    );
    hub.wait_telemetry_link();
    std::thread::sleep(Duration::from_secs(2));
    assert!(m.stop(Duration::from_secs(10)).success(), "{}", m.output());
    let out = m.output();
    assert!(out.contains("E-DATADIR"), "{out}");
    assert!(out.contains("E-OUTBOX-UNAVAILABLE"), "{out}");
    assert!(!event_ids(&hub).is_empty(), "delivered from memory");
    assert_diagnostic(&hub, "E-OUTBOX-UNAVAILABLE");
}

#[test]
fn a_full_disk_switches_the_outbox_to_memory_and_counts_what_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    let _mount = Mount::tmpfs(&small, "size=192k");
    let store = SqliteStore::open(&small.join("outbox.sqlite"), 10 << 20).unwrap();
    let mut s = Resilient::new(store);
    let event = format!("{{\"e\":\"{}\"}}", "x".repeat(2000));
    let (mut added, mut dropped) = (0u64, 0u64);
    for i in 0..400 {
        let d = s
            .add_pending(Pending::event(QueueName::Low, event.clone()))
            .expect("the resilient store never fails");
        added += 1;
        dropped += d.high + d.low;
        if i % 5 == 4 {
            s.commit().expect("the resilient store never fails");
        }
        if !s.durable() {
            break;
        }
    }
    assert!(!s.durable(), "192 KB filled up ({added} events added)");
    // The events of the failed transaction are reported as dropped, the rest kept.
    let d = s
        .add_pending(Pending::event(QueueName::High, "{\"after\":1}".into()))
        .unwrap();
    dropped += d.high + d.low;
    assert!(
        (1..=5).contains(&dropped),
        "lost {dropped} of the last transaction"
    );
    s.build_message("m1", QueueName::High, 10, 0, &mut |e| e.join(","))
        .unwrap();
    assert_eq!(s.next_message().unwrap().unwrap().body, "{\"after\":1}");
}

/// Ids of the audit-derived events (not the periodic statistics) in `replay --messages`.
fn replay_event_ids(capture_name: &str) -> std::collections::BTreeSet<String> {
    replay_event_ids_with(capture_name, &[])
}

fn replay_event_ids_with(
    capture_name: &str,
    env: &[(&str, &str)],
) -> std::collections::BTreeSet<String> {
    replay_events_with(capture_name, env)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn a_hard_kill_loses_no_aggregated_event_older_than_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let data = dir.path().join("data");
    let port = free_port();
    // Run 1: the capture goes into hour-long aggregation windows; edgeHub is away. After
    // more than a checkpoint interval, SIGKILL: no flush, no goodbye.
    let feed = AuditFeed::start(dir.path(), capture("exec_args.log"));
    let mut m = Module::start(
        dir.path(),
        "kill",
        &env(&workload, port, &feed, &data, &[]),
        &["run"],
    );
    std::thread::sleep(Duration::from_secs(8));
    let _ = m.proc.child.kill();
    let _ = m.proc.child.wait();
    drop(feed);
    // Run 2: edgeHub is there; the checkpointed windows come back as pending events.
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(port));
    let empty = AuditFeed::start(dir.path(), Vec::new());
    let mut m = Module::start(
        dir.path(),
        "after",
        &env(&workload, port, &empty, &data, &[]),
        &["run"],
    );
    hub.wait_telemetry_link();
    std::thread::sleep(Duration::from_secs(1));
    assert!(m.stop(Duration::from_secs(10)).success());
    assert!(
        m.output().contains("restored_window_events="),
        "{}",
        m.output()
    );
    let got: std::collections::BTreeSet<String> = event_ids(&hub).into_iter().collect();
    let want = replay_event_ids("exec_args.log");
    assert!(!want.is_empty());
    assert_eq!(
        got, want,
        "every aggregated event of the killed run arrived"
    );
}

/// GET `path` from 127.0.0.1:`port` (plain HTTP/1.0), the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("azureiotsecurity_{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_what_edgehub_accepted_and_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let mut opts = hub_options(0);
    opts.outcomes = vec!["reject"];
    let hub = EdgeHub::start(dir.path(), &certs, &opts);
    let data = dir.path().join("data");
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let feed = AuditFeed::start(dir.path(), capture("activity.log"));
    let mut m = Module::start(
        dir.path(),
        "metrics",
        &env(
            &workload,
            hub.port,
            &feed,
            &data,
            &[
                ("AZUREIOTSECURITY_METRICS__ENABLED", "true"),
                ("AZUREIOTSECURITY_METRICS__LISTEN", &listen),
                ("AZUREIOTSECURITY_MODULE__TRYOUT", "true"),
            ],
        ),
        &["run"],
    );
    // Try-out mode: messages within 10-30 s; wait for two, then for a quiet moment.
    let count = |outcome: &str| {
        hub.records()
            .iter()
            .filter(|r| r["kind"] == "message" && r["outcome"] == outcome)
            .count() as u64
    };
    hub.wait("two messages", Duration::from_secs(60), |r| {
        r.iter().filter(|x| x["kind"] == "message").count() >= 2
    });
    let (accepted, rejected) = loop {
        let before = (count("accept"), count("reject"));
        std::thread::sleep(Duration::from_millis(2500));
        if (count("accept"), count("reject")) == before {
            break before;
        }
    };
    let text = http_get(metrics_port, "/metrics");
    assert_eq!(metric(&text, "messages_sent_total"), accepted, "{text}");
    assert_eq!(metric(&text, "messages_failed_total"), rejected, "{text}");
    assert_eq!(rejected, 1);
    assert!(metric(&text, "security_events_total") > 0);
    assert_eq!(metric(&text, "edgehub_connects_total"), 1);
    assert!(http_get(metrics_port, "/nothing").contains("not found"));
    assert!(m.stop(Duration::from_secs(10)).success());
    // The final statistics line and /metrics come from one snapshot: every counter is in
    // both; what the stop cannot change (reading, connecting, the one rejection) is equal,
    // and the rest only grew with the stop's flush.
    let output = m.output();
    let line = output
        .lines()
        .rev()
        .find(|l| l.contains(" statistics ") && l.contains(" bytes_read="))
        .unwrap_or_else(|| panic!("no statistics line:\n{output}"));
    let logged = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} on {line}"))
    };
    let rows = azureiotsecurity::stats::Snapshot::default().rows();
    assert!(rows.len() > 30);
    for row in rows.iter().filter(|r| r.kind == "counter") {
        assert!(
            metric(&text, row.metric) <= logged(row.key),
            "{}: {line}\n{text}",
            row.key
        );
    }
    for (key, name) in [
        ("bytes_read", "audit_bytes_read_total"),
        ("lines_read", "audit_lines_read_total"),
        ("records_read", "audit_records_read_total"),
        ("audit_connects", "audit_connects_total"),
        ("connects", "edgehub_connects_total"),
        ("rejected", "edgehub_rejected_total"),
        ("messages_failed", "messages_failed_total"),
    ] {
        assert_eq!(metric(&text, name), logged(key), "{key}: {line}\n{text}");
    }
    assert!(
        logged("bytes_read") > 0 && logged("delivered") >= accepted,
        "{line}"
    );
}

/// Event Ids held by an outbox file: pending events, the windows checkpoint, built messages.
fn committed_ids(data: &Path, scratch: &Path) -> Vec<String> {
    // Read a copy, so that opening it changes nothing in the module's file.
    std::fs::create_dir_all(scratch).unwrap();
    for f in ["outbox.sqlite", "outbox.sqlite-wal"] {
        let _ = std::fs::remove_file(scratch.join(f));
        if data.join(f).exists() {
            std::fs::copy(data.join(f), scratch.join(f)).unwrap();
        }
    }
    if !scratch.join("outbox.sqlite").exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open(scratch.join("outbox.sqlite")).unwrap();
    let mut ids = Vec::new();
    for table in ["pending", "windows"] {
        let mut stmt = conn.prepare(&format!("SELECT json FROM {table}")).unwrap();
        for json in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            let v: Value = serde_json::from_str(&json.unwrap()).unwrap();
            ids.push(v["Id"].as_str().unwrap().to_owned());
        }
    }
    let mut stmt = conn.prepare("SELECT body FROM messages").unwrap();
    for body in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        let v: Value = serde_json::from_str(&body.unwrap()).unwrap();
        for e in v["Events"].as_array().unwrap() {
            ids.push(e["Id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

#[test]
fn twenty_sigkills_under_load_lose_nothing_that_was_committed() {
    use std::collections::{BTreeMap, BTreeSet};
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(0));
    let data = dir.path().join("data");
    let text = capture("activity.log");
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let runs = 20;
    let per = lines.len().div_ceil(runs);
    // Short frequencies, so that windows close, messages are built and sent, and some are
    // in flight when the kill comes.
    let fast = [
        (
            "AZUREIOTSECURITY_AGENT__HIGHPRIORITYMESSAGEFREQUENCY",
            "PT2S",
        ),
        (
            "AZUREIOTSECURITY_AGENT__LOWPRIORITYMESSAGEFREQUENCY",
            "PT3S",
        ),
        ("AZUREIOTSECURITY_AGENT__SNAPSHOTFREQUENCY", "PT4S"),
        (
            "AZUREIOTSECURITY_AGENT__AGGREGATIONINTERVALPROCESSCREATE",
            "PT3S",
        ),
        (
            "AZUREIOTSECURITY_AGENT__AGGREGATIONINTERVALCONNECTIONCREATE",
            "PT3S",
        ),
    ];
    let mut committed = BTreeSet::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for run in 0..runs {
        let slice: Vec<u8> = lines
            .iter()
            .skip(run * per)
            .take(per)
            .flat_map(|l| l.iter().copied())
            .collect();
        let feed_dir = dir.path().join(format!("feed{run}"));
        std::fs::create_dir_all(&feed_dir).unwrap();
        let feed = AuditFeed::start(&feed_dir, slice);
        let tag = format!("kill{run}");
        let mut m = Module::start(
            dir.path(),
            &tag,
            &env(&workload, hub.port, &feed, &data, &fast),
            &["run"],
        );
        // A pseudo-random moment between 1 and 6 s (xorshift; the seed is fixed, so a
        // failure can be replayed).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = Duration::from_millis(1000 + seed % 5000);
        std::thread::sleep(after);
        let _ = m.proc.child.kill();
        let _ = m.proc.child.wait();
        committed.extend(committed_ids(&data, &dir.path().join("scratch")));
    }
    // The last start: no new input; everything left goes out, then SIGTERM.
    let empty = AuditFeed::start(dir.path(), Vec::new());
    let mut m = Module::start(
        dir.path(),
        "final",
        &env(&workload, hub.port, &empty, &data, &fast),
        &["run"],
    );
    let wanted = committed.clone();
    hub.wait("every committed event", Duration::from_secs(60), |_| {
        let got: BTreeSet<String> = all_event_ids(&hub).into_iter().map(|(id, _)| id).collect();
        wanted.is_subset(&got)
    });
    assert!(m.stop(Duration::from_secs(10)).success());
    // The kills found events in the outbox (pending, checkpointed or in built messages), and
    // the runs delivered many more on the way.
    let delivered: BTreeSet<String> = all_event_ids(&hub).into_iter().map(|(id, _)| id).collect();
    assert!(!committed.is_empty(), "the kills found committed events");
    assert!(
        delivered.len() > 100,
        "delivered {} events",
        delivered.len()
    );
    eprintln!(
        "{} events were in the outbox at a kill, {} delivered in all",
        committed.len(),
        delivered.len()
    );
    // Duplicates only of messages that were in flight: an event is never in two
    // different messages.
    let mut by_event: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (event, message) in all_event_ids(&hub) {
        by_event.entry(event).or_default().insert(message);
    }
    let split: Vec<_> = by_event.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(
        split.is_empty(),
        "events delivered in two different messages: {split:?}"
    );
}

/// (event Id, message id) of every event in an accepted message, statistics included.
fn all_event_ids(hub: &EdgeHub) -> Vec<(String, String)> {
    hub.accepted()
        .iter()
        .flat_map(|r| {
            let mid = r["message_id"].as_str().unwrap().to_owned();
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            body["Events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["Id"].as_str().unwrap().to_owned(), mid.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn edgehub_down_for_a_minute_under_steady_load_then_back_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let data = dir.path().join("data");
    let port = free_port(); // edgeHub is down for the first minute
    // The 150 s activity capture, replayed evenly over the minute of the outage.
    let feed = AuditFeed::paced(dir.path(), capture("activity.log"), Duration::from_secs(60));
    let mut m = Module::start(
        dir.path(),
        "outage",
        &env(
            &workload,
            port,
            &feed,
            &data,
            &[
                ("AZUREIOTSECURITY_MODULE__TRYOUT", "true"),
                NO_AGGREGATION[0],
                NO_AGGREGATION[1],
            ],
        ),
        &["run"],
    );
    std::thread::sleep(Duration::from_secs(62));
    assert!(m.alive(), "the module rode out the outage");
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(port));
    hub.wait_telemetry_link();
    // Let it drain, then stop: the last windows are flushed and sent.
    std::thread::sleep(Duration::from_secs(3));
    assert!(m.stop(Duration::from_secs(10)).success());
    let got: std::collections::BTreeSet<String> = event_ids(&hub).into_iter().collect();
    // Without aggregation every derived event is its own, so the comparison is event by event.
    let want = replay_event_ids_with("activity.log", &NO_AGGREGATION);
    assert!(want.len() > 100, "{}", want.len());
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events missing: {missing:?}",
        missing.len(),
        want.len()
    );
    let out = m.output();
    assert!(
        out.contains("E-EDGEHUB-CONNECT"),
        "the outage was logged:\n{out}"
    );
}

/// The queue each event goes to under `config`.
fn queue_of(config: &AgentConfig, name: &str) -> QueueName {
    match EventKind::from_name(name).map(|k| config.priority(k)) {
        Some(Priority::High) => QueueName::High,
        _ => QueueName::Low,
    }
}

fn sum_u64(events: &[&Value], f: impl Fn(&Value) -> u64) -> u64 {
    events.iter().map(|e| f(e)).sum()
}

fn as_u64(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("not a count: {other}"),
    }
}

/// The DroppedEventsStatistics item of queue `q` (High or Low).
fn queue_item<'a>(e: &'a Value, q: &str) -> &'a Value {
    e["Payload"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Queue"] == q)
        .unwrap()
}

/// Waits until the last three messages edgeHub accepted hold statistics only: everything
/// else went or was dropped, and each snapshot found the one before it sent.
fn wait_quiet(hub: &EdgeHub) {
    let stats_only = |r: &Value| {
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        body["Events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["Category"] == "Periodic")
    };
    hub.wait(
        "three statistics-only messages in a row",
        Duration::from_secs(60),
        |r| {
            let accepted: Vec<&Value> = r
                .iter()
                .filter(|x| x["kind"] == "message" && x["outcome"] == "accept")
                .collect();
            accepted.len() >= 3 && accepted[accepted.len() - 3..].iter().all(|x| stats_only(x))
        },
    );
}

/// The bodies of the messages edgeHub accepted, each once, in the order it accepted them.
fn unique_bodies(hub: &EdgeHub) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    hub.accepted()
        .into_iter()
        .filter(|r| seen.insert(r["message_id"].as_str().unwrap().to_owned()))
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect()
}

/// Id → Name of the audit-derived (Security) events among `events`.
fn security_events(events: &[Value]) -> std::collections::BTreeMap<String, String> {
    events
        .iter()
        .filter(|e| e["EventType"] == "Security")
        .map(|e| {
            (
                e["Id"].as_str().unwrap().to_owned(),
                e["Name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn an_overflowing_outbox_reports_exactly_the_drops_it_made_per_queue() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let data = dir.path().join("data");
    let port = free_port(); // edgeHub is down while the capture comes in
    // A cap of 256 KB on disk leaves about 80 KB for events; the capture derives 106 KB of
    // ProcessCreate (High here) and 39 KB of ConnectionCreate (Low).
    let settings = OVERFLOW;
    let config = overflow_config();
    let feed = AuditFeed::paced(dir.path(), capture("activity.log"), Duration::from_secs(6));
    let mut m = Module::start(
        dir.path(),
        "overflow",
        &env(&workload, port, &feed, &data, &settings),
        &["run"],
    );
    // The cap is on real disk use: the data directory is measured all along.
    let disk = DiskSampler::start(&data);
    std::thread::sleep(Duration::from_secs(10));
    assert!(m.alive(), "{}", m.output());
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(port));
    wait_quiet(&hub);
    let bodies = unique_bodies(&hub);
    let messages: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert!(m.stop(Duration::from_secs(10)).success(), "{}", m.output());
    let (peak, samples, files) = disk.stop();
    assert!(samples > 100, "{samples} samples");
    assert!(
        peak <= 262_144,
        "the outbox took {peak} bytes on disk, over its cap: {files}"
    );
    assert!(
        peak > 262_144 / 2,
        "the outbox filled up to {peak} bytes: the cap was reached"
    );
    let verdicts = support::reference_validate(&bodies);
    assert!(verdicts.iter().all(|v| v == "ok"), "{verdicts:?}");

    // Snapshot k is the one in the last message: everything before it was settled when it
    // was taken, and every audit event was derived long before.
    let k = messages.len() - 1;
    let events = |range: std::ops::Range<usize>| -> Vec<Value> {
        messages[range]
            .iter()
            .flat_map(|b| b["Events"].as_array().unwrap().clone())
            .collect()
    };
    let reported = events(0..k + 1);
    let named = |n: &str| -> Vec<&Value> { reported.iter().filter(|e| e["Name"] == n).collect() };
    let msg_stats = named("MessageStatistics");
    let drop_stats = named("DroppedEventsStatistics");
    assert!(drop_stats.len() >= 3, "{drop_stats:?}");

    // What the module derived (the same capture, replayed) and what edgeHub got, per queue.
    let replayed = replay_events_with("activity.log", &settings);
    let want: std::collections::BTreeSet<&String> = replayed.iter().map(|(id, _)| id).collect();
    let audit_delivered = security_events(&events(0..messages.len()));
    for id in audit_delivered.keys() {
        assert!(want.contains(id), "{id} was never derived");
    }
    let before_k = events(0..k);
    for (q, name) in [(QueueName::High, "High"), (QueueName::Low, "Low")] {
        let derived = replayed
            .iter()
            .filter(|(_, n)| queue_of(&config, n) == q)
            .count() as u64;
        let delivered = audit_delivered
            .values()
            .filter(|n| queue_of(&config, n) == q)
            .count() as u64;
        let made = derived - delivered;
        let dropped = sum_u64(&drop_stats, |e| {
            as_u64(&queue_item(e, name)["DroppedEvents"])
        });
        assert_eq!(dropped, made, "{name}: drops reported vs made");
        // Collected: every derived event, and the statistics (and any other operational
        // event) of this queue that the earlier snapshots had already counted.
        let operational = before_k
            .iter()
            .filter(|e| e["EventType"] != "Security")
            .filter(|e| queue_of(&config, e["Name"].as_str().unwrap()) == q)
            .count() as u64;
        let collected = sum_u64(&drop_stats, |e| {
            as_u64(&queue_item(e, name)["CollectedEvents"])
        });
        assert_eq!(collected, derived + operational, "{name}: collected");
        assert!(made > 0, "{name}: the cap made drops in this queue");
    }
    // MessageStatistics: every message before the last, its bytes and 4 KB chunks.
    let sent = sum_u64(&msg_stats, |e| as_u64(&e["Payload"][0]["MessagesSent"]));
    assert_eq!(sent, k as u64);
    let bytes: u64 = bodies[..k].iter().map(|b| b.len() as u64).sum();
    let reported_bytes = sum_u64(&msg_stats, |e| {
        as_u64(&e["Payload"][0]["ExtraDetails"]["BytesSent"])
    });
    assert_eq!(reported_bytes, bytes);
    let under_4kb = bodies[..k].iter().filter(|b| b.len() < 4096).count() as u64;
    let reported_under = sum_u64(&msg_stats, |e| as_u64(&e["Payload"][0]["MessagesUnder4KB"]));
    assert_eq!(reported_under, under_4kb);
    let chunks: u64 = bodies[..k]
        .iter()
        .map(|b| b.len().div_ceil(4096) as u64)
        .sum();
    let reported_chunks = sum_u64(&msg_stats, |e| {
        as_u64(&e["Payload"][0]["ExtraDetails"]["ChunksSent"])
    });
    assert_eq!(reported_chunks, chunks);
    assert_eq!(
        sum_u64(&msg_stats, |e| as_u64(&e["Payload"][0]["TotalFailed"])),
        0
    );
    let out = m.output();
    assert!(out.contains("W-CACHE-FULL"), "{out}");
}

/// (Id, Name) of the audit-derived events of `replay --messages`.
fn replay_events_with(capture_name: &str, env: &[(&str, &str)]) -> Vec<(String, String)> {
    replay_file_events(&support::root().join("tests/data").join(capture_name), env)
}

/// [`replay_events_with`] of any file.
fn replay_file_events(path: &Path, env: &[(&str, &str)]) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
        // As the module runs in these tests (see `env`).
        .env("AZUREIOTSECURITY_DEBUG__SHORT_AGENT_INTERVALS", "true")
        .envs(env.iter().copied())
        .args(["replay", "--messages"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .flat_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["Events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["Category"] != "Periodic")
                .map(|e| {
                    (
                        e["Id"].as_str().unwrap().to_owned(),
                        e["Name"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The load capture, unzipped.
fn load_capture() -> Vec<u8> {
    use std::io::Read;
    let f = std::fs::File::open(support::root().join("tests/data/load.log.gz")).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `/metrics` of a module, or None while it does not answer yet.
fn try_metrics(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// Issue 10 point 6: the cap drops events while edgeHub is away, then SIGKILLs. The drops'
/// counts were held in memory until the next snapshot (which waits for the previous one to
/// be sent), so the kills lost them and DroppedEventsStatistics under-reported.
#[test]
fn drop_counts_survive_sigkills_during_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let data = dir.path().join("data");
    let port = free_port(); // edgeHub is away until the last run
    // The overflow test's settings: a 256 KB cap (about 80 KB of events) against the load
    // capture's 23 k ProcessCreate (High here) and 2.3 k ConnectionCreate (Low). The socket
    // queue holds the whole capture, so the reader drops nothing however slow a debug build
    // is: every event the capture derives reaches the store (stored or dropped by the cap).
    let mut settings = OVERFLOW.to_vec();
    settings.push(("AZUREIOTSECURITY_AUDIT__QUEUE_MAX_BYTES", "67108864"));
    let config = overflow_config();
    let load = load_capture();
    // What the capture derives, replayed meanwhile (it takes a while in a debug build).
    let unzipped = dir.path().join("load.log");
    std::fs::write(&unzipped, &load).unwrap();
    let replay = {
        let env: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::thread::spawn(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            replay_file_events(&unzipped, &env)
        })
    };
    let records = load
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;

    // Run 1: the whole capture, edgeHub away; once every record is read and handed to the
    // outgoing state and the cap has dropped in both queues, a few seconds more (the drops
    // are committed), then SIGKILL.
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let mut first = settings.to_vec();
    first.push(("AZUREIOTSECURITY_METRICS__ENABLED", "true"));
    first.push(("AZUREIOTSECURITY_METRICS__LISTEN", &listen));
    let feed = AuditFeed::start(dir.path(), load);
    let mut m = Module::start(
        dir.path(),
        "outage1",
        &env(&workload, port, &feed, &data, &first),
        &["run"],
    );
    // What the capture derives: the run below is killed only once it derived as many.
    let replayed = replay.join().unwrap();
    let start = std::time::Instant::now();
    let text = loop {
        assert!(m.alive(), "{}", m.output());
        if let Some(t) =
            try_metrics(metrics_port).filter(|t| t.contains("audit_records_read_total"))
        {
            let dropped = metric(&t, "events_dropped_high_total") > 0
                && metric(&t, "events_dropped_low_total") > 0;
            // Read is not enough: the capture's last events wait in the coalescer for its
            // idle timeout, and a kill before they are derived loses them uncounted (1 in
            // 23 k, now and then, before this wait). Derived, then handed on: no command waits
            // for the outgoing state's thread, which stores (or drops) the events.
            let derived = metric(&t, "security_events_total") == replayed.len() as u64;
            let handed_on = metric(&t, "outgoing_commands_waiting") == 0;
            if metric(&t, "audit_records_read_total") == records && dropped && derived && handed_on
            {
                break t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "the capture was not read and derived ({} events) within 90 s:\n{t}",
                replayed.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(metric(&text, "audit_lines_dropped_total"), 0, "{text}");
    std::thread::sleep(Duration::from_secs(3));
    let _ = m.proc.child.kill();
    let _ = m.proc.child.wait();
    assert!(m.output().contains("W-CACHE-FULL"), "{}", m.output());
    drop(feed);

    // Runs 2 and 3: still away, nothing new; each killed a few seconds after its start.
    let empty = AuditFeed::start(dir.path(), Vec::new());
    for run in ["outage2", "outage3"] {
        let mut m = Module::start(
            dir.path(),
            run,
            &env(&workload, port, &empty, &data, &settings),
            &["run"],
        );
        std::thread::sleep(Duration::from_secs(3));
        assert!(m.alive(), "{}", m.output());
        let _ = m.proc.child.kill();
        let _ = m.proc.child.wait();
        assert!(m.output().contains("outbox opened"), "{}", m.output());
    }

    // Run 4: edgeHub is back. Quiet when the last three messages hold statistics only: the
    // last snapshot was taken after everything else was settled.
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(port));
    let mut m = Module::start(
        dir.path(),
        "back",
        &env(&workload, port, &empty, &data, &settings),
        &["run"],
    );
    wait_quiet(&hub);
    let events: Vec<Value> = unique_bodies(&hub)
        .iter()
        .flat_map(|b| {
            let body: Value = serde_json::from_str(b).unwrap();
            body["Events"].as_array().unwrap().clone()
        })
        .collect();
    assert!(m.stop(Duration::from_secs(10)).success(), "{}", m.output());

    let want: std::collections::BTreeSet<&String> = replayed.iter().map(|(id, _)| id).collect();
    let delivered = security_events(&events);
    for id in delivered.keys() {
        assert!(want.contains(id), "{id} was never derived");
    }
    let drop_stats: Vec<&Value> = events
        .iter()
        .filter(|e| e["Name"] == "DroppedEventsStatistics")
        .collect();
    for (q, name) in [(QueueName::High, "High"), (QueueName::Low, "Low")] {
        let derived = replayed
            .iter()
            .filter(|(_, n)| queue_of(&config, n) == q)
            .count() as u64;
        let arrived = delivered
            .values()
            .filter(|n| queue_of(&config, n) == q)
            .count() as u64;
        let reported = sum_u64(&drop_stats, |e| {
            as_u64(&queue_item(e, name)["DroppedEvents"])
        });
        eprintln!("{name}: {derived} derived, {arrived} arrived, {reported} reported dropped");
        assert!(derived > arrived, "{name}: the cap dropped events");
        assert_eq!(
            reported,
            derived - arrived,
            "{name}: drops reported vs events that never arrived ({derived} derived, {arrived} arrived)"
        );
    }
}

/// Samples the bytes the files of a directory take, until stopped: the peak.
struct DiskSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64, String)>,
}

impl DiskSampler {
    fn start(dir: &Path) -> DiskSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, dir) = (stop.clone(), dir.to_owned());
        let thread = std::thread::spawn(move || {
            let (mut peak, mut samples, mut at_peak) = (0u64, 0u64, String::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let files: Vec<(String, u64)> = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        let e = e.ok()?;
                        let m = e.metadata().ok()?;
                        m.is_file()
                            .then(|| (e.file_name().to_string_lossy().into_owned(), m.len()))
                    })
                    .collect();
                let total = files.iter().map(|f| f.1).sum();
                if total > peak {
                    peak = total;
                    at_peak = format!("{files:?}");
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (peak, samples, at_peak)
        });
        DiskSampler { stop, thread }
    }

    /// The peak, the number of samples, the files at the peak.
    fn stop(self) -> (u64, u64, String) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn a_data_directory_that_fills_up_while_running_is_said_upstream_and_forwarding_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let data = dir.path().join("tiny");
    // Room for the empty outbox and a little more: the capture's events fill it while
    // edgeHub is down (the default cap, 2.56 MB, is far above what the disk has).
    let _mount = Mount::tmpfs(&data, "size=128k");
    let port = free_port();
    let feed = AuditFeed::paced(dir.path(), capture("activity.log"), Duration::from_secs(6));
    let settings = [
        (
            "AZUREIOTSECURITY_AGENT__HIGHPRIORITYMESSAGEFREQUENCY",
            "PT2S",
        ),
        (
            "AZUREIOTSECURITY_AGENT__LOWPRIORITYMESSAGEFREQUENCY",
            "PT2S",
        ),
        NO_AGGREGATION[0],
        NO_AGGREGATION[1],
    ];
    let mut m = Module::start(
        dir.path(),
        "filling",
        &env(&workload, port, &feed, &data, &settings),
        &["run"],
    );
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        m.alive(),
        "the module rode out the full disk:\n{}",
        m.output()
    );
    assert!(m.output().contains("E-OUTBOX-WRITE"), "{}", m.output());
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(port));
    hub.wait("the Diagnostic event", Duration::from_secs(30), |r| {
        r.iter().any(|x| {
            x["kind"] == "message"
                && x["outcome"] == "accept"
                && x["body"].as_str().unwrap_or("").contains("E-OUTBOX-WRITE")
        })
    });
    assert!(m.stop(Duration::from_secs(10)).success(), "{}", m.output());
    assert_diagnostic(&hub, "E-OUTBOX-WRITE");
    // Forwarding went on from memory: events derived after the failure arrived.
    assert!(event_ids(&hub).len() > 50, "{}", event_ids(&hub).len());
}

/// Real derived events of a capture (`tests/data/<name>.events.jsonl`, one JSON object a
/// line), as the module stores them.
fn real_events(name: &str) -> Vec<String> {
    std::fs::read_to_string(
        support::root()
            .join("tests/data")
            .join(format!("{name}.events.jsonl")),
    )
    .unwrap()
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(str::to_owned)
    .collect()
}

fn id_of(event: &str) -> String {
    let v: Value = serde_json::from_str(event).unwrap();
    v["Id"].as_str().unwrap().to_owned()
}

/// Messages and statistics due every 2 s, so that what the outbox holds goes at once.
const PROMPT: [(&str, &str); 3] = [
    (
        "AZUREIOTSECURITY_AGENT__HIGHPRIORITYMESSAGEFREQUENCY",
        "PT2S",
    ),
    (
        "AZUREIOTSECURITY_AGENT__LOWPRIORITYMESSAGEFREQUENCY",
        "PT2S",
    ),
    ("AZUREIOTSECURITY_AGENT__SNAPSHOTFREQUENCY", "PT2S"),
];

/// (auto_vacuum, page_size) of an outbox file, and its mode bits.
fn file_form(path: &Path) -> (i64, i64, u32) {
    use std::os::unix::fs::PermissionsExt;
    let c = rusqlite::Connection::open(path).unwrap();
    let get = |p: &str| {
        c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    (get("auto_vacuum"), get("page_size"), mode)
}

#[test]
fn an_outbox_rebuilt_by_another_tool_is_converted_delivered_and_the_module_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path());
    let workload = Workload::start(dir.path(), KEY, MODULE, "g1", &certs.ca);
    let hub = EdgeHub::start(dir.path(), &certs, &hub_options(0));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let outbox = data.join("outbox.sqlite");
    // What an operator's `.recover` rebuild after E-OUTBOX-CORRUPT looks like (the file's
    // comment says what it holds), its `pending` holding real events, 0644.
    let events = real_events("exec_args");
    {
        let c = rusqlite::Connection::open(&outbox).unwrap();
        c.execute_batch(include_str!("support/recovered_outbox.sql"))
            .unwrap();
        for e in &events {
            c.execute(
                "INSERT INTO pending (queue, json) VALUES (1, ?1)",
                rusqlite::params![e],
            )
            .unwrap();
        }
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&outbox, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    assert_eq!(file_form(&outbox), (0, 1024, 0o644));
    let feed = AuditFeed::start(dir.path(), Vec::new());
    let mut m = Module::start(
        dir.path(),
        "rebuilt",
        &env(&workload, hub.port, &feed, &data, &PROMPT),
        &["run"],
    );
    let ids: Vec<String> = events.iter().map(|e| id_of(e)).collect();
    hub.wait(
        "the rebuilt outbox's events",
        Duration::from_secs(30),
        |_| {
            let got = event_ids(&hub);
            ids.iter().all(|id| got.contains(id))
        },
    );
    // The grace (3 s) and a margin: a module spinning in maintenance would not stop.
    let st = m.stop(Duration::from_secs(10));
    assert!(st.success(), "{st:?}\n{}", m.output());
    let got = event_ids(&hub);
    for id in &ids {
        assert_eq!(got.iter().filter(|g| *g == id).count(), 1, "{id} once");
    }
    let out = m.output();
    assert!(!out.contains("E-OUTBOX-CORRUPT"), "used, not moved:\n{out}");
    assert!(!out.contains("W-OUTBOX-VACUUM"), "{out}");
    // Converted: incremental auto-vacuum (2), 4 KB pages, the owner's only.
    assert_eq!(file_form(&outbox), (2, 4096, 0o600));
}

/// Sums over the statistics edgeHub accepted: (dropped High, dropped Low, failed messages).
fn statistics_sums(hub: &EdgeHub) -> (u64, u64, u64) {
    let (mut high, mut low, mut failed) = (0, 0, 0);
    for r in hub.accepted() {
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        for e in body["Events"].as_array().unwrap() {
            match e["Name"].as_str() {
                Some("DroppedEventsStatistics") => {
                    for p in e["Payload"].as_array().unwrap() {
                        let n = as_u64(&p["DroppedEvents"]);
                        match p["Queue"].as_str() {
                            Some("High") => high += n,
                            _ => low += n,
                        }
                    }
                }
                Some("MessageStatistics") => failed += as_u64(&e["Payload"][0]["TotalFailed"]),
                _ => {}
            }
        }
    }
    (high, low, failed)
}

/// A module-made outbox holding the real events of `exec_args` (pending, Low) and a built
/// message (`good-1`) of the first three, damaged by the SQL `damage`; the module runs on
/// it with edgeHub up until every good event has arrived and the statistics report
/// `expected` (dropped High, dropped Low, failed messages), then stops on SIGTERM.
/// Returns the hub, the module's output and the outbox path (in `dir`).
fn run_on_damaged_outbox(
    dir: &Path,
    damage: &str,
    expected: (u64, u64, u64),
) -> (EdgeHub, String, PathBuf) {
    let certs = Certs::make(dir);
    let workload = Workload::start(dir, KEY, MODULE, "g1", &certs.ca);
    let hub = EdgeHub::start(dir, &certs, &hub_options(0));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let outbox = data.join("outbox.sqlite");
    let events = real_events("exec_args");
    {
        let mut s = SqliteStore::open(&outbox, 1 << 30).unwrap();
        for e in &events {
            s.add_pending(Pending::event(QueueName::Low, e.clone()))
                .unwrap();
        }
        s.build_message("good-1", QueueName::Low, 0, 3, &mut |evs| {
            let evs: Vec<Value> = evs
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            support::envelope(&evs)
        })
        .unwrap();
        s.commit().unwrap();
    }
    rusqlite::Connection::open(&outbox)
        .unwrap()
        .execute_batch(damage)
        .unwrap();
    let feed = AuditFeed::start(dir, Vec::new());
    let mut m = Module::start(
        dir,
        "damaged",
        &env(&workload, hub.port, &feed, &data, &PROMPT),
        &["run"],
    );
    let ids: Vec<String> = events.iter().map(|e| id_of(e)).collect();
    hub.wait(
        "the good rows and the statistics of the bad ones",
        Duration::from_secs(40),
        |_| {
            let got = event_ids(&hub);
            ids.iter().all(|id| got.contains(id)) && statistics_sums(&hub) == expected
        },
    );
    let st = m.stop(Duration::from_secs(10));
    assert!(st.success(), "{st:?}\n{}", m.output());
    assert!(delivered_ids(&hub).contains(&"good-1".to_owned()));
    // Counted once: the final statistics add nothing.
    assert_eq!(statistics_sums(&hub), expected);
    let out = m.output();
    assert!(out.contains("E-OUTBOX-ROW-BAD"), "{out}");
    assert_diagnostic(&hub, "E-OUTBOX-ROW-BAD");
    (hub, out, outbox)
}

#[test]
fn a_message_row_with_a_blob_body_is_removed_counted_failed_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    // Synthetic damage: a valid message, but stored as a BLOB, before good-1.
    let body = support::envelope(&[serde_json::from_str(&real_events("net_tcp")[0]).unwrap()])
        .replace('\'', "''");
    let damage = format!(
        "INSERT INTO messages (seq, message_id, body, high_events, low_events)
             VALUES (0, 'bad-blob', CAST('{body}' AS BLOB), 0, 1);"
    );
    let (hub, _, _) = run_on_damaged_outbox(dir.path(), &damage, (0, 0, 1));
    assert!(!delivered_ids(&hub).contains(&"bad-blob".to_owned()));
}

#[test]
fn a_pending_row_stored_as_a_blob_is_removed_counted_and_the_outbox_stays_in_use() {
    let dir = tempfile::tempdir().unwrap();
    // Synthetic damage: a real event, stored as a BLOB, first in the Low queue.
    let event = real_events("net_tcp")[0].clone();
    let damage = format!(
        "INSERT INTO pending (seq, queue, json, statistics) VALUES (0, 1, CAST('{}' AS BLOB), 0);",
        event.replace('\'', "''")
    );
    let (hub, out, outbox) = run_on_damaged_outbox(dir.path(), &damage, (0, 1, 0));
    assert!(!out.contains("E-OUTBOX-WRITE"), "{out}");
    assert!(!out.contains("forwarding from memory"), "{out}");
    assert!(!event_ids(&hub).contains(&id_of(&event)));
    let c = rusqlite::Connection::open(&outbox).unwrap();
    let blobs: i64 = c
        .query_row(
            "SELECT count(*) FROM pending WHERE typeof(json) = 'blob'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(blobs, 0, "removed from the file, which stayed in use");
}

#[test]
fn a_pending_row_that_is_not_json_never_reaches_edgehub() {
    let dir = tempfile::tempdir().unwrap();
    // Synthetic damage: a command line where an event should be, first in the Low queue.
    let damage = "INSERT INTO pending (seq, queue, json, statistics)
                      VALUES (0, 1, 'sshpass -p hunter2 ssh root@db', 0);";
    let (hub, _, _) = run_on_damaged_outbox(dir.path(), damage, (0, 1, 0));
    let bodies: Vec<String> = hub
        .accepted()
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect();
    assert!(bodies.iter().all(|b| !b.contains("hunter2")), "{bodies:#?}");
    let verdicts = support::reference_validate(&bodies);
    assert!(verdicts.iter().all(|v| v == "ok"), "{verdicts:?}");
}
