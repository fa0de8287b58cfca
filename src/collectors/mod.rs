//! Snapshots of the host (issue 14): one file per snapshot kind, all reading under the host
//! root ([`HostRoot`], the `host.root` setting; in the manifest the host's `/` bind-mounted
//! read-only at `/host`).
//!
//! # The collector contract
//!
//! A collector is a plain function `fn(&HostRoot, &CollectOptions) -> Vec<Payload>`:
//!
//! - it only *reads* under the host root: nothing of the host is executed, nothing written;
//! - it is pure over the host root: no clock, no randomness, no state kept between calls
//!   (the scheduler owns when to collect and what was last sent);
//! - it never fails: a missing or unreadable file leaves that field (or item) out, or gives
//!   that check `Err`; an empty `Vec` means nothing is known (nothing to send), a payload
//!   with no items that there is nothing (an `IsEmpty` event says so);
//! - its payloads may hold any number of items: the scheduler splits them into events that
//!   each fit a message.
//!
//! [`REGISTRY`] lists the collectors that `azureiotsecurity snapshot` and the scheduler
//! run, in the schema's order of kinds.

pub mod listening_ports;
pub mod local_users;
pub mod os_baseline;
pub mod schedule;
pub mod system_information;
pub mod watch;

use std::ffi::OsString;
use std::fs::Metadata;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use uuid::Uuid;

use crate::events::{EventKind, Payload, SecurityEvent};

/// The most bytes [`HostRoot::read_to_string`] reads of one file: `/etc/passwd` of a large
/// directory-backed host stays far below it, and a FIFO or a runaway file cannot hold the
/// snapshot.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// The most entries [`HostRoot::read_dir`] returns by default.
pub const MAX_DIR_ENTRIES: usize = 65_536;

/// Symlinks followed while resolving one path, as the kernel's own limit (ELOOP).
const MAX_SYMLINKS: usize = 40;

/// Why a host file could not be read.
#[derive(Debug, Error)]
pub enum HostError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: larger than {limit} bytes", .path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: not UTF-8 text", .path.display())]
    NotText { path: PathBuf },
    #[error("{}: more than {MAX_SYMLINKS} symbolic links", .path.display())]
    Loop { path: PathBuf },
    #[error("{rel:?}: not a path under the host root ('..' is refused)")]
    Outside { rel: String },
}

impl HostError {
    /// Whether the file (or a directory on its way) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, HostError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A directory listing, bounded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirListing {
    /// Entry names, sorted (the order of `read_dir` is the file system's).
    pub names: Vec<OsString>,
    /// The directory had more entries than the bound; `names` holds the first ones read.
    pub truncated: bool,
}

/// The host's file system as the module sees it: every path a collector names is taken as
/// absolute on the host (`/etc/passwd`, `etc/passwd` alike) and read under the root.
///
/// Symbolic links are resolved *inside* the root: an absolute link on the host
/// (`/etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf`) points at the host's
/// file, not at the container's, so each link on the way is read and re-rooted by hand
/// instead of letting the kernel follow it. `..` in a link stops at the root, as it does at
/// `/`. `/proc` is the exception a bind mount cannot hide: its magic links (`/proc/1/exe`)
/// are read with [`HostRoot::read_link`], never followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

impl Default for HostRoot {
    fn default() -> Self {
        HostRoot::new("/")
    }
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> HostRoot {
        HostRoot { root: root.into() }
    }

    /// The root directory (`/` on a plain host, `/host` in the container).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of host file `rel` under the root, its links resolved inside the root; the
    /// last component itself is not followed when `follow_last` is false.
    pub fn resolve(&self, rel: &str, follow_last: bool) -> Result<PathBuf, HostError> {
        let mut todo: Vec<OsString> = Vec::new();
        push_components(&mut todo, Path::new(rel), rel)?;
        todo.reverse();
        // `done` is the resolved host path so far, as components under the root.
        let mut done: Vec<OsString> = Vec::new();
        let mut links = 0usize;
        while let Some(c) = todo.pop() {
            if c == ".." {
                done.pop();
                continue;
            }
            done.push(c);
            let last = todo.is_empty();
            if last && !follow_last {
                break;
            }
            let here = self.join(&done);
            let Ok(meta) = std::fs::symlink_metadata(&here) else {
                // Missing: the caller's read says so with the whole path.
                continue;
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(HostError::Loop {
                    path: self.join(&done),
                });
            }
            let target = std::fs::read_link(&here).map_err(|source| HostError::Io {
                path: here.clone(),
                source,
            })?;
            done.pop();
            if target.is_absolute() {
                done.clear();
            }
            let mut more = Vec::new();
            push_link_components(&mut more, &target);
            todo.extend(more.into_iter().rev());
        }
        Ok(self.join(&done))
    }

