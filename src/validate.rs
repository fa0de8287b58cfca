//! The module's own check of security messages: the rules of the published Defender for IoT
//! schemas (`../shared/schemas`, entry `messageRoot.json`, draft-07 with format checking on)
//! written as Rust code, with messages that say what is wrong and where.
//!
//! The schema files are not read or embedded: the rules below are ours, and
//! `tests/validate_agreement.rs` runs them and the reference validator (python-jsonschema
//! 4.26, `Draft7Validator` + `FormatChecker` with rfc3339-validator) on the same messages;
//! the verdicts must agree.
//!
//! # The rules
//!
//! - The message is an object with exactly `AgentVersion` (string), `AgentId` (a string of
//!   exactly 36 characters: the schema's `guid` is a length, not a format),
//!   `MessageSchemaVersion` (`"1.0"`) and `Events` (an array of at least one event).
//! - An event is an object with exactly the 9 keys `Id` (36 characters), `TimestampLocal`,
//!   `TimestampUTC` (RFC 3339 date-times, see below), `Category` (`Periodic`|`Triggered`),
//!   `Name` (string), `EventType` (`Security`|`Operational`|`Diagnostic`), `IsEmpty`
//!   (boolean), `PayloadSchemaVersion` (string) and `Payload` (array).
//! - Category, IsEmpty and Payload go together (a `oneOf` of three): `Periodic` with
//!   `IsEmpty: true` and any payload (even a non-empty one), `Periodic` with `IsEmpty: false`
//!   and at least one item, or `Triggered` with `IsEmpty: false` and at least one item.
//! - `Name` selects one of the 14 typed event schemas (a `oneOf`: a name that is not one of
//!   them matches none, so the event is invalid). The typed schema fixes `Category`,
//!   `EventType` and `PayloadSchemaVersion` (`"1.0"`), and each payload item's keys (no
//!   others), their types and the required ones. Its `"IsEmpty": {"boolean": ["false"]}` is
//!   not a JSON Schema keyword and constrains nothing.
//! - Payload item types: strings (ports and user ids are strings too), integers (any size,
//!   negative too), booleans, enums, `ip` (IPv4 or IPv6, see below) and `ExtraDetails` (an
//!   object whose values are strings).
//!
//! # Where python-jsonschema's exact behaviour is matched
//!
//! - JSON text is read the way Python's `json.loads` reads it: duplicate keys keep the last
//!   value; `\uD800`-style lone surrogate escapes are accepted (a character each); integer
//!   literals of more than 4300 digits are refused (Python's int conversion limit, a
//!   `ValueError` the reference reports as "not JSON"). `NaN`/`Infinity`, which Python also
//!   reads, are refused as not JSON here: no place in the schema accepts them either way.
//! - `integer` is a JSON integer or a number with a zero fraction: `1.0`, `1e2` and `-0.0`
//!   are integers, `1.5` is not, and neither is `1e400` (Python reads it as infinity). A
//!   number with a fraction or exponent is rounded to the nearest double first, as Python
//!   does: `4503599627370496.5` is an integer.
//! - `date-time` is rfc3339-validator's regular expression applied to the upper-cased string:
//!   `YYYY-MM-DDTHH:MM:SS[.digits](Z|±HH:MM)`, `T` and `Z` in either case, hour 00–23
//!   (no 24:00), minute and second 00–59 (no leap second 60), offset hours 00–23, any
//!   number of fraction digits, year 0000 refused, the day within its month (Gregorian
//!   leap years). Python's `$` also matches before one final newline, so a single trailing
//!   `"\n"` is accepted. A space instead of `T` is refused.
//! - `ipv4` is Python's `ipaddress.IPv4Address`: four decimal octets 0–255 of 1–3 ASCII
//!   digits, no leading zeros (`01.2.3.4` is refused), no `/`.
//! - `ipv6` is `ipaddress.IPv6Address` without a zone: up to 8 hextets of 1–4 hex digits, one
//!   `::`, an optional dotted IPv4 tail (`::ffff:1.2.3.4`, whose octets follow the IPv4
//!   rules); jsonschema refuses any `%zone`. No string is both, so the schema's
//!   `oneOf [ipv4, ipv6]` means "either".

use std::collections::HashMap;
use std::io::{self, BufRead, Write};

/// One thing wrong with a message: where (a JSON pointer such as
/// `/Events/0/Payload/0/RemotePort`; the empty pointer is the whole message and is shown as
/// `/`) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if .path.is_empty() { "/" } else { .path.as_str() })]
pub struct Violation {
    pub path: String,
    pub message: String,
}

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

// ---------------------------------------------------------------------------------------
// JSON, read as Python's json.loads reads it.

/// A JSON string as Python holds it. Lone surrogate escapes (`"\uD800"`) have no Rust
/// `char`: `text` holds U+FFFD in their place and `lone` says which (character index, code
/// unit), so two keys differing only there stay different, as they do in Python.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct JStr {
    text: String,
    lone: Vec<(usize, u16)>,
}

impl JStr {
    fn is(&self, s: &str) -> bool {
        self.lone.is_empty() && self.text == s
    }

    /// Length in code points, as Python's `len`.
    fn chars(&self) -> usize {
        self.text.chars().count()
    }
}

#[derive(Debug, Clone)]
struct Num {
    text: String,
    /// python-jsonschema's "integer": an int, or a float whose value is integral.
    integral: bool,
}

#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Num(Num),
    Str(JStr),
    Arr(Vec<Json>),
    /// Members in first-seen order; a repeated key keeps its last value (Python's dict).
    Obj(Vec<(JStr, Json)>),
}

