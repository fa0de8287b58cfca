//! The store in memory: pending events and built messages in queues, bounded in bytes by the
//! same drop rule as the durable outbox (`policy`); nothing survives a restart.

use std::collections::VecDeque;

use super::{Dropped, Pending, Store, StoreError, StoredMessage, policy};
use crate::events::operational::QueueName;

/// The store in memory.
#[derive(Debug)]
pub struct MemoryStore {
    /// Pending events: JSON and whether it is a statistics event.
    high: VecDeque<(String, bool)>,
    low: VecDeque<(String, bool)>,
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

    fn queue(&self, q: QueueName) -> &VecDeque<(String, bool)> {
        match q {
            QueueName::High => &self.high,
            QueueName::Low => &self.low,
        }
    }

    fn queue_mut(&mut self, q: QueueName) -> &mut VecDeque<(String, bool)> {
        match q {
            QueueName::High => &mut self.high,
            QueueName::Low => &mut self.low,
        }
    }
}

impl policy::Queues for MemoryStore {
    fn held(&self) -> usize {
        self.bytes
    }
    fn oldest_droppable(&self, q: QueueName) -> Option<usize> {
        self.queue(q).iter().position(|e| !e.1)
    }
    fn drop_pending(&mut self, q: QueueName, pos: usize) -> Result<(), StoreError> {
        if let Some((json, _)) = self.queue_mut(q).remove(pos) {
            self.bytes -= json.len();
        }
        Ok(())
    }
}

impl Store for MemoryStore {
    fn add_pending(&mut self, ev: Pending) -> Result<Dropped, StoreError> {
        let max = self.max_bytes;
        let admitted = policy::admit(self, &ev, max)?;
        if admitted.stored {
            self.bytes += ev.json.len();
            self.queue_mut(ev.queue).push_back((ev.json, ev.statistics));
        }
        Ok(admitted.dropped)
    }

    fn pending_sizes(&self, q: QueueName) -> Vec<usize> {
        self.queue(q).iter().map(|e| e.0.len()).collect()
    }

    fn pending_statistics(&self) -> usize {
        self.high
            .iter()
            .chain(self.low.iter())
            .filter(|e| e.1)
            .count()
    }

    fn set_max_bytes(&mut self, max_bytes: usize) -> Result<Dropped, StoreError> {
        self.max_bytes = max_bytes;
        policy::make_room(self, 0, max_bytes)
    }

    fn pending_bytes(&self, q: QueueName) -> usize {
        self.queue(q).iter().map(|e| e.0.len()).sum()
    }

    fn build_message(
        &mut self,
        message_id: &str,
        first: QueueName,
        high: usize,
        low: usize,
        build: &mut dyn FnMut(&[&str]) -> String,
    ) -> Result<bool, StoreError> {
        let high = high.min(self.high.len());
        let low = low.min(self.low.len());
        if high + low == 0 {
            return Ok(false);
        }
        let hs = self.high.range(..high).map(|e| e.0.as_str());
        let ls = self.low.range(..low).map(|e| e.0.as_str());
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
        Ok(true)
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
        Pending::event(q, s.to_string())
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
