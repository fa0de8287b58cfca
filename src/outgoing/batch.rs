//! Security messages: the envelope, and batching pending events into messages by priority,
//! size and time.
//!
//! Rules (DESIGN.md, the twin settings, the classic C agent's batching):
//!
//! - A message is `{"AgentVersion","AgentId","MessageSchemaVersion":"1.0","Events":[…]}`.
//!   Its body plus its application properties never exceed
//!   min(`maxMessageSizeInBytes`, 262144 − 4096): edgeHub counts the properties too, and
//!   the size is measured on the exact serialized bytes (the body is built by joining the
//!   stored event JSON, so the sum of the parts is the size).
//! - A priority is due when its frequency (`highPriorityMessageFrequency`,
//!   `lowPriorityMessageFrequency`) has passed since its last message, or at once when its
//!   pending events fill a message.
//! - Billing is per 4 KB chunk: a due message is filled up to its last 4 KB boundary with
//!   pending events of the other priority (they would otherwise pay for a chunk of their
//!   own later).
//! - An event too large for any message (a huge command line) is shortened, with
//!   ExtraDetails saying so and how long the command line was; never dropped silently.

use serde::Serialize;
use uuid::Uuid;

use crate::events::operational::QueueName;
use crate::events::{Payload, SecurityEvent};
use crate::outbox::{Store, StoreError};

/// IoT Hub's (and edgeHub's) maximum message size.
pub const HUB_MAX_MESSAGE: usize = 262_144;
/// Headroom edgeHub needs beside the body.
pub const HUB_HEADROOM: usize = 4_096;
/// The billing unit.
pub const CHUNK: usize = 4_096;

/// The envelope every message shares.
#[derive(Debug, Clone)]
pub struct Envelope {
    prefix: String,
    agent_id: Uuid,
}

const SUFFIX: &str = "]}";

impl Envelope {
    pub fn new(agent_id: Uuid, agent_version: &str) -> Self {
        let prefix = format!(
            "{{\"AgentVersion\":{},\"AgentId\":\"{}\",\"MessageSchemaVersion\":\"1.0\",\"Events\":[",
            serde_json::Value::String(agent_version.to_string()),
            agent_id.hyphenated()
        );
        Envelope { prefix, agent_id }
    }

    /// Bytes the envelope adds to its events (not counting the commas between them).
    pub fn overhead(&self) -> usize {
        self.prefix.len() + SUFFIX.len()
    }

    /// The body of a message of these events (each already JSON).
    pub fn body(&self, events: &[&str]) -> String {
        let len = self.overhead() + events.iter().map(|e| e.len() + 1).sum::<usize>();
        let mut s = String::with_capacity(len);
        s.push_str(&self.prefix);
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(e);
        }
        s.push_str(SUFFIX);
        s
    }

    pub fn agent_id(&self) -> Uuid {
        self.agent_id
    }
}

/// How messages are cut and when they are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// `maxMessageSizeInBytes`.
    pub max_message_bytes: usize,
    /// Bytes of the application properties sent with every message.
    pub app_properties_bytes: usize,
    pub high_frequency_ms: u64,
    pub low_frequency_ms: u64,
}

impl BatchConfig {
    /// The bytes a body may have.
    pub fn body_limit(&self) -> usize {
        self.max_message_bytes
            .min(HUB_MAX_MESSAGE - HUB_HEADROOM)
            .saturating_sub(self.app_properties_bytes)
    }
}

/// Counters of the batcher.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct BatchStats {
    pub messages_built: u64,
    pub bytes_built: u64,
    /// 4 KB chunks of the messages built (what the hub bills).
    pub chunks_built: u64,
    pub events_shortened: u64,
    /// Events too large for any message even after shortening.
    pub events_too_large: u64,
}

/// Why an event cannot go into any message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FitError {
    TooLarge { bytes: usize, limit: usize },
    Json(String),
}

