//! EXECVE: argv ([`Argv`]).
//!
//! `audit_log_execve_info` writes the arguments of an execve into one or more EXECVE records
//! of the same event. [`Argv`] keeps every argument across records, in index order, whatever
//! order the records arrive in, and says what was missing ([`ArgvResult::missing`]); hostile
//! input (`a4294967295=`, `argc=99999999`, the same record twice, a huge argv) costs memory
//! bounded by [`ArgvLimits`], never by the numbers it claims.

use crate::audit::parse::{Record, Value, parse_u64};
use crate::audit::types;

use super::value::{hex_into, is_hex, push_lossy, truncate_at_char};

/// The kernel's `MAX_EXECVE_AUDIT_LEN`: argument text per EXECVE record. Further arguments go
/// into continuation records that have no `argc` and begin with two spaces (`):  a376=…`).
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
            // `argc=N` is in the first record only. It can exceed the arguments present (older
            // kernels skipped empty arguments; records can be lost), and `argc=0` exists with
            // an `a0` (an empty argv, which the kernel fills in).
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
            // An argument that does not fit in what is left of a record is written
            // `aN_len=L aN[0]=… aN[1]=…`, its chunks possibly in later records.
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
        // `aN="text"` or `aN=HEX` (hex of the raw bytes; `aN=""` is empty). A chunk is quoted
        // or hex like a whole argument, and a hex chunk always holds whole bytes.
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
            // `aN_len` counts the characters as written (bytes when quoted, hex characters when
            // hex); an argument longer than the kernel's 7500-byte fetch buffer is forced to
            // hex, so there it counts twice the bytes.
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
        // Absent arguments read as empty and are counted; the command line leaves them out
        // (`argc=1000000 a0="x"` is `x`, not `x` and a million spaces).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::decode::{hexu, rec};
    use proptest::prelude::*;

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
