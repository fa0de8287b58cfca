//! The within-a-minute watcher against this machine: a user added with `useradd` (and a
//! uid-0 one) and a listener opened by the test each bring their kind due at the next
//! sample; nothing else does. Needs root and `useradd`/`userdel` (fails without them).

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use azureiotsecurity::collectors::HostRoot;
use azureiotsecurity::collectors::listening_ports;
use azureiotsecurity::collectors::watch::{self, Due, WATCH_PERIOD, Watcher};

/// A user that exists while this lives (`userdel` on drop).
struct TempUser(String);

/// Runs a shadow-utils command, retrying while another process holds the account files'
/// lock (other tests on this machine add users too); bounded.
fn shadow_utils(args: &[&str]) {
    let mut last = None;
    for _ in 0..50 {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{} must be installed for this test: {e}", args[0]));
        if out.status.success() {
            return;
        }
        last = Some(out);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{args:?}: {last:?}");
}

impl TempUser {
    fn add(tag: &str, extra: &[&str]) -> TempUser {
        let name = format!("azsw{tag}{}", std::process::id() % 100_000);
        let mut args = vec!["useradd", "-M", "-s", "/usr/sbin/nologin"];
        args.extend_from_slice(extra);
        args.push(&name);
        shadow_utils(&args);
        TempUser(name)
    }
}

impl TempUser {
    /// Removes the user, failing the test if that fails. `-f`: a uid-0 account shares its
    /// uid with running processes, which userdel otherwise refuses (exit 8).
    fn remove(mut self) {
        shadow_utils(&["userdel", "-f", &self.0]);
        self.0.clear();
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        // A test that failed before remove(): clean up anyway.
        if !self.0.is_empty() {
            let _ = Command::new("userdel").arg("-f").arg(&self.0).output();
        }
    }
}

fn watched(host: &HostRoot) -> watch::Sample {
    watch::sample(host, true, true)
}

/// A watcher that has seen the start snapshot of both kinds as they are now.
fn started(host: &HostRoot) -> Watcher {
    let mut w = Watcher::new(WATCH_PERIOD, Duration::ZERO);
    w.users_collected(watch::stamp_accounts(host));
    w.ports_collected(listening_ports::read(host).digest());
    w
}

#[test]
fn a_user_added_with_useradd_and_a_uid_0_user_bring_local_users_due() {
    let host = HostRoot::default();
    let mut w = started(&host);
    let user = TempUser::add("u", &[]);
    let due = w.observe(WATCH_PERIOD, watched(&host));
    assert!(due.local_users, "{due:?} after useradd {}", user.0);
    // The same state a minute later: nothing new.
    assert!(!w.observe(2 * WATCH_PERIOD, watched(&host)).local_users);
    // A second account with uid 0 (`-o -u 0`): a change again.
    let root2 = TempUser::add("r", &["-o", "-u", "0"]);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(passwd.contains(&format!("{}:x:0:", root2.0)), "{passwd}");
    assert!(w.observe(3 * WATCH_PERIOD, watched(&host)).local_users);
    user.remove();
    root2.remove();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(!passwd.contains("azsw"), "{passwd}");
}

#[test]
fn a_listener_opened_by_the_test_brings_listening_ports_due() {
    let host = HostRoot::default();
    // Other processes on this machine open and close listeners too: retry until a minute's
    // sample with nothing opened by the test says nothing new (bounded), then open one.
    let mut quiet = None;
    for _ in 0..20 {
        let mut w = started(&host);
        if w.observe(WATCH_PERIOD, watch::sample(&host, false, true)) == Due::default() {
            quiet = Some(w);
            break;
        }
    }
    let mut w = quiet.expect("a quiet minute on this machine in 20 tries");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let due = w.observe(2 * WATCH_PERIOD, watch::sample(&host, false, true));
    assert!(
        due.listening_ports,
        "{due:?} with {:?} listening",
        l.local_addr()
    );
    assert!(!due.local_users, "account files not watched in this sample");
    drop(l);
}
