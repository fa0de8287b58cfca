//! Arbitrary input split into lines, through a `Coalescer` with small bounds (pushes with a
//! moving clock, ticks, a flush at the end), then through the whole `Pipeline` with the
//! security events serialized by serde_json.
//!
//! Checks the coalescer's promises on every input: the in-flight bounds hold after every
//! push; every emitted event's lines parse, share its event id and fit `max_event_bytes`;
//! the event counter matches what was emitted; and loss is never silent: every line pushed
//! is either stored in an emitted event or counted (bad, late, duplicate, truncated, or an
//! EOE that completed its event or was counted as late/stray/duplicate). Every security
//! event serializes to a JSON object.
//!
//! The first byte of the input picks the bounds and how often to tick.

#![no_main]

use azureiotsecurity::audit::coalesce::{AuditEvent, CoalesceConfig, Coalescer};
use azureiotsecurity::audit::parse::Record;
use azureiotsecurity::pipeline::Pipeline;
use azureiotsecurity::config::settings::Settings;
use libfuzzer_sys::fuzz_target;

fn check_events(cfg: &CoalesceConfig, c: &mut Coalescer, out: &mut Vec<AuditEvent>) -> u64 {
    let mut stored = 0;
    for ev in out.drain(..) {
        assert!(
            ev.len_bytes() <= cfg.max_event_bytes,
            "event over max_event_bytes"
        );
        let mut n = 0;
        for line in ev.lines() {
            n += 1;
            assert!(!line.contains(&b'\n'));
            let rec = Record::parse(line).expect("a stored line parses");
            assert_eq!(rec.id, ev.id(), "a stored line of another event");
        }
        assert_eq!(n, ev.record_count());
        assert_eq!(ev.records().count(), n);
        let _ = ev.node();
        let _ = (ev.completion().as_str(), ev.truncated());
        stored += n as u64;
        c.recycle(ev);
    }
    stored
}

fuzz_target!(|data: &[u8]| {
    let (ctl, input) = match data.split_first() {
        Some((&c, rest)) => (c, rest),
        None => (0, data),
    };
    let cfg = CoalesceConfig {
        max_inflight_events: 1 + usize::from(ctl & 3),
        max_inflight_bytes: 256 << ((ctl >> 2) & 3),
        max_event_bytes: 128 << ((ctl >> 4) & 3),
        record_timeout_ms: u64::from(ctl >> 6) * 500,
        idle_ms: 5,
        recent_completed: 8,
        max_nodes: 2,
    };
    let tick_every = 1 + usize::from(ctl >> 5);

    let mut c = Coalescer::new(cfg.clone());
    let cfg = c.config().clone();
    let mut out = Vec::new();
    let mut stored = 0u64;
    let mut emitted = 0u64;
    let mut lines = 0u64;
    let mut now = 0u64;
    for (i, line) in input.split(|&b| b == b'\n').enumerate() {
        lines += 1;
        now += 1 + (i as u64 % 3);
        let _ = c.push(line, now, &mut out);
        let (events, bytes) = c.inflight();
        assert!(
            events <= cfg.max_inflight_events,
            "{events} events in flight"
        );
        assert!(bytes <= cfg.max_inflight_bytes, "{bytes} bytes in flight");
        if i % tick_every == 0 {
            c.tick(now, &mut out);
        }
        emitted += out.len() as u64;
        stored += check_events(&cfg, &mut c, &mut out);
    }
    c.flush(&mut out);
    emitted += out.len() as u64;
    stored += check_events(&cfg, &mut c, &mut out);
    assert_eq!(c.inflight(), (0, 0), "events left after flush");

    let s = c.stats().clone();
    assert_eq!(s.events, emitted, "event counter");
    assert_eq!(s.records + s.bad_lines, lines, "records + bad lines");
    let accounted = stored
        + s.bad_lines
        + s.late_records
        + s.duplicate_records
        + s.truncated_records
        + s.completed_eoe
        + s.late_eoe
        + s.stray_eoe;
    assert_eq!(accounted, lines, "a line neither stored nor counted: {s:?}");

    // The whole pipeline, with small caches, to JSON.
    let mut settings = Settings::default();
    settings.audit.max_inflight_events = cfg.max_inflight_events;
    settings.audit.max_inflight_bytes = cfg.max_inflight_bytes;
    settings.audit.max_event_bytes = cfg.max_event_bytes;
    settings.audit.record_timeout_ms = cfg.record_timeout_ms;
    settings.audit.idle_ms = cfg.idle_ms;
    settings.events.process_cache_entries = 4;
    settings.events.process_cache_bytes = 1024;
    settings.events.max_command_line_bytes = 64 + usize::from(ctl);
    let mut p = Pipeline::new(&settings);
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let mut serialize = |events: &mut Vec<_>| {
        for ev in events.drain(..) {
            buf.clear();
            serde_json::to_writer(&mut buf, &ev).expect("serialize a security event");
            let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
            assert!(v.get("Payload").is_some_and(|p| p.is_array()));
        }
    };
    now = 0;
    for (i, line) in input.split(|&b| b == b'\n').enumerate() {
        now += 1 + (i as u64 % 3);
        p.push_line(line, now, &mut events);
        if i % tick_every == 0 {
            p.tick(now, &mut events);
        }
        serialize(&mut events);
    }
    p.flush(&mut events);
    serialize(&mut events);
    let _ = serde_json::to_vec(&p.stats()).expect("stats serialize");
});