/// Python's `sys.int_info.default_max_str_digits`.
const PY_MAX_INT_DIGITS: usize = 4300;
/// Deeper nesting is refused (a valid message nests 6 levels; Python stops near 1000).
const MAX_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error)]
#[error("not JSON: {what} at column {column}")]
struct JsonError {
    what: String,
    column: usize,
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            depth: 0,
        }
    }

    fn fail<T>(&self, what: impl Into<String>) -> Result<T, JsonError> {
        let at = self.pos.min(self.text.len());
        let column = self
            .text
            .get(..at)
            .map_or(at, |prefix| prefix.chars().count())
            + 1;
        Err(JsonError {
            what: what.into(),
            column,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn document(&mut self) -> Result<Json, JsonError> {
        self.skip_ws();
        if self.peek().is_none() {
            return self.fail("empty input");
        }
        let v = self.value()?;
        self.skip_ws();
        if self.pos < self.bytes.len() {
            return self.fail("unexpected text after the JSON value");
        }
        Ok(v)
    }

    fn value(&mut self) -> Result<Json, JsonError> {
        self.skip_ws();
        match self.peek() {
            None => self.fail("expected a value, found the end of the text"),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'N' | b'I') => self.fail("NaN and Infinity are not JSON"),
            Some(_) => self.fail("expected a value"),
        }
    }

    fn literal(&mut self, word: &str, v: Json) -> Result<Json, JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(v)
        } else {
            self.fail("expected a value")
        }
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.pos += 1;
        Ok(())
    }

    fn object(&mut self) -> Result<Json, JsonError> {
        self.enter()?;
        let mut members: Vec<(JStr, Json)> = Vec::new();
        let mut index: HashMap<JStr, usize> = HashMap::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Json::Obj(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return self.fail("expected a key (a string in double quotes)");
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return self.fail("expected ':' after the key");
            }
            self.pos += 1;
            let v = self.value()?;
            match index.get(&key) {
                Some(&i) => members[i].1 = v,
                None => {
                    index.insert(key.clone(), members.len());
                    members.push((key, v));
                }
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Json::Obj(members));
                }
                _ => return self.fail("expected ',' or '}' in an object"),
            }
        }
    }

    fn array(&mut self) -> Result<Json, JsonError> {
        self.enter()?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Json::Arr(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Json::Arr(items));
                }
                _ => return self.fail("expected ',' or ']' in an array"),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_digits = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            Some(b'I') => return self.fail("NaN and Infinity are not JSON"),
            _ => return self.fail("expected a digit"),
        };
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.fail("expected a digit after the decimal point");
            }
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.fail("expected a digit in the exponent");
            }
            float = true;
        }
        let text = &self.text[start..self.pos];
        let integral = if float {
            // Python: float(text), correctly rounded like Rust's parser; 1e400 is inf.
            text.parse::<f64>()
                .is_ok_and(|f| f.is_finite() && f.fract() == 0.0)
        } else if int_digits > PY_MAX_INT_DIGITS {
            return self.fail(format!(
                "an integer of {int_digits} digits (more than the {PY_MAX_INT_DIGITS} \
                 Python's json reads)"
            ));
        } else {
            true
        };
        Ok(Json::Num(Num {
            text: text.to_string(),
            integral,
        }))
    }

    fn hex4(&self, at: usize) -> Option<u16> {
        let h = self.bytes.get(at..at + 4)?;
        let s = std::str::from_utf8(h).ok()?;
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(s, 16).ok()
    }

    fn string(&mut self) -> Result<JStr, JsonError> {
        self.pos += 1; // the opening quote
        let mut out = JStr::default();
        let mut chars = 0usize;
        loop {
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            if self.pos > run_start {
                let run = &self.text[run_start..self.pos];
                chars += run.chars().count();
                out.text.push_str(run);
            }
            match self.peek() {
                None => return self.fail("unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let simple = match self.peek() {
                        Some(b'"') => Some('"'),
                        Some(b'\\') => Some('\\'),
                        Some(b'/') => Some('/'),
                        Some(b'b') => Some('\u{8}'),
                        Some(b'f') => Some('\u{c}'),
                        Some(b'n') => Some('\n'),
                        Some(b'r') => Some('\r'),
                        Some(b't') => Some('\t'),
                        Some(b'u') => None,
                        _ => return self.fail("invalid escape in a string"),
                    };
                    if let Some(c) = simple {
                        self.pos += 1;
                        out.text.push(c);
                        chars += 1;
                        continue;
                    }
                    let Some(unit) = self.hex4(self.pos + 1) else {
                        return self.fail("invalid \\uXXXX escape");
                    };
                    self.pos += 5;
                    let low = if (0xD800..0xDC00).contains(&unit)
                        && self.bytes.get(self.pos..self.pos + 2) == Some(b"\\u")
                    {
                        self.hex4(self.pos + 2)
                            .filter(|low| (0xDC00..0xE000).contains(low))
                    } else {
                        None
                    };
                    if let Some(low) = low {
                        let c = 0x10000
                            + ((u32::from(unit) - 0xD800) << 10)
                            + (u32::from(low) - 0xDC00);
                        out.text.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                        chars += 1;
                        self.pos += 6;
                        continue;
                    }
                    match char::from_u32(u32::from(unit)) {
                        Some(c) => out.text.push(c),
                        None => {
                            out.lone.push((chars, unit));
                            out.text.push('\u{FFFD}');
                        }
                    }
                    chars += 1;
                }
                Some(b) => {
                    return self.fail(format!(
                        "control character U+{b:04X} must be escaped in a string"
                    ));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The schema's rules.

/// What a value must be.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    /// The schema's `guid`: a string of exactly 36 characters.
    Guid,
    /// The schema's `datetime`: a string in RFC 3339 date-time format.
    DateTime,
    /// The schema's `ip`: an IPv4 or an IPv6 address.
    Ip,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// The schema's `extradetails`: an object of strings.
    Details,
}

const CATEGORIES: &[&str] = &["Periodic", "Triggered"];
const EVENT_TYPES: &[&str] = &["Security", "Operational", "Diagnostic"];
const DIRECTIONS: &[&str] = &["In", "Out"];

const ENVELOPE: &[(&str, Ty)] = &[
    ("AgentVersion", Ty::Str),
    ("AgentId", Ty::Guid),
    ("MessageSchemaVersion", Ty::OneOf(&["1.0"])),
    // "Events" is checked by hand: an array of events.
];
const ENVELOPE_KEYS: &[&str] = &["AgentVersion", "AgentId", "MessageSchemaVersion", "Events"];

const EVENT: &[(&str, Ty)] = &[
    ("Id", Ty::Guid),
    ("TimestampLocal", Ty::DateTime),
    ("TimestampUTC", Ty::DateTime),
    ("Category", Ty::OneOf(CATEGORIES)),
    ("Name", Ty::Str),
    ("EventType", Ty::OneOf(EVENT_TYPES)),
    ("IsEmpty", Ty::Bool),
    ("PayloadSchemaVersion", Ty::Str),
    // "Payload" is checked by hand: an array, its items by the typed schema.
];
const EVENT_KEYS: &[&str] = &[
    "Id",
    "TimestampLocal",
    "TimestampUTC",
    "Category",
    "Name",
    "EventType",
    "IsEmpty",
    "PayloadSchemaVersion",
    "Payload",
];

/// One of the typed event schemas: what it fixes in the event and the shape of its payload
/// items.
struct TypedEvent {
    name: &'static str,
    category: &'static str,
    event_type: &'static str,
    fields: &'static [(&'static str, Ty)],
    required: &'static [&'static str],
    /// At least one of these keys (Login's `anyOf`: UserId or UserName).
    one_of: &'static [&'static str],
}

