//! Login events from PAM's and sshd's user-space audit records (`auditd-here.md` A.2,
//! "Logins"): one Login per attempt. USER_AUTH is the attempt (three password tries are
//! three); a failed USER_LOGIN or USER_ERR only summarizes it, and a USER_START from sshd or
//! login stands for a login that wrote nothing else. Both are held for a few seconds of record
//! time per pid ([`LoginTracker`]) until the pid says more; the state is bounded.

use std::collections::HashMap;

use serde::Serialize;

use super::{ExtraDetails, is_ip};
use crate::audit::parse::{Record, Value};
use crate::audit::types;

/// The Login payload (`messageEventSecurityLogin_v1_0.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Login {
    pub process_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub operation: String,
    pub executable: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    pub result: LoginResult,
    #[serde(skip_serializing_if = "ExtraDetails::is_empty")]
    pub extra_details: ExtraDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LoginResult {
    Success,
    Fail,
}

/// How long (record time) a USER_START or a failed USER_LOGIN/USER_ERR is held back.
const HOLD_MS: u64 = 5_000;
/// How long (record time) a pid's USER_AUTH result is remembered: sshd writes its closing
/// USER_LOGIN failure when the client gives up, seconds after the password try.
const MEMORY_MS: u64 = 60_000;

/// sshd's `acct` for an account that does not exist (it hides the name typed, which may be
/// a password typed into the wrong field).
const INVALID_USER: &str = "(invalid user)";

/// Bound on the per-pid state (a pid per concurrent login attempt; never more than this).
const MAX_PIDS: usize = 1024;
/// The default bound on the bytes of the per-pid state (`events.login_tracking_bytes`): a
/// held Login is a few hundred bytes, but its strings come from the record and can each be as
/// long as a line.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// What a pid's entry costs besides its strings (map slot, times, flags): an estimate.
const ENTRY_OVERHEAD: usize = 128;

/// What identifies the record a Login came from (for its Id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKey {
    /// The `node=` of the record (empty without one).
    pub node: Vec<u8>,
    pub id: crate::audit::parse::EventId,
}

/// A Login held back until its pid tells more.
#[derive(Debug, Clone)]
struct Held {
    login: Login,
    at_ms: u64,
    key: LoginKey,
}

/// Per-pid memory.
#[derive(Debug, Default, Clone)]
struct PidState {
    /// Time of the last USER_AUTH of this pid, and whether it succeeded.
    auth: Option<(u64, bool)>,
    /// A USER_START (success) or a failed USER_LOGIN/USER_ERR waiting.
    held: Option<Held>,
    /// A summary failure was already emitted or dropped for this pid.
    summarized: bool,
    last_ms: u64,
}

/// The login state machine: per-pid memory of USER_AUTH results and held records, bounded in
/// entries (`MAX_PIDS`) and bytes (`max_bytes`): beyond either, the pid seen least recently
/// is forgotten and its held Login emitted early (counted in `evicted`).
#[derive(Debug)]
pub struct LoginTracker {
    /// Keyed by (node, pid): forwarded events of several hosts share pid numbers.
    pids: HashMap<(Vec<u8>, i64), PidState>,
    max_bytes: usize,
    /// Pids forgotten early because a bound was reached.
    evicted: u64,
}

impl Default for LoginTracker {
    fn default() -> Self {
        LoginTracker::new(DEFAULT_MAX_BYTES)
    }
}

fn login_bytes(l: &Login) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    l.executable.len()
        + l.operation.len()
        + opt(&l.user_id)
        + opt(&l.user_name)
        + opt(&l.remote_address)
        + l.extra_details
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// The bytes one pid's entry holds (an estimate: the strings plus a fixed overhead).
fn entry_bytes(key: &(Vec<u8>, i64), st: &PidState) -> usize {
    ENTRY_OVERHEAD
        + key.0.len()
        + st.held
            .as_ref()
            .map_or(0, |h| h.key.node.len() + login_bytes(&h.login))
}

