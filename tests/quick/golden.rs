//! Golden tests: every real capture in `tests/data/*.log` replayed through the binary
//! (`replay`, TZ=UTC) gives exactly the events in `tests/data/<name>.events.jsonl`.
//!
//! Every event, wrapped in a message envelope, also passes the module's own `validate`. The
//! reference validator (Python) checks the committed golden files in the full suite
//! (`tests/schema_reference.rs`), so an invalid golden file cannot pass it. To regenerate after
//! a deliberate change: `UPDATE_GOLDEN=1 cargo test --test quick golden::`, then review the
//! diff and run `cargo test --test schema_reference golden`.

use crate::support;

use std::path::{Path, PathBuf};

fn captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(support::root().join("tests/data"))
        .expect("tests/data")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn replay(path: &Path) -> Vec<String> {
    let p = path.to_str().expect("utf-8 path");
    let (code, out, err) = support::run_bin(&["replay", p], b"");
    assert_eq!(code, 0, "replay {p}: {err}");
    out.lines().map(str::to_string).collect()
}

#[test]
fn captures_replay_to_their_golden_events() {
    let caps = captures();
    assert!(caps.len() >= 6, "captures missing: {caps:?}");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for cap in caps {
        let events = replay(&cap);
        assert!(!events.is_empty(), "{}: no events", cap.display());
        let messages: Vec<String> = events
            .iter()
            .map(|e| support::envelope(&[serde_json::from_str(e).expect("event is JSON")]))
            .collect();
        // The module's own validator takes every event (the reference validator takes the
        // committed golden files: schema_reference.rs).
        let input = messages.join("\n") + "\n";
        let (code, out, err) = support::run_bin(&["validate", "-"], input.as_bytes());
        assert_eq!(code, 0, "{}: {out}{err}", cap.display());
        let golden = cap.with_extension("events.jsonl");
        let got = events.join("\n") + "\n";
        if update {
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 makes it)", golden.display()));
        assert_eq!(got, want, "{} differs from its golden file", cap.display());
    }
}

#[test]
fn replay_is_deterministic_and_reads_stdin() {
    let cap = support::root().join("tests/data/exec_args.log");
    let text = std::fs::read(&cap).expect("capture");
    let (code, from_stdin, err) = support::run_bin(&["replay", "-"], &text);
    assert_eq!(code, 0, "{err}");
    assert_eq!(from_stdin.lines().collect::<Vec<_>>(), replay(&cap));
}

/// The exact events of scenarios whose records we know by heart.
#[test]
fn exec_args_command_lines_are_exact() {
    let events = replay(&support::root().join("tests/data/exec_args.log"));
    let lines: Vec<String> = events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            v["Payload"][0]["CommandLine"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let first = "/bin/echo arg with space double\"quote single'quote tab\there new\nline ünïcödé back\\slash a=b  semi;colon";
    assert_eq!(lines[0], first);
    // The 9000-byte argument, and the 2100 arguments over several EXECVE records.
    assert!(
        lines
            .iter()
            .any(|l| l.len() == "/bin/true ".len() + 9000 && l.ends_with('x')),
        "{:?}",
        lines.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    let many = lines
        .iter()
        .find(|l| l.starts_with("/bin/true arg0001 "))
        .expect("the many-argument exec");
    assert_eq!(many.split(' ').count(), 2101, "{}", &many[..200]);
}
