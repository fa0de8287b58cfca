//! Agent settings that the module must not take as given, end to end through the binary:
//! a zero frequency is raised to its minimum, and a setting table without `value` is a
//! type error; both become ConfigurationError events in the messages `replay --messages`
//! builds (the same code as `run`), and `check-config` shows the value in force. That the
//! reference validator (Python) takes those messages is checked in `tests/messages.rs`.
//! `check-config` shows each agent value's layer (file, environment, the twin kept in the data
//! directory), as the README's example says.

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

/// `check-config FILE` with the environment `env` (and no other AZUREIOTSECURITY_ variable):
/// exit code, JSON report (Null when stdout is not JSON), stderr.
fn check_config(file: &std::path::Path, env: &[(&str, &str)]) -> (i32, Value, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"));
    cmd.arg("check-config").arg(file);
    for (k, _) in std::env::vars() {
        if k.starts_with("AZUREIOTSECURITY_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run check-config");
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The README's example of `check-config` (the JSON block after "`check-config` shows each
/// agent value").
fn readme_example() -> Value {
    let readme = std::fs::read_to_string(support::root().join("README.md")).unwrap();
    let at = readme
        .find("`check-config` shows each agent value")
        .expect("the README explains check-config's sources");
    let block = readme[at..]
        .split("```json\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a JSON example follows");
    serde_json::from_str(block).expect("the README's example is JSON")
}

/// The README's setup, for real: `eventPriorityLogin = "Off"` in the file,
/// `maxMessageSizeInBytes` from the environment, a kept twin configuration of version 9
/// setting `snapshotFrequency` in the data directory (written by the module's own
/// `save_kept`). Each value the example shows, and its layer, is what the binary prints.
#[test]
fn check_config_shows_each_agent_value_s_layer_as_the_readme_says() {
    use azureiotsecurity::config::agent::OBJECT_NAME;
    use azureiotsecurity::config::twin::{KeptDesired, save_kept};
    let d = tempfile::tempdir().unwrap();
    let data_dir = d.path().join("data");
    save_kept(
        &data_dir,
        &KeptDesired {
            version: 9,
            desired: serde_json::json!({OBJECT_NAME: {"snapshotFrequency": {"value": "PT2H"}}}),
        },
    )
    .unwrap();
    let file = d.path().join("settings.toml");
    std::fs::write(
        &file,
        format!(
            "[module]\ndata_dir = {:?}\n[agent]\neventPriorityLogin = \"Off\"\n",
            data_dir.display().to_string()
        ),
    )
    .unwrap();
    let (code, report, err) = check_config(
        &file,
        &[("AZUREIOTSECURITY_AGENT__MAXMESSAGESIZEINBYTES", "65536")],
    );
    assert_eq!(code, 0, "{err}");
    let example = readme_example();
    for part in ["agent", "agent_sources"] {
        let shown = example[part].as_object().unwrap();
        assert!(shown.len() >= 4, "{part}");
        for (key, value) in shown {
            if key != "…" {
                assert_eq!(&report[part][key], value, "{part}.{key}");
            }
        }
    }
    assert_eq!(report["agent_sources"].as_object().unwrap().len(), 26);
    assert_eq!(report["twin"]["state"], example["twin"]["state"]);
    assert_eq!(report["twin"]["version"], serde_json::json!(9));
    assert_eq!(
        report["twin"]["kept_file"],
        serde_json::json!(data_dir.join("twin-desired.json").display().to_string())
    );
    assert_eq!(
        report["audit"]["socket_path"],
        example["audit"]["socket_path"]
    );

    // A truncated kept file: W-TWIN-KEPT, exit 1, and the layers below the twin.
    let kept = data_dir.join("twin-desired.json");
    let whole = std::fs::read(&kept).unwrap();
    std::fs::write(&kept, &whole[..whole.len() - 5]).unwrap();
    let (code, report, err) = check_config(&file, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("W-TWIN-KEPT"), "{err}");
    assert_eq!(report["twin"]["state"], serde_json::json!("unreadable"));
    assert_eq!(
        report["agent_sources"]["snapshotFrequency"],
        serde_json::json!("default")
    );
    assert_eq!(
        report["agent"]["snapshotFrequency"],
        serde_json::json!({"value": "PT13H"})
    );
}
