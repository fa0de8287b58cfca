//! Formats, as python-jsonschema's `FormatChecker` checks them: `date-time` (rfc3339-validator),
//! `ipv4` and `ipv6` (Python's `ipaddress`). The schema's `ip` is `oneOf [ipv4, ipv6]`; no
//! string is both, so it means "either".

/// RFC 3339 `date-time` as rfc3339-validator 0.1.4 checks `instance.upper()`:
/// `^\d{4}-(0[1-9]|1[0-2])-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$`
/// (ASCII digits; `$` also matches before a final newline), then year ≥ 1 and the day
/// within the month (Gregorian leap years). So `T` and `Z` in either case, no 24:00, no leap
/// second 60, any number of fraction digits, one trailing `"\n"` accepted, a space instead of
/// `T` refused.
pub(super) fn date_time(s: &str) -> Result<(), String> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let b = s.as_bytes();
    let mut at = 0usize;
    let found = |at: usize| -> String {
        match s.get(at..).and_then(|rest| rest.chars().next()) {
            Some(c) => format!("{:?}", c.to_string()),
            None if at >= b.len() => "the end".to_string(),
            None => "a broken character".to_string(),
        }
    };
    let num = |at: &mut usize, n: usize, what: &str| -> Result<u32, String> {
        let digits = b
            .get(*at..*at + n)
            .filter(|d| d.iter().all(u8::is_ascii_digit));
        match digits {
            Some(d) => {
                *at += n;
                Ok(d.iter().fold(0u32, |acc, x| acc * 10 + u32::from(x - b'0')))
            }
            None => Err(format!(
                "expected {n} digits of {what} at position {}, found {}",
                *at + 1,
                found(*at)
            )),
        }
    };
    let lit = |at: &mut usize, want: &[u8], what: &str| -> Result<u8, String> {
        match b.get(*at) {
            Some(c) if want.contains(c) => {
                *at += 1;
                Ok(*c)
            }
            _ => Err(format!(
                "expected {what} at position {}, found {}",
                *at + 1,
                found(*at)
            )),
        }
    };
    let year = num(&mut at, 4, "year")?;
    lit(&mut at, b"-", "'-'")?;
    let month = num(&mut at, 2, "month")?;
    if !(1..=12).contains(&month) {
        return Err(format!("month {month:02} is not 01-12"));
    }
    lit(&mut at, b"-", "'-'")?;
    let day = num(&mut at, 2, "day")?;
    lit(&mut at, b"Tt", "'T' between the date and the time")?;
    let hour = num(&mut at, 2, "hour")?;
    if hour > 23 {
        return Err(format!("hour {hour} is not 00-23"));
    }
    lit(&mut at, b":", "':'")?;
    let minute = num(&mut at, 2, "minute")?;
    if minute > 59 {
        return Err(format!("minute {minute} is not 00-59"));
    }
    lit(&mut at, b":", "':'")?;
    let second = num(&mut at, 2, "second")?;
    if second > 59 {
        return Err(format!(
            "second {second} is not 00-59 (leap seconds are not accepted)"
        ));
    }
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return Err(format!(
                "expected digits of the fraction of a second at position {}, found {}",
                at + 1,
                found(at)
            ));
        }
    }
    match lit(&mut at, b"Zz+-", "the UTC offset (Z or +HH:MM or -HH:MM)")? {
        b'Z' | b'z' => {}
        _ => {
            let oh = num(&mut at, 2, "offset hours")?;
            if oh > 23 {
                return Err(format!("offset hour {oh} is not 00-23"));
            }
            lit(&mut at, b":", "':' in the UTC offset")?;
            let om = num(&mut at, 2, "offset minutes")?;
            if om > 59 {
                return Err(format!("offset minute {om} is not 00-59"));
            }
        }
    }
    if at != b.len() {
        return Err(format!(
            "unexpected {} at position {} after the UTC offset",
            found(at),
            at + 1
        ));
    }
    if year == 0 {
        return Err("year 0000 does not exist".into());
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=days).contains(&day) {
        return Err(format!(
            "day {day:02} is not in {year:04}-{month:02}, which has {days} days"
        ));
    }
    Ok(())
}

