//! When to take the host snapshots, and which to send: a pure state machine (time comes in
//! as an argument, a monotonic offset from any origin the caller keeps; no I/O, no clock).
//!
//! Contract:
//! - [`Scheduler::start`] (edgeHub connected, or at once when printing) makes the first
//!   periodic snapshot due; before it nothing is due.
//! - Every `snapshotFrequency` after the last periodic one, [`Scheduler::due`] says so once
//!   (a late caller gets one, not a burst). [`Scheduler::set_frequency`] takes a new
//!   frequency live: the next one is due a new period after the last (at once if that has
//!   passed).
//! - [`Scheduler::request`] asks for one kind now (the watcher saw accounts or listeners
//!   change, or a kind was turned on).
//! - [`Scheduler::should_send`] decides, per kind and collected digest: a changed snapshot is
//!   sent; an identical one only when the last send of that kind is a whole frequency ago, so
//!   an identical snapshot is not re-sent more than once per `snapshotFrequency`.
//!   [`Scheduler::forget`] (a kind turned Off) makes its next snapshot count as new.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::events::EventKind;

/// The scheduler's state.
#[derive(Debug, Clone)]
pub struct Scheduler {
    frequency: Duration,
    /// When the last periodic snapshot was due; `None` before [`Scheduler::start`].
    last_periodic: Option<Duration>,
    /// Whether a periodic snapshot is due and not yet handed out.
    started_pending: bool,
    requested: BTreeSet<EventKind>,
    /// Per kind: the digest last sent and when.
    sent: BTreeMap<EventKind, (u64, Duration)>,
}

impl Scheduler {
    pub fn new(frequency: Duration) -> Self {
        Scheduler {
            frequency,
            last_periodic: None,
            started_pending: false,
            requested: BTreeSet::new(),
            sent: BTreeMap::new(),
        }
    }

    /// The first periodic snapshot is due now (only the first call counts).
    pub fn start(&mut self, now: Duration) {
        if self.last_periodic.is_none() {
            self.last_periodic = Some(now);
            self.started_pending = true;
        }
    }

    /// A new `snapshotFrequency`, in force at once.
    pub fn set_frequency(&mut self, frequency: Duration) {
        self.frequency = frequency;
    }

    /// One kind now, besides the periodic snapshots.
    pub fn request(&mut self, kind: EventKind) {
        self.requested.insert(kind);
    }

    /// The kind is no longer collected: its next snapshot is new.
    pub fn forget(&mut self, kind: EventKind) {
        self.sent.remove(&kind);
        self.requested.remove(&kind);
    }

    /// When something is next due (`None`: not started, nothing requested; a request is due
    /// at once, `Duration::ZERO`).
    pub fn next_due(&self) -> Option<Duration> {
        if !self.requested.is_empty() {
            return Some(Duration::ZERO);
        }
        if self.started_pending {
            return self.last_periodic;
        }
        self.last_periodic.map(|l| l.saturating_add(self.frequency))
    }

    /// What is due at `now`: whether the periodic snapshot of every kind is, and the kinds
    /// requested on their own (none of them twice).
    pub fn due(&mut self, now: Duration) -> (bool, BTreeSet<EventKind>) {
        let mut periodic = false;
        if self.started_pending {
            self.started_pending = false;
            periodic = true;
        } else if let Some(last) = self.last_periodic
            && now >= last.saturating_add(self.frequency)
        {
            self.last_periodic = Some(now);
            periodic = true;
        }
        let requested = std::mem::take(&mut self.requested);
        (periodic, requested)
    }

    /// Whether a snapshot of `kind` with `digest`, collected at `now`, is sent; when it is,
    /// it is remembered as the last sent.
    pub fn should_send(&mut self, kind: EventKind, digest: u64, now: Duration) -> bool {
        let send = match self.sent.get(&kind) {
            None => true,
            Some((last, at)) => *last != digest || now.saturating_sub(*at) >= self.frequency,
        };
        if send {
            self.sent.insert(kind, (digest, now));
        }
        send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);
    const U: EventKind = EventKind::LocalUsers;

    #[test]
    fn nothing_before_start_then_at_start_and_every_frequency() {
        let mut s = Scheduler::new(13 * H);
        assert_eq!(s.next_due(), None);
        assert_eq!(s.due(H), (false, BTreeSet::new()));
        s.start(2 * H);
        assert_eq!(s.next_due(), Some(2 * H));
        assert_eq!(s.due(2 * H), (true, BTreeSet::new()));
        assert_eq!(s.due(2 * H), (false, BTreeSet::new()));
        assert_eq!(s.next_due(), Some(15 * H));
        assert!(!s.due(15 * H - Duration::from_millis(1)).0);
        assert!(s.due(15 * H).0);
        // A late caller gets one, and the next period counts from it.
        assert!(s.due(40 * H).0);
        assert!(!s.due(41 * H).0);
        assert_eq!(s.next_due(), Some(53 * H));
        // A second start changes nothing.
        s.start(42 * H);
        assert!(!s.due(42 * H).0);
    }

    #[test]
    fn a_new_frequency_counts_from_the_last_snapshot() {
        let mut s = Scheduler::new(13 * H);
        s.start(Duration::ZERO);
        assert!(s.due(Duration::ZERO).0);
        s.set_frequency(H);
        assert_eq!(s.next_due(), Some(H));
        assert!(s.due(H).0);
        // Shorter than what already passed: due at once.
        s.set_frequency(Duration::from_secs(60));
        assert!(s.due(H + Duration::from_secs(61)).0);
    }

    #[test]
    fn requests_come_once_beside_the_periodic_ones() {
        let mut s = Scheduler::new(13 * H);
        s.request(U);
        s.request(U);
        s.request(EventKind::ListeningPorts);
        assert_eq!(s.next_due(), Some(Duration::ZERO));
        let (periodic, kinds) = s.due(H);
        assert!(!periodic);
        assert_eq!(kinds, BTreeSet::from([EventKind::ListeningPorts, U]));
        assert_eq!(s.due(H), (false, BTreeSet::new()));
    }

    #[test]
    fn identical_snapshots_are_not_re_sent_more_than_once_per_frequency() {
        let mut s = Scheduler::new(13 * H);
        assert!(s.should_send(U, 1, Duration::ZERO));
        // Identical within the frequency: suppressed (a watcher's early collection).
        assert!(!s.should_send(U, 1, 5 * H));
        // Changed: sent at once, and the frequency counts from it.
        assert!(s.should_send(U, 2, 6 * H));
        assert!(!s.should_send(U, 2, 13 * H));
        assert!(!s.should_send(U, 2, 19 * H - Duration::from_millis(1)));
        assert!(s.should_send(U, 2, 19 * H));
        // Kinds are independent.
        assert!(s.should_send(EventKind::SystemInformation, 2, 19 * H));
        // A kind turned off and on again: its next snapshot is new.
        s.forget(U);
        assert!(s.should_send(U, 2, 20 * H));
    }
}
