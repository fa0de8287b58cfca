//! Strings the kernel encodes: quoted or hex.
//!
//! The kernel writes a string field (exe, comm, cwd, PATH name, EXECVE aN, proctitle, key …)
//! in double quotes when every byte is printable ASCII 0x21–0x7e other than `"`, and
//! otherwise as the upper-case hex of the raw bytes, unquoted (`audit_string_contains_control`).
//! A backslash inside quotes is a literal backslash, not an escape (`a8="back\slash"`), and an
//! empty string is `""`. [`field_string`] turns either form into text.

use std::borrow::Cow;

use crate::audit::parse::Value;

pub(super) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Decode hex text into `out`; `false` (and `out` unchanged in length) when it is not hex.
pub fn hex_into(s: &[u8], out: &mut Vec<u8>) -> bool {
    if s.len() % 2 != 0 {
        return false;
    }
    let start = out.len();
    out.reserve(s.len() / 2);
    for pair in s.chunks_exact(2) {
        match (hex_val(pair[0]), hex_val(pair[1])) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => {
                out.truncate(start);
                return false;
            }
        }
    }
    true
}

/// Decode hex text; `None` when it is not hex.
pub fn hex(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    hex_into(s, &mut out).then_some(out)
}

/// An unquoted encoded value: its hex decoding, or the text itself when it is not hex.
pub fn hex_or_raw(s: &[u8]) -> Cow<'_, [u8]> {
    match hex(s) {
        Some(v) => Cow::Owned(v),
        None => Cow::Borrowed(s),
    }
}

pub(super) fn is_hex(s: &[u8]) -> bool {
    s.len() % 2 == 0 && s.iter().all(|&b| hex_val(b).is_some())
}

/// Decoding lives here, above the parser: the parser only splits fields and knows nothing of
/// hex.
impl<'a> Value<'a> {
    /// The value of a field the kernel *encodes* (exe, comm, cwd, name, aN, proctitle, acct,
    /// key …): quoted text as is, bare text as the hex of the raw bytes. Bare text that is not
    /// valid hex is returned as is (older tools write some such fields unencoded). `None` for
    /// `(null)` and `?`.
    pub fn decoded(&self) -> Option<Cow<'a, [u8]>> {
        match *self {
            Value::Bare(b) => {
                if self.is_null() {
                    None
                } else {
                    Some(hex_or_raw(b))
                }
            }
            other => Some(Cow::Borrowed(other.raw())),
        }
    }
}

/// Append `bytes` to `out` as UTF-8, each invalid sequence replaced by U+FFFD. Allocates
/// nothing beyond the growth of `out`.
pub fn push_lossy(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

fn lossy_owned(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let bytes = e.into_bytes();
            let mut s = String::with_capacity(bytes.len() + 2);
            push_lossy(&mut s, &bytes);
            s
        }
    }
}

/// Cut `s` to at most `max` bytes on a character boundary; `true` when it was cut.
pub(super) fn truncate_at_char(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    true
}

/// The text of a field the kernel encodes (`exe`, `cwd`, `name`, `acct`, `comm`, `key`, …):
/// quoted as is, bare as the decoded hex, lossy UTF-8. `None` for `(null)` and `?`.
///
/// A rule key with several keys (`-k a -k b`) comes out joined by the byte 0x01, as the
/// kernel writes it.
pub fn field_string(v: Value<'_>) -> Option<String> {
    Some(match v.decoded()? {
        Cow::Borrowed(b) => {
            let mut s = String::with_capacity(b.len());
            push_lossy(&mut s, b);
            s
        }
        Cow::Owned(b) => lossy_owned(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::decode::rec;

    #[test]
    fn hex_cases() {
        assert_eq!(
            hex(b"6172672077697468207370616365").as_deref(),
            Some(&b"arg with space"[..])
        );
        assert_eq!(
            String::from_utf8(hex(b"C3BC6EC3AF63C3B664C3A9").unwrap()).unwrap(),
            "ünïcödé"
        );
        assert_eq!(hex(b"abc"), None);
        assert_eq!(hex(b"zz"), None);
        assert_eq!(hex(b"").as_deref(), Some(&b""[..]));
        assert_eq!(&*hex_or_raw(b"/bin/true"), b"/bin/true");
        let mut v = b"keep".to_vec();
        assert!(!hex_into(b"0G", &mut v));
        assert_eq!(v, b"keep");
    }

    #[test]
    fn lossy_text() {
        let mut s = String::new();
        push_lossy(&mut s, b"a\xffb\xc3");
        assert_eq!(s, "a\u{FFFD}b\u{FFFD}");
        push_lossy(&mut s, "ü".as_bytes());
        assert_eq!(s, "a\u{FFFD}b\u{FFFD}ü");
        let mut t = "aü".to_string();
        assert!(truncate_at_char(&mut t, 2)); // inside ü
        assert_eq!(t, "a");
        assert!(!truncate_at_char(&mut t, 5));
    }

    #[test]
    fn field_strings() {
        let r = rec(
            "type=SYSCALL msg=audit(1.0:3): comm=6D7920226563686F22202770726F67 exe=\"/usr/bin/true\" \
             cwd=2F746D702FFF key=(null) subj=? acct=28696E76616C6964207573657229 k2=6B310162",
        );
        let f = |k: &str| r.get(k.as_bytes()).and_then(field_string);
        // comm is cut to 15 bytes by the kernel (TASK_COMM_LEN).
        assert_eq!(f("comm").as_deref(), Some("my \"echo\" 'prog"));
        assert_eq!(f("exe").as_deref(), Some("/usr/bin/true"));
        assert_eq!(f("cwd").as_deref(), Some("/tmp/\u{FFFD}"));
        assert_eq!(f("key"), None);
        assert_eq!(f("subj"), None);
        assert_eq!(f("acct").as_deref(), Some("(invalid user)"));
        assert_eq!(f("k2").as_deref(), Some("k1\u{1}b"));
        assert_eq!(field_string(Value::Quoted(b"")).as_deref(), Some(""));
    }
}