fn text(v: Option<Value<'_>>) -> Option<String> {
    let v = v?;
    let d = v.decoded()?;
    if d.is_empty() || &*d == b"?" || &*d == b"(null)" {
        return None;
    }
    Some(String::from_utf8_lossy(&d).into_owned())
}

fn user_id(v: Option<Value<'_>>) -> Option<String> {
    // 4294967295 is (uid_t)-1: unset.
    v.and_then(|v| v.as_u64())
        .filter(|&u| u != u64::from(u32::MAX))
        .map(|u| u.to_string())
}

fn basename(exe: &str) -> &str {
    exe.rsplit('/').next().unwrap_or(exe)
}

impl LoginTracker {
    /// `max_bytes`: the bound on the bytes of the per-pid state (`events.login_tracking_bytes`).
    pub fn new(max_bytes: usize) -> Self {
        LoginTracker {
            pids: HashMap::new(),
            max_bytes,
            evicted: 0,
        }
    }

    /// Bytes held now (the estimate the bound applies to). A walk over at most `MAX_PIDS`
    /// entries, done only for the user-space login records that change the state.
    pub fn bytes(&self) -> usize {
        self.pids.iter().map(|(k, st)| entry_bytes(k, st)).sum()
    }

    /// Pids forgotten early (their held Login emitted) because a bound was reached.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Feed one single-record user-space event. Logins that are due are appended to `out`
    /// with the key of the record they came from.
    pub fn record(&mut self, r: &Record<'_>, out: &mut Vec<(LoginKey, Login)>) {
        let time = r.id.millis();
        self.expire(time, out);
        let rtype = r.rtype;
        if !matches!(
            rtype,
            types::USER_AUTH
                | types::USER_LOGIN
                | types::USER_ERR
                | types::USER_START
                | types::USER_END
                | types::USER_LOGOUT
        ) {
            return;
        }
        let Some(pid) = r.get(b"pid").and_then(|v| v.as_i64()) else {
            return;
        };
        let exe = text(r.get(b"exe")).unwrap_or_default();
        let op = text(r.get(b"op")).unwrap_or_default();
        let node = r.node.unwrap_or_default().to_vec();
        let key = LoginKey {
            node: node.clone(),
            id: r.id,
        };
        let pid = (node, pid);
        match rtype {
            types::USER_END => {
                if let Some(h) = self.pids.get_mut(&pid).and_then(|st| st.held.take()) {
                    out.push((h.key, h.login));
                }
                return;
            }
            types::USER_START => {
                let b = basename(&exe);
                if op != "PAM:session_open" || !(b == "sshd" || b == "login") {
                    return;
                }
            }
            // sudo writes a USER_AUTH on every use; sudo is not a login.
            types::USER_AUTH if basename(&exe) == "sudo" => return,
            _ => {}
        }
        let res = r.get(b"res").map(|v| v.raw());
        let result = match (rtype, res) {
            (types::USER_ERR, _) => LoginResult::Fail,
            (_, Some(b"success" | b"yes")) => LoginResult::Success,
            (_, Some(_)) => LoginResult::Fail,
            (_, None) => return,
        };
        let Some(login) = build(r, rtype, pid.1, exe, op, result) else {
            return;
        };
        if !self.pids.contains_key(&pid) && self.pids.len() >= MAX_PIDS {
            self.evict_oldest(out);
        }
        self.update(pid, time, key, login, rtype, result, out);
        while !self.pids.is_empty() && self.bytes() > self.max_bytes {
            self.evict_oldest(out);
        }
    }

