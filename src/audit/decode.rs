//! Decoding of the values the kernel encodes.
//!
//! # Strings: quoted or hex
//!
//! The kernel writes a string field (exe, comm, cwd, PATH name, EXECVE aN, proctitle, key …)
//! in double quotes when every byte is printable ASCII 0x21–0x7e other than `"`, and
//! otherwise as the upper-case hex of the raw bytes, unquoted (`audit_string_contains_control`).
//! A backslash inside quotes is a literal backslash, not an escape (`a8="back\slash"`), and an
//! empty string is `""`. [`field_string`] turns either form into text.
//!
//! # EXECVE: argv ([`Argv`])
//!
//! `audit_log_execve_info` writes the arguments of an execve into one or more EXECVE records
//! of the same event. Quirks, all handled:
//!
//! - `argc=N` is in the first record only. Each record holds at most
//!   `MAX_EXECVE_AUDIT_LEN` (7500) bytes of argument text; further arguments go into
//!   continuation records that have no `argc` and begin with two spaces (`):  a376=…`).
//! - An argument is `aN="text"` or `aN=HEX` (hex of the raw bytes; `aN=""` is empty).
//! - An argument that does not fit in what is left of a record is written
//!   `aN_len=L aN[0]=… aN[1]=…`, its chunks possibly in later records. Each chunk is quoted or
//!   hex like a whole argument, and a hex chunk always holds whole bytes. An argument longer
//!   than the kernel's 7500-byte fetch buffer is **forced to hex** and `L` then counts hex
//!   characters (twice the bytes); otherwise `L` counts the characters of the argument as
//!   written (bytes when quoted, hex characters when hex).
//! - Records of one event can reach us in any order, so arguments and chunks are placed by
//!   their index, never by arrival.
//! - `argc` can exceed the arguments present (older kernels skipped empty arguments; records
//!   can be lost), and `argc=0` exists with an `a0` present (an execve with an empty argv,
//!   which the kernel fills in). Absent arguments read as empty and are counted in
//!   [`ArgvResult::missing`]; the command line leaves them out (`argc=1000000 a0="x"` is
//!   `x`, not `x` and a million spaces) and the event says how many were missing.
//!
//! Unlike the classic tools we keep every argument across records, in index order, and say
//! what was missing; hostile input (`a4294967295=`, `argc=99999999`, the same record twice,
//! a huge argv) costs memory bounded by [`ArgvLimits`], never by the numbers it claims.
//!
//! # PROCTITLE ([`proctitle`])
//!
//! The process's argument area (argv joined by NUL), **cut to 128 bytes**
//! (`MAX_PROCTITLE_AUDIT_LEN`) and right-trimmed of unprintable bytes, so a trailing NUL is
//! gone and the last argument may be cut. A title without NUL and without unprintable bytes
//! is quoted (`proctitle="/bin/true"`). The title is stale after a second execve in the same
//! process, so EXECVE is the source of truth for argv.
//!
//! # SOCKADDR ([`sockaddr`])
//!
//! `saddr=` is the hex of the `struct sockaddr` exactly as user space passed it (at most
//! `sizeof(struct sockaddr_storage)` = 128 bytes), logged before the protocol checks it.
//! `sa_family` is **host-endian**: little-endian on all our targets (x86_64, i386, aarch64,
//! arm), big-endian on s390x, ppc64, armeb. Ports, IPv4 addresses and the IPv6 flow label
//! are network order; the IPv6 scope id and netlink pid/groups are host order. AF_UNIX
//! addresses come in every length: the 2-byte family alone (an unnamed socket, seen on the
//! accept side), just the path and its NUL (46 bytes for `/var/run/nscd/socket`), or padded
//! to the full 110 bytes. An abstract unix name starts with a NUL byte and is delimited by the
//! length, not by a NUL.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use thiserror::Error;

use super::parse::{Record, Value, parse_u64};
use super::syscalls::Endian;
use super::types;

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

fn is_hex(s: &[u8]) -> bool {
    s.len() % 2 == 0 && s.iter().all(|&b| hex_val(b).is_some())
}

// ---------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------

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
fn truncate_at_char(s: &mut String, max: usize) -> bool {
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

// ---------------------------------------------------------------------------------------
// EXECVE
// ---------------------------------------------------------------------------------------

/// The kernel's `MAX_EXECVE_AUDIT_LEN`: argument text per EXECVE record.
pub const MAX_EXECVE_AUDIT_LEN: usize = 7500;

/// Chunk indexes at or above this are bogus: an argument is at most `MAX_ARG_STRLEN`
/// (128 KiB), 256 Ki hex characters, about 35 chunks.
const MAX_CHUNK: u64 = 1 << 16;

/// Bounds of an [`Argv`] assembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgvLimits {
    /// Budget for what is kept: decoded argument bytes plus one per stored argument or
    /// chunk (the separator it will need). What does not fit is dropped and the result says
    /// [`ArgvResult::truncated`]. Clamped to `u32::MAX - 1`.
    pub max_bytes: usize,
    /// Argument indexes at or above this are ignored and counted as malformed, and an
    /// `argc` above it is clamped (and the result marked truncated).
    pub max_args: u32,
}

impl Default for ArgvLimits {
    /// 64 KiB of command line (above the default `events.max_command_line_bytes`, so a
    /// caller that shortens still sees that there was more) and 2^20 arguments.
    fn default() -> Self {
        ArgvLimits {
            max_bytes: 64 << 10,
            max_args: 1 << 20,
        }
    }
}

/// One stored argument or chunk: `buf[start..end]`. After [`Argv::finish`] one per argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    idx: u32,
    /// `WHOLE` for `aN=`, `k + 1` for `aN[k]=`.
    kind: u32,
    start: u32,
    end: u32,
    /// Written as hex (for checking `aN_len`).
    hex: bool,
}

const WHOLE: u32 = 0;

/// What an EXECVE key is.
enum Key {
    Argc,
    Arg(u64),
    Len(u64),
    Chunk(u64, u64),
    /// `a` + digits that are not a valid number or suffix.
    Bad,
    Other,
}

fn execve_key(k: &[u8]) -> Key {
    if k == b"argc" {
        return Key::Argc;
    }
    let Some(rest) = k.strip_prefix(b"a") else {
        return Key::Other;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Key::Other;
    }
    let (num, suffix) = rest.split_at(digits);
    let Some(n) = parse_u64(num) else {
        return Key::Bad;
    };
    match suffix {
        b"" => Key::Arg(n),
        b"_len" => Key::Len(n),
        [b'[', inner @ .., b']'] => parse_u64(inner).map_or(Key::Bad, |c| Key::Chunk(n, c)),
        _ => Key::Bad,
    }
}

/// Assembles argv from the EXECVE records of one event, in any order.
///
/// ```
/// use azureiotsecurity::audit::{decode::Argv, parse::Record};
/// let mut argv = Argv::default();
/// for line in [
///     &b"type=EXECVE msg=audit(1.0:7):  a2=6120622E747874"[..],
///     b"type=EXECVE msg=audit(1.0:7): argc=3 a0=\"cat\" a1=\"-n\"",
/// ] {
///     argv.add_record(&Record::parse(line).unwrap());
/// }
/// let argv = argv.finish();
/// assert_eq!(argv.command_line(), "cat -n a b.txt");
/// assert_eq!(argv.missing, 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Argv {
    limits: ArgvLimits,
    buf: Vec<u8>,
    pieces: Vec<Piece>,
    /// Declared `aN_len` values.
    lens: Vec<(u32, u64)>,
    argc: Option<u64>,
    malformed: usize,
    truncated: bool,
    decoded_bytes: u64,
}