    fn join(&self, parts: &[OsString]) -> PathBuf {
        let mut p = self.root.clone();
        for c in parts {
            p.push(c);
        }
        p
    }

    /// The whole of a text file, at most [`MAX_FILE_BYTES`].
    pub fn read_to_string(&self, rel: &str) -> Result<String, HostError> {
        let bytes = self.read_bytes(rel, MAX_FILE_BYTES)?;
        String::from_utf8(bytes).map_err(|_| HostError::NotText {
            path: self.root.join(rel.trim_start_matches('/')),
        })
    }

    /// The whole of a file, at most `limit` bytes (`/proc` files say size 0: the limit is
    /// on what is read, not on what `stat` claims).
    pub fn read_bytes(&self, rel: &str, limit: u64) -> Result<Vec<u8>, HostError> {
        let path = self.resolve(rel, true)?;
        let io = |source| HostError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        let mut out = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(io)?;
        if out.len() as u64 > limit {
            return Err(HostError::TooLarge { path, limit });
        }
        Ok(out)
    }

    /// The entries of a directory, at most [`MAX_DIR_ENTRIES`].
    pub fn read_dir(&self, rel: &str) -> Result<DirListing, HostError> {
        self.read_dir_bounded(rel, MAX_DIR_ENTRIES)
    }

    /// The entries of a directory, at most `max` (sorted; `truncated` when there were more).
    pub fn read_dir_bounded(&self, rel: &str, max: usize) -> Result<DirListing, HostError> {
        let path = self.resolve(rel, true)?;
        let io = |source| HostError::Io {
            path: path.clone(),
            source,
        };
        let mut listing = DirListing::default();
        for entry in std::fs::read_dir(&path).map_err(io)? {
            if listing.names.len() == max {
                listing.truncated = true;
                break;
            }
            listing.names.push(entry.map_err(io)?.file_name());
        }
        listing.names.sort();
        Ok(listing)
    }

    /// The metadata of a host file, its links followed inside the root.
    pub fn metadata(&self, rel: &str) -> Result<Metadata, HostError> {
        let path = self.resolve(rel, true)?;
        std::fs::symlink_metadata(&path).map_err(|source| HostError::Io { path, source })
    }

    /// The metadata of a host path itself (a link is not followed).
    pub fn symlink_metadata(&self, rel: &str) -> Result<Metadata, HostError> {
        let path = self.resolve(rel, false)?;
        std::fs::symlink_metadata(&path).map_err(|source| HostError::Io { path, source })
    }

    /// The target of a symbolic link as the host wrote it (`/proc/<pid>/exe`,
    /// `/proc/<pid>/fd/<n>` → `socket:[inode]`).
    pub fn read_link(&self, rel: &str) -> Result<PathBuf, HostError> {
        let path = self.resolve(rel, false)?;
        std::fs::read_link(&path).map_err(|source| HostError::Io { path, source })
    }
}

