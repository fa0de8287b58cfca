//! Throughput on the real load capture (`tests/data/load.log.gz`: 200,842 records, 27,691
//! events, 36 MB of auditd's af_unix stream), each row beside `linux-audit-parser`
//! (laurel's parser; LGPL, a dev-dependency only) doing the same work in the same run.
//!
//! ```text
//! cargo bench --bench audit
//! ```
//!
//! The capture is decompressed and split into lines once, outside the timed part. Each
//! iteration processes the whole capture; the counters give records/s and MB/s.
//!
//! - `parse`: every line to a record with every field reachable and hex decoded.
//!   - `ours`: `Record::parse`, then every field of the body (walking into `msg='…'`) and of
//!     the enrichment: `decoded()` on the fields the kernel encodes (the string fields of
//!     the audit field dictionary, EXECVE's `aN`/`aN[k]`, and every enriched value), hex
//!     numbers (`arch`, SYSCALL's `a0`…`a3`, capabilities) and decimal numbers parsed, the
//!     rest read as text. That is the work `linux_audit_parser::parse` does.
//!   - `linux_audit_parser`: `linux_audit_parser::parse(line, false)` (enriched fields
//!     kept): header, typed values per its field dictionary, hex decoding, `msg='…'` split
//!     into a map, values copied into the message's own arena.
//!
//!   `tests/quick/parse_equivalence.rs` checks over every capture that both give the same type,
//!   event id, field keys and decoded exe/comm/cwd/name/proctitle/aN; the setup here
//!   re-checks type and id for every record before timing.
//! - `pipeline`: lines to JSON.
//!   - `ours`: `Pipeline::push_line` over every line (time 0, as `replay`), `flush`, and
//!     `serde_json` of every security event (ProcessCreate, ConnectionCreate, Login): parse,
//!     coalescing into events (EOE, bounds, timeouts, loss estimate), argv assembly,
//!     sockaddr decoding, the process cache, the events and their JSON.
//!   - `linux_audit_parser`: the crate has no coalescer (laurel's is in laurel), so:
//!     `linux_audit_parser::parse` per line; records of kernel events (`is_multipart`)
//!     grouped in a `HashMap` by (node, event id) until their EOE; other records are events
//!     by themselves; events without EOE are emitted at the end; each event is written with
//!     `serde_json` as `{"ID", "NODE", "RECORDS": [{"TYPE", fields…}]}` with every value as
//!     JSON text or number. No timeouts, no bounds, no argv assembly: less work than ours.
//!
//! Under `cargo test` (no `--bench`), only the first 20,000 lines are used so that the test
//! run stays short.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Read;
use std::sync::LazyLock;

use azureiotsecurity::audit::parse::{Record, Value};
use azureiotsecurity::audit::syscalls::parse_hex_u64;
use azureiotsecurity::audit::types;
use azureiotsecurity::config::settings::Settings;
use azureiotsecurity::pipeline::Pipeline;
use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};
use linux_audit_parser as lap;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

fn main() {
    divan::main();
}

/// The decompressed capture and its lines (each with its `\n`).
struct Capture {
    text: Vec<u8>,
    lines: Vec<(usize, usize)>,
}

impl Capture {
    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.lines.iter().map(|&(s, e)| &self.text[s..e])
    }

    fn bytes(&self) -> usize {
        self.lines.iter().map(|&(s, e)| e - s).sum()
    }

    fn counters(&self) -> (ItemsCount, BytesCount) {
        (
            ItemsCount::new(self.lines.len()),
            BytesCount::new(self.bytes()),
        )
    }
}

static CAPTURE: LazyLock<Capture> = LazyLock::new(|| {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/load.log.gz");
    let gz = std::fs::read(path).expect("read tests/data/load.log.gz");
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut text)
        .expect("gunzip load.log.gz");
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            lines.push((start, i + 1));
            start = i + 1;
        }
    }
    let benchmarking = std::env::args().any(|a| a == "--bench");
    if !benchmarking {
        lines.truncate(20_000);
    } else {
        assert_eq!(lines.len(), 200_842, "the load capture changed");
    }
    let cap = Capture { text, lines };
    // Equal work: both parsers read every record with the same type and event id (the
    // full comparison, fields and decoded values, is tests/quick/parse_equivalence.rs).
    for line in cap.lines() {
        let ours = Record::parse(line).expect("ours parses the capture");
        let theirs = lap::parse(line, false).expect("linux-audit-parser parses the capture");
        assert_eq!(u32::from(ours.rtype), theirs.ty.0);
        assert_eq!(ours.id.millis(), theirs.id.timestamp);
        assert_eq!(ours.id.serial, u64::from(theirs.id.sequence));
    }
    cap
});

