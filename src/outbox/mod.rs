//! Where events wait: the store of pending events (by priority) and of built messages.
//!
//! The contract (DESIGN.md): events leaving aggregation enter the store with their priority; a
//! message is built from pending events, stored with its message-id, and those events removed,
//! in one step ([`Store::build_message`]). Sending takes stored messages
//! ([`Store::next_message`]) and acknowledges ([`Store::ack`]) or rejects ([`Store::reject`])
//! them, so a retry is a re-read, never a copy held by the sender. The store is bounded in
//! bytes (`maxLocalCacheSizeInBytes`), built messages included; what goes when it is full is
//! `policy`'s one rule for both stores, and every drop is counted per queue.
//!
//! Files: this contract; [`memory`] ([`MemoryStore`]); [`sqlite`] (the durable outbox);
//! [`fallback`] ([`fallback::Resilient`]: the memory fallback when the disk fails).

pub mod fallback;
pub mod memory;
mod policy;
pub mod sqlite;

pub use memory::MemoryStore;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::events::operational::QueueName;
use crate::outgoing::{PeriodStats, UpstreamDrops};

/// Why the store could not do something.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the outbox failed: {0}")]
    Backend(String),
    #[error("the outbox is locked: {0}")]
    Locked(String),
    /// The file cannot be reached (permissions, a read-only or missing directory): not a
    /// corrupt file, so not moved aside.
    #[error("the outbox file cannot be reached: {0}")]
    Access(String),
}

/// A pending event: its JSON, ready to be put into a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub queue: QueueName,
    pub json: String,
    /// A statistics event (MessageStatistics, DroppedEventsStatistics): never dropped to make
    /// room. It carries the count of what was dropped, and a report of drops lost to the drops
    /// it reports would make the statistics lie. The outgoing state holds the next snapshot
    /// back while one is pending (its period grows), so at most one pair waits.
    pub statistics: bool,
}

/// The queue that is not `q`.
pub fn other(q: QueueName) -> QueueName {
    match q {
        QueueName::High => QueueName::Low,
        QueueName::Low => QueueName::High,
    }
}

/// The `Name` of an event's JSON (`None` when it is not an object with a string `Name`).
fn event_name(json: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        #[serde(rename = "Name")]
        name: String,
    }
    serde_json::from_str::<Named>(json).ok().map(|n| n.name)
}

impl Pending {
    /// An ordinary event.
    pub fn event(queue: QueueName, json: String) -> Pending {
        Pending {
            queue,
            json,
            statistics: false,
        }
    }
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

/// What the statistics period in progress has counted so far: what its MessageStatistics and
/// DroppedEventsStatistics events will report. The outgoing state counts; the store only
/// keeps a copy ([`Store::stage_counters`]). A durable store commits the last ones it was
/// given with every transaction, so a count is on disk exactly when what it counts is (see
/// `outgoing::state` for why a kill then neither loses nor repeats one), and hands back at open
/// those a killed run left ([`Store::take_restored_counters`]).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub period: PeriodStats,
    /// The upstream drops of the period (not the cumulative counters).
    pub upstream: UpstreamDrops,
}

/// The store interface shared by the in-memory and the on-disk outbox.
pub trait Store {
    /// Add a pending event; returns what had to be dropped to make room (the event itself
    /// is dropped, and counted, when it alone is larger than the whole budget).
    fn add_pending(&mut self, ev: Pending) -> Result<Dropped, StoreError>;
    /// Pending events of a queue, oldest first (JSON lengths), without removing them.
    fn pending_sizes(&self, q: QueueName) -> Vec<usize>;
    /// Pending statistics events (not yet in a message).
    fn pending_statistics(&self) -> usize;
    /// The byte budget changed (configuration): drops what no longer fits.
    fn set_max_bytes(&mut self, max_bytes: usize) -> Result<Dropped, StoreError>;
    /// Bytes of pending events of a queue.
    fn pending_bytes(&self, q: QueueName) -> usize;
    /// A type's priority changed between High and Low (configuration): its pending events
    /// (those whose JSON `Name` is `name`, statistics events included) move from the other
    /// queue into `to`, keeping their age among the events already there (the oldest is still
    /// sent first), their bytes and their statistics mark; returns how many moved. In one
    /// step: on disk one statement of the open transaction, committed with the next commit
    /// (a kill before it leaves them where they were: sent under the old priority, not lost).
    fn requeue(&mut self, name: &str, to: QueueName) -> Result<u64, StoreError>;
    /// When a priority is due, or a message is full; the batcher builds one only when none is
    /// waiting, so while edgeHub is away the events stay pending, where the drop rule can
    /// choose among them.
    /// In one step: take the first `high` pending High events and the first `low` pending Low
    /// events, store the message `build` makes of them (in the order given: `first` queue
    /// first) under `message_id`, and remove them. Returns whether a message was stored (no
    /// events, or a store that lost its disk on the way, make none).
    fn build_message(
        &mut self,
        message_id: &str,
        first: QueueName,
        high: usize,
        low: usize,
        build: &mut dyn FnMut(&[&str]) -> String,
    ) -> Result<bool, StoreError>;
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
    /// A failure the store survived (it fell back to memory) and that upstream should hear
    /// of, once.
    fn take_failure(&mut self) -> Option<String> {
        None
    }
    /// The period's counters as they are now. A durable store writes the last ones given into
    /// every transaction it commits (with the drops it made itself and has not reported yet),
    /// so they are committed together with what they count; memory keeps nothing.
    fn stage_counters(&mut self, _counters: &Counters) {}
    /// The counters the previous run committed last (a run killed before it reported them),
    /// once. They stay in the file until the next commit replaces them with the merged ones.
    fn take_restored_counters(&mut self) -> Option<Counters> {
        None
    }
}