const D: (&str, Ty) = ("ExtraDetails", Ty::Details);

const TYPED: &[TypedEvent] = &[
    TypedEvent {
        name: "ConnectionCreate",
        category: "Triggered",
        event_type: "Security",
        fields: &[
            ("RemoteAddress", Ty::Ip),
            ("RemotePort", Ty::Str),
            ("LocalAddress", Ty::Ip),
            ("LocalPort", Ty::Str),
            ("Direction", Ty::OneOf(DIRECTIONS)),
            ("Protocol", Ty::Str),
            ("ProcessId", Ty::Int),
            ("UserId", Ty::Str),
            ("Executable", Ty::Str),
            ("CommandLine", Ty::Str),
            D,
        ],
        required: &[
            "RemoteAddress",
            "RemotePort",
            "Direction",
            "Protocol",
            "ProcessId",
            "Executable",
        ],
        one_of: &[],
    },
    TypedEvent {
        name: "Login",
        category: "Triggered",
        event_type: "Security",
        fields: &[
            ("ProcessId", Ty::Int),
            ("UserId", Ty::Str),
            ("UserName", Ty::Str),
            ("Operation", Ty::Str),
            ("Executable", Ty::Str),
            ("RemoteAddress", Ty::Ip),
            ("RemotePort", Ty::Str),
            ("LocalPort", Ty::Str),
            ("Result", Ty::OneOf(&["Fail", "Success"])),
            D,
        ],
        required: &["ProcessId", "Operation", "Executable", "Result"],
        one_of: &["UserId", "UserName"],
    },
    TypedEvent {
        name: "ProcessCreate",
        category: "Triggered",
        event_type: "Security",
        fields: &[
            ("Executable", Ty::Str),
            ("ProcessId", Ty::Int),
            ("ParentProcessId", Ty::Int),
            ("UserId", Ty::Str),
            ("UserName", Ty::Str),
            ("CommandLine", Ty::Str),
            D,
        ],
        required: &[
            "Executable",
            "ProcessId",
            "ParentProcessId",
            "UserId",
            "CommandLine",
        ],
        one_of: &[],
    },
    TypedEvent {
        name: "ProcessTerminate",
        category: "Triggered",
        event_type: "Security",
        fields: &[
            ("Executable", Ty::Str),
            ("ProcessId", Ty::Int),
            ("ExitStatus", Ty::Int),
            D,
        ],
        required: &["Executable", "ProcessId", "ExitStatus"],
        one_of: &[],
    },
    TypedEvent {
        name: "ListeningPorts",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("RemoteAddress", Ty::Ip),
            ("RemotePort", Ty::Str),
            ("LocalAddress", Ty::Ip),
            ("LocalPort", Ty::Str),
            ("Protocol", Ty::Str),
            D,
        ],
        required: &["LocalPort", "Protocol"],
        one_of: &[],
    },
    TypedEvent {
        name: "FirewallConfiguration",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("Priority", Ty::Int),
            ("Direction", Ty::OneOf(DIRECTIONS)),
            ("ChainName", Ty::Str),
            ("Application", Ty::Str),
            ("Enabled", Ty::Bool),
            ("Action", Ty::OneOf(&["Allow", "Deny", "Other"])),
            // Addresses here are the schema's `iptag`: any string ("Local subnet", ranges).
            ("SourceAddress", Ty::Str),
            ("SourcePort", Ty::Str),
            ("DestinationAddress", Ty::Str),
            ("DestinationPort", Ty::Str),
            ("Protocol", Ty::Str),
            D,
        ],
        required: &["Enabled", "Action"],
        one_of: &[],
    },
    TypedEvent {
        name: "LocalUsers",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("GroupIds", Ty::Str),
            ("GroupNames", Ty::Str),
            ("UserId", Ty::Str),
            ("UserName", Ty::Str),
            D,
        ],
        required: &["GroupIds", "GroupNames", "UserId", "UserName"],
        one_of: &[],
    },
    TypedEvent {
        name: "ConnectedHardware",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("HardwareCategory", Ty::Str),
            ("HardwareSubCategory", Ty::Str),
            ("HardwareName", Ty::Str),
            D,
        ],
        required: &["HardwareCategory", "HardwareSubCategory", "HardwareName"],
        one_of: &[],
    },
    TypedEvent {
        name: "OSBaseline",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("Description", Ty::Str),
            ("CceId", Ty::Str),
            ("Result", Ty::OneOf(&["Pass", "Fail", "Err"])),
            ("Error", Ty::Str),
            (
                "Severity",
                Ty::OneOf(&["Critical", "Important", "Warning", "Informational"]),
            ),
            D,
        ],
        required: &["Description", "CceId", "Result", "Error", "Severity"],
        one_of: &[],
    },
    TypedEvent {
        name: "SystemInformation",
        category: "Periodic",
        event_type: "Security",
        fields: &[
            ("OSName", Ty::Str),
            ("OSVersion", Ty::Str),
            ("OSVendor", Ty::Str),
            ("OsArchitecture", Ty::Str),
            ("HostName", Ty::Str),
            ("BIOSVersion", Ty::Str),
            ("BootDevice", Ty::Str),
            ("TotalPhysicalMemoryInKB", Ty::Int),
            ("FreePhysicalMemoryInKB", Ty::Int),
            ("TotalVirtualMemoryInKB", Ty::Int),
            ("FreeVirtualMemoryInKB", Ty::Int),
            D,
        ],
        required: &[],
        one_of: &[],
    },
    TypedEvent {
        name: "Diagnostic",
        category: "Triggered",
        event_type: "Diagnostic",
        fields: &[
            ("CorrelationId", Ty::Guid),
            (
                "Severity",
                Ty::OneOf(&["Fatal", "Error", "Warning", "Information", "Debug"]),
            ),
            ("Message", Ty::Str),
            ("ProcessId", Ty::Int),
            ("ThreadId", Ty::Int),
            D,
        ],
        required: &["Severity", "Message", "ProcessId", "ThreadId"],
        one_of: &[],
    },
    TypedEvent {
        name: "ConfigurationError",
        category: "Triggered",
        event_type: "Operational",
        fields: &[
            ("ConfigurationName", Ty::Str),
            (
                "ErrorType",
                Ty::OneOf(&["TypeMismatch", "NotOptimal", "Conflict"]),
            ),
            ("UsedConfiguration", Ty::Str),
            ("Message", Ty::Str),
            D,
        ],
        required: &[
            "ConfigurationName",
            "ErrorType",
            "UsedConfiguration",
            "Message",
        ],
        one_of: &[],
    },
    TypedEvent {
        name: "DroppedEventsStatistics",
        category: "Periodic",
        event_type: "Operational",
        fields: &[
            ("Queue", Ty::OneOf(&["High", "Low"])),
            ("CollectedEvents", Ty::Int),
            ("DroppedEvents", Ty::Int),
            D,
        ],
        required: &["Queue", "CollectedEvents", "DroppedEvents"],
        one_of: &[],
    },
    TypedEvent {
        name: "MessageStatistics",
        category: "Periodic",
        event_type: "Operational",
        fields: &[
            ("MessagesSent", Ty::Int),
            ("MessagesUnder4KB", Ty::Int),
            ("TotalFailed", Ty::Int),
            D,
        ],
        required: &["MessagesSent", "MessagesUnder4KB", "TotalFailed"],
        one_of: &[],
    },
];

