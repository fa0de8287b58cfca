//! The reference validator itself: pinned verdicts on the official samples, and the
//! date-time check that python-jsonschema silently skips without rfc3339-validator; and its
//! verdict on the committed golden events (the quick tier compares replays with them).

mod support;

use serde_json::Value;

fn samples() -> Value {
    let p = support::schema_dir().join("samples.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("samples.json is JSON")
}

#[test]
fn official_samples_have_the_pinned_verdicts() {
    let s = samples();
    let valid: Vec<String> = s["valid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.to_string())
        .collect();
    let invalid: Vec<String> = s["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(valid.len(), 13);
    let v = support::reference_validate(&valid);
    for (i, verdict) in v.iter().enumerate() {
        if i <= 8 {
            assert_eq!(verdict, "ok", "valid item {i}");
        } else {
            assert!(
                verdict.contains("is not a 'date-time'"),
                "valid item {i}: {verdict}"
            );
        }
    }
    for (i, verdict) in support::reference_validate(&invalid).iter().enumerate() {
        assert!(
            verdict.starts_with("invalid"),
            "invalid item {i}: {verdict}"
        );
    }
}

#[test]
fn space_separated_timestamp_is_rejected() {
    let s = samples();
    let mut m = s["valid"][0].clone();
    m["Events"][0]["TimestampUTC"] = Value::String("2018-10-09 13:22:50Z".into());
    let v = support::reference_validate(&[m.to_string()]);
    assert!(
        v[0].contains("'2018-10-09 13:22:50Z' is not a 'date-time'"),
        "{}",
        v[0]
    );
}

/// Moved here from the golden test (quick tier, no Python): every committed golden event,
/// wrapped in a message envelope, is valid for the reference validator.
#[test]
fn golden_events_pass_the_reference_validator() {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(support::root().join("tests/data"))
        .expect("tests/data")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".events.jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "golden files missing: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let events: Vec<&str> = text.lines().collect();
        assert!(!events.is_empty(), "{}: no events", f.display());
        let messages: Vec<String> = events
            .iter()
            .map(|e| support::envelope(&[serde_json::from_str(e).expect("event is JSON")]))
            .collect();
        for (e, verdict) in events.iter().zip(support::reference_validate(&messages)) {
            assert_eq!(verdict, "ok", "{}: {e}", f.display());
        }
    }
}
