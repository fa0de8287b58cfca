//! What goes when the store is full: one rule for the memory and the on-disk store.
//!
//! - The oldest pending Low event goes first, then the oldest pending High one, until the new
//!   event fits. Built messages are never dropped (one waits at a time, see the batcher).
//! - Statistics events are never chosen: they report the drops ([`super::Pending::statistics`]).
//! - An event that does not fit after that (larger than the whole budget, or only messages
//!   and statistics left) is dropped itself and counted in its queue; a statistics event is
//!   stored anyway, going over the budget by that one event, for the same reason as above.

use super::{Dropped, Pending, StoreError};
use crate::events::operational::QueueName;

/// The pending queues of a store, as the rule needs to see them.
pub(crate) trait Queues {
    /// Bytes held (everything the budget counts).
    fn held(&self) -> usize;
    /// Position, in queue `q`'s pending events, of the oldest one that may be dropped.
    fn oldest_droppable(&self, q: QueueName) -> Option<usize>;
    /// Drop the pending event at `pos` of queue `q` (and its bytes).
    fn drop_pending(&mut self, q: QueueName, pos: usize) -> Result<(), StoreError>;
}

/// Drop the oldest Low, then the oldest High pending events until `need` more bytes fit.
pub(crate) fn make_room(
    s: &mut impl Queues,
    need: usize,
    max: usize,
) -> Result<Dropped, StoreError> {
    let mut dropped = Dropped::default();
    while s.held().saturating_add(need) > max {
        let victim = [QueueName::Low, QueueName::High]
            .into_iter()
            .find_map(|q| s.oldest_droppable(q).map(|pos| (q, pos)));
        let Some((q, pos)) = victim else { break };
        s.drop_pending(q, pos)?;
        dropped.add(q, 1);
    }
    Ok(dropped)
}

/// What [`admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// Store the event (the caller adds it and its bytes).
    pub stored: bool,
    /// Dropped to make room, and the event itself when it is not stored.
    pub dropped: Dropped,
}

/// Make room for `ev` under `max` bytes, or decide that it goes.
pub(crate) fn admit(s: &mut impl Queues, ev: &Pending, max: usize) -> Result<Admitted, StoreError> {
    let len = ev.json.len();
    let mut dropped = Dropped::default();
    if len <= max || ev.statistics {
        dropped = make_room(s, len, max)?;
        if s.held().saturating_add(len) <= max || ev.statistics {
            return Ok(Admitted {
                stored: true,
                dropped,
            });
        }
    }
    dropped.add(ev.queue, 1);
    Ok(Admitted {
        stored: false,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{MemoryStore, Store};
    use super::*;

    fn ev(q: QueueName, s: &str) -> Pending {
        Pending::event(q, s.to_string())
    }

    fn stats(q: QueueName, s: &str) -> Pending {
        Pending {
            statistics: true,
            ..ev(q, s)
        }
    }

    #[test]
    fn statistics_are_never_dropped_and_go_in_over_the_budget() {
        let mut s = MemoryStore::new(10);
        s.add_pending(stats(QueueName::Low, "s1s")).unwrap();
        s.add_pending(ev(QueueName::Low, "l1l")).unwrap();
        s.add_pending(ev(QueueName::High, "h1h")).unwrap();
        // Room for 3 more: the oldest Low that may go is l1l, not the older s1s.
        assert_eq!(
            s.add_pending(ev(QueueName::High, "h2h")).unwrap(),
            Dropped { high: 0, low: 1 }
        );
        assert_eq!(s.pending_sizes(QueueName::Low), [3]);
        assert_eq!(s.pending_statistics(), 1);
        // A statistics event makes room like any other...
        assert_eq!(
            s.add_pending(stats(QueueName::Low, "s2s")).unwrap(),
            Dropped { high: 1, low: 0 }
        );
        // ...and when only statistics are left it still goes in.
        assert_eq!(
            s.add_pending(stats(QueueName::Low, "s3s-longer")).unwrap(),
            Dropped { high: 1, low: 0 }
        );
        assert_eq!(s.pending_statistics(), 3);
        assert_eq!(s.bytes(), 16);
        // An ordinary event finds no room: it goes itself.
        assert_eq!(
            s.add_pending(ev(QueueName::High, "h")).unwrap(),
            Dropped { high: 1, low: 0 }
        );
        // A smaller budget drops what it can, never the statistics.
        assert_eq!(s.set_max_bytes(1).unwrap(), Dropped::default());
        assert_eq!(s.pending_statistics(), 3);
    }
}
