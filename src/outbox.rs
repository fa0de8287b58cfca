//! Where events wait: the store of pending events (by priority) and of built messages.
//!
//! The contract (DESIGN.md): events leaving aggregation enter the store with their priority.
//! When a priority is due, or a message is full, a message is built from pending events,
//! stored with its message-id, and those events are removed, in one step
//! ([`Store::build_message`]). Sending takes stored messages ([`Store::next_message`]) and
//! acknowledges ([`Store::ack`]) or rejects ([`Store::reject`]) them, so a retry is a
//! re-read, never a copy held by the sender.
//!
//! The store is bounded in bytes (`maxLocalCacheSizeInBytes`): when an event does not fit,
//! the oldest pending Low events are dropped first, then the oldest High ones, and the drops
//! are counted per queue. Built messages count against the same budget.
//!
//! [`MemoryStore`] keeps all of it in memory; the durable outbox implements the same trait
//! on disk.

pub mod sqlite;

use std::collections::VecDeque;

use thiserror::Error;

use crate::events::operational::QueueName;

/// Why the store could not do something.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the outbox failed: {0}")]
    Backend(String),
}

/// A pending event: its JSON, ready to be put into a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub queue: QueueName,
    pub json: String,
}

/// A built message waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Stable across retries (and, on disk, across restarts).
    pub message_id: String,
    pub body: String,
    /// How many of its events came from each queue (for the statistics of a rejection).
    pub high_events: u64,
    pub low_events: u64,
}

/// Events dropped to make room, per queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub high: u64,
    pub low: u64,
}

impl Dropped {
    pub fn add(&mut self, q: QueueName, n: u64) {
        match q {
            QueueName::High => self.high += n,
            QueueName::Low => self.low += n,
        }
    }
}