/// Serialize an event so that it fits in a message of `body_limit` bytes with the envelope,
/// shortening its command line if it must (ExtraDetails say so, and how long it was).
pub fn serialize_fitting(
    ev: &mut SecurityEvent,
    env: &Envelope,
    body_limit: usize,
) -> Result<(String, bool), FitError> {
    let limit = body_limit.saturating_sub(env.overhead());
    let json = serde_json::to_string(&*ev).map_err(|e| FitError::Json(e.to_string()))?;
    if json.len() <= limit {
        return Ok((json, false));
    }
    let excess = json.len() - limit;
    let cmd = match &mut ev.payload {
        Payload::ProcessCreate(p) => Some(&mut p.command_line),
        Payload::ConnectionCreate(p) => p.command_line.as_mut(),
        _ => None,
    };
    let Some(cmd) = cmd else {
        return Err(FitError::TooLarge {
            bytes: json.len(),
            limit,
        });
    };
    let original = cmd.len();
    // JSON escaping can make a byte of text cost up to 6 bytes: cut generously, then check.
    let mut keep = original.saturating_sub(excess + 128);
    while keep > 0 && !cmd.is_char_boundary(keep) {
        keep -= 1;
    }
    cmd.truncate(keep);
    if let Some(extra) = ev.payload.extra_details_mut() {
        extra.insert("CommandLineTruncated", "true".to_string());
        // The length before any shortening (the deriver may already have shortened it).
        extra
            .entry("CommandLineLength")
            .or_insert_with(|| original.to_string());
    }
    let json = serde_json::to_string(&*ev).map_err(|e| FitError::Json(e.to_string()))?;
    if json.len() <= limit {
        Ok((json, true))
    } else {
        Err(FitError::TooLarge {
            bytes: json.len(),
            limit,
        })
    }
}

/// The batching state machine: which priority is due, and how many events go in.
#[derive(Debug)]
pub struct Batcher {
    cfg: BatchConfig,
    env: Envelope,
    last_high_ms: u64,
    last_low_ms: u64,
    seq: u64,
    /// Makes message ids unique across runs (a durable outbox keeps the old ones); nil in
    /// `replay`, so that its output depends only on its input.
    salt: Uuid,
    stats: BatchStats,
}

impl Batcher {
    /// `now_ms` starts both frequencies.
    pub fn new(cfg: BatchConfig, env: Envelope, now_ms: u64) -> Self {
        Batcher {
            cfg,
            env,
            last_high_ms: now_ms,
            last_low_ms: now_ms,
            seq: 0,
            salt: Uuid::nil(),
            stats: BatchStats::default(),
        }
    }

    pub fn config(&self) -> &BatchConfig {
        &self.cfg
    }

    /// See the `salt` field.
    pub fn set_salt(&mut self, salt: Uuid) {
        self.salt = salt;
    }

    pub fn set_config(&mut self, cfg: BatchConfig) {
        self.cfg = cfg;
    }

    pub fn envelope(&self) -> &Envelope {
        &self.env
    }

    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    fn last(&mut self, q: QueueName) -> &mut u64 {
        match q {
            QueueName::High => &mut self.last_high_ms,
            QueueName::Low => &mut self.last_low_ms,
        }
    }

    fn frequency(&self, q: QueueName) -> u64 {
        match q {
            QueueName::High => self.cfg.high_frequency_ms,
            QueueName::Low => self.cfg.low_frequency_ms,
        }
    }

    /// Room for events in one body (the commas between events count against it).
    fn capacity(&self) -> usize {
        self.cfg.body_limit().saturating_sub(self.env.overhead())
    }

    /// Build what is due at `now_ms`, one message at a time: a message is built only when
    /// none is waiting in the store. While edgeHub is away the events stay pending, where a
    /// full store drops by priority (oldest Low first) instead of keeping whole messages of
    /// old Low events; the caller asks again when the waiting message is settled. A full
    /// message is due at once, whatever the frequency; a priority that is due while a message
    /// waits stays due. Returns how many were built.
    pub fn tick(&mut self, store: &mut dyn Store, now_ms: u64) -> Result<usize, StoreError> {
        let mut built = 0;
        for q in [QueueName::High, QueueName::Low] {
            if store.message_count() > 0 {
                break;
            }
            let full = store.pending_bytes(q) + store.pending_sizes(q).len() > self.capacity();
            let due = now_ms.saturating_sub(*self.last(q)) >= self.frequency(q);
            if due {
                *self.last(q) = now_ms;
            }
            if (full || due) && store.pending_bytes(q) > 0 && self.build(store, q)? {
                built += 1;
            }
        }
        Ok(built)
    }

