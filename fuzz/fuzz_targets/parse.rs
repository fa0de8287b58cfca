//! `Record::parse` on arbitrary bytes, then everything a consumer can ask of the record:
//! every field and enriched field, `decoded()` and the numeric readings of every value,
//! `get`, and the text form of the encoded fields. Checks that every slice handed out lies
//! inside the input (the parser borrows, never copies), that a hex decoding is half the
//! length of its text, and that a record's time gives RFC 3339 timestamps (year ≤ 9999).

#![no_main]

use std::borrow::Cow;

use azureiotsecurity::audit::decode;
use azureiotsecurity::audit::parse::Record;
use libfuzzer_sys::fuzz_target;

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

fuzz_target!(|data: &[u8]| {
    let Ok(rec) = Record::parse(data) else {
        return;
    };
    assert!(within(data, rec.type_name));
    assert!(within(data, rec.body));
    assert!(rec.node.is_none_or(|n| within(data, n)));
    assert!(rec.enriched.is_none_or(|e| within(data, e)));
    // A record time no date-time can carry is refused: what parses has a four-digit year in
    // the event timestamps.
    assert!(rec.id.sec <= azureiotsecurity::audit::parse::MAX_RECORD_SEC);
    let (local, utc) = azureiotsecurity::events::timestamps(rec.id.millis());
    assert_eq!(utc.as_bytes().get(4), Some(&b'-'), "{utc}");
    assert_eq!(local.as_bytes().get(4), Some(&b'-'), "{local}");
    let _ = rec.id.to_string();
    for (part, fields) in [
        (rec.body, rec.fields()),
        (rec.enriched.unwrap_or_default(), rec.enriched_fields()),
    ] {
        let mut n = 0usize;
        for f in fields {
            n += 1;
            assert!(n <= part.len(), "more fields than bytes");
            assert!(within(part, f.key));
            assert!(within(part, f.value.raw()));
            let _ = f.value.as_u64();
            let _ = f.value.as_i64();
            match f.value.decoded() {
                Some(Cow::Owned(d)) => assert_eq!(d.len() * 2, f.value.raw().len()),
                Some(Cow::Borrowed(d)) => assert_eq!(d, f.value.raw()),
                None => assert!(f.value.is_null()),
            }
            let _ = decode::field_string(f.value);
        }
    }
    for key in [
        &b"exe"[..],
        b"comm",
        b"cwd",
        b"name",
        b"proctitle",
        b"msg",
        b"res",
    ] {
        if let Some(v) = rec.get(key) {
            let _ = v.decoded();
        }
    }
    let _ = rec.get_enriched(b"SADDR");
});
