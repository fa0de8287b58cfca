//! The two tiers stay in step with the crates: every integration crate in `tests/` is in
//! exactly one of the lists of `scripts/quick-test.sh`, and the quick tier's sources use none
//! of the helpers that reach a real peer.

use std::collections::BTreeSet;

use crate::support;

/// The words of the bash array `name=(…)` in the quick-test script.
fn list(script: &str, name: &str) -> BTreeSet<String> {
    let start = format!("{name}=(");
    let line = script
        .lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("scripts/quick-test.sh has no {start}…)"));
    let inner = line[start.len()..]
        .strip_suffix(')')
        .unwrap_or_else(|| panic!("{name}: one line, ending with ')'"));
    inner.split_whitespace().map(str::to_owned).collect()
}

/// Integration crates as cargo finds them: `tests/<name>.rs` and `tests/<name>/main.rs`.
fn crates() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for e in std::fs::read_dir(support::root().join("tests")).expect("tests/") {
        let p = e.expect("tests/ entry").path();
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if p.extension().is_some_and(|x| x == "rs") || p.join("main.rs").is_file() {
            found.insert(name.to_owned());
        }
    }
    found
}

#[test]
fn every_integration_crate_is_in_exactly_one_tier() {
    let script = std::fs::read_to_string(support::root().join("scripts/quick-test.sh"))
        .expect("scripts/quick-test.sh");
    let quick = list(&script, "QUICK_CRATES");
    let full = list(&script, "FULL_ONLY_CRATES");
    assert_eq!(
        quick.intersection(&full).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in both tiers"
    );
    let listed: BTreeSet<String> = quick.union(&full).cloned().collect();
    assert_eq!(
        crates(),
        listed,
        "tests/ crates (left) and the tiers of scripts/quick-test.sh (right) differ"
    );
    assert!(quick.contains("quick"), "{quick:?}");
    assert!(full.contains("live"), "{full:?}");
}

#[test]
fn the_quick_tier_calls_no_helper_that_needs_a_real_peer() {
    // What reaches Python, Proton, Node, the workload stand-in or auditd in tests/support.
    let peers = [
        "reference_validate(",
        "venv_python(",
        "require_proton(",
        "require_node(",
        "EdgeHub::start",
        "Workload::start",
        "node_send(",
        "edge_env(",
        "audispd",
        "live::",
    ];
    let script = std::fs::read_to_string(support::root().join("scripts/quick-test.sh"))
        .expect("scripts/quick-test.sh");
    let tests = support::root().join("tests");
    let mut sources = Vec::new();
    for name in list(&script, "QUICK_CRATES") {
        let dir = tests.join(&name);
        if dir.is_dir() {
            for e in std::fs::read_dir(&dir).expect("a quick crate's folder") {
                sources.push(e.expect("entry").path());
            }
        } else {
            sources.push(tests.join(format!("{name}.rs")));
        }
    }
    let mut checked = 0;
    for p in sources {
        if p.ends_with("quick/tiers.rs") {
            continue; // this list itself
        }
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        for word in peers {
            assert!(!text.contains(word), "{} uses {word}", p.display());
        }
        checked += 1;
    }
    assert!(checked >= 9, "{checked} files checked");
}
