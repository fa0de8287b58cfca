//! Agent settings that the module must not take as given, end to end through the binary:
//! a zero frequency is raised to its minimum, and a setting table without `value` is a
//! type error; both become ConfigurationError events in the messages `replay --messages`
//! builds (the same code as `run`), and `check-config` shows the value in force. That the
//! reference validator (Python) takes those messages is checked in `tests/messages.rs`.

use crate::support;

use serde_json::Value;

/// One ConfigurationError payload: (name, type, used configuration, message).
type ConfigurationError = (String, String, String, String);

/// The ConfigurationError payloads in `messages` (JSON lines).
fn configuration_errors(messages: &str) -> Vec<ConfigurationError> {
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

/// What the module binary makes of a settings file holding `text`: the ConfigurationError
/// payloads of `replay --messages` over a real capture (which must exit 0), and
/// `check-config`'s exit code, JSON report and stderr.
fn verdict(text: &str) -> (Vec<ConfigurationError>, i32, Value, String) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
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
    let errors = configuration_errors(&out);
    let (code, out, err) = support::run_bin(&["check-config", config], b"");
    let report: Value = serde_json::from_str(&out).expect("check-config prints JSON");
    (errors, code, report, err)
}

#[test]
fn a_zero_snapshot_frequency_is_not_optimal_and_the_minimum_is_used() {
    let (errors, code, report, err) = verdict("[agent]\nsnapshotFrequency = \"PT0S\"\n");
    // The reference validator's verdict on these messages: messages.rs (full suite).
    assert_eq!(
        errors,
        vec![(
            "snapshotFrequency".to_owned(),
            "NotOptimal".to_owned(),
            "PT1M".to_owned(),
            "snapshotFrequency (PT0S) is under the minimum PT1M: a statistics report that often costs more than it tells; using PT1M instead".to_owned(),
        )]
    );
    assert_eq!(code, 1, "{err}");
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
    let (errors, code, report, err) = verdict("[agent]\neventPriorityLogin = { valu = \"Off\" }\n");
    assert_eq!(
        errors,
        vec![(
            "eventPriorityLogin".to_owned(),
            "TypeMismatch".to_owned(),
            "High".to_owned(),
            "expected {\"value\": …} holding one of \"High\", \"Low\" or \"Off\", found an object without \"value\" (members: \"valu\")".to_owned(),
        )]
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        report["agent"]["eventPriorityLogin"],
        serde_json::json!({"value": "High"})
    );
}