    /// The state change of one login record of `pid`.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        pid: (Vec<u8>, i64),
        time: u64,
        key: LoginKey,
        login: Login,
        rtype: u16,
        result: LoginResult,
        out: &mut Vec<(LoginKey, Login)>,
    ) {
        let st = self.pids.entry(pid).or_default();
        st.last_ms = time;
        let recent_auth = st
            .auth
            .filter(|(at, _)| time.saturating_sub(*at) <= MEMORY_MS)
            .map(|(_, ok)| ok);
        let held = Held {
            login,
            at_ms: time,
            key,
        };
        match (rtype, result) {
            // `USER_AUTH op=PAM:authentication acct=… res=success|failed`: a password check.
            // Through sshd a failed one is followed by USER_LOGIN res=failed from the same pid;
            // an invalid user writes USER_LOGIN res=failed `acct=(invalid user)` several times
            // (seen: twice before and once after the USER_AUTH), or USER_LOGIN then
            // `USER_ERR op=PAM:bad_ident`.
            (types::USER_AUTH, _) => {
                st.auth = Some((time, result == LoginResult::Success));
                let mut held = held;
                if result == LoginResult::Fail {
                    // The attempt itself: a held summary of it is redundant, but it tells
                    // whether sshd knew the account.
                    if let Some(h) = st.held.take_if(|h| h.login.result == LoginResult::Fail) {
                        if h.login.user_name.as_deref() == Some(INVALID_USER) {
                            held.login
                                .extra_details
                                .insert("InvalidUser", "true".to_string());
                        }
                    }
                    st.summarized = true;
                }
                out.push((held.key, held.login));
            }
            // A key-based ssh login without a tty writes neither USER_AUTH nor USER_LOGIN: its
            // only trace is `USER_START op=PAM:session_open`. With a tty, USER_LOGIN follows
            // USER_START. So it is held until the pid's USER_LOGIN (dropped), its USER_END or
            // HOLD_MS of record time (emitted).
            (types::USER_START, _) => {
                // After a successful password check (USER_AUTH res=success, then USER_START
                // and USER_LOGIN with a tty) this session is that login: one Login, the
                // USER_AUTH.
                if recent_auth != Some(true) {
                    st.held = Some(held);
                }
            }
            (types::USER_LOGIN, LoginResult::Success) => {
                // The pid's held USER_START was this login's session; USER_LOGIN names the
                // user only by id, its USER_START by name.
                let start = st.held.take();
                if recent_auth != Some(true) {
                    let mut held = held;
                    if held.login.user_name.is_none() {
                        held.login.user_name = start.and_then(|h| h.login.user_name);
                    }
                    out.push((held.key, held.login));
                }
            }
            // A summary: held, dropped when its pid writes a USER_AUTH failure, otherwise
            // emitted once per pid.
            (types::USER_LOGIN | types::USER_ERR, LoginResult::Fail) => {
                if recent_auth == Some(false) || st.summarized || st.held.is_some() {
                    // A summary of an attempt already reported or held.
                    return;
                }
                st.held = Some(held);
                st.summarized = true;
            }
            // USER_LOGOUT (Operation `logout`), and a USER_LOGIN `op=login id=UID` with a tty.
            _ => out.push((held.key, held.login)),
        }
    }

    fn evict_oldest(&mut self, out: &mut Vec<(LoginKey, Login)>) {
        let oldest = self
            .pids
            .iter()
            .min_by_key(|(_, st)| st.last_ms)
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            self.evicted += 1;
            if let Some(h) = self.pids.remove(&oldest).and_then(|st| st.held) {
                out.push((h.key, h.login));
            }
        }
    }

    /// Emit held logins older than the hold time, and forget quiet pids (record time
    /// `now_ms`).
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<(LoginKey, Login)>) {
        if self.pids.is_empty() {
            return;
        }
        let mut due: Vec<Held> = Vec::new();
        for st in self.pids.values_mut() {
            if st
                .held
                .as_ref()
                .is_some_and(|h| now_ms.saturating_sub(h.at_ms) > HOLD_MS)
            {
                due.extend(st.held.take());
            }
        }
        due.sort_by_key(|h| (h.at_ms, h.key.id.serial));
        out.extend(due.into_iter().map(|h| (h.key, h.login)));
        self.pids
            .retain(|_, st| st.held.is_some() || now_ms.saturating_sub(st.last_ms) <= MEMORY_MS);
    }

    /// Emit everything held (end of input, shutdown).
    pub fn flush(&mut self, out: &mut Vec<(LoginKey, Login)>) {
        self.expire(u64::MAX, out);
    }
}