/// String fields the kernel (or user space) hex-encodes when they hold unsafe bytes: the
/// `encoded` fields of the audit field dictionary.
fn is_encoded(key: &[u8]) -> bool {
    matches!(
        key,
        b"acct"
            | b"addr"
            | b"cgroup"
            | b"cmd"
            | b"comm"
            | b"cwd"
            | b"data"
            | b"device"
            | b"dir"
            | b"exe"
            | b"file"
            | b"grp"
            | b"key"
            | b"name"
            | b"ocomm"
            | b"path"
            | b"proctitle"
            | b"saddr"
            | b"subj"
            | b"vm"
            | b"watch"
    ) || key.starts_with(b"old-")
        || key.starts_with(b"new-")
}

fn is_arg_key(key: &[u8]) -> bool {
    match key.strip_prefix(b"a") {
        Some(rest) => {
            let d = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            d > 0 && (d == rest.len() || rest.get(d) == Some(&b'['))
        }
        None => false,
    }
}

fn is_hex_number(key: &[u8]) -> bool {
    matches!(key, b"arch" | b"cap_fi" | b"cap_fp" | b"cap_fver") || key.starts_with(b"cap_")
}

/// Read one value as `linux_audit_parser::parse` would type it; returns a checksum.
fn typed(rtype: u16, key: &[u8], v: Value<'_>) -> u64 {
    let decode = |v: Value<'_>| v.decoded().map_or(1, |d| d.len() as u64);
    if rtype == types::EXECVE && is_arg_key(key) || is_encoded(key) {
        decode(v)
    } else if rtype == types::SYSCALL && is_arg_key(key) || is_hex_number(key) {
        parse_hex_u64(v.raw()).unwrap_or(2)
    } else {
        match v {
            Value::Bare(b) => v.as_i64().map_or(b.len() as u64, |n| n as u64),
            other => other.raw().len() as u64,
        }
    }
}

fn parse_ours<'a>(lines: impl Iterator<Item = &'a [u8]>) -> u64 {
    let mut sum = 0u64;
    for line in lines {
        let rec = Record::parse(line).expect("a record");
        sum = sum
            .wrapping_add(u64::from(rec.rtype))
            .wrapping_add(rec.id.serial);
        for f in rec.fields() {
            sum = sum.wrapping_add(typed(rec.rtype, f.key, f.value));
        }
        for f in rec.enriched_fields() {
            sum = sum.wrapping_add(f.value.decoded().map_or(1, |d| d.len() as u64));
        }
    }
    sum
}

fn parse_theirs<'a>(lines: impl Iterator<Item = &'a [u8]>) -> u64 {
    let mut sum = 0u64;
    for line in lines {
        let msg = lap::parse(line, false).expect("a record");
        sum = sum
            .wrapping_add(u64::from(msg.ty.0))
            .wrapping_add(msg.body.len() as u64);
        black_box(&msg);
    }
    sum
}

mod parse {
    use super::*;

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn ours(b: Bencher) {
        let cap = &*CAPTURE;
        let (items, bytes) = cap.counters();
        b.counter(items)
            .counter(bytes)
            .bench(|| black_box(parse_ours(black_box(cap).lines())));
    }

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn linux_audit_parser(b: Bencher) {
        let cap = &*CAPTURE;
        let (items, bytes) = cap.counters();
        b.counter(items)
            .counter(bytes)
            .bench(|| black_box(parse_theirs(black_box(cap).lines())));
    }
}

// ---------------------------------------------------------------------------------------
// The reference pipeline's JSON: values as text or numbers (serde's default for its byte
// strings would be arrays of integers).
// ---------------------------------------------------------------------------------------

struct JsonValue<'a>(&'a lap::Value<'a>);

impl serde::Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            lap::Value::Empty => s.serialize_none(),
            lap::Value::Str(b, _) => s.serialize_str(&String::from_utf8_lossy(b)),
            lap::Value::Owned(b) => s.serialize_str(&String::from_utf8_lossy(b)),
            lap::Value::Number(n) => serde::Serialize::serialize(n, s),
            lap::Value::List(vs) | lap::Value::StringifiedList(vs) => {
                let mut seq = s.serialize_seq(Some(vs.len()))?;
                for v in vs {
                    seq.serialize_element(&JsonValue(v))?;
                }
                seq.end()
            }
            lap::Value::Map(kvs) => {
                let mut m = s.serialize_map(Some(kvs.len()))?;
                for (k, v) in kvs {
                    m.serialize_entry(&k.to_string(), &JsonValue(v))?;
                }
                m.end()
            }
            other => s.collect_str(&format_args!("{other:?}")),
        }
    }
}

