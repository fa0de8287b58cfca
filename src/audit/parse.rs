//! Zero-copy parser for one auditd text record, as auditd writes it to audit.log or to the
//! af_unix plugin in `string` format (quirks: `shared/reference/auditd-here.md`,
//! `audit-stream.md`):
//!
//! ```text
//! [node=NAME ]type=NAME msg=audit(SEC.MSEC:SERIAL): FIELDS[\x1dENRICHED]
//! ```
//!
//! Nothing here allocates: a [`Record`] borrows the line, and fields are iterated lazily.

use std::fmt;

use thiserror::Error;

pub use super::decimal::{parse_i64, parse_u64};
use super::types;

/// What is wrong with a line that is not an audit record.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum ParseError {
    #[error("line does not start with `type=` (or `node=… type=`)")]
    NoType,
    #[error("no ` msg=audit(` after the record type")]
    NoMsg,
    #[error("malformed `audit(SEC.MSEC:SERIAL):` header")]
    BadHeader,
    /// The seconds are after 9999-12-31T23:59:59Z: no RFC 3339 date-time (four-digit year)
    /// can carry them, so no event of this record could be sent.
    #[error("record time after the year 9999 (seconds > 253402300799)")]
    TimeOutOfRange,
}

/// The last second a record may carry: 9999-12-31T23:59:59Z, the end of the schema's
/// `date-time` (RFC 3339's four-digit year). Millisecond times up to it fit an i64 with room.
pub const MAX_RECORD_SEC: u64 = 253_402_300_799;

/// The identity of an audit event: its timestamp and serial. Records of one event share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    pub sec: u64,
    pub msec: u16,
    pub serial: u64,
}

impl EventId {
    /// Milliseconds since the Unix epoch.
    pub fn millis(&self) -> u64 {
        self.sec
            .saturating_mul(1000)
            .saturating_add(u64::from(self.msec))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}:{}", self.sec, self.msec, self.serial)
    }
}

/// One parsed record, borrowing its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// `node=` value: present only with `name_format != NONE` or on forwarded events (the
    /// EOE line then ends in a trailing space).
    pub node: Option<&'a [u8]>,
    /// The record type number. Unknown types are written `type=UNKNOWN[1329]`; a name missing
    /// from our table is kept as text with number 0, never an error.
    pub rtype: u16,
    /// The record type as written (`SYSCALL`, `UNKNOWN[1329]`, …).
    pub type_name: &'a [u8],
    pub id: EventId,
    /// The fields, after `): ` and before the enrichment separator.
    pub body: &'a [u8],
    /// The enriched interpretations after 0x1d, when present.
    pub enriched: Option<&'a [u8]>,
}

/// The enrichment separator auditd writes before the interpreted fields (`KEY="value"`) of
/// some records with `log_format = ENRICHED`.
pub const ENRICH_SEP: u8 = 0x1d;

impl<'a> Record<'a> {
    /// Parse one line (without its trailing newline; a trailing `\n` or `\r` is tolerated).
    pub fn parse(line: &'a [u8]) -> Result<Record<'a>, ParseError> {
        let line = trim_eol(line);
        let (node, rest) = if let Some(rest) = line.strip_prefix(b"node=") {
            let sp = memchr::memchr(b' ', rest).ok_or(ParseError::NoType)?;
            (Some(&rest[..sp]), &rest[sp + 1..])
        } else {
            (None, line)
        };
        let rest = rest.strip_prefix(b"type=").ok_or(ParseError::NoType)?;
        let sp = memchr::memchr(b' ', rest).ok_or(ParseError::NoMsg)?;
        let type_name = &rest[..sp];
        let rest = rest[sp + 1..]
            .strip_prefix(b"msg=audit(")
            .ok_or(ParseError::NoMsg)?;
        let close = memchr::memchr(b')', rest).ok_or(ParseError::BadHeader)?;
        let id = parse_id(&rest[..close]).ok_or(ParseError::BadHeader)?;
        // Refused, not clamped: a time the kernel's clock cannot have had is garbage or
        // forged, and a clamped one would put a made-up time in an event.
        if id.sec > MAX_RECORD_SEC {
            return Err(ParseError::TimeOutOfRange);
        }
        let rest = rest[close + 1..]
            .strip_prefix(b":")
            .ok_or(ParseError::BadHeader)?;
        let (body, enriched) = match memchr::memchr(ENRICH_SEP, rest) {
            Some(p) => (&rest[..p], Some(&rest[p + 1..])),
            None => (rest, None),
        };
        Ok(Record {
            node,
            rtype: types::number(type_name),
            type_name,
            id,
            body,
            enriched,
        })
    }

    /// The fields of the body, walking into a nested `msg='…'`: user-space records (USER_*,
    /// CRED_*, …) nest their content there, so `op`, `acct`, `res` … read like top-level
    /// fields. EXECVE continuation records start with two spaces after the `):`, which the
    /// field walk skips like any separator.
    pub fn fields(&self) -> Fields<'a> {
        Fields::new(self.body)
    }