/// The Login payload of a record, when it names somebody.
fn build(
    r: &Record<'_>,
    rtype: u16,
    pid: i64,
    exe: String,
    op: String,
    result: LoginResult,
) -> Option<Login> {
    let mut extra = ExtraDetails::new();
    if let Some(t) = text(r.get(b"terminal")) {
        extra.insert("Terminal", t);
    }
    if let Some(h) = text(r.get(b"hostname")) {
        extra.insert("Hostname", h);
    }
    extra.insert(
        "RecordType",
        String::from_utf8_lossy(r.type_name).into_owned(),
    );
    if let Some(auid) = user_id(r.get(b"auid")) {
        extra.insert("AuditUserId", auid);
    }
    // User-space records carry their content in a nested `msg='…'`. `addr` is `?` or a host
    // name when there is no IP; `acct` is hex when it has spaces or non-ASCII
    // (`28696E76616C6964207573657229` = "(invalid user)"), which `text` decodes.
    let addr = text(r.get(b"addr")).filter(|a| is_ip(a));
    let user_name = text(r.get(b"acct"));
    let user_id = user_id(r.get(b"id")).or_else(|| {
        if user_name.is_none() {
            user_id(r.get(b"uid"))
        } else {
            None
        }
    });
    if user_id.is_none() && user_name.is_none() {
        return None;
    }
    Some(Login {
        process_id: pid,
        user_id,
        user_name,
        operation: if rtype == types::USER_LOGOUT {
            "logout".to_string()
        } else {
            op
        },
        executable: exe,
        remote_address: addr,
        result,
        extra_details: extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_and_flush(t: &mut LoginTracker, lines: &[&str]) -> Vec<Login> {
        let mut got = feed(t, lines);
        let mut out = Vec::new();
        t.flush(&mut out);
        got.extend(out.into_iter().map(|(_, l)| l));
        got
    }

    fn feed(t: &mut LoginTracker, lines: &[&str]) -> Vec<Login> {
        let mut out = Vec::new();
        for l in lines {
            let r = Record::parse(l.as_bytes()).unwrap();
            t.record(&r, &mut out);
        }
        out.into_iter().map(|(_, l)| l).collect()
    }

    const AUTH_FAIL: &str = "type=USER_AUTH msg=audit(100.000:10): pid=500 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:authentication grantors=? acct=\"bob\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=failed'";
    const LOGIN_FAIL: &str = "type=USER_LOGIN msg=audit(101.000:11): pid=500 uid=0 auid=4294967295 ses=4294967295 msg='op=login acct=\"bob\" exe=\"/usr/sbin/sshd\" hostname=? addr=127.0.0.1 terminal=ssh res=failed'";

    #[test]
    fn held_logins_are_bounded_in_bytes_and_the_oldest_are_emitted_early_and_counted() {
        const BOUND: usize = 64 << 10;
        let mut t = LoginTracker::new(BOUND);
        // Synthetic: key-based ssh logins (a held USER_START each) of 200 pids within 200 ms
        // (all held: the hold is 5 s), each with a 4 KB host name (hex-encoded, as the kernel
        // writes a value it must encode).
        let host = "6".repeat(8_000);
        let mut emitted = Vec::new();
        for n in 0..200u64 {
            let line = format!(
                "type=USER_START msg=audit(100.{n:03}:{n}): pid={} uid=0 auid=1001 ses=3 msg='op=PAM:session_open grantors=pam_selinux acct=\"alice\" exe=\"/usr/sbin/sshd\" hostname={host} addr=127.0.0.1 terminal=ssh res=success'",
                1000 + n
            );
            let r = Record::parse(line.as_bytes()).unwrap();
            let mut out = Vec::new();
            t.record(&r, &mut out);
            assert!(t.bytes() <= BOUND, "{} bytes held", t.bytes());
            emitted.extend(out.into_iter().map(|(_, l)| l.process_id));
        }
        // About 4.3 KB each: 15 fit in 64 KB; the others were emitted early, oldest first.
        let held = t.pids.len() as i64;
        assert_eq!(held, 15);
        assert_eq!(emitted, (1000..1000 + 200 - held).collect::<Vec<_>>());
        assert_eq!(t.evicted(), 200 - held as u64);
        // Nothing lost: the held ones come at the end.
        let mut out = Vec::new();
        t.flush(&mut out);
        assert_eq!(out.len() as i64, held);
    }

    #[test]
    fn failed_password_is_one_fail() {
        let mut t = LoginTracker::default();
        let got = feed(&mut t, &[AUTH_FAIL, LOGIN_FAIL]);
        assert_eq!(got.len(), 1);
        let l = &got[0];
        assert_eq!(l.result, LoginResult::Fail);
        assert_eq!(l.operation, "PAM:authentication");
        assert_eq!(l.user_name.as_deref(), Some("bob"));
        assert_eq!(l.remote_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(l.executable, "/usr/sbin/sshd");
        assert_eq!(l.process_id, 500);
    }

    #[test]
    fn three_password_tries_are_three() {
        let mut t = LoginTracker::default();
        let got = feed(&mut t, &[AUTH_FAIL, AUTH_FAIL, AUTH_FAIL, LOGIN_FAIL]);
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn sudo_is_not_a_login() {
        let mut t = LoginTracker::default();
        let got = feed(
            &mut t,
            &[
                "type=USER_AUTH msg=audit(100.000:10): pid=7 uid=1000 auid=1000 ses=1 msg='op=PAM:authentication grantors=pam_permit acct=\"root\" exe=\"/usr/bin/sudo\" hostname=? addr=? terminal=/dev/pts/0 res=success'",
                "type=USER_START msg=audit(100.000:11): pid=7 uid=0 auid=1000 ses=1 msg='op=PAM:session_open grantors=pam_limits acct=\"root\" exe=\"/usr/bin/sudo\" hostname=? addr=? terminal=/dev/pts/0 res=success'",
            ],
        );
        assert!(got.is_empty());
        let mut out = Vec::new();
        t.flush(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn key_login_without_tty_from_user_start() {
        let mut t = LoginTracker::default();
        let start = "type=USER_START msg=audit(200.000:20): pid=600 uid=0 auid=1001 ses=3 msg='op=PAM:session_open grantors=pam_selinux acct=\"alice\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=success'";
        let end = "type=USER_END msg=audit(201.000:21): pid=600 uid=0 auid=1001 ses=3 msg='op=PAM:session_close grantors=pam_selinux acct=\"alice\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=success'";
        let got = feed(&mut t, &[start]);
        assert!(
            got.is_empty(),
            "held until the pid's USER_LOGIN or USER_END"
        );
        let got = feed(&mut t, &[end]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].result, LoginResult::Success);
        assert_eq!(got[0].operation, "PAM:session_open");
        assert_eq!(got[0].user_name.as_deref(), Some("alice"));
        assert_eq!(
            got[0].extra_details.get("AuditUserId").map(String::as_str),
            Some("1001")
        );
    }

    #[test]
    fn tty_login_is_one_user_login() {
        let mut t = LoginTracker::default();
        let start = "type=USER_START msg=audit(200.000:20): pid=600 uid=0 auid=1001 ses=3 msg='op=PAM:session_open grantors=pam_selinux acct=\"alice\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=success'";
        let login = "type=USER_LOGIN msg=audit(200.500:22): pid=600 uid=0 auid=1001 ses=3 msg='op=login id=1001 exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=/dev/pts/0 res=success'";
        let got = feed(&mut t, &[start, login]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].user_id.as_deref(), Some("1001"));
        assert_eq!(got[0].user_name.as_deref(), Some("alice"));
        assert_eq!(got[0].operation, "login");
        let mut out = Vec::new();
        t.flush(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn held_start_expires_in_record_time() {
        let mut t = LoginTracker::default();
        let start = "type=USER_START msg=audit(200.000:20): pid=600 uid=0 auid=1001 ses=3 msg='op=PAM:session_open acct=\"alice\" exe=\"/usr/sbin/sshd\" hostname=? addr=? terminal=ssh res=success'";
        let other = "type=CRED_ACQ msg=audit(206.000:30): pid=9 uid=0 auid=1 ses=1 msg='op=PAM:setcred acct=\"x\" exe=\"/usr/bin/x\" hostname=? addr=? terminal=? res=success'";
        assert!(feed(&mut t, &[start]).is_empty());
        let got = feed(&mut t, &[other]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].remote_address, None);
    }

    #[test]
    fn invalid_user_is_one_fail_and_logout() {
        let mut t = LoginTracker::default();
        let got = feed_and_flush(
            &mut t,
            &[
                "type=USER_LOGIN msg=audit(300.000:40): pid=700 uid=0 auid=4294967295 ses=4294967295 msg='op=login acct=28696E76616C6964207573657229 exe=\"/usr/sbin/sshd\" hostname=::1 addr=::1 terminal=ssh res=failed'",
                "type=USER_ERR msg=audit(300.100:41): pid=700 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:bad_ident grantors=? acct=\"?\" exe=\"/usr/sbin/sshd\" hostname=::1 addr=::1 terminal=ssh res=failed'",
                "type=USER_LOGOUT msg=audit(300.200:50): pid=800 uid=0 auid=1001 ses=3 msg='op=logout id=1001 exe=\"/usr/sbin/sshd\" hostname=? addr=? terminal=/dev/pts/0 res=success'",
            ],
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].operation, "logout");
        assert_eq!(got[0].user_id.as_deref(), Some("1001"));
        assert_eq!(got[1].user_name.as_deref(), Some("(invalid user)"));
        assert_eq!(got[1].remote_address.as_deref(), Some("::1"));
        assert_eq!(got[1].result, LoginResult::Fail);
    }

    #[test]
    fn invalid_user_with_password_try_is_one_fail() {
        // As captured (tests/data/login_ssh.log): two summaries, the try, a late summary.
        let summary = |t: &str, n: u32| {
            format!(
                "type=USER_LOGIN msg=audit({t}:{n}): pid=15194 uid=0 auid=4294967295 ses=4294967295 msg='op=login acct=28696E76616C6964207573657229 exe=\"/usr/sbin/sshd\" hostname=? addr=127.0.0.1 terminal=sshd res=failed'"
            )
        };
        let lines = [
            summary("100.782", 1),
            summary("100.786", 2),
            "type=USER_AUTH msg=audit(100.790:3): pid=15194 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:authentication grantors=? acct=\"nosuchuser\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=failed'".to_string(),
            summary("103.458", 4),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let got = feed_and_flush(&mut LoginTracker::default(), &refs);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].user_name.as_deref(), Some("nosuchuser"));
        assert_eq!(
            got[0].extra_details.get("InvalidUser").map(String::as_str),
            Some("true")
        );
        assert_eq!(got[0].result, LoginResult::Fail);
    }

    #[test]
    fn password_login_is_one_success() {
        let got = feed_and_flush(
            &mut LoginTracker::default(),
            &[
                "type=USER_AUTH msg=audit(100.000:1): pid=9 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:authentication grantors=pam_unix acct=\"alice\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=success'",
                "type=USER_START msg=audit(100.040:2): pid=9 uid=0 auid=1001 ses=3 msg='op=PAM:session_open grantors=pam_unix acct=\"alice\" exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=ssh res=success'",
                "type=USER_LOGIN msg=audit(100.300:3): pid=9 uid=0 auid=1001 ses=3 msg='op=login id=1001 exe=\"/usr/sbin/sshd\" hostname=127.0.0.1 addr=127.0.0.1 terminal=/dev/pts/0 res=success'",
            ],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].operation, "PAM:authentication");
        assert_eq!(got[0].result, LoginResult::Success);
    }

    #[test]
    fn user_err_alone_is_a_fail() {
        let mut t = LoginTracker::default();
        let got = feed_and_flush(
            &mut t,
            &[
                "type=USER_ERR msg=audit(300.100:41): pid=701 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:bad_ident grantors=? acct=\"?\" exe=\"/usr/sbin/sshd\" hostname=::1 addr=::1 terminal=ssh res=failed'",
            ],
        );
        // acct "?" is no name; uid 0 stands in as the identity.
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].result, LoginResult::Fail);
        assert_eq!(got[0].user_name, None);
        assert_eq!(got[0].user_id.as_deref(), Some("0"));
    }
}
