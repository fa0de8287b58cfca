//! Security messages end to end, from the real captures: `replay --messages` prints what
//! `run` would send. Every message must validate with the reference validator and with the
//! module's own `validate`, stay within the size limit, and carry every derived event
//! (aggregated events by their HitCount).

mod support;

use std::collections::HashMap;

use serde_json::Value;

fn captures() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(support::root().join("tests/data"))
        .expect("tests/data")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn load_capture() -> Vec<u8> {
    use std::io::Read;
    let f =
        std::fs::File::open(support::root().join("tests/data/load.log.gz")).expect("load capture");
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// Run the binary with extra environment.
fn run_env(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"));
    cmd.args(args)
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let mut si = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = si.write_all(&data);
    });
    let out = child.wait_with_output().expect("output");
    let _ = writer.join();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Both validators on the same messages: all valid.
fn assert_valid(messages: &[String], what: &str) {
    for (m, v) in messages.iter().zip(support::reference_validate(messages)) {
        assert_eq!(
            v,
            "ok",
            "{what}: reference validator: {}",
            &m[..m.len().min(400)]
        );
    }
    let input = messages.join("\n") + "\n";
    let (code, out, err) = run_env(&["validate", "-"], &[], input.as_bytes());
    assert_eq!(code, 0, "{what}: our validate: {out}{err}");
    assert_eq!(
        out.lines().filter(|l| *l == "ok").count(),
        messages.len(),
        "{what}"
    );
}

