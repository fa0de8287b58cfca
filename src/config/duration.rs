//! ISO 8601 durations as the twin schema's pattern has them:
//! `P[nY][nM][nW][nD][T[nH][nM][nS]]`, parsed by [`parse_duration`] and written by
//! [`format_duration`] so that parsing its output gives the same duration back.
//!
//! Units come in that order, each at most once, with at least one number after `P` and after
//! `T`; a fraction (`.` only) only on the last number (`PT0.5S`, `PT1.5H`). A month is 30
//! days (as in the C agent) and a year 365 days; the result saturates at [`Duration::MAX`]
//! instead of overflowing. Negative durations, lowercase letters and spaces are rejected. A
//! zero duration parses (the schema allows `PT0S`); the agent configuration's minimums apply
//! later.

use std::fmt::Write as _;
use std::time::Duration;

use thiserror::Error;

/// Why a text is not an ISO 8601 duration. Positions count characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("it is empty")]
    Empty,
    #[error("durations cannot be negative")]
    Negative,
    #[error("it does not start with P")]
    NoP,
    #[error("no value after P")]
    NothingAfterP,
    #[error("no value after T")]
    NothingAfterT,
    #[error("unexpected {found:?} at character {at}")]
    Unexpected { found: char, at: usize },
    #[error("the number at character {at} has no unit")]
    NoUnit { at: usize },
    #[error("{unit} at character {at} is a time unit: it needs a T before it")]
    TimeUnitBeforeT { unit: char, at: usize },
    #[error("{unit} at character {at} is a date unit: it must come before T")]
    DateUnitAfterT { unit: char, at: usize },
    #[error(
        "{unit} at character {at} is repeated or out of order (the order is Y, M, W, D, T, H, M, S)"
    )]
    OutOfOrder { unit: char, at: usize },
    #[error("the '.' at character {at} needs digits on both sides")]
    BadFraction { at: usize },
    #[error("only the last number may have a fraction (character {at} follows one)")]
    FractionNotLast { at: usize },
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;
const SECOND: u128 = NANOS_PER_SECOND;
const MINUTE: u128 = 60 * SECOND;
const HOUR: u128 = 60 * MINUTE;
const DAY: u128 = 24 * HOUR;
const WEEK: u128 = 7 * DAY;
const MONTH: u128 = 30 * DAY;
const YEAR: u128 = 365 * DAY;

/// Fraction digits beyond this many are ignored (far below a nanosecond for any unit, and
/// the arithmetic stays within `u128`).
const MAX_FRACTION_DIGITS: u32 = 18;

/// Parses an ISO 8601 duration `P[nY][nM][nW][nD][T[nH][nM][n[.f]S]]` (see the module
/// documentation for the exact rules).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let chars: Vec<char> = s.chars().collect();
    if chars.first() != Some(&'P') {
        return Err(DurationError::NoP);
    }
    if chars.len() == 1 {
        return Err(DurationError::NothingAfterP);
    }
    let mut total: u128 = 0;
    let mut in_time = false;
    // Rank of the last unit: Y M W D = 0..=3, T = 4, H M S = 5..=7.
    let mut last_rank: Option<u8> = None;
    let mut fraction_seen = false;
    let mut i = 1;
    while let Some(&c) = chars.get(i) {
        let at = i + 1;
        if fraction_seen {
            return Err(DurationError::FractionNotLast { at });
        }
        if c == 'T' {
            if in_time {
                return Err(DurationError::OutOfOrder { unit: 'T', at });
            }
            in_time = true;
            last_rank = Some(4);
            i += 1;
            if i == chars.len() {
                return Err(DurationError::NothingAfterT);
            }
            continue;
        }
        if c == '.' {
            return Err(DurationError::BadFraction { at });
        }
        // A minus sign where a number is expected: `P-1D`, `PT-5M`.
        if c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            return Err(DurationError::Negative);
        }
        let Some(mut whole) = c.to_digit(10).map(u128::from) else {
            return Err(DurationError::Unexpected { found: c, at });
        };
        let number_at = at;
        i += 1;
        while let Some(d) = chars.get(i).and_then(|c| c.to_digit(10)) {
            whole = whole.saturating_mul(10).saturating_add(u128::from(d));
            i += 1;
        }
        // (numerator, digits)
        let mut fraction: (u128, u32) = (0, 0);
        if chars.get(i) == Some(&'.') {
            let dot_at = i + 1;
            i += 1;
            let mut any = false;
            while let Some(d) = chars.get(i).and_then(|c| c.to_digit(10)) {
                any = true;
                if fraction.1 < MAX_FRACTION_DIGITS {
                    fraction = (fraction.0 * 10 + u128::from(d), fraction.1 + 1);
                }
                i += 1;
            }
            if !any {
                return Err(DurationError::BadFraction { at: dot_at });
            }
            fraction_seen = true;
        }
        let Some(&unit) = chars.get(i) else {
            return Err(DurationError::NoUnit { at: number_at });
        };
        let unit_at = i + 1;
        let (rank, nanos) = match (in_time, unit) {
            (false, 'Y') => (0, YEAR),
            (false, 'M') => (1, MONTH),
            (false, 'W') => (2, WEEK),
            (false, 'D') => (3, DAY),
            (true, 'H') => (5, HOUR),
            (true, 'M') => (6, MINUTE),
            (true, 'S') => (7, SECOND),
            (false, 'H' | 'S') => {
                return Err(DurationError::TimeUnitBeforeT { unit, at: unit_at });
            }
            (true, 'Y' | 'W' | 'D') => {
                return Err(DurationError::DateUnitAfterT { unit, at: unit_at });
            }
            (_, found) => return Err(DurationError::Unexpected { found, at: unit_at }),
        };
        if last_rank.is_some_and(|r| rank <= r) {
            return Err(DurationError::OutOfOrder { unit, at: unit_at });
        }
        last_rank = Some(rank);
        let part = whole
            .saturating_mul(nanos)
            .saturating_add(fraction.0.saturating_mul(nanos) / 10u128.pow(fraction.1));
        total = total.saturating_add(part);
        i += 1;
    }
    let secs = u64::try_from(total / NANOS_PER_SECOND);
    let nanos = u32::try_from(total % NANOS_PER_SECOND);
    Ok(match (secs, nanos) {
        (Ok(s), Ok(n)) => Duration::new(s, n),
        _ => Duration::MAX,
    })
}

