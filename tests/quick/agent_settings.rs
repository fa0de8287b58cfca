//! Agent settings that the module must not take as given, end to end through the binary:
//! a zero frequency is raised to its minimum, and a setting table without `value` is a
//! type error; both become ConfigurationError events in the messages `replay --messages`
//! builds (the same code as `run`), and `check-config` shows the value in force. That the
//! reference validator (Python) takes those messages is checked in `tests/messages.rs`.

use crate::support;

use serde_json::Value;

/// The ConfigurationError payloads in `messages` (JSON lines):
/// (name, type, used configuration, message).
fn configuration_errors(messages: &str) -> Vec<(String, String, String, String)> {
    let mut found = Vec::new();
    for line in messages.lines() {
        let v: Value = serde_json::from_str(line).expect("a message is JSON");
        for e in v["Events"].as_array().expect("Events") {
            if e["Name"] == "ConfigurationError" {
                for p in e["Payload"].as_array().expect("Payload") {
                    let s = |k: &str| p[k].as_str().unwrap_or("<missing>").to_owned();
                    found.push((
                        s("ConfigurationName"),
                        s("ErrorType"),
                        s("UsedConfiguration"),
                        s("Message"),
                    ));
                }
            }
        }
    }
    found
}

fn settings(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[test]
fn a_zero_snapshot_frequency_is_not_optimal_and_the_minimum_is_used() {
    let f = settings("[agent]\nsnapshotFrequency = \"PT0S\"\n");
    let config = f.path().to_str().unwrap();
    let capture = support::root().join("tests/data/net_tcp.log");
    let (code, out, err) = support::run_bin(
        &[
            "replay",
            "--messages",
            "--config",
            config,
            capture.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    // The reference validator's verdict on these messages: messages.rs (full suite).
    assert_eq!(
        configuration_errors(&out),
        vec![(
            "snapshotFrequency".to_owned(),
            "NotOptimal".to_owned(),
            "PT1M".to_owned(),
            "snapshotFrequency (PT0S) is under the minimum PT1M: a statistics report that often costs more than it tells; using PT1M instead".to_owned(),
        )]
    );
    let (code, out, err) = support::run_bin(&["check-config", config], b"");
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out).expect("check-config prints JSON");
    assert_eq!(
        report["agent"]["snapshotFrequency"],
        serde_json::json!({"value": "PT1M"})
    );
    assert!(
        err.contains("NotOptimal snapshotFrequency: ") && err.contains("(in force: PT1M)"),
        "{err}"
    );
}

#[test]
fn a_setting_table_without_value_is_a_type_mismatch() {
    let f = settings("[agent]\neventPriorityLogin = { valu = \"Off\" }\n");
    let config = f.path().to_str().unwrap();
    let capture = support::root().join("tests/data/net_tcp.log");
    let (code, out, err) = support::run_bin(
        &[
            "replay",
            "--messages",
            "--config",
            config,
            capture.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        configuration_errors(&out),
        vec![(
            "eventPriorityLogin".to_owned(),
            "TypeMismatch".to_owned(),
            "High".to_owned(),
            "expected {\"value\": …} holding one of \"High\", \"Low\" or \"Off\", found an object without \"value\" (members: \"valu\")".to_owned(),
        )]
    );
    let (code, out, _) = support::run_bin(&["check-config", config], b"");
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&out).expect("check-config prints JSON");
    assert_eq!(
        report["agent"]["eventPriorityLogin"],
        serde_json::json!({"value": "High"})
    );
}
