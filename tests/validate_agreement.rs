//! The module's own validator (`src/validate/`) and the reference validator
//! (python-jsonschema, draft-07, format checking on, over `../shared/schemas`) on the same
//! messages: the verdicts (ok / invalid) must agree, message for message.
//!
//! Needs the venv made by `scripts/install-test-deps.sh`: without it these tests fail (the
//! reference helper panics), they never skip. Each test runs the reference once, on its whole
//! batch.

mod support;

use std::collections::{BTreeMap, HashSet};

use azureiotsecurity::validate::{validate_lines, validate_message};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------
// Inputs.

fn samples() -> Value {
    let p = support::schema_dir().join("samples.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("samples.json is JSON")
}

fn sample_list(s: &Value, which: &str) -> Vec<Value> {
    s[which].as_array().expect("samples arrays").clone()
}

/// Every event of `tests/data/*.events.jsonl`, file by file.
fn data_events() -> Vec<(String, Vec<Value>)> {
    let dir = support::root().join("tests/data");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".events.jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests/data/*.events.jsonl");
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("events file");
            let events = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("an event per line"))
                .collect();
            (p.display().to_string(), events)
        })
        .collect()
}

fn message_of(events: Vec<Value>) -> Value {
    serde_json::from_str(&support::envelope(&events)).expect("envelope is JSON")
}

