//! Property tests of the record parser.
//!
//! - Any bytes: `Record::parse`, the field iterators and `Value::decoded` never panic, and
//!   every slice they hand out lies inside the line (the parser borrows, never copies).
//! - A generated valid record (random type name, event id, `node=` or not, fields with
//!   quoted, bare, hex, single-quoted, `(null)`/`?` values, an optional nested `msg='…'`,
//!   an optional EXECVE-style double space, optional enrichment after 0x1d with braced
//!   values) parses back to exactly the header and fields it was made from.

use std::borrow::Cow;

use azureiotsecurity::audit::parse::{ENRICH_SEP, EventId, MAX_RECORD_SEC, Record, Value};
use proptest::prelude::*;

/// Whether `inner` is a subslice of `outer` (by address: the parser must borrow).
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

/// Everything a consumer can ask of a parsed line.
fn exercise(line: &[u8]) {
    let Ok(rec) = Record::parse(line) else {
        return;
    };
    assert!(within(line, rec.type_name));
    assert!(within(line, rec.body));
    if let Some(n) = rec.node {
        assert!(within(line, n));
    }
    if let Some(e) = rec.enriched {
        assert!(within(line, e));
    }
    let _ = rec.id.millis();
    let _ = rec.id.to_string();
    for (part, fields) in [
        (rec.body, rec.fields()),
        (rec.enriched.unwrap_or_default(), rec.enriched_fields()),
    ] {
        let mut n = 0usize;
        for f in fields {
            n += 1;
            // A field takes at least its `=`: there cannot be more fields than bytes.
            assert!(n <= part.len(), "more fields than bytes");
            assert!(within(part, f.key));
            assert!(within(part, f.value.raw()));
            let _ = f.value.is_null();
            let _ = f.value.as_u64();
            let _ = f.value.as_i64();
            match f.value.decoded() {
                Some(Cow::Owned(d)) => assert_eq!(d.len() * 2, f.value.raw().len()),
                Some(Cow::Borrowed(d)) => assert_eq!(d, f.value.raw()),
                None => assert!(f.value.is_null()),
            }
        }
    }
    let _ = rec.get(b"exe");
    let _ = rec.get_enriched(b"SADDR");
}

/// Bytes that steer the parser into its corners, mixed with arbitrary ones.
fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"type=".to_vec()),
        Just(b"node=".to_vec()),
        Just(b"SYSCALL ".to_vec()),
        Just(b"UNKNOWN[".to_vec()),
        Just(b" msg=audit(".to_vec()),
        Just(b"msg=audit(1.2:3):".to_vec()),
        Just(b"):".to_vec()),
        Just(b"msg='".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"{ ".to_vec()),
        Just(b" }".to_vec()),
        Just(b"=".to_vec()),
        Just(b" ".to_vec()),
        Just(b"  ".to_vec()),
        Just(vec![ENRICH_SEP]),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"(null)".to_vec()),
        Just(b"?".to_vec()),
        Just(b"a0=".to_vec()),
        Just(b"2F62696E".to_vec()),
        "[0-9.:]{1,24}".prop_map(String::into_bytes),
        "[a-z_]{1,8}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop::collection::vec(token, 0..48).prop_map(|v| v.concat())
}

/// A field value as generated, and what the parser must give back.
#[derive(Debug, Clone)]
struct GenValue {
    text: Vec<u8>,
    expect: ExpectValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ExpectValue {
    Quoted(Vec<u8>),
    SingleQuoted(Vec<u8>),
    Braced(Vec<u8>),
    /// Bare text, and its decoding when it is hex of raw bytes.
    Bare(Vec<u8>, Option<Vec<u8>>),
}

impl ExpectValue {
    fn matches(&self, v: Value<'_>) -> bool {
        match (self, v) {
            (ExpectValue::Quoted(e), Value::Quoted(g)) => e == g,
            (ExpectValue::SingleQuoted(e), Value::SingleQuoted(g)) => e == g,
            (ExpectValue::Braced(e), Value::Braced(g)) => e == g,
            (ExpectValue::Bare(e, dec), Value::Bare(g)) => {
                e == g
                    && dec
                        .as_ref()
                        .is_none_or(|d| v.decoded().as_deref() == Some(&d[..]))
            }
            _ => false,
        }
    }
}

/// Printable ASCII other than `"` (what the kernel quotes), spaces allowed too.
fn quoted_text() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![0x20u8..=0x21, 0x23u8..=0x7e], 0..24)
}

fn hex_upper(b: &[u8]) -> Vec<u8> {
    const D: &[u8; 16] = b"0123456789ABCDEF";
    b.iter()
        .flat_map(|&x| [D[usize::from(x >> 4)], D[usize::from(x & 15)]])
        .collect()
}