    /// Put every pending event into messages (shutdown, end of a replay).
    pub fn flush(&mut self, store: &mut dyn Store) -> Result<usize, StoreError> {
        let mut built = 0;
        for q in [QueueName::High, QueueName::Low] {
            while !store.pending_sizes(q).is_empty() {
                if !self.build(store, q)? {
                    break;
                }
                built += 1;
            }
        }
        Ok(built)
    }

    /// Build one message led by queue `q`: its events first-in first-out while they fit,
    /// then the other queue's up to the last 4 KB boundary.
    fn build(&mut self, store: &mut dyn Store, q: QueueName) -> Result<bool, StoreError> {
        let other = match q {
            QueueName::High => QueueName::Low,
            QueueName::Low => QueueName::High,
        };
        let limit = self.cfg.body_limit();
        let mut size = self.env.overhead();
        let mut count = 0usize;
        let take = |sizes: Vec<usize>, size: &mut usize, count: &mut usize, cap: usize| {
            let mut n = 0;
            for s in sizes {
                let add = s + usize::from(*count > 0);
                if *size + add > cap {
                    break;
                }
                *size += add;
                *count += 1;
                n += 1;
            }
            n
        };
        let mut n_q = take(store.pending_sizes(q), &mut size, &mut count, limit);
        if n_q == 0 {
            // An event that does not fit even alone cannot be (events are fitted when they
            // are added); take it anyway rather than loop forever.
            n_q = 1;
        }
        let boundary = size.div_ceil(CHUNK).saturating_mul(CHUNK).min(limit);
        let n_other = take(store.pending_sizes(other), &mut size, &mut count, boundary);
        let (high, low) = match q {
            QueueName::High => (n_q, n_other),
            QueueName::Low => (n_other, n_q),
        };
        self.seq += 1;
        let name = if self.salt.is_nil() {
            format!("message {}", self.seq)
        } else {
            format!("message {} {}", self.salt, self.seq)
        };
        let id = Uuid::new_v5(&self.env.agent_id(), name.as_bytes())
            .hyphenated()
            .to_string();
        let env = &self.env;
        let mut body_len = 0;
        let built = store.build_message(&id, q, high, low, &mut |evs| {
            let b = env.body(evs);
            body_len = b.len();
            b
        })?;
        if built {
            self.stats.messages_built += 1;
            self.stats.bytes_built += body_len as u64;
            self.stats.chunks_built += body_len.div_ceil(CHUNK) as u64;
        }
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::process_create::ProcessCreate;
    use crate::events::{ExtraDetails, Payload};
    use crate::outbox::{MemoryStore, Pending};

    fn env() -> Envelope {
        Envelope::new(Uuid::from_u128(1), "0.1.0")
    }

    fn cfg(max: usize) -> BatchConfig {
        BatchConfig {
            max_message_bytes: max,
            app_properties_bytes: 0,
            high_frequency_ms: 1_000,
            low_frequency_ms: 10_000,
        }
    }

    fn ev(n: usize) -> String {
        format!("{{\"e\":\"{}\"}}", "x".repeat(n.saturating_sub(8)))
    }

    fn add(s: &mut MemoryStore, q: QueueName, n: usize, size: usize) {
        for _ in 0..n {
            s.add_pending(Pending::event(q, ev(size))).unwrap();
        }
    }

    fn bodies(s: &mut MemoryStore) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(m) = s.next_message().unwrap() {
            s.ack(&m.message_id).unwrap();
            v.push(m.body);
        }
        v
    }

