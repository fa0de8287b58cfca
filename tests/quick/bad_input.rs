//! Bad audit input through the module binary (`replay`): records dated where no message can
//! carry them, and control bytes in garbage lines.

use crate::support;

use support::run_bin;

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(support::root().join("tests/data").join(name)).expect("capture")
}

/// The capture with, after its first event, that event's records again under other times
/// and serials.
fn with_bad_times(cap: &[u8], times: &[&str]) -> Vec<u8> {
    let text = std::str::from_utf8(cap).expect("captures are ASCII");
    let first_id = text
        .split("msg=audit(")
        .nth(1)
        .and_then(|r| r.split("):").next())
        .expect("a record");
    let first: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("msg=audit({first_id}):")))
        .collect();
    assert!(first.len() > 3, "{first:?}");
    let (_, msec_serial) = first_id.split_once('.').expect("SEC.MSEC:SERIAL");
    let (msec, _) = msec_serial.split_once(':').expect("MSEC:SERIAL");
    let mut out = String::new();
    let mut inserted = false;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if !inserted && line.contains(&format!("type=EOE msg=audit({first_id})")) {
            inserted = true;
            for (i, sec) in times.iter().enumerate() {
                let id = format!("{sec}.{msec}:{}", 990_000 + i);
                for l in &first {
                    out.push_str(&l.replace(first_id, &id));
                    out.push('\n');
                }
            }
        }
    }
    assert!(inserted);
    out.into_bytes()
}

#[test]
fn records_dated_past_the_year_9999_never_reach_a_message() {
    let cap = capture("exec_args.log");
    // Synthetic: the capture's first ProcessCreate again, dated 10000-01-01 (the first second
    // no RFC 3339 date-time can carry) and past what milliseconds in an i64 hold.
    let bad = with_bad_times(
        &cap,
        &["253402300800", "9223372036854776", "18446744073709551615"],
    );
    let (code, good_messages, err) = run_bin(&["replay", "--messages", "-"], &cap);
    assert_eq!(code, 0, "{err}");
    let (code, messages, log) = run_bin(&["replay", "--messages", "-"], &bad);
    assert_eq!(code, 0, "{log}");
    // Every message is valid by the module's own rules.
    let (code, verdicts, err) = run_bin(&["validate", "-"], messages.as_bytes());
    assert_eq!(code, 0, "{verdicts}{err}");
    assert_eq!(verdicts.lines().count(), messages.lines().count());
    // The same events (and messages) as without the bad records: they were refused whole.
    let (_, good_events, _) = run_bin(&["replay", "-"], &cap);
    let (_, events, _) = run_bin(&["replay", "-"], &bad);
    assert!(good_events.lines().count() > 3);
    assert_eq!(events, good_events);
    assert_eq!(messages, good_messages);
    // Said once, with its id.
    assert_eq!(log.matches("W-AUDIT-TIME").count(), 1, "{log}");
}

#[test]
fn control_bytes_of_a_garbage_line_are_escaped_in_the_log() {
    // Synthetic garbage: ESC (a terminal colour sequence), NUL, CR (which would overwrite the
    // log line on a terminal), DEL, a C1 control, a backslash and a forged log line after LF
    // is impossible (LF ends the line), so a CR-forged one is tried instead.
    let line: &[u8] = b"garbage \x1b[31mred\x00nul\rFAKE ERROR line\x7fdel\xc2\x9bc1 back\\slash\n";
    let mut input = line.to_vec();
    input.extend_from_slice(&capture("net_tcp.log"));
    let (code, _, err) = run_bin(&["replay", "-"], &input);
    assert_eq!(code, 0, "{err}");
    let logged = err
        .lines()
        .find(|l| l.contains("W-AUDIT-GARBAGE"))
        .unwrap_or_else(|| panic!("no W-AUDIT-GARBAGE line in {err:?}"));
    assert!(
        logged.contains(r"garbage \x1b[31mred\x00nul\rFAKE ERROR line\x7fdel\u{9b}c1 back\\slash"),
        "{logged:?}"
    );
    for c in ['\x1b', '\0', '\r', '\x7f', '\u{9b}'] {
        assert!(!err.contains(c), "raw {c:?} in the log: {err:?}");
    }
}
