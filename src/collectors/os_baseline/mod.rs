//! OSBaseline: hardening checks from the CIS Debian Linux 12 Benchmark decided read-only
//! under the host root — files are read and stat'ed, nothing of the host is executed or
//! written.
//!
//! Contract: [`run`] decides every check of [`CHECKS`] against a host root and gives one
//! [`CheckResult`] per check, in table order; [`collect`] (the collector of the registry)
//! makes the OSBaseline payload of the failed and errored ones (and of the passed ones when
//! [`CollectOptions::include_passed_checks`]): `Error` says why for `Err` and is empty
//! otherwise, a failure's finding is in `ExtraDetails.Finding`. A file that is missing or unreadable gives the checks
//! that need it [`Outcome::Err`] with the reason, never a failed snapshot. Work is bounded:
//! files are read up to [`super::MAX_FILE_BYTES`], the world-writable walk stops at [`WALK_LIMITS`]
//! and says so, the process scan at [`MAX_PIDS`] entries.
//!
//! The ids: `CceId` is `CIS-debian-12-<n>`, `<n>` the recommendation's number in the **CIS
//! Debian Linux 12 Benchmark v1.1.0** (sshd in 5.1, file permissions in 7.1, accounts in 7.2,
//! network parameters in 3.3, …). One check is the module's own and not CIS's:
//! `azureiotsecurity-audit-rules` (the module's audit rules are in the persistent rules).
//!
//! `/etc/shadow` is read only to count the accounts with an empty password field; its text
//! is dropped at once and only the count is reported.

pub mod parse;
pub mod sshd;

use std::collections::BTreeSet;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use parse::{Account, Group};
use sshd::SshdConfig;

use super::{CollectOptions, HostError, HostRoot};
use crate::events::os_baseline::{BaselineCheck, BaselineResult, BaselineSeverity};
use crate::events::{Details, Payload};

/// The prefix of every CIS id.
pub const CIS: &str = "CIS-debian-12-";
/// The most `/proc` entries looked at for a running auditd.
pub const MAX_PIDS: usize = 100_000;

/// Bounds of the world-writable walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Directories deeper than this below a walked root are not entered.
    pub max_depth: usize,
    /// The walk stops after this many entries.
    pub max_entries: usize,
}

/// The world-writable walk's bounds: enough for a Debian system's /usr (~130 000 entries on
/// a full development VM), small enough to take well under a second.
pub const WALK_LIMITS: WalkLimits = WalkLimits {
    max_depth: 24,
    max_entries: 200_000,
};

/// The system directories the world-writable walk looks in (home directories, /tmp, /run,
/// /proc, /sys and /dev are not system files; /tmp and /var/tmp are sticky by design).
pub const WALK_ROOTS: &[&str] = &[
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/opt",
    "/var", "/srv",
];

/// How bad a failed check is (the schema's `Severity`; `Informational` is not used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Important,
    Warning,
}

impl Severity {
    /// The schema's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "Critical",
            Severity::Important => "Important",
            Severity::Warning => "Warning",
        }
    }
}

/// A check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Failed, with what was found (e.g. `PermitRootLogin yes`).
    Fail(String),
    /// Could not be decided, with why (e.g. the file is unreadable).
    Err(String),
}

impl Outcome {
    /// The schema's `Result`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Pass => "Pass",
            Outcome::Fail(_) => "Fail",
            Outcome::Err(_) => "Err",
        }
    }
}

/// One check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// `CIS-debian-12-<n>` (or the module's own id).
    pub cce_id: String,
    pub description: &'static str,
    pub severity: Severity,
    pub outcome: Outcome,
}

/// One check: its id (without [`CIS`] for the CIS ones), text, severity and decision.
pub struct Check {
    pub id: &'static str,
    pub description: &'static str,
    pub severity: Severity,
    run: fn(&Ctx) -> Outcome,
}

