//! PROCTITLE ([`proctitle`]).
//!
//! The process's argument area (argv joined by NUL), **cut to 128 bytes**
//! (`MAX_PROCTITLE_AUDIT_LEN`) and right-trimmed of unprintable bytes, so a trailing NUL is
//! gone and the last argument may be cut. A title without NUL and without unprintable bytes
//! is quoted (`proctitle="/bin/true"`). The title is stale after a second execve in the same
//! process, so EXECVE is the source of truth for argv.

use std::borrow::Cow;

use crate::audit::parse::Value;

use super::value::push_lossy;

/// The kernel's `MAX_PROCTITLE_AUDIT_LEN`.
pub const MAX_PROCTITLE_AUDIT_LEN: usize = 128;

/// A decoded `proctitle=`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proctitle<'a> {
    bytes: Cow<'a, [u8]>,
}

/// Decode a `proctitle=` value (quoted: one argument, no allocation; hex: NUL-separated).
/// `(null)` and `?` give an empty title.
pub fn proctitle(v: Value<'_>) -> Proctitle<'_> {
    Proctitle {
        bytes: v.decoded().unwrap_or(Cow::Borrowed(&[])),
    }
}

impl Proctitle<'_> {
    /// The title as the kernel gave it: arguments separated by NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The arguments (none for an empty title). The last one may be cut.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let b = self.as_bytes();
        (!b.is_empty())
            .then(|| b.split(|&c| c == 0))
            .into_iter()
            .flatten()
    }

    /// The arguments joined by single spaces, lossy UTF-8 (as [`super::ArgvResult::command_line`]).
    pub fn command_line(&self) -> String {
        let mut out = String::with_capacity(self.bytes.len());
        for (i, a) in self.args().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            push_lossy(&mut out, a);
        }
        out
    }

    /// The title fills the kernel's buffer, so it may have been cut: 128 bytes means it
    /// was; 127 means it was, or the argument area was exactly 128 bytes with its final NUL.
    pub fn possibly_truncated(&self) -> bool {
        self.bytes.len() >= MAX_PROCTITLE_AUDIT_LEN - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::decode::{hexu, rec};

    #[test]
    fn proctitle_quoted() {
        let r = rec("type=PROCTITLE msg=audit(1.0:3): proctitle=\"/bin/true\"");
        let t = proctitle(r.get(b"proctitle").unwrap());
        assert!(matches!(t.bytes, Cow::Borrowed(_)));
        assert_eq!(t.args().collect::<Vec<_>>(), [&b"/bin/true"[..]]);
        assert_eq!(t.command_line(), "/bin/true");
        assert!(!t.possibly_truncated());
    }

    #[test]
    fn proctitle_hex() {
        let r = rec(
            "type=PROCTITLE msg=audit(1.0:3): proctitle=2F62696E2F7368002D63006563686F2068656C6C6F",
        );
        let t = proctitle(r.get(b"proctitle").unwrap());
        assert_eq!(
            t.args().collect::<Vec<_>>(),
            [&b"/bin/sh"[..], b"-c", b"echo hello"]
        );
        assert_eq!(t.command_line(), "/bin/sh -c echo hello");
        assert_eq!(t.as_bytes(), b"/bin/sh\0-c\0echo hello");
        // An empty argument in the middle stays.
        let t = proctitle(Value::Bare(b"61000062"));
        assert_eq!(t.args().collect::<Vec<_>>(), [&b"a"[..], b"", b"b"]);
        assert_eq!(t.command_line(), "a  b");
    }

    #[test]
    fn proctitle_truncated() {
        let mut title = b"python3\0-c\0".to_vec();
        title.resize(128, b'A');
        let line = format!(
            "type=PROCTITLE msg=audit(1.0:3): proctitle={}",
            hexu(&title)
        );
        let r = rec(&line);
        let t = proctitle(r.get(b"proctitle").unwrap());
        assert!(t.possibly_truncated());
        let args: Vec<&[u8]> = t.args().collect();
        assert_eq!(args.len(), 3);
        assert_eq!(args[2], &[b'A'; 117][..]);
        assert_eq!(t.command_line().len(), 128);
        assert!(proctitle(Value::Quoted(&[b'x'; 127])).possibly_truncated());
        assert!(!proctitle(Value::Quoted(&[b'x'; 126])).possibly_truncated());
    }

    #[test]
    fn proctitle_null() {
        let t = proctitle(Value::Bare(b"(null)"));
        assert_eq!(t.args().count(), 0);
        assert_eq!(t.command_line(), "");
        assert_eq!(t, Proctitle::default());
    }
}