impl Argv {
    pub fn new(limits: ArgvLimits) -> Self {
        Argv {
            limits: ArgvLimits {
                max_bytes: limits.max_bytes.min(u32::MAX as usize - 1),
                ..limits
            },
            ..Argv::default()
        }
    }

    /// Add the arguments of one record. Records other than EXECVE are ignored.
    pub fn add_record(&mut self, rec: &Record<'_>) {
        if rec.rtype != types::EXECVE {
            return;
        }
        // The decoded arguments are never longer than the record's text.
        let room = self.limits.max_bytes.saturating_sub(self.used());
        self.buf.reserve(rec.body.len().min(room));
        for f in rec.fields() {
            self.add_field(f.key, f.value);
        }
    }

    /// Add one `key=value` of an EXECVE record (`argc`, `aN`, `aN_len`, `aN[k]`; other
    /// keys are ignored).
    pub fn add_field(&mut self, key: &[u8], value: Value<'_>) {
        match execve_key(key) {
            Key::Argc => match value.as_u64() {
                Some(n) if self.argc.is_none() => {
                    self.argc = Some(n);
                    // A hint only, capped: a hostile argc must not allocate.
                    self.pieces
                        .reserve(usize::try_from(n.min(256)).unwrap_or(0));
                }
                Some(n) if self.argc == Some(n) => {}
                _ => self.malformed += 1,
            },
            Key::Arg(n) => {
                if let Some(i) = self.index(n) {
                    self.push_piece(i, WHOLE, value);
                }
            }
            Key::Chunk(n, k) => {
                if k >= MAX_CHUNK {
                    self.malformed += 1;
                } else if let Some(i) = self.index(n) {
                    // k < 2^16, so k + 1 fits.
                    self.push_piece(i, k as u32 + 1, value);
                }
            }
            Key::Len(n) => {
                if let Some(i) = self.index(n) {
                    match value.as_u64() {
                        Some(l) if self.charge() => self.lens.push((i, l)),
                        Some(_) => {}
                        None => self.malformed += 1,
                    }
                }
            }
            Key::Bad => self.malformed += 1,
            Key::Other => {}
        }
    }

    fn index(&mut self, n: u64) -> Option<u32> {
        match u32::try_from(n) {
            Ok(i) if i < self.limits.max_args => Some(i),
            _ => {
                self.malformed += 1;
                None
            }
        }
    }

    fn used(&self) -> usize {
        self.buf.len() + self.pieces.len() + self.lens.len()
    }

    /// Take one unit of the budget for a stored entry; `false` (and truncated) when none is
    /// left.
    fn charge(&mut self) -> bool {
        if self.truncated || self.used() >= self.limits.max_bytes {
            self.truncated = true;
            return false;
        }
        true
    }

    fn push_piece(&mut self, idx: u32, kind: u32, value: Value<'_>) {
        let text = value.raw();
        if !self.charge() {
            // Dropped, but still counted in the full length.
            let n = match value {
                Value::Bare(b) if is_hex(b) => b.len() / 2,
                _ => text.len(),
            };
            self.decoded_bytes = self.decoded_bytes.saturating_add(n as u64);
            return;
        }
        // The unit for this entry is taken by the +1.
        let room = self.limits.max_bytes.saturating_sub(self.used() + 1);
        let start = self.buf.len();
        let (full, hex) = match value {
            Value::Bare(b) if b.len() % 2 == 0 => {
                let take = (b.len() / 2).min(room);
                if hex_into(&b[..take * 2], &mut self.buf) {
                    (b.len() / 2, true)
                } else {
                    (b.len(), false)
                }
            }
            _ => (text.len(), false),
        };
        if !hex {
            if !matches!(value, Value::Quoted(_)) {
                // Bare text that is not hex, or a quoting the kernel never uses here.
                self.malformed += 1;
            }
            self.buf.extend_from_slice(&text[..text.len().min(room)]);
        }
        let kept = self.buf.len() - start;
        if kept < full {
            self.truncated = true;
        }
        self.decoded_bytes = self.decoded_bytes.saturating_add(full as u64);
        self.pieces.push(Piece {
            idx,
            kind,
            start: start as u32,
            end: self.buf.len() as u32,
            hex,
        });
    }

    /// Put the arguments in order and join the chunks.
    pub fn finish(self) -> ArgvResult {
        let Argv {
            limits,
            mut buf,
            mut pieces,
            mut lens,
            argc,
            mut malformed,
            mut truncated,
            decoded_bytes,
        } = self;

        // Fast path: records arrived in order with no duplicates, so the buffer already holds
        // the arguments in order and the chunks of each argument next to each other.
        let in_order = pieces.windows(2).all(|w| match w {
            [a, b] => (a.idx, a.kind) < (b.idx, b.kind) && !(a.idx == b.idx && a.kind == WHOLE),
            _ => true,
        });
        if !in_order {
            pieces.sort_unstable_by_key(|p| (p.idx, p.kind, p.start));
            let mut ordered = Vec::with_capacity(buf.len());
            let mut prev: Option<(u32, u32)> = None;
            pieces.retain_mut(|p| {
                // A repeated argument or chunk, or chunks next to a whole aN: keep the first.
                let dup = prev.is_some_and(|(i, k)| i == p.idx && (k == p.kind || k == WHOLE));
                if dup {
                    malformed += 1;
                    return false;
                }
                prev = Some((p.idx, p.kind));
                let bytes = buf.get(p.start as usize..p.end as usize).unwrap_or(&[]);
                p.start = ordered.len() as u32;
                ordered.extend_from_slice(bytes);
                p.end = ordered.len() as u32;
                true
            });
            buf = ordered;
        }

        lens.sort_unstable();
        let before = lens.len();
        lens.dedup_by_key(|l| l.0);
        malformed += before - lens.len();

        // Join the chunks of each argument (in place) and check them against aN_len.
        let mut incomplete = 0;
        let mut len_only: Vec<u32> = Vec::new();
        let mut li = 0;
        let mut w = 0;
        let mut r = 0;
        while let Some(&first) = pieces.get(r) {
            let mut end = first.end;
            let mut last_kind = first.kind;
            let mut all_hex = first.hex;
            // Chunks must be [0], [1], … with none left out.
            let mut gap = first.kind > 1;
            r += 1;
            while let Some(p) = pieces.get(r).filter(|p| p.idx == first.idx) {
                gap |= p.kind != last_kind + 1;
                last_kind = p.kind;
                all_hex &= p.hex;
                end = p.end;
                r += 1;
            }
            while let Some(&(i, _)) = lens.get(li).filter(|l| l.0 < first.idx) {
                len_only.push(i);
                li += 1;
            }
            let declared = match lens.get(li) {
                Some(&(i, l)) if i == first.idx => {
                    li += 1;
                    Some(l)
                }
                _ => None,
            };
            if first.kind != WHOLE {
                let got = u64::from(end.saturating_sub(first.start));
                let short =
                    !truncated && declared.is_some_and(|d| got < if all_hex { d / 2 } else { d });
                if gap || short {
                    incomplete += 1;
                }
            }
            if let Some(slot) = pieces.get_mut(w) {
                *slot = Piece { end, ..first };
            }
            w += 1;
        }
        pieces.truncate(w);
        len_only.extend(lens.get(li..).unwrap_or(&[]).iter().map(|l| l.0));
        if !len_only.is_empty() {
            // An aN_len without any of its chunks: the argument exists but nothing of it
            // arrived.
            incomplete += len_only.len();
            pieces.extend(len_only.iter().map(|&idx| Piece {
                idx,
                kind: WHOLE,
                start: 0,
                end: 0,
                hex: false,
            }));
            pieces.sort_unstable_by_key(|p| p.idx);
        }

        let present = pieces.last().map_or(0, |p| p.idx as usize + 1);
        let max_args = limits.max_args as usize;
        let len = if truncated {
            // Nothing is known past what was kept.
            present
        } else {
            let want = argc.map_or(0, |a| usize::try_from(a).unwrap_or(usize::MAX));
            if want > max_args {
                truncated = true;
                max_args
            } else {
                want.max(present)
            }
        };
        let missing = len.saturating_sub(pieces.len());
        if buf.len() + pieces.len().saturating_sub(1) > limits.max_bytes {
            // The arguments present and their separators do not fit in the command line.
            truncated = true;
        }
        ArgvResult {
            dense: pieces.len() == len,
            buf,
            spans: pieces,
            len,
            max_bytes: limits.max_bytes,
            argc,
            missing,
            incomplete,
            malformed,
            truncated,
            decoded_bytes,
        }
    }
}