/// The components of a path a collector names, `..` refused (a collector has no reason to
/// climb, and the root's own parent must stay out of reach).
fn push_components(out: &mut Vec<OsString>, p: &Path, rel: &str) -> Result<(), HostError> {
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(HostError::Outside {
                    rel: rel.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// The components of a link's target: `..` kept (it climbs, stopping at the root).
fn push_link_components(out: &mut Vec<OsString>, p: &Path) {
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => out.push(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// What the collectors are told besides the host root (local settings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectOptions {
    /// OSBaseline: send passed checks too, not only failed and errored ones.
    pub include_passed_checks: bool,
}

/// A collector: the kind of snapshot it makes and the function making it.
#[derive(Debug, Clone, Copy)]
pub struct Collector {
    pub kind: EventKind,
    pub collect: fn(&HostRoot, &CollectOptions) -> Vec<Payload>,
}

/// Every collector, in the schema's order of kinds; `snapshot` and the scheduler run these.
pub const REGISTRY: &[Collector] = &[
    Collector {
        kind: EventKind::ListeningPorts,
        collect: listening_ports::collect,
    },
    Collector {
        kind: EventKind::SystemInformation,
        collect: system_information::collect,
    },
    Collector {
        kind: EventKind::LocalUsers,
        collect: local_users::collect,
    },
    Collector {
        kind: EventKind::OSBaseline,
        collect: os_baseline::collect,
    },
];

/// The collector of `kind`, when there is one.
pub fn collector(kind: EventKind) -> Option<&'static Collector> {
    REGISTRY.iter().find(|c| c.kind == kind)
}

/// One kind's snapshot as collected: its payloads and their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub kind: EventKind,
    pub payloads: Vec<Payload>,
    /// [`digest`] of the payloads: equal digests, identical snapshots.
    pub digest: u64,
}

/// Run one collector.
pub fn take(c: &Collector, host: &HostRoot, opts: &CollectOptions) -> Snapshot {
    let payloads = (c.collect)(host, opts);
    Snapshot {
        kind: c.kind,
        digest: digest(&payloads),
        payloads,
    }
}

/// A digest of payloads: FNV-1a over their JSON (the items and their order; stable across
/// runs and builds, unlike `std`'s hasher). Only ever compared with another of this build.
pub fn digest(payloads: &[Payload]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in payloads {
        // Serializing the module's own payload types cannot fail (no maps with non-string
        // keys, no failing Serialize impls); an error would only make the digest differ.
        let json = serde_json::to_vec(p).unwrap_or_default();
        for b in json.iter().chain(&[0u8]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The events of a snapshot taken at `wall_ms`, each at most `event_limit` bytes of JSON
/// (the message's body limit less the envelope): a payload whose items do not fit in one
/// event is split into several, each with as many whole items as fit, in order. An item too
/// large even alone gets an event of its own (the outgoing state then counts it as too
/// large, as any event).
pub fn events(payloads: &[Payload], wall_ms: u64, event_limit: usize) -> Vec<SecurityEvent> {
    let event = |payload| SecurityEvent {
        id: Uuid::new_v4(),
        time_ms: wall_ms,
        payload,
    };
    let mut out = Vec::new();
    for p in payloads {
        // The bytes of the event without items (IsEmpty false is one byte longer than true).
        let head = serde_json::to_string(&event(empty_like(p))).map_or(0, |j| j.len() + 1);
        let budget = event_limit.saturating_sub(head);
        for part in split(p, budget) {
            out.push(event(part));
        }
    }
    out
}

/// An empty payload of `p`'s kind.
fn empty_like(p: &Payload) -> Payload {
    match p {
        Payload::SystemInformation(_) => Payload::SystemInformation(Vec::new()),
        Payload::LocalUsers(_) => Payload::LocalUsers(Vec::new()),
        Payload::ListeningPorts(_) => Payload::ListeningPorts(Vec::new()),
        Payload::FirewallConfiguration(_) => Payload::FirewallConfiguration(Vec::new()),
        Payload::OSBaseline(_) => Payload::OSBaseline(Vec::new()),
        other => other.clone(),
    }
}

/// `p` cut into payloads whose items (with their commas) take at most `budget` bytes.
fn split(p: &Payload, budget: usize) -> Vec<Payload> {
    match p {
        Payload::SystemInformation(v) => pack(v, budget)
            .into_iter()
            .map(Payload::SystemInformation)
            .collect(),
        Payload::LocalUsers(v) => pack(v, budget)
            .into_iter()
            .map(Payload::LocalUsers)
            .collect(),
        Payload::ListeningPorts(v) => pack(v, budget)
            .into_iter()
            .map(Payload::ListeningPorts)
            .collect(),
        Payload::FirewallConfiguration(v) => pack(v, budget)
            .into_iter()
            .map(Payload::FirewallConfiguration)
            .collect(),
        Payload::OSBaseline(v) => pack(v, budget)
            .into_iter()
            .map(Payload::OSBaseline)
            .collect(),
        other => vec![other.clone()],
    }
}

/// Items into consecutive groups of at most `budget` bytes of JSON (commas included); an
/// item larger than the budget makes a group of its own. No items, one empty group: a
/// collector that returned an empty payload knows there is nothing (nothing listens), and
/// says so in an `IsEmpty` event.
fn pack<T: serde::Serialize + Clone>(items: &[T], budget: usize) -> Vec<Vec<T>> {
    if items.is_empty() {
        return vec![Vec::new()];
    }
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut used = 0usize;
    for item in items {
        let len = serde_json::to_string(item).map_or(0, |j| j.len());
        let cost = if current.is_empty() { len } else { len + 1 };
        if !current.is_empty() && used + cost > budget {
            groups.push(std::mem::take(&mut current));
            used = 0;
            current.push(item.clone());
            used += len;
        } else {
            current.push(item.clone());
            used += cost;
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("host");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/os-release"), "ID=host\n").unwrap();
        // The container's own file of the same name, which an absolute host link must not
        // reach.
        std::fs::write(dir.path().join("outside"), "container\n").unwrap();
        (dir, HostRoot::new(root))
    }

    #[test]
    fn relative_and_absolute_links_resolve_inside_the_root() {
        let (dir, host) = tree();
        let root = host.root().to_path_buf();
        symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
        symlink("/usr/lib/os-release", root.join("etc/abs")).unwrap();
        // Climbing past the root stops at the root, as `..` at `/` does.
        symlink("../../../../usr/lib/os-release", root.join("etc/climb")).unwrap();
        // An absolute link whose target exists only outside the root stays inside.
        let outside = dir.path().join("outside");
        symlink(&outside, root.join("etc/escape")).unwrap();
        for rel in ["/etc/os-release", "etc/abs", "/etc/climb"] {
            assert_eq!(host.read_to_string(rel).unwrap(), "ID=host\n", "{rel}");
        }
        let e = host.read_to_string("/etc/escape").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(
            e.to_string().starts_with(&root.display().to_string()),
            "{e}"
        );
        assert_eq!(
            host.read_link("/etc/abs").unwrap(),
            PathBuf::from("/usr/lib/os-release")
        );
        assert!(host.symlink_metadata("/etc/abs").unwrap().is_symlink());
        assert!(host.metadata("/etc/abs").unwrap().is_file());
    }

    #[test]
    fn a_link_loop_and_dot_dot_are_errors_naming_the_file() {
        let (_dir, host) = tree();
        let root = host.root().to_path_buf();
        symlink("b", root.join("etc/a")).unwrap();
        symlink("a", root.join("etc/b")).unwrap();
        let e = host.read_to_string("/etc/a").unwrap_err();
        assert!(matches!(e, HostError::Loop { .. }), "{e}");
        let e = host.read_to_string("/etc/../etc/passwd").unwrap_err();
        assert!(matches!(e, HostError::Outside { .. }), "{e}");
        assert!(e.to_string().contains("/etc/../etc/passwd"), "{e}");
    }

    #[test]
    fn reads_are_bounded_and_errors_say_which_file_and_why() {
        let (_dir, host) = tree();
        let root = host.root().to_path_buf();
        std::fs::write(root.join("etc/big"), vec![b'x'; 100]).unwrap();
        assert_eq!(host.read_bytes("/etc/big", 100).unwrap().len(), 100);
        let e = host.read_bytes("/etc/big", 99).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: larger than 99 bytes", root.join("etc/big").display())
        );
        std::fs::write(root.join("etc/bin"), [0xff, 0xfe]).unwrap();
        let e = host.read_to_string("/etc/bin").unwrap_err();
        assert!(matches!(e, HostError::NotText { .. }), "{e}");
        let e = host.read_to_string("/etc/missing").unwrap_err();
        assert!(e.is_not_found());
        assert!(
            e.to_string()
                .starts_with(&format!("{}: ", root.join("etc/missing").display())),
            "{e}"
        );
    }

    #[test]
    fn directory_listings_are_sorted_and_bounded() {
        let (_dir, host) = tree();
        let root = host.root().to_path_buf();
        for n in ["c", "a", "b"] {
            std::fs::write(root.join("etc").join(n), "").unwrap();
        }
        let all = host.read_dir("/etc").unwrap();
        assert_eq!(all.names, ["a", "b", "c"]);
        assert!(!all.truncated);
        let two = host.read_dir_bounded("/etc", 2).unwrap();
        assert_eq!(two.names.len(), 2);
        assert!(two.truncated);
    }

    #[test]
    fn the_default_root_is_slash_and_reads_this_host() {
        let host = HostRoot::default();
        assert_eq!(host.root(), Path::new("/"));
        // /proc/1 is this machine's pid 1 under `/`.
        let pid1 = host.read_to_string("/proc/1/stat").unwrap();
        assert!(pid1.starts_with("1 ("), "{pid1}");
    }

    #[test]
    fn the_registry_is_in_the_schemas_order_with_one_collector_per_kind() {
        let kinds: Vec<EventKind> = REGISTRY.iter().map(|c| c.kind).collect();
        let mut sorted = kinds.clone();
        sorted.sort_by_key(|k| k.index());
        sorted.dedup();
        assert_eq!(kinds, sorted);
        for c in REGISTRY {
            assert_eq!(collector(c.kind).map(|c| c.kind), Some(c.kind));
        }
        assert!(collector(EventKind::Login).is_none());
    }

    fn users(n: usize) -> Payload {
        // Synthetic accounts, for the sizes only.
        Payload::LocalUsers(
            (0..n)
                .map(|i| crate::events::LocalUser {
                    group_ids: format!("{i};27"),
                    group_names: format!("user{i};sudo"),
                    user_id: i.to_string(),
                    user_name: format!("user{i}"),
                    extra_details: [("Shell".to_string(), "/bin/bash".to_string())].into(),
                })
                .collect(),
        )
    }

    #[test]
    fn a_large_snapshot_is_split_into_valid_events_that_each_fit() {
        let big = users(500);
        let limit = 8192 - 200;
        let evs = events(std::slice::from_ref(&big), 1_700_000_000_000, limit);
        assert!(evs.len() > 1, "{}", evs.len());
        let mut names = Vec::new();
        for (i, ev) in evs.iter().enumerate() {
            let json = serde_json::to_string(ev).unwrap();
            assert!(json.len() <= limit, "{} > {limit}", json.len());
            // Nearly full but the last: the next item would not have fitted.
            if i + 1 < evs.len() {
                assert!(json.len() > limit - 200, "{}", json.len());
            }
            let msg = format!(
                r#"{{"AgentVersion":"1","AgentId":"00000000-0000-4000-8000-000000000000","MessageSchemaVersion":"1.0","Events":[{json}]}}"#
            );
            assert_eq!(crate::validate::validate_message(&msg), Ok(()), "{json}");
            let Payload::LocalUsers(v) = &ev.payload else {
                panic!("{:?}", ev.payload.kind())
            };
            names.extend(v.iter().map(|u| u.user_name.clone()));
        }
        let want: Vec<String> = (0..500).map(|i| format!("user{i}")).collect();
        assert_eq!(names, want);
        // A small one stays one event; an empty one is one IsEmpty event; no payload, none.
        assert_eq!(events(&[users(3)], 0, limit).len(), 1);
        let empty = events(&[users(0)], 0, limit);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].is_empty());
        assert_eq!(events(&[], 0, limit).len(), 0);
        // An item larger than the limit alone gets an event of its own.
        assert_eq!(events(&[users(3)], 0, 10).len(), 3);
    }

    #[test]
    fn digests_tell_identical_snapshots_from_changed_ones() {
        assert_eq!(digest(&[users(3)]), digest(&[users(3)]));
        assert_ne!(digest(&[users(3)]), digest(&[users(4)]));
        assert_ne!(digest(&[users(3)]), digest(&[]));
        // Stable across builds: FNV-1a of the JSON.
        assert_eq!(digest(&[]), 0xcbf2_9ce4_8422_2325);
        let snap = take(
            &Collector {
                kind: EventKind::LocalUsers,
                collect: |_, _| vec![users(2)],
            },
            &HostRoot::default(),
            &CollectOptions::default(),
        );
        assert_eq!(snap.digest, digest(&[users(2)]));
        assert_eq!(snap.kind, EventKind::LocalUsers);
    }
}
