//! Records → audit events.
//!
//! The kernel writes one audit *event* as several records (SYSCALL, EXECVE, CWD, PATH…,
//! PROCTITLE, EOE), one line each, sharing `msg=audit(SEC.MSEC:SERIAL)`. The [`Coalescer`]
//! groups the lines back into events, keyed by `(node, timestamp, serial)`, and emits each one
//! once it is whole ([`Completion`] says how it knew). A synchronous state machine: no I/O, no
//! clock of its own (the caller passes a monotonic reading for the idle timeout), every
//! structure bounded in entries and bytes, and nothing dropped without a counter in
//! [`CoalesceStats`]. Emitted buffers come back through [`Coalescer::recycle`], so the steady
//! state allocates nothing. Quirks: `shared/reference/auditd-here.md` A.2, `audit-stream.md`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::parse::{EventId, ParseError, Record};
use super::types;

/// Limits and timeouts of the [`Coalescer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// Events in flight at most; beyond, the oldest is emitted early (`evicted`).
    pub max_inflight_events: usize,
    /// Record bytes in flight at most (all events); beyond, the oldest is emitted early.
    pub max_inflight_bytes: usize,
    /// Record bytes of one event at most; further records are dropped (`truncated_records`).
    pub max_event_bytes: usize,
    /// An event without EOE completes once its node's record time has moved this far past
    /// the record time at which the event was first seen.
    pub record_timeout_ms: u64,
    /// [`Coalescer::tick`] completes events that received no record for this long (0: every
    /// event in flight at each tick).
    pub idle_ms: u64,
    /// How many completed event keys are remembered to recognise late records.
    pub recent_completed: usize,
    /// Distinct `node=` names tracked; further nodes share one overflow id.
    pub max_nodes: usize,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        CoalesceConfig {
            max_inflight_events: 1024,
            max_inflight_bytes: 8 << 20,
            max_event_bytes: 1 << 20,
            record_timeout_ms: 2000,
            idle_ms: 500,
            recent_completed: 4096,
            max_nodes: 256,
        }
    }
}

/// Why an event was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Completion {
    /// Its EOE record arrived: the kernel said the event is whole.
    Eoe,
    /// A single-record event (USER_*, CRED_*, DAEMON_*, …).
    Single,
    /// No EOE, and record time moved past the timeout (audit.log, forwarded events).
    RecordTimeout,
    /// No EOE, and no record for it during the idle time (live socket, [`Coalescer::tick`]).
    Idle,
    /// Emitted early because the in-flight bounds were reached; it may lack records.
    Evicted,
    /// Emitted by [`Coalescer::flush`] (end of input, shutdown).
    Flush,
}

impl Completion {
    /// A short name for logs and statistics.
    pub fn as_str(self) -> &'static str {
        match self {
            Completion::Eoe => "eoe",
            Completion::Single => "single",
            Completion::RecordTimeout => "record_timeout",
            Completion::Idle => "idle",
            Completion::Evicted => "evicted",
            Completion::Flush => "flush",
        }
    }
}

/// One audit event: its records, in arrival order, owned in one contiguous buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    id: EventId,
    /// `data[..node_len]` is the `node=` name of the event's first record.
    node_len: usize,
    /// The node name, then the record lines back to back (without newlines).
    data: Vec<u8>,
    /// `(start, end)` of each record line in `data`.
    spans: Vec<(usize, usize)>,
    completion: Completion,
    truncated: bool,
}

impl AuditEvent {
    /// Timestamp and serial shared by the event's records.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The `node=` name, empty when the records carry none.
    pub fn node(&self) -> &[u8] {
        self.data.get(..self.node_len).unwrap_or_default()
    }

    /// The record lines as received (without newline), in arrival order.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.spans
            .iter()
            .filter_map(|&(start, end)| self.data.get(start..end))
    }

    /// The records, parsed again from the stored lines (cheap: the parser borrows).
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        self.lines().filter_map(|line| Record::parse(line).ok())
    }

    /// How many records the event holds.
    pub fn record_count(&self) -> usize {
        self.spans.len()
    }

    /// Bytes of the stored record lines.
    pub fn len_bytes(&self) -> usize {
        self.data.len().saturating_sub(self.node_len)
    }

    /// Why the event was emitted.
    pub fn completion(&self) -> Completion {
        self.completion
    }

    /// Whether records were dropped because the event reached `max_event_bytes`.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

/// Counters of the coalescer (plain totals since start).
///
/// Loss is never silent: a line that is not stored in an emitted event is counted in
/// `bad_lines`, `late_records`, `duplicate_records` or `truncated_records`, and an EOE (never
/// stored) either completes its event or is counted in `duplicate_records`, `late_eoe` or
/// `stray_eoe`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct CoalesceStats {
    /// Lines that parsed as records (all of them, EOE and dropped ones included).
    pub records: u64,
    /// Lines that did not parse; they changed nothing.
    pub bad_lines: u64,
    /// Of `bad_lines`, records whose time is after the year 9999 (no event could carry it).
    pub bad_time_lines: u64,
    /// Events emitted, whatever their completion.
    pub events: u64,
    /// Events completed by their EOE.
    pub completed_eoe: u64,
    /// Single-record events.
    pub completed_single: u64,
    /// Events completed by the record-time timeout.
    pub completed_timeout: u64,
    /// Events completed by the idle timeout.
    pub completed_idle: u64,
    /// Events emitted by a flush.
    pub completed_flush: u64,
    /// Events emitted early because the in-flight bounds (count or bytes) were reached.
    pub evicted: u64,
    /// Records for an event that had already been emitted (dropped).
    pub late_records: u64,
    /// EOEs of events already emitted without one (timed out, evicted): a sign that the
    /// timeouts are too short or the bounds too small. Nothing was lost.
    pub late_eoe: u64,
    /// Identical lines repeated within an event, and second EOEs (dropped).
    pub duplicate_records: u64,
    /// EOE records for an event never seen (or long forgotten).
    pub stray_eoe: u64,
    /// Records dropped because their event reached `max_event_bytes`.
    pub truncated_records: u64,
    /// Events emitted with records missing because of `max_event_bytes`.
    pub truncated_events: u64,
    /// Kernel events estimated lost (kernel backlog, auditd's plugin queue, the af_unix
    /// plugin's queue, a disconnected reader) from gaps in the serials, which the kernel
    /// increases by one per event; per node, tolerating
    /// reordering within a window of 4096 serials. An estimate: serials are consumed only by
    /// records the kernel actually emits (a syscall no rule matches takes none, so filtering
    /// leaves no gap), user-space messages consume kernel serials too (and they do arrive),
    /// but events the kernel wrote while no auditd listened (boot, a restart) leave gaps that
    /// were never ours to see, and an event arriving more than a window late has already
    /// been counted.
    pub estimated_lost: u64,
    /// Times a node's serials restarted (reboot, or 32-bit wrap) and tracking began anew.
    pub serial_resets: u64,
    /// Records whose `node=` did not fit the node table (grouped under one overflow id).
    pub node_overflow: u64,
}

/// Serials tracked per node: a serial this far behind the highest seen is judged.
const SERIAL_WINDOW: u64 = 4096;
const SERIAL_WORDS: usize = (SERIAL_WINDOW / 64) as usize;
/// Kernel serials are 32-bit and wrap; a jump forward by more than half the space is not
/// loss but a discontinuity.
const SERIAL_MAX_JUMP: u64 = 1 << 31;

/// Node id of records without `node=`.
const NODE_NONE: u32 = 0;
/// Node id shared by nodes beyond the table (counted in `node_overflow`); their events still
/// carry their own `node=` text.
const NODE_OVERFLOW: u32 = 1;
const FIRST_NAMED_NODE: usize = 2;

/// Buffers kept for reuse by [`Coalescer::recycle`].
const POOL_MAX: usize = 32;
/// Buffers larger than this are not kept (a 1 MiB execve must not pin its memory).
const POOL_MAX_CAPACITY: usize = 64 << 10;
/// First capacity of an event buffer: an enriched execve event is about 1.35 KB.
const EVENT_INITIAL_CAPACITY: usize = 2048;
/// Preallocation cap for the hash maps (bounds the memory of a silly configuration).
const PREALLOC_MAX: usize = 1 << 16;