impl Check {
    /// The `CceId`.
    pub fn cce_id(&self) -> String {
        if self.id.starts_with("azureiotsecurity") {
            self.id.to_string()
        } else {
            format!("{CIS}{}", self.id)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading the host (every read goes through here).

/// Why a host file could not be read, in words for `Error`: the host's path (not the
/// container's, which says nothing to the reader of the event).
fn why(rel: &str, e: &HostError) -> String {
    match e {
        HostError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => format!("{rel} is missing"),
            std::io::ErrorKind::PermissionDenied => {
                format!("{rel} is unreadable: permission denied")
            }
            _ => format!("{rel} is unreadable: {source}"),
        },
        HostError::TooLarge { limit, .. } => format!("{rel} is larger than {limit} bytes"),
        HostError::NotText { .. } => format!("{rel} is not UTF-8 text"),
        other => format!("{rel}: {other}"),
    }
}

/// The host as the checks read it, errors in words for `Error`.
pub struct Host<'a> {
    host: &'a HostRoot,
}

impl<'a> Host<'a> {
    pub fn new(host: &'a HostRoot) -> Host<'a> {
        Host { host }
    }

    /// A text file (at most [`super::MAX_FILE_BYTES`]).
    pub fn read(&self, rel: &str) -> Result<String, String> {
        self.host.read_to_string(rel).map_err(|e| why(rel, &e))
    }

    /// The file's metadata, links followed inside the host root.
    pub fn meta(&self, rel: &str) -> Result<Metadata, String> {
        self.host.metadata(rel).map_err(|e| why(rel, &e))
    }

    /// The path's own metadata (a link is not followed).
    pub fn lmeta(&self, rel: &str) -> Result<Metadata, String> {
        self.host.symlink_metadata(rel).map_err(|e| why(rel, &e))
    }

    /// The names in a directory, sorted, and whether the listing was cut at its bound.
    pub fn list(&self, rel: &str) -> Result<(Vec<String>, bool), String> {
        let l = self.host.read_dir(rel).map_err(|e| why(rel, &e))?;
        let names = l
            .names
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        Ok((names, l.truncated))
    }

    fn link(&self, rel: &str) -> Option<PathBuf> {
        self.host.read_link(rel).ok()
    }
}

// ---------------------------------------------------------------------------------------
// What several checks share, read once per run.

/// The reads several checks share.
pub struct Ctx<'a> {
    host: Host<'a>,
    sshd: Result<SshdConfig, String>,
    passwd: Result<Vec<Account>, String>,
    group: Result<Vec<Group>, String>,
    mounts: Result<Vec<parse::Mount>, String>,
}

const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";

impl<'a> Ctx<'a> {
    pub fn load(root: &'a HostRoot) -> Ctx<'a> {
        let host = Host::new(root);
        let sshd = read_sshd(&host);
        let passwd = host.read("/etc/passwd").map(|t| parse::passwd(&t));
        let group = host.read("/etc/group").map(|t| parse::group(&t));
        // The host's pid 1 sees the host's mounts; /proc/self would be the module's.
        let mounts = host.read("/proc/1/mounts").map(|t| parse::mounts(&t));
        Ctx {
            host,
            sshd,
            passwd,
            group,
            mounts,
        }
    }
}

/// sshd_config with its `Include`s: relative patterns are under /etc/ssh (as sshd has it),
/// `*`/`?` are expanded in the file-name part, matches are read in sorted order (glob(3)),
/// a pattern matching nothing is no error.
fn read_sshd(host: &Host) -> Result<SshdConfig, String> {
    let text = host.read(SSHD_CONFIG)?;
    SshdConfig::parse(SSHD_CONFIG, &text, |pattern| {
        let abs = if pattern.starts_with('/') {
            pattern.to_string()
        } else {
            format!("/etc/ssh/{pattern}")
        };
        let (dir, name) = abs.rsplit_once('/').unwrap_or(("", abs.as_str()));
        let dir = if dir.is_empty() { "/" } else { dir };
        if !name.contains(['*', '?']) {
            return match host.read(&abs) {
                Ok(t) => Ok(vec![(abs.clone(), t)]),
                Err(_) if host.meta(&abs).is_err() => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let names = match host.list(dir) {
            Ok((n, _)) => n,
            Err(_) if host.meta(dir).is_err() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for n in names.iter().filter(|n| sshd::glob_match(name, n)) {
            let p = format!("{}/{n}", dir.trim_end_matches('/'));
            files.push((p.clone(), host.read(&p)?));
        }
        Ok(files)
    })
    .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// Running the checks.

/// Every check decided against the host under `root`, in [`CHECKS`] order.
pub fn run(root: &HostRoot) -> Vec<CheckResult> {
    let ctx = Ctx::load(root);
    CHECKS
        .iter()
        .map(|c| CheckResult {
            cce_id: c.cce_id(),
            description: c.description,
            severity: c.severity,
            outcome: (c.run)(&ctx),
        })
        .collect()
}

/// The results to send: failed and errored checks, passed ones too when `include_passed`.
pub fn results(root: &HostRoot, include_passed: bool) -> Vec<CheckResult> {
    run(root)
        .into_iter()
        .filter(|r| include_passed || r.outcome != Outcome::Pass)
        .collect()
}

/// One result as the schema's item.
pub fn item(r: &CheckResult) -> BaselineCheck {
    let (result, error, finding) = match &r.outcome {
        Outcome::Pass => (BaselineResult::Pass, String::new(), None),
        Outcome::Fail(f) => (BaselineResult::Fail, String::new(), Some(f.clone())),
        Outcome::Err(e) => (BaselineResult::Err, e.clone(), None),
    };
    let mut extra_details = Details::new();
    if let Some(f) = finding {
        extra_details.insert("Finding".to_string(), f);
    }
    BaselineCheck {
        description: r.description.to_string(),
        cce_id: r.cce_id.clone(),
        result,
        error,
        severity: match r.severity {
            Severity::Critical => BaselineSeverity::Critical,
            Severity::Important => BaselineSeverity::Important,
            Severity::Warning => BaselineSeverity::Warning,
        },
        extra_details,
    }
}

/// The collector: one OSBaseline payload with an item per check to send (none when every
/// check passed and passed ones are not asked for).
pub fn collect(host: &HostRoot, opts: &CollectOptions) -> Vec<Payload> {
    let items: Vec<BaselineCheck> = results(host, opts.include_passed_checks)
        .iter()
        .map(item)
        .collect();
    if items.is_empty() {
        Vec::new()
    } else {
        vec![Payload::OSBaseline(items)]
    }
}

/// Fail with `finding` when it is `Some`.
fn fail_if(finding: Option<String>) -> Outcome {
    finding.map_or(Outcome::Pass, Outcome::Fail)
}

// --- sshd ------------------------------------------------------------------------------

/// A check on the global sshd settings; `rule` gives the finding when it fails.
fn ssh(ctx: &Ctx, rule: impl Fn(&SshdConfig) -> Option<String>) -> Outcome {
    match &ctx.sshd {
        Ok(c) => fail_if(rule(c)),
        Err(e) => Outcome::Err(e.clone()),
    }
}

/// The keyword's value or sshd's default (OpenSSH 9.2, Debian 12), with whether it was set.
fn val<'c>(c: &'c SshdConfig, key: &str, default: &'static str) -> (&'c str, bool) {
    match c.get(key) {
        Some(v) => (v, true),
        None => (default, false),
    }
}

fn shown(key: &str, (v, set): (&str, bool)) -> String {
    if set {
        format!("{key} {v}")
    } else {
        format!("{key} {v} (sshd's default, not set)")
    }
}

/// Fails unless the keyword's value is one of `good` (case-insensitive).
fn ssh_one_of(ctx: &Ctx, key: &str, default: &'static str, good: &[&str]) -> Outcome {
    ssh(ctx, |c| {
        let v = val(c, key, default);
        (!good.iter().any(|g| g.eq_ignore_ascii_case(v.0))).then(|| shown(key, v))
    })
}

/// Fails unless the keyword's number is within `lo..=hi` (`time`: an sshd time value).
fn ssh_range(ctx: &Ctx, key: &str, default: &'static str, lo: u64, hi: u64, time: bool) -> Outcome {
    ssh(ctx, |c| {
        let v = val(c, key, default);
        let n = if time {
            sshd::seconds(v.0)
        } else {
            v.0.trim().parse().ok()
        };
        match n {
            Some(n) if (lo..=hi).contains(&n) => None,
            _ => Some(shown(key, v)),
        }
    })
}

/// OpenSSH 9.2's default algorithm lists (`sshd -T` on Debian 12 with nothing set).
const DEFAULT_CIPHERS: &str = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com";
const DEFAULT_MACS: &str = "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1";
const DEFAULT_KEX: &str = "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256";

pub const WEAK_CIPHERS: &[&str] = &[
    "3des-cbc",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
    "rijndael-cbc@lysator.liu.se",
    "blowfish-cbc",
    "cast128-cbc",
    "arcfour",
    "arcfour128",
    "arcfour256",
];
pub const WEAK_MACS: &[&str] = &[
    "hmac-md5",
    "hmac-md5-96",
    "hmac-ripemd160",
    "hmac-sha1-96",
    "umac-64@openssh.com",
    "hmac-md5-etm@openssh.com",
    "hmac-md5-96-etm@openssh.com",
    "hmac-ripemd160-etm@openssh.com",
    "hmac-sha1-96-etm@openssh.com",
    "umac-64-etm@openssh.com",
];
pub const WEAK_KEX: &[&str] = &[
    "diffie-hellman-group1-sha1",
    "diffie-hellman-group14-sha1",
    "diffie-hellman-group-exchange-sha1",
];

/// The algorithm list sshd ends up with: a value starting with `+` appends to the default,
/// `-` removes the matching ones (patterns may have `*`/`?`), `^` puts its own first, any
/// other value replaces the default.
pub fn effective_list(value: Option<&str>, default: &str) -> Vec<String> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    };
    let def = split(default);
    match value {
        None => def,
        Some(v) => {
            if let Some(add) = v.strip_prefix('+') {
                let mut l = def;
                l.extend(split(add));
                l
            } else if let Some(rm) = v.strip_prefix('-') {
                let rm = split(rm);
                def.into_iter()
                    .filter(|a| !rm.iter().any(|p| sshd::glob_match(p, a)))
                    .collect()
            } else if let Some(first) = v.strip_prefix('^') {
                let mut l = split(first);
                let rest: Vec<String> = def.into_iter().filter(|a| !l.contains(a)).collect();
                l.extend(rest);
                l
            } else {
                split(v)
            }
        }
    }
}

fn ssh_weak(ctx: &Ctx, key: &str, default: &str, weak: &[&str]) -> Outcome {
    ssh(ctx, |c| {
        let value = c.get(key);
        let bad: Vec<String> = effective_list(value, default)
            .into_iter()
            .filter(|a| weak.iter().any(|w| w.eq_ignore_ascii_case(a)))
            .collect();
        let mut finding = Vec::new();
        if !bad.is_empty() {
            let from = if value.is_some() {
                ""
            } else {
                " (sshd's default list)"
            };
            finding.push(format!("{key} allows {}{from}", bad.join(",")));
        }
        // Protocol is read by no OpenSSH since 7.4, but a config asking for version 1 was
        // written for a server that would have obeyed it.
        if key.eq_ignore_ascii_case("Ciphers")
            && let Some(p) = c.get("Protocol")
            && p.split(',').any(|v| v.trim() == "1")
        {
            finding.push(format!("Protocol {p}"));
        }
        (!finding.is_empty()).then(|| finding.join("; "))
    })
}

fn ssh_forwarding(ctx: &Ctx) -> Outcome {
    ssh(ctx, |c| {
        let d = val(c, "DisableForwarding", "no");
        if d.0.eq_ignore_ascii_case("yes") {
            return None;
        }
        let x = val(c, "X11Forwarding", "no");
        Some(format!(
            "{}, {}",
            shown("DisableForwarding", d),
            shown("X11Forwarding", x)
        ))
    })
}

fn ssh_client_alive(ctx: &Ctx) -> Outcome {
    ssh(ctx, |c| {
        let i = val(c, "ClientAliveInterval", "0");
        let n = val(c, "ClientAliveCountMax", "3");
        let ok = sshd::seconds(i.0).is_some_and(|s| s > 0)
            && n.0.trim().parse::<u64>().is_ok_and(|v| v > 0);
        (!ok).then(|| {
            format!(
                "{}, {}",
                shown("ClientAliveInterval", i),
                shown("ClientAliveCountMax", n)
            )
        })
    })
}

fn ssh_banner(ctx: &Ctx) -> Outcome {
    ssh(ctx, |c| {
        let b = val(c, "Banner", "none");
        b.0.eq_ignore_ascii_case("none").then(|| shown("Banner", b))
    })
}

// --- permissions -----------------------------------------------------------------------

/// Who may own a file: root only, or a root/named group.
#[derive(Clone, Copy)]
enum Groups {
    Root,
    RootOr(&'static [&'static str]),
}

/// The gids of the named groups in the host's /etc/group.
fn gids(ctx: &Ctx, names: &[&str]) -> Vec<u32> {
    match &ctx.group {
        Ok(g) => g
            .iter()
            .filter(|g| names.contains(&g.name.as_str()))
            .map(|g| g.gid)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// What is wrong with a file's mode and owner, if anything: no permission bit beyond `max`,
/// owner uid 0, group gid 0 or one of `groups`.
fn perm_finding(ctx: &Ctx, rel: &str, m: &Metadata, max: u32, groups: Groups) -> Option<String> {
    let mode = m.mode() & 0o7777;
    let mut bad = Vec::new();
    if mode & !max != 0 {
        bad.push(format!("mode {mode:04o} (at most {max:04o})"));
    }
    if m.uid() != 0 {
        bad.push(format!("owner uid {} (not root)", m.uid()));
    }
    let group_ok = m.gid() == 0
        || match groups {
            Groups::Root => false,
            Groups::RootOr(names) => gids(ctx, names).contains(&m.gid()),
        };
    if !group_ok {
        bad.push(format!("group gid {}", m.gid()));
    }
    (!bad.is_empty()).then(|| format!("{rel}: {}", bad.join(", ")))
}

fn perm(ctx: &Ctx, rel: &str, max: u32, groups: Groups) -> Outcome {
    match ctx.host.meta(rel) {
        Ok(m) => fail_if(perm_finding(ctx, rel, &m, max, groups)),
        Err(e) => Outcome::Err(e),
    }
}

/// The SSH host keys: private ones (`ssh_host_*_key`) at most 0600, or 0640 with the group
/// `ssh_keys`/`_ssh`; public ones at most 0644; all owned by root.
fn host_keys(ctx: &Ctx, public: bool) -> Outcome {
    let names = match ctx.host.list("/etc/ssh") {
        Ok((n, _)) => n,
        Err(e) => return Outcome::Err(e),
    };
    let mut findings = Vec::new();
    for n in names.iter().filter(|n| {
        let pubkey = n.ends_with("_key.pub");
        n.starts_with("ssh_host_") && (n.ends_with("_key") || pubkey) && pubkey == public
    }) {
        let rel = format!("/etc/ssh/{n}");
        let m = match ctx.host.meta(&rel) {
            Ok(m) => m,
            Err(e) => return Outcome::Err(e),
        };
        let f = if public {
            perm_finding(ctx, &rel, &m, 0o644, Groups::Root)
        } else {
            let keys = gids(ctx, &["ssh_keys", "_ssh"]);
            let max = if keys.contains(&m.gid()) {
                0o640
            } else {
                0o600
            };
            perm_finding(ctx, &rel, &m, max, Groups::RootOr(&["ssh_keys", "_ssh"]))
        };
        findings.extend(f);
    }
    fail_if((!findings.is_empty()).then(|| findings.join("; ")))
}

// --- accounts --------------------------------------------------------------------------

fn accounts(ctx: &Ctx, rule: impl Fn(&[Account]) -> Option<String>) -> Outcome {
    match &ctx.passwd {
        Ok(p) => fail_if(rule(p)),
        Err(e) => Outcome::Err(e.clone()),
    }
}

fn groups(ctx: &Ctx, rule: impl Fn(&[Group]) -> Option<String>) -> Outcome {
    match &ctx.group {
        Ok(g) => fail_if(rule(g)),
        Err(e) => Outcome::Err(e.clone()),
    }
}

fn listed<T: std::fmt::Display>(what: &str, items: &[T]) -> Option<String> {
    (!items.is_empty()).then(|| {
        let s: Vec<String> = items.iter().map(T::to_string).collect();
        format!("{what}: {}", s.join(", "))
    })
}

fn empty_passwords(ctx: &Ctx) -> Outcome {
    match ctx.host.read("/etc/shadow") {
        // Only the count leaves: the text is dropped here.
        Ok(text) => {
            let n = parse::empty_shadow_passwords(&text).len();
            fail_if((n > 0).then(|| format!("{n} account(s) with an empty password field")))
        }
        Err(e) => Outcome::Err(e),
    }
}

fn primary_groups_exist(ctx: &Ctx) -> Outcome {
    match (&ctx.passwd, &ctx.group) {
        (Ok(p), Ok(g)) => {
            let known: BTreeSet<u32> = g.iter().map(|g| g.gid).collect();
            let missing: Vec<String> = p
                .iter()
                .filter(|a| !known.contains(&a.gid))
                .map(|a| format!("{} (gid {})", a.name, a.gid))
                .collect();
            fail_if(listed("primary group not in /etc/group", &missing))
        }
        (Err(e), _) | (_, Err(e)) => Outcome::Err(e.clone()),
    }
}

fn shadow_group_empty(ctx: &Ctx) -> Outcome {
    match (&ctx.passwd, &ctx.group) {
        (Ok(p), Ok(g)) => {
            let Some(shadow) = g.iter().find(|g| g.name == "shadow") else {
                return Outcome::Pass;
            };
            let mut members = shadow.members.clone();
            members.extend(
                p.iter()
                    .filter(|a| a.gid == shadow.gid)
                    .map(|a| a.name.clone()),
            );
            fail_if(listed("members of the shadow group", &members))
        }
        (Err(e), _) | (_, Err(e)) => Outcome::Err(e.clone()),
    }
}

// --- sysctl ----------------------------------------------------------------------------

/// Checks sysctl values under /proc/sys: every `(name, allowed values)` must hold. Keys under
/// `net.ipv6` are skipped when the host has no IPv6 (`/proc/sys/net/ipv6` absent).
///
/// Quirk: `/proc/sys/net` shows the network namespace of the process reading it, not of the
/// procfs mount: in a container without the host's network the values would be the
/// container's. So the net checks are `Err` when this process's namespace
/// (`/proc/self/ns/net`) is seen to differ from the host's pid 1's.
fn sysctl(ctx: &Ctx, want: &[(&str, &[i64])]) -> Outcome {
    let net = want.iter().any(|(k, _)| k.starts_with("net."));
    if net
        && let (Some(mine), Some(host)) = (
            ctx.host.link("/proc/self/ns/net"),
            ctx.host.link("/proc/1/ns/net"),
        )
        && mine != host
    {
        return Outcome::Err(format!(
            "not in the host's network namespace ({} here, {} on the host): \
             /proc/sys/net would show this container's values",
            mine.display(),
            host.display()
        ));
    }
    if net && let Err(e) = ctx.host.meta("/proc/sys/net") {
        return Outcome::Err(e);
    }
    let ipv6 = ctx.host.meta("/proc/sys/net/ipv6").is_ok();
    let mut bad = Vec::new();
    for (key, allowed) in want {
        if key.starts_with("net.ipv6.") && !ipv6 {
            continue;
        }
        let rel = format!("/proc/sys/{}", key.replace('.', "/"));
        let text = match ctx.host.read(&rel) {
            Ok(t) => t,
            Err(e) => return Outcome::Err(e),
        };
        match parse::sysctl_int(&text) {
            Some(v) if allowed.contains(&v) => {}
            Some(v) => bad.push(format!("{key} = {v}")),
            None => return Outcome::Err(format!("{rel} is not a number: {:?}", text.trim())),
        }
    }
    fail_if((!bad.is_empty()).then(|| bad.join(", ")))
}

fn core_dumps(ctx: &Ctx) -> Outcome {
    let mut bad = Vec::new();
    match sysctl(ctx, &[("fs.suid_dumpable", &[0])]) {
        Outcome::Pass => {}
        Outcome::Fail(f) => bad.push(f),
        e @ Outcome::Err(_) => return e,
    }
    let mut texts = Vec::new();
    match ctx.host.read("/etc/security/limits.conf") {
        Ok(t) => texts.push(t),
        Err(e) => return Outcome::Err(e),
    }
    // limits.d is optional; pam_limits reads its *.conf files after limits.conf.
    if let Ok((names, _)) = ctx.host.list("/etc/security/limits.d") {
        for n in names.iter().filter(|n| n.ends_with(".conf")) {
            match ctx.host.read(&format!("/etc/security/limits.d/{n}")) {
                Ok(t) => texts.push(t),
                Err(e) => return Outcome::Err(e),
            }
        }
    }
    match parse::hard_core_limit(texts.iter().map(String::as_str)) {
        Some(v) if v == "0" => {}
        Some(v) => bad.push(format!("hard core limit for * is {v}")),
        None => bad.push("no hard core limit of 0 for * in limits.conf/limits.d".into()),
    }
    fail_if((!bad.is_empty()).then(|| bad.join(", ")))
}

// --- mounts ----------------------------------------------------------------------------

/// A check on the host's /tmp mount (the last one listed is the one in use); `opt` an option
/// it must have, `None` for "is a mount of its own".
fn tmp_mount(ctx: &Ctx, opt: Option<&str>) -> Outcome {
    let mounts = match &ctx.mounts {
        Ok(m) => m,
        Err(e) => return Outcome::Err(e.clone()),
    };
    match (mounts.iter().rev().find(|m| m.target == "/tmp"), opt) {
        (None, _) => Outcome::Fail("/tmp is not a separate mount".into()),
        (Some(_), None) => Outcome::Pass,
        (Some(m), Some(o)) => fail_if((!m.options.iter().any(|x| x == o)).then(|| {
            format!(
                "/tmp ({}) is mounted without {o}: {}",
                m.fstype,
                m.options.join(",")
            )
        })),
    }
}

// --- auditd ----------------------------------------------------------------------------

fn auditd_running(ctx: &Ctx) -> Outcome {
    let names = match ctx.host.list("/proc") {
        Ok((n, _)) => n,
        Err(e) => return Outcome::Err(e),
    };
    let pids = names
        .iter()
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    for (i, pid) in pids.enumerate() {
        if i >= MAX_PIDS {
            return Outcome::Err(format!("stopped after {MAX_PIDS} processes"));
        }
        // A process may end between the listing and the read: skip it.
        if let Ok(comm) = ctx.host.read(&format!("/proc/{pid}/comm"))
            && comm.trim_end_matches('\n') == "auditd"
        {
            return Outcome::Pass;
        }
    }
    Outcome::Fail("no auditd process".into())
}

/// The module's rules in the rules auditd loads at boot (`/etc/audit/rules.d/*.rules`, or
/// the `audit.rules` augenrules makes of them). The rules loaded now are only readable
/// through the audit netlink socket (`auditctl -l`), which the module neither runs nor
/// holds the capability (CAP_AUDIT_CONTROL) for: this check reads what is on disk.
fn module_rules(ctx: &Ctx) -> Outcome {
    let arch_rel = "/proc/sys/kernel/arch";
    let arch = match ctx.host.read(arch_rel) {
        Ok(a) => match crate::rules::Arch::from_uname(&a) {
            Some(arch) => arch,
            None => return Outcome::Err(format!("no rules for architecture {:?}", a.trim())),
        },
        Err(e) => return Outcome::Err(e),
    };
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    match ctx.host.list("/etc/audit/rules.d") {
        Ok((names, _)) => {
            for n in names.iter().filter(|n| n.ends_with(".rules")) {
                match ctx.host.read(&format!("/etc/audit/rules.d/{n}")) {
                    Ok(t) => texts.push(t),
                    Err(e) => errors.push(e),
                }
            }
        }
        Err(e) => errors.push(e),
    }
    match ctx.host.read("/etc/audit/audit.rules") {
        Ok(t) => texts.push(t),
        Err(e) => errors.push(e),
    }
    if texts.is_empty() {
        return Outcome::Err(errors.join("; "));
    }
    let norm = |l: &str| l.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
    let have: BTreeSet<String> = texts.iter().flat_map(|t| t.lines().map(norm)).collect();
    let missing = crate::rules::rules(arch)
        .iter()
        .filter(|r| !have.contains(&norm(&r.to_line())))
        .count();
    fail_if((missing > 0).then(|| {
        format!(
            "{missing} of the module's {} rules (azureiotsecurity rules) are not in \
             /etc/audit/rules.d or audit.rules",
            crate::rules::rules(arch).len()
        )
    }))
}

// --- world-writable --------------------------------------------------------------------

/// What the world-writable walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkReport {
    /// World-writable files, and world-writable directories without the sticky bit
    /// (host-absolute paths), in walk order.
    pub found: Vec<String>,
    pub entries: usize,
    /// The roots that exist.
    pub roots: usize,
    /// Set when a limit stopped the walk: which one.
    pub stopped: Option<String>,
}

/// Walks the system directories (not following symbolic links) within `limits`.
pub fn world_writable(host: &HostRoot, roots: &[&str], limits: WalkLimits) -> WalkReport {
    let host = Host::new(host);
    let mut r = WalkReport::default();
    let mut stack: Vec<(String, usize)> = Vec::new();
    for root in roots.iter().rev() {
        if let Ok(m) = host.lmeta(root)
            && m.is_dir()
        {
            r.roots += 1;
            stack.push((root.to_string(), 0));
        }
    }
    while let Some((dir, depth)) = stack.pop() {
        // Unreadable directories are passed over: the walk reports what it could read.
        let Ok((names, cut)) = host.list(&dir) else {
            continue;
        };
        if cut {
            r.stopped = Some(format!(
                "{dir} has more than {} entries",
                super::MAX_DIR_ENTRIES
            ));
        }
        let mut subdirs = Vec::new();
        for n in names {
            if r.entries >= limits.max_entries {
                r.stopped = Some(format!("stopped after {} entries", limits.max_entries));
                return r;
            }
            r.entries += 1;
            let p = format!("{dir}/{n}");
            let Ok(m) = host.lmeta(&p) else { continue };
            let ft = m.file_type();
            let mode = m.mode();
            if ft.is_symlink() {
                continue;
            }
            if ft.is_dir() {
                if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                    r.found.push(p.clone());
                }
                if depth + 1 > limits.max_depth {
                    r.stopped = Some(format!(
                        "directories deeper than {} not entered",
                        limits.max_depth
                    ));
                } else {
                    subdirs.push((p, depth + 1));
                }
            } else if ft.is_file() && mode & 0o002 != 0 {
                r.found.push(p);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    r
}

/// How many paths a finding names before it only counts.
const SHOW_PATHS: usize = 10;

fn world_writable_check(ctx: &Ctx) -> Outcome {
    let r = world_writable(ctx.host.host, WALK_ROOTS, WALK_LIMITS);
    if r.roots == 0 {
        return Outcome::Err(format!("none of {} exists", WALK_ROOTS.join(" ")));
    }
    let stopped = r
        .stopped
        .as_ref()
        .map(|s| format!(" (walk incomplete: {s})"))
        .unwrap_or_default();
    if r.found.is_empty() {
        return match r.stopped {
            None => Outcome::Pass,
            Some(s) => Outcome::Err(format!(
                "nothing found in {} entries, but the walk is incomplete: {s}",
                r.entries
            )),
        };
    }
    let shown: Vec<&str> = r
        .found
        .iter()
        .take(SHOW_PATHS)
        .map(String::as_str)
        .collect();
    let more = r.found.len().saturating_sub(SHOW_PATHS);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Outcome::Fail(format!(
        "world-writable: {}{more}{stopped}",
        shown.join(", ")
    ))
}

// ---------------------------------------------------------------------------------------
// The table.

macro_rules! check {
    ($id:expr, $sev:ident, $desc:expr, $run:expr) => {
        Check {
            id: $id,
            description: $desc,
            severity: Severity::$sev,
            run: $run,
        }
    };
}

/// Every check, in the benchmark's order within each group.
pub static CHECKS: &[Check] = &[
    // 1.1.2.1 /tmp
    check!("1.1.2.1.1", Warning, "/tmp is a separate partition", |c| {
        tmp_mount(c, None)
    }),
    check!("1.1.2.1.2", Warning, "nodev option set on /tmp", |c| {
        tmp_mount(c, Some("nodev"))
    }),
    check!("1.1.2.1.3", Warning, "nosuid option set on /tmp", |c| {
        tmp_mount(c, Some("nosuid"))
    }),
    check!("1.1.2.1.4", Warning, "noexec option set on /tmp", |c| {
        tmp_mount(c, Some("noexec"))
    }),
    // 1.5 process hardening
    check!(
        "1.5.1",
        Important,
        "Address space layout randomization is enabled (kernel.randomize_va_space = 2)",
        |c| sysctl(c, &[("kernel.randomize_va_space", &[2])])
    ),
    check!(
        "1.5.2",
        Warning,
        "ptrace_scope is restricted (kernel.yama.ptrace_scope 1, 2 or 3)",
        |c| sysctl(c, &[("kernel.yama.ptrace_scope", &[1, 2, 3])])
    ),
    check!(
        "1.5.3",
        Important,
        "Core dumps are restricted (fs.suid_dumpable = 0, hard core 0 for * in limits.conf/limits.d)",
        core_dumps
    ),
    // 2.4.1 cron
    check!(
        "2.4.1.2",
        Important,
        "Permissions on /etc/crontab are configured (root:root, at most 0600)",
        |c| perm(c, "/etc/crontab", 0o600, Groups::Root)
    ),
    check!(
        "2.4.1.3",
        Important,
        "Permissions on /etc/cron.hourly are configured (root:root, at most 0700)",
        |c| perm(c, "/etc/cron.hourly", 0o700, Groups::Root)
    ),
    check!(
        "2.4.1.4",
        Important,
        "Permissions on /etc/cron.daily are configured (root:root, at most 0700)",
        |c| perm(c, "/etc/cron.daily", 0o700, Groups::Root)
    ),
    check!(
        "2.4.1.5",
        Important,
        "Permissions on /etc/cron.weekly are configured (root:root, at most 0700)",
        |c| perm(c, "/etc/cron.weekly", 0o700, Groups::Root)
    ),
    check!(
        "2.4.1.6",
        Important,
        "Permissions on /etc/cron.monthly are configured (root:root, at most 0700)",
        |c| perm(c, "/etc/cron.monthly", 0o700, Groups::Root)
    ),
    check!(
        "2.4.1.7",
        Important,
        "Permissions on /etc/cron.d are configured (root:root, at most 0700)",
        |c| perm(c, "/etc/cron.d", 0o700, Groups::Root)
    ),
    // 3.3 network parameters
    check!(
        "3.3.1",
        Important,
        "IP forwarding is disabled (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding = 0)",
        |c| sysctl(
            c,
            &[
                ("net.ipv4.ip_forward", &[0]),
                ("net.ipv6.conf.all.forwarding", &[0])
            ]
        )
    ),
    check!(
        "3.3.2",
        Important,
        "Packet redirect sending is disabled (send_redirects = 0)",
        |c| sysctl(
            c,
            &[
                ("net.ipv4.conf.all.send_redirects", &[0]),
                ("net.ipv4.conf.default.send_redirects", &[0])
            ]
        )
    ),
    check!(
        "3.3.3",
        Warning,
        "Bogus ICMP responses are ignored (net.ipv4.icmp_ignore_bogus_error_responses = 1)",
        |c| sysctl(c, &[("net.ipv4.icmp_ignore_bogus_error_responses", &[1])])
    ),
    check!(
        "3.3.4",
        Warning,
        "Broadcast ICMP requests are ignored (net.ipv4.icmp_echo_ignore_broadcasts = 1)",
        |c| sysctl(c, &[("net.ipv4.icmp_echo_ignore_broadcasts", &[1])])
    ),
    check!(
        "3.3.5",
        Important,
        "ICMP redirects are not accepted (accept_redirects = 0, IPv4 and IPv6)",
        |c| sysctl(
            c,
            &[
                ("net.ipv4.conf.all.accept_redirects", &[0]),
                ("net.ipv4.conf.default.accept_redirects", &[0]),
                ("net.ipv6.conf.all.accept_redirects", &[0]),
                ("net.ipv6.conf.default.accept_redirects", &[0]),
            ]
        )
    ),
    check!(
        "3.3.6",
        Important,
        "Secure ICMP redirects are not accepted (secure_redirects = 0)",
        |c| sysctl(
            c,
            &[
                ("net.ipv4.conf.all.secure_redirects", &[0]),
                ("net.ipv4.conf.default.secure_redirects", &[0])
            ]
        )
    ),
    check!(
        "3.3.7",
        Important,
        "Reverse path filtering is enabled (rp_filter = 1)",
        |c| sysctl(
            c,
            &[
                ("net.ipv4.conf.all.rp_filter", &[1]),
                ("net.ipv4.conf.default.rp_filter", &[1])
            ]
        )
    ),
    check!(
        "3.3.8",
        Important,
        "Source routed packets are not accepted (accept_source_route = 0, IPv4 and IPv6)",
        |c| sysctl(
            c,
            &[
                ("net.ipv4.conf.all.accept_source_route", &[0]),
                ("net.ipv4.conf.default.accept_source_route", &[0]),
                ("net.ipv6.conf.all.accept_source_route", &[0]),
                ("net.ipv6.conf.default.accept_source_route", &[0]),
            ]
        )
    ),
    check!(
        "3.3.9",
        Warning,
        "Suspicious packets are logged (log_martians = 1)",
        |c| sysctl(
            c,
            &[
                ("net.ipv4.conf.all.log_martians", &[1]),
                ("net.ipv4.conf.default.log_martians", &[1])
            ]
        )
    ),
    check!(
        "3.3.10",
        Important,
        "TCP SYN cookies are enabled (net.ipv4.tcp_syncookies = 1)",
        |c| sysctl(c, &[("net.ipv4.tcp_syncookies", &[1])])
    ),
    check!(
        "3.3.11",
        Warning,
        "IPv6 router advertisements are not accepted (accept_ra = 0)",
        |c| sysctl(
            c,
            &[
                ("net.ipv6.conf.all.accept_ra", &[0]),
                ("net.ipv6.conf.default.accept_ra", &[0])
            ]
        )
    ),
    // 5.1 sshd
    check!(
        "5.1.1",
        Important,
        "Permissions on /etc/ssh/sshd_config are configured (root:root, at most 0600)",
        |c| perm(c, SSHD_CONFIG, 0o600, Groups::Root)
    ),
    check!(
        "5.1.2",
        Critical,
        "Permissions on SSH private host key files are configured (root, at most 0600)",
        |c| host_keys(c, false)
    ),
    check!(
        "5.1.3",
        Important,
        "Permissions on SSH public host key files are configured (root, at most 0644)",
        |c| host_keys(c, true)
    ),
    check!("5.1.5", Warning, "sshd Banner is configured", ssh_banner),
    check!(
        "5.1.6",
        Important,
        "sshd Ciphers are configured (no weak cipher, no protocol 1)",
        |c| ssh_weak(c, "Ciphers", DEFAULT_CIPHERS, WEAK_CIPHERS)
    ),
    check!(
        "5.1.7",
        Warning,
        "sshd ClientAliveInterval and ClientAliveCountMax are configured (both above 0)",
        ssh_client_alive
    ),
    check!(
        "5.1.8",
        Warning,
        "sshd DisableForwarding is enabled (no X11, agent or TCP forwarding)",
        ssh_forwarding
    ),
    check!(
        "5.1.9",
        Warning,
        "sshd GSSAPIAuthentication is disabled",
        |c| ssh_one_of(c, "GSSAPIAuthentication", "no", &["no"])
    ),
    check!(
        "5.1.10",
        Important,
        "sshd HostbasedAuthentication is disabled",
        |c| ssh_one_of(c, "HostbasedAuthentication", "no", &["no"])
    ),
    check!("5.1.11", Important, "sshd IgnoreRhosts is enabled", |c| {
        ssh_one_of(c, "IgnoreRhosts", "yes", &["yes"])
    }),
    check!(
        "5.1.12",
        Important,
        "sshd KexAlgorithms is configured (no weak key exchange)",
        |c| ssh_weak(c, "KexAlgorithms", DEFAULT_KEX, WEAK_KEX)
    ),
    check!(
        "5.1.13",
        Warning,
        "sshd LoginGraceTime is configured (1 to 60 seconds)",
        |c| ssh_range(c, "LoginGraceTime", "120", 1, 60, true)
    ),
    check!(
        "5.1.14",
        Warning,
        "sshd LogLevel is configured (INFO or VERBOSE)",
        |c| ssh_one_of(c, "LogLevel", "INFO", &["INFO", "VERBOSE"])
    ),
    check!(
        "5.1.15",
        Important,
        "sshd MACs are configured (no weak MAC)",
        |c| ssh_weak(c, "MACs", DEFAULT_MACS, WEAK_MACS)
    ),
    check!(
        "5.1.16",
        Important,
        "sshd MaxAuthTries is configured (4 or less)",
        |c| ssh_range(c, "MaxAuthTries", "6", 0, 4, false)
    ),
    check!(
        "5.1.17",
        Warning,
        "sshd MaxSessions is configured (10 or less)",
        |c| ssh_range(c, "MaxSessions", "10", 0, 10, false)
    ),
    check!(
        "5.1.19",
        Critical,
        "sshd PermitEmptyPasswords is disabled",
        |c| ssh_one_of(c, "PermitEmptyPasswords", "no", &["no"])
    ),
    check!(
        "5.1.20",
        Critical,
        "sshd PermitRootLogin is disabled",
        |c| ssh_one_of(c, "PermitRootLogin", "prohibit-password", &["no"])
    ),
    check!(
        "5.1.21",
        Important,
        "sshd PermitUserEnvironment is disabled",
        |c| ssh_one_of(c, "PermitUserEnvironment", "no", &["no"])
    ),
    check!("5.1.22", Important, "sshd UsePAM is enabled", |c| {
        ssh_one_of(c, "UsePAM", "no", &["yes"])
    }),
    // 5.4.2 root account
    check!("5.4.2.1", Critical, "root is the only UID 0 account", |c| {
        accounts(c, |p| {
            let others: Vec<&str> = p
                .iter()
                .filter(|a| a.uid == 0 && a.name != "root")
                .map(|a| a.name.as_str())
                .collect();
            listed("uid 0 accounts other than root", &others)
        })
    }),
    // 6.2 auditd
    check!(
        "6.2.1.2",
        Important,
        "auditd is running (an auditd process on the host)",
        auditd_running
    ),
    check!(
        "azureiotsecurity-audit-rules",
        Important,
        "The module's audit rules (azureiotsecurity rules) are in the persistent audit rules (/etc/audit/rules.d)",
        module_rules
    ),
    // 7.1 system file permissions
    check!(
        "7.1.1",
        Important,
        "Permissions on /etc/passwd are configured (root:root, at most 0644)",
        |c| perm(c, "/etc/passwd", 0o644, Groups::Root)
    ),
    check!(
        "7.1.2",
        Important,
        "Permissions on /etc/passwd- are configured (root:root, at most 0644)",
        |c| perm(c, "/etc/passwd-", 0o644, Groups::Root)
    ),
    check!(
        "7.1.3",
        Important,
        "Permissions on /etc/group are configured (root:root, at most 0644)",
        |c| perm(c, "/etc/group", 0o644, Groups::Root)
    ),
    check!(
        "7.1.4",
        Important,
        "Permissions on /etc/group- are configured (root:root, at most 0644)",
        |c| perm(c, "/etc/group-", 0o644, Groups::Root)
    ),
    check!(
        "7.1.5",
        Critical,
        "Permissions on /etc/shadow are configured (root:root or root:shadow, at most 0640)",
        |c| perm(c, "/etc/shadow", 0o640, Groups::RootOr(&["shadow"]))
    ),
    check!(
        "7.1.6",
        Critical,
        "Permissions on /etc/shadow- are configured (root:root or root:shadow, at most 0640)",
        |c| perm(c, "/etc/shadow-", 0o640, Groups::RootOr(&["shadow"]))
    ),
    check!(
        "7.1.7",
        Critical,
        "Permissions on /etc/gshadow are configured (root:root or root:shadow, at most 0640)",
        |c| perm(c, "/etc/gshadow", 0o640, Groups::RootOr(&["shadow"]))
    ),
    check!(
        "7.1.8",
        Critical,
        "Permissions on /etc/gshadow- are configured (root:root or root:shadow, at most 0640)",
        |c| perm(c, "/etc/gshadow-", 0o640, Groups::RootOr(&["shadow"]))
    ),
    check!(
        "7.1.11",
        Important,
        "No world-writable files, and the sticky bit on world-writable directories, in the system directories",
        world_writable_check
    ),
    // 7.2 local users and groups
    check!(
        "7.2.1",
        Important,
        "Accounts in /etc/passwd use shadowed passwords",
        |c| accounts(c, |p| {
            let not: Vec<&str> = p
                .iter()
                .filter(|a| a.password != "x")
                .map(|a| a.name.as_str())
                .collect();
            listed("password field not 'x'", &not)
        })
    ),
    check!(
        "7.2.2",
        Critical,
        "/etc/shadow password fields are not empty",
        empty_passwords
    ),
    check!(
        "7.2.3",
        Warning,
        "All groups in /etc/passwd exist in /etc/group",
        primary_groups_exist
    ),
    check!(
        "7.2.4",
        Important,
        "The shadow group is empty",
        shadow_group_empty
    ),
    check!("7.2.5", Important, "No duplicate UIDs exist", |c| accounts(
        c,
        |p| listed(
            "duplicate uids",
            &parse::duplicates(p.iter().map(|a| a.uid))
        )
    )),
    check!("7.2.6", Important, "No duplicate GIDs exist", |c| groups(
        c,
        |g| listed(
            "duplicate gids",
            &parse::duplicates(g.iter().map(|g| g.gid))
        )
    )),
    check!("7.2.7", Important, "No duplicate user names exist", |c| {
        accounts(c, |p| {
            listed(
                "duplicate user names",
                &parse::duplicates(p.iter().map(|a| a.name.clone())),
            )
        })
    }),
    check!("7.2.8", Important, "No duplicate group names exist", |c| {
        groups(c, |g| {
            listed(
                "duplicate group names",
                &parse::duplicates(g.iter().map(|g| g.name.clone())),
            )
        })
    }),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_over_30_distinct_ids() {
        let ids: BTreeSet<String> = CHECKS.iter().map(Check::cce_id).collect();
        assert_eq!(ids.len(), CHECKS.len());
        assert!(CHECKS.len() >= 30, "{}", CHECKS.len());
        assert!(ids.contains("CIS-debian-12-5.1.20"));
        assert!(
            ids.iter()
                .all(|i| i.starts_with(CIS) || i == "azureiotsecurity-audit-rules")
        );
    }

    #[test]
    fn the_readme_lists_every_check_as_the_table_has_it() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## OSBaseline checks")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap();
        let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
        let want: Vec<String> = CHECKS
            .iter()
            .map(|c| {
                format!(
                    "| `{}` | {} | {} |",
                    c.cce_id(),
                    c.severity.as_str(),
                    c.description
                )
            })
            .collect();
        assert_eq!(rows, want);
    }

    #[test]
    fn algorithm_lists_follow_the_modifiers() {
        assert_eq!(effective_list(None, "a,b"), ["a", "b"]);
        assert_eq!(effective_list(Some("+c"), "a,b"), ["a", "b", "c"]);
        assert_eq!(effective_list(Some("-a*"), "ab,b"), ["b"]);
        assert_eq!(effective_list(Some("^b"), "a,b"), ["b", "a"]);
        assert_eq!(effective_list(Some("x,y"), "a,b"), ["x", "y"]);
    }

    #[test]
    fn an_empty_root_errs_every_check_and_names_why() {
        let dir = std::env::temp_dir().join(format!("baseline-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let results = run(&HostRoot::new(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(results.len(), CHECKS.len());
        for r in &results {
            match &r.outcome {
                Outcome::Err(e) => assert!(!e.is_empty(), "{}", r.cce_id),
                o => panic!("{}: {o:?}", r.cce_id),
            }
        }
        assert_eq!(
            ids_of(&results, "CIS-debian-12-7.1.1"),
            ["/etc/passwd is missing"]
        );
    }

    fn ids_of(results: &[CheckResult], id: &str) -> Vec<String> {
        results
            .iter()
            .filter(|r| r.cce_id == id)
            .map(|r| match &r.outcome {
                Outcome::Err(e) | Outcome::Fail(e) => e.clone(),
                Outcome::Pass => String::new(),
            })
            .collect()
    }
}
