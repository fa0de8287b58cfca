//! Shared helpers of the black-box tests. `live_harness.rs` (the real auditd) is included by
//! `tests/live.rs` alone, with `#[path]`, so that no other crate compiles it.
#![allow(dead_code)]

pub mod audit_feed;
pub mod certs;
pub mod inprocess_hub;
pub mod manifest;
pub mod standin;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `shared/schemas`, beside the repository (never copied into it).
pub fn schema_dir() -> PathBuf {
    if let Ok(d) = std::env::var("AZUREIOTSECURITY_SCHEMAS") {
        return PathBuf::from(d);
    }
    root().join("../shared/schemas")
}

/// The Python of the venv that has jsonschema and rfc3339-validator (made by `.ci/run`).
pub fn venv_python() -> PathBuf {
    if let Ok(p) = std::env::var("AZUREIOTSECURITY_PYTHON") {
        return PathBuf::from(p);
    }
    root().join(".venv/bin/python")
}

/// Validate JSON-lines messages with the reference validator (python-jsonschema, draft-07,
/// format checking on). Returns one verdict per message: "ok" or "invalid: …".
/// Panics (fails the test) when the validator cannot run: a missing validator must never
/// pass as "valid".
pub fn reference_validate(messages: &[String]) -> Vec<String> {
    let py = venv_python();
    let mut child = Command::new(&py)
        .arg(root().join("tests/support/schema_validate.py"))
        .arg(schema_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the reference validator {}: {e} (run .ci/run to make the venv)",
                py.display()
            )
        });
    // Write from another thread: the validator answers line by line, and with a large batch
    // its stdout pipe would fill while we are still writing (a deadlock).
    let mut stdin = child.stdin.take().expect("stdin");
    let input: Vec<u8> = messages
        .iter()
        .flat_map(|m| {
            assert!(!m.contains('\n'), "one message per line");
            m.bytes().chain(std::iter::once(b'\n'))
        })
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("validator output");
    writer
        .join()
        .expect("writer thread")
        .expect("write to the validator");
    assert!(
        out.status.success(),
        "reference validator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(verdicts.len(), messages.len(), "one verdict per message");
    verdicts
}

/// Wrap event objects (JSON) in a security message envelope.
pub fn envelope(events: &[serde_json::Value]) -> String {
    serde_json::json!({
        "AgentVersion": env!("CARGO_PKG_VERSION"),
        "AgentId": "00000000-0000-4000-8000-000000000000",
        "MessageSchemaVersion": "1.0",
        "Events": events,
    })
    .to_string()
}

/// Run the module binary with arguments and stdin; return (exit code, stdout, stderr).
pub fn run_bin(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
        .args(args)
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the module binary");
    let mut si = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // From another thread, so that a large output cannot block the child while we write. The
    // child may exit before reading everything (bad arguments): EPIPE is ignored.
    let writer = std::thread::spawn(move || {
        let _ = si.write_all(&data);
    });
    let out = child.wait_with_output().expect("module output");
    let _ = writer.join();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