/// DAEMON_* records carry auditd's *own* serial counter (`DAEMON_END …:4282` while kernel
/// serials were at 74,151): they are never joined to a kernel event with an equal key and never
/// feed the serial-gap estimate. Any type in 1200–1299 counts, and any `DAEMON_` name, because
/// the parser maps names it does not know (DAEMON_ACCEPT) to type 0.
fn is_daemon(rec: &Record<'_>) -> bool {
    (types::DAEMON_START..=1299).contains(&rec.rtype) || rec.type_name.starts_with(b"DAEMON_")
}

fn trim_eol(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = line {
        line = rest;
    }
    line
}

/// A fast 64-bit hash of a line, to find duplicates without comparing every stored line.
fn line_hash(line: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = line.len() as u64;
    let mut chunks = line.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let mut w = [0u8; 8];
    let rest = chunks.remainder();
    if let Some(dst) = w.get_mut(..rest.len()) {
        dst.copy_from_slice(rest);
    }
    h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    h ^ (h >> 29)
}

/// Serials alone are not unique (go-libaudit and go-audit key by serial only): forwarded
/// nodes have their own counters, so the node is part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    /// Interned `node=` name (present with `name_format != NONE` and on forwarded events), so a
    /// key is built without allocating.
    node: u32,
    id: EventId,
}

const NO_KEY: Key = Key {
    node: NODE_NONE,
    id: EventId {
        sec: 0,
        msec: 0,
        serial: 0,
    },
};

/// One in-flight event. Slots are reused; their hash vector keeps its capacity.
#[derive(Debug)]
struct Slot {
    /// Creation order, unique; 0 when the slot is free.
    seq: u64,
    key: Key,
    /// The node's record time when the event was first seen.
    first_record_ms: u64,
    /// Monotonic time of the last record.
    last_ms: u64,
    node_len: usize,
    data: Vec<u8>,
    spans: Vec<(usize, usize)>,
    hashes: Vec<u64>,
    truncated: bool,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            seq: 0,
            key: NO_KEY,
            first_record_ms: 0,
            last_ms: 0,
            node_len: 0,
            data: Vec::new(),
            spans: Vec::new(),
            hashes: Vec::new(),
            truncated: false,
        }
    }
}

/// What the serial window concluded about one serial.
enum SerialVerdict {
    /// This many serials fell out of the window unseen.
    Lost(u64),
    /// The serial is far below the window, or far above: start over from it.
    Reset,
}

/// Serials seen in `[base, base + SERIAL_WINDOW)`, as a ring bitmap indexed by
/// `serial % SERIAL_WINDOW`. Everything below `base` has been judged.
#[derive(Debug)]
struct SerialWindow {
    base: u64,
    top: u64,
    bits: [u64; SERIAL_WORDS],
}

impl SerialWindow {
    fn start(&mut self, serial: u64) {
        self.base = serial;
        self.top = serial;
        self.bits = [0; SERIAL_WORDS];
        self.set(serial);
    }

    fn pos(serial: u64) -> (usize, u64) {
        let i = (serial % SERIAL_WINDOW) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    fn set(&mut self, serial: u64) {
        let (w, m) = Self::pos(serial);
        if let Some(word) = self.bits.get_mut(w) {
            *word |= m;
        }
    }

    /// Clear the bit of `serial`; whether it was set.
    fn take(&mut self, serial: u64) -> bool {
        let (w, m) = Self::pos(serial);
        match self.bits.get_mut(w) {
            Some(word) => {
                let was = *word & m != 0;
                *word &= !m;
                was
            }
            None => false,
        }
    }

    fn observe(&mut self, serial: u64) -> SerialVerdict {
        if serial < self.base {
            if self.base - serial > SERIAL_WINDOW {
                return SerialVerdict::Reset;
            }
            // Too late to judge: its slot has left the window (counted or seen already).
            return SerialVerdict::Lost(0);
        }
        // Serials are at most u32::MAX here, so this cannot overflow.
        let end = self.base + SERIAL_WINDOW;
        let mut lost = 0;
        if serial >= end {
            if serial - self.top > SERIAL_MAX_JUMP {
                return SerialVerdict::Reset;
            }
            let new_base = serial + 1 - SERIAL_WINDOW;
            for s in self.base..new_base.min(end) {
                if !self.take(s) {
                    lost += 1;
                }
            }
            lost += new_base.saturating_sub(end);
            self.base = new_base;
        }
        self.set(serial);
        self.top = self.top.max(serial);
        SerialVerdict::Lost(lost)
    }

    /// Serials `lo..=hi` count as seen (their lines were dropped by us, not lost upstream).
    /// Serials the window leaves on the way are judged as by [`SerialWindow::observe`];
    /// returns how many of those were lost.
    fn observe_range(&mut self, lo: u64, hi: u64) -> u64 {
        let lo = lo.max(self.base);
        if hi < lo {
            return 0;
        }
        let end = self.base + SERIAL_WINDOW;
        let new_base = (hi + 1).saturating_sub(SERIAL_WINDOW).max(self.base);
        let in_range = |s: u64| (lo..=hi).contains(&s);
        let mut lost = 0;
        for s in self.base..new_base.min(end) {
            if !self.take(s) && !in_range(s) {
                lost += 1;
            }
        }
        // Serials between the old window's end and the new base were never in the window:
        // lost unless inside the range.
        if new_base > end {
            let gap = new_base - end;
            let covered = new_base.min(hi + 1).saturating_sub(end.max(lo));
            lost += gap - covered.min(gap);
        }
        self.base = new_base;
        for s in lo.max(new_base)..=hi {
            self.set(s);
        }
        self.top = self.top.max(hi);
        lost
    }

    /// End of input: serials in `[base, top]` not seen are lost.
    fn finish(&mut self) -> u64 {
        let mut lost = 0;
        for s in self.base..=self.top {
            if !self.take(s) {
                lost += 1;
            }
        }
        lost
    }
}

/// The two buffers of an event: its bytes and the spans of its lines.
type Buffers = (Vec<u8>, Vec<(usize, usize)>);

/// Per-node state: record time, the in-flight events in creation order, serials.
#[derive(Debug, Default)]
struct NodeState {
    /// Newest record timestamp seen on this node (ms since the epoch).
    newest_ms: u64,
    /// In-flight events of this node.
    live: usize,
    /// `(slot, seq)` in creation order, hence in non-decreasing `first_record_ms`. Entries of
    /// completed events stay until they reach the front (or a compaction).
    fifo: VecDeque<(usize, u64)>,
    serials: Option<Box<SerialWindow>>,
}

/// Groups audit records into events. See the module documentation.
#[derive(Debug)]
pub struct Coalescer {
    cfg: CoalesceConfig,
    stats: CoalesceStats,
    node_ids: HashMap<Box<[u8]>, u32>,
    /// Indexed by node id: 0 = no node, 1 = overflow, then the named nodes.
    nodes: Vec<NodeState>,
    inflight: HashMap<Key, usize>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    inflight_bytes: usize,
    next_seq: u64,
    /// Recently completed keys, and whether each completed on its EOE.
    recent: HashMap<Key, bool>,
    recent_order: VecDeque<Key>,
    pool: Vec<Buffers>,
    scratch: Vec<(u64, usize)>,
}

impl Coalescer {
    pub fn new(cfg: CoalesceConfig) -> Self {
        let mut cfg = cfg;
        cfg.max_inflight_events = cfg.max_inflight_events.clamp(1, 1 << 24);
        cfg.max_nodes = cfg.max_nodes.min(1 << 16);
        let mut nodes = Vec::with_capacity(FIRST_NAMED_NODE + 1);
        nodes.resize_with(FIRST_NAMED_NODE, NodeState::default);
        Coalescer {
            stats: CoalesceStats::default(),
            node_ids: HashMap::new(),
            nodes,
            inflight: HashMap::with_capacity(cfg.max_inflight_events.min(PREALLOC_MAX)),
            slots: Vec::new(),
            free: Vec::new(),
            inflight_bytes: 0,
            next_seq: 1,
            recent: HashMap::with_capacity(cfg.recent_completed.min(PREALLOC_MAX)),
            recent_order: VecDeque::with_capacity(cfg.recent_completed.min(PREALLOC_MAX)),
            pool: Vec::new(),
            scratch: Vec::new(),
            cfg,
        }
    }