fn get<'v>(members: &'v [(JStr, Json)], key: &str) -> Option<&'v Json> {
    members.iter().find(|(k, _)| k.is(key)).map(|(_, v)| v)
}

fn str_of(v: Option<&Json>) -> Option<&str> {
    match v {
        Some(Json::Str(s)) if s.lone.is_empty() => Some(&s.text),
        _ => None,
    }
}

/// A JSON pointer one level down.
fn child(path: &str, key: &str) -> String {
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn item(path: &str, i: usize) -> String {
    format!("{path}/{i}")
}

fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}

/// "string \"abc\"", "integer 22", "number 1.5", "boolean true", "null", "array", "object".
fn describe(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Num(n) => {
            let t: String = n.text.chars().take(40).collect();
            let more = if n.text.len() > 40 { "…" } else { "" };
            if n.integral {
                format!("integer {t}{more}")
            } else {
                format!("number {t}{more}")
            }
        }
        Json::Str(s) => format!("string {}", clip(&s.text)),
        Json::Arr(a) => format!("an array of {} items", a.len()),
        Json::Obj(_) => "an object".into(),
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Default)]
struct Report {
    violations: Vec<Violation>,
}

impl Report {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.violations.push(Violation {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Unknown keys (in document order) and missing required ones.
    fn keys(
        &mut self,
        path: &str,
        members: &[(JStr, Json)],
        allowed: &[&str],
        required: &[&str],
        what: &str,
    ) {
        for (k, _) in members {
            if !allowed.iter().any(|a| k.is(a)) {
                self.add(
                    child(path, &k.text),
                    format!("unknown key: {what} has only {}", allowed.join(", ")),
                );
            }
        }
        for r in required {
            if get(members, r).is_none() {
                self.add(path, format!("missing required key \"{r}\" of {what}"));
            }
        }
    }

    fn value(&mut self, path: &str, v: &Json, ty: Ty) {
        match (ty, v) {
            (Ty::Str, Json::Str(_)) | (Ty::Bool, Json::Bool(_)) => {}
            (Ty::Int, Json::Num(n)) if n.integral => {}
            (Ty::Guid, Json::Str(s)) => {
                let n = s.chars();
                if n != 36 {
                    self.add(
                        path,
                        format!(
                            "must be 36 characters long (a GUID), found {n}: {}",
                            clip(&s.text)
                        ),
                    );
                }
            }
            (Ty::DateTime, Json::Str(s)) => {
                if let Err(why) = date_time(&s.text) {
                    self.add(
                        path,
                        format!("{} is not an RFC 3339 date-time: {why}", clip(&s.text)),
                    );
                }
            }
            (Ty::Ip, Json::Str(s)) => {
                if let Err(why) = ip(&s.text) {
                    self.add(
                        path,
                        format!("{} is not an IP address: {why}", clip(&s.text)),
                    );
                }
            }
            (Ty::OneOf(choices), Json::Str(s)) if choices.iter().any(|c| s.is(c)) => {}
            (Ty::OneOf(choices), _) => self.add(
                path,
                format!(
                    "must be one of {}, found {}",
                    quoted_list(choices),
                    describe(v)
                ),
            ),
            (Ty::Details, Json::Obj(members)) => {
                for (k, val) in members {
                    if !matches!(val, Json::Str(_)) {
                        self.add(
                            child(path, &k.text),
                            format!(
                                "ExtraDetails values must be strings, found {}",
                                describe(val)
                            ),
                        );
                    }
                }
            }
            (Ty::Details, _) => self.add(
                path,
                format!(
                    "must be an object of strings (ExtraDetails), found {}",
                    describe(v)
                ),
            ),
            (Ty::Int, _) => self.add(path, format!("must be an integer, found {}", describe(v))),
            (Ty::Bool, _) => self.add(path, format!("must be a boolean, found {}", describe(v))),
            (Ty::Str | Ty::Guid | Ty::DateTime | Ty::Ip, _) => {
                self.add(path, format!("must be a string, found {}", describe(v)))
            }
        }
    }

    fn fields(&mut self, path: &str, members: &[(JStr, Json)], fields: &[(&str, Ty)]) {
        for (k, v) in members {
            if let Some((_, ty)) = fields.iter().find(|(name, _)| k.is(name)) {
                self.value(&child(path, &k.text), v, *ty);
            }
        }
    }

    fn message(&mut self, v: &Json) {
        let Json::Obj(members) = v else {
            self.add(
                "",
                format!(
                    "a security message must be a JSON object, found {}",
                    describe(v)
                ),
            );
            return;
        };
        self.keys(
            "",
            members,
            ENVELOPE_KEYS,
            ENVELOPE_KEYS,
            "a security message",
        );
        self.fields("", members, ENVELOPE);
        match get(members, "Events") {
            None => {}
            Some(Json::Arr(events)) if events.is_empty() => {
                self.add(
                    "/Events",
                    "must have at least one event, found an empty array",
                );
            }
            Some(Json::Arr(events)) => {
                for (i, e) in events.iter().enumerate() {
                    self.event(&item("/Events", i), e);
                }
            }
            Some(other) => self.add(
                "/Events",
                format!("must be an array of events, found {}", describe(other)),
            ),
        }
    }

    fn event(&mut self, path: &str, v: &Json) {
        let Json::Obj(members) = v else {
            self.add(
                path,
                format!("an event must be an object, found {}", describe(v)),
            );
            return;
        };
        self.keys(path, members, EVENT_KEYS, EVENT_KEYS, "an event");
        self.fields(path, members, EVENT);
        let category = str_of(get(members, "Category")).filter(|c| CATEGORIES.contains(c));
        let event_type = str_of(get(members, "EventType")).filter(|t| EVENT_TYPES.contains(t));
        let is_empty = match get(members, "IsEmpty") {
            Some(Json::Bool(b)) => Some(*b),
            _ => None,
        };
        let payload = match get(members, "Payload") {
            Some(Json::Arr(items)) => Some(items.as_slice()),
            Some(other) => {
                self.add(
                    child(path, "Payload"),
                    format!("must be an array, found {}", describe(other)),
                );
                None
            }
            None => None,
        };

        // The oneOf over Category, IsEmpty and the payload's length. When one of the three is
        // missing or of the wrong type the event is already invalid and said so above.
        if let (Some(c), Some(empty), Some(items)) = (category, is_empty, payload) {
            match (c, empty, items.is_empty()) {
                ("Periodic", true, _) | (_, false, false) => {}
                ("Periodic", false, true) => self.add(
                    child(path, "Payload"),
                    "is empty but IsEmpty is false (an empty Periodic event says IsEmpty: true)",
                ),
                (_, true, _) => self.add(
                    child(path, "IsEmpty"),
                    "a Triggered event cannot be empty (IsEmpty must be false, with at least \
                     one Payload item)",
                ),
                (_, false, true) => self.add(
                    child(path, "Payload"),
                    "a Triggered event needs at least one Payload item",
                ),
            }
        }

        // The oneOf over the typed schemas, selected by Name.
        let name = match get(members, "Name") {
            Some(Json::Str(s)) => s,
            _ => return,
        };
        let Some(typed) = TYPED.iter().find(|t| name.is(t.name)) else {
            let names: Vec<&str> = TYPED.iter().map(|t| t.name).collect();
            self.add(
                child(path, "Name"),
                format!(
                    "{} is not an event type of the schema ({})",
                    clip(&name.text),
                    names.join(", ")
                ),
            );
            return;
        };
        if let Some(c) = category.filter(|c| *c != typed.category) {
            self.add(
                child(path, "Category"),
                format!("a {} event is {}, not {c}", typed.name, typed.category),
            );
        }
        if let Some(t) = event_type.filter(|t| *t != typed.event_type) {
            self.add(
                child(path, "EventType"),
                format!(
                    "a {} event has EventType {}, not {t}",
                    typed.name, typed.event_type
                ),
            );
        }
        if let Some(version) = match get(members, "PayloadSchemaVersion") {
            Some(Json::Str(v)) if !v.is("1.0") => Some(v),
            _ => None,
        } {
            self.add(
                child(path, "PayloadSchemaVersion"),
                format!(
                    "must be \"1.0\" for a {} event, found {}",
                    typed.name,
                    clip(&version.text)
                ),
            );
        }
        let what = format!("a {} payload item", typed.name);
        let allowed: Vec<&str> = typed.fields.iter().map(|(n, _)| *n).collect();
        let payload_path = child(path, "Payload");
        for (i, p) in payload.unwrap_or_default().iter().enumerate() {
            let p_path = item(&payload_path, i);
            let Json::Obj(fields) = p else {
                self.add(
                    p_path,
                    format!("{what} must be an object, found {}", describe(p)),
                );
                continue;
            };
            self.keys(&p_path, fields, &allowed, typed.required, &what);
            self.fields(&p_path, fields, typed.fields);
            if !typed.one_of.is_empty() && !typed.one_of.iter().any(|k| get(fields, k).is_some()) {
                self.add(
                    p_path,
                    format!("{what} needs {} (at least one)", typed.one_of.join(" or ")),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Formats, as python-jsonschema's FormatChecker checks them.

/// RFC 3339 `date-time` as rfc3339-validator 0.1.4 checks `instance.upper()`:
/// `^\d{4}-(0[1-9]|1[0-2])-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$`
/// (ASCII digits; `$` also matches before a final newline), then year ≥ 1 and the day
/// within the month.
fn date_time(s: &str) -> Result<(), String> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let b = s.as_bytes();
    let mut at = 0usize;
    let found = |at: usize| -> String {
        match s.get(at..).and_then(|rest| rest.chars().next()) {
            Some(c) => format!("{:?}", c.to_string()),
            None if at >= b.len() => "the end".to_string(),
            None => "a broken character".to_string(),
        }
    };
    let num = |at: &mut usize, n: usize, what: &str| -> Result<u32, String> {
        let digits = b
            .get(*at..*at + n)
            .filter(|d| d.iter().all(u8::is_ascii_digit));
        match digits {
            Some(d) => {
                *at += n;
                Ok(d.iter().fold(0u32, |acc, x| acc * 10 + u32::from(x - b'0')))
            }
            None => Err(format!(
                "expected {n} digits of {what} at position {}, found {}",
                *at + 1,
                found(*at)
            )),
        }
    };
    let lit = |at: &mut usize, want: &[u8], what: &str| -> Result<u8, String> {
        match b.get(*at) {
            Some(c) if want.contains(c) => {
                *at += 1;
                Ok(*c)
            }
            _ => Err(format!(
                "expected {what} at position {}, found {}",
                *at + 1,
                found(*at)
            )),
        }
    };
    let year = num(&mut at, 4, "year")?;
    lit(&mut at, b"-", "'-'")?;
    let month = num(&mut at, 2, "month")?;
    if !(1..=12).contains(&month) {
        return Err(format!("month {month:02} is not 01-12"));
    }
    lit(&mut at, b"-", "'-'")?;
    let day = num(&mut at, 2, "day")?;
    lit(&mut at, b"Tt", "'T' between the date and the time")?;
    let hour = num(&mut at, 2, "hour")?;
    if hour > 23 {
        return Err(format!("hour {hour} is not 00-23"));
    }
    lit(&mut at, b":", "':'")?;
    let minute = num(&mut at, 2, "minute")?;
    if minute > 59 {
        return Err(format!("minute {minute} is not 00-59"));
    }
    lit(&mut at, b":", "':'")?;
    let second = num(&mut at, 2, "second")?;
    if second > 59 {
        return Err(format!(
            "second {second} is not 00-59 (leap seconds are not accepted)"
        ));
    }
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return Err(format!(
                "expected digits of the fraction of a second at position {}, found {}",
                at + 1,
                found(at)
            ));
        }
    }
    match lit(&mut at, b"Zz+-", "the UTC offset (Z or +HH:MM or -HH:MM)")? {
        b'Z' | b'z' => {}
        _ => {
            let oh = num(&mut at, 2, "offset hours")?;
            if oh > 23 {
                return Err(format!("offset hour {oh} is not 00-23"));
            }
            lit(&mut at, b":", "':' in the UTC offset")?;
            let om = num(&mut at, 2, "offset minutes")?;
            if om > 59 {
                return Err(format!("offset minute {om} is not 00-59"));
            }
        }
    }
    if at != b.len() {
        return Err(format!(
            "unexpected {} at position {} after the UTC offset",
            found(at),
            at + 1
        ));
    }
    if year == 0 {
        return Err("year 0000 does not exist".into());
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=days).contains(&day) {
        return Err(format!(
            "day {day:02} is not in {year:04}-{month:02}, which has {days} days"
        ));
    }
    Ok(())
}

/// The schema's `ip`: IPv4 or IPv6.
fn ip(s: &str) -> Result<(), String> {
    if s.contains(':') {
        ipv6(s).map_err(|why| format!("not IPv6: {why}"))
    } else {
        ipv4(s).map(drop).map_err(|why| format!("not IPv4: {why}"))
    }
}

/// Python's `ipaddress.IPv4Address(s)`.
fn ipv4(s: &str) -> Result<u32, String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.contains('/') {
        return Err("unexpected '/'".into());
    }
    let octets: Vec<&str> = s.split('.').collect();
    if octets.len() != 4 {
        return Err(format!("expected 4 octets, found {}", octets.len()));
    }
    let mut addr = 0u32;
    for o in octets {
        if o.is_empty() {
            return Err("empty octet".into());
        }
        if !o.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("only decimal digits are permitted in {o:?}"));
        }
        if o.len() > 3 {
            return Err(format!("at most 3 digits are permitted in {o:?}"));
        }
        if o != "0" && o.starts_with('0') {
            return Err(format!("leading zeros are not permitted in {o:?}"));
        }
        let v: u32 = o.parse().map_err(|_| format!("bad octet {o:?}"))?;
        if v > 255 {
            return Err(format!("octet {v} is more than 255"));
        }
        addr = (addr << 8) | v;
    }
    Ok(addr)
}

/// Python's `ipaddress.IPv6Address(s)` with jsonschema's refusal of a zone (`%eth0`).
fn ipv6(s: &str) -> Result<(), String> {
    if s.contains('/') {
        return Err("unexpected '/'".into());
    }
    if s.contains('%') {
        return Err("a zone index ('%…') is not accepted".into());
    }
    if s.is_empty() {
        return Err("empty".into());
    }
    let mut parts: Vec<String> = s.split(':').map(str::to_string).collect();
    if parts.len() < 3 {
        return Err("at least 3 parts (2 colons) expected".into());
    }
    if parts.last().is_some_and(|p| p.contains('.')) {
        let tail = parts.pop().unwrap_or_default();
        let v4 = ipv4(&tail).map_err(|why| format!("bad IPv4 tail: {why}"))?;
        parts.push(format!("{:x}", v4 >> 16));
        parts.push(format!("{:x}", v4 & 0xFFFF));
    }
    if parts.len() > 9 {
        return Err("at most 8 colons permitted".into());
    }
    let n = parts.len();
    let mut skip = None;
    for (i, p) in parts.iter().enumerate().take(n - 1).skip(1) {
        if p.is_empty() {
            if skip.is_some() {
                return Err("at most one '::' permitted".into());
            }
            skip = Some(i);
        }
    }
    let (hi, lo) = match skip {
        Some(i) => {
            let (mut hi, mut lo) = (i, n - i - 1);
            if parts[0].is_empty() {
                hi -= 1;
                if hi > 0 {
                    return Err("leading ':' only permitted as part of '::'".into());
                }
            }
            if parts[n - 1].is_empty() {
                lo -= 1;
                if lo > 0 {
                    return Err("trailing ':' only permitted as part of '::'".into());
                }
            }
            if hi + lo > 7 {
                return Err("expected at most 7 other parts with '::'".into());
            }
            (hi, lo)
        }
        None => {
            if n != 8 {
                return Err(format!("exactly 8 parts expected without '::', found {n}"));
            }
            if parts[0].is_empty() {
                return Err("leading ':' only permitted as part of '::'".into());
            }
            if parts[n - 1].is_empty() {
                return Err("trailing ':' only permitted as part of '::'".into());
            }
            (n, 0)
        }
    };
    for p in parts[..hi].iter().chain(&parts[n - lo..]) {
        if !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("only hex digits are permitted in {p:?}"));
        }
        if p.len() > 4 {
            return Err(format!("at most 4 hex digits are permitted in {p:?}"));
        }
        if p.is_empty() {
            return Err("empty part".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_as_rfc3339_validator_checks_them() {
        let ok = [
            "2018-10-09T16:22:50Z",
            "2018-10-09t16:22:50z",
            "2018-08-10T11:01:21.000+01:00",
            "2018-10-09T16:22:50.123456789012Z",
            "2018-10-09T16:22:50-00:00",
            "2018-10-09T16:22:50+23:59",
            "2018-10-09T23:59:59Z",
            "2018-10-09T16:22:50Z\n",
            "2020-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2018-04-30T00:00:00Z",
        ];
        for s in ok {
            assert_eq!(date_time(s), Ok(()), "{s:?}");
        }
        let bad = [
            ("2018-10-09 16:22:50Z", "'T'"),
            ("2018-10-09T24:00:00Z", "hour 24"),
            ("2018-10-09T23:60:00Z", "minute 60"),
            ("2018-10-09T23:59:60Z", "leap seconds"),
            ("2019-02-29T00:00:00Z", "28 days"),
            ("1900-02-29T00:00:00Z", "28 days"),
            ("2018-04-31T00:00:00Z", "30 days"),
            ("2018-10-00T16:22:50Z", "day 00"),
            ("2018-13-09T16:22:50Z", "month 13"),
            ("2018-00-09T16:22:50Z", "month 00"),
            ("0000-01-01T00:00:00Z", "year 0000"),
            ("2018-10-09T16:22:50", "UTC offset"),
            ("2018-10-09T16:22:50.Z", "fraction"),
            ("2018-10-09T16:22:50,5Z", "UTC offset"),
            ("2018-10-09T16:22:50+0100", "':'"),
            ("2018-10-09T16:22:50+24:00", "offset hour 24"),
            ("2018-10-09T16:22:50+01:60", "offset minute 60"),
            ("2018-10-09T16:22:50Z\n\n", "unexpected"),
            ("2018-10-09T16:22:50Z ", "unexpected"),
            (" 2018-10-09T16:22:50Z", "year"),
            ("2018-10-09T16:22:50\u{662}Z", "UTC offset"),
            ("２018-10-09T16:22:50Z", "year"),
            ("2018-1-09T16:22:50Z", "month"),
            ("", "the end"),
        ];
        for (s, why) in bad {
            match date_time(s) {
                Ok(()) => panic!("{s:?} accepted"),
                Err(e) => assert!(e.contains(why), "{s:?}: {e}"),
            }
        }
    }

    #[test]
    fn ipv4_as_python_ipaddress_reads_it() {
        for s in ["0.0.0.0", "1.2.3.4", "255.255.255.255", "10.228.100.167"] {
            assert!(ipv4(s).is_ok(), "{s}");
            assert!(ip(s).is_ok(), "{s}");
        }
        for s in [
            "01.2.3.4",
            "1.2.3.00",
            "1.2.3.256",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.4\n",
            "\u{661}.2.3.4",
            "1.2.3.4/32",
            "1..3.4",
            "0x1.2.3.4",
            "1000.2.3.4",
            "",
        ] {
            assert!(ip(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn ipv6_as_python_ipaddress_reads_it_without_zones() {
        for s in [
            "::",
            "::1",
            "::ffff:1.2.3.4",
            "::FFFF:1.2.3.4",
            "::ffff:c000:0280",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:1.2.3.4",
            "fe80::1",
            "0000::",
            "2001:db8::8a2e:370:7334",
        ] {
            assert_eq!(ipv6(s), Ok(()), "{s}");
            assert!(ip(s).is_ok(), "{s}");
        }
        for s in [
            "fe80::1%eth0",
            "fe80::1%",
            "::ffff:01.2.3.4",
            "1:2:3:4:5:6:7:8::",
            "1::2::3",
            ":::",
            "1:2:3:4:5:6:7:1.2.3.4",
            "::/0",
            "00000::",
            "::g",
            ":1::",
            "1::1.2.3.4.5",
            "::1.2.3",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            ":1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:",
            "1:2",
            "1.2.3.4:5::",
        ] {
            assert!(ip(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn integers_as_python_jsonschema_types_them() {
        let int = |t: &str| match Parser::new(t).document() {
            Ok(Json::Num(n)) => Some(n.integral),
            _ => None,
        };
        assert_eq!(int("1"), Some(true));
        assert_eq!(int("-1"), Some(true));
        assert_eq!(int("1.0"), Some(true));
        assert_eq!(int("-0.0"), Some(true));
        assert_eq!(int("1e2"), Some(true));
        assert_eq!(int("1e-400"), Some(true));
        assert_eq!(int("4503599627370496.5"), Some(true));
        assert_eq!(int("1.5"), Some(false));
        assert_eq!(int("1e400"), Some(false));
        assert_eq!(int(&"9".repeat(400)), Some(true));
        assert_eq!(int(&format!("{}.0", "9".repeat(400))), Some(false));
        assert_eq!(int(&"9".repeat(4300)), Some(true));
        assert_eq!(int(&"9".repeat(4301)), None);
        for t in [
            "01",
            "1.",
            ".5",
            "+1",
            "-",
            "1e",
            "NaN",
            "Infinity",
            "-Infinity",
        ] {
            assert!(int(t).is_none(), "{t}");
        }
    }

    #[test]
    fn strings_and_keys_as_python_json_reads_them() {
        let s = |t: &str| match Parser::new(t).document() {
            Ok(Json::Str(s)) => Some(s),
            _ => None,
        };
        assert_eq!(s(r#""\ud83d\ude00""#).map(|s| s.chars()), Some(1));
        let lone = s(r#""\ud800A""#).expect("lone surrogates are read");
        assert_eq!(
            (lone.chars(), lone.lone.as_slice()),
            (2, &[(0, 0xD800)][..])
        );
        assert!(s("\"a\u{7f}b\"").is_some());
        assert!(s("\"a\tb\"").is_none());
        assert!(s(r#""\x""#).is_none());
        assert!(s(r#""\u12""#).is_none());
        // Duplicate keys: the last value wins; different lone surrogates are different keys.
        match Parser::new(r#"{"a":1,"b":2,"a":"x","\udc00":1,"\udc01":2}"#).document() {
            Ok(Json::Obj(m)) => {
                assert_eq!(m.len(), 4);
                assert!(matches!(get(&m, "a"), Some(Json::Str(v)) if v.is("x")));
            }
            other => panic!("{other:?}"),
        }
    }

    fn message(event: &str) -> String {
        format!(
            r#"{{"AgentVersion":"1","AgentId":"00000000-0000-4000-8000-000000000000","MessageSchemaVersion":"1.0","Events":[{event}]}}"#
        )
    }

    fn event(category: &str, name: &str, is_empty: bool, payload: &str) -> String {
        let event_type = TYPED
            .iter()
            .find(|t| t.name == name)
            .map_or("Security", |t| t.event_type);
        format!(
            r#"{{"Id":"00000000-0000-4000-8000-000000000001","TimestampLocal":"2018-08-10T11:01:21.000+01:00","TimestampUTC":"2018-08-10T11:01:21.000Z","Category":"{category}","Name":"{name}","EventType":"{event_type}","IsEmpty":{is_empty},"PayloadSchemaVersion":"1.0","Payload":[{payload}]}}"#
        )
    }

    const PORTS: &str = r#"{"LocalPort":"22","Protocol":"TCP"}"#;

    #[test]
    fn category_is_empty_and_payload_go_together() {
        let v = |c, n, e, p| validate_message(&message(&event(c, n, e, p)));
        assert_eq!(v("Periodic", "ListeningPorts", false, PORTS), Ok(()));
        assert_eq!(v("Periodic", "ListeningPorts", true, ""), Ok(()));
        // IsEmpty true with items: the schema allows it.
        assert_eq!(v("Periodic", "ListeningPorts", true, PORTS), Ok(()));
        let e = v("Periodic", "ListeningPorts", false, "").unwrap_err();
        assert_eq!(e[0].path, "/Events/0/Payload", "{e:?}");
        let login =
            r#"{"ProcessId":1,"UserName":"u","Operation":"o","Executable":"e","Result":"Fail"}"#;
        assert_eq!(v("Triggered", "Login", false, login), Ok(()));
        let e = v("Triggered", "Login", true, login).unwrap_err();
        assert_eq!(e[0].path, "/Events/0/IsEmpty", "{e:?}");
        assert!(v("Triggered", "Login", false, "").is_err());
        // Category fixed by the typed schema.
        let e = v("Triggered", "ListeningPorts", false, PORTS).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "/Events/0/Category: a ListeningPorts event is Periodic, not Triggered"
        );
    }

    #[test]
    fn violations_say_where_and_what() {
        let p = r#"{"RemoteAddress":"01.2.3.4","RemotePort":22,"Direction":"Out","Protocol":"TCP","ProcessId":1.5,"Executable":"/bin/x","Foo":"x"}"#;
        let e = validate_message(&message(&event("Triggered", "ConnectionCreate", false, p)))
            .unwrap_err();
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "/Events/0/Payload/0/Foo: unknown key: a ConnectionCreate payload item has only RemoteAddress, RemotePort, LocalAddress, LocalPort, Direction, Protocol, ProcessId, UserId, Executable, CommandLine, ExtraDetails",
                "/Events/0/Payload/0/RemoteAddress: \"01.2.3.4\" is not an IP address: not IPv4: leading zeros are not permitted in \"01\"",
                "/Events/0/Payload/0/RemotePort: must be a string, found integer 22",
                "/Events/0/Payload/0/ProcessId: must be an integer, found number 1.5",
            ]
        );
        let e = validate_message("[]").unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "/: a security message must be a JSON object, found an array of 0 items"
        );
        let e = validate_message("{\"a\":").unwrap_err();
        assert_eq!(e[0].path, "");
        assert!(e[0].message.starts_with("not JSON"), "{e:?}");
        let e = validate_message(&message(&event("Triggered", "Nope", false, PORTS))).unwrap_err();
        assert!(
            e[0].to_string()
                .starts_with("/Events/0/Name: \"Nope\" is not an event type"),
            "{e:?}"
        );
        let login = r#"{"ProcessId":1,"Operation":"o","Executable":"e","Result":"Fail"}"#;
        let e = validate_message(&message(&event("Triggered", "Login", false, login))).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "/Events/0/Payload/0: a Login payload item needs UserId or UserName (at least one)"
        );
    }

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