/// A value of a top-level or nested field. `nested`: inside `msg='…'`, where `'` cannot be.
fn value(nested: bool) -> impl Strategy<Value = GenValue> {
    let quoted = quoted_text().prop_map(move |t| {
        let t: Vec<u8> = if nested {
            t.into_iter().filter(|&b| b != b'\'').collect()
        } else {
            t
        };
        GenValue {
            text: [&b"\""[..], &t, b"\""].concat(),
            expect: ExpectValue::Quoted(t),
        }
    });
    let bare = "[A-Za-z0-9_:./,+-]{0,16}".prop_map(|t| {
        let t = t.into_bytes();
        GenValue {
            text: t.clone(),
            expect: ExpectValue::Bare(t, None),
        }
    });
    let hex = prop::collection::vec(any::<u8>(), 1..24).prop_map(|raw| {
        let h = hex_upper(&raw);
        GenValue {
            text: h.clone(),
            expect: ExpectValue::Bare(h, Some(raw)),
        }
    });
    let null = prop_oneof![Just(&b"(null)"[..]), Just(&b"?"[..])].prop_map(|t| GenValue {
        text: t.to_vec(),
        expect: ExpectValue::Bare(t.to_vec(), None),
    });
    let single = "[A-Za-z0-9 =_.-]{0,16}".prop_map(|t| {
        let t = t.into_bytes();
        GenValue {
            text: [&b"'"[..], &t, b"'"].concat(),
            expect: ExpectValue::SingleQuoted(t),
        }
    });
    if nested {
        prop_oneof![quoted, bare, hex, null].boxed()
    } else {
        prop_oneof![quoted, bare, hex, null, single].boxed()
    }
}

/// A key: lower case, never `msg` (which is walked into).
fn key() -> impl Strategy<Value = Vec<u8>> {
    "[a-z][a-z0-9_-]{0,10}"
        .prop_filter("msg is the nested message", |k| k != "msg")
        .prop_map(String::into_bytes)
}

fn fields(nested: bool, max: usize) -> impl Strategy<Value = Vec<(Vec<u8>, GenValue)>> {
    prop::collection::vec((key(), value(nested)), 0..max)
}

/// Enriched fields: upper-case keys, quoted, bare or braced values.
fn enriched_fields() -> impl Strategy<Value = Vec<(Vec<u8>, GenValue)>> {
    let braced = "[a-z_]{1,8}=[a-z0-9.]{1,8}( [a-z_]{1,8}=[a-z0-9.]{1,8}){0,3}".prop_map(|t| {
        let t = t.into_bytes();
        GenValue {
            text: [&b"{ "[..], &t, b" }"].concat(),
            expect: ExpectValue::Braced(t),
        }
    });
    let v = prop_oneof![value(true), braced];
    prop::collection::vec(("[A-Z][A-Z_]{0,8}".prop_map(String::into_bytes), v), 1..6)
}

/// A record type name and the number the parser must give it.
fn type_name() -> impl Strategy<Value = (Vec<u8>, u16)> {
    prop_oneof![
        Just((b"SYSCALL".to_vec(), 1300)),
        Just((b"EXECVE".to_vec(), 1309)),
        Just((b"PATH".to_vec(), 1302)),
        Just((b"CWD".to_vec(), 1307)),
        Just((b"EOE".to_vec(), 1320)),
        Just((b"PROCTITLE".to_vec(), 1327)),
        Just((b"USER_LOGIN".to_vec(), 1112)),
        Just((b"LOGIN".to_vec(), 1006)),
        any::<u16>().prop_map(|n| (format!("UNKNOWN[{n}]").into_bytes(), n)),
        "ZZ_[A-Z_]{1,12}".prop_map(|n| (n.into_bytes(), 0)),
    ]
}

#[derive(Debug, Clone)]
struct GenRecord {
    node: Option<Vec<u8>>,
    type_name: Vec<u8>,
    rtype: u16,
    id: EventId,
    /// `):  ` (EXECVE continuation) rather than `): `.
    double_space: bool,
    fields: Vec<(Vec<u8>, GenValue)>,
    /// Fields of a nested `msg='…'` written after `fields`.
    nested: Option<Vec<(Vec<u8>, GenValue)>>,
    enriched: Option<Vec<(Vec<u8>, GenValue)>>,
    eol: &'static [u8],
}

