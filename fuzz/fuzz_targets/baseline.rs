//! The OSBaseline parsers on arbitrary input: sshd_config (with `Include`s resolved to
//! pieces of the input), sshd time values and globs, the algorithm-list modifiers, sysctl
//! values, limits.conf, passwd/group/shadow and mounts. Nothing may panic or loop, and:
//!
//! - a parsed sshd configuration read at most `MAX_FILES` files, and a keyword's value is
//!   the same whatever its case;
//! - a time value made of digits only is that number;
//! - `*` matches every name, a name without wildcards matches itself;
//! - no modifier gives the default list back unchanged;
//! - a duplicate is in its input at least twice.
//!
//! The input is split at NUL bytes: the first piece is the main sshd_config, the others are
//! what each `Include` expands to, in turn.

#![no_main]

use azureiotsecurity::collectors::os_baseline::{effective_list, parse, sshd};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let pieces: Vec<&str> = text.split('\0').collect();
    let main = pieces[0];

    let mut next = 1usize;
    let parsed = sshd::SshdConfig::parse("main", main, |pattern| {
        // Some patterns fail, as an unreadable directory does.
        if pattern.len() % 7 == 6 {
            return Err("unreadable".to_string());
        }
        let mut out = Vec::new();
        for _ in 0..(pattern.len() % 3) {
            if let Some(p) = pieces.get(next) {
                out.push((format!("piece{next}"), p.to_string()));
                next += 1;
            }
        }
        Ok(out)
    });
    if let Ok(c) = &parsed {
        assert!(c.files.len() <= sshd::MAX_FILES);
        for line in main.lines() {
            if let Some(k) = line.split_whitespace().next() {
                assert_eq!(c.get(k), c.get(&k.to_ascii_uppercase()));
            }
        }
    }

    for w in main.split_whitespace().take(64) {
        let s = sshd::seconds(w);
        if !w.is_empty() && w.len() < 19 && w.bytes().all(|b| b.is_ascii_digit()) {
            assert_eq!(s, w.parse().ok());
        }
        assert!(sshd::glob_match("*", w));
        if !w.contains(['*', '?']) {
            assert!(sshd::glob_match(w, w));
        }
        let _ = sshd::glob_match(w, main);
        let _ = effective_list(Some(w), "a,b,c");
    }
    assert_eq!(effective_list(None, main), effective_list(None, main));

    let _ = parse::sysctl_int(main);
    let _ = parse::hard_core_limit(pieces.iter().copied());
    let accounts = parse::passwd(main);
    for a in &accounts {
        assert!(!a.name.contains(':'));
    }
    let uids: Vec<u32> = accounts.iter().map(|a| a.uid).collect();
    for d in parse::duplicates(uids.iter().copied()) {
        assert!(uids.iter().filter(|u| **u == d).count() >= 2);
    }
    let _ = parse::group(main);
    let empty = parse::empty_shadow_passwords(main);
    assert!(empty.len() <= main.lines().count());
    let _ = parse::mounts(main);
});