    #[test]
    fn envelope_body_is_exact() {
        let e = env();
        let b = e.body(&["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(
            b,
            "{\"AgentVersion\":\"0.1.0\",\"AgentId\":\"00000000-0000-0000-0000-000000000001\",\"MessageSchemaVersion\":\"1.0\",\"Events\":[{\"a\":1},{\"b\":2}]}"
        );
        assert_eq!(b.len(), e.overhead() + 7 + 1 + 7);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["Events"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn due_by_frequency_and_padded_to_the_chunk_boundary() {
        let mut s = MemoryStore::new(10_000_000);
        let mut b = Batcher::new(cfg(204_800), env(), 0);
        add(&mut s, QueueName::High, 1, 1000);
        add(&mut s, QueueName::Low, 10, 1000);
        assert_eq!(b.tick(&mut s, 999).unwrap(), 0, "not due yet");
        assert_eq!(b.tick(&mut s, 1000).unwrap(), 1);
        let m = bodies(&mut s);
        assert_eq!(m.len(), 1);
        // One High event (1000 B + envelope) then Low events up to 4096 bytes.
        let events = serde_json::from_str::<serde_json::Value>(&m[0]).unwrap()["Events"]
            .as_array()
            .unwrap()
            .len();
        let overhead = env().overhead();
        let fit = (4096 - overhead - 1000) / 1001;
        assert_eq!(events, 1 + fit);
        assert!(m[0].len() <= 4096, "{}", m[0].len());
        assert!(m[0].len() + 1001 > 4096);
        assert_eq!(s.pending_sizes(QueueName::Low).len(), 10 - fit);
        // Low is due at 10 s.
        assert_eq!(b.tick(&mut s, 9_999).unwrap(), 0);
        assert_eq!(b.tick(&mut s, 10_000).unwrap(), 1);
        assert!(s.pending_sizes(QueueName::Low).is_empty());
    }

    #[test]
    fn a_full_queue_is_sent_at_once_and_never_over_the_limit() {
        let mut s = MemoryStore::new(10_000_000);
        let mut b = Batcher::new(cfg(8_192), env(), 0);
        add(&mut s, QueueName::Low, 40, 500);
        // One at a time: nothing more is built while a message waits.
        assert_eq!(b.tick(&mut s, 1).unwrap(), 1);
        assert_eq!(b.tick(&mut s, 1).unwrap(), 0);
        assert_eq!(s.message_count(), 1);
        // Each settled message lets the next full one be built, still before the frequency.
        let mut m = Vec::new();
        loop {
            let got = bodies(&mut s);
            if got.is_empty() {
                break;
            }
            m.extend(got);
            b.tick(&mut s, 1).unwrap();
        }
        assert!(m.len() >= 2, "{}", m.len());
        for body in &m {
            assert!(body.len() <= 8_192, "{}", body.len());
            // Full: one more event would not have fitted.
            assert!(body.len() + 501 > 8_192);
        }
        // What is left is less than a message, waiting for its frequency.
        let left = s.pending_sizes(QueueName::Low).len();
        assert_eq!(left + m.len() * ((8_192 - env().overhead() + 1) / 501), 40);
        b.flush(&mut s).unwrap();
        assert!(s.pending_sizes(QueueName::Low).is_empty());
        assert_eq!(b.stats().messages_built as usize, m.len() + 1);
    }

    #[test]
    fn app_properties_and_hub_limit_count() {
        let c = BatchConfig {
            max_message_bytes: 262_144,
            app_properties_bytes: 100,
            high_frequency_ms: 1,
            low_frequency_ms: 1,
        };
        assert_eq!(c.body_limit(), 262_144 - 4_096 - 100);
    }

    #[test]
    fn oversized_command_line_is_shortened_and_said() {
        let e = env();
        let mut sev = SecurityEvent {
            id: Uuid::from_u128(7),
            time_ms: 1_700_000_000_000,
            payload: Payload::ProcessCreate(ProcessCreate {
                executable: "/bin/x".into(),
                process_id: 1,
                parent_process_id: 0,
                user_id: "0".into(),
                user_name: None,
                command_line: "ü".repeat(10_000),
                extra_details: ExtraDetails::new(),
            }),
        };
        let (json, shortened) = serialize_fitting(&mut sev, &e, 8_192).unwrap();
        assert!(shortened);
        assert!(json.len() + e.overhead() <= 8_192);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v["Payload"][0]["ExtraDetails"]["CommandLineLength"],
            "20000"
        );
        assert_eq!(
            v["Payload"][0]["ExtraDetails"]["CommandLineTruncated"],
            "true"
        );
        // A small event is left alone.
        let mut small = sev.clone();
        if let Payload::ProcessCreate(p) = &mut small.payload {
            p.command_line = "x".into();
            p.extra_details.clear();
        }
        let (_, shortened) = serialize_fitting(&mut small, &e, 8_192).unwrap();
        assert!(!shortened);
    }
}