/// The argv of one exec: one buffer and the place of each argument in it.
#[derive(Debug, Clone)]
pub struct ArgvResult {
    buf: Vec<u8>,
    /// One per present argument, ordered by index.
    spans: Vec<Piece>,
    /// `spans[i]` is argument `i`.
    dense: bool,
    len: usize,
    max_bytes: usize,
    /// `argc=` as declared by the first record (`None` when that record is absent).
    pub argc: Option<u64>,
    /// Arguments below [`len`](Self::len) of which nothing arrived (they read as empty).
    pub missing: usize,
    /// Arguments of which some chunks arrived but not all (a gap in `aN[k]`, or less than
    /// `aN_len` says), or only `aN_len`.
    pub incomplete: usize,
    /// Fields that made no sense: bad or huge indexes, bare values that are not hex,
    /// repeated arguments or `argc`, `aN_len` that is not a number.
    pub malformed: usize,
    /// Something was dropped to stay within [`ArgvLimits`]: arguments past the last one
    /// kept, the rest of the last one, an `argc` above `max_args` (clamped), or separators
    /// of the arguments present.
    pub truncated: bool,
    /// Decoded bytes of every argument seen, kept or not (without separators).
    pub decoded_bytes: u64,
}

impl ArgvResult {
    /// The number of arguments: `argc`, or more when higher indexes are present (`argc=0`
    /// with `a0`), or up to the last argument kept when truncated.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Nothing missing, incomplete, malformed or truncated.
    pub fn is_complete(&self) -> bool {
        self.missing == 0 && self.incomplete == 0 && self.malformed == 0 && !self.truncated
    }

    fn bytes(&self, p: &Piece) -> &[u8] {
        self.buf
            .get(p.start as usize..p.end as usize)
            .unwrap_or(&[])
    }

    /// Argument `i` (empty when it is missing); `None` past [`len`](Self::len).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len {
            return None;
        }
        if self.dense {
            return self.spans.get(i).map(|p| self.bytes(p));
        }
        let Ok(i) = u32::try_from(i) else {
            return Some(&[]);
        };
        Some(match self.spans.binary_search_by_key(&i, |p| p.idx) {
            Ok(k) => self.spans.get(k).map_or(&[][..], |p| self.bytes(p)),
            Err(_) => &[],
        })
    }

    /// The arguments in order, missing ones empty.
    pub fn iter(&self) -> ArgIter<'_> {
        ArgIter {
            argv: self,
            i: 0,
            span: 0,
        }
    }

    /// The arguments as owned vectors (convenience; [`iter`](Self::iter) does not allocate).
    pub fn to_vec(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }

    /// The arguments present joined by single spaces, lossy UTF-8, at most `max_bytes`
    /// bytes. Missing arguments (see [`missing`](Self::missing)) are left out, not joined as
    /// empty ones: a hostile `argc` must not pad the command line with spaces, and an
    /// argument that never arrived is not known to be empty. (An empty argument that did
    /// arrive, `aN=""`, keeps its place.)
    ///
    /// No quoting is added: `sh -c 'a b'` reads `sh -c a b`. That is what operators see in
    /// `ps` and what the classic Azure agents and auparse reported, and it keeps the
    /// aggregation keys of the upstream service stable.
    pub fn command_line(&self) -> String {
        let mut out = String::with_capacity(
            (self.buf.len() + self.spans.len().saturating_sub(1)).min(self.max_bytes),
        );
        for (i, p) in self.spans.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            push_lossy(&mut out, self.bytes(p));
            if out.len() >= self.max_bytes {
                break;
            }
        }
        truncate_at_char(&mut out, self.max_bytes);
        out
    }
}

/// Iterator over the arguments of an [`ArgvResult`].
#[derive(Debug, Clone)]
pub struct ArgIter<'a> {
    argv: &'a ArgvResult,
    i: usize,
    span: usize,
}

impl<'a> Iterator for ArgIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.i >= self.argv.len {
            return None;
        }
        let i = self.i;
        self.i += 1;
        match self.argv.spans.get(self.span) {
            Some(p) if p.idx as usize == i => {
                self.span += 1;
                Some(self.argv.bytes(p))
            }
            _ => Some(&[]),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.argv.len - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for ArgIter<'_> {}

// ---------------------------------------------------------------------------------------
// PROCTITLE
// ---------------------------------------------------------------------------------------

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

    /// The arguments joined by single spaces, lossy UTF-8 (as [`ArgvResult::command_line`]).
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

// ---------------------------------------------------------------------------------------
// SOCKADDR
// ---------------------------------------------------------------------------------------

pub const AF_UNSPEC: u16 = 0;
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const AF_NETLINK: u16 = 16;

/// `sizeof(struct sockaddr_storage)`: the most the kernel logs.
pub const MAX_SOCKADDR_LEN: usize = 128;

/// Room for a unix name: everything after the family.
const UNIX_NAME_MAX: usize = MAX_SOCKADDR_LEN - 2;

/// A unix socket path or abstract name, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UnixName {
    buf: [u8; UNIX_NAME_MAX],
    len: u8,
}

impl UnixName {
    fn new(b: &[u8]) -> Self {
        let mut buf = [0; UNIX_NAME_MAX];
        let len = b.len().min(UNIX_NAME_MAX);
        buf[..len].copy_from_slice(&b[..len]);
        UnixName {
            buf,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len).min(UNIX_NAME_MAX)]
    }
}

impl fmt::Debug for UnixName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The address of an AF_UNIX socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixAddr {
    /// No name: the sockaddr holds just the family (an unbound peer, seen on accept).
    Unnamed,
    /// A filesystem path, up to its NUL.
    Path(UnixName),
    /// An abstract name (after the leading NUL), with trailing NUL padding removed.
    Abstract(UnixName),
}