    /// The enriched `KEY=value` pairs (empty when the record is not enriched).
    pub fn enriched_fields(&self) -> Fields<'a> {
        Fields::new(self.enriched.unwrap_or(b""))
    }

    /// The first field named `key` (a linear scan: records are short).
    pub fn get(&self, key: &[u8]) -> Option<Value<'a>> {
        self.fields().find(|f| f.key == key).map(|f| f.value)
    }

    /// The first enriched field named `key`.
    pub fn get_enriched(&self, key: &[u8]) -> Option<Value<'a>> {
        self.enriched_fields()
            .find(|f| f.key == key)
            .map(|f| f.value)
    }
}

fn trim_eol(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = line {
        line = rest;
    }
    line
}

fn parse_id(s: &[u8]) -> Option<EventId> {
    let dot = memchr::memchr(b'.', s)?;
    let colon = memchr::memchr(b':', &s[dot..])? + dot;
    let sec = parse_u64(&s[..dot])?;
    let msec_digits = &s[dot + 1..colon];
    // auditd writes `%03u` (three digits); shorter forms from other tools are read as written.
    if msec_digits.is_empty() || msec_digits.len() > 3 {
        return None;
    }
    let msec = u16::try_from(parse_u64(msec_digits)?).ok()?;
    let serial = parse_u64(&s[colon + 1..])?;
    Some(EventId { sec, msec, serial })
}

/// A field value as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// `"…"`: the bytes between the quotes, literal: the kernel quotes only printable ASCII
    /// without `"`, with no escapes (a backslash is a literal).
    Quoted(&'a [u8]),
    /// `'…'` (other than the nested `msg='…'`, which is walked into).
    SingleQuoted(&'a [u8]),
    /// `{ … }` in enriched fields (`SADDR={ saddr_fam=inet laddr=… lport=… }`, spaces
    /// inside): the bytes between the braces, trimmed.
    Braced(&'a [u8]),
    /// An unquoted token: a number, a name, `(null)` or `?`, or the upper-case hex of the raw
    /// bytes when the kernel found a space, quote, control or non-ASCII byte in them.
    Bare(&'a [u8]),
}

impl<'a> Value<'a> {
    /// The bytes as written, without quotes.
    pub fn raw(&self) -> &'a [u8] {
        match *self {
            Value::Quoted(b) | Value::SingleQuoted(b) | Value::Braced(b) | Value::Bare(b) => b,
        }
    }

    /// `(null)` or `?`: auditd's ways of saying "no value".
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Bare(b"(null)") | Value::Bare(b"?"))
    }

    /// A decimal number.
    pub fn as_u64(&self) -> Option<u64> {
        parse_u64(self.raw())
    }

    /// A signed decimal number (`exit=-115`).
    pub fn as_i64(&self) -> Option<i64> {
        parse_i64(self.raw())
    }
}

/// One `key=value` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub key: &'a [u8],
    pub value: Value<'a>,
}