/// The schema's `ip`: IPv4 or IPv6.
pub(super) fn ip(s: &str) -> Result<(), String> {
    if s.contains(':') {
        ipv6(s).map_err(|why| format!("not IPv6: {why}"))
    } else {
        ipv4(s).map(drop).map_err(|why| format!("not IPv4: {why}"))
    }
}

/// Python's `ipaddress.IPv4Address(s)`: four decimal octets 0–255 of 1–3 ASCII digits, no
/// leading zeros (`01.2.3.4` is refused), no `/`.
pub(super) fn ipv4(s: &str) -> Result<u32, String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.contains('/') {
        return Err("unexpected '/'".into());
    }
    let octets: Vec<&str> = s.split('.').collect();
    if octets.len() != 4 {
        return Err(format!("expected 4 octets, found {}", octets.len()));
    }
    let mut addr = 0u32;
    for o in octets {
        if o.is_empty() {
            return Err("empty octet".into());
        }
        if !o.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("only decimal digits are permitted in {o:?}"));
        }
        if o.len() > 3 {
            return Err(format!("at most 3 digits are permitted in {o:?}"));
        }
        if o != "0" && o.starts_with('0') {
            return Err(format!("leading zeros are not permitted in {o:?}"));
        }
        let v: u32 = o.parse().map_err(|_| format!("bad octet {o:?}"))?;
        if v > 255 {
            return Err(format!("octet {v} is more than 255"));
        }
        addr = (addr << 8) | v;
    }
    Ok(addr)
}

