//! OSBaseline against the synthetic host tree `tests/data/host-baseline` (every check has a
//! known failure there; modes and owners, which git does not keep, are set on a temporary
//! copy) and against this machine (each expected result derived here from the files, `sshd
//! -T`, `find` and `pgrep`, not written down).
//!
//! Full tier: needs root (owners are set with chown) and OpenSSH's sshd (`sshd -T`); fails
//! without them.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use azureiotsecurity::collectors::os_baseline::{
    self, CHECKS, CheckResult, Outcome, WALK_ROOTS, WEAK_CIPHERS, WEAK_KEX, WEAK_MACS, WalkLimits,
};
use azureiotsecurity::collectors::{self, CollectOptions, HostRoot};
use azureiotsecurity::events::{EventKind, Payload, SecurityEvent};
use azureiotsecurity::validate::validate_message;
use serde_json::Value;

/// A temporary directory removed on drop.
struct Temp(PathBuf);

impl Temp {
    fn new(tag: &str) -> Temp {
        let p = std::env::temp_dir().join(format!(
            "os-baseline-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        Temp(p)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let t = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).expect("copy");
        }
    }
}

fn chmod(root: &Path, rel: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn chown(root: &Path, rel: &str, uid: u32, gid: u32) {
    let p = root.join(rel);
    std::os::unix::fs::chown(&p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} (the test needs root): {e}", p.display()));
}

/// The synthetic tree in a temporary copy, with the modes and owners that make the
/// permission checks fail.
fn synthetic() -> Temp {
    let t = Temp::new("synthetic");
    copy_dir(&support::root().join("tests/data/host-baseline"), &t.0);
    let r = &t.0;
    for f in ["etc/passwd", "etc/passwd-", "etc/group", "etc/group-"] {
        chmod(r, f, 0o664);
    }
    for f in ["etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-"] {
        chmod(r, f, 0o644);
    }
    // Owned by uid 1000 and by a group that is neither root nor shadow.
    chown(r, "etc/shadow-", 1000, 1000);
    chown(r, "etc/group-", 0, 1000);
    chmod(r, "etc/crontab", 0o644);
    for d in [
        "cron.hourly",
        "cron.daily",
        "cron.weekly",
        "cron.monthly",
        "cron.d",
    ] {
        chmod(r, &format!("etc/{d}"), 0o755);
    }
    chown(r, "etc/cron.d", 1000, 0);
    chmod(r, "etc/ssh/sshd_config", 0o644);
    chmod(r, "etc/ssh/ssh_host_ed25519_key", 0o640);
    chmod(r, "etc/ssh/ssh_host_ed25519_key.pub", 0o664);
    chmod(r, "usr/share/synthetic/ww-file", 0o666);
    chmod(r, "var/shared", 0o777);
    chmod(r, "var/spool-sticky", 0o1777);
    t
}

fn by_id(results: &[CheckResult]) -> BTreeMap<String, Outcome> {
    results
        .iter()
        .map(|r| (r.cce_id.clone(), r.outcome.clone()))
        .collect()
}

fn fail(s: &str) -> Outcome {
    Outcome::Fail(s.to_string())
}

#[test]
fn the_synthetic_host_fails_every_check_with_the_finding_it_was_made_for() {
    let t = synthetic();
    let results = os_baseline::run(&HostRoot::new(&t.0));
    assert_eq!(results.len(), CHECKS.len());
    let not_failed: Vec<(&str, &Outcome)> = results
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Fail(_)))
        .map(|r| (r.cce_id.as_str(), &r.outcome))
        .collect();
    assert_eq!(not_failed, Vec::<(&str, &Outcome)>::new());