    /// The configuration in force (after clamping nonsensical values).
    pub fn config(&self) -> &CoalesceConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &CoalesceStats {
        &self.stats
    }

    /// Events in flight, and their bytes.
    pub fn inflight(&self) -> (usize, usize) {
        (self.inflight.len(), self.inflight_bytes)
    }

    /// Feed one line (a trailing newline is tolerated and not stored). `now_ms` is a
    /// monotonic clock reading, used only for the idle timeout (replay may pass 0). Completed
    /// events are appended to `out`, in completion order. A line that does not parse returns
    /// the error and is counted in `bad_lines`; nothing else changes.
    pub fn push(
        &mut self,
        line: &[u8],
        now_ms: u64,
        out: &mut Vec<AuditEvent>,
    ) -> Result<(), ParseError> {
        let line = trim_eol(line);
        let rec = match Record::parse(line) {
            Ok(rec) => rec,
            Err(e) => {
                self.stats.bad_lines += 1;
                if e == ParseError::TimeOutOfRange {
                    self.stats.bad_time_lines += 1;
                }
                return Err(e);
            }
        };
        self.stats.records += 1;
        let node = self.intern(rec.node);
        let node_name = rec.node.unwrap_or_default();
        let key = Key { node, id: rec.id };
        self.advance_record_time(node, rec.id.millis(), out);

        // User-space (USER_*, CRED_*, …) and DAEMON_* records are whole events with no EOE:
        // emit them at once, and do not remember them. LOGIN (1006) is not one of them: it
        // belongs to the SYSCALL event of the write to /proc/self/loginuid and waits for its
        // EOE, like records of an unknown type (0).
        let daemon = is_daemon(&rec);
        if daemon || types::is_single_record(rec.rtype) {
            if !daemon {
                self.observe_serial(node, rec.id.serial);
            }
            self.emit_single(key, node_name, line, out);
            return Ok(());
        }

        // Every kernel event ends with an EOE on the af_unix socket; the EOE is not kept.
        // audit.log and forwarded (au-remote) events have none: those complete on a timeout.
        if rec.rtype == types::EOE {
            if let Some(&slot) = self.inflight.get(&key) {
                self.complete(slot, Completion::Eoe, out);
            } else if let Some(&eoe) = self.recent.get(&key) {
                // A second EOE of an event that completed on EOE is a duplicate; an EOE after
                // its event timed out or was evicted is late (nothing was lost).
                if eoe {
                    self.stats.duplicate_records += 1;
                } else {
                    self.stats.late_eoe += 1;
                }
            } else {
                self.stats.stray_eoe += 1;
            }
            return Ok(());
        }

        // Records of concurrent events interleave, and neither timestamps nor serials arrive
        // in order (15–90 inversions per capture): the map by key takes any interleaving.
        if let Some(&slot) = self.inflight.get(&key) {
            self.append(slot, line, now_ms);
            self.evict_for_bytes(out);
            return Ok(());
        }
        // A record for an event already emitted (a bounded set of recent keys knows it).
        if self.recent.contains_key(&key) {
            self.stats.late_records += 1;
            return Ok(());
        }

        // A new event.
        self.observe_serial(node, rec.id.serial);
        while self.inflight.len() >= self.cfg.max_inflight_events {
            if !self.evict_oldest(out) {
                break;
            }
        }
        let slot = self.create(key, node_name, now_ms);
        self.append(slot, line, now_ms);
        self.evict_for_bytes(out);
        Ok(())
    }