/// The store interface shared by the in-memory and the on-disk outbox.
pub trait Store {
    /// Add a pending event; returns what had to be dropped to make room (the event itself
    /// is dropped, and counted, when it alone is larger than the whole budget).
    fn add_pending(&mut self, ev: Pending) -> Result<Dropped, StoreError>;
    /// Pending events of a queue, oldest first (JSON lengths), without removing them.
    fn pending_sizes(&self, q: QueueName) -> Vec<usize>;
    /// Bytes of pending events of a queue.
    fn pending_bytes(&self, q: QueueName) -> usize;
    /// In one step: take the first `high` pending High events and the first `low` pending Low
    /// events, store the message `build` makes of them (in the order given: `first` queue
    /// first) under `message_id`, and remove them.
    fn build_message(
        &mut self,
        message_id: &str,
        first: QueueName,
        high: usize,
        low: usize,
        build: &mut dyn FnMut(&[&str]) -> String,
    ) -> Result<(), StoreError>;
    /// The oldest stored message, if any.
    fn next_message(&self) -> Result<Option<StoredMessage>, StoreError>;
    /// Delivered: remove it.
    fn ack(&mut self, message_id: &str) -> Result<(), StoreError>;
    /// Rejected (final): remove it; returns it for the statistics.
    fn reject(&mut self, message_id: &str) -> Result<Option<StoredMessage>, StoreError>;
    /// Messages waiting to be sent.
    fn message_count(&self) -> usize;
    /// All bytes held (pending events and messages).
    fn bytes(&self) -> usize;
    /// Make what was added durable (the on-disk store groups its writes until then).
    fn commit(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Replace the checkpoint of the open aggregation windows (their entries as the events
    /// they would become now). A durable store turns a checkpoint left by a killed run into
    /// pending events when it opens; memory has nothing to keep it for.
    fn checkpoint_windows(&mut self, _events: Vec<Pending>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The store in memory.
#[derive(Debug)]
pub struct MemoryStore {
    high: VecDeque<String>,
    low: VecDeque<String>,
    messages: VecDeque<StoredMessage>,
    bytes: usize,
    max_bytes: usize,
}

impl MemoryStore {
    pub fn new(max_bytes: usize) -> Self {
        MemoryStore {
            high: VecDeque::new(),
            low: VecDeque::new(),
            messages: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The byte budget can change with the configuration.
    pub fn set_max_bytes(&mut self, max_bytes: usize) -> Dropped {
        self.max_bytes = max_bytes;
        self.make_room(0)
    }

    fn queue(&self, q: QueueName) -> &VecDeque<String> {
        match q {
            QueueName::High => &self.high,
            QueueName::Low => &self.low,
        }
    }

    /// Drop the oldest Low, then the oldest High pending events until `need` more bytes fit.
    fn make_room(&mut self, need: usize) -> Dropped {
        let mut dropped = Dropped::default();
        while self.bytes + need > self.max_bytes {
            if let Some(e) = self.low.pop_front() {
                self.bytes -= e.len();
                dropped.low += 1;
            } else if let Some(e) = self.high.pop_front() {
                self.bytes -= e.len();
                dropped.high += 1;
            } else {
                break;
            }
        }
        dropped
    }
}

impl Store for MemoryStore {
    fn add_pending(&mut self, ev: Pending) -> Result<Dropped, StoreError> {
        let len = ev.json.len();
        if len > self.max_bytes {
            let mut d = Dropped::default();
            d.add(ev.queue, 1);
            return Ok(d);
        }
        let dropped = self.make_room(len);
        if self.bytes + len > self.max_bytes {
            // Only built messages are left and they fill the budget: this event goes.
            let mut d = dropped;
            d.add(ev.queue, 1);
            return Ok(d);
        }
        self.bytes += len;
        match ev.queue {
            QueueName::High => self.high.push_back(ev.json),
            QueueName::Low => self.low.push_back(ev.json),
        }
        Ok(dropped)
    }

    fn pending_sizes(&self, q: QueueName) -> Vec<usize> {
        self.queue(q).iter().map(String::len).collect()
    }

    fn pending_bytes(&self, q: QueueName) -> usize {
        self.queue(q).iter().map(String::len).sum()
    }

    fn build_message(
        &mut self,
        message_id: &str,
        first: QueueName,
        high: usize,
        low: usize,
        build: &mut dyn FnMut(&[&str]) -> String,
    ) -> Result<(), StoreError> {
        let high = high.min(self.high.len());
        let low = low.min(self.low.len());
        let hs = self.high.range(..high).map(String::as_str);
        let ls = self.low.range(..low).map(String::as_str);
        let events: Vec<&str> = match first {
            QueueName::High => hs.chain(ls).collect(),
            QueueName::Low => ls.chain(hs).collect(),
        };
        let body = build(&events);
        let freed: usize = events.iter().map(|e| e.len()).sum();
        self.high.drain(..high);
        self.low.drain(..low);
        self.bytes = self.bytes - freed + body.len();
        self.messages.push_back(StoredMessage {
            message_id: message_id.to_string(),
            body,
            high_events: high as u64,
            low_events: low as u64,
        });
        Ok(())
    }

    fn next_message(&self) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self.messages.front().cloned())
    }

    fn ack(&mut self, message_id: &str) -> Result<(), StoreError> {
        self.reject(message_id).map(|_| ())
    }

    fn reject(&mut self, message_id: &str) -> Result<Option<StoredMessage>, StoreError> {
        let Some(pos) = self
            .messages
            .iter()
            .position(|m| m.message_id == message_id)
        else {
            return Ok(None);
        };
        let m = self.messages.remove(pos);
        if let Some(m) = &m {
            self.bytes -= m.body.len();
        }
        Ok(m)
    }

    fn message_count(&self) -> usize {
        self.messages.len()
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: QueueName, s: &str) -> Pending {
        Pending {
            queue: q,
            json: s.to_string(),
        }
    }

    #[test]
    fn full_store_drops_oldest_low_before_high() {
        let mut s = MemoryStore::new(10);
        assert_eq!(
            s.add_pending(p(QueueName::High, "hhh")).unwrap(),
            Dropped::default()
        );
        assert_eq!(
            s.add_pending(p(QueueName::Low, "l1l")).unwrap(),
            Dropped::default()
        );
        assert_eq!(
            s.add_pending(p(QueueName::Low, "l2l")).unwrap(),
            Dropped::default()
        );
        // 9 bytes held; 3 more need 2 Low drops? No: one (the oldest Low) makes room.
        assert_eq!(
            s.add_pending(p(QueueName::High, "HHH")).unwrap(),
            Dropped { high: 0, low: 1 }
        );
        assert_eq!(s.pending_sizes(QueueName::Low), vec![3]);
        // Too big for the whole budget: dropped itself.
        assert_eq!(
            s.add_pending(p(QueueName::Low, "01234567890")).unwrap(),
            Dropped { high: 0, low: 1 }
        );
        // Room for 4 needs the last Low.
        assert_eq!(
            s.add_pending(p(QueueName::High, "xxxx")).unwrap(),
            Dropped { high: 0, low: 1 }
        );
        // Room for 5 more needs the oldest High events.
        assert_eq!(
            s.add_pending(p(QueueName::High, "yyyyy")).unwrap(),
            Dropped { high: 2, low: 0 }
        );
        assert_eq!(s.pending_sizes(QueueName::High), vec![4, 5]);
        assert_eq!(s.bytes(), 9);
    }

    #[test]
    fn build_take_ack_reject() {
        let mut s = MemoryStore::new(1000);
        for e in ["h1", "h2"] {
            s.add_pending(p(QueueName::High, e)).unwrap();
        }
        for e in ["l1", "l2"] {
            s.add_pending(p(QueueName::Low, e)).unwrap();
        }
        s.build_message("m1", QueueName::Low, 1, 2, &mut |evs| evs.join(","))
            .unwrap();
        let m = s.next_message().unwrap().unwrap();
        assert_eq!(m.body, "l1,l2,h1");
        assert_eq!((m.high_events, m.low_events), (1, 2));
        assert_eq!(s.pending_sizes(QueueName::High), vec![2]);
        assert_eq!(s.bytes(), 2 + "l1,l2,h1".len());
        // Reading again gives the same message: a retry is a re-read.
        assert_eq!(s.next_message().unwrap().unwrap(), m);
        assert_eq!(s.reject("nope").unwrap(), None);
        s.ack("m1").unwrap();
        assert_eq!(s.next_message().unwrap(), None);
        assert_eq!(s.bytes(), 2);
        s.build_message("m2", QueueName::High, 5, 5, &mut |evs| evs.join(","))
            .unwrap();
        let r = s.reject("m2").unwrap().unwrap();
        assert_eq!((r.high_events, r.low_events), (1, 0));
        assert_eq!(s.bytes(), 0);
        assert_eq!(s.message_count(), 0);
    }
}