/// Python's `ipaddress.IPv6Address(s)` with jsonschema's refusal of a zone (`%eth0`): up to 8
/// hextets of 1–4 hex digits, one `::`, an optional dotted IPv4 tail (`::ffff:1.2.3.4`, whose
/// octets follow the IPv4 rules).
pub(super) fn ipv6(s: &str) -> Result<(), String> {
    if s.contains('/') {
        return Err("unexpected '/'".into());
    }
    if s.contains('%') {
        return Err("a zone index ('%…') is not accepted".into());
    }
    if s.is_empty() {
        return Err("empty".into());
    }
    let mut parts: Vec<String> = s.split(':').map(str::to_string).collect();
    if parts.len() < 3 {
        return Err("at least 3 parts (2 colons) expected".into());
    }
    if parts.last().is_some_and(|p| p.contains('.')) {
        let tail = parts.pop().unwrap_or_default();
        let v4 = ipv4(&tail).map_err(|why| format!("bad IPv4 tail: {why}"))?;
        parts.push(format!("{:x}", v4 >> 16));
        parts.push(format!("{:x}", v4 & 0xFFFF));
    }
    if parts.len() > 9 {
        return Err("at most 8 colons permitted".into());
    }
    let n = parts.len();
    let mut skip = None;
    for (i, p) in parts.iter().enumerate().take(n - 1).skip(1) {
        if p.is_empty() {
            if skip.is_some() {
                return Err("at most one '::' permitted".into());
            }
            skip = Some(i);
        }
    }
    let (hi, lo) = match skip {
        Some(i) => {
            let (mut hi, mut lo) = (i, n - i - 1);
            if parts[0].is_empty() {
                hi -= 1;
                if hi > 0 {
                    return Err("leading ':' only permitted as part of '::'".into());
                }
            }
            if parts[n - 1].is_empty() {
                lo -= 1;
                if lo > 0 {
                    return Err("trailing ':' only permitted as part of '::'".into());
                }
            }
            if hi + lo > 7 {
                return Err("expected at most 7 other parts with '::'".into());
            }
            (hi, lo)
        }
        None => {
            if n != 8 {
                return Err(format!("exactly 8 parts expected without '::', found {n}"));
            }
            if parts[0].is_empty() {
                return Err("leading ':' only permitted as part of '::'".into());
            }
            if parts[n - 1].is_empty() {
                return Err("trailing ':' only permitted as part of '::'".into());
            }
            (n, 0)
        }
    };
    for p in parts[..hi].iter().chain(&parts[n - lo..]) {
        if !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("only hex digits are permitted in {p:?}"));
        }
        if p.len() > 4 {
            return Err(format!("at most 4 hex digits are permitted in {p:?}"));
        }
        if p.is_empty() {
            return Err("empty part".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_as_rfc3339_validator_checks_them() {
        let ok = [
            "2018-10-09T16:22:50Z",
            "2018-10-09t16:22:50z",
            "2018-08-10T11:01:21.000+01:00",
            "2018-10-09T16:22:50.123456789012Z",
            "2018-10-09T16:22:50-00:00",
            "2018-10-09T16:22:50+23:59",
            "2018-10-09T23:59:59Z",
            "2018-10-09T16:22:50Z\n",
            "2020-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2018-04-30T00:00:00Z",
        ];
        for s in ok {
            assert_eq!(date_time(s), Ok(()), "{s:?}");
        }
        let bad = [
            ("2018-10-09 16:22:50Z", "'T'"),
            ("2018-10-09T24:00:00Z", "hour 24"),
            ("2018-10-09T23:60:00Z", "minute 60"),
            ("2018-10-09T23:59:60Z", "leap seconds"),
            ("2019-02-29T00:00:00Z", "28 days"),
            ("1900-02-29T00:00:00Z", "28 days"),
            ("2018-04-31T00:00:00Z", "30 days"),
            ("2018-10-00T16:22:50Z", "day 00"),
            ("2018-13-09T16:22:50Z", "month 13"),
            ("2018-00-09T16:22:50Z", "month 00"),
            ("0000-01-01T00:00:00Z", "year 0000"),
            ("2018-10-09T16:22:50", "UTC offset"),
            ("2018-10-09T16:22:50.Z", "fraction"),
            ("2018-10-09T16:22:50,5Z", "UTC offset"),
            ("2018-10-09T16:22:50+0100", "':'"),
            ("2018-10-09T16:22:50+24:00", "offset hour 24"),
            ("2018-10-09T16:22:50+01:60", "offset minute 60"),
            ("2018-10-09T16:22:50Z\n\n", "unexpected"),
            ("2018-10-09T16:22:50Z ", "unexpected"),
            (" 2018-10-09T16:22:50Z", "year"),
            ("2018-10-09T16:22:50\u{662}Z", "UTC offset"),
            ("２018-10-09T16:22:50Z", "year"),
            ("2018-1-09T16:22:50Z", "month"),
            ("", "the end"),
        ];
        for (s, why) in bad {
            match date_time(s) {
                Ok(()) => panic!("{s:?} accepted"),
                Err(e) => assert!(e.contains(why), "{s:?}: {e}"),
            }
        }
    }

    #[test]
    fn ipv4_as_python_ipaddress_reads_it() {
        for s in ["0.0.0.0", "1.2.3.4", "255.255.255.255", "10.228.100.167"] {
            assert!(ipv4(s).is_ok(), "{s}");
            assert!(ip(s).is_ok(), "{s}");
        }
        for s in [
            "01.2.3.4",
            "1.2.3.00",
            "1.2.3.256",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.4\n",
            "\u{661}.2.3.4",
            "1.2.3.4/32",
            "1..3.4",
            "0x1.2.3.4",
            "1000.2.3.4",
            "",
        ] {
            assert!(ip(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn ipv6_as_python_ipaddress_reads_it_without_zones() {
        for s in [
            "::",
            "::1",
            "::ffff:1.2.3.4",
            "::FFFF:1.2.3.4",
            "::ffff:c000:0280",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:1.2.3.4",
            "fe80::1",
            "0000::",
            "2001:db8::8a2e:370:7334",
        ] {
            assert_eq!(ipv6(s), Ok(()), "{s}");
            assert!(ip(s).is_ok(), "{s}");
        }
        for s in [
            "fe80::1%eth0",
            "fe80::1%",
            "::ffff:01.2.3.4",
            "1:2:3:4:5:6:7:8::",
            "1::2::3",
            ":::",
            "1:2:3:4:5:6:7:1.2.3.4",
            "::/0",
            "00000::",
            "::g",
            ":1::",
            "1::1.2.3.4.5",
            "::1.2.3",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            ":1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:",
            "1:2",
            "1.2.3.4:5::",
        ] {
            assert!(ip(s).is_err(), "{s:?}");
        }
    }
}
