//! The LocalUsers snapshot: one item per account of the host's `/etc/passwd`, with its
//! groups from `/etc/group` (the primary group first, then every group listing the account
//! as a member, in the file's order), as `getent passwd` / `id` would show them — read as
//! files, nothing executed (accounts of NSS services such as LDAP are not local users).
//!
//! ExtraDetails: `Shell`, `Home`, `UidZero` (`"true"` on uid 0 only), `PasswordState` and
//! `CanLogIn`. `/etc/shadow` is read only to classify each account's password field
//! ([`PasswordState`]): the text is dropped as soon as it is classified and only the class
//! leaves this module; when shadow cannot be read, both keys are left out for accounts whose
//! password lives there.
//!
//! No passwd: no event (an empty LocalUsers says nothing). No group file: every account's
//! groups are its primary gid alone, named by its number (as `id` does for a gid without a
//! name).

use std::collections::HashMap;

use super::{CollectOptions, HostRoot};
use crate::events::{Details, LocalUser, Payload};

/// The most accounts reported (a directory-backed host copied into passwd can have many;
/// beyond this the snapshot would be unreasonably large and is cut, saying so).
pub const MAX_USERS: usize = 10_000;

/// One line of passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    /// The password field (`x`: in shadow).
    pub password: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// One line of group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// What an account's password field says, never what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordState {
    /// A hash: a password logs in.
    Set,
    /// Empty: no password is asked (a baseline failure).
    Empty,
    /// `!…` or `*…`: password login refused (`usermod -L`, system accounts).
    Locked,
}

impl PasswordState {
    /// The class of a password field's text.
    pub fn of(field: &str) -> PasswordState {
        if field.is_empty() {
            PasswordState::Empty
        } else if field.starts_with('!') || field.starts_with('*') {
            PasswordState::Locked
        } else {
            PasswordState::Set
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PasswordState::Set => "Set",
            PasswordState::Empty => "Empty",
            PasswordState::Locked => "Locked",
        }
    }
}

/// Shells that refuse a login.
const NO_LOGIN_SHELLS: [&str; 6] = [
    "/usr/sbin/nologin",
    "/sbin/nologin",
    "/bin/false",
    "/usr/bin/false",
    "/bin/true",
    "/usr/bin/true",
];

/// The accounts of a passwd text. Comments, blank lines, NIS `+`/`-` lines and lines that
/// are not seven fields with numeric ids are skipped (login skips them too).
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            if line.starts_with('#') || line.starts_with('+') || line.starts_with('-') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 7 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                password: f[1].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
                shell: f[6].to_owned(),
            })
        })
        .collect()
}

/// The groups of a group text (same skipping rules as [`parse_passwd`]).
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            if line.starts_with('#') || line.starts_with('+') || line.starts_with('-') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 4 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// Each shadow account's password class (the text itself is not kept).
pub fn classify_shadow(text: &str) -> HashMap<String, PasswordState> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ':');
            let name = f.next()?;
            let password = f.next()?;
            if name.is_empty() || name.starts_with('#') || name.starts_with('+') {
                return None;
            }
            Some((name.to_owned(), PasswordState::of(password)))
        })
        .collect()
}

/// The LocalUsers items of parsed files; `shadow` is `None` when it could not be read.
pub fn users(
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
    shadow: Option<&HashMap<String, PasswordState>>,
) -> Vec<LocalUser> {
    let mut by_gid: HashMap<u32, &str> = HashMap::new();
    for g in groups {
        // The first line of a gid names it, as getgrgid() answers.
        by_gid.entry(g.gid).or_insert(&g.name);
    }
    passwd
        .iter()
        .take(MAX_USERS)
        .map(|u| {
            let mut gids = vec![u.gid];
            for g in groups {
                if g.members.iter().any(|m| m == &u.name) && !gids.contains(&g.gid) {
                    gids.push(g.gid);
                }
            }
            let names: Vec<String> = gids
                .iter()
                .map(|gid| {
                    by_gid
                        .get(gid)
                        .map_or_else(|| gid.to_string(), |n| (*n).to_owned())
                })
                .collect();
            let mut extra = Details::new();
            // An empty shell field means /bin/sh (login(1)).
            let shell = if u.shell.is_empty() {
                "/bin/sh"
            } else {
                u.shell.as_str()
            };
            extra.insert("Shell".into(), shell.to_owned());
            extra.insert("Home".into(), u.home.clone());
            if u.uid == 0 {
                extra.insert("UidZero".into(), "true".into());
            }
            let state = if u.password == "x" {
                shadow.map(|s| s.get(&u.name).copied().unwrap_or(PasswordState::Locked))
            } else {
                // The password is in passwd itself (no shadow for this account).
                Some(PasswordState::of(&u.password))
            };
            let shell_ok = !NO_LOGIN_SHELLS.contains(&shell);
            if let Some(state) = state {
                extra.insert("PasswordState".into(), state.as_str().into());
            }
            // A refusing shell settles it; otherwise the password decides, when known.
            // (A locked password still lets an SSH key in: CanLogIn is about passwords.)
            let can = match (shell_ok, state) {
                (false, _) => Some(false),
                (true, Some(s)) => Some(s != PasswordState::Locked),
                (true, None) => None,
            };
            if let Some(can) = can {
                extra.insert("CanLogIn".into(), can.to_string());
            }
            LocalUser {
                group_ids: join(gids.iter().map(u32::to_string)),
                group_names: join(names.into_iter()),
                user_id: u.uid.to_string(),
                user_name: u.name.clone(),
                extra_details: extra,
            }
        })
        .collect()
}