impl fmt::Display for UnixAddr {
    /// The path; `@name` for an abstract socket (as `ss` shows it); empty when unnamed.
    /// Lossy UTF-8.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, name) = match self {
            UnixAddr::Unnamed => return Ok(()),
            UnixAddr::Path(n) => ("", n),
            UnixAddr::Abstract(n) => ("@", n),
        };
        let mut s = String::with_capacity(UNIX_NAME_MAX + 1);
        s.push_str(prefix);
        push_lossy(&mut s, name.as_bytes());
        f.write_str(&s)
    }
}

/// A decoded `saddr=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockAddr {
    Inet(SocketAddrV4),
    /// `v4_mapped` is the IPv4 address of a `::ffff:a.b.c.d` address (an IPv6 socket
    /// talking IPv4), so callers can report it as IPv4.
    Inet6 {
        addr: SocketAddrV6,
        v4_mapped: Option<Ipv4Addr>,
    },
    Unix(UnixAddr),
    /// `pid` and `groups` in host order.
    Netlink {
        pid: u32,
        groups: u32,
    },
    /// Any other family (AF_UNSPEC 0, AF_PACKET 17, AF_VSOCK 40, …).
    Other(u16),
}

impl SockAddr {
    pub fn family(&self) -> u16 {
        match self {
            SockAddr::Inet(_) => AF_INET,
            SockAddr::Inet6 { .. } => AF_INET6,
            SockAddr::Unix(_) => AF_UNIX,
            SockAddr::Netlink { .. } => AF_NETLINK,
            SockAddr::Other(f) => *f,
        }
    }

    /// The IP address and port; IPv4 for a v4-mapped IPv6 address.
    pub fn ip_port(&self) -> Option<(IpAddr, u16)> {
        match *self {
            SockAddr::Inet(a) => Some((IpAddr::V4(*a.ip()), a.port())),
            SockAddr::Inet6 { addr, v4_mapped } => Some((
                v4_mapped.map_or(IpAddr::V6(*addr.ip()), IpAddr::V4),
                addr.port(),
            )),
            _ => None,
        }
    }
}

/// Why a `saddr=` could not be decoded.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum SockAddrError {
    #[error("saddr is not hex (odd length or a non-hex character)")]
    BadHex,
    #[error("sockaddr of {len} bytes is longer than sockaddr_storage")]
    TooLong { len: usize },
    #[error("sockaddr of {len} bytes has no address family")]
    NoFamily { len: usize },
    #[error("sockaddr of {len} bytes is too short for address family {family}")]
    TooShort { family: u16, len: usize },
}

/// Decode a `saddr=` (hex) of a little-endian machine: all our targets. Use
/// [`sockaddr_endian`] when the record's arch says otherwise.
pub fn sockaddr(saddr_hex: &[u8]) -> Result<SockAddr, SockAddrError> {
    sockaddr_endian(saddr_hex, Endian::Little)
}

/// Decode a `saddr=` (hex) whose host-order fields are in `endian`
/// ([`Endian::of_arch_hex`] of the SYSCALL record's `arch=`). No allocation.
pub fn sockaddr_endian(saddr_hex: &[u8], endian: Endian) -> Result<SockAddr, SockAddrError> {
    if saddr_hex.len() % 2 != 0 {
        return Err(SockAddrError::BadHex);
    }
    let len = saddr_hex.len() / 2;
    if len > MAX_SOCKADDR_LEN {
        return Err(SockAddrError::TooLong { len });
    }
    let mut raw = [0u8; MAX_SOCKADDR_LEN];
    for (out, pair) in raw.iter_mut().zip(saddr_hex.chunks_exact(2)) {
        let &[h, l] = pair else {
            return Err(SockAddrError::BadHex);
        };
        match (hex_val(h), hex_val(l)) {
            (Some(h), Some(l)) => *out = h << 4 | l,
            _ => return Err(SockAddrError::BadHex),
        }
    }
    sockaddr_bytes(&raw[..len], endian)
}

