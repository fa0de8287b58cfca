//! The within-a-minute watcher (issue 14, point 4): a new account, a new uid-0 user or a new
//! listening socket is reported within a minute, not at the next `snapshotFrequency`.
//!
//! Contract: [`Watcher`] is a pure state machine. Once per [`WATCH_PERIOD`] the caller
//! takes a [`Sample`] (cheap: the change times of `etc/{passwd,group,shadow}` and the
//! [`Digest`] of the listening set, no owner walk — [`sample`] does this I/O) and gives it
//! to [`Watcher::observe`] with the time; the answer, [`Due`], says which kinds to collect
//! now. The caller tells the watcher what each collection saw
//! ([`Watcher::users_collected`], [`Watcher::ports_collected`]) so that the next sample is
//! compared with what was last sent. A kind that is not watched (its priority Off) is left
//! out of the sample (`None`) and never comes due. The first sample of a kind with nothing
//! collected yet becomes its baseline: the start snapshot reports what was there.
//!
//! Time is a monotonic offset from any origin the caller keeps (no clock here).

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use super::HostRoot;
use super::listening_ports::{self, Digest};

/// How often the host is sampled.
pub const WATCH_PERIOD: Duration = Duration::from_secs(60);

/// The account files, as the watcher reads them under the host root.
pub const ACCOUNT_FILES: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/shadow"];

/// One account file's identity: inode and change time (seconds, nanoseconds). Quirk: tools
/// such as `useradd` write a new file and rename it over the old one, so the inode changes
/// too; an in-place edit changes only the ctime. Either is a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub ino: u64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

/// The account files' stamps, in [`ACCOUNT_FILES`] order; `None` for a file that is missing
/// or unreadable (appearing or vanishing is a change as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountsStamp(pub [Option<FileStamp>; 3]);

/// What one minute's sample saw; `None` for a kind that is not watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub accounts: Option<AccountsStamp>,
    pub ports: Option<Digest>,
}

/// Which kinds to collect now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    pub local_users: bool,
    pub listening_ports: bool,
}

impl Due {
    pub fn any(self) -> bool {
        self.local_users || self.listening_ports
    }
}

/// The watcher's state: when to sample next and what was last reported of each kind.
#[derive(Debug, Clone)]
pub struct Watcher {
    period: Duration,
    next: Duration,
    users: Option<AccountsStamp>,
    ports: Option<Digest>,
}

impl Watcher {
    /// A watcher whose first sample is due at `now`.
    pub fn new(period: Duration, now: Duration) -> Self {
        Watcher {
            period,
            next: now,
            users: None,
            ports: None,
        }
    }

    /// When the next sample is due.
    pub fn next_due(&self) -> Duration {
        self.next
    }

    /// Whether a sample is due at `now`.
    pub fn is_due(&self, now: Duration) -> bool {
        now >= self.next
    }

    /// LocalUsers was collected with the account files as `stamp` (taken *before* they were
    /// read, so a change during the read shows at the next sample).
    pub fn users_collected(&mut self, stamp: AccountsStamp) {
        self.users = Some(stamp);
    }

    /// ListeningPorts was collected (or found identical to what was sent) with this set.
    pub fn ports_collected(&mut self, digest: Digest) {
        self.ports = Some(digest);
    }

    /// A sample taken at `now`: which kinds to collect now. A kind that comes due is taken
    /// as collected with this sample's state, so a caller that does not report back is not
    /// asked again each minute for the same change; the next sample is due one period after
    /// `now` (a late sample does not bring a burst of them).
    pub fn observe(&mut self, now: Duration, sample: Sample) -> Due {
        self.next = now + self.period;
        Due {
            local_users: changed(&mut self.users, sample.accounts),
            listening_ports: changed(&mut self.ports, sample.ports),
        }
    }
}

/// Compares a sample with the last reported state; the first one is the baseline.
fn changed<T: PartialEq + Copy>(last: &mut Option<T>, seen: Option<T>) -> bool {
    let Some(seen) = seen else {
        return false;
    };
    let was = last.replace(seen);
    was.is_some_and(|was| was != seen)
}

