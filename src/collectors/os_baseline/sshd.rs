//! sshd_config as sshd reads it, for the baseline checks: pure over text, the files it
//! includes handed in by the caller (nothing is read here).
//!
//! Contract: [`SshdConfig::parse`] takes the main file's text and a function that expands one
//! `Include` pattern into the matching files (name, text) in the order sshd reads them, and
//! gives the *global* value of each keyword: the first one met in read order wins, as in
//! sshd (`Include`d files are read where the `Include` line stands). Settings inside a
//! `Match` block apply only to the connections it selects, so they are not global: they are
//! skipped until `Match all` or the end of the file the block began in. Keywords are
//! case-insensitive (kept lower-case); values keep their text, quotes removed. A pattern that
//! cannot be expanded (an unreadable directory or file) fails the whole parse: the effective
//! configuration is then unknown.

use std::collections::BTreeMap;

/// sshd's own bound on nested `Include`s (`READCONF_MAX_DEPTH` in OpenSSH's readconf.c).
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// The most files one configuration reads. sshd has no such bound, but a file that
/// includes its own directory twice doubles the work at each of the 16 levels.
pub const MAX_FILES: usize = 256;

/// The global settings of an sshd configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshdConfig {
    values: BTreeMap<String, String>,
    /// The files read, in order (the main file first).
    pub files: Vec<String>,
}

/// Why an sshd configuration could not be read as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshdError {
    #[error("Include {pattern} in {file}: {reason}")]
    Include {
        file: String,
        pattern: String,
        reason: String,
    },
    #[error("Include nested deeper than {MAX_INCLUDE_DEPTH} at {file}")]
    TooDeep { file: String },
    #[error("more than {MAX_FILES} files included, at {file}")]
    TooMany { file: String },
}

impl SshdConfig {
    /// Parses `text` (the file `name`), expanding each `Include` pattern with `include`.
    pub fn parse<F>(name: &str, text: &str, mut include: F) -> Result<SshdConfig, SshdError>
    where
        F: FnMut(&str) -> Result<Vec<(String, String)>, String>,
    {
        let mut cfg = SshdConfig::default();
        cfg.read(name, text, false, 0, &mut include)?;
        Ok(cfg)
    }

    fn read<F>(
        &mut self,
        name: &str,
        text: &str,
        in_match: bool,
        depth: usize,
        include: &mut F,
    ) -> Result<(), SshdError>
    where
        F: FnMut(&str) -> Result<Vec<(String, String)>, String>,
    {
        if depth > MAX_INCLUDE_DEPTH {
            return Err(SshdError::TooDeep {
                file: name.to_string(),
            });
        }
        if self.files.len() >= MAX_FILES {
            return Err(SshdError::TooMany {
                file: name.to_string(),
            });
        }
        self.files.push(name.to_string());
        // A Match block begun in an included file ends with that file (OpenSSH ≥ 8.2);
        // one the includer was in goes on into the included file.
        let mut conditional = in_match;
        for line in text.lines() {
            let Some((key, value)) = split_line(line) else {
                continue;
            };
            match key.as_str() {
                "match" => {
                    conditional = !value.trim().eq_ignore_ascii_case("all");
                }
                "include" => {
                    for pattern in words(&value) {
                        let files = include(&pattern).map_err(|reason| SshdError::Include {
                            file: name.to_string(),
                            pattern: pattern.clone(),
                            reason,
                        })?;
                        for (n, t) in files {
                            self.read(&n, &t, conditional, depth + 1, include)?;
                        }
                    }
                }
                _ if conditional => {}
                _ => {
                    self.values.entry(key).or_insert(value);
                }
            }
        }
        Ok(())
    }

    /// The global value of `keyword` (any case), if set.
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.values
            .get(&keyword.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// One configuration line as (lower-case keyword, value); `None` for blank and comment
/// lines. sshd separates the keyword from its value by white space or one `=` with optional
/// white space around it.
fn split_line(line: &str) -> Option<(String, String)> {
    let line = line.trim_matches(|c: char| c.is_ascii_whitespace());
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_ascii_whitespace() || c == '=')
        .unwrap_or(line.len());
    let key = line[..end].to_ascii_lowercase();
    let mut rest = line[end..].trim_start_matches(|c: char| c.is_ascii_whitespace());
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_whitespace());
    }
    let value = words(rest).join(" ");
    Some((key, value))
}