fn join(it: impl Iterator<Item = String>) -> String {
    it.collect::<Vec<_>>().join(";")
}

/// The host's LocalUsers: one event with an item per account, none without a passwd.
pub fn collect(host: &HostRoot, _opts: &CollectOptions) -> Vec<Payload> {
    let Ok(passwd) = host.read_to_string("/etc/passwd") else {
        return Vec::new();
    };
    let passwd = parse_passwd(&passwd);
    if passwd.is_empty() {
        return Vec::new();
    }
    let groups = host
        .read_to_string("/etc/group")
        .map(|t| parse_group(&t))
        .unwrap_or_default();
    // Classified at once; the text is dropped here.
    let shadow = host
        .read_to_string("/etc/shadow")
        .ok()
        .map(|t| classify_shadow(&t));
    vec![Payload::LocalUsers(users(
        &passwd,
        &groups,
        shadow.as_ref(),
    ))]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Synthetic files for the edge cases (the real ones are read in tests/snapshot.rs).
    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
+nisuser::::::
broken:x:notanumber:1::/:/bin/sh
alice:x:1000:1000:Alice,,,:/home/alice:
toor:x:0:0::/root:/bin/sh
old::1001:4242::/home/old:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:
adm:x:4:alice,daemon
sudo:x:27: alice , bob
alice:x:1000:
other:x:1000:
";
    const SHADOW: &str = "\
root:$y$j9T$abc$def:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
alice:!$6$xyz$hash:19000:0:99999:7:::
";

    fn by_name<'a>(u: &'a [LocalUser], name: &str) -> &'a LocalUser {
        u.iter().find(|u| u.user_name == name).unwrap()
    }

    #[test]
    fn accounts_groups_and_details_map_as_getent_and_id_show_them() {
        let shadow = classify_shadow(SHADOW);
        let u = users(&parse_passwd(PASSWD), &parse_group(GROUP), Some(&shadow));
        let names: Vec<&str> = u.iter().map(|u| u.user_name.as_str()).collect();
        assert_eq!(names, ["root", "daemon", "alice", "toor", "old"]);
        let root = by_name(&u, "root");
        assert_eq!((root.user_id.as_str(), root.group_ids.as_str()), ("0", "0"));
        assert_eq!(root.group_names, "root");
        assert_eq!(root.extra_details["UidZero"], "true");
        assert_eq!(root.extra_details["PasswordState"], "Set");
        assert_eq!(root.extra_details["CanLogIn"], "true");
        let daemon = by_name(&u, "daemon");
        assert_eq!(daemon.group_ids, "1;4");
        assert_eq!(daemon.group_names, "daemon;adm");
        assert_eq!(daemon.extra_details["CanLogIn"], "false");
        assert_eq!(daemon.extra_details["PasswordState"], "Locked");
        assert!(!daemon.extra_details.contains_key("UidZero"));
        // Members with spaces around them; the first line of a gid names it.
        let alice = by_name(&u, "alice");
        assert_eq!(alice.group_ids, "1000;4;27");
        assert_eq!(alice.group_names, "alice;adm;sudo");
        assert_eq!(alice.extra_details["Shell"], "/bin/sh");
        assert_eq!(alice.extra_details["Home"], "/home/alice");
        assert_eq!(alice.extra_details["PasswordState"], "Locked");
        assert_eq!(alice.extra_details["CanLogIn"], "false");
        // A second uid 0 is flagged; no shadow line means no password login.
        let toor = by_name(&u, "toor");
        assert_eq!(toor.extra_details["UidZero"], "true");
        assert_eq!(toor.extra_details["PasswordState"], "Locked");
        // An empty password in passwd itself; a gid without a group is named by number.
        let old = by_name(&u, "old");
        assert_eq!(old.extra_details["PasswordState"], "Empty");
        assert_eq!(old.extra_details["CanLogIn"], "true");
        assert_eq!(
            (old.group_ids.as_str(), old.group_names.as_str()),
            ("4242", "4242")
        );
    }

    #[test]
    fn without_shadow_the_password_details_are_left_out_not_guessed() {
        let u = users(&parse_passwd(PASSWD), &parse_group(GROUP), None);
        let root = by_name(&u, "root");
        assert!(!root.extra_details.contains_key("PasswordState"));
        assert!(!root.extra_details.contains_key("CanLogIn"));
        // The shell alone settles a refusing account.
        assert_eq!(by_name(&u, "daemon").extra_details["CanLogIn"], "false");
        // Known from passwd itself.
        assert_eq!(by_name(&u, "old").extra_details["PasswordState"], "Empty");
    }

    #[test]
    fn password_fields_are_classified() {
        assert_eq!(PasswordState::of(""), PasswordState::Empty);
        assert_eq!(PasswordState::of("!"), PasswordState::Locked);
        assert_eq!(PasswordState::of("!!"), PasswordState::Locked);
        assert_eq!(PasswordState::of("*"), PasswordState::Locked);
        assert_eq!(PasswordState::of("!$6$a$b"), PasswordState::Locked);
        assert_eq!(PasswordState::of("$6$a$b"), PasswordState::Set);
        let s = classify_shadow("a::1\nb:!:1\n#c::\n:x:\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s["a"], PasswordState::Empty);
        assert_eq!(s["b"], PasswordState::Locked);
    }
}
