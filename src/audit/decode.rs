//! Decoding of the values the kernel encodes.
//!
//! The kernel writes a string field (exe, comm, cwd, PATH name, EXECVE aN, proctitle, key …)
//! in double quotes when every byte is printable ASCII 0x21–0x7e other than `"`, and
//! otherwise as the upper-case hex of the raw bytes, unquoted (`audit_string_contains_control`).
//! A backslash inside quotes is a literal backslash, not an escape.

use std::borrow::Cow;

fn hex_val(b: u8) -> Option<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
