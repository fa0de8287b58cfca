//! Live checks of `azureiotsecurity rules` against this machine's audit tools and kernel.
//!
//! These need root, `auditctl` and `ausyscall` (package `auditd`) and a kernel with audit;
//! they fail, not skip, when any is missing (`scripts/setup-host.sh` installs them). auditd
//! itself need not run. The native rules are (re)loaded and left loaded, because the other
//! live tests need them; every other rule on the host is left as it was found.

use std::io::Write as _;
use std::process::{Command, Output};

use azureiotsecurity::rules::{self, Arch, KEY, Table};

const BIN: &str = env!("CARGO_BIN_EXE_azureiotsecurity");

fn run(cmd: &str, args: &[&str]) -> Output {
    match Command::new(cmd).args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run {cmd} {args:?}: {e} (install auditd and run as root: scripts/setup-host.sh)"
        ),
    }
}

fn stdout_of(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match String::from_utf8(out.stdout) {
        Ok(s) => s,
        Err(e) => panic!("{cmd} {args:?}: output is not UTF-8: {e}"),
    }
}

/// The rule lines of `auditctl -l` (empty when it says "No rules").
fn listed_rules() -> Vec<String> {
    stdout_of("auditctl", &["-l"])
        .lines()
        .filter(|l| !l.is_empty() && *l != "No rules")
        .map(str::to_owned)
        .collect()
}

fn is_ours(line: &str) -> bool {
    line.split(' ')
        .any(|w| w == format!("key={KEY}") || w == format!("key={KEY},"))
}

/// How `auditctl -l` prints one of our rule lines: `-k K` becomes `-F key=K`, and argument
/// filters (`-F a0=3`) are printed in hex (`-F a0=0x3`).
fn normalized(rule: &str) -> String {
    let words: Vec<&str> = rule.split(' ').collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        match (words[i], words.get(i + 1)) {
            ("-k", Some(key)) => {
                out.push("-F".into());
                out.push(format!("key={key}"));
                i += 2;
                continue;
            }
            (w, _) => {
                let hexed = w.split_once('=').and_then(|(field, value)| {
                    let is_arg = matches!(field, "a0" | "a1" | "a2" | "a3");
                    let n: u64 = value.parse().ok()?;
                    is_arg.then(|| format!("{field}=0x{n:X}"))
                });
                out.push(hexed.unwrap_or_else(|| w.to_owned()));
            }
        }
        i += 1;
    }
    out.join(" ")
}

#[test]
fn normalization_of_expected_lines() {
    assert_eq!(
        normalized("-a always,exit -F arch=b32 -S socketcall -F a0=18 -F success=1 -k x"),
        "-a always,exit -F arch=b32 -S socketcall -F a0=0x12 -F success=1 -F key=x"
    );
    assert_eq!(
        normalized("-a always,exit -F arch=b64 -S connect -F exit=-EINPROGRESS -k x"),
        "-a always,exit -F arch=b64 -S connect -F exit=-EINPROGRESS -F key=x"
    );
}

/// `rules` without an architecture reads this machine's from the uname syscall, not from a
/// `uname` program: the module's scratch image has none. With PATH empty (and no other
/// environment) it must still print exactly this machine's rules.
#[test]
fn rules_without_a_uname_program() {
    let machine = stdout_of("uname", &["-m"]);
    let Some(arch) = Arch::from_uname(machine.trim()) else {
        panic!("this machine's architecture {machine:?} is not supported");
    };
    let out = match Command::new(BIN)
        .arg("rules")
        .env_clear()
        .env("PATH", "")
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("cannot run {BIN} rules: {e}"),
    };
    assert!(
        out.status.success(),
        "rules with PATH empty failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), rules::render(arch));
    // The same text as naming the architecture explicitly.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        stdout_of(BIN, &["rules", "--arch", machine.trim()])
    );
}