    let got = by_id(&results);
    let expect = [
        ("1.1.2.1.1", "/tmp is not a separate mount"),
        ("1.5.1", "kernel.randomize_va_space = 1"),
        ("1.5.2", "kernel.yama.ptrace_scope = 0"),
        (
            "1.5.3",
            "fs.suid_dumpable = 2, hard core limit for * is unlimited",
        ),
        ("2.4.1.2", "/etc/crontab: mode 0644 (at most 0600)"),
        (
            "2.4.1.7",
            "/etc/cron.d: mode 0755 (at most 0700), owner uid 1000 (not root)",
        ),
        ("3.3.1", "net.ipv4.ip_forward = 1"),
        (
            "3.3.8",
            "net.ipv4.conf.all.accept_source_route = 1, net.ipv4.conf.default.accept_source_route = 1, net.ipv6.conf.all.accept_source_route = 1, net.ipv6.conf.default.accept_source_route = 1",
        ),
        ("3.3.10", "net.ipv4.tcp_syncookies = 0"),
        ("5.1.1", "/etc/ssh/sshd_config: mode 0644 (at most 0600)"),
        (
            "5.1.2",
            "/etc/ssh/ssh_host_ed25519_key: mode 0640 (at most 0600)",
        ),
        (
            "5.1.3",
            "/etc/ssh/ssh_host_ed25519_key.pub: mode 0664 (at most 0644)",
        ),
        ("5.1.6", "Ciphers allows aes128-cbc; Protocol 2,1"),
        (
            "5.1.8",
            "DisableForwarding no (sshd's default, not set), X11Forwarding yes",
        ),
        ("5.1.12", "KexAlgorithms allows diffie-hellman-group1-sha1"),
        ("5.1.13", "LoginGraceTime 2m"),
        (
            "5.1.15",
            "MACs allows umac-64-etm@openssh.com,umac-64@openssh.com,hmac-md5",
        ),
        // The main file's MaxAuthTries 6 is global; the Match block's 2 is not.
        ("5.1.16", "MaxAuthTries 6"),
        // 10-synthetic.conf is read at the Include, before the main file's PermitRootLogin no.
        ("5.1.20", "PermitRootLogin yes"),
        ("5.4.2.1", "uid 0 accounts other than root: toor"),
        ("6.2.1.2", "no auditd process"),
        (
            "7.1.4",
            "/etc/group-: mode 0664 (at most 0644), group gid 1000",
        ),
        ("7.1.5", "/etc/shadow: mode 0644 (at most 0640)"),
        (
            "7.1.6",
            "/etc/shadow-: mode 0644 (at most 0640), owner uid 1000 (not root), group gid 1000",
        ),
        (
            "7.1.11",
            "world-writable: /usr/share/synthetic/ww-file, /var/shared",
        ),
        ("7.2.1", "password field not 'x': bob"),
        ("7.2.2", "1 account(s) with an empty password field"),
        ("7.2.3", "primary group not in /etc/group: alice (gid 4242)"),
        ("7.2.4", "members of the shadow group: alice, keeper"),
        ("7.2.5", "duplicate uids: 0, 1000"),
        ("7.2.6", "duplicate gids: 1000"),
        ("7.2.7", "duplicate user names: alice"),
        ("7.2.8", "duplicate group names: users"),
    ];
    for (id, finding) in expect {
        let id = format!("{}{id}", os_baseline::CIS);
        assert_eq!(got.get(&id), Some(&fail(finding)), "{id}");
    }
    assert_eq!(
        got.get("azureiotsecurity-audit-rules"),
        Some(&fail(
            "16 of the module's 17 rules (azureiotsecurity rules) are not in /etc/audit/rules.d or audit.rules"
        ))
    );
    // Nothing of shadow but the count leaves: no password hash or field text in any result.
    for r in &results {
        if let Outcome::Fail(f) | Outcome::Err(f) = &r.outcome {
            assert!(!f.contains("19700"), "{}: {f}", r.cce_id);
        }
    }
}

