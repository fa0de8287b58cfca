//! The small text formats the baseline checks decide on, pure over text: a sysctl value,
//! pam_limits' limits.conf, the account databases (passwd, group, shadow) and
//! `/proc/<pid>/mounts`. Nothing here reads a file; malformed lines are skipped.

/// A sysctl file's value as an integer (`/proc/sys/...` holds it with a newline).
pub fn sysctl_int(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// The hard `core` limit for everyone (`*`) in limits.conf-format texts read in order
/// (limits.conf, then limits.d/*.conf sorted, as pam_limits reads them): the last such line
/// wins. `Some("0")`, `Some("unlimited")` …, or `None` when no line sets it. A `-` type sets
/// both the soft and the hard limit.
pub fn hard_core_limit<'a>(texts: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut found = None;
    for text in texts {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if let [domain, kind, item, value] = f[..]
                && domain == "*"
                && (kind == "hard" || kind == "-")
                && item == "core"
            {
                found = Some(value.to_string());
            }
        }
    }
    found
}

/// One account of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// The password field (`x` when the password is in shadow).
    pub password: String,
    pub uid: u32,
    pub gid: u32,
}

/// The accounts of a passwd text; lines that are not 7 `:`-fields with numeric ids are
/// skipped (NSS `+`/`-` compat lines among them).
pub fn passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 7 {
                return None;
            }
            Some(Account {
                name: f[0].to_string(),
                password: f[1].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect()
}

/// One group of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The groups of a group text (4 `:`-fields, numeric gid).
pub fn group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 4 {
                return None;
            }
            Some(Group {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// The names of the shadow entries whose password field is empty (anyone may log in
/// without a password). Nothing else of shadow leaves this function.
pub fn empty_shadow_passwords(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let pw = f.next()?;
            (!name.is_empty() && pw.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// The values that occur more than once, each once, in first-seen order.
pub fn duplicates<T: PartialEq + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen: Vec<T> = Vec::new();
    let mut dup: Vec<T> = Vec::new();
    for i in items {
        if seen.contains(&i) {
            if !dup.contains(&i) {
                dup.push(i);
            }
        } else {
            seen.push(i);
        }
    }
    dup
}

/// One line of `/proc/<pid>/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub target: String,
    pub fstype: String,
    pub options: Vec<String>,
}

/// The mounts of a `/proc/<pid>/mounts` text. The kernel writes a space in a path as `\040`.
pub fn mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() < 4 {
                return None;
            }
            Some(Mount {
                target: f[1].replace("\\040", " "),
                fstype: f[2].to_string(),
                options: f[3].split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_values() {
        assert_eq!(sysctl_int("1\n"), Some(1));
        assert_eq!(sysctl_int(" -1 "), Some(-1));
        assert_eq!(sysctl_int("1\t2\n"), None);
    }

    #[test]
    fn the_last_hard_core_line_for_everyone_wins() {
        let conf = "# x\n*  hard core 0\n@adm hard core unlimited\n";
        assert_eq!(hard_core_limit([conf]), Some("0".into()));
        assert_eq!(
            hard_core_limit([conf, "* - core unlimited # later file\n"]),
            Some("unlimited".into())
        );
        assert_eq!(hard_core_limit(["* soft core 0\n"]), None);
    }

    #[test]
    fn accounts_groups_shadow_mounts() {
        let p = passwd("root:x:0:0:root:/root:/bin/bash\n+::::::\nbad:x:a:0::/:/bin/sh\n");
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].uid, p[0].password.as_str()), (0, "x"));
        let g = group("shadow:x:42:a,b\nempty:x:7:\n");
        assert_eq!(g[0].members, ["a", "b"]);
        assert!(g[1].members.is_empty());
        assert_eq!(
            empty_shadow_passwords("root:*:1::::::\nbob::1::::::\n:x\nlocked:!:1:\n"),
            ["bob"]
        );
        assert_eq!(duplicates([1, 2, 1, 3, 1, 2]), [1, 2]);
        let m = mounts("tmpfs /tmp tmpfs rw,nosuid,nodev 0 0\n/dev/a /my\\040dir ext4 rw 0 0\n");
        assert_eq!(m[0].options, ["rw", "nosuid", "nodev"]);
        assert_eq!(m[1].target, "/my dir");
    }
}
