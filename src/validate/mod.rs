//! The module's own check of security messages: the rules of the published Defender for IoT
//! schemas (`../shared/schemas`, entry `messageRoot.json`, draft-07 with format checking on)
//! written as Rust code, with messages that say what is wrong and where. The schema files are
//! not read or embedded: `tests/validate_agreement.rs` runs these rules and the reference
//! validator (python-jsonschema 4.26, `Draft7Validator` + `FormatChecker` with
//! rfc3339-validator) on the same messages, and the verdicts must agree. Parts: `json` (the
//! text, read as Python's `json.loads` does), `schema` (the rules as tables), `check` (the
//! walk), `formats`.

use std::io::{self, BufRead, Write};

mod check;
mod formats;
mod json;
mod schema;

use check::Report;
pub use check::Violation;
use json::Parser;

/// Check one security message (the JSON text of one message). `Ok` when it satisfies the
/// published schema; otherwise every violation found, in document order.
pub fn validate_message(json: &str) -> Result<(), Vec<Violation>> {
    let value = match Parser::new(json).document() {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![Violation {
                path: String::new(),
                message: e.to_string(),
            }]);
        }
    };
    let mut report = Report::default();
    report.message(&value);
    if report.violations.is_empty() {
        Ok(())
    } else {
        Err(report.violations)
    }
}

/// Check one event object (the JSON text of one element of a message's `Events`) by the same
/// rules as [`validate_message`]; paths are relative to the event (`/TimestampUTC`). The
/// delivery stage runs this on every event before it is stored, so that one bad event is
/// dropped alone instead of making its whole message invalid.
pub fn validate_event(json: &str) -> Result<(), Vec<Violation>> {
    let value = match Parser::new(json).document() {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![Violation {
                path: String::new(),
                message: e.to_string(),
            }]);
        }
    };
    let mut report = Report::default();
    report.event("", &value);
    if report.violations.is_empty() {
        Ok(())
    } else {
        Err(report.violations)
    }
}

/// `azureiotsecurity validate`: check JSON lines, one message per line, and write one verdict
/// line per input line: `ok`, or `line N: invalid: <violations, separated by "; ">`. A line
/// that is empty or not UTF-8 is invalid too. Returns how many lines were ok and how many
/// were not.
pub fn validate_lines<R: BufRead, W: Write>(
    mut input: R,
    mut out: W,
) -> io::Result<(usize, usize)> {
    let (mut ok, mut bad) = (0usize, 0usize);
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let verdict = match std::str::from_utf8(&line) {
            Ok(text) => validate_message(text).map_err(|violations| {
                violations
                    .iter()
                    .map(Violation::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
            Err(e) => Err(format!(
                "/: not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            )),
        };
        match verdict {
            Ok(()) => {
                ok += 1;
                writeln!(out, "ok")?;
            }
            Err(why) => {
                bad += 1;
                writeln!(out, "line {number}: invalid: {why}")?;
            }
        }
    }
    out.flush()?;
    Ok((ok, bad))
}

/// Sample messages and events the tests of the parts share.
#[cfg(test)]
mod sample {
    use super::schema::TYPED;

    pub(super) fn message(event: &str) -> String {
        format!(
            r#"{{"AgentVersion":"1","AgentId":"00000000-0000-4000-8000-000000000000","MessageSchemaVersion":"1.0","Events":[{event}]}}"#
        )
    }

    pub(super) fn event(category: &str, name: &str, is_empty: bool, payload: &str) -> String {
        let event_type = TYPED
            .iter()
            .find(|t| t.name == name)
            .map_or("Security", |t| t.event_type);
        format!(
            r#"{{"Id":"00000000-0000-4000-8000-000000000001","TimestampLocal":"2018-08-10T11:01:21.000+01:00","TimestampUTC":"2018-08-10T11:01:21.000Z","Category":"{category}","Name":"{name}","EventType":"{event_type}","IsEmpty":{is_empty},"PayloadSchemaVersion":"1.0","Payload":[{payload}]}}"#
        )
    }

    pub(super) const PORTS: &str = r#"{"LocalPort":"22","Protocol":"TCP"}"#;
}

#[cfg(test)]
mod tests {
    use super::sample::*;
    use super::*;

    #[test]
    fn validate_lines_gives_one_verdict_per_line() {
        let good = message(&event("Periodic", "ListeningPorts", false, PORTS));
        let input = format!("{good}\n{{}}\n\n{good}\r\n\u{0}");
        let mut out = Vec::new();
        let counts = validate_lines(input.as_bytes(), &mut out).expect("in memory");
        assert_eq!(counts, (2, 3));
        let out = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert_eq!(lines[0], "ok");
        assert!(
            lines[1].starts_with("line 2: invalid: /: missing required key \"AgentVersion\""),
            "{out}"
        );
        assert!(
            lines[2].starts_with("line 3: invalid: /: not JSON: empty input"),
            "{out}"
        );
        assert_eq!(lines[3], "ok");
        assert!(
            lines[4].starts_with("line 5: invalid: /: not JSON"),
            "{out}"
        );
        let mut out = Vec::new();
        assert_eq!(
            validate_lines(&b"\xff\n"[..], &mut out).expect("in memory"),
            (0, 1)
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "line 1: invalid: /: not UTF-8 (invalid byte at offset 0)\n"
        );
    }
}