#[test]
fn passed_checks_are_kept_only_when_asked_for() {
    let t = synthetic();
    std::fs::write(t.0.join("proc/sys/kernel/randomize_va_space"), "2\n").expect("write");
    std::fs::write(
        t.0.join("proc/1/mounts"),
        "tmpfs /tmp tmpfs rw,nosuid,nodev 0 0\n",
    )
    .expect("write");
    let aslr = format!("{}1.5.1", os_baseline::CIS);
    let tmp = format!("{}1.1.2.1.1", os_baseline::CIS);

    let sent = by_id(&os_baseline::results(&HostRoot::new(&t.0), false));
    assert_eq!(sent.get(&aslr), None);
    assert_eq!(sent.get(&tmp), None);
    // /tmp is now a mount with nodev and nosuid: 1.1.2.1.2 and .3 pass as well.
    assert_eq!(sent.len(), CHECKS.len() - 4);
    assert_eq!(
        sent.get(&format!("{}1.1.2.1.4", os_baseline::CIS)),
        Some(&fail(
            "/tmp (tmpfs) is mounted without noexec: rw,nosuid,nodev"
        ))
    );

    let all = by_id(&os_baseline::results(&HostRoot::new(&t.0), true));
    assert_eq!(all.len(), CHECKS.len());
    assert_eq!(all.get(&aslr), Some(&Outcome::Pass));
    assert_eq!(all.get(&tmp), Some(&Outcome::Pass));
}

#[test]
fn a_missing_or_unreadable_file_errs_only_the_checks_that_need_it() {
    let t = synthetic();
    let before = by_id(&os_baseline::run(&HostRoot::new(&t.0)));
    std::fs::remove_file(t.0.join("etc/shadow")).expect("rm shadow");
    // An included file that cannot be read as a file: the effective sshd configuration is
    // unknown, so every sshd setting check errs (the permission checks still decide).
    let inc = t.0.join("etc/ssh/sshd_config.d/10-synthetic.conf");
    std::fs::remove_file(&inc).expect("rm include");
    std::fs::create_dir(&inc).expect("mkdir include");
    let after = by_id(&os_baseline::run(&HostRoot::new(&t.0)));

    let mut changed: Vec<String> = after
        .iter()
        .filter(|(id, o)| before.get(*id) != Some(o))
        .map(|(id, o)| format!("{} {}", id.trim_start_matches(os_baseline::CIS), o.as_str()))
        .collect();
    changed.sort();
    let mut want = vec!["7.1.5 Err".to_string(), "7.2.2 Err".to_string()];
    for c in CHECKS {
        if c.id.starts_with("5.1.") && !["5.1.1", "5.1.2", "5.1.3"].contains(&c.id) {
            want.push(format!("{} Err", c.id));
        }
    }
    want.sort();
    assert_eq!(changed, want);
    assert_eq!(
        after.get(&format!("{}7.2.2", os_baseline::CIS)),
        Some(&Outcome::Err("/etc/shadow is missing".into()))
    );
    match after.get(&format!("{}5.1.20", os_baseline::CIS)) {
        Some(Outcome::Err(e)) => assert!(
            e.starts_with("Include /etc/ssh/sshd_config.d/*.conf in /etc/ssh/sshd_config: /etc/ssh/sshd_config.d/10-synthetic.conf is unreadable"),
            "{e}"
        ),
        o => panic!("{o:?}"),
    }
}

#[test]
fn the_world_writable_walk_says_when_it_hit_its_limits() {
    let t = synthetic();
    let host = HostRoot::new(&t.0);
    let full = os_baseline::world_writable(&host, WALK_ROOTS, os_baseline::WALK_LIMITS);
    assert_eq!(full.stopped, None);
    assert_eq!(full.found, ["/usr/share/synthetic/ww-file", "/var/shared"]);
    // usr, usr/share, usr/share/synthetic, ww-file; var/shared, .placeholder, spool-sticky, …
    assert!(full.entries >= 8, "{}", full.entries);

    let few = os_baseline::world_writable(
        &host,
        WALK_ROOTS,
        WalkLimits {
            max_depth: 24,
            max_entries: 3,
        },
    );
    assert_eq!(few.entries, 3);
    assert_eq!(few.stopped.as_deref(), Some("stopped after 3 entries"));

    let shallow = os_baseline::world_writable(
        &host,
        &["/usr"],
        WalkLimits {
            max_depth: 1,
            max_entries: 1000,
        },
    );
    // /usr/share/synthetic is at depth 2: not entered, and said so.
    assert_eq!(shallow.found, Vec::<String>::new());
    assert_eq!(
        shallow.stopped.as_deref(),
        Some("directories deeper than 1 not entered")
    );
}

// ---------------------------------------------------------------------------------------
// This machine.