/// Count derived events per name in events mode, and in messages (by HitCount).
fn counts_of_events(lines: &str) -> HashMap<String, u64> {
    let mut c = HashMap::new();
    for l in lines.lines() {
        let v: Value = serde_json::from_str(l).expect("event JSON");
        *c.entry(v["Name"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    c
}

fn counts_in_messages(messages: &[String]) -> HashMap<String, u64> {
    let mut c = HashMap::new();
    for m in messages {
        let v: Value = serde_json::from_str(m).expect("message JSON");
        for e in v["Events"].as_array().expect("Events") {
            let name = e["Name"].as_str().unwrap_or("").to_string();
            if e["EventType"] == "Operational" {
                continue;
            }
            let hits = e["Payload"][0]["ExtraDetails"]["HitCount"]
                .as_str()
                .map_or(1, |h| h.parse::<u64>().expect("HitCount is a number"));
            *c.entry(name).or_default() += hits;
        }
    }
    c
}

fn statistics(messages: &[String]) -> (u64, u64, u64, u64) {
    let mut sent = 0;
    let mut collected = 0;
    let mut dropped = 0;
    let mut under = 0;
    for m in messages {
        let v: Value = serde_json::from_str(m).unwrap();
        for e in v["Events"].as_array().unwrap() {
            match e["Name"].as_str() {
                Some("MessageStatistics") => {
                    sent += e["Payload"][0]["MessagesSent"].as_u64().unwrap();
                    under += e["Payload"][0]["MessagesUnder4KB"].as_u64().unwrap();
                }
                Some("DroppedEventsStatistics") => {
                    for q in e["Payload"].as_array().unwrap() {
                        collected += q["CollectedEvents"].as_u64().unwrap();
                        dropped += q["DroppedEvents"].as_u64().unwrap();
                    }
                }
                _ => {}
            }
        }
    }
    (sent, under, collected, dropped)
}

#[test]
fn every_capture_gives_valid_complete_messages() {
    for cap in captures() {
        let (code, events, err) = run_env(&["replay", &cap], &[], b"");
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = run_env(&["replay", "--messages", &cap], &[], b"");
        assert_eq!(code, 0, "{err}");
        let messages: Vec<String> = out.lines().map(str::to_string).collect();
        assert!(!messages.is_empty(), "{cap}");
        assert_valid(&messages, &cap);
        for m in &messages {
            assert!(m.len() <= 204_800, "{cap}: {} bytes", m.len());
        }
        // Every derived event is in the messages (aggregated ones by their HitCount).
        assert_eq!(
            counts_in_messages(&messages),
            counts_of_events(&events),
            "{cap}"
        );
        // The last message holds the final statistics: every message before it was sent,
        // the events of the statistics period were collected, nothing was dropped.
        let (sent, under, _, dropped) = statistics(&messages);
        assert_eq!(sent as usize, messages.len() - 1, "{cap}");
        let small = messages[..messages.len() - 1]
            .iter()
            .filter(|m| m.len() < 4096)
            .count();
        assert_eq!(under as usize, small, "{cap}");
        assert_eq!(dropped, 0, "{cap}");
        // Same input, same output.
        let (_, again, _) = run_env(&["replay", "--messages", &cap], &[], b"");
        assert_eq!(again, out, "{cap}: replay is not deterministic");
    }
}

#[test]
fn small_messages_are_cut_at_the_limit_and_padded_to_4kb() {
    let load = load_capture();
    // A tenth of the load keeps the test quick.
    let cut = load
        .split(|&b| b == b'\n')
        .take(20_000)
        .collect::<Vec<_>>()
        .join(&b'\n');
    let env = [
        ("AZUREIOTSECURITY_AGENT__MAXMESSAGESIZEINBYTES", "8192"),
        (
            "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDPROCESSCREATE",
            "false",
        ),
        (
            "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDCONNECTIONCREATE",
            "false",
        ),
    ];
    let (code, out, err) = run_env(&["replay", "--messages", "-"], &env, &cut);
    assert_eq!(code, 0, "{err}");
    let messages: Vec<String> = out.lines().map(str::to_string).collect();
    assert!(messages.len() > 20, "{}", messages.len());
    for m in &messages {
        assert!(m.len() <= 8192, "{} bytes", m.len());
    }
    // Full messages: most are within one event of the limit (the rest are the due tails).
    let full = messages.iter().filter(|m| m.len() > 8192 - 1500).count();
    assert!(
        full * 10 >= messages.len() * 8,
        "{full} of {}",
        messages.len()
    );
    assert_valid(&messages[..50.min(messages.len())], "8 KB messages");
    let (_, events, _) = run_env(&["replay", "-"], &[], &cut);
    assert_eq!(counts_in_messages(&messages), counts_of_events(&events));
    // Without aggregation no event carries a HitCount.
    assert!(!out.contains("HitCount"));
}

#[test]
fn aggregation_merges_repeated_events_and_keeps_every_hit() {
    // sshd re-execs itself and runs the same helpers on every connection.
    let cap = support::root().join("tests/data/login_ssh.log");
    let cap = cap.to_str().unwrap();
    let (code, agg, err) = run_env(&["replay", "--messages", cap], &[], b"");
    assert_eq!(code, 0, "{err}");
    let env = [
        (
            "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDPROCESSCREATE",
            "false",
        ),
        (
            "AZUREIOTSECURITY_AGENT__AGGREGATIONENABLEDCONNECTIONCREATE",
            "false",
        ),
    ];
    let (code, plain, err) = run_env(&["replay", "--messages", cap], &env, b"");
    assert_eq!(code, 0, "{err}");
    let a: Vec<String> = agg.lines().map(str::to_string).collect();
    let p: Vec<String> = plain.lines().map(str::to_string).collect();
    let events = |ms: &[String]| {
        ms.iter()
            .map(|m| {
                let v: Value = serde_json::from_str(m).unwrap();
                v["Events"].as_array().unwrap().len()
            })
            .sum::<usize>()
    };
    assert!(events(&a) < events(&p), "{} vs {}", events(&a), events(&p));
    // The same hits, told in fewer events.
    assert_eq!(counts_in_messages(&a), counts_in_messages(&p));
    let max_hits = a
        .iter()
        .flat_map(|m| {
            let v: Value = serde_json::from_str(m).unwrap();
            v["Events"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| {
                    e["Payload"][0]["ExtraDetails"]["HitCount"]
                        .as_str()
                        .map(|h| h.parse::<u64>().unwrap())
                })
                .collect::<Vec<_>>()
        })
        .max();
    assert_eq!(max_hits, Some(5));
    assert_valid(&a, "aggregated");
}

#[test]
fn a_huge_command_line_is_shortened_and_says_so() {
    let cap = support::root().join("tests/data/exec_args.log");
    let env = [("AZUREIOTSECURITY_AGENT__MAXMESSAGESIZEINBYTES", "8192")];
    let (code, out, err) = run_env(&["replay", "--messages", cap.to_str().unwrap()], &env, b"");
    assert_eq!(code, 0, "{err}");
    let messages: Vec<String> = out.lines().map(str::to_string).collect();
    assert_valid(&messages, "shortened");
    let mut shortened = Vec::new();
    for m in &messages {
        assert!(m.len() <= 8192);
        let v: Value = serde_json::from_str(m).unwrap();
        for e in v["Events"].as_array().unwrap() {
            let x = &e["Payload"][0]["ExtraDetails"];
            if x["CommandLineTruncated"] == "true" {
                shortened.push(x["CommandLineLength"].as_str().unwrap().to_string());
            }
        }
    }
    shortened.sort();
    // The 9000-byte argument and the 2100 arguments (their full lengths are reported).
    assert_eq!(shortened.len(), 2, "{shortened:?}");
    assert!(shortened.contains(&"9010".to_string()), "{shortened:?}");
}

#[test]
fn bad_agent_settings_are_a_configuration_error_event() {
    let cap = support::root().join("tests/data/net_tcp.log");
    let env = [
        ("AZUREIOTSECURITY_AGENT__MAXMESSAGESIZEINBYTES", "10000"),
        (
            "AZUREIOTSECURITY_AGENT__HIGHPRIORITYMESSAGEFREQUENCY",
            "PT6H",
        ),
    ];
    let (code, out, err) = run_env(&["replay", "--messages", cap.to_str().unwrap()], &env, b"");
    assert_eq!(code, 0, "{err}");
    let messages: Vec<String> = out.lines().map(str::to_string).collect();
    assert_valid(&messages, "configuration errors");
    let mut found = Vec::new();
    for m in &messages {
        let v: Value = serde_json::from_str(m).unwrap();
        for e in v["Events"].as_array().unwrap() {
            if e["Name"] == "ConfigurationError" {
                for p in e["Payload"].as_array().unwrap() {
                    found.push((
                        p["ConfigurationName"].as_str().unwrap().to_string(),
                        p["ErrorType"].as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    found.sort();
    assert_eq!(
        found,
        vec![
            (
                "highPriorityMessageFrequency".to_string(),
                "Conflict".to_string()
            ),
            (
                "maxMessageSizeInBytes".to_string(),
                "NotOptimal".to_string()
            ),
        ]
    );
    // check-config says the same and exits 1.
    let (code, _, err) = run_env(&["check-config"], &env, b"");
    assert_eq!(code, 1);
    assert!(
        err.contains("Conflict highPriorityMessageFrequency"),
        "{err}"
    );
}

/// Moved here from agent_settings (quick tier, no Python): the messages with the
/// ConfigurationError of a zero snapshot frequency are valid for both validators.
#[test]
fn a_zero_snapshot_frequency_gives_valid_messages() {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "[agent]\nsnapshotFrequency = \"PT0S\"\n").unwrap();
    let cap = support::root().join("tests/data/net_tcp.log");
    let args = [
        "replay",
        "--messages",
        "--config",
        f.path().to_str().unwrap(),
        cap.to_str().unwrap(),
    ];
    let (code, out, err) = run_env(&args, &[], b"");
    assert_eq!(code, 0, "{err}");
    let messages: Vec<String> = out.lines().map(str::to_string).collect();
    assert!(
        out.contains("\"ConfigurationName\":\"snapshotFrequency\""),
        "the configuration error is in the messages: {out}"
    );
    assert_valid(&messages, "zero snapshot frequency");
}