/// Formats a duration as ISO 8601 with days, hours, minutes and seconds: `PT7M`, `PT13H`,
/// `P1D`, `PT1H30M`, `PT0.5S`, `PT0S` for zero. [`parse_duration`] reads it back exactly.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let days = secs / 86_400;
    let hours = secs % 86_400 / 3600;
    let minutes = secs % 3600 / 60;
    let seconds = secs % 60;
    let mut out = String::from("P");
    if days > 0 {
        let _ = write!(out, "{days}D");
    }
    let time = hours > 0 || minutes > 0 || seconds > 0 || nanos > 0;
    if time || days == 0 {
        out.push('T');
        if hours > 0 {
            let _ = write!(out, "{hours}H");
        }
        if minutes > 0 {
            let _ = write!(out, "{minutes}M");
        }
        if seconds > 0 || nanos > 0 || (hours == 0 && minutes == 0) {
            let _ = write!(out, "{seconds}");
            if nanos > 0 {
                let fraction = format!("{nanos:09}");
                let _ = write!(out, ".{}", fraction.trim_end_matches('0'));
            }
            out.push('S');
        }
    }
    out
}

/// Whole milliseconds of `d`, saturating at `u64::MAX` (the stages count time in ms).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn durations_parse() {
        let ms = Duration::from_millis;
        for (s, want) in [
            ("PT7M", secs(420)),
            ("PT5H", secs(18_000)),
            ("PT13H", secs(46_800)),
            ("PT1H", secs(3600)),
            ("P1D", secs(86_400)),
            ("PT1H30M", secs(5400)),
            ("PT0.5S", ms(500)),
            ("PT0S", secs(0)),
            ("P0D", secs(0)),
            ("PT60S", secs(60)),
            ("PT90M", secs(5400)),
            ("P1W", secs(7 * 86_400)),
            ("P1M", secs(30 * 86_400)),
            ("P1Y", secs(365 * 86_400)),
            (
                "P1Y2M3W4DT5H6M7S",
                secs(((365 + 60 + 21 + 4) * 24 + 5) * 3600 + 6 * 60 + 7),
            ),
            ("P1DT12H", secs(86_400 + 43_200)),
            ("PT1.5H", secs(5400)),
            ("P1.5D", secs(129_600)),
            ("PT0.25M", secs(15)),
            ("PT1.000000001S", Duration::new(1, 1)),
            ("PT0.0000000019S", Duration::new(0, 1)),
            ("PT007M", secs(420)),
            ("P1DT0.5S", Duration::new(86_400, 500_000_000)),
            (
                "PT99999999999999999999999999999999999999999S",
                Duration::MAX,
            ),
            ("P99999999999999999999Y", Duration::MAX),
            ("P18446744073709551615DT1S", Duration::MAX),
        ] {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn bad_durations_are_rejected_with_the_reason() {
        use DurationError as E;
        for (s, want) in [
            ("", E::Empty),
            ("P", E::NothingAfterP),
            ("PT", E::NothingAfterT),
            ("P1DT", E::NothingAfterT),
            ("-PT7M", E::Negative),
            ("PT-7M", E::Negative),
            ("P-1D", E::Negative),
            ("P1D-1H", E::Negative),
            ("-", E::Negative),
            ("P2020-01-01", E::Unexpected { found: '-', at: 6 }),
            ("PT-", E::Unexpected { found: '-', at: 3 }),
            ("pt7m", E::NoP),
            ("7M", E::NoP),
            (" PT7M", E::NoP),
            ("PT7M ", E::Unexpected { found: ' ', at: 5 }),
            ("PT7", E::NoUnit { at: 3 }),
            ("P7", E::NoUnit { at: 2 }),
            ("PT7X", E::Unexpected { found: 'X', at: 4 }),
            ("PTH", E::Unexpected { found: 'H', at: 3 }),
            ("PD", E::Unexpected { found: 'D', at: 2 }),
            ("P1H", E::TimeUnitBeforeT { unit: 'H', at: 3 }),
            ("P1S", E::TimeUnitBeforeT { unit: 'S', at: 3 }),
            ("PT1D", E::DateUnitAfterT { unit: 'D', at: 4 }),
            ("PT1W", E::DateUnitAfterT { unit: 'W', at: 4 }),
            ("PT1M1H", E::OutOfOrder { unit: 'H', at: 6 }),
            ("P1D1D", E::OutOfOrder { unit: 'D', at: 5 }),
            ("P1D1Y", E::OutOfOrder { unit: 'Y', at: 5 }),
            ("PT1HT1M", E::OutOfOrder { unit: 'T', at: 5 }),
            ("PT1H1H", E::OutOfOrder { unit: 'H', at: 6 }),
            ("PT.5S", E::BadFraction { at: 3 }),
            ("PT1.S", E::BadFraction { at: 4 }),
            ("PT0,5S", E::Unexpected { found: ',', at: 4 }),
            ("PT1.5H30M", E::FractionNotLast { at: 7 }),
            ("P1.5DT1H", E::FractionNotLast { at: 6 }),
            ("PT1.5S1", E::FractionNotLast { at: 7 }),
            ("P1DTT", E::OutOfOrder { unit: 'T', at: 5 }),
            (
                "PT１M",
                E::Unexpected {
                    found: '１', at: 3
                },
            ),
            ("PT7Mé", E::Unexpected { found: 'é', at: 5 }),
            ("PT+7M", E::Unexpected { found: '+', at: 3 }),
        ] {
            assert_eq!(parse_duration(s), Err(want), "{s:?}");
        }
    }

    #[test]
    fn duration_error_messages() {
        use DurationError as E;
        for (e, text) in [
            (E::Empty, "it is empty"),
            (E::Negative, "durations cannot be negative"),
            (E::NoP, "it does not start with P"),
            (E::NothingAfterP, "no value after P"),
            (E::NothingAfterT, "no value after T"),
            (
                E::Unexpected { found: 'X', at: 4 },
                "unexpected 'X' at character 4",
            ),
            (E::NoUnit { at: 3 }, "the number at character 3 has no unit"),
            (
                E::TimeUnitBeforeT { unit: 'H', at: 3 },
                "H at character 3 is a time unit: it needs a T before it",
            ),
            (
                E::DateUnitAfterT { unit: 'D', at: 4 },
                "D at character 4 is a date unit: it must come before T",
            ),
            (
                E::OutOfOrder { unit: 'H', at: 6 },
                "H at character 6 is repeated or out of order (the order is Y, M, W, D, T, H, M, S)",
            ),
            (
                E::BadFraction { at: 3 },
                "the '.' at character 3 needs digits on both sides",
            ),
            (
                E::FractionNotLast { at: 7 },
                "only the last number may have a fraction (character 7 follows one)",
            ),
        ] {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn millis_saturates() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::new(1, 999_999)), 1000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn durations_format() {
        let ms = Duration::from_millis;
        for (d, want) in [
            (secs(420), "PT7M"),
            (secs(18_000), "PT5H"),
            (secs(46_800), "PT13H"),
            (secs(3600), "PT1H"),
            (secs(86_400), "P1D"),
            (secs(5400), "PT1H30M"),
            (ms(500), "PT0.5S"),
            (secs(0), "PT0S"),
            (secs(90), "PT1M30S"),
            (secs(86_400 + 1), "P1DT1S"),
            (secs(365 * 86_400), "P365D"),
            (Duration::new(3661, 120_000_000), "PT1H1M1.12S"),
            (Duration::new(0, 1), "PT0.000000001S"),
            (Duration::MAX, "P213503982334601DT7H15.999999999S"),
        ] {
            assert_eq!(format_duration(d), want, "{d:?}");
            assert_eq!(parse_duration(want), Ok(d), "{want}");
        }
    }

    /// Any duration, from nanoseconds to [`Duration::MAX`] (shared with the agent
    /// configuration's properties).
    pub(crate) fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            (0u64..10_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            (0u64..10_000_000).prop_map(Duration::from_secs),
            (0u64..100_000).prop_map(Duration::from_millis),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = parse_duration(&s);
        }

        #[test]
        fn parse_never_panics_near_the_grammar(s in "P[0-9YMWDTHS.,-]{0,24}") {
            if let Ok(d) = parse_duration(&s) {
                // Whatever parses formats to something that parses to the same duration.
                prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
            }
        }

        #[test]
        fn format_then_parse_round_trips(d in any_duration()) {
            let text = format_duration(d);
            prop_assert_eq!(parse_duration(&text), Ok(d), "{}", text);
        }
    }
}