fn sysctl_expect(keys: &[(&str, &[i64])]) -> &'static str {
    let mut ok = true;
    let v6 = Path::new("/proc/sys/net/ipv6").exists();
    for (k, allowed) in keys {
        if k.starts_with("net.ipv6.") && !v6 {
            continue;
        }
        match std::fs::read_to_string(format!("/proc/sys/{}", k.replace('.', "/"))) {
            Ok(t) => ok &= allowed.contains(&t.trim().parse::<i64>().expect("a number")),
            Err(_) => return "Err",
        }
    }
    if ok { "Pass" } else { "Fail" }
}

fn perm_expect(path: &str, max: u32, groups: &[u32]) -> &'static str {
    match std::fs::symlink_metadata(path) {
        Err(_) => "Err",
        Ok(m) => {
            let ok = m.mode() & 0o7777 & !max == 0
                && m.uid() == 0
                && (m.gid() == 0 || groups.contains(&m.gid()));
            if ok { "Pass" } else { "Fail" }
        }
    }
}

fn gid_of(name: &str) -> Vec<u32> {
    std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(':').next() == Some(name))
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect()
}

/// `sshd -T`: the effective configuration as sshd itself computes it.
fn sshd_t() -> BTreeMap<String, String> {
    // sshd -T refuses to run without its privilege separation directory; Debian's sshd
    // creates it at start, so a machine with sshd installed but not running lacks it.
    let made = !Path::new("/run/sshd").exists();
    if made {
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
    }
    let out = Command::new("/usr/sbin/sshd")
        .arg("-T")
        .output()
        .expect("OpenSSH's sshd is needed (apt-get install openssh-server)");
    if made {
        let _ = std::fs::remove_dir("/run/sshd");
    }
    assert!(
        out.status.success(),
        "sshd -T: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

fn pass_if(ok: bool) -> &'static str {
    if ok { "Pass" } else { "Fail" }
}

fn auditd_seen() -> bool {
    Command::new("pgrep")
        .args(["-x", "auditd"])
        .output()
        .expect("pgrep")
        .status
        .success()
}

#[test]
fn this_machine_gives_the_results_its_files_say() {
    let audit_before = auditd_seen();
    let results = os_baseline::run(&HostRoot::default());
    let audit_after = auditd_seen();
    let got: BTreeMap<String, &str> = results
        .iter()
        .map(|r| {
            (
                r.cce_id.trim_start_matches(os_baseline::CIS).to_string(),
                r.outcome.as_str(),
            )
        })
        .collect();
    let mut want: BTreeMap<String, &str> = BTreeMap::new();
    let mut put = |id: &str, v: &'static str| {
        want.insert(id.to_string(), v);
    };

    // /tmp from pid 1's mounts.
    let mounts = std::fs::read_to_string("/proc/1/mounts").expect("/proc/1/mounts");
    let tmp = mounts
        .lines()
        .rfind(|l| l.split(' ').nth(1) == Some("/tmp"))
        .map(|l| l.split(' ').nth(3).unwrap_or("").to_string());
    put("1.1.2.1.1", pass_if(tmp.is_some()));
    for (id, o) in [
        ("1.1.2.1.2", "nodev"),
        ("1.1.2.1.3", "nosuid"),
        ("1.1.2.1.4", "noexec"),
    ] {
        put(
            id,
            pass_if(tmp.as_ref().is_some_and(|t| t.split(',').any(|x| x == o))),
        );
    }

    put(
        "1.5.1",
        sysctl_expect(&[("kernel.randomize_va_space", &[2])]),
    );
    put(
        "1.5.2",
        sysctl_expect(&[("kernel.yama.ptrace_scope", &[1, 2, 3])]),
    );
    let mut limits = vec![std::fs::read_to_string("/etc/security/limits.conf").unwrap_or_default()];
    let mut names: Vec<PathBuf> = std::fs::read_dir("/etc/security/limits.d")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    for n in names
        .iter()
        .filter(|n| n.extension().is_some_and(|e| e == "conf"))
    {
        limits.push(std::fs::read_to_string(n).expect("limits.d file"));
    }
    let hard_core = limits
        .iter()
        .flat_map(|t| t.lines())
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
        })
        .filter(|f| {
            f.len() == 4 && f[0] == "*" && (f[1] == "hard" || f[1] == "-") && f[2] == "core"
        })
        .map(|f| f[3].to_string())
        .next_back();
    put(
        "1.5.3",
        match sysctl_expect(&[("fs.suid_dumpable", &[0])]) {
            "Err" => "Err",
            s => pass_if(s == "Pass" && hard_core.as_deref() == Some("0")),
        },
    );

    put("2.4.1.2", perm_expect("/etc/crontab", 0o600, &[]));
    for (id, d) in [
        ("2.4.1.3", "hourly"),
        ("2.4.1.4", "daily"),
        ("2.4.1.5", "weekly"),
        ("2.4.1.6", "monthly"),
        ("2.4.1.7", "d"),
    ] {
        put(id, perm_expect(&format!("/etc/cron.{d}"), 0o700, &[]));
    }

    let conf = |c: &str, k: &str| format!("net.ipv4.conf.{c}.{k}");
    let two = |k: &str, v: &'static [i64]| -> Vec<(String, &'static [i64])> {
        vec![(conf("all", k), v), (conf("default", k), v)]
    };
    let six = |k: &str, v: &'static [i64]| -> Vec<(String, &'static [i64])> {
        vec![
            (format!("net.ipv6.conf.all.{k}"), v),
            (format!("net.ipv6.conf.default.{k}"), v),
        ]
    };
    let exp = |keys: Vec<(String, &'static [i64])>| {
        let k: Vec<(&str, &[i64])> = keys.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        sysctl_expect(&k)
    };
    put(
        "3.3.1",
        exp(vec![
            ("net.ipv4.ip_forward".into(), &[0]),
            ("net.ipv6.conf.all.forwarding".into(), &[0]),
        ]),
    );
    put("3.3.2", exp(two("send_redirects", &[0])));
    put(
        "3.3.3",
        exp(vec![(
            "net.ipv4.icmp_ignore_bogus_error_responses".into(),
            &[1],
        )]),
    );
    put(
        "3.3.4",
        exp(vec![("net.ipv4.icmp_echo_ignore_broadcasts".into(), &[1])]),
    );
    put(
        "3.3.5",
        exp([two("accept_redirects", &[0]), six("accept_redirects", &[0])].concat()),
    );
    put("3.3.6", exp(two("secure_redirects", &[0])));
    put("3.3.7", exp(two("rp_filter", &[1])));
    put(
        "3.3.8",
        exp([
            two("accept_source_route", &[0]),
            six("accept_source_route", &[0]),
        ]
        .concat()),
    );
    put("3.3.9", exp(two("log_martians", &[1])));
    put(
        "3.3.10",
        exp(vec![("net.ipv4.tcp_syncookies".into(), &[1])]),
    );
    put("3.3.11", exp(six("accept_ra", &[0])));

    // sshd: sshd's own effective values.
    put("5.1.1", perm_expect("/etc/ssh/sshd_config", 0o600, &[]));
    let mut keys_ok = (true, true);
    for e in std::fs::read_dir("/etc/ssh").expect("/etc/ssh") {
        let n = e.expect("entry").file_name().to_string_lossy().into_owned();
        if n.starts_with("ssh_host_") && n.ends_with("_key") {
            keys_ok.0 &= perm_expect(&format!("/etc/ssh/{n}"), 0o600, &[]) == "Pass";
        } else if n.starts_with("ssh_host_") && n.ends_with("_key.pub") {
            keys_ok.1 &= perm_expect(&format!("/etc/ssh/{n}"), 0o644, &[]) == "Pass";
        }
    }
    put("5.1.2", pass_if(keys_ok.0));
    put("5.1.3", pass_if(keys_ok.1));
    let t = sshd_t();
    let v = |k: &str| {
        t.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("sshd -T has no {k}"))
    };
    let num = |k: &str| {
        v(k).parse::<u64>()
            .unwrap_or_else(|_| panic!("{k} {}", v(k)))
    };
    let none_weak = |k: &str, weak: &[&str]| !v(k).split(',').any(|a| weak.contains(&a));
    put("5.1.5", pass_if(v("banner") != "none"));
    put("5.1.6", pass_if(none_weak("ciphers", WEAK_CIPHERS)));
    put(
        "5.1.7",
        pass_if(num("clientaliveinterval") > 0 && num("clientalivecountmax") > 0),
    );
    put("5.1.8", pass_if(v("disableforwarding") == "yes"));
    put("5.1.9", pass_if(v("gssapiauthentication") == "no"));
    put("5.1.10", pass_if(v("hostbasedauthentication") == "no"));
    put("5.1.11", pass_if(v("ignorerhosts") == "yes"));
    put("5.1.12", pass_if(none_weak("kexalgorithms", WEAK_KEX)));
    put("5.1.13", pass_if((1..=60).contains(&num("logingracetime"))));
    put(
        "5.1.14",
        pass_if(["INFO", "VERBOSE"].contains(&v("loglevel"))),
    );
    put("5.1.15", pass_if(none_weak("macs", WEAK_MACS)));
    put("5.1.16", pass_if(num("maxauthtries") <= 4));
    put("5.1.17", pass_if(num("maxsessions") <= 10));
    put("5.1.19", pass_if(v("permitemptypasswords") == "no"));
    put("5.1.20", pass_if(v("permitrootlogin") == "no"));
    put("5.1.21", pass_if(v("permituserenvironment") == "no"));
    put("5.1.22", pass_if(v("usepam") == "yes"));

    // Accounts, from the files.
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let users: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() == 7)
        .collect();
    let group = std::fs::read_to_string("/etc/group").expect("/etc/group");
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() == 4)
        .collect();
    let unique = |v: Vec<&str>| {
        let n = v.len();
        let mut s = v;
        s.sort();
        s.dedup();
        s.len() == n
    };
    put(
        "5.4.2.1",
        pass_if(!users.iter().any(|f| f[2] == "0" && f[0] != "root")),
    );
    put("7.2.1", pass_if(users.iter().all(|f| f[1] == "x")));
    let shadow = std::fs::read_to_string("/etc/shadow").expect("/etc/shadow");
    put(
        "7.2.2",
        pass_if(!shadow.lines().any(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() > 1 && !f[0].is_empty() && f[1].is_empty()
        })),
    );
    put(
        "7.2.3",
        pass_if(users.iter().all(|u| groups.iter().any(|g| g[2] == u[3]))),
    );
    let shadow_group = groups.iter().find(|g| g[0] == "shadow");
    put(
        "7.2.4",
        pass_if(
            shadow_group.is_none_or(|g| g[3].is_empty() && !users.iter().any(|u| u[3] == g[2])),
        ),
    );
    put(
        "7.2.5",
        pass_if(unique(users.iter().map(|f| f[2]).collect())),
    );
    put(
        "7.2.6",
        pass_if(unique(groups.iter().map(|f| f[2]).collect())),
    );
    put(
        "7.2.7",
        pass_if(unique(users.iter().map(|f| f[0]).collect())),
    );
    put(
        "7.2.8",
        pass_if(unique(groups.iter().map(|f| f[0]).collect())),
    );

    let shadow_gid = gid_of("shadow");
    for (id, f, max, g) in [
        ("7.1.1", "/etc/passwd", 0o644, &[][..]),
        ("7.1.2", "/etc/passwd-", 0o644, &[]),
        ("7.1.3", "/etc/group", 0o644, &[]),
        ("7.1.4", "/etc/group-", 0o644, &[]),
        ("7.1.5", "/etc/shadow", 0o640, &shadow_gid),
        ("7.1.6", "/etc/shadow-", 0o640, &shadow_gid),
        ("7.1.7", "/etc/gshadow", 0o640, &shadow_gid),
        ("7.1.8", "/etc/gshadow-", 0o640, &shadow_gid),
    ] {
        put(id, perm_expect(f, max, g));
    }

    // World-writable: find over the same roots.
    let roots: Vec<&str> = WALK_ROOTS
        .iter()
        .copied()
        .filter(|r| std::fs::symlink_metadata(r).is_ok_and(|m| m.is_dir()))
        .collect();
    let out = Command::new("find")
        .args(&roots)
        .args([
            "(", "-type", "f", "-perm", "-0002", ")", "-o", "(", "-type", "d", "-perm", "-0002",
            "!", "-perm", "-1000", ")",
        ])
        .output()
        .expect("find");
    let found = String::from_utf8_lossy(&out.stdout).lines().count();
    put("7.1.11", pass_if(found == 0));

    // The module's rules on disk.
    let arch = std::fs::read_to_string("/proc/sys/kernel/arch").expect("/proc/sys/kernel/arch");
    let rules = azureiotsecurity::rules::render(
        azureiotsecurity::rules::Arch::from_uname(&arch).expect("a known architecture"),
    );
    let mut on_disk = std::fs::read_to_string("/etc/audit/audit.rules").unwrap_or_default();
    if let Ok(d) = std::fs::read_dir("/etc/audit/rules.d") {
        for e in d.flatten() {
            if e.path().extension().is_some_and(|x| x == "rules") {
                on_disk.push_str(&std::fs::read_to_string(e.path()).expect("rules file"));
            }
        }
    }
    let all_there = rules
        .lines()
        .filter(|l| l.starts_with("-a"))
        .all(|l| on_disk.lines().any(|d| d.trim() == l));
    want.insert("azureiotsecurity-audit-rules".into(), pass_if(all_there));

    assert_eq!(
        audit_before, audit_after,
        "auditd started or stopped during the test (another test's restart): run again"
    );
    want.insert("6.2.1.2".into(), pass_if(audit_before));

    assert_eq!(want.len(), CHECKS.len(), "every check has an expectation");
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------
// The events.

