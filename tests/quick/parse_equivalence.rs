//! Our parser and `linux-audit-parser` (laurel's parser, LGPL, a dev-dependency only) read
//! every real capture in `tests/data` the same way: for every record the same type number,
//! the same event id (seconds, milliseconds, serial), the same field keys (ours: the body,
//! walking into a nested `msg='…'`, and the enrichment after 0x1d; theirs: the body with its
//! `msg` map flattened and the enriched fields) and the same decoded values for the fields
//! the kernel encodes: `exe`, `comm`, `cwd`, `name`, `proctitle` and EXECVE's `aN`/`aN[k]`.
//! SYSCALL's `a0`…`a3` (hex numbers, not encoded strings) are compared as numbers.
//!
//! This is also the check that the `parse` rows of `benches/audit.rs` compare equal work.

use std::io::Read;

use azureiotsecurity::audit::parse::{Field, Record, Value};
use azureiotsecurity::audit::syscalls::parse_hex_u64;
use azureiotsecurity::audit::types;
use linux_audit_parser as lap;

fn data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Every capture: the load capture (decompressed) and the scenario captures.
fn captures() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let gz = std::fs::read(data_dir().join("load.log.gz")).expect("read load.log.gz");
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut text)
        .expect("gunzip load.log.gz");
    out.push(("load.log.gz".to_string(), text));
    let mut names: Vec<_> = std::fs::read_dir(data_dir())
        .expect("tests/data")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 8,
        "expected the scenario captures, got {names:?}"
    );
    for n in names {
        let text = std::fs::read(data_dir().join(&n)).expect("read capture");
        out.push((n, text));
    }
    out
}

/// The lines of a capture, each with its `\n` (linux-audit-parser wants it).
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.iter().all(|b| b.is_ascii_whitespace()))
}

fn is_execve_arg(key: &str) -> bool {
    let Some(rest) = key.strip_prefix('a') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && (rest.len() == digits || (rest[digits..].starts_with('[') && rest.ends_with(']')))
}

/// The keys whose decoded values are compared, for a record of type `rtype`.
fn compared(rtype: u16, key: &str) -> bool {
    matches!(key, "exe" | "comm" | "cwd" | "name" | "proctitle")
        || (rtype == types::EXECVE && is_execve_arg(key))
}

/// What we compare a field by.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    /// `(null)`, `?` or empty.
    None,
    Bytes(Vec<u8>),
    Number(u64),
}

fn ours_fields<'a>(rec: &Record<'a>) -> Vec<Field<'a>> {
    rec.fields().chain(rec.enriched_fields()).collect()
}

fn ours_decoded(rtype: u16, key: &str, v: Value<'_>) -> Decoded {
    if rtype == types::SYSCALL && is_execve_arg(key) {
        return parse_hex_u64(v.raw()).map_or(Decoded::None, Decoded::Number);
    }
    match v.decoded() {
        Some(b) => Decoded::Bytes(b.into_owned()),
        None => Decoded::None,
    }
}

fn theirs_decoded(v: &lap::Value<'_>) -> Decoded {
    match v {
        lap::Value::Empty => Decoded::None,
        lap::Value::Str(b, _) => Decoded::Bytes(b.to_vec()),
        lap::Value::Owned(b) => Decoded::Bytes(b.clone()),
        lap::Value::Number(lap::Number::Hex(n)) | lap::Value::Number(lap::Number::Oct(n)) => {
            Decoded::Number(*n)
        }
        lap::Value::Number(lap::Number::Dec(n)) => Decoded::Number(*n as u64),
        other => Decoded::Bytes(format!("{other:?}").into_bytes()),
    }
}

/// Their fields with a split `msg='…'` map flattened, as our iterator walks into it.
fn theirs_fields<'m>(msg: &'m lap::Message<'_>) -> Vec<(String, &'m lap::Value<'m>)> {
    let mut out = Vec::new();
    for (k, v) in &msg.body {
        match v {
            lap::Value::Map(inner) if k == b"msg".as_slice() => {
                for (k2, v2) in inner {
                    out.push((k2.to_string(), v2));
                }
            }
            _ => out.push((k.to_string(), v)),
        }
    }
    out
}