impl GenRecord {
    fn line(&self) -> Vec<u8> {
        let mut l = Vec::new();
        if let Some(n) = &self.node {
            l.extend_from_slice(b"node=");
            l.extend_from_slice(n);
            l.push(b' ');
        }
        l.extend_from_slice(b"type=");
        l.extend_from_slice(&self.type_name);
        l.extend_from_slice(
            format!(
                " msg=audit({}.{:03}:{}):",
                self.id.sec, self.id.msec, self.id.serial
            )
            .as_bytes(),
        );
        if self.double_space {
            l.push(b' ');
        }
        for (k, v) in &self.fields {
            l.push(b' ');
            l.extend_from_slice(k);
            l.push(b'=');
            l.extend_from_slice(&v.text);
        }
        if let Some(nested) = &self.nested {
            l.extend_from_slice(b" msg='");
            for (i, (k, v)) in nested.iter().enumerate() {
                if i > 0 {
                    l.push(b' ');
                }
                l.extend_from_slice(k);
                l.push(b'=');
                l.extend_from_slice(&v.text);
            }
            l.push(b'\'');
        }
        if let Some(en) = &self.enriched {
            l.push(ENRICH_SEP);
            for (i, (k, v)) in en.iter().enumerate() {
                if i > 0 {
                    l.push(b' ');
                }
                l.extend_from_slice(k);
                l.push(b'=');
                l.extend_from_slice(&v.text);
            }
        }
        l.extend_from_slice(self.eol);
        l
    }

    fn expected_fields(&self) -> Vec<(Vec<u8>, ExpectValue)> {
        self.fields
            .iter()
            .chain(self.nested.iter().flatten())
            .map(|(k, v)| (k.clone(), v.expect.clone()))
            .collect()
    }
}

fn record() -> impl Strategy<Value = GenRecord> {
    (
        prop::option::of("[a-z0-9][a-z0-9.-]{0,15}".prop_map(String::into_bytes)),
        type_name(),
        // Times past MAX_RECORD_SEC are refused (tested in parse.rs).
        (0..=MAX_RECORD_SEC, 0u16..1000, any::<u64>()),
        any::<bool>(),
        fields(false, 12),
        prop::option::of(fields(true, 8)),
        prop::option::of(enriched_fields()),
        prop_oneof![Just(&b""[..]), Just(&b"\n"[..]), Just(&b" \n"[..])],
    )
        .prop_map(
            |(
                node,
                (type_name, rtype),
                (sec, msec, serial),
                double_space,
                fields,
                nested,
                enriched,
                eol,
            )| {
                GenRecord {
                    node,
                    type_name,
                    rtype,
                    id: EventId { sec, msec, serial },
                    double_space,
                    fields,
                    nested,
                    // A trailing space after enrichment would belong to its last value.
                    eol: if enriched.is_some() && eol == b" \n" {
                        b"\n"
                    } else {
                        eol
                    },
                    enriched,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn tricky_bytes_never_panic(bytes in tricky_bytes()) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_body_after_a_valid_header_never_panics(
        body in prop::collection::vec(any::<u8>(), 0..600),
        tricky in tricky_bytes(),
    ) {
        for b in [&body, &tricky] {
            let mut line = b"type=USER_LOGIN msg=audit(1700000000.123:42): ".to_vec();
            line.extend_from_slice(b);
            exercise(&line);
            prop_assert!(Record::parse(&line).is_ok());
        }
    }

    #[test]
    fn generated_records_parse_back_exactly(g in record()) {
        let line = g.line();
        let rec = Record::parse(&line).map_err(|e| {
            TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(&line)))
        })?;
        prop_assert_eq!(rec.node, g.node.as_deref());
        prop_assert_eq!(rec.type_name, &g.type_name[..]);
        prop_assert_eq!(rec.rtype, g.rtype);
        prop_assert_eq!(rec.id, g.id);

        let got: Vec<_> = rec.fields().collect();
        let want = g.expected_fields();
        prop_assert_eq!(got.len(), want.len(), "fields of {:?}: {:?}", String::from_utf8_lossy(&line), got);
        for (f, (k, v)) in got.iter().zip(&want) {
            prop_assert_eq!(f.key, &k[..]);
            prop_assert!(v.matches(f.value), "{:?} = {:?}, want {:?}", String::from_utf8_lossy(k), f.value, v);
        }

        match &g.enriched {
            None => {
                prop_assert_eq!(rec.enriched, None);
                prop_assert_eq!(rec.enriched_fields().count(), 0);
            }
            Some(en) => {
                prop_assert!(rec.enriched.is_some());
                let got: Vec<_> = rec.enriched_fields().collect();
                prop_assert_eq!(got.len(), en.len(), "enriched of {:?}: {:?}", String::from_utf8_lossy(&line), got);
                for (f, (k, v)) in got.iter().zip(en) {
                    prop_assert_eq!(f.key, &k[..]);
                    prop_assert!(v.expect.matches(f.value), "{:?} = {:?}, want {:?}", String::from_utf8_lossy(k), f.value, v.expect);
                }
            }
        }
        // `get` finds the first field of a key.
        if let Some((k, v)) = want.first() {
            prop_assert!(rec.get(k).is_some_and(|got| v.matches(got)));
        }
    }
}

#[test]
fn within_is_by_address() {
    let a = b"type=EOE msg=audit(1.000:2):".to_vec();
    let b = a.clone();
    assert!(within(&a, &a[5..8]));
    assert!(!within(&a, &b[5..8]));
}