/// Events of the four types neither the samples nor the captures have.
fn extra_events() -> Vec<Value> {
    let head = |category: &str, name: &str, event_type: &str, payload: Value| {
        json!({
            "Id": "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
            "TimestampLocal": "2024-02-29T23:59:59.999999+05:30",
            "TimestampUTC": "2024-02-29T18:29:59.999999Z",
            "Category": category, "Name": name, "EventType": event_type,
            "IsEmpty": false, "PayloadSchemaVersion": "1.0", "Payload": payload,
        })
    };
    vec![
        head(
            "Triggered",
            "ProcessTerminate",
            "Security",
            json!([{"Executable": "/bin/true", "ProcessId": 42, "ExitStatus": 0,
                    "ExtraDetails": {"Signal": "none"}}]),
        ),
        head(
            "Triggered",
            "ConfigurationError",
            "Operational",
            json!([{"ConfigurationName": "eventPriorityProcessCreate", "ErrorType": "TypeMismatch",
                    "UsedConfiguration": "High", "Message": "not a priority"}]),
        ),
        head(
            "Periodic",
            "DroppedEventsStatistics",
            "Operational",
            json!([{"Queue": "High", "CollectedEvents": 10, "DroppedEvents": 0},
                   {"Queue": "Low", "CollectedEvents": 3, "DroppedEvents": 1,
                    "ExtraDetails": {"Reason": "outbox full"}}]),
        ),
        head(
            "Periodic",
            "MessageStatistics",
            "Operational",
            json!([{"MessagesSent": 7, "MessagesUnder4KB": 2, "TotalFailed": 0}]),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Running both.

fn ours_ok(m: &str) -> bool {
    validate_message(m).is_ok()
}

/// Run ours and the reference on every message (one reference call) and fail listing every
/// disagreement. Returns the reference verdicts.
fn assert_agree(label: &str, messages: &[String]) -> Vec<String> {
    let reference = support::reference_validate(messages);
    let mut disagreements = Vec::new();
    let mut valid = 0usize;
    for (i, (m, r)) in messages.iter().zip(&reference).enumerate() {
        let ours = validate_message(m);
        if r == "ok" {
            valid += 1;
        }
        if ours.is_ok() != (r == "ok") {
            let shown: String = m.chars().take(600).collect();
            let ours = match ours {
                Ok(()) => "ok".to_string(),
                Err(v) => v
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            disagreements.push(format!(
                "#{i}\n  message:   {shown}\n  ours:      {ours}\n  reference: {r}"
            ));
        }
    }
    eprintln!(
        "{label}: {} messages, {valid} valid and {} invalid per the reference, {} disagreements",
        messages.len(),
        messages.len() - valid,
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "{label}: {} of {} messages disagree:\n{}",
        disagreements.len(),
        messages.len(),
        disagreements
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    reference
}

// ---------------------------------------------------------------------------------------
// Editing JSON values by pointer.

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn split(ptr: &str) -> (&str, String) {
    let at = ptr.rfind('/').expect("a pointer below the root");
    (&ptr[..at], unescape(&ptr[at + 1..]))
}

/// Every node below the root, in document order.
fn pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let p = format!("{at}/{}", escape(k));
                    out.push(p.clone());
                    walk(child, &p, out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    out.push(p.clone());
                    walk(child, &p, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

fn objects(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = if v.is_object() {
        vec![String::new()]
    } else {
        Vec::new()
    };
    out.extend(
        pointers(v)
            .into_iter()
            .filter(|p| v.pointer(p).is_some_and(Value::is_object)),
    );
    out
}

/// The value with the node at `ptr` replaced (unchanged when there is no such node).
fn with(base: &Value, ptr: &str, new: Value) -> Value {
    let mut v = base.clone();
    if let Some(node) = v.pointer_mut(ptr) {
        *node = new;
    }
    v
}

fn without(base: &Value, ptr: &str) -> Value {
    let mut v = base.clone();
    let (parent, last) = split(ptr);
    match v.pointer_mut(parent).expect("parent exists") {
        Value::Object(m) => {
            m.remove(&last);
        }
        Value::Array(a) => {
            let i: usize = last.parse().expect("an index");
            a.remove(i);
        }
        _ => unreachable!("a parent is a container"),
    }
    v
}

fn with_key(base: &Value, obj: &str, key: &str, new: Value) -> Value {
    let mut v = base.clone();
    if let Some(Value::Object(m)) = v.pointer_mut(obj) {
        m.insert(key.to_string(), new);
    }
    v
}

const RAW: &str = "@@RAW@@";

/// The message with the node at `ptr` replaced by raw JSON text (numbers serde_json cannot
/// hold, escapes it would not write).
fn with_raw(base: &Value, ptr: &str, raw: &str) -> String {
    with(base, ptr, Value::String(RAW.into()))
        .to_string()
        .replace(&format!("\"{RAW}\""), raw)
}

// ---------------------------------------------------------------------------------------
// Edge cases.

const TIMESTAMPS: &[&str] = &[
    "2018-10-09T16:22:50Z",
    "2018-10-09T16:22:50.000+01:00",
    "2018-10-09t16:22:50z",
    "2018-10-09T16:22:50z",
    "2018-10-09t16:22:50Z",
    "2018-10-09 16:22:50Z",
    "2018-10-09_16:22:50Z",
    "2018-10-09T16:22:50",
    "2018-10-09T16:22:50+01",
    "2018-10-09T16:22:50+0100",
    "2018-10-09T16:22:50+01:00:00",
    "2018-10-09T16:22:50-23:59",
    "2018-10-09T16:22:50+24:00",
    "2018-10-09T16:22:50+01:60",
    "2018-10-09T16:22:50.Z",
    "2018-10-09T16:22:50.1Z",
    "2018-10-09T16:22:50.123456789012345Z",
    "2018-10-09T16:22:50,123Z",
    "2018-10-09T24:00:00Z",
    "2018-10-09T23:59:59Z",
    "2018-10-09T23:59:60Z",
    "2018-10-09T23:60:00Z",
    "2018-10-09T00:00:00Z",
    "2020-02-29T12:00:00Z",
    "2019-02-29T12:00:00Z",
    "2000-02-29T12:00:00Z",
    "1900-02-29T12:00:00Z",
    "2100-02-29T12:00:00Z",
    "2400-02-29T12:00:00Z",
    "2018-02-28T12:00:00Z",
    "2018-04-31T12:00:00Z",
    "2018-04-30T12:00:00Z",
    "2018-12-31T12:00:00Z",
    "2018-12-32T12:00:00Z",
    "2018-00-10T12:00:00Z",
    "2018-13-10T12:00:00Z",
    "2018-10-00T12:00:00Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "10000-01-01T00:00:00Z",
    "18-10-09T16:22:50Z",
    "2018-1-09T16:22:50Z",
    "2018-10-9T16:22:50Z",
    "2018-10-09T6:22:50Z",
    "2018-10-09T16:22:50Z\n",
    "2018-10-09T16:22:50Z\n\n",
    "2018-10-09T16:22:50Z ",
    " 2018-10-09T16:22:50Z",
    "2018-10-09T16:22:50Z\t",
    "2018-10-09T16:22:50ZZ",
    "2018-10-09T16:22:50\u{662}Z",
    "\u{ff12}018-10-09T16:22:50Z",
    "2018-10-09\u{131}16:22:50Z",
    "2018-10-09T16:22:50\u{17f}",
    "2018-10-09",
    "16:22:50Z",
    "",
];

const IPS: &[&str] = &[
    "0.0.0.0",
    "1.2.3.4",
    "10.228.100.167",
    "255.255.255.255",
    "256.1.1.1",
    "01.2.3.4",
    "1.2.3.04",
    "1.2.3.0",
    "00.1.2.3",
    "1.2.3",
    "1.2.3.4.5",
    "1.2.3.",
    ".1.2.3",
    "1..2.3",
    "1.2.3.4/32",
    "1.2.3.4 ",
    " 1.2.3.4",
    "1.2.3.4\n",
    "0x1.2.3.4",
    "1234.1.1.1",
    "\u{661}.2.3.4",
    "::",
    "::1",
    "::ffff:1.2.3.4",
    "::FFFF:1.2.3.4",
    "::ffff:c000:0280",
    "::ffff:01.2.3.4",
    "::ffff:256.2.3.4",
    "fe80::1",
    "fe80::1%eth0",
    "fe80::1%",
    "fe80::1%25",
    "2001:db8::8a2e:370:7334",
    "2001:0db8:0000:0000:0000:ff00:0042:8329",
    "2001:DB8::1",
    "1:2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7::",
    "::2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8::",
    "::1:2:3:4:5:6:7:8",
    "1::2::3",
    ":::",
    ":1::",
    "1:",
    ":1:2:3:4:5:6:7",
    "1:2:3:4:5:6:1.2.3.4",
    "1:2:3:4:5:6:7:1.2.3.4",
    "1::1.2.3.4.5",
    "::1.2.3",
    "1.2.3.4::",
    "::/0",
    "::1/128",
    "00000::",
    "0000::",
    "::g",
    "::12345",
    "[::1]",
    "localhost",
    "",
];

/// Raw JSON numbers and non-numbers for integer fields.
fn integers() -> Vec<String> {
    let mut v: Vec<String> = [
        "0",
        "7",
        "-1",
        "-2147483649",
        "4294967296",
        "9007199254740993",
        "18446744073709551616",
        "-18446744073709551617",
        "123456789012345678901234567890",
        "1.0",
        "-1.0",
        "1.5",
        "-0.0",
        "0.0",
        "1e2",
        "1E2",
        "1e+2",
        "1.5e1",
        "1.25e1",
        "2.5e-1",
        "1e-400",
        "1e400",
        "-1e400",
        "1e308",
        "4503599627370496.5",
        "4503599627370497.5",
        "1.0000000000000000000001",
        "0.9999999999999999999999",
        "true",
        "false",
        "null",
        "\"1\"",
        "[1]",
        "{}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("9".repeat(400));
    v.push(format!("-{}", "9".repeat(400)));
    v.push(format!("{}.0", "9".repeat(400)));
    v.push(format!("1{}", "0".repeat(4299)));
    v.push(format!("1{}", "0".repeat(4300)));
    v.push(format!("-1{}", "0".repeat(4299)));
    v
}

const ENUM_VALUES: &[&str] = &[
    "Periodic",
    "Triggered",
    "Aggregated",
    "periodic",
    "Security",
    "Operational",
    "Diagnostic",
    "security",
    "In",
    "Out",
    "in",
    "Fail",
    "Success",
    "Pass",
    "Err",
    "Allow",
    "Deny",
    "Other",
    "Critical",
    "Important",
    "Warning",
    "Informational",
    "Fatal",
    "Error",
    "Information",
    "Debug",
    "TypeMismatch",
    "NotOptimal",
    "Conflict",
    "High",
    "Low",
    "1.0",
    "1.1",
    "1",
    "",
    " Periodic",
];

const NAMES: &[&str] = &[
    "ConnectionCreate",
    "Login",
    "ProcessCreate",
    "ProcessTerminate",
    "ListeningPorts",
    "FirewallConfiguration",
    "LocalUsers",
    "ConnectedHardware",
    "OSBaseline",
    "SystemInformation",
    "Diagnostic",
    "ConfigurationError",
    "DroppedEventsStatistics",
    "MessageStatistics",
    "SBoM",
    "processcreate",
    "NotAType",
    "",
];

const INT_FIELDS: &[&str] = &[
    "ProcessId",
    "ParentProcessId",
    "ThreadId",
    "ExitStatus",
    "Priority",
    "TotalPhysicalMemoryInKB",
    "FreePhysicalMemoryInKB",
    "TotalVirtualMemoryInKB",
    "FreeVirtualMemoryInKB",
    "CollectedEvents",
    "DroppedEvents",
    "MessagesSent",
    "MessagesUnder4KB",
    "TotalFailed",
];

const ENUM_FIELDS: &[&str] = &[
    "Direction",
    "Result",
    "Action",
    "Severity",
    "ErrorType",
    "Queue",
];

/// Values of another type for a node.
fn retyped(v: &Value) -> Vec<Value> {
    match v {
        Value::String(_) => vec![json!(7), json!(null), json!(true), json!(["x"]), json!({})],
        Value::Number(_) => vec![json!("7"), json!(7.5), json!(false), json!(null)],
        Value::Bool(b) => vec![json!(b.to_string()), json!(0), json!(null), json!(!b)],
        Value::Null => vec![json!("")],
        Value::Array(_) => vec![json!("x"), json!({}), json!(null), json!([])],
        Value::Object(_) => vec![json!("x"), json!([]), json!(null), json!({})],
    }
}

/// The first payload item of the first event.
fn first_item(m: &Value) -> Option<&Map<String, Value>> {
    m.pointer("/Events/0/Payload/0").and_then(Value::as_object)
}

/// One single-event message per distinct shape (event name, payload length and keys).
fn representatives(messages: &[Value]) -> Vec<Value> {
    let mut seen = HashSet::new();
    messages
        .iter()
        .filter(|m| m["Events"].as_array().map(Vec::len) == Some(1))
        .filter(|m| {
            let name = m.pointer("/Events/0/Name").cloned().unwrap_or_default();
            let keys: Vec<String> = first_item(m)
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            let len = m
                .pointer("/Events/0/Payload")
                .and_then(Value::as_array)
                .map(Vec::len);
            seen.insert((name.to_string(), keys, len))
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn official_samples_have_the_pinned_verdicts_in_both() {
    let s = samples();
    let valid = sample_list(&s, "valid");
    let invalid = sample_list(&s, "invalid");
    assert_eq!(valid.len(), 13);
    let valid_text: Vec<String> = valid.iter().map(Value::to_string).collect();
    let invalid_text: Vec<String> = invalid.iter().map(Value::to_string).collect();
    let mut all = valid_text.clone();
    all.extend(invalid_text.iter().cloned());
    let reference = assert_agree("samples", &all);
    for (i, m) in valid_text.iter().enumerate() {
        let ours = validate_message(m);
        if i <= 8 {
            assert_eq!(ours, Ok(()), "valid item {i}");
            assert_eq!(reference[i], "ok", "valid item {i}");
        } else {
            // Space-separated timestamps ("2018-10-09 16:22:50Z"): not RFC 3339.
            let v = ours.expect_err("a space-separated timestamp");
            assert!(
                v.iter().any(|v| v.path == "/Events/0/TimestampLocal"
                    && v.message.contains("not an RFC 3339 date-time")),
                "valid item {i}: {v:?}"
            );
            assert!(reference[i].starts_with("invalid"), "valid item {i}");
        }
    }
    for (i, m) in invalid_text.iter().enumerate() {
        assert!(!ours_ok(m), "invalid item {i}");
        assert!(
            reference[valid.len() + i].starts_with("invalid"),
            "invalid item {i}"
        );
    }
}

/// The bases of the corpus: every valid sample, samples 9-12 with their timestamps made
/// RFC 3339, every captured event (one per message, and each file as one message), and an
/// event of each type nothing else has.
fn bases() -> Vec<Value> {
    let s = samples();
    let mut out = sample_list(&s, "valid");
    for m in sample_list(&s, "valid").iter().skip(9) {
        let fixed = m.to_string().replace("-09 1", "-09T1");
        out.push(serde_json::from_str(&fixed).expect("JSON"));
    }
    for (_, events) in data_events() {
        for e in &events {
            out.push(message_of(vec![e.clone()]));
        }
        out.push(message_of(events));
    }
    for e in extra_events() {
        out.push(message_of(vec![e]));
    }
    out
}

fn corpus() -> Vec<String> {
    let bases = bases();
    let reps = representatives(&bases);
    let mut out: Vec<String> = bases.iter().map(Value::to_string).collect();

    // Structure, on one message of each shape: drop every key or item, add an unknown key to
    // every object, give every node a value of another type.
    for m in &reps {
        for p in pointers(m) {
            out.push(without(m, &p).to_string());
            for new in retyped(m.pointer(&p).expect("node")) {
                out.push(with(m, &p, new).to_string());
            }
        }
        for o in objects(m) {
            out.push(with_key(m, &o, "Unknown", json!("x")).to_string());
        }
    }

    // Values: timestamps, addresses, integers, enums, GUIDs, each key on two shapes that
    // have it (Name on every shape).
    let ints = integers();
    let mut swept: BTreeMap<String, usize> = BTreeMap::new();
    for m in &reps {
        for p in pointers(m) {
            let (_, key) = split(&p);
            let Some(node) = m.pointer(&p) else { continue };
            let times = swept.entry(key.clone()).or_default();
            *times += 1;
            if key.starts_with("Timestamp") && *times <= 3 {
                for ts in TIMESTAMPS {
                    out.push(with(m, &p, json!(ts)).to_string());
                }
            }
            if *times > 2 && key != "Name" {
                continue;
            }
            if key.ends_with("Address") && node.is_string() {
                for ip in IPS {
                    out.push(with(m, &p, json!(ip)).to_string());
                }
            }
            if INT_FIELDS.contains(&key.as_str()) {
                for raw in &ints {
                    out.push(with_raw(m, &p, raw));
                }
            }
            if ENUM_FIELDS.contains(&key.as_str())
                || [
                    "Category",
                    "EventType",
                    "PayloadSchemaVersion",
                    "MessageSchemaVersion",
                ]
                .contains(&key.as_str())
            {
                for e in ENUM_VALUES {
                    out.push(with(m, &p, json!(e)).to_string());
                }
            }
            if key == "Name" && p.matches('/').count() == 3 {
                for n in NAMES {
                    out.push(with(m, &p, json!(n)).to_string());
                }
            }
            if ["AgentId", "Id", "CorrelationId"].contains(&key.as_str()) {
                for g in [
                    "",
                    "072f3eca-3db0-45ba-8174-fa383bc93ca",
                    "072f3eca-3db0-45ba-8174-fa383bc93caff",
                    "not-a-guid-but-thirty-six-characters",
                    "éééééééééééééééééééééééééééééééééééé",
                    "072f3eca-3db0-45ba-8174-fa383bc93ca\u{1F600}",
                    "072f3eca 3db0 45ba 8174 fa383bc93caf",
                ] {
                    out.push(with(m, &p, json!(g)).to_string());
                }
                // Escapes: a surrogate pair is one character, a lone surrogate too.
                for raw in [
                    r#""072f3eca-3db0-45ba-8174-fa383bc93ca\ud83d\ude00""#,
                    r#""072f3eca-3db0-45ba-8174-fa383bc93ca\ud800""#,
                    r#""072f3eca-3db0-45ba-8174-fa383bc93c\udc00\ud800""#,
                    r#""072f3eca-3db0-45ba-8174-fa383bc93ca\u0066""#,
                ] {
                    out.push(with_raw(m, &p, raw));
                }
            }
            if key == "ExtraDetails" {
                for d in [
                    json!({}),
                    json!({"k": 1}),
                    json!({"k": null}),
                    json!({"k": ["v"]}),
                    json!({"": ""}),
                    json!({"a/b~c": "x", "ключ": "значение"}),
                    json!({"HitCount": "3", "StartTimeUtc": "2018-10-09T16:22:50Z"}),
                    json!("x"),
                    json!([]),
                ] {
                    out.push(with(m, &p, d).to_string());
                }
            }
            if key.ends_with("Port") || key == "UserId" {
                for v in [json!("*"), json!("22,53"), json!(""), json!(22), json!(0)] {
                    out.push(with(m, &p, v).to_string());
                }
            }
        }
    }

    // The Category / IsEmpty / Payload rule, and the payload's items, on every shape.
    for m in &reps {
        let items = m.pointer("/Events/0/Payload").cloned().unwrap_or(json!([]));
        for category in ["Periodic", "Triggered"] {
            for is_empty in [true, false] {
                for payload in [json!([]), items.clone()] {
                    let mut v = with(m, "/Events/0/Category", json!(category));
                    v = with(&v, "/Events/0/IsEmpty", json!(is_empty));
                    v = with(&v, "/Events/0/Payload", payload);
                    out.push(v.to_string());
                }
            }
        }
        if let Some(first) = items.get(0) {
            let doubled = json!([first, first]);
            out.push(with(m, "/Events/0/Payload", doubled).to_string());
            out.push(with(m, "/Events/0/Payload", json!([first, 1])).to_string());
            out.push(with(m, "/Events/0/Payload", json!([first, {}])).to_string());
            out.push(with(m, "/Events/0/Payload", json!([[first]])).to_string());
        }
        let event = m.pointer("/Events/0").cloned().unwrap_or(json!({}));
        out.push(with(m, "/Events", json!([])).to_string());
        out.push(with(m, "/Events", json!([event, event])).to_string());
        out.push(with(m, "/Events", json!([event, {}])).to_string());
        out.push(with(m, "/Events", json!(event)).to_string());
        out.push(with(m, "/Events", json!([[event]])).to_string());
    }

    // Login: UserId or UserName.
    for m in reps
        .iter()
        .filter(|m| m.pointer("/Events/0/Name") == Some(&json!("Login")))
    {
        for drop in [vec!["UserId", "UserName"], vec!["UserId"], vec!["UserName"]] {
            let mut v = m.clone();
            for k in drop {
                if v.pointer(&format!("/Events/0/Payload/0/{k}")).is_some() {
                    v = without(&v, &format!("/Events/0/Payload/0/{k}"));
                }
            }
            out.push(v.to_string());
            out.push(with_key(&v, "/Events/0/Payload/0", "UserId", json!("0")).to_string());
            out.push(with_key(&v, "/Events/0/Payload/0", "UserId", json!(0)).to_string());
        }
    }

    // JSON text the way only raw text can say it, on the first sample.
    let m = bases[0].to_string();
    let ev = r#""Category":"Periodic""#;
    assert!(m.contains(ev), "{m}");
    out.extend([
        m.replacen(ev, &format!(r#""Category":1,{ev}"#), 1),
        m.replacen(ev, &format!(r#"{ev},"Category":1"#), 1),
        m.replacen(ev, &format!(r#"{ev},"Category":"Triggered""#), 1),
        m.replacen(ev, r#""Cat\u0065gory":"Periodic""#, 1),
        m.replacen(ev, r#""Category":"P\u0065riodic""#, 1),
        m.replacen(ev, r#""Category":"Periodic\ud800""#, 1),
        m.replacen(ev, r#""Category\ud800":"Periodic""#, 1),
        m.replacen(ev, r#""Category" : "Periodic" "#, 1),
        m.replacen(ev, "\"Category\"\t:\r\"Periodic\"", 1)
            .replace('\r', " "),
        m.replacen(ev, r#""Category":NaN"#, 1),
        m.replacen(ev, r#""Category":"Periodic","#, 1),
        m.replacen("{", "{ ", 1),
        format!("  {m}  "),
        format!("{m}x"),
        format!("{m}{{}}"),
        format!("{m},"),
        m[..m.len() - 1].to_string(),
        format!("[{m}]"),
        "null".into(),
        "1".into(),
        "\"\"".into(),
        "[]".into(),
        "{}".into(),
        "{\"Events\":[]}".into(),
        "NaN".into(),
    ]);
    let cmd = "\"CommandLine\":\"";
    for b in &bases {
        let t = b.to_string();
        if t.contains(cmd) {
            for esc in [
                r"\ud800",
                r"\udfff",
                r"\ud83d\ude00",
                r"\u0000",
                r"\/",
                "\u{7f}",
                "\u{2028}",
            ] {
                out.push(t.replacen(cmd, &format!("{cmd}{esc}"), 1));
            }
            out.push(t.replacen(cmd, &format!("{cmd}\\x"), 1));
            out.push(t.replacen(cmd, &format!("{cmd}\t"), 1));
            break;
        }
    }

    let mut seen = HashSet::new();
    out.retain(|m| seen.insert(m.clone()));
    out
}

#[test]
fn every_mutation_of_the_samples_and_captures_agrees() {
    let messages = corpus();
    assert!(messages.len() > 3000, "{} messages", messages.len());
    let reference = assert_agree("mutations", &messages);
    let valid = reference.iter().filter(|r| *r == "ok").count();
    assert!(
        valid * 10 > messages.len(),
        "only {valid} of {} valid: the corpus should exercise both verdicts",
        messages.len()
    );
    // `azureiotsecurity validate` gives the same verdicts, line by line.
    let input = messages.join("\n");
    let mut out = Vec::new();
    let (ok, bad) = validate_lines(input.as_bytes(), &mut out).expect("in memory");
    assert_eq!((ok, bad), (valid, messages.len() - valid));
    let lines: Vec<String> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(str::to_string)
        .collect();
    for (i, (line, r)) in lines.iter().zip(&reference).enumerate() {
        assert_eq!(line == "ok", r == "ok", "line {}: {line}", i + 1);
        if line != "ok" {
            assert!(
                line.starts_with(&format!("line {}: invalid: /", i + 1)),
                "{line}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic fuzz: random mutations from a seeded xorshift.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Mostly well-formed timestamps with an edge in one place or another.
fn random_timestamp(r: &mut Rng) -> String {
    let year = *r.pick(&[
        "2018", "2020", "2000", "1900", "2100", "0000", "0001", "9999", "2024",
    ]);
    let month = if r.chance(85) {
        format!("{:02}", 1 + r.below(12))
    } else {
        r.pick(&["00", "13", "1", "99"]).to_string()
    };
    let day = if r.chance(60) {
        format!("{:02}", 1 + r.below(28))
    } else {
        r.pick(&["29", "30", "31", "00", "32"]).to_string()
    };
    let sep = *r.pick(&["T", "T", "T", "t", " ", "_"]);
    let hour = if r.chance(85) {
        format!("{:02}", r.below(24))
    } else {
        r.pick(&["24", "25", "7"]).to_string()
    };
    let minute = if r.chance(90) {
        format!("{:02}", r.below(60))
    } else {
        r.pick(&["60", "99"]).to_string()
    };
    let second = if r.chance(90) {
        format!("{:02}", r.below(60))
    } else {
        r.pick(&["60", "61"]).to_string()
    };
    let frac = *r.pick(&["", "", ".000", ".5", ".123456789", ".", ",5"]);
    let zone = *r.pick(&[
        "Z", "Z", "z", "+00:00", "-05:30", "+23:59", "+24:00", "+01:60", "+0100", "", "Z\n", "Z ",
    ]);
    format!("{year}-{month}-{day}{sep}{hour}:{minute}:{second}{frac}{zone}")
}

fn random_ip(r: &mut Rng) -> String {
    let octet = |r: &mut Rng| -> String {
        if r.chance(85) {
            r.below(256).to_string()
        } else {
            r.pick(&["256", "01", "00", "999", "", "1a", "0"])
                .to_string()
        }
    };
    if r.chance(40) {
        let n = if r.chance(90) { 4 } else { 3 + 2 * r.below(2) };
        return (0..n).map(|_| octet(r)).collect::<Vec<_>>().join(".");
    }
    let hextet = |r: &mut Rng| -> String {
        if r.chance(85) {
            format!("{:x}", r.below(0x10000))
        } else {
            r.pick(&["0000", "FFFF", "00000", "g", "12345", "", "0"])
                .to_string()
        }
    };
    let mut n = r.below(9);
    let tail = if r.chance(20) {
        n = n.min(6);
        Some((0..4).map(|_| octet(r)).collect::<Vec<_>>().join("."))
    } else {
        None
    };
    let mut parts: Vec<String> = (0..n).map(|_| hextet(r)).collect();
    if let Some(t) = tail {
        parts.push(t);
    }
    let mut s = if r.chance(60) {
        let at = r.below(parts.len() + 1);
        format!("{}::{}", parts[..at].join(":"), parts[at..].join(":"))
    } else {
        parts.join(":")
    };
    if r.chance(5) {
        const ZONES: [&str; 3] = ["%eth0", "%", "/64"];
        let zone = ZONES[r.below(ZONES.len())];
        s.push_str(zone);
    }
    s
}

const CHARS: &[char] = &[
    '0',
    '1',
    '9',
    ':',
    '-',
    '.',
    'T',
    't',
    'Z',
    'z',
    '+',
    ' ',
    'a',
    'f',
    'F',
    'g',
    '%',
    '/',
    'é',
    '\u{662}',
    '\u{ff10}',
    '\u{131}',
    '\u{17f}',
    '"',
    '\\',
    '\u{0}',
    '\u{1f600}',
];

fn mutate_string(r: &mut Rng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for _ in 0..1 + r.below(2) {
        let at = r.below(chars.len() + 1);
        match r.below(3) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 if at < chars.len() => chars[at] = *r.pick(CHARS),
            _ => chars.insert(at, *r.pick(CHARS)),
        }
    }
    chars.into_iter().collect()
}

/// A random value; raw JSON numbers go in `raws` behind a placeholder.
fn random_value(r: &mut Rng, raws: &mut Vec<String>, ints: &[String]) -> Value {
    match r.below(12) {
        0 => json!(null),
        1 => json!(r.chance(50)),
        2 => json!(r.below(100_000) as i64 - 10),
        3 => {
            raws.push(r.pick(ints).clone());
            json!(format!("@@RAW{}@@", raws.len() - 1))
        }
        4 => json!(random_timestamp(r)),
        5 => json!(random_ip(r)),
        6 => json!(*r.pick(ENUM_VALUES)),
        7 => json!(*r.pick(NAMES)),
        8 => json!(*r.pick(IPS)),
        9 => json!(*r.pick(TIMESTAMPS)),
        10 => json!([]),
        _ => json!({}),
    }
}

/// The value a node had, or one of the same family (timestamps stay timestamp-like).
fn similar(r: &mut Rng, key: &str, v: &Value) -> Option<Value> {
    let s = v.as_str()?;
    Some(json!(if key.starts_with("Timestamp") && r.chance(60) {
        random_timestamp(r)
    } else if key.ends_with("Address") && r.chance(60) {
        random_ip(r)
    } else {
        mutate_string(r, s)
    }))
}

fn fuzz_one(r: &mut Rng, bases: &[Value], ints: &[String]) -> String {
    let mut m = r.pick(bases).clone();
    let mut raws = Vec::new();
    for _ in 0..1 + r.below(3) {
        let ptrs = pointers(&m);
        if ptrs.is_empty() {
            break;
        }
        let p = r.pick(&ptrs).clone();
        let (_, key) = split(&p);
        let node = m.pointer(&p).cloned().unwrap_or_default();
        m = match r.below(10) {
            0 => without(&m, &p),
            1 => {
                let objs = objects(&m);
                let obj = r.pick(&objs).clone();
                let k = if r.chance(70) {
                    let known = [
                        "Id",
                        "Name",
                        "Payload",
                        "UserId",
                        "UserName",
                        "ExtraDetails",
                        "Unknown",
                        "RemoteAddress",
                        "ProcessId",
                        "Category",
                        "IsEmpty",
                        "Events",
                    ];
                    r.pick(&known).to_string()
                } else {
                    mutate_string(r, "Key")
                };
                let v = random_value(r, &mut raws, ints);
                with_key(&m, &obj, &k, v)
            }
            2 | 3 => match similar(r, &key, &node) {
                Some(v) => with(&m, &p, v),
                None => with(&m, &p, random_value(r, &mut raws, ints)),
            },
            4 if INT_FIELDS.contains(&key.as_str()) || node.is_number() => {
                raws.push(r.pick(ints).clone());
                with(&m, &p, json!(format!("@@RAW{}@@", raws.len() - 1)))
            }
            5 => match node {
                Value::Array(a) if !a.is_empty() => {
                    let mut a = a.clone();
                    if r.chance(50) {
                        let dup = a[r.below(a.len())].clone();
                        a.push(dup);
                    } else {
                        a.clear();
                    }
                    with(&m, &p, Value::Array(a))
                }
                Value::Bool(b) => with(&m, &p, json!(!b)),
                _ => with(&m, &p, random_value(r, &mut raws, ints)),
            },
            6 => {
                // A node from another base at the same place, when it has one.
                let other = r.pick(bases);
                match other.pointer(&p) {
                    Some(v) => with(&m, &p, v.clone()),
                    None => m,
                }
            }
            7 => {
                let cat = *r.pick(&["Periodic", "Triggered"]);
                let v = with(&m, "/Events/0/Category", json!(cat));
                with(&v, "/Events/0/IsEmpty", json!(r.chance(50)))
            }
            _ => with(&m, &p, random_value(r, &mut raws, ints)),
        };
    }
    let mut text = m.to_string();
    for (i, raw) in raws.iter().enumerate() {
        text = text.replace(&format!("\"@@RAW{i}@@\""), raw);
    }
    // Now and then, a raw edit of the text itself.
    if r.chance(8) {
        let mut chars: Vec<char> = text.chars().collect();
        let at = 1 + r.below(chars.len().saturating_sub(2));
        let punct = [
            '{', '}', '[', ']', ',', ':', '"', '\\', '0', '-', 'e', '.', ' ', 'n',
        ];
        match r.below(3) {
            0 => {
                chars.remove(at);
            }
            1 => chars[at] = *r.pick(&punct),
            _ => chars.insert(at, *r.pick(&punct)),
        }
        text = chars.into_iter().collect();
    }
    text
}

#[test]
fn seeded_random_mutations_agree() {
    let all = bases();
    // Every shape, weighted toward the ones that carry addresses and integers.
    let mut pool = representatives(&all);
    pool.extend(all.iter().take(13).cloned());
    let ints = integers();
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut seen = HashSet::new();
    let mut messages = Vec::new();
    let mut tries = 0;
    while messages.len() < 4000 && tries < 100_000 {
        tries += 1;
        let m = fuzz_one(&mut r, &pool, &ints);
        // The reference reads lines: a line break would split the message in two.
        if m.contains(['\n', '\r']) {
            continue;
        }
        if seen.insert(m.clone()) {
            messages.push(m);
        }
    }
    assert_eq!(messages.len(), 4000);
    let reference = assert_agree("fuzz", &messages);
    let mut verdicts: BTreeMap<bool, usize> = BTreeMap::new();
    for r in &reference {
        *verdicts.entry(r == "ok").or_default() += 1;
    }
    assert!(
        verdicts.get(&true).copied().unwrap_or(0) > 200,
        "too few valid messages: {verdicts:?}"
    );
}

/// What the reference does at the edges, pinned: both validators must give these verdicts.
#[test]
fn the_reference_quirks_are_pinned() {
    let base = message_of(vec![extra_events().swap_remove(0)]);
    let ts = "/Events/0/TimestampUTC";
    let pid = "/Events/0/Payload/0/ProcessId";
    let cases: Vec<(&str, String, bool)> = vec![
        (
            "lowercase t and z",
            with(&base, ts, json!("2024-02-29t18:29:59z")).to_string(),
            true,
        ),
        (
            "one trailing newline ($ in Python)",
            with(&base, ts, json!("2024-02-29T18:29:59Z\n")).to_string(),
            true,
        ),
        (
            "two trailing newlines",
            with(&base, ts, json!("2024-02-29T18:29:59Z\n\n")).to_string(),
            false,
        ),
        (
            "space separator",
            with(&base, ts, json!("2024-02-29 18:29:59Z")).to_string(),
            false,
        ),
        (
            "24:00",
            with(&base, ts, json!("2024-02-29T24:00:00Z")).to_string(),
            false,
        ),
        (
            "leap second",
            with(&base, ts, json!("2016-12-31T23:59:60Z")).to_string(),
            false,
        ),
        (
            "29 Feb 2023",
            with(&base, ts, json!("2023-02-29T00:00:00Z")).to_string(),
            false,
        ),
        (
            "year 0000",
            with(&base, ts, json!("0000-01-01T00:00:00Z")).to_string(),
            false,
        ),
        (
            "no offset",
            with(&base, ts, json!("2024-02-29T18:29:59")).to_string(),
            false,
        ),
        ("integer as 1.0", with_raw(&base, pid, "1.0"), true),
        ("integer as 1e2", with_raw(&base, pid, "1e2"), true),
        ("integer as 1.5", with_raw(&base, pid, "1.5"), false),
        (
            "integer as 1e400 (inf)",
            with_raw(&base, pid, "1e400"),
            false,
        ),
        (
            "2^52 + 0.5 rounds to an integer",
            with_raw(&base, pid, "4503599627370496.5"),
            true,
        ),
        ("negative ProcessId", with_raw(&base, pid, "-1"), true),
        (
            "400-digit integer",
            with_raw(&base, pid, &"9".repeat(400)),
            true,
        ),
        (
            "4301-digit integer (Python's limit)",
            with_raw(&base, pid, &"9".repeat(4301)),
            false,
        ),
        (
            "duplicate key, last wins",
            with_raw(&base, pid, "\"x\",\"ProcessId\":1"),
            true,
        ),
        (
            "duplicate key, last loses",
            with_raw(&base, pid, "1,\"ProcessId\":\"x\""),
            false,
        ),
        (
            "lone surrogate in a string",
            with_raw(&base, "/Events/0/Payload/0/Executable", r#""\ud800""#),
            true,
        ),
    ];
    let texts: Vec<String> = cases.iter().map(|(_, m, _)| m.clone()).collect();
    let reference = assert_agree("quirks", &texts);
    for ((what, _, expected), r) in cases.iter().zip(&reference) {
        assert_eq!(r == "ok", *expected, "{what}: {r}");
    }
}

/// The five snapshot payloads as the module's own types serialize them (synthetic items:
/// every optional field set, so each one meets its schema rule), each event valid in both
/// validators; and for each, one breakage of its typed schema that both call invalid.
#[test]
fn snapshot_payloads_are_valid_and_their_breakages_invalid_in_both() {
    use azureiotsecurity::events::{
        BaselineCheck, BaselineResult, BaselineSeverity, Details, FirewallAction, FirewallRule,
        ListeningPort, LocalUser, Payload, SecurityEvent, SystemInformation,
        connection_create::Direction,
    };
    let details = |pairs: &[(&str, &str)]| -> Details {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let payloads = vec![
        Payload::SystemInformation(vec![SystemInformation {
            os_name: Some("Debian GNU/Linux".into()),
            os_version: Some("12 (bookworm)".into()),
            os_vendor: Some("Debian".into()),
            os_architecture: Some("x86_64".into()),
            host_name: Some("edge-1".into()),
            bios_version: Some("1.16.3-debian-1.16.3-2".into()),
            boot_device: Some("/dev/vda1".into()),
            total_physical_memory_kb: Some(4_026_532),
            free_physical_memory_kb: Some(1_024_000),
            total_virtual_memory_kb: Some(5_074_104),
            free_virtual_memory_kb: Some(2_071_572),
            extra_details: details(&[("KernelRelease", "6.1.0-18-amd64"), ("CpuCount", "2")]),
        }]),
        Payload::LocalUsers(vec![
            LocalUser {
                group_ids: "0".into(),
                group_names: "root".into(),
                user_id: "0".into(),
                user_name: "root".into(),
                extra_details: details(&[("Shell", "/bin/bash"), ("UidZero", "true")]),
            },
            LocalUser {
                group_ids: "1000;27".into(),
                group_names: "user;sudo".into(),
                user_id: "1000".into(),
                user_name: "user".into(),
                extra_details: Details::new(),
            },
        ]),
        Payload::ListeningPorts(vec![
            ListeningPort {
                remote_address: Some("0.0.0.0".parse().unwrap()),
                remote_port: Some("*".into()),
                local_address: Some("0.0.0.0".parse().unwrap()),
                local_port: "22".into(),
                protocol: "TCP".into(),
                extra_details: details(&[("ProcessId", "612"), ("Executable", "/usr/sbin/sshd")]),
            },
            ListeningPort {
                remote_address: None,
                remote_port: None,
                local_address: Some("::ffff:127.0.0.1".parse().unwrap()),
                local_port: "5353".into(),
                protocol: "UDP".into(),
                extra_details: Details::new(),
            },
        ]),
        Payload::FirewallConfiguration(vec![FirewallRule {
            priority: Some(0),
            direction: Some(Direction::In),
            chain_name: Some("input".into()),
            application: None,
            enabled: true,
            action: FirewallAction::Allow,
            source_address: Some("10.0.0.0/8".into()),
            source_port: Some("*".into()),
            destination_address: Some("Local subnet".into()),
            destination_port: Some("22,53".into()),
            protocol: Some("TCP".into()),
            extra_details: details(&[("Table", "inet filter")]),
        }]),
        Payload::OSBaseline(vec![BaselineCheck {
            description: "Ensure SSH root login is disabled".into(),
            cce_id: "CIS-debian-12-5.2.10".into(),
            result: BaselineResult::Fail,
            error: String::new(),
            severity: BaselineSeverity::Critical,
            extra_details: details(&[("File", "/etc/ssh/sshd_config")]),
        }]),
    ];
    // One breakage per kind, in the order above: a wrong type, a required key gone, a bad
    // address, an action outside the enum, a result outside the enum.
    let breakages: [(&str, Option<Value>); 5] = [
        (
            "/Events/0/Payload/0/TotalPhysicalMemoryInKB",
            Some(json!("4026532")),
        ),
        ("/Events/0/Payload/1/UserName", None),
        (
            "/Events/0/Payload/0/LocalAddress",
            Some(json!("0.0.0.0:22")),
        ),
        ("/Events/0/Payload/0/Action", Some(json!("Block"))),
        ("/Events/0/Payload/0/Result", Some(json!("Error"))),
    ];
    let mut messages = Vec::new();
    let mut expect_ok = Vec::new();
    for (i, (payload, (ptr, broken))) in payloads.into_iter().zip(breakages).enumerate() {
        let name = payload.name();
        let ev = SecurityEvent {
            id: uuid::Uuid::from_u128(0x0f1e_2d3c_4b5a_4968_8776_a5b4_c3d2_e100 + i as u128),
            time_ms: 1_700_000_000_123,
            payload,
        };
        let event: Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(event["Category"], "Periodic", "{name}");
        assert_eq!(event["EventType"], "Security", "{name}");
        assert_eq!(event["IsEmpty"], false, "{name}");
        let m = message_of(vec![event]);
        messages.push(m.to_string());
        expect_ok.push(true);
        let bad = match broken {
            Some(v) => with(&m, ptr, v),
            None => without(&m, ptr),
        };
        messages.push(bad.to_string());
        expect_ok.push(false);
        // Periodic only: the same event called Triggered is not a snapshot.
        messages.push(with(&m, "/Events/0/Category", json!("Triggered")).to_string());
        expect_ok.push(false);
    }
    let reference = assert_agree("snapshots", &messages);
    for ((m, r), ok) in messages.iter().zip(&reference).zip(expect_ok) {
        assert_eq!(r == "ok", ok, "reference on {m}: {r}");
        assert_eq!(ours_ok(m), ok, "ours on {m}");
    }
}