/// Compare one line; `Err` says how they differ.
fn compare(line: &[u8]) -> Result<(), String> {
    let ours = Record::parse(line).map_err(|e| format!("ours failed: {e}"))?;
    let theirs = lap::parse(line, false).map_err(|e| format!("linux-audit-parser failed: {e}"))?;

    if u32::from(ours.rtype) != theirs.ty.0 {
        return Err(format!("type {} vs {}", ours.rtype, theirs.ty.0));
    }
    if ours.id.millis() != theirs.id.timestamp || ours.id.serial != u64::from(theirs.id.sequence) {
        return Err(format!("id {} vs {}", ours.id, theirs.id));
    }
    if ours.node != theirs.node.as_deref() {
        return Err(format!("node {:?} vs {:?}", ours.node, theirs.node));
    }

    let of = ours_fields(&ours);
    let tf = theirs_fields(&theirs);
    let mut ok: Vec<String> = of
        .iter()
        .map(|f| String::from_utf8_lossy(f.key).into_owned())
        .collect();
    let mut tk: Vec<String> = tf.iter().map(|(k, _)| k.clone()).collect();
    ok.sort();
    tk.sort();
    if ok != tk {
        return Err(format!("keys {ok:?} vs {tk:?}"));
    }

    for f in &of {
        let key = String::from_utf8_lossy(f.key);
        if !compared(ours.rtype, &key) {
            continue;
        }
        let mine = ours_decoded(ours.rtype, &key, f.value);
        let theirs_v = tf
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| theirs_decoded(v));
        if theirs_v.as_ref() != Some(&mine) {
            return Err(format!("{key}: {mine:?} vs {theirs_v:?}"));
        }
    }
    // SYSCALL's a0..a3 as numbers.
    if ours.rtype == types::SYSCALL {
        for f in &of {
            let key = String::from_utf8_lossy(f.key);
            if is_execve_arg(&key) {
                let mine = ours_decoded(ours.rtype, &key, f.value);
                let t = tf
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| theirs_decoded(v));
                if t.as_ref() != Some(&mine) {
                    return Err(format!("{key}: {mine:?} vs {t:?}"));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn same_records_as_linux_audit_parser_on_every_capture() {
    let mut total = 0usize;
    let mut failures = Vec::new();
    let mut encoded_compared = 0usize;
    for (name, text) in captures() {
        let mut n = 0usize;
        for (i, line) in lines(&text).enumerate() {
            n += 1;
            if let Ok(rec) = Record::parse(line) {
                encoded_compared += rec
                    .fields()
                    .filter(|f| compared(rec.rtype, &String::from_utf8_lossy(f.key)))
                    .count();
            }
            if let Err(why) = compare(line) {
                failures.push(format!(
                    "{name}:{}: {why}\n    {}",
                    i + 1,
                    String::from_utf8_lossy(line).trim_end()
                ));
            }
        }
        assert!(n > 0, "{name} has no records");
        eprintln!("{name}: {n} records compared");
        total += n;
    }
    assert_eq!(
        failures.len(),
        0,
        "{} of {total} records differ; the first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{total} records, {encoded_compared} encoded values compared");
    // The load capture alone has 200,842 records.
    assert!(total > 200_842, "only {total} records");
    assert!(
        encoded_compared > 200_000,
        "{encoded_compared} encoded values"
    );
}

#[test]
fn execve_arg_keys() {
    assert!(is_execve_arg("a0"));
    assert!(is_execve_arg("a12"));
    assert!(is_execve_arg("a1[3]"));
    assert!(!is_execve_arg("a1_len"));
    assert!(!is_execve_arg("arch"));
    assert!(!is_execve_arg("argc"));
    assert!(!is_execve_arg("auid"));
}

#[test]
fn differences_are_reported() {
    // A type name linux-audit-parser does not know: it fails, and `compare` says so.
    assert!(compare(b"type=ZZ_NEW msg=audit(1.000:1): a=1\n").is_err());
    // The same record read the same way by both.
    assert_eq!(
        compare(b"type=CWD msg=audit(1700000000.123:42): cwd=2F746D702F612062\n"),
        Ok(())
    );
    assert_eq!(
        compare(b"type=USER_LOGIN msg=audit(1.002:3): pid=1 uid=0 msg='op=login acct=\"root\" exe=\"/usr/sbin/sshd\" res=failed'\x1dUID=\"root\"\n"),
        Ok(())
    );
}