#[test]
fn native_rules_load_and_list_exactly() {
    assert_eq!(
        stdout_of("id", &["-u"]).trim(),
        "0",
        "loading audit rules needs root"
    );
    let text = stdout_of(BIN, &["rules"]);
    let machine = stdout_of("uname", &["-m"]);
    let Some(arch) = Arch::from_uname(&machine) else {
        panic!("this machine's architecture {machine:?} is not supported");
    };
    assert_eq!(text, rules::render(arch), "binary and library disagree");
    let ours: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let expected_count = match arch {
        Arch::X86_64 => 17,
        Arch::I386 => 11,
        Arch::Aarch64 => 12,
        Arch::Arm => 6,
    };
    assert_eq!(ours.len(), expected_count, "{text}");

    let before = listed_rules();
    let others_before: Vec<&String> = before.iter().filter(|l| !is_ours(l)).collect();

    // Replace whatever version of our rules is loaded (auditctl refuses duplicates).
    stdout_of("auditctl", &["-D", "-k", KEY]);
    let after_delete = listed_rules();
    assert!(
        after_delete.iter().all(|l| !is_ours(l)),
        "auditctl -D -k {KEY} left: {after_delete:?}"
    );

    // auditctl -R silently fails (exit 1, no message) on a pipe such as /dev/stdin: use a file.
    let mut file = match tempfile::NamedTempFile::new() {
        Ok(f) => f,
        Err(e) => panic!("temp file: {e}"),
    };
    if let Err(e) = file.write_all(text.as_bytes()).and_then(|()| file.flush()) {
        panic!("writing the rules file: {e}");
    }
    let path = file.path().to_string_lossy().into_owned();
    let load = run("auditctl", &["-R", &path]);
    assert!(
        load.status.success(),
        "auditctl -R failed ({}): {}{}",
        load.status,
        String::from_utf8_lossy(&load.stdout),
        String::from_utf8_lossy(&load.stderr)
    );

    let after = listed_rules();
    let ours_listed: Vec<&str> = after
        .iter()
        .filter(|l| is_ours(l))
        .map(String::as_str)
        .collect();
    let ours_expected: Vec<String> = ours.iter().map(|l| normalized(l)).collect();
    assert_eq!(ours_listed, ours_expected);
    // Nothing else changed (our rules are appended after the others).
    let others_after: Vec<&String> = after.iter().filter(|l| !is_ours(l)).collect();
    assert_eq!(others_after, others_before);
    assert_eq!(after.len(), others_before.len() + expected_count);

    // The listing of just our key gives the same lines.
    let by_key: Vec<String> = stdout_of("auditctl", &["-l", "-k", KEY])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(by_key, ours_expected);
}

#[test]
fn syscall_names_exist_in_each_table() {
    let mut checked = 0;
    for arch in [Arch::X86_64, Arch::I386, Arch::Aarch64, Arch::Arm] {
        for rule in rules::rules(arch) {
            let table = rule.table.ausyscall_name();
            for name in rule.syscalls {
                let out = stdout_of("ausyscall", &[table, name, "--exact"]);
                let number = out.trim();
                assert!(
                    !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()),
                    "ausyscall {table} {name} --exact gave {out:?}"
                );
                checked += 1;
            }
        }
    }
    // x86_64: 17 rules naming 20 syscalls, i386: 11 (12), aarch64: 12 (16), arm: 6 (8).
    assert_eq!(checked, 20 + 12 + 16 + 8);
}

#[test]
fn syscall_quirks_hold() {
    // Sanity check of the lookup itself, with known numbers.
    assert_eq!(
        stdout_of("ausyscall", &["x86_64", "execve", "--exact"]).trim(),
        "59"
    );
    assert_eq!(
        stdout_of("ausyscall", &["i386", "socketcall", "--exact"]).trim(),
        "102"
    );
    assert_eq!(
        stdout_of("ausyscall", &["aarch64", "connect", "--exact"]).trim(),
        "203"
    );
    assert_eq!(
        stdout_of("ausyscall", &["arm", "accept", "--exact"]).trim(),
        "285"
    );
    // The reasons the rules differ per table.
    for (table, name) in [
        ("i386", "accept"),
        ("aarch64", "socketcall"),
        ("x86_64", "socketcall"),
    ] {
        let out = run("ausyscall", &[table, name, "--exact"]);
        assert!(
            !out.status.success(),
            "ausyscall {table} {name} --exact unexpectedly found: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let i386 = rules::rules(Arch::I386);
    assert!(i386.iter().all(|r| r.table == Table::I386));
}

#[test]
fn explicit_arch_matches_library() {
    for (name, arch) in [
        ("x86_64", Arch::X86_64),
        ("i686", Arch::I386),
        ("aarch64", Arch::Aarch64),
        ("armv7l", Arch::Arm),
    ] {
        assert_eq!(
            stdout_of(BIN, &["rules", "--arch", name]),
            rules::render(arch),
            "{name}"
        );
    }
}

#[test]
fn bogus_arch_is_refused() {
    let out = run(BIN, &["rules", "--arch", "bogus"]);
    assert!(!out.status.success(), "rules --arch bogus succeeded");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "printed rules: {:?}", out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unsupported architecture") && err.contains("\"bogus\""),
        "unclear message: {err}"
    );
}