/// The white-space separated words of a value, double quotes removed (a quoted word may hold
/// spaces). An unterminated quote runs to the end of the line.
pub fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        if c == '"' {
            quoted = !quoted;
            any = true;
        } else if c.is_ascii_whitespace() && !quoted {
            if any {
                out.push(std::mem::take(&mut cur));
                any = false;
            }
        } else {
            cur.push(c);
            any = true;
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// An sshd time value (`LoginGraceTime`, `ClientAliveInterval`) in seconds: a number with an
/// optional unit s/m/h/d/w, units may follow each other (`1m30s`). `None` if malformed.
pub fn seconds(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mult = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(mult)?)?;
        num.clear();
    }
    if !num.is_empty() {
        total = total.checked_add(num.parse().ok()?)?;
    }
    Some(total)
}

/// Whether a file name matches a glob pattern of `*` and `?` (the pattern of a file-name
/// component; `[` classes are taken literally).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        // A `*` in the pattern is a wildcard even when the name has a `*` there too.
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_include(_: &str) -> Result<Vec<(String, String)>, String> {
        Ok(Vec::new())
    }

    #[test]
    fn first_value_wins_and_keywords_ignore_case() {
        let c = SshdConfig::parse(
            "main",
            "# c\n  permitrootlogin yes\nPermitRootLogin no\nMaxAuthTries=3\nBanner = \"/etc/is sue\"\n",
            no_include,
        )
        .unwrap();
        assert_eq!(c.get("PermitRootLogin"), Some("yes"));
        assert_eq!(c.get("maxauthtries"), Some("3"));
        assert_eq!(c.get("Banner"), Some("/etc/is sue"));
        assert_eq!(c.get("X11Forwarding"), None);
    }

    #[test]
    fn includes_are_read_where_they_stand_and_match_blocks_are_not_global() {
        let c = SshdConfig::parse(
            "main",
            "Include /etc/ssh/sshd_config.d/*.conf\nX11Forwarding yes\nMatch User bob\n\
             MaxAuthTries 99\nMatch all\nLogLevel DEBUG\n",
            |p| {
                assert_eq!(p, "/etc/ssh/sshd_config.d/*.conf");
                Ok(vec![
                    (
                        "a.conf".into(),
                        "X11Forwarding no\nMatch Group x\nBanner b\n".into(),
                    ),
                    ("b.conf".into(), "Banner none\n".into()),
                ])
            },
        )
        .unwrap();
        assert_eq!(c.get("x11forwarding"), Some("no"));
        // a.conf's Match block ended with a.conf.
        assert_eq!(c.get("banner"), Some("none"));
        assert_eq!(c.get("maxauthtries"), None);
        assert_eq!(c.get("loglevel"), Some("DEBUG"));
        assert_eq!(c.files, ["main", "a.conf", "b.conf"]);
    }

    #[test]
    fn an_unreadable_include_or_a_loop_fails_the_parse() {
        let e = SshdConfig::parse("main", "Include x\n", |_| Err("denied".into())).unwrap_err();
        assert_eq!(e.to_string(), "Include x in main: denied");
        let e = SshdConfig::parse("main", "Include self\n", |_| {
            Ok(vec![("self".into(), "Include self\n".into())])
        })
        .unwrap_err();
        assert!(matches!(e, SshdError::TooDeep { .. }), "{e:?}");
        // A file including itself twice would read 2^16 files within the depth bound.
        let e = SshdConfig::parse("main", "Include a b\n", |_| {
            Ok(vec![("f".into(), "Include a b\n".into())])
        })
        .unwrap_err();
        assert!(matches!(e, SshdError::TooDeep { .. }), "{e:?}");
        let e = SshdConfig::parse("main", "Include *\n", |_| {
            Ok((0..300).map(|i| (format!("f{i}"), String::new())).collect())
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "more than 256 files included, at f255");
    }

    #[test]
    fn times_and_globs() {
        assert_eq!(seconds("60"), Some(60));
        assert_eq!(seconds("1m30s"), Some(90));
        assert_eq!(seconds("2M"), Some(120));
        assert_eq!(seconds("1x"), None);
        assert_eq!(seconds(""), None);
        assert!(glob_match("*.conf", "10-a.conf"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("a?c", "ac"));
        // Found by the baseline fuzz target: a name with a `*` in it.
        assert!(glob_match("*", "*x"));
        assert!(glob_match("a*", "a*b"));
    }
}
