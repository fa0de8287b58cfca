//! JSON, read as Python's `json.loads` reads it (the reference validator's reader): duplicate
//! keys keep the last value, lone surrogate escapes are accepted, integers of more than 4300
//! digits are refused, and "integer" is python-jsonschema's (an int or an integral float).
//! `NaN`/`Infinity`, which Python also reads, are refused as not JSON here: no place in the
//! schema accepts them either way.

use std::collections::HashMap;

/// A JSON string as Python holds it. Lone surrogate escapes (`"\uD800"`) have no Rust
/// `char`: `text` holds U+FFFD in their place and `lone` says which (character index, code
/// unit), so two keys differing only there stay different, as they do in Python.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(super) struct JStr {
    pub(super) text: String,
    pub(super) lone: Vec<(usize, u16)>,
}

impl JStr {
    pub(super) fn is(&self, s: &str) -> bool {
        self.lone.is_empty() && self.text == s
    }

    /// Length in code points, as Python's `len`.
    pub(super) fn chars(&self) -> usize {
        self.text.chars().count()
    }
}

#[derive(Debug, Clone)]
pub(super) struct Num {
    pub(super) text: String,
    /// python-jsonschema's "integer": an int, or a float whose value is integral (`1.0`, `1e2`
    /// and `-0.0` are, `1.5` is not, nor `1e400`, which Python reads as infinity).
    pub(super) integral: bool,
}

#[derive(Debug, Clone)]
pub(super) enum Json {
    Null,
    Bool(bool),
    Num(Num),
    Str(JStr),
    Arr(Vec<Json>),
    /// Members in first-seen order; a repeated key keeps its last value (Python's dict).
    Obj(Vec<(JStr, Json)>),
}

/// Python's `sys.int_info.default_max_str_digits`: a longer integer literal is a
/// `ValueError` the reference reports as "not JSON".
pub(super) const PY_MAX_INT_DIGITS: usize = 4300;
/// Deeper nesting is refused (a valid message nests 6 levels; Python stops near 1000).
pub(super) const MAX_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error)]
#[error("not JSON: {what} at column {column}")]
pub(super) struct JsonError {
    what: String,
    column: usize,
}

pub(super) struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    pub(super) fn new(text: &'a str) -> Self {
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

    pub(super) fn document(&mut self) -> Result<Json, JsonError> {
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
            // Python: float(text), correctly rounded like Rust's parser, so the nearest
            // double decides (`4503599627370496.5` is an integer); 1e400 is inf.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::check::get;

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
}