fn array<const N: usize>(s: &[u8], at: usize) -> Option<[u8; N]> {
    s.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn host_u32(b: [u8; 4], endian: Endian) -> u32 {
    match endian {
        Endian::Little => u32::from_le_bytes(b),
        Endian::Big => u32::from_be_bytes(b),
    }
}

/// Decode the raw bytes of a sockaddr.
pub fn sockaddr_bytes(raw: &[u8], endian: Endian) -> Result<SockAddr, SockAddrError> {
    let len = raw.len();
    let &[f0, f1, ref rest @ ..] = raw else {
        return Err(SockAddrError::NoFamily { len });
    };
    let family = match endian {
        Endian::Little => u16::from_le_bytes([f0, f1]),
        Endian::Big => u16::from_be_bytes([f0, f1]),
    };
    let short = SockAddrError::TooShort { family, len };
    match family {
        AF_INET => {
            // sin_port, sin_addr (sin_zero is not needed).
            let [p0, p1, a, b, c, d] = array::<6>(rest, 0).ok_or(short)?;
            Ok(SockAddr::Inet(SocketAddrV4::new(
                Ipv4Addr::new(a, b, c, d),
                u16::from_be_bytes([p0, p1]),
            )))
        }
        AF_INET6 => {
            // sin6_port, sin6_flowinfo, sin6_addr, then sin6_scope_id, which the RFC 2133
            // layout (24 bytes, still accepted by the kernel) lacks.
            let port = array::<2>(rest, 0).ok_or(short)?;
            let flow = array::<4>(rest, 2).ok_or(short)?;
            let ip = Ipv6Addr::from(array::<16>(rest, 6).ok_or(short)?);
            let scope = array::<4>(rest, 22).map_or(0, |b| host_u32(b, endian));
            Ok(SockAddr::Inet6 {
                addr: SocketAddrV6::new(
                    ip,
                    u16::from_be_bytes(port),
                    u32::from_be_bytes(flow),
                    scope,
                ),
                v4_mapped: ip.to_ipv4_mapped(),
            })
        }
        AF_UNIX => Ok(SockAddr::Unix(match rest {
            [] => UnixAddr::Unnamed,
            [0, name @ ..] => {
                let end = name.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                UnixAddr::Abstract(UnixName::new(&name[..end]))
            }
            path => {
                let end = memchr::memchr(0, path).unwrap_or(path.len());
                UnixAddr::Path(UnixName::new(&path[..end]))
            }
        })),
        AF_NETLINK => {
            // nl_pad, nl_pid, nl_groups.
            let pid = array::<4>(rest, 2).ok_or(short)?;
            let groups = array::<4>(rest, 6).ok_or(short)?;
            Ok(SockAddr::Netlink {
                pid: host_u32(pid, endian),
                groups: host_u32(groups, endian),
            })
        }
        other => Ok(SockAddr::Other(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(line: &str) -> Record<'_> {
        Record::parse(line.as_bytes()).unwrap()
    }

    fn hexu(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02X}")).collect()
    }

    fn argv_with(lines: &[&str], limits: ArgvLimits) -> ArgvResult {
        let mut a = Argv::new(limits);
        for l in lines {
            a.add_record(&rec(l));
        }
        a.finish()
    }

    fn argv(lines: &[&str]) -> ArgvResult {
        argv_with(lines, ArgvLimits::default())
    }

    fn strs(r: &ArgvResult) -> Vec<String> {
        r.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    const H: &str = "type=EXECVE msg=audit(1700000000.123:42): ";

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

    // ---- EXECVE ----------------------------------------------------------------------

    #[test]
    fn execve_one_record() {
        let r = argv(&[&format!("{H}argc=3 a0=\"ls\" a1=\"-l\" a2=\"/tmp\"")]);
        assert_eq!(strs(&r), ["ls", "-l", "/tmp"]);
        assert_eq!(r.len(), 3);
        assert_eq!(r.argc, Some(3));
        assert_eq!((r.missing, r.incomplete, r.malformed), (0, 0, 0));
        assert!(!r.truncated);
        assert!(r.is_complete());
        assert_eq!(r.decoded_bytes, 8);
        assert_eq!(r.command_line(), "ls -l /tmp");
        assert_eq!(r.get(1), Some(&b"-l"[..]));
        assert_eq!(r.get(3), None);
        assert_eq!(r.iter().len(), 3);
    }

    #[test]
    fn execve_encodings() {
        let r = argv(&[&format!(
            "{H}argc=11 a0=\"/bin/echo\" a1=6172672077697468207370616365 a2=7461620978 \
             a3=6E6C0A78 a4=C3BC6EC3AF63C3B664C3A9 a5=226563686F22 a6=\"'single'\" a7=\"\" \
             a8=\"back\\slash\" a9=FFFE a10=\"a=b\""
        )]);
        assert_eq!(
            r.to_vec(),
            vec![
                b"/bin/echo".to_vec(),
                b"arg with space".to_vec(),
                b"tab\tx".to_vec(),
                b"nl\nx".to_vec(),
                "ünïcödé".as_bytes().to_vec(),
                b"\"echo\"".to_vec(),
                b"'single'".to_vec(),
                b"".to_vec(),
                b"back\\slash".to_vec(),
                vec![0xff, 0xfe],
                b"a=b".to_vec(),
            ]
        );
        assert!(r.is_complete());
        assert_eq!(
            r.command_line(),
            "/bin/echo arg with space tab\tx nl\nx ünïcödé \"echo\" 'single'  back\\slash \
             \u{FFFD}\u{FFFD} a=b"
        );
    }

    fn long_split_records() -> Vec<String> {
        // One 10000-byte argument: always hex, _len counts hex characters, chunks of whole
        // bytes in three records (line lengths about 7.5 K, 7.5 K and 5 K, as captured).
        let hex = "58".repeat(10_000);
        vec![
            format!("{H}argc=3 a0=\"perl\" a1_len=20000 a1[0]={}", &hex[..7440]),
            format!("{H} a1[1]={}", &hex[7440..14920]),
            format!("{H} a1[2]={} a2=\"-e\"", &hex[14920..]),
        ]
    }

    #[test]
    fn execve_long_split_argument_any_order() {
        let recs = long_split_records();
        assert!(recs[1].contains("):  a1[1]="));
        for order in [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ] {
            let lines: Vec<&str> = order.iter().map(|&i| recs[i].as_str()).collect();
            let r = argv(&lines);
            assert_eq!(r.len(), 3, "{order:?}");
            assert_eq!(r.get(0), Some(&b"perl"[..]));
            assert_eq!(r.get(1), Some(&[b'X'; 10_000][..]), "{order:?}");
            assert_eq!(r.get(2), Some(&b"-e"[..]));
            assert!(r.is_complete(), "{order:?}");
            assert_eq!(r.decoded_bytes, 10_006);
            assert_eq!(r.command_line().len(), 10_008);
        }
    }

    #[test]
    fn execve_long_split_argument_lost_records() {
        let recs = long_split_records();
        // The middle record is lost: a gap in the chunks.
        let r = argv(&[&recs[0], &recs[2]]);
        assert_eq!(r.get(1).map(<[u8]>::len), Some(3720 + 2540));
        assert_eq!((r.missing, r.incomplete, r.malformed), (0, 1, 0));
        // The last record is lost: less than a1_len says, and a2 is missing.
        let r = argv(&[&recs[0], &recs[1]]);
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(1).map(<[u8]>::len), Some(7460));
        assert_eq!(r.get(2), Some(&b""[..]));
        assert_eq!((r.missing, r.incomplete, r.malformed), (1, 1, 0));
        // The first record is lost: no argc, a0 missing, a1 without its [0].
        let r = argv(&[&recs[1], &recs[2]]);
        assert_eq!(r.argc, None);
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(0), Some(&b""[..]));
        assert_eq!((r.missing, r.incomplete), (1, 1));
    }

    /// argv[0] = /bin/echo, argv[i] = longarg{i-1:05}.
    fn arg_2000(i: usize) -> String {
        if i == 0 {
            "/bin/echo".to_string()
        } else {
            format!("longarg{:05}", i - 1)
        }
    }

    fn quoted_args(range: std::ops::Range<usize>) -> String {
        range
            .map(|i| format!(" a{i}=\"{}\"", arg_2000(i)))
            .collect()
    }

    #[test]
    fn execve_2000_args_boundary_split() {
        let expect: Vec<String> = (0..2001).map(arg_2000).collect();
        // a1463 split across records as two quoted chunks.
        let r1 = format!("{H}argc=2001{}", quoted_args(0..376));
        let r2 = format!(
            "{H}{} a1463_len=12 a1463[0]=\"longarg\"",
            quoted_args(376..1463)
        );
        let r3 = format!("{H} a1463[1]=\"01462\"{}", quoted_args(1464..2001));
        assert!(r2.contains("):  a376=\"longarg00375\""));
        for lines in [[&r1, &r2, &r3], [&r3, &r1, &r2], [&r2, &r3, &r1]] {
            let r = argv(&lines.map(String::as_str));
            assert_eq!(strs(&r), expect);
            assert!(r.is_complete());
            assert_eq!(r.get(1463), Some(&b"longarg01462"[..]));
            assert_eq!(r.command_line(), expect.join(" "));
        }
        // The whole argument in its one chunk [0], as captured.
        let r2 = format!(
            "{H}{} a1463_len=12 a1463[0]=\"longarg01462\"",
            quoted_args(376..1463)
        );
        let r3 = format!("{H}{}", quoted_args(1464..2001));
        let r = argv(&[&r1, &r2, &r3]);
        assert_eq!(strs(&r), expect);
        assert!(r.is_complete());
        // The kernel-like encoder splits the same argv into several records.
        let recs = kernel_encode(
            &expect
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect::<Vec<_>>(),
            9,
        );
        assert!(recs.len() >= 4, "{}", recs.len());
        assert!(recs.iter().all(|l| l.len() < 7600));
        let r = argv(&recs.iter().rev().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(strs(&r), expect);
        assert!(r.is_complete());
    }

    #[test]
    fn execve_argc_exceeds_present() {
        let r = argv(&[&format!("{H}argc=5 a0=\"x\" a1=\"y\"")]);
        assert_eq!(strs(&r), ["x", "y", "", "", ""]);
        assert_eq!((r.len(), r.missing), (5, 3));
        assert!(!r.is_complete());
        assert!(!r.truncated);
        // Only the arguments that arrived.
        assert_eq!(r.command_line(), "x y");
        // A gap in the middle.
        let r = argv(&[&format!("{H}argc=3 a0=\"x\" a2=\"z\"")]);
        assert_eq!(strs(&r), ["x", "", "z"]);
        assert_eq!(r.missing, 1);
        assert_eq!(r.get(1), Some(&b""[..]));
        assert_eq!(r.get(2), Some(&b"z"[..]));
        assert_eq!(r.get(3), None);
        assert_eq!(r.command_line(), "x z");
        // An empty argument that arrived keeps its place.
        let r = argv(&[&format!("{H}argc=3 a0=\"x\" a1=\"\" a2=\"z\"")]);
        assert_eq!((r.missing, r.command_line().as_str()), (0, "x  z"));
    }

    #[test]
    fn execve_argc_zero_with_a0() {
        let r = argv(&[&format!("{H}argc=0 a0=\"whoami\"")]);
        assert_eq!(r.argc, Some(0));
        assert_eq!(strs(&r), ["whoami"]);
        assert_eq!((r.missing, r.malformed), (0, 0));
        assert_eq!(r.command_line(), "whoami");
    }

    #[test]
    fn execve_continuation_only() {
        let r = argv(&[&format!("{H} a5=\"x\" a6=\"y\"")]);
        assert_eq!(r.argc, None);
        assert_eq!((r.len(), r.missing), (7, 5));
        assert_eq!(r.command_line(), "x y");
    }

    #[test]
    fn execve_nothing() {
        let r = Argv::default().finish();
        assert_eq!((r.len(), r.argc, r.missing), (0, None, 0));
        assert!(r.is_empty());
        assert_eq!(r.command_line(), "");
        // Other record types are ignored.
        let r = argv(&["type=PATH msg=audit(1.0:42): item=0 name=\"/bin/ls\" a0=\"no\""]);
        assert!(r.is_empty());
        assert_eq!(r.malformed, 0);
    }

    #[test]
    fn execve_bogus_indexes_do_not_allocate() {
        let r = argv(&[&format!(
            "{H}argc=2 a0=\"x\" a4294967295=\"big\" a99999999999999999999999=\"huge\" \
             a1[70000]=\"c\" a1048576=\"cap\" a1_len=99999999999999999999999 a1=\"y\""
        )]);
        assert_eq!(strs(&r), ["x", "y"]);
        assert_eq!(r.malformed, 5);
        assert_eq!(r.missing, 0);
        assert!(!r.truncated);

        // Just under the index cap: a million empty slots, none stored.
        let r = argv(&[&format!("{H}argc=2 a0=\"x\" a1=\"y\" a1048575=\"z\"")]);
        assert_eq!(r.len(), 1 << 20);
        assert_eq!(r.missing, (1 << 20) - 3);
        assert_eq!(r.get(1_048_575), Some(&b"z"[..]));
        assert_eq!(r.get(500_000), Some(&b""[..]));
        assert!(!r.truncated);
        assert_eq!(r.command_line(), "x y z");
        assert_eq!(r.iter().count(), 1 << 20);

        // A huge argc is clamped to max_args.
        let r = argv(&[&format!("{H}argc=99999999 a0=\"x\"")]);
        assert_eq!(r.argc, Some(99_999_999));
        assert_eq!(r.len(), 1 << 20);
        assert!(r.truncated);
        assert_eq!(r.command_line(), "x");
        let small = ArgvLimits {
            max_bytes: 64,
            max_args: 10,
        };
        let r = argv_with(&[&format!("{H}argc=4294967295 a0=\"x\" a10=\"no\"")], small);
        assert_eq!((r.len(), r.missing, r.malformed), (10, 9, 1));
        assert!(r.truncated);
        assert_eq!(r.command_line(), "x");
    }

    #[test]
    fn execve_duplicates_and_conflicts() {
        let line = format!("{H}argc=3 a0=\"a\" a1=\"b\" a2=\"c\"");
        let r = argv(&[&line, &line]);
        assert_eq!(strs(&r), ["a", "b", "c"]);
        assert_eq!(r.malformed, 3);
        // Conflicting argc: the first wins.
        let r = argv(&[&line, &format!("{H}argc=9")]);
        assert_eq!((r.len(), r.malformed), (3, 1));
        // A whole argument and chunks of it: the whole one wins.
        let r = argv(&[&format!(
            "{H}argc=2 a0=\"a\" a1[0]=\"x\" a1=\"b\" a1[1]=\"y\""
        )]);
        assert_eq!(strs(&r), ["a", "b"]);
        assert_eq!(r.malformed, 2);
        // A repeated chunk.
        let r = argv(&[&format!(
            "{H}argc=1 a0_len=4 a0[0]=\"ab\" a0[1]=\"cd\" a0[0]=\"zz\""
        )]);
        assert_eq!(strs(&r), ["abcd"]);
        assert_eq!((r.malformed, r.incomplete), (1, 0));
        // Repeated aN_len.
        let r = argv(&[&format!("{H}argc=1 a0_len=2 a0_len=2 a0[0]=\"ab\"")]);
        assert_eq!(strs(&r), ["ab"]);
        assert_eq!((r.malformed, r.incomplete), (1, 0));
    }

    #[test]
    fn execve_bad_values() {
        let r = argv(&[&format!(
            "{H}argc=x a0=ZZ a1='q' a2=ABC a3_len=zz a3=\"d\" a4=(null) afoo=1 a5x=\"e\""
        )]);
        assert_eq!(r.argc, None);
        assert_eq!(strs(&r), ["ZZ", "q", "ABC", "d", "(null)"]);
        // argc, a0, a1, a2, a3_len, a4, a5x.
        assert_eq!(r.malformed, 7);
    }

    #[test]
    fn execve_chunk_gaps_and_lengths() {
        let r = argv(&[&format!(
            "{H}argc=4 a0=\"x\" a1_len=9 a1[0]=\"abc\" a1[2]=\"ghi\" a2_len=10 a3_len=20 a3[0]=4142"
        )]);
        assert_eq!(strs(&r), ["x", "abcghi", "", "AB"]);
        // a1: gap; a2: only its length; a3: 2 of 10 bytes.
        assert_eq!((r.missing, r.incomplete, r.malformed), (0, 3, 0));
        let r = argv(&[&format!("{H}argc=1 a0_len=6 a0[0]=\"abc\" a0[1]=\"def\"")]);
        assert_eq!(strs(&r), ["abcdef"]);
        assert!(r.is_complete());
        let r = argv(&[&format!("{H}argc=1 a0_len=8 a0[0]=6162 a0[1]=6364")]);
        assert_eq!(strs(&r), ["abcd"]);
        assert!(r.is_complete());
        // Chunks that do not start at [0].
        let r = argv(&[&format!("{H}argc=1 a0[1]=\"def\"")]);
        assert_eq!(strs(&r), ["def"]);
        assert_eq!(r.incomplete, 1);
        // A length-only argument before the first stored one.
        let r = argv(&[&format!("{H}argc=2 a0_len=4 a1=\"y\"")]);
        assert_eq!(strs(&r), ["", "y"]);
        assert_eq!((r.missing, r.incomplete), (0, 1));
    }

    #[test]
    fn execve_truncated_by_budget() {
        let limits = ArgvLimits {
            max_bytes: 16,
            max_args: 1 << 20,
        };
        let r = argv_with(
            &[&format!(
                "{H}argc=3 a0=\"abcdefgh\" a1=\"ijklmnop\" a2=\"qrstuvwx\""
            )],
            limits,
        );
        assert_eq!(strs(&r), ["abcdefgh", "ijklmn"]);
        assert!(r.truncated);
        assert_eq!((r.len(), r.missing, r.incomplete), (2, 0, 0));
        assert_eq!(r.decoded_bytes, 24);
        assert_eq!(r.command_line(), "abcdefgh ijklmn");
        // Hex cut on a byte boundary.
        let limits = ArgvLimits {
            max_bytes: 4,
            max_args: 8,
        };
        let r = argv_with(&[&format!("{H}argc=1 a0=41424344454647")], limits);
        assert_eq!(strs(&r), ["ABC"]);
        assert!(r.truncated);
        assert_eq!(r.decoded_bytes, 7);
        // Many empty arguments cost budget too.
        let many: String = (0..100).map(|i| format!(" a{i}=\"\"")).collect();
        let r = argv_with(&[&format!("{H}argc=100{many}")], limits);
        assert_eq!(r.len(), 4);
        assert!(r.truncated);
        // Lossy expansion cannot push the command line past max_bytes.
        let limits = ArgvLimits {
            max_bytes: 5,
            max_args: 8,
        };
        let r = argv_with(&[&format!("{H}argc=1 a0=FFFF")], limits);
        assert!(r.is_complete());
        assert_eq!(r.command_line(), "\u{FFFD}"); // two would be 6 bytes
    }

    // ---- PROCTITLE -------------------------------------------------------------------

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

    // ---- SOCKADDR --------------------------------------------------------------------

    fn sa(h: &str) -> Result<SockAddr, SockAddrError> {
        sockaddr(h.as_bytes())
    }

    fn unix_of(h: &str) -> (UnixAddr, String) {
        match sa(h) {
            Ok(SockAddr::Unix(u)) => (u, u.to_string()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sockaddr_inet() {
        let r = rec(
            "type=SOCKADDR msg=audit(1.0:3): saddr=020046A07F0000010000000000000000\
             \x1dSADDR={ saddr_fam=inet laddr=127.0.0.1 lport=18080 }",
        );
        let a = sockaddr(r.get(b"saddr").unwrap().raw()).unwrap();
        assert_eq!(
            a,
            SockAddr::Inet(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 18080))
        );
        assert_eq!(a.family(), AF_INET);
        assert_eq!(
            a.ip_port(),
            Some((IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 18080))
        );
        // Without sin_zero still fine; shorter is not.
        assert_eq!(
            sa("02000035C0A80101"),
            Ok(SockAddr::Inet(SocketAddrV4::new(
                Ipv4Addr::new(192, 168, 1, 1),
                53
            )))
        );
        assert_eq!(
            sa("02000050"),
            Err(SockAddrError::TooShort { family: 2, len: 4 })
        );
        // Lower-case hex is accepted too.
        assert_eq!(
            sa("020001bbc0a80101"),
            Ok(SockAddr::Inet(SocketAddrV4::new(
                Ipv4Addr::new(192, 168, 1, 1),
                443
            )))
        );
    }

    #[test]
    fn sockaddr_inet6() {
        let a = sa("0A001F900001234520010DB800000000000000000000000103000000").unwrap();
        let SockAddr::Inet6 { addr, v4_mapped } = a else {
            panic!("{a:?}")
        };
        assert_eq!(addr.ip(), &"2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(addr.port(), 8080);
        assert_eq!(addr.flowinfo(), 0x12345);
        assert_eq!(addr.scope_id(), 3);
        assert_eq!(v4_mapped, None);
        assert_eq!(a.family(), AF_INET6);
        assert_eq!(
            a.ip_port(),
            Some((IpAddr::V6("2001:db8::1".parse().unwrap()), 8080))
        );
        // RFC 2133 layout: no scope id.
        let a = sa("0A0000160000000000000000000000000000000000000001").unwrap();
        let SockAddr::Inet6 { addr, .. } = a else {
            panic!("{a:?}")
        };
        assert_eq!(
            (addr.ip(), addr.port(), addr.scope_id()),
            (&Ipv6Addr::LOCALHOST, 22, 0)
        );
        assert_eq!(
            sa("0A00001600000000000000000000000000000000000000"),
            Err(SockAddrError::TooShort {
                family: 10,
                len: 23
            })
        );
    }

    #[test]
    fn sockaddr_inet6_v4_mapped() {
        let a = sa("0A0000500000000000000000000000000000FFFF0A01020300000000").unwrap();
        let SockAddr::Inet6 { addr, v4_mapped } = a else {
            panic!("{a:?}")
        };
        assert_eq!(v4_mapped, Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(addr.ip().to_string(), "::ffff:10.1.2.3");
        assert_eq!(
            a.ip_port(),
            Some((IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 80))
        );
        // The deprecated v4-compatible form ::a.b.c.d is not v4-mapped.
        let a = sa("0A00005000000000000000000000000000000000000000000A01020300000000");
        assert!(matches!(a, Err(SockAddrError::TooLong { .. }) | Ok(_)));
        let a = sa("0A0000500000000000000000000000000000000000000A010203")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            a,
            SockAddr::Inet6 {
                v4_mapped: None,
                ..
            }
        ));
    }

    #[test]
    fn sockaddr_unix_path() {
        // 46 bytes: family, path, NUL and some padding (the length user space passed).
        let path = b"/var/lib/collectd/unixsock";
        let mut raw = vec![1, 0];
        raw.extend_from_slice(path);
        raw.resize(46, 0);
        let (u, s) = unix_of(&hexu(&raw));
        assert_eq!(u, UnixAddr::Path(UnixName::new(path)));
        assert_eq!(s, "/var/lib/collectd/unixsock");
        // Padded to the full sockaddr_un (110 bytes).
        let mut raw = vec![1, 0];
        raw.extend_from_slice(b"/tmp/p/u.sock");
        raw.resize(110, 0);
        let (_, s) = unix_of(&hexu(&raw));
        assert_eq!(s, "/tmp/p/u.sock");
        // Without a NUL at all.
        let (_, s) = unix_of("01002F72756E2F78");
        assert_eq!(s, "/run/x");
        // Non-UTF-8 path bytes.
        let (u, s) = unix_of("01002F74FF00");
        match u {
            UnixAddr::Path(n) => assert_eq!(n.as_bytes(), b"/t\xff"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s, "/t\u{FFFD}");
        // The longest the kernel logs: 126 name bytes.
        let mut raw = vec![1, 0];
        raw.resize(128, b'a');
        let (u, _) = unix_of(&hexu(&raw));
        assert!(matches!(u, UnixAddr::Path(n) if n.as_bytes() == [b'a'; 126]));
    }

    #[test]
    fn sockaddr_unix_abstract_and_unnamed() {
        let mut raw = vec![1, 0, 0];
        raw.extend_from_slice(b"probe-abstract");
        let (u, s) = unix_of(&hexu(&raw));
        assert_eq!(u, UnixAddr::Abstract(UnixName::new(b"probe-abstract")));
        assert_eq!(s, "@probe-abstract");
        raw.resize(110, 0);
        let (_, s) = unix_of(&hexu(&raw));
        assert_eq!(s, "@probe-abstract");
        // An abstract name may contain NUL: it is delimited by the length.
        let (u, s) = unix_of("010000610062");
        assert!(matches!(u, UnixAddr::Abstract(n) if n.as_bytes() == b"a\0b"));
        assert_eq!(s, "@a\0b");
        // Just the family: unnamed (accept of an unbound peer).
        let (u, s) = unix_of("0100");
        assert_eq!(u, UnixAddr::Unnamed);
        assert_eq!(s, "");
        assert_eq!(sa("0100").map(|a| a.family()), Ok(AF_UNIX));
        assert_eq!(sa("0100").unwrap().ip_port(), None);
    }

    #[test]
    fn sockaddr_netlink_and_others() {
        assert_eq!(
            sa("10000000D204000001000000"),
            Ok(SockAddr::Netlink {
                pid: 1234,
                groups: 1
            })
        );
        assert_eq!(
            sa("10000000D2040000"),
            Err(SockAddrError::TooShort { family: 16, len: 8 })
        );
        assert_eq!(sa("1100030001000000"), Ok(SockAddr::Other(17)));
        assert_eq!(sa("0000"), Ok(SockAddr::Other(AF_UNSPEC)));
        assert_eq!(sa("0000").unwrap().family(), 0);
    }

    #[test]
    fn sockaddr_errors() {
        assert_eq!(sa(""), Err(SockAddrError::NoFamily { len: 0 }));
        assert_eq!(sa("02"), Err(SockAddrError::NoFamily { len: 1 }));
        assert_eq!(sa("0"), Err(SockAddrError::BadHex));
        assert_eq!(sa("020"), Err(SockAddrError::BadHex));
        assert_eq!(sa("0G00"), Err(SockAddrError::BadHex));
        assert_eq!(sa("(null)"), Err(SockAddrError::BadHex));
        let long = "01".repeat(129);
        assert_eq!(sa(&long), Err(SockAddrError::TooLong { len: 129 }));
        assert_eq!(
            SockAddrError::TooShort { family: 2, len: 4 }.to_string(),
            "sockaddr of 4 bytes is too short for address family 2"
        );
    }

    #[test]
    fn sockaddr_big_endian() {
        let h = b"000200507F0000010000000000000000";
        assert_eq!(
            sockaddr_endian(h, Endian::Big),
            Ok(SockAddr::Inet(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80)))
        );
        assert_eq!(
            sockaddr_endian(h, Endian::Little),
            Ok(SockAddr::Other(0x200))
        );
        assert_eq!(
            sockaddr_endian(b"00100000000004D200000001", Endian::Big),
            Ok(SockAddr::Netlink {
                pid: 1234,
                groups: 1
            })
        );
        let be = Endian::of_arch_hex(b"80000016");
        assert_eq!(
            sockaddr_endian(
                b"000A0050000000000000000000000000000000000000000100000007",
                be
            )
            .map(|a| match a {
                SockAddr::Inet6 { addr, .. } => addr.scope_id(),
                _ => 0,
            }),
            Ok(7)
        );
    }

    // ---- The kernel's encoding, for round trips ----------------------------------------

    /// Encode argv the way `audit_log_execve_info` does (our own rendition): quoted when
    /// printable without `"` and shorter than the 7500-byte fetch buffer, else hex; records
    /// of at most 7500 bytes of argument text; an argument that does not fit (with the
    /// kernel's 96-byte margin for the field names) goes out as `aN_len` and `aN[k]` chunks,
    /// hex chunks of whole bytes; a new record when fewer than 104 bytes are left.
    fn kernel_encode(args: &[Vec<u8>], serial: u64) -> Vec<String> {
        const ABUF: usize = 96;
        let head = format!("type=EXECVE msg=audit(1700000000.000:{serial}): ");
        let mut recs = Vec::new();
        let mut cur = format!("{head}argc={}", args.len());
        let mut rem = MAX_EXECVE_AUDIT_LEN;
        for (i, a) in args.iter().enumerate() {
            let quoted = a.len() < MAX_EXECVE_AUDIT_LEN
                && a.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'"');
            let text = if quoted {
                String::from_utf8(a.clone()).unwrap()
            } else {
                hexu(a)
            };
            let wrap = if quoted { 2 } else { 0 };
            let mut pos = 0;
            let mut k = 0;
            loop {
                if ABUF + 8 > rem {
                    recs.push(std::mem::replace(&mut cur, head.clone()));
                    rem = MAX_EXECVE_AUDIT_LEN;
                }
                let left = text.len() - pos;
                let tag = if k > 0 || left + wrap + ABUF > rem {
                    let mut t = String::new();
                    if k == 0 {
                        t += &format!(" a{i}_len={}", text.len());
                    }
                    t += &format!(" a{i}[{k}]=");
                    k += 1;
                    t
                } else {
                    format!(" a{i}=")
                };
                cur += &tag;
                rem -= tag.len();
                let mut take = left;
                if left + wrap > rem {
                    take = rem - wrap;
                    if !quoted {
                        take &= !1;
                    }
                }
                let piece = &text[pos..pos + take];
                if quoted {
                    cur += &format!("\"{piece}\"");
                } else {
                    cur += piece;
                }
                rem -= take + wrap;
                pos += take;
                if pos >= text.len() {
                    break;
                }
            }
        }
        recs.push(cur);
        recs
    }

    fn shuffle<T>(v: &mut [T], mut seed: u64) {
        for i in (1..v.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v.swap(i, (seed % (i as u64 + 1)) as usize);
        }
    }

    fn round_trip(args: &[Vec<u8>], seed: u64) -> Result<(), TestCaseError> {
        let recs = kernel_encode(args, 77);
        let mut order: Vec<usize> = (0..recs.len()).collect();
        shuffle(&mut order, seed | 1);
        let mut argv = Argv::new(ArgvLimits {
            max_bytes: 1 << 24,
            max_args: 1 << 20,
        });
        for &i in &order {
            argv.add_record(&Record::parse(recs[i].as_bytes()).unwrap());
        }
        let r = argv.finish();
        prop_assert_eq!(r.to_vec(), args.to_vec());
        prop_assert!(r.is_complete(), "{:?}", r);
        prop_assert_eq!(r.argc, Some(args.len() as u64));
        let joined: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        prop_assert_eq!(r.command_line(), joined.join(" "));
        let total: usize = args.iter().map(Vec::len).sum();
        prop_assert_eq!(r.decoded_bytes, total as u64);
        Ok(())
    }

    fn arg() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => prop::collection::vec(0x21u8..=0x7e, 0..24),
            3 => prop::collection::vec(1u8..=255, 0..24),
            1 => (1usize..20_000, prop::sample::select(vec![b'X', b' ', b'"', 0xc3]))
                .prop_map(|(n, b)| vec![b; n]),
            1 => prop::collection::vec(1u8..=255, 7_000..9_000),
            1 => prop::collection::vec(0x21u8..=0x7e, 7_400..7_600),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn kernel_encoded_argv_round_trips(
            args in prop::collection::vec(arg(), 0..24),
            seed in any::<u64>(),
        ) {
            round_trip(&args, seed)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn many_small_args_round_trip(
            args in prop::collection::vec(prop::collection::vec(0x21u8..=0x7e, 0..16), 500..2500),
            seed in any::<u64>(),
        ) {
            round_trip(&args, seed)?;
        }
    }
}