/// The account files' stamps under the host root.
pub fn stamp_accounts(host: &HostRoot) -> AccountsStamp {
    AccountsStamp(ACCOUNT_FILES.map(|f| {
        // symlink_metadata: the file itself, as it is replaced by rename, not a link target.
        let m = host.symlink_metadata(f).ok()?;
        Some(FileStamp {
            ino: m.ino(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        })
    }))
}

/// Takes a sample under the host root of the kinds asked for.
pub fn sample(host: &HostRoot, users: bool, ports: bool) -> Sample {
    Sample {
        accounts: users.then(|| stamp_accounts(host)),
        ports: ports.then(|| listening_ports::sample(host).digest()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn stamp(ctime: i64) -> AccountsStamp {
        let f = |ino| {
            Some(FileStamp {
                ino,
                ctime,
                ctime_nsec: 0,
            })
        };
        AccountsStamp([f(1), f(2), f(3)])
    }

    fn both(accounts: AccountsStamp, ports: u64) -> Sample {
        Sample {
            accounts: Some(accounts),
            ports: Some(Digest(ports)),
        }
    }

    #[test]
    fn nothing_is_due_until_something_changes_after_the_start_snapshot() {
        let mut w = Watcher::new(MIN, Duration::ZERO);
        w.users_collected(stamp(100));
        w.ports_collected(Digest(7));
        assert!(w.is_due(Duration::ZERO));
        assert_eq!(
            w.observe(Duration::ZERO, both(stamp(100), 7)),
            Due::default()
        );
        assert!(!w.is_due(Duration::from_secs(59)));
        assert!(w.is_due(MIN));
        assert_eq!(w.observe(MIN, both(stamp(100), 7)), Due::default());
        assert_eq!(w.next_due(), 2 * MIN);
    }

    #[test]
    fn a_changed_account_file_brings_local_users_once() {
        let mut w = Watcher::new(MIN, Duration::ZERO);
        w.users_collected(stamp(100));
        w.ports_collected(Digest(7));
        let due = w.observe(MIN, both(stamp(160), 7));
        assert_eq!(
            due,
            Due {
                local_users: true,
                listening_ports: false
            }
        );
        // Not asked again for the same change, whether or not the caller reported back.
        assert_eq!(w.observe(2 * MIN, both(stamp(160), 7)), Due::default());
        // Only the shadow file's ctime moved (a password set): still a change.
        let mut s = stamp(160);
        s.0[2] = Some(FileStamp {
            ino: 3,
            ctime: 200,
            ctime_nsec: 5,
        });
        assert!(w.observe(3 * MIN, both(s, 7)).local_users);
        // The file replaced by a rename: a new inode, same second.
        let mut r = s;
        r.0[0] = Some(FileStamp {
            ino: 99,
            ctime: 160,
            ctime_nsec: 0,
        });
        assert!(w.observe(4 * MIN, both(r, 7)).local_users);
        // A file vanishing is a change too.
        let mut gone = r;
        gone.0[1] = None;
        assert!(w.observe(5 * MIN, both(gone, 7)).local_users);
    }

    #[test]
    fn a_new_listening_set_brings_listening_ports_compared_with_the_last_sent() {
        let mut w = Watcher::new(MIN, Duration::ZERO);
        w.users_collected(stamp(100));
        w.ports_collected(Digest(7));
        let due = w.observe(MIN, both(stamp(100), 8));
        assert_eq!(
            due,
            Due {
                local_users: false,
                listening_ports: true
            }
        );
        // The collection that followed saw yet another set (a socket opened meanwhile):
        // the next sample is compared with that.
        w.ports_collected(Digest(9));
        assert_eq!(w.observe(2 * MIN, both(stamp(100), 9)), Due::default());
        // Back to the first set: it differs from what was last sent, so it is sent.
        assert!(w.observe(3 * MIN, both(stamp(100), 7)).listening_ports);
    }

    #[test]
    fn the_first_sample_is_the_baseline_and_an_unwatched_kind_never_comes_due() {
        let mut w = Watcher::new(MIN, Duration::ZERO);
        assert_eq!(w.observe(Duration::ZERO, both(stamp(1), 1)), Due::default());
        let off = Sample {
            accounts: None,
            ports: Some(Digest(2)),
        };
        assert_eq!(
            w.observe(MIN, off),
            Due {
                local_users: false,
                listening_ports: true
            }
        );
        // Users watched again (priority back on): compared with the last state seen.
        assert!(w.observe(2 * MIN, both(stamp(5), 2)).local_users);
    }

    #[test]
    fn a_late_sample_sets_the_next_one_a_period_later_not_a_burst() {
        let mut w = Watcher::new(MIN, Duration::ZERO);
        w.observe(Duration::ZERO, Sample::default());
        let late = Duration::from_secs(60 * 10 + 7);
        assert!(w.is_due(late));
        w.observe(late, Sample::default());
        assert!(!w.is_due(late + Duration::from_secs(59)));
        assert_eq!(w.next_due(), late + MIN);
    }

    #[test]
    fn stamps_see_a_rewritten_account_file() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        for f in ["passwd", "group"] {
            std::fs::write(etc.join(f), "root:x:0:0::/root:/bin/sh\n").unwrap();
        }
        let host = HostRoot::new(dir.path());
        let before = stamp_accounts(&host);
        assert!(before.0[0].is_some() && before.0[1].is_some());
        assert_eq!(before.0[2], None, "no shadow in this tree");
        // As useradd does: a new file renamed over the old one.
        std::fs::write(
            etc.join("passwd+"),
            "root:x:0:0::/root:/bin/sh\nx:x:0:0::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::rename(etc.join("passwd+"), etc.join("passwd")).unwrap();
        let after = stamp_accounts(&host);
        assert_ne!(after.0[0], before.0[0]);
        assert_eq!(after.0[1], before.0[1]);
        let mut w = Watcher::new(MIN, Duration::ZERO);
        w.users_collected(before);
        assert!(w.observe(MIN, sample(&host, true, false)).local_users);
    }
}
