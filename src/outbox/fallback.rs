//! The outbox, falling back to memory when the disk fails under it: [`Resilient`] wraps the
//! [`SqliteStore`] and a [`MemoryStore`] with the same budget.

use super::sqlite::SqliteStore;
use super::{Counters, Dropped, MemoryStore, Pending, Store, StoreError, StoredMessage};
use crate::events::operational::QueueName;

/// The outbox, falling back to memory when the disk fails under it (full, read-only, gone):
/// the module keeps forwarding rather than stopping. What the file held stays there and is
/// sent after the next start; events of the transaction that failed are counted as dropped.
pub struct Resilient {
    disk: Option<SqliteStore>,
    memory: MemoryStore,
    /// Drops to report with the next `add_pending`.
    lost: Dropped,
    /// What to tell upstream about the failure (taken once).
    failure: Option<String>,
}

impl Resilient {
    /// Memory gets the same budget (all of it for JSON: memory has no pages or WAL).
    pub fn new(disk: SqliteStore) -> Resilient {
        let max = disk.memory_budget();
        Resilient {
            disk: Some(disk),
            memory: MemoryStore::new(max),
            lost: Dropped::default(),
            failure: None,
        }
    }

    /// Still on disk?
    pub fn durable(&self) -> bool {
        self.disk.is_some()
    }

    fn fail(&mut self, e: &StoreError) {
        if let Some(d) = self.disk.take() {
            let lost = d.uncommitted();
            self.lost.high += lost.high;
            self.lost.low += lost.low;
            tracing::error!(
                error_id = "E-OUTBOX-WRITE",
                path = %d.path().display(),
                error = %e,
                lost_high = lost.high,
                lost_low = lost.low,
                "the outbox failed (disk full or read-only?): forwarding from memory from now on; what the file held is sent after a restart"
            );
            self.failure = Some(format!(
                "E-OUTBOX-WRITE: the outbox {} failed ({e}); forwarding from memory, {} High and {} Low events of the failed write lost, what the file held is sent after a restart",
                d.path().display(),
                lost.high,
                lost.low
            ));
        }
    }

    /// Run `op` on the disk store; on failure switch to memory and run it there.
    fn with<T>(
        &mut self,
        op: impl Fn(&mut dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(d) = self.disk.as_mut() {
            match op(d) {
                Ok(v) => return Ok(v),
                Err(e) => self.fail(&e),
            }
        }
        op(&mut self.memory)
    }
}

impl Store for Resilient {
    fn add_pending(&mut self, ev: Pending) -> Result<Dropped, StoreError> {
        let mut d = self.with(|s| s.add_pending(ev.clone()))?;
        d.high += std::mem::take(&mut self.lost.high);
        d.low += std::mem::take(&mut self.lost.low);
        Ok(d)
    }
    fn pending_sizes(&self, q: QueueName) -> Vec<usize> {
        match &self.disk {
            Some(d) => d.pending_sizes(q),
            None => self.memory.pending_sizes(q),
        }
    }
    fn pending_bytes(&self, q: QueueName) -> usize {
        match &self.disk {
            Some(d) => d.pending_bytes(q),
            None => self.memory.pending_bytes(q),
        }
    }
    fn requeue(&mut self, name: &str, to: QueueName) -> Result<u64, StoreError> {
        self.with(|s| s.requeue(name, to))
    }
    fn build_message(
        &mut self,
        message_id: &str,
        first: QueueName,
        high: usize,
        low: usize,
        build: &mut dyn FnMut(&[&str]) -> String,
    ) -> Result<bool, StoreError> {
        if let Some(d) = self.disk.as_mut() {
            match d.build_message(message_id, first, high, low, build) {
                Ok(built) => return Ok(built),
                // The events stay in the file (sent after a restart): no message now.
                Err(e) => {
                    self.fail(&e);
                    return Ok(false);
                }
            }
        }
        self.memory
            .build_message(message_id, first, high, low, build)
    }
    fn next_message(&self) -> Result<Option<StoredMessage>, StoreError> {
        match &self.disk {
            Some(d) => d.next_message(),
            None => self.memory.next_message(),
        }
    }
    fn ack(&mut self, message_id: &str) -> Result<(), StoreError> {
        self.with(|s| s.ack(message_id))
    }
    fn reject(&mut self, message_id: &str) -> Result<Option<StoredMessage>, StoreError> {
        self.with(|s| s.reject(message_id))
    }
    fn message_count(&self) -> usize {
        match &self.disk {
            Some(d) => d.message_count(),
            None => self.memory.message_count(),
        }
    }
    fn bytes(&self) -> usize {
        match &self.disk {
            Some(d) => d.bytes(),
            None => self.memory.bytes(),
        }
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        self.with(|s| s.commit())
    }
    fn checkpoint_windows(&mut self, events: Vec<Pending>) -> Result<(), StoreError> {
        self.with(|s| s.checkpoint_windows(events.clone()))
    }
    fn pending_statistics(&self) -> usize {
        match &self.disk {
            Some(d) => d.pending_statistics(),
            None => self.memory.pending_statistics(),
        }
    }
    fn set_max_bytes(&mut self, max_bytes: usize) -> Result<Dropped, StoreError> {
        self.memory.set_max_bytes(max_bytes)?;
        self.with(|s| s.set_max_bytes(max_bytes))
    }
    fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }
    fn stage_counters(&mut self, counters: &Counters) {
        if let Some(d) = self.disk.as_mut() {
            d.stage_counters(counters);
        }
    }
    fn take_restored_counters(&mut self) -> Option<Counters> {
        self.disk.as_mut().and_then(|d| d.take_restored_counters())
    }
}