/// Iterator over the `key=value` pairs of a record body or of its enrichment.
///
/// Tokens without `=` (free text in AVC records, the `old` of a legacy `old auid=`) are
/// skipped. An unterminated quote takes the rest of the input as its value: a truncated
/// record still yields what it has.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    s: &'a [u8],
    pos: usize,
    /// End of a nested `msg='…'` being walked, and where to resume after it.
    nested_end: Option<usize>,
}

impl<'a> Fields<'a> {
    pub fn new(s: &'a [u8]) -> Self {
        Fields {
            s,
            pos: 0,
            nested_end: None,
        }
    }

    fn limit(&self) -> usize {
        self.nested_end.unwrap_or(self.s.len())
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            let end = self.limit();
            // Skip separators.
            while self.pos < end && self.s[self.pos] == b' ' {
                self.pos += 1;
            }
            if self.pos >= end {
                if let Some(ne) = self.nested_end.take() {
                    // Step over the closing quote of the nested msg and go on outside.
                    self.pos = ne + 1;
                    continue;
                }
                return None;
            }
            let s = &self.s[..end];
            let start = self.pos;
            // The key runs to '=' or a space, whichever comes first.
            let mut i = start;
            while i < end && s[i] != b'=' && s[i] != b' ' {
                i += 1;
            }
            if i >= end || s[i] == b' ' {
                // A token without '=': skip it.
                self.pos = i;
                continue;
            }
            let key = &s[start..i];
            let vstart = i + 1;
            let (value, next) = match s.get(vstart) {
                Some(b'"') => {
                    let body = &s[vstart + 1..];
                    match memchr::memchr(b'"', body) {
                        Some(q) => (Value::Quoted(&body[..q]), vstart + 1 + q + 1),
                        None => (Value::Quoted(body), end),
                    }
                }
                Some(b'\'') => {
                    let body = &s[vstart + 1..];
                    let nested = key == b"msg" && self.nested_end.is_none();
                    // The nested msg='…' is the record's last field, and an apostrophe inside
                    // it is not encoded (`acct="o'brien"`): it ends at the *last* quote.
                    let close = if nested {
                        memchr::memrchr(b'\'', body)
                    } else {
                        memchr::memchr(b'\'', body)
                    };
                    if nested {
                        // Walk into the nested message.
                        let ne = close.map_or(end, |q| vstart + 1 + q);
                        self.nested_end = Some(ne);
                        self.pos = vstart + 1;
                        continue;
                    }
                    match close {
                        Some(q) => (Value::SingleQuoted(&body[..q]), vstart + 1 + q + 1),
                        None => (Value::SingleQuoted(body), end),
                    }
                }
                Some(b'{') => {
                    let body = &s[vstart + 1..];
                    match memchr::memchr(b'}', body) {
                        Some(q) => (Value::Braced(trim_spaces(&body[..q])), vstart + 1 + q + 1),
                        None => (Value::Braced(trim_spaces(body)), end),
                    }
                }
                _ => {
                    let body = &s[vstart..];
                    let len = memchr::memchr(b' ', body).unwrap_or(body.len());
                    (Value::Bare(&body[..len]), vstart + len)
                }
            };
            self.pos = next.min(end);
            return Some(Field { key, value });
        }
    }
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' '] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(r: &Record<'a>) -> Vec<(String, Value<'a>)> {
        r.fields()
            .map(|f| (String::from_utf8_lossy(f.key).into_owned(), f.value))
            .collect()
    }

    #[test]
    fn header_plain() {
        let r = Record::parse(b"type=EOE msg=audit(1700000000.123:456):").unwrap();
        assert_eq!(r.node, None);
        assert_eq!(r.rtype, types::EOE);
        assert_eq!(
            r.id,
            EventId {
                sec: 1700000000,
                msec: 123,
                serial: 456
            }
        );
        assert_eq!(r.body, b"");
        assert_eq!(r.enriched, None);
        assert_eq!(r.id.millis(), 1_700_000_000_123);
    }

    #[test]
    fn header_node_and_trailing_space() {
        let r = Record::parse(b"node=vm type=EOE msg=audit(1.002:3): \n").unwrap();
        assert_eq!(r.node, Some(&b"vm"[..]));
        assert_eq!(r.id.msec, 2);
        assert_eq!(r.body, b" ");
        assert_eq!(r.fields().count(), 0);
    }

    #[test]
    fn unknown_types() {
        let r = Record::parse(b"type=UNKNOWN[1329] msg=audit(1.0:3): x=1").unwrap();
        assert_eq!(r.rtype, 1329);
        assert_eq!(r.type_name, b"UNKNOWN[1329]");
        let r = Record::parse(b"type=SOMETHING_NEW msg=audit(1.0:3): x=1").unwrap();
        assert_eq!(r.rtype, 0);
        assert_eq!(r.type_name, b"SOMETHING_NEW");
    }

    #[test]
    fn bad_headers() {
        assert_eq!(Record::parse(b"garbage"), Err(ParseError::NoType));
        assert_eq!(Record::parse(b"type=SYSCALL"), Err(ParseError::NoMsg));
        assert_eq!(
            Record::parse(b"type=SYSCALL msg=audit(1.2.3): a=1"),
            Err(ParseError::BadHeader)
        );
        assert_eq!(
            Record::parse(b"type=SYSCALL msg=audit(1.2:x): a=1"),
            Err(ParseError::BadHeader)
        );
        assert_eq!(
            Record::parse(b"type=SYSCALL msg=audit(1.2:3) a=1"),
            Err(ParseError::BadHeader)
        );
        assert_eq!(
            Record::parse(b"type=SYSCALL msg=audit(1.2345:3): a=1"),
            Err(ParseError::BadHeader)
        );
        assert_eq!(Record::parse(b""), Err(ParseError::NoType));
        assert_eq!(Record::parse(b"node=x"), Err(ParseError::NoType));
    }

    #[test]
    fn record_times_the_schema_cannot_carry_are_refused() {
        let at = |sec: &str| {
            Record::parse(format!("type=EOE msg=audit({sec}.999:1):").as_bytes()).map(|r| r.id)
        };
        // 9999-12-31T23:59:59.999Z: the last time a date-time can carry.
        let last = at("253402300799").unwrap();
        assert_eq!(last.sec, MAX_RECORD_SEC);
        assert_eq!(last.millis(), 253_402_300_799_999);
        assert_eq!(at("253402300800"), Err(ParseError::TimeOutOfRange));
        // Milliseconds beyond an i64, and seconds beyond a u64.
        assert_eq!(at("9223372036854776"), Err(ParseError::TimeOutOfRange));
        assert_eq!(at("18446744073709551615"), Err(ParseError::TimeOutOfRange));
        assert_eq!(at("18446744073709551616"), Err(ParseError::BadHeader));
        // Negative and garbage seconds.
        assert_eq!(at("-1"), Err(ParseError::BadHeader));
        assert_eq!(at("1e9"), Err(ParseError::BadHeader));
        assert_eq!(at(""), Err(ParseError::BadHeader));
        assert_eq!(at("0").map(|id| id.millis()), Ok(999));
    }

    #[test]
    fn value_kinds_and_enrichment() {
        let line = b"type=SYSCALL msg=audit(1.0:3): arch=c000003e success=yes exit=-115 comm=\"true\" exe=2F746D702F6120622F78 key=(null) subj=?\x1dARCH=x86_64 SYSCALL=connect AUID=\"unset\" SADDR={ saddr_fam=inet laddr=127.0.0.1 lport=80 }";
        let r = Record::parse(line).unwrap();
        let f = fields(&r);
        assert_eq!(f.len(), 7);
        assert_eq!(f[0], ("arch".into(), Value::Bare(b"c000003e")));
        assert_eq!(f[2].1.as_i64(), Some(-115));
        assert_eq!(f[3].1, Value::Quoted(b"true"));
        assert_eq!(f[4].1.decoded().as_deref(), Some(&b"/tmp/a b/x"[..]));
        assert!(f[5].1.is_null());
        assert!(f[6].1.is_null());
        assert_eq!(r.get_enriched(b"ARCH"), Some(Value::Bare(b"x86_64")));
        assert_eq!(r.get_enriched(b"AUID"), Some(Value::Quoted(b"unset")));
        assert_eq!(
            r.get_enriched(b"SADDR"),
            Some(Value::Braced(b"saddr_fam=inet laddr=127.0.0.1 lport=80"))
        );
    }

    #[test]
    fn nested_msg() {
        let line = b"type=USER_AUTH msg=audit(1.0:3): pid=10 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:authentication grantors=? acct=\"root\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=failed'\x1dUID=\"root\" AUID=\"unset\"";
        let r = Record::parse(line).unwrap();
        let keys: Vec<_> = r.fields().map(|f| f.key).collect();
        assert_eq!(
            keys,
            vec![
                &b"pid"[..],
                b"uid",
                b"auid",
                b"ses",
                b"op",
                b"grantors",
                b"acct",
                b"exe",
                b"hostname",
                b"addr",
                b"terminal",
                b"res"
            ]
        );
        assert_eq!(r.get(b"res"), Some(Value::Bare(b"failed")));
        assert_eq!(r.get_enriched(b"UID"), Some(Value::Quoted(b"root")));
    }

    #[test]
    fn apostrophe_inside_nested_msg_does_not_end_it() {
        let r = Record::parse(b"type=USER_LOGIN msg=audit(1.000:3): pid=1 msg='op=login acct=\"o'brien\" exe=\"/usr/sbin/sshd\" res=failed'\x1dUID=\"root\"").unwrap();
        assert_eq!(r.get(b"acct"), Some(Value::Quoted(b"o'brien")));
        assert_eq!(r.get(b"res"), Some(Value::Bare(b"failed")));
        assert_eq!(r.fields().count(), 5);
    }

    #[test]
    fn fields_after_nested_msg_and_free_text() {
        let r =
            Record::parse(b"type=X msg=audit(1.0:3): msg='a=1 free text' b=2 old auid=5").unwrap();
        let f = fields(&r);
        assert_eq!(
            f,
            vec![
                ("a".into(), Value::Bare(b"1")),
                ("b".into(), Value::Bare(b"2")),
                ("auid".into(), Value::Bare(b"5")),
            ]
        );
    }

    #[test]
    fn truncated_values_do_not_panic() {
        for line in [
            &b"type=X msg=audit(1.0:3): a=\"unterminated"[..],
            b"type=X msg=audit(1.0:3): msg='unterminated a=1",
            b"type=X msg=audit(1.0:3): a={ brace",
            b"type=X msg=audit(1.0:3): a=",
            b"type=X msg=audit(1.0:3): =",
            b"type=X msg=audit(1.0:3): a='x",
        ] {
            let r = Record::parse(line).unwrap();
            let _ = r.fields().count();
        }
        let r = Record::parse(b"type=X msg=audit(1.0:3): a=\"unterminated").unwrap();
        assert_eq!(r.get(b"a"), Some(Value::Quoted(b"unterminated")));
        let r = Record::parse(b"type=X msg=audit(1.0:3): msg='z=1").unwrap();
        assert_eq!(r.get(b"z"), Some(Value::Bare(b"1")));
    }

    #[test]
    fn execve_continuation_double_space() {
        let r =
            Record::parse(b"type=EXECVE msg=audit(1.0:3):  a376=\"x\" a377_len=12 a377[0]=\"abc\"")
                .unwrap();
        let f = fields(&r);
        assert_eq!(f[0].0, "a376");
        assert_eq!(f[1], ("a377_len".into(), Value::Bare(b"12")));
        assert_eq!(f[2], ("a377[0]".into(), Value::Quoted(b"abc")));
    }
}