    /// Complete the events that received no record for `idle_ms`: on a quiet host an event
    /// without EOE would otherwise wait for the next record (auparse's issue #286, laurel).
    /// Live socket only (replay calls [`Coalescer::flush`] instead); `now_ms`
    /// on the same monotonic clock as [`Coalescer::push`]). Oldest first. Call it every
    /// `idle_ms / 2` or so; it looks at each event in flight (a handful, normally).
    /// Completed events are appended to `out`.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<AuditEvent>) {
        let idle = self.cfg.idle_ms;
        let mut due = std::mem::take(&mut self.scratch);
        due.clear();
        due.extend(
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.seq != 0 && now_ms.saturating_sub(s.last_ms) >= idle)
                .map(|(i, s)| (s.seq, i)),
        );
        due.sort_unstable();
        for &(_, slot) in &due {
            self.complete(slot, Completion::Idle, out);
        }
        self.scratch = due;
    }

    /// Complete every event in flight, oldest first (end of input, shutdown). The serial
    /// windows are settled too: serials still unseen below the highest one count as lost.
    pub fn flush(&mut self, out: &mut Vec<AuditEvent>) {
        let mut all = std::mem::take(&mut self.scratch);
        all.clear();
        all.extend(
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.seq != 0)
                .map(|(i, s)| (s.seq, i)),
        );
        all.sort_unstable();
        for &(_, slot) in &all {
            self.complete(slot, Completion::Flush, out);
        }
        self.scratch = all;
        for ns in &mut self.nodes {
            ns.fifo.clear();
            if let Some(w) = ns.serials.as_mut() {
                self.stats.estimated_lost += w.finish();
            }
            ns.serials = None;
        }
    }

    /// Hand back an event that has been processed, so its buffers serve a later event.
    pub fn recycle(&mut self, ev: AuditEvent) {
        let AuditEvent {
            mut data,
            mut spans,
            ..
        } = ev;
        if self.pool.len() < POOL_MAX && data.capacity() <= POOL_MAX_CAPACITY {
            data.clear();
            spans.clear();
            self.pool.push((data, spans));
        }
    }

    fn intern(&mut self, node: Option<&[u8]>) -> u32 {
        let Some(name) = node else {
            return NODE_NONE;
        };
        if let Some(&id) = self.node_ids.get(name) {
            return id;
        }
        if self.node_ids.len() >= self.cfg.max_nodes {
            self.stats.node_overflow += 1;
            return NODE_OVERFLOW;
        }
        let Ok(id) = u32::try_from(self.nodes.len()) else {
            self.stats.node_overflow += 1;
            return NODE_OVERFLOW;
        };
        self.node_ids.insert(name.into(), id);
        self.nodes.push(NodeState::default());
        id
    }

    /// Move the node's record time to `t` if newer, and complete its events that timed out.
    ///
    /// The timeout runs from the node's record time *when the event was first seen*, not from
    /// the event's own timestamp: the kernel stamps a syscall at entry and writes it at exit, so
    /// an `accept` that blocked for an hour arrives with an hour-old timestamp among current
    /// records, and comparing that with the newest record time (auparse, laurel) would cut it
    /// apart after its first record. Record time is per node (forwarded nodes have their own
    /// clocks). A forward clock step completes the node's events at once (live, their EOE is
    /// usually there already); after a backward step record time stands still until the clock
    /// catches up, and events complete by idle time, eviction or flush instead.
    fn advance_record_time(&mut self, node: u32, t: u64, out: &mut Vec<AuditEvent>) {
        let Some(ns) = self.nodes.get_mut(node as usize) else {
            return;
        };
        if t <= ns.newest_ms {
            return;
        }
        ns.newest_ms = t;
        let horizon = t.saturating_sub(self.cfg.record_timeout_ms);
        // A node's events are first seen in non-decreasing record time, so the expired ones
        // are at the front of its FIFO: no re-sort per event (go-libaudit), no scan of every
        // event per record (auparse, go-audit).
        loop {
            let Some(ns) = self.nodes.get_mut(node as usize) else {
                return;
            };
            let Some(&(slot, seq)) = ns.fifo.front() else {
                return;
            };
            match self.slots.get(slot) {
                Some(s) if s.seq == seq => {
                    if s.first_record_ms >= horizon {
                        return;
                    }
                    ns.fifo.pop_front();
                    self.complete(slot, Completion::RecordTimeout, out);
                }
                _ => {
                    ns.fifo.pop_front();
                }
            }
        }
    }

    /// Serials `lo..=hi` of the local node (no `node=`) were carried by lines that *we*
    /// dropped (the reader's queue was full): count them as seen, so the serial-gap estimate
    /// of kernel loss does not count our own drops a second time. Call it in stream order.
    pub fn mark_seen(&mut self, lo: u64, hi: u64) {
        if hi < lo || hi > u64::from(u32::MAX) {
            return;
        }
        let node = self.intern(None);
        let Some(ns) = self.nodes.get_mut(node as usize) else {
            return;
        };
        match ns.serials.as_mut() {
            None => self.observe_serial(node, hi),
            Some(w) if hi.saturating_sub(w.top) > SERIAL_MAX_JUMP => {
                // A reboot in between: start over from the range's top.
                self.stats.serial_resets += 1;
                w.start(hi);
            }
            Some(w) => self.stats.estimated_lost += w.observe_range(lo, hi),
        }
    }

    fn observe_serial(&mut self, node: u32, serial: u64) {
        // Kernel serials are 32-bit: anything larger is not one, and would break the window
        // arithmetic.
        if serial > u64::from(u32::MAX) {
            return;
        }
        let Some(ns) = self.nodes.get_mut(node as usize) else {
            return;
        };
        match ns.serials.as_mut() {
            None => {
                let mut w = Box::new(SerialWindow {
                    base: 0,
                    top: 0,
                    bits: [0; SERIAL_WORDS],
                });
                w.start(serial);
                ns.serials = Some(w);
            }
            Some(w) => match w.observe(serial) {
                SerialVerdict::Lost(n) => self.stats.estimated_lost += n,
                SerialVerdict::Reset => {
                    self.stats.serial_resets += 1;
                    w.start(serial);
                }
            },
        }
    }

    fn take_buffers(&mut self, min_capacity: usize) -> Buffers {
        match self.pool.pop() {
            Some((mut data, spans)) => {
                data.reserve(min_capacity);
                (data, spans)
            }
            None => (Vec::with_capacity(min_capacity), Vec::with_capacity(8)),
        }
    }

    fn emit_single(&mut self, key: Key, node: &[u8], line: &[u8], out: &mut Vec<AuditEvent>) {
        let fits = line.len() <= self.cfg.max_event_bytes;
        let need = node.len() + if fits { line.len() } else { 0 };
        let (mut data, mut spans) = self.take_buffers(need);
        data.extend_from_slice(node);
        if fits {
            data.extend_from_slice(line);
            spans.push((node.len(), data.len()));
        } else {
            self.stats.truncated_records += 1;
            self.stats.truncated_events += 1;
        }
        self.stats.events += 1;
        self.stats.completed_single += 1;
        out.push(AuditEvent {
            id: key.id,
            node_len: node.len(),
            data,
            spans,
            completion: Completion::Single,
            truncated: !fits,
        });
    }

    fn create(&mut self, key: Key, node: &[u8], now_ms: u64) -> usize {
        let capacity = EVENT_INITIAL_CAPACITY.min(self.cfg.max_event_bytes) + node.len();
        let (mut data, spans) = self.take_buffers(capacity);
        data.extend_from_slice(node);
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
        };
        let first_record_ms = self
            .nodes
            .get(key.node as usize)
            .map_or(0, |ns| ns.newest_ms);
        if let Some(s) = self.slots.get_mut(slot) {
            s.seq = seq;
            s.key = key;
            s.first_record_ms = first_record_ms;
            s.last_ms = now_ms;
            s.node_len = node.len();
            s.data = data;
            s.spans = spans;
            s.hashes.clear();
            s.truncated = false;
        }
        if let Some(ns) = self.nodes.get_mut(key.node as usize) {
            ns.live += 1;
            ns.fifo.push_back((slot, seq));
            if ns.fifo.len() > 2 * ns.live + 64 {
                let slots = &self.slots;
                ns.fifo
                    .retain(|&(i, q)| slots.get(i).is_some_and(|s| s.seq == q));
            }
        }
        self.inflight.insert(key, slot);
        self.inflight_bytes += node.len();
        slot
    }

    fn append(&mut self, slot: usize, line: &[u8], now_ms: u64) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.last_ms = now_ms;
        let h = line_hash(line);
        let data = &s.data;
        // An identical line repeated within an in-flight event is dropped and counted.
        let duplicate = s
            .spans
            .iter()
            .zip(&s.hashes)
            .any(|(&(start, end), &sh)| sh == h && data.get(start..end) == Some(line));
        if duplicate {
            self.stats.duplicate_records += 1;
            return;
        }
        // One execve can span hundreds of 7.5 KB EXECVE records: past `max_event_bytes` the
        // event keeps what it has and is marked truncated.
        let stored = s.data.len().saturating_sub(s.node_len);
        if stored.saturating_add(line.len()) > self.cfg.max_event_bytes {
            s.truncated = true;
            self.stats.truncated_records += 1;
            return;
        }
        let start = s.data.len();
        s.data.extend_from_slice(line);
        s.spans.push((start, s.data.len()));
        s.hashes.push(h);
        self.inflight_bytes += line.len();
    }

    fn evict_for_bytes(&mut self, out: &mut Vec<AuditEvent>) {
        while self.inflight_bytes > self.cfg.max_inflight_bytes {
            if !self.evict_oldest(out) {
                break;
            }
        }
    }

    /// Emit the oldest in-flight event (first seen earliest, over all nodes).
    fn evict_oldest(&mut self, out: &mut Vec<AuditEvent>) -> bool {
        let slots = &self.slots;
        let mut oldest: Option<(u64, usize, usize)> = None;
        for (n, ns) in self.nodes.iter_mut().enumerate() {
            while let Some(&(slot, seq)) = ns.fifo.front() {
                if slots.get(slot).is_some_and(|s| s.seq == seq) {
                    if oldest.is_none_or(|(q, _, _)| seq < q) {
                        oldest = Some((seq, n, slot));
                    }
                    break;
                }
                ns.fifo.pop_front();
            }
        }
        let Some((_, n, slot)) = oldest else {
            return false;
        };
        if let Some(ns) = self.nodes.get_mut(n) {
            ns.fifo.pop_front();
        }
        self.complete(slot, Completion::Evicted, out);
        true
    }

    /// Take the event out of its slot and emit it. Its FIFO entry, if any, goes stale.
    fn complete(&mut self, slot: usize, completion: Completion, out: &mut Vec<AuditEvent>) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.seq == 0 {
            return;
        }
        s.seq = 0;
        s.hashes.clear();
        let key = s.key;
        let ev = AuditEvent {
            id: key.id,
            node_len: s.node_len,
            data: std::mem::take(&mut s.data),
            spans: std::mem::take(&mut s.spans),
            completion,
            truncated: std::mem::replace(&mut s.truncated, false),
        };
        self.inflight.remove(&key);
        self.free.push(slot);
        self.inflight_bytes = self.inflight_bytes.saturating_sub(ev.data.len());
        if let Some(ns) = self.nodes.get_mut(key.node as usize) {
            ns.live = ns.live.saturating_sub(1);
        }
        self.remember(key, completion == Completion::Eoe);
        let st = &mut self.stats;
        st.events += 1;
        match completion {
            Completion::Eoe => st.completed_eoe += 1,
            Completion::Single => st.completed_single += 1,
            Completion::RecordTimeout => st.completed_timeout += 1,
            Completion::Idle => st.completed_idle += 1,
            Completion::Evicted => st.evicted += 1,
            Completion::Flush => st.completed_flush += 1,
        }
        if ev.truncated {
            st.truncated_events += 1;
        }
        out.push(ev);
    }

    fn remember(&mut self, key: Key, eoe: bool) {
        if self.cfg.recent_completed == 0 {
            return;
        }
        match self.recent.entry(key) {
            Entry::Occupied(mut e) => {
                e.insert(eoe);
            }
            Entry::Vacant(e) => {
                e.insert(eoe);
                self.recent_order.push_back(key);
            }
        }
        while self.recent_order.len() > self.cfg.recent_completed {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Realistic lines, in the shapes of the captures in shared/reference/auditd-here.md.

    fn syscall(id: &str) -> String {
        format!(
            "type=SYSCALL msg=audit({id}): arch=c000003e syscall=59 success=yes exit=0 a0=55d5c4b1e0a0 a1=55d5c4b1e0c8 a2=55d5c4b1e0e0 a3=8 items=2 ppid=1234 pid=1240 auid=1001 uid=1001 gid=1001 euid=1001 suid=1001 fsuid=1001 egid=1001 sgid=1001 fsgid=1001 tty=pts0 ses=3 comm=\"true\" exe=\"/usr/bin/true\" subj=unconfined key=\"proc_create\"\x1dARCH=x86_64 SYSCALL=execve AUID=\"probe\" UID=\"probe\""
        )
    }
    fn execve(id: &str) -> String {
        format!("type=EXECVE msg=audit({id}): argc=1 a0=\"/bin/true\"")
    }
    fn cwd(id: &str) -> String {
        format!("type=CWD msg=audit({id}): cwd=\"/tmp/p\"")
    }
    fn path(id: &str, item: u32) -> String {
        format!(
            "type=PATH msg=audit({id}): item={item} name=\"/bin/true\" inode=1835 dev=08:01 mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0"
        )
    }
    fn proctitle(id: &str) -> String {
        format!("type=PROCTITLE msg=audit({id}): proctitle=\"/bin/true\"")
    }
    fn eoe(id: &str) -> String {
        format!("type=EOE msg=audit({id}):")
    }
    fn execve_event(id: &str) -> Vec<String> {
        vec![
            syscall(id),
            execve(id),
            cwd(id),
            path(id, 0),
            path(id, 1),
            proctitle(id),
        ]
    }

    fn eid(sec: u64, msec: u16, serial: u64) -> EventId {
        EventId { sec, msec, serial }
    }

    fn push_all(c: &mut Coalescer, lines: &[String], now: u64) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        for l in lines {
            c.push(l.as_bytes(), now, &mut out).unwrap();
        }
        out
    }

    fn push1(c: &mut Coalescer, line: &str, now: u64) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        c.push(line.as_bytes(), now, &mut out).unwrap();
        out
    }

    fn lines_of(ev: &AuditEvent) -> Vec<String> {
        ev.lines()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    #[test]
    fn eoe_completes_an_event_without_keeping_the_eoe() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let id = "1700000000.123:456";
        let lines = execve_event(id);
        let out = push_all(&mut c, &lines, 0);
        assert!(out.is_empty());
        assert_eq!(c.inflight().0, 1);
        let total: usize = lines.iter().map(String::len).sum();
        assert_eq!(c.inflight().1, total);

        let out = push1(&mut c, &eoe(id), 0);
        assert_eq!(out.len(), 1);
        let ev = &out[0];
        assert_eq!(ev.id(), eid(1_700_000_000, 123, 456));
        assert_eq!(ev.node(), b"");
        assert_eq!(ev.completion(), Completion::Eoe);
        assert!(!ev.truncated());
        assert_eq!(ev.record_count(), 6);
        assert_eq!(ev.len_bytes(), total);
        assert_eq!(lines_of(ev), lines);
        let types: Vec<u16> = ev.records().map(|r| r.rtype).collect();
        assert_eq!(
            types,
            vec![
                types::SYSCALL,
                types::EXECVE,
                types::CWD,
                types::PATH,
                types::PATH,
                types::PROCTITLE
            ]
        );
        assert_eq!(c.inflight(), (0, 0));
        let s = c.stats();
        assert_eq!((s.records, s.events, s.completed_eoe), (7, 1, 1));
    }

    #[test]
    fn trailing_newline_is_not_stored() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let id = "1700000000.123:456";
        let mut out = Vec::new();
        c.push(format!("{}\n", syscall(id)).as_bytes(), 0, &mut out)
            .unwrap();
        c.push(format!("{}\r\n", eoe(id)).as_bytes(), 0, &mut out)
            .unwrap();
        assert_eq!(lines_of(&out[0]), vec![syscall(id)]);
    }

    #[test]
    fn user_records_are_single_events() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let acct = "type=USER_ACCT msg=audit(1700000100.001:900): pid=2001 uid=0 auid=4294967295 ses=4294967295 subj=unconfined msg='op=PAM:accounting grantors=pam_permit acct=\"probeuser\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=success'\x1dUID=\"root\" AUID=\"unset\"";
        let cred = "type=CRED_ACQ msg=audit(1700000100.002:901): pid=2001 uid=0 auid=4294967295 ses=4294967295 subj=unconfined msg='op=PAM:setcred grantors=pam_permit acct=\"probeuser\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=success'\x1dUID=\"root\" AUID=\"unset\"";
        let out = push1(&mut c, acct, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].completion(), Completion::Single);
        assert_eq!(out[0].id(), eid(1_700_000_100, 1, 900));
        assert_eq!(lines_of(&out[0]), vec![acct.to_string()]);
        let out = push1(&mut c, cred, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].records().next().map(|r| r.rtype),
            Some(types::CRED_ACQ)
        );
        assert_eq!(c.inflight(), (0, 0));
        assert_eq!(c.stats().completed_single, 2);
        assert_eq!(c.stats().estimated_lost, 0);
    }

    #[test]
    fn login_waits_for_the_eoe_of_its_syscall_event() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let id = "1700000100.010:902";
        let lines = vec![
            format!(
                "type=SYSCALL msg=audit({id}): arch=c000003e syscall=1 success=yes exit=4 a0=8 a1=7ffd1b0a2f40 a2=4 a3=0 items=0 ppid=412 pid=2001 auid=1001 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm=\"sshd\" exe=\"/usr/sbin/sshd\" subj=unconfined key=(null)"
            ),
            format!(
                "type=LOGIN msg=audit({id}): pid=2001 uid=0 subj=unconfined old-auid=4294967295 auid=1001 tty=(none) old-ses=4294967295 ses=1 res=1\x1dUID=\"root\" OLD-AUID=\"unset\" AUID=\"probeuser\""
            ),
            format!("type=PROCTITLE msg=audit({id}): proctitle=737368643A2070726F62657573657220"),
        ];
        let out = push_all(&mut c, &lines, 0);
        assert!(out.is_empty(), "LOGIN must not complete its event");
        let out = push1(&mut c, &eoe(id), 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].completion(), Completion::Eoe);
        let types: Vec<u16> = out[0].records().map(|r| r.rtype).collect();
        assert_eq!(types, vec![types::SYSCALL, types::LOGIN, types::PROCTITLE]);
    }

    #[test]
    fn interleaved_events_complete_in_eoe_order() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let (a, b) = ("1700000000.100:500", "1700000000.100:501");
        let seq = [
            syscall(a),
            syscall(b),
            execve(a),
            execve(b),
            eoe(b),
            path(a, 0),
            eoe(a),
        ];
        let mut out = Vec::new();
        for (i, l) in seq.iter().enumerate() {
            c.push(l.as_bytes(), 0, &mut out).unwrap();
            if i == 4 {
                assert_eq!(out.len(), 1);
            }
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id().serial, 501);
        assert_eq!(lines_of(&out[0]), vec![syscall(b), execve(b)]);
        assert_eq!(out[1].id().serial, 500);
        assert_eq!(lines_of(&out[1]), vec![syscall(a), execve(a), path(a, 0)]);
    }

    #[test]
    fn out_of_order_timestamps_and_serials() {
        // The event of serial 601 arrives first with a later timestamp.
        let mut c = Coalescer::new(CoalesceConfig::default());
        let (a, b) = ("1700000000.205:601", "1700000000.199:600");
        let out = push_all(&mut c, &[syscall(a), syscall(b), eoe(b), eoe(a)], 0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id(), eid(1_700_000_000, 199, 600));
        assert_eq!(out[1].id(), eid(1_700_000_000, 205, 601));
        assert_eq!(c.stats().estimated_lost, 0);
    }

    #[test]
    fn record_after_eoe_is_late() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let id = "1700000000.100:500";
        let out = push_all(&mut c, &[syscall(id), eoe(id), path(id, 0)], 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].record_count(), 1);
        assert_eq!(c.stats().late_records, 1);
        assert_eq!(c.inflight(), (0, 0));
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let id = "1700000000.100:500";
        let out = push_all(
            &mut c,
            &[
                syscall(id),
                syscall(id),
                path(id, 0),
                path(id, 1),
                eoe(id),
                eoe(id),
            ],
            0,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            lines_of(&out[0]),
            vec![syscall(id), path(id, 0), path(id, 1)]
        );
        let s = c.stats();
        assert_eq!(s.duplicate_records, 2);
        assert_eq!(s.late_records, 0);
        assert_eq!(s.events, 1);
    }

    #[test]
    fn stray_eoe_is_counted() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let out = push1(&mut c, &eoe("1700000000.100:500"), 0);
        assert!(out.is_empty());
        assert_eq!(c.stats().stray_eoe, 1);
        assert_eq!(c.inflight(), (0, 0));
    }

    #[test]
    fn record_time_timeout_for_logs_without_eoe() {
        // audit.log style: no EOE lines.
        let mut c = Coalescer::new(CoalesceConfig::default());
        let (a, b, d) = (
            "1700000000.000:700",
            "1700000000.500:701",
            "1700000002.400:702",
        );
        let mut out = push_all(&mut c, &execve_event(a), 0);
        out.extend(push_all(&mut c, &execve_event(b), 0));
        assert!(out.is_empty());
        // 2.4 s later: only the first is older than newest - 2 s.
        let out = push1(&mut c, &syscall(d), 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id().serial, 700);
        assert_eq!(out[0].completion(), Completion::RecordTimeout);
        assert_eq!(out[0].record_count(), 6);
        let out = push1(&mut c, &syscall("1700000002.501:703"), 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id().serial, 701);
        assert_eq!(c.stats().completed_timeout, 2);
        assert_eq!(c.inflight().0, 2);
    }

    #[test]
    fn event_with_old_syscall_entry_timestamp_is_not_cut() {
        // A blocking accept is stamped at syscall entry, an hour before the records around it.
        let mut c = Coalescer::new(CoalesceConfig::default());
        let now = "1700003600.000:900";
        let old = "1700000000.000:901";
        let mut out = push_all(&mut c, &[syscall(now), eoe(now)], 0);
        out.extend(push_all(
            &mut c,
            &[
                syscall(old),
                syscall("1700003600.050:902"),
                format!("type=SOCKADDR msg=audit({old}): saddr=02000050C0A80001"),
                eoe(old),
            ],
            0,
        ));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].id().serial, 901);
        assert_eq!(out[1].completion(), Completion::Eoe);
        assert_eq!(out[1].record_count(), 2);
        assert_eq!(c.stats().late_records, 0);
    }

    #[test]
    fn idle_tick_completes_quiet_events() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let a = "1700000000.000:700";
        assert!(push_all(&mut c, &[syscall(a)], 10_000).is_empty());
        assert!(push_all(&mut c, &[execve(a)], 10_200).is_empty());
        let mut out = Vec::new();
        c.tick(10_600, &mut out);
        assert!(out.is_empty(), "the last record came 400 ms ago");
        c.tick(10_700, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].completion(), Completion::Idle);
        assert_eq!(out[0].record_count(), 2);
        assert_eq!(c.stats().completed_idle, 1);
        assert_eq!(c.inflight(), (0, 0));
    }

    #[test]
    fn flush_emits_everything_oldest_first() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        push_all(
            &mut c,
            &[syscall("1700000000.010:801"), syscall("1700000000.000:800")],
            0,
        );
        let mut out = Vec::new();
        c.flush(&mut out);
        let serials: Vec<u64> = out.iter().map(|e| e.id().serial).collect();
        assert_eq!(serials, vec![801, 800]);
        assert!(out.iter().all(|e| e.completion() == Completion::Flush));
        assert_eq!(c.inflight(), (0, 0));
        assert_eq!(c.stats().completed_flush, 2);
    }

    #[test]
    fn eviction_by_count() {
        let mut c = Coalescer::new(CoalesceConfig {
            max_inflight_events: 2,
            ..CoalesceConfig::default()
        });
        let ids = ["1700000000.000:1", "1700000000.001:2", "1700000000.002:3"];
        let mut out = Vec::new();
        for id in ids {
            out.extend(push_all(&mut c, &[syscall(id)], 0));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id().serial, 1);
        assert_eq!(out[0].completion(), Completion::Evicted);
        assert_eq!(c.inflight().0, 2);
        assert_eq!(c.stats().evicted, 1);
        // A record of the evicted event is now late.
        assert!(push_all(&mut c, &[path(ids[0], 0)], 0).is_empty());
        assert_eq!(c.stats().late_records, 1);
        assert_eq!(c.inflight().0, 2);
    }

    #[test]
    fn eviction_by_bytes() {
        let one = syscall("1700000000.000:1").len();
        let mut c = Coalescer::new(CoalesceConfig {
            max_inflight_bytes: 2 * one + 10,
            ..CoalesceConfig::default()
        });
        let mut out = push_all(
            &mut c,
            &[syscall("1700000000.000:1"), syscall("1700000000.001:2")],
            0,
        );
        assert!(out.is_empty());
        out = push1(&mut c, &syscall("1700000000.002:3"), 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id().serial, 1);
        assert_eq!(out[0].completion(), Completion::Evicted);
        assert_eq!(c.inflight(), (2, 2 * one));
        assert_eq!(c.stats().evicted, 1);
    }

    #[test]
    fn one_event_is_bounded_in_bytes() {
        let id = "1700000000.000:1";
        let chunk = "41".repeat(100);
        let rec = |i: usize| format!("type=EXECVE msg=audit({id}):  a1[{i}]={chunk}");
        let limit = syscall(id).len() + 2 * rec(0).len() + 1;
        let mut c = Coalescer::new(CoalesceConfig {
            max_event_bytes: limit,
            ..CoalesceConfig::default()
        });
        let mut lines = vec![syscall(id)];
        lines.extend((0..5).map(rec));
        lines.push(eoe(id));
        let out = push_all(&mut c, &lines, 0);
        assert_eq!(out.len(), 1);
        assert!(out[0].truncated());
        assert_eq!(out[0].completion(), Completion::Eoe);
        assert_eq!(out[0].record_count(), 3);
        assert!(out[0].len_bytes() <= limit);
        let s = c.stats();
        assert_eq!((s.truncated_records, s.truncated_events), (3, 1));
    }

    #[test]
    fn daemon_record_is_never_merged_with_a_kernel_event() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let id = "1700000000.500:74151";
        assert!(push_all(&mut c, &[syscall(id)], 0).is_empty());
        // auditd's own counter happens to give the same serial (and the same millisecond).
        let end = format!(
            "type=DAEMON_END msg=audit({id}): op=terminate auid=0 uid=0 ses=4294967295 subj=unconfined pid=1 res=success\x1dAUID=\"root\" UID=\"root\""
        );
        let out = push1(&mut c, &end, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].completion(), Completion::Single);
        assert_eq!(lines_of(&out[0]), vec![end.clone()]);
        // The kernel event is intact and still waits for its EOE.
        assert_eq!(c.inflight().0, 1);
        let out = push_all(&mut c, &[path(id, 0), eoe(id)], 0);
        assert_eq!(lines_of(&out[0]), vec![syscall(id), path(id, 0)]);
        // A DAEMON_START far below the kernel serials resets nothing.
        push1(
            &mut c,
            "type=DAEMON_START msg=audit(1700000001.000:4282): op=start ver=3.0.9 format=enriched kernel=6.18.44 auid=4294967295 pid=99 uid=0 ses=4294967295 subj=unconfined res=success",
            0,
        );
        // Names the type table does not know are recognised by their prefix.
        let out = push1(
            &mut c,
            "type=DAEMON_ACCEPT msg=audit(1700000001.000:4283): addr=10.0.0.2 port=60 res=success",
            0,
        );
        assert_eq!(out[0].completion(), Completion::Single);
        let s = c.stats();
        assert_eq!(
            (s.serial_resets, s.estimated_lost, s.late_records),
            (0, 0, 0)
        );
    }

    #[test]
    fn node_distinguishes_events_with_equal_ids() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let id = "1700000000.000:42";
        let mut lines = Vec::new();
        for node in ["vm", "gw"] {
            lines.push(format!("node={node} {}", syscall(id)));
        }
        lines.push(format!("node=gw {}", path(id, 0)));
        lines.push(format!("node=vm {} ", eoe(id)));
        lines.push(format!("node=gw {} ", eoe(id)));
        let out = push_all(&mut c, &lines, 0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].node(), b"vm");
        assert_eq!(out[0].record_count(), 1);
        assert_eq!(out[1].node(), b"gw");
        assert_eq!(out[1].record_count(), 2);
        assert_eq!(
            out[1].records().next().and_then(|r| r.node),
            Some(&b"gw"[..])
        );
        assert_eq!(c.stats().node_overflow, 0);
    }

    #[test]
    fn nodes_beyond_the_table_share_one_id_and_are_counted() {
        let mut c = Coalescer::new(CoalesceConfig {
            max_nodes: 2,
            ..CoalesceConfig::default()
        });
        let mut out = Vec::new();
        for (i, node) in ["a", "b", "c", "d"].iter().enumerate() {
            let id = format!("1700000000.000:{}", 10 + i);
            for l in [syscall(&id), eoe(&id)] {
                c.push(format!("node={node} {l}").as_bytes(), 0, &mut out)
                    .unwrap();
            }
        }
        assert_eq!(out.len(), 4);
        let nodes: Vec<&[u8]> = out.iter().map(AuditEvent::node).collect();
        assert_eq!(nodes, vec![&b"a"[..], b"b", b"c", b"d"]);
        assert_eq!(c.stats().node_overflow, 4);
        assert_eq!(c.node_ids.len(), 2);
    }

    fn serial_event(c: &mut Coalescer, serial: u64) {
        let id = format!("1700000000.000:{serial}");
        let mut out = Vec::new();
        c.push(syscall(&id).as_bytes(), 0, &mut out).unwrap();
        c.push(eoe(&id).as_bytes(), 0, &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn serials_we_dropped_are_not_kernel_loss() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        for s in 100..110 {
            serial_event(&mut c, s);
        }
        // The reader dropped the lines of serials 110..=20000 (wider than the window), then
        // 20001..20010 arrive, and 20011 is really missing.
        c.mark_seen(110, 20_000);
        for s in 20_001..20_011 {
            serial_event(&mut c, s);
        }
        let mut out = Vec::new();
        serial_event(&mut c, 20_012);
        c.flush(&mut out);
        assert_eq!(c.stats().estimated_lost, 1);
        assert_eq!(c.stats().serial_resets, 0);
        // A range inside the window, and one below it (already judged): nothing changes.
        let mut c = Coalescer::new(CoalesceConfig::default());
        serial_event(&mut c, 10_000);
        c.mark_seen(10_001, 10_005);
        c.mark_seen(1, 5);
        serial_event(&mut c, 10_006);
        c.flush(&mut out);
        assert_eq!(c.stats().estimated_lost, 0);
    }

    #[test]
    fn serial_gaps_tolerate_reordering_and_reset_at_reboot() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        // 1000..1010 without 1005, with 1003 and 1002 swapped.
        for s in [1000, 1001, 1003, 1002, 1004, 1006, 1007, 1008, 1009, 1010] {
            serial_event(&mut c, s);
        }
        assert_eq!(
            c.stats().estimated_lost,
            0,
            "not judged while in the window"
        );
        // 1005 arrives 20 events late: still fine.
        for s in 1011..1030 {
            serial_event(&mut c, s);
        }
        // Advance far enough that 1000..1010 leave the window; 1005 arrived, so nothing lost.
        serial_event(&mut c, 1005);
        for s in 1030..1000 + SERIAL_WINDOW + 20 {
            serial_event(&mut c, s);
        }
        assert_eq!(c.stats().estimated_lost, 0);
        // Skip 50 serials, then continue past the window.
        let next = 1000 + SERIAL_WINDOW + 70;
        for s in next..next + SERIAL_WINDOW + 5 {
            serial_event(&mut c, s);
        }
        assert_eq!(c.stats().estimated_lost, 50);
        // Reboot: serials start over. A reset, not a loss.
        serial_event(&mut c, 1);
        serial_event(&mut c, 2);
        assert_eq!(c.stats().serial_resets, 1);
        assert_eq!(c.stats().estimated_lost, 50);
        // A gap at the end of input is counted by flush.
        serial_event(&mut c, 5);
        let mut out = Vec::new();
        c.flush(&mut out);
        assert_eq!(c.stats().estimated_lost, 52);
    }

    #[test]
    fn user_space_records_fill_serial_gaps() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        serial_event(&mut c, 10);
        push1(
            &mut c,
            "type=USER_START msg=audit(1700000000.001:11): pid=1 uid=0 auid=0 ses=1 msg='op=PAM:session_open acct=\"root\" exe=\"/usr/bin/sudo\" hostname=? addr=? terminal=/dev/pts/0 res=success'",
            0,
        );
        serial_event(&mut c, 12);
        let mut out = Vec::new();
        c.flush(&mut out);
        assert_eq!(c.stats().estimated_lost, 0);
    }

    #[test]
    fn a_big_jump_is_counted_once_and_cheaply() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        serial_event(&mut c, 100);
        serial_event(&mut c, 100 + 1_000_000);
        // Judged so far: the serials that left the window.
        assert_eq!(c.stats().estimated_lost, 1_000_000 - SERIAL_WINDOW);
        let mut out = Vec::new();
        c.flush(&mut out);
        assert_eq!(c.stats().estimated_lost, 999_999);
        serial_event(&mut c, 1_000_200);
        // Jumps of more than half the 32-bit space, and values no kernel writes, are not loss.
        let before = c.stats().estimated_lost;
        serial_event(&mut c, 4_000_000_000);
        serial_event(&mut c, u64::MAX);
        assert_eq!(c.stats().estimated_lost, before);
        assert_eq!(c.stats().serial_resets, 1);
    }

    #[test]
    fn bad_line_is_counted_and_changes_nothing() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let id = "1700000000.100:500";
        push_all(&mut c, &[syscall(id)], 0);
        let before = (c.stats().clone(), c.inflight());
        let mut out = Vec::new();
        let err = c.push(
            b"type=SYSCALL msg=audit(1700000000.1x:500): a=1",
            0,
            &mut out,
        );
        assert_eq!(err, Err(ParseError::BadHeader));
        assert_eq!(c.push(b"garbage", 0, &mut out), Err(ParseError::NoType));
        // Synthetic: the same event's EOE with a time after the year 9999.
        assert_eq!(
            c.push(b"type=EOE msg=audit(253402300800.100:500):", 0, &mut out),
            Err(ParseError::TimeOutOfRange)
        );
        assert!(out.is_empty());
        assert_eq!(c.inflight(), before.1);
        let mut expect = before.0;
        expect.bad_lines = 3;
        expect.bad_time_lines = 1;
        assert_eq!(c.stats(), &expect);
        let out = push1(&mut c, &eoe(id), 0);
        assert_eq!(out[0].record_count(), 1);
    }

    #[test]
    fn unknown_type_names_wait_like_kernel_records() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let id = "1700000000.100:500";
        let out = push_all(
            &mut c,
            &[
                syscall(id),
                format!("type=SOMETHING_NEW msg=audit({id}): x=1"),
                format!("type=UNKNOWN[1338] msg=audit({id}): y=2"),
            ],
            0,
        );
        assert!(out.is_empty());
        let out = push1(&mut c, &eoe(id), 0);
        assert_eq!(out[0].record_count(), 3);
    }

    #[test]
    fn recycled_buffers_are_reused() {
        let mut c = Coalescer::new(CoalesceConfig::default());
        let a = "1700000000.100:500";
        let mut lines = execve_event(a);
        lines.push(eoe(a));
        let mut out = push_all(&mut c, &lines, 0);
        let ev = out.pop().unwrap();
        let ptr = ev.data.as_ptr();
        c.recycle(ev);
        let b = "1700000000.200:501";
        let out = push_all(&mut c, &[syscall(b), eoe(b)], 0);
        assert_eq!(out[0].data.as_ptr(), ptr);
        assert_eq!(lines_of(&out[0]), vec![syscall(b)]);
    }

    #[test]
    fn recent_set_is_bounded() {
        let mut c = Coalescer::new(CoalesceConfig {
            recent_completed: 3,
            ..CoalesceConfig::default()
        });
        for s in 1..=10 {
            serial_event(&mut c, s);
        }
        assert_eq!(c.recent.len(), 3);
        assert_eq!(c.recent_order.len(), 3);
        // Serial 10 is remembered, serial 1 is forgotten (a new event).
        push1(&mut c, &path("1700000000.000:10", 0), 0);
        assert_eq!(c.stats().late_records, 1);
        push1(&mut c, &path("1700000000.000:1", 0), 0);
        assert_eq!(c.inflight().0, 1);
    }

    #[test]
    fn fifo_stays_compact_under_churn() {
        // The head event never completes while thousands of others do.
        let mut c = Coalescer::new(CoalesceConfig::default());
        push1(&mut c, &syscall("1700000000.000:1"), 0);
        for s in 2..5000 {
            serial_event(&mut c, s);
        }
        assert!(c.nodes[0].fifo.len() <= 2 * c.nodes[0].live + 65);
        assert_eq!(c.inflight().0, 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const KINDS: [&str; 5] = ["EXECVE", "CWD", "PATH", "PROCTITLE", "SOCKADDR"];

        /// Events: (ms offset, record kinds). Each line is unique (it carries its index).
        fn events() -> impl Strategy<Value = Vec<(u16, Vec<usize>)>> {
            prop::collection::vec(
                (0u16..200, prop::collection::vec(0usize..KINDS.len(), 0..6)),
                1..8,
            )
        }

        struct Case {
            lines: Vec<String>,
            /// Index of the event each line belongs to (None for EOE).
            owner: Vec<Option<usize>>,
            ids: Vec<EventId>,
        }

        /// Records of each event shuffled (SYSCALL included), EOE last of its event, events
        /// interleaved by `order` (a shuffled multiset of event indices).
        fn build(
            evs: &[(u16, Vec<usize>)],
            perms: &[Vec<usize>],
            order: &[usize],
            node: bool,
        ) -> Case {
            let mut per_event: Vec<Vec<String>> = Vec::new();
            let mut ids = Vec::new();
            for (i, (ms, kinds)) in evs.iter().enumerate() {
                // With nodes, each node's serials are contiguous and the two nodes share
                // serials (and sometimes timestamps).
                let serial = if node { 5000 + i / 2 } else { 5000 + i } as u64;
                let id = eid(1_700_000_000, *ms, serial);
                ids.push(id);
                let idt = id.to_string();
                let mut recs = vec![syscall(&idt)];
                for (j, k) in kinds.iter().enumerate() {
                    recs.push(format!(
                        "type={} msg=audit({idt}): item={j} x={i}",
                        KINDS[*k]
                    ));
                }
                let perm = &perms[i % perms.len()];
                let mut shuffled: Vec<String> = Vec::new();
                let mut rest = recs;
                for p in perm {
                    if rest.is_empty() {
                        break;
                    }
                    shuffled.push(rest.remove(p % rest.len()));
                }
                shuffled.append(&mut rest);
                shuffled.push(eoe(&idt));
                per_event.push(shuffled);
            }
            let mut next = vec![0usize; evs.len()];
            let (mut lines, mut owner) = (Vec::new(), Vec::new());
            let mut push = |e: usize, next: &mut Vec<usize>| {
                if let Some(l) = per_event[e].get(next[e]) {
                    let is_eoe = next[e] + 1 == per_event[e].len();
                    let l = if node {
                        format!("node=n{} {l}", e % 2)
                    } else {
                        l.clone()
                    };
                    lines.push(l);
                    owner.push(if is_eoe { None } else { Some(e) });
                    next[e] += 1;
                }
            };
            for &e in order {
                push(e % evs.len(), &mut next);
            }
            for e in 0..evs.len() {
                while next[e] < per_event[e].len() {
                    push(e, &mut next);
                }
            }
            Case { lines, owner, ids }
        }

        fn check(case: &Case, cfg: CoalesceConfig, node: bool) -> Result<(), TestCaseError> {
            let strict = cfg == CoalesceConfig::default();
            let mut c = Coalescer::new(cfg);
            let mut out = Vec::new();
            for l in &case.lines {
                prop_assert!(c.push(l.as_bytes(), 0, &mut out).is_ok());
            }
            c.flush(&mut out);
            prop_assert_eq!(c.inflight(), (0, 0));
            // Every stored line is in exactly one event, with its event's id.
            let mut seen = vec![0u32; case.lines.len()];
            for ev in &out {
                for l in ev.lines() {
                    let i = case
                        .lines
                        .iter()
                        .position(|x| x.as_bytes() == l)
                        .ok_or_else(|| TestCaseError::fail("unknown line"))?;
                    seen[i] += 1;
                    let e = case.owner[i].ok_or_else(|| TestCaseError::fail("EOE stored"))?;
                    prop_assert_eq!(ev.id(), case.ids[e]);
                    if node {
                        let want = format!("n{}", e % 2);
                        prop_assert_eq!(ev.node(), want.as_bytes());
                    }
                }
            }
            let stored = case.owner.iter().filter(|o| o.is_some()).count() as u64;
            let kept = seen.iter().filter(|&&n| n == 1).count() as u64;
            prop_assert!(seen.iter().all(|&n| n <= 1));
            let s = c.stats();
            prop_assert_eq!(
                kept + s.late_records + s.duplicate_records + s.truncated_records,
                stored
            );
            if strict {
                // Nothing bounded: every event completes on its EOE, whole.
                prop_assert_eq!(kept, stored);
                prop_assert_eq!(out.len(), case.ids.len());
                prop_assert!(out.iter().all(|e| e.completion() == Completion::Eoe));
                prop_assert_eq!(s.estimated_lost, 0);
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn every_record_lands_in_exactly_one_event(
                evs in events(),
                perms in prop::collection::vec(prop::collection::vec(0usize..8, 0..8), 1..4),
                order in prop::collection::vec(0usize..64, 0..60),
                node in any::<bool>(),
            ) {
                let case = build(&evs, &perms, &order, node);
                check(&case, CoalesceConfig::default(), node)?;
            }

            #[test]
            fn bounds_never_lose_a_record_silently(
                evs in events(),
                perms in prop::collection::vec(prop::collection::vec(0usize..8, 0..8), 1..4),
                order in prop::collection::vec(0usize..64, 0..60),
                max_events in 1usize..4,
                max_bytes in 200usize..2000,
            ) {
                let case = build(&evs, &perms, &order, false);
                let cfg = CoalesceConfig {
                    max_inflight_events: max_events,
                    max_inflight_bytes: max_bytes,
                    ..CoalesceConfig::default()
                };
                check(&case, cfg, false)?;
            }

            #[test]
            fn arbitrary_lines_never_panic(
                lines in prop::collection::vec(
                    prop_oneof![
                        prop::collection::vec(any::<u8>(), 0..200),
                        (any::<u64>(), 0u16..1000, any::<u64>(), 0usize..8, any::<bool>())
                            .prop_map(|(sec, ms, serial, k, node)| {
                                let t = ["SYSCALL", "EOE", "USER_AUTH", "DAEMON_END", "LOGIN",
                                         "PATH", "UNKNOWN[1207]", "WHAT"][k];
                                let n = if node { "node=x " } else { "" };
                                format!("{n}type={t} msg=audit({sec}.{ms:03}:{serial}): a=1")
                                    .into_bytes()
                            }),
                    ],
                    0..80,
                ),
                ticks in prop::collection::vec(any::<u64>(), 0..5),
                small in any::<bool>(),
            ) {
                let cfg = if small {
                    CoalesceConfig {
                        max_inflight_events: 2,
                        max_inflight_bytes: 300,
                        max_event_bytes: 100,
                        recent_completed: 2,
                        max_nodes: 1,
                        ..CoalesceConfig::default()
                    }
                } else {
                    CoalesceConfig::default()
                };
                let mut c = Coalescer::new(cfg);
                let mut out = Vec::new();
                for (i, l) in lines.iter().enumerate() {
                    let _ = c.push(l, i as u64, &mut out);
                    if let Some(&t) = ticks.get(i % 7) {
                        c.tick(t, &mut out);
                    }
                }
                c.flush(&mut out);
                prop_assert_eq!(c.inflight(), (0, 0));
                let s = c.stats();
                prop_assert_eq!(s.records + s.bad_lines, lines.len() as u64);
                prop_assert_eq!(s.events, out.len() as u64);
                for ev in &out {
                    prop_assert_eq!(ev.records().count(), ev.record_count());
                }
            }
        }
    }
}