/// The payloads the registry's OSBaseline collector makes of a root, as events in messages.
fn messages_of(host: &HostRoot, include_passed: bool) -> (Vec<Value>, Vec<String>) {
    let c = collectors::collector(EventKind::OSBaseline).expect("OSBaseline is in the registry");
    let payloads = (c.collect)(
        host,
        &CollectOptions {
            include_passed_checks: include_passed,
        },
    );
    let mut items = Vec::new();
    let mut messages = Vec::new();
    for (i, p) in payloads.into_iter().enumerate() {
        if let Payload::OSBaseline(v) = &p {
            items.extend(v.iter().map(|c| serde_json::to_value(c).expect("item")));
        } else {
            panic!("not an OSBaseline payload: {p:?}");
        }
        let ev = SecurityEvent {
            id: uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 + i as u128),
            time_ms: 1_700_000_000_000,
            payload: p,
        };
        let ev = serde_json::to_value(&ev).expect("event");
        messages.push(support::envelope(&[ev]));
    }
    (items, messages)
}

#[test]
fn every_osbaseline_event_is_valid_for_validate_and_the_reference_validator() {
    let t = synthetic();
    let mut all = Vec::new();
    let mut counts = Vec::new();
    for (root, passed) in [
        (HostRoot::new(&t.0), false),
        (HostRoot::new(&t.0), true),
        (HostRoot::default(), false),
        (HostRoot::default(), true),
    ] {
        let (items, messages) = messages_of(&root, passed);
        counts.push(items.len());
        for m in &messages {
            assert_eq!(validate_message(m), Ok(()), "{m}");
        }
        if passed {
            assert_eq!(items.len(), CHECKS.len());
        }
        for i in &items {
            let result = i["Result"].as_str().expect("Result");
            let error = i["Error"].as_str().expect("Error");
            assert!(passed || result != "Pass", "{i}");
            // Error says why for Err only; a failure's finding is in ExtraDetails.
            assert_eq!(result == "Err", !error.is_empty(), "{i}");
            assert_eq!(
                result == "Fail",
                i["ExtraDetails"]["Finding"].is_string(),
                "{i}"
            );
        }
        all.extend(messages);
    }
    // The synthetic host fails every check.
    assert_eq!(counts[0], CHECKS.len());
    let verdicts = support::reference_validate(&all);
    assert!(verdicts.iter().all(|v| v == "ok"), "{verdicts:?}");
}