struct JsonRecord<'a>(&'a lap::Message<'a>);

impl serde::Serialize for JsonRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.body.len() + 1))?;
        m.serialize_entry("TYPE", &self.0.ty.to_string())?;
        for (k, v) in &self.0.body {
            m.serialize_entry(&k.to_string(), &JsonValue(v))?;
        }
        m.end()
    }
}

struct JsonEvent<'a>(&'a [lap::Message<'a>]);

impl serde::Serialize for JsonEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let first = &self.0[0];
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("ID", &first.id.to_string())?;
        m.serialize_entry("NODE", &first.node.as_deref().map(String::from_utf8_lossy))?;
        let recs: Vec<JsonRecord<'_>> = self.0.iter().map(JsonRecord).collect();
        m.serialize_entry("RECORDS", &Records(&recs))?;
        m.end()
    }
}

struct Records<'a, 'b>(&'a [JsonRecord<'b>]);

impl serde::Serialize for Records<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// Write one event as a JSON line into `buf`; its length.
fn write_event(buf: &mut Vec<u8>, ev: &[lap::Message<'_>]) -> usize {
    buf.clear();
    serde_json::to_writer(&mut *buf, &JsonEvent(ev)).expect("serialize");
    buf.push(b'\n');
    buf.len()
}

/// Events and JSON bytes out.
fn pipeline_ours<'a>(lines: impl Iterator<Item = &'a [u8]>) -> (usize, usize) {
    let mut p = Pipeline::new(&Settings::default());
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(4096);
    let (mut events, mut bytes) = (0, 0);
    let mut emit = |out: &mut Vec<_>| {
        for ev in out.drain(..) {
            buf.clear();
            serde_json::to_writer(&mut buf, &ev).expect("serialize");
            buf.push(b'\n');
            events += 1;
            bytes += buf.len();
        }
    };
    for line in lines {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        p.push_line(line, 0, &mut out);
        emit(&mut out);
    }
    p.flush(&mut out);
    emit(&mut out);
    (events, bytes)
}

fn pipeline_theirs<'a>(lines: impl Iterator<Item = &'a [u8]>) -> (usize, usize) {
    type Key = (Option<Vec<u8>>, lap::EventID);
    let mut inflight: HashMap<Key, Vec<lap::Message<'static>>> = HashMap::new();
    let mut buf = Vec::with_capacity(4096);
    let (mut events, mut bytes) = (0, 0);
    for line in lines {
        let Ok(msg) = lap::parse(line, false) else {
            continue;
        };
        if !msg.ty.is_multipart() {
            bytes += write_event(&mut buf, std::slice::from_ref(&msg));
            events += 1;
        } else if msg.ty == lap::MessageType::EOE {
            if let Some(ev) = inflight.remove(&(msg.node.clone(), msg.id)) {
                bytes += write_event(&mut buf, &ev);
                events += 1;
            }
        } else {
            inflight
                .entry((msg.node.clone(), msg.id))
                .or_default()
                .push(msg);
        }
    }
    let mut rest: Vec<_> = inflight.into_iter().collect();
    rest.sort_by_key(|(k, _)| k.1);
    for (_, ev) in rest {
        bytes += write_event(&mut buf, &ev);
        events += 1;
    }
    (events, bytes)
}

mod pipeline {
    use super::*;

    /// What each pipeline row produces (once, outside the timed part).
    fn report() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let cap = &*CAPTURE;
            let (e, b) = pipeline_ours(cap.lines());
            eprintln!("pipeline/ours: {e} security events, {b} bytes of JSON");
            let (e, b) = pipeline_theirs(cap.lines());
            eprintln!("pipeline/linux_audit_parser: {e} audit events, {b} bytes of JSON");
        });
    }

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn ours(b: Bencher) {
        let cap = &*CAPTURE;
        let (items, bytes) = cap.counters();
        report();
        b.counter(items)
            .counter(bytes)
            .bench(|| black_box(pipeline_ours(black_box(cap).lines())));
    }

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn linux_audit_parser(b: Bencher) {
        let cap = &*CAPTURE;
        let (items, bytes) = cap.counters();
        report();
        b.counter(items)
            .counter(bytes)
            .bench(|| black_box(pipeline_theirs(black_box(cap).lines())));
    }
}
