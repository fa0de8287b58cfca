//! The store in memory: pending events and built messages in queues, bounded in bytes by the
//! same drop rule as the durable outbox (`policy`); nothing survives a restart.

use std::collections::VecDeque;

use super::{Dropped, Pending, Store, StoreError, StoredMessage, event_name, other, policy};
use crate::events::operational::QueueName;

/// A pending event in memory.
#[derive(Debug)]
struct Held {
    /// The order of arrival over both queues (what a requeued event keeps).
    seq: u64,
    json: String,
    /// A statistics event ([`Pending::statistics`]).
    statistics: bool,
}

/// The store in memory.
#[derive(Debug)]
pub struct MemoryStore {
    /// Pending events, oldest first.
    high: VecDeque<Held>,
    low: VecDeque<Held>,
    messages: VecDeque<StoredMessage>,
    bytes: usize,
    max_bytes: usize,
    next_seq: u64,
}

impl MemoryStore {
    pub fn new(max_bytes: usize) -> Self {
        MemoryStore {
            high: VecDeque::new(),
            low: VecDeque::new(),
            messages: VecDeque::new(),
            bytes: 0,
            max_bytes,
            next_seq: 0,
        }
    }

    fn queue(&self, q: QueueName) -> &VecDeque<Held> {
        match q {
            QueueName::High => &self.high,
            QueueName::Low => &self.low,
        }
    }

    fn queue_mut(&mut self, q: QueueName) -> &mut VecDeque<Held> {
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
        self.queue(q).iter().position(|e| !e.statistics)
    }
    fn drop_pending(&mut self, q: QueueName, pos: usize) -> Result<(), StoreError> {
        if let Some(e) = self.queue_mut(q).remove(pos) {
            self.bytes -= e.json.len();
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
            let held = Held {
                seq: self.next_seq,
                json: ev.json,
                statistics: ev.statistics,
            };
            self.next_seq += 1;
            self.queue_mut(ev.queue).push_back(held);
        }
        Ok(admitted.dropped)
    }

    fn pending_sizes(&self, q: QueueName) -> Vec<usize> {
        self.queue(q).iter().map(|e| e.json.len()).collect()
    }

    fn pending_statistics(&self) -> usize {
        self.high
            .iter()
            .chain(self.low.iter())
            .filter(|e| e.statistics)
            .count()
    }

    fn set_max_bytes(&mut self, max_bytes: usize) -> Result<Dropped, StoreError> {
        self.max_bytes = max_bytes;
        policy::make_room(self, 0, max_bytes)
    }

    fn pending_bytes(&self, q: QueueName) -> usize {
        self.queue(q).iter().map(|e| e.json.len()).sum()
    }

    fn requeue(&mut self, name: &str, to: QueueName) -> Result<u64, StoreError> {
        let (moving, staying): (VecDeque<Held>, VecDeque<Held>) =
            std::mem::take(self.queue_mut(other(to)))
                .into_iter()
                .partition(|e| event_name(&e.json).as_deref() == Some(name));
        *self.queue_mut(other(to)) = staying;
        let moved = moving.len() as u64;
        if moved > 0 {
            let mut all: Vec<Held> = std::mem::take(self.queue_mut(to)).into();
            all.extend(moving);
            all.sort_by_key(|e| e.seq);
            *self.queue_mut(to) = all.into();
        }
        Ok(moved)
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
        let hs = self.high.range(..high).map(|e| e.json.as_str());
        let ls = self.low.range(..low).map(|e| e.json.as_str());
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

    /// Synthetic events with a `Name` (requeue reads nothing else): a type moves to the
    /// other queue at its age, statistics events keep their mark, bytes do not change.
    #[test]
    fn requeue_moves_a_type_to_the_other_queue_at_its_age() {
        let named = |name: &str, tag: &str| format!(r#"{{"Name":"{name}","e":"{tag}"}}"#);
        let mut s = MemoryStore::new(1000);
        let evs = [
            (QueueName::High, named("Login", "l1"), false),
            (QueueName::Low, named("ProcessCreate", "p1"), false),
            (QueueName::High, named("Login", "l2"), false),
            (
                QueueName::High,
                named("DroppedEventsStatistics", "d1"),
                true,
            ),
            (QueueName::Low, named("ConnectionCreate", "c1"), false),
        ];
        for (queue, json, statistics) in &evs {
            let ev = Pending {
                queue: *queue,
                json: json.clone(),
                statistics: *statistics,
            };
            s.add_pending(ev).unwrap();
        }
        let bytes = s.bytes();
        assert_eq!(s.requeue("Login", QueueName::Low).unwrap(), 2);
        assert_eq!(
            s.requeue("DroppedEventsStatistics", QueueName::Low)
                .unwrap(),
            1
        );
        assert_eq!(s.requeue("Login", QueueName::Low).unwrap(), 0);
        assert_eq!(s.requeue("Nothing", QueueName::High).unwrap(), 0);
        assert_eq!(s.pending_sizes(QueueName::High), Vec::<usize>::new());
        assert_eq!(s.bytes(), bytes);
        assert_eq!(s.pending_statistics(), 1);
        s.build_message("m", QueueName::Low, 0, 9, &mut |evs| evs.join(","))
            .unwrap();
        let m = s.next_message().unwrap().unwrap();
        let order: Vec<&str> = evs.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(m.body, order.join(","));
        assert_eq!((m.high_events, m.low_events), (0, 5));
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
