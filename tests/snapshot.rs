//! `azureiotsecurity snapshot`: the host snapshots as events, checked against a synthetic host
//! tree (`tests/data/host-snapshot`, every field's mapping and missing files) and against this
//! machine (accounts added by the test with `useradd`, compared with `getent` and `id`;
//! system facts compared with `uname`, `/etc/hostname`, `/proc`). Every event goes through the
//! module's `validate` and the reference validator.
//!
//! Full tier: needs root (useradd) and the venv's Python (the reference validator); without
//! them these tests fail, never skip.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use azureiotsecurity::validate::validate_message;
use serde_json::{Value, json};

/// The events `snapshot` prints (exit 0 required).
fn snapshot(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["snapshot"];
    all.extend_from_slice(args);
    let (code, out, err) = support::run_bin(&all, b"");
    assert_eq!(code, 0, "snapshot {args:?}: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every event valid in both validators, one message each.
fn assert_valid(events: &[Value]) {
    assert!(!events.is_empty());
    let messages: Vec<String> = events
        .iter()
        .map(|e| support::envelope(std::slice::from_ref(e)))
        .collect();
    for m in &messages {
        assert_eq!(validate_message(m), Ok(()), "{m}");
    }
    let reference = support::reference_validate(&messages);
    for (m, r) in messages.iter().zip(&reference) {
        assert_eq!(r, "ok", "reference validator on {m}");
    }
}

/// The payload items of the events named `name`, in order.
fn items(events: &[Value], name: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["Name"] == name)
        .flat_map(|e| e["Payload"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn synthetic() -> std::path::PathBuf {
    support::root().join("tests/data/host-snapshot")
}

#[test]
fn the_synthetic_host_maps_to_every_field() {
    let events = snapshot(&["--host-root", &synthetic().display().to_string()]);
    assert_valid(&events);
    // One event each of the two kinds this test maps (the others have tests of their own).
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .filter(|n| ["SystemInformation", "LocalUsers"].contains(n))
        .collect();
    assert_eq!(names, ["SystemInformation", "LocalUsers"]);
    for e in &events {
        assert_eq!(e["Category"], "Periodic");
        assert_eq!(e["EventType"], "Security");
    }
    assert_eq!(
        items(&events, "SystemInformation"),
        [json!({
            "OSName": "Contoso Linux",
            "OSVersion": "7 (synthetic)",
            "OSVendor": "Contoso Ltd.",
            "OsArchitecture": "aarch64",
            // /etc/hostname, not the reader's /proc/sys/kernel/hostname.
            "HostName": "edge-synthetic",
            "BIOSVersion": "2023.07 synthetic",
            "BootDevice": "/dev/mmcblk0p2",
            "TotalPhysicalMemoryInKB": 3884332,
            "FreePhysicalMemoryInKB": 2345678,
            "TotalVirtualMemoryInKB": 3884332 + 1048572,
            "FreeVirtualMemoryInKB": 2345678 + 1000000,
            "ExtraDetails": {
                "CpuCount": "4",
                "CpuModel": "Raspberry Pi 4 Model B Rev 1.4",
                "KernelRelease": "6.1.0-rpi7-rpi-v8",
                "UptimeSeconds": "86401",
                "Nic.eth0.IPv4": "192.168.1.10",
                "Nic.eth0.IPv6": "fe80::dea6:32ff:fe12:3456,2001:db8::10",
                "Nic.eth0.Mac": "dc:a6:32:12:34:56",
                "Nic.eth0.Type": "Ethernet",
                "Nic.lo.IPv4": "127.0.0.1",
                "Nic.lo.IPv6": "::1",
                "Nic.lo.Mac": "00:00:00:00:00:00",
                "Nic.lo.Type": "Loopback",
                "Nic.wlan0.IPv4": "10.42.7.3",
                "Nic.wlan0.IPv6": "fe80::dea6:32ff:fe65:4321",
                "Nic.wlan0.Mac": "dc:a6:32:65:43:21",
                "Nic.wlan0.Type": "Wireless",
            }
        })]
    );
    let user = |name: &str, uid: &str, gids: &str, gnames: &str, extra: Value| {
        json!({"GroupIds": gids, "GroupNames": gnames, "UserId": uid, "UserName": name,
               "ExtraDetails": extra})
    };
    let login = |shell: &str, home: &str, state: &str, can: bool| {
        json!({"Shell": shell, "Home": home, "PasswordState": state,
               "CanLogIn": can.to_string()})
    };
    let mut root = login("/bin/bash", "/root", "Set", true);
    root["UidZero"] = json!("true");
    let mut toor = login("/bin/sh", "/root", "Set", true);
    toor["UidZero"] = json!("true");
    assert_eq!(
        items(&events, "LocalUsers"),
        [
            user("root", "0", "0", "root", root),
            user(
                "daemon",
                "1",
                "1;4",
                "daemon;adm",
                login("/usr/sbin/nologin", "/usr/sbin", "Locked", false)
            ),
            user("toor", "0", "0", "root", toor),
            user(
                "alice",
                "1000",
                "1000;4;27",
                "alice;adm;sudo",
                login("/bin/bash", "/home/alice", "Set", true)
            ),
            user(
                "bob",
                "1001",
                "1001",
                "bob",
                login("/bin/bash", "/home/bob", "Locked", false)
            ),
            // A gid without a group is named by its number, as `id` does.
            user(
                "nopass",
                "1002",
                "4242",
                "4242",
                login("/bin/sh", "/home/nopass", "Empty", true)
            ),
        ]
    );
    // Nothing of shadow but its classes: no hash text anywhere in the output.
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("$6$"), "{text}");
    assert!(!text.contains("notarealhash"), "{text}");
}

/// A copy of the synthetic tree, with `remove` (relative paths) removed.
fn copy_without(remove: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", synthetic().display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    for r in remove {
        let p = dir.path().join(r);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
    dir
}

#[test]
fn missing_files_leave_their_fields_out_and_never_fail_the_snapshot() {
    // The os-release link left dangling, no DMI, no meminfo, no /sys at all, no shadow, no
    // group file.
    let dir = copy_without(&[
        "usr/lib/os-release",
        "proc/meminfo",
        "sys",
        "etc/shadow",
        "etc/group",
    ]);
    let events = snapshot(&["--host-root", &dir.path().display().to_string()]);
    assert_valid(&events);
    let si = items(&events, "SystemInformation");
    assert_eq!(si.len(), 1);
    let keys: BTreeSet<&str> = si[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["OsArchitecture", "HostName", "BootDevice", "ExtraDetails"])
    );
    // No interfaces without /sys/class/net: their addresses are not guessed either.
    let extra = si[0]["ExtraDetails"].as_object().unwrap();
    assert!(extra.keys().all(|k| !k.starts_with("Nic.")), "{extra:?}");
    assert_eq!(extra["KernelRelease"], "6.1.0-rpi7-rpi-v8");
    let users = items(&events, "LocalUsers");
    assert_eq!(users.len(), 6);
    // Without group: the primary gid alone, named by number; without shadow: no password
    // class, and CanLogIn only where the shell settles it.
    assert_eq!(users[1]["GroupIds"], "1");
    assert_eq!(users[1]["GroupNames"], "1");
    assert_eq!(users[1]["ExtraDetails"]["CanLogIn"], "false");
    for u in &users {
        assert!(u["ExtraDetails"].get("PasswordState").is_none(), "{u}");
    }
    assert!(users[0]["ExtraDetails"].get("CanLogIn").is_none());

    // /etc/hostname gone: the kernel's name (under the root) instead; /proc/1/mounts gone:
    // the kernel command line's root=.
    let dir = copy_without(&["etc/hostname", "proc/1/mounts"]);
    let events = snapshot(&["--host-root", &dir.path().display().to_string()]);
    let si = items(&events, "SystemInformation");
    assert_eq!(si[0]["HostName"], "container-name");
    assert_eq!(si[0]["BootDevice"], "PARTUUID=abcd-02");

    // A root with nothing of a host: neither event, still exit 0.
    let empty = tempfile::tempdir().unwrap();
    let events = snapshot(&["--host-root", &empty.path().display().to_string()]);
    assert_eq!(items(&events, "SystemInformation"), Vec::<Value>::new());
    assert_eq!(items(&events, "LocalUsers"), Vec::<Value>::new());
    assert!(
        events
            .iter()
            .all(|e| !["SystemInformation", "LocalUsers"].contains(&e["Name"].as_str().unwrap())),
        "{events:?}"
    );
}

/// Accounts and a group added for the test, removed when dropped.
struct Accounts {
    users: Vec<String>,
    group: String,
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in &self.users {
            // -f: the uid-0 account "is used" by every root process.
            let _ = Command::new("userdel").args(["-f", u]).output();
        }
        let _ = Command::new("groupdel").arg(&self.group).status();
    }
}

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn this_machine_s_accounts_match_getent_and_id_with_users_the_test_added() {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let group = format!("snapg{tag}");
    let (plain, member, zero) = (
        format!("snapu{tag}"),
        format!("snapm{tag}"),
        format!("snapz{tag}"),
    );
    let accounts = Accounts {
        users: vec![plain.clone(), member.clone(), zero.clone()],
        group: group.clone(),
    };
    run_ok("groupadd", &[&group]);
    run_ok("useradd", &["-M", "-s", "/usr/sbin/nologin", &plain]);
    run_ok(
        "useradd",
        &[
            "-M",
            "-s",
            "/bin/bash",
            "-G",
            &format!("{group},adm"),
            &member,
        ],
    );
    run_ok("useradd", &["-M", "-o", "-u", "0", "-g", "0", &zero]);

    let events = snapshot(&[]);
    assert_valid(&events);
    let users = items(&events, "LocalUsers");
    let by_name: BTreeMap<&str, &Value> = users
        .iter()
        .map(|u| (u["UserName"].as_str().unwrap(), u))
        .collect();

    // Every account getent knows from the files, with its uid, and no other.
    let getent = run_ok("getent", &["passwd"]);
    let want: BTreeMap<String, String> = getent
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 7).then(|| (f[0].to_owned(), f[2].to_owned()))
        })
        .collect();
    let got: BTreeMap<String, String> = by_name
        .iter()
        .map(|(n, u)| (n.to_string(), u["UserId"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(got, want);
    for name in [&plain, &member, &zero] {
        assert!(by_name.contains_key(name.as_str()), "{name} not reported");
    }

    // Groups as `id` shows them: the primary first, then the rest (as sets: id's order of
    // supplementary groups is getgrouplist's).
    for (name, u) in &by_name {
        let ids: Vec<String> = run_ok("id", &["-G", name])
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let names: Vec<String> = run_ok("id", &["-Gn", name])
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let got_ids: Vec<String> = u["GroupIds"]
            .as_str()
            .unwrap()
            .split(';')
            .map(str::to_owned)
            .collect();
        let got_names: Vec<String> = u["GroupNames"]
            .as_str()
            .unwrap()
            .split(';')
            .map(str::to_owned)
            .collect();
        assert_eq!(got_ids[0], ids[0], "{name}: primary gid");
        assert_eq!(got_names[0], names[0], "{name}: primary group");
        let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
        assert_eq!(set(&got_ids), set(&ids), "{name}: gids");
        assert_eq!(set(&got_names), set(&names), "{name}: group names");
    }
    let m = by_name[member.as_str()];
    let member_groups: BTreeSet<&str> = m["GroupNames"].as_str().unwrap().split(';').collect();
    assert!(member_groups.contains(group.as_str()) && member_groups.contains("adm"));
    assert_eq!(m["ExtraDetails"]["Shell"], "/bin/bash");
    // useradd leaves the password locked ("!" in shadow).
    assert_eq!(m["ExtraDetails"]["PasswordState"], "Locked");
    assert_eq!(m["ExtraDetails"]["CanLogIn"], "false");
    let p = by_name[plain.as_str()];
    assert_eq!(p["ExtraDetails"]["Shell"], "/usr/sbin/nologin");
    assert_eq!(p["ExtraDetails"]["CanLogIn"], "false");
    assert!(p["ExtraDetails"].get("UidZero").is_none());
    // The second uid 0 is flagged like root.
    let z = by_name[zero.as_str()];
    assert_eq!(z["UserId"], "0");
    assert_eq!(z["ExtraDetails"]["UidZero"], "true");
    assert_eq!(by_name["root"]["ExtraDetails"]["UidZero"], "true");
    let uid_zero: Vec<&&str> = by_name
        .iter()
        .filter(|(_, u)| u["ExtraDetails"].get("UidZero").is_some())
        .map(|(n, _)| n)
        .collect();
    let getent_zero: Vec<&String> = want
        .iter()
        .filter(|(_, uid)| *uid == "0")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(uid_zero.len(), getent_zero.len());

    drop(accounts);
    // Removed again: the next snapshot no longer has them.
    let after = items(&snapshot(&[]), "LocalUsers");
    for name in [&plain, &member, &zero] {
        assert!(
            after.iter().all(|u| u["UserName"] != name.as_str()),
            "{name} left"
        );
    }
}

/// The first line of a file of this machine.
fn first_line(p: &str) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn this_machine_s_system_information_matches_uname_and_proc() {
    let events = snapshot(&["--host-root", "/"]);
    assert_valid(&events);
    let si = items(&events, "SystemInformation");
    assert_eq!(si.len(), 1);
    let si = &si[0];
    assert_eq!(si["OsArchitecture"], run_ok("uname", &["-m"]).trim());
    assert_eq!(
        si["ExtraDetails"]["KernelRelease"],
        run_ok("uname", &["-r"]).trim()
    );
    if Path::new("/etc/hostname").exists() {
        assert_eq!(si["HostName"], first_line("/etc/hostname"));
    }
    let os_name = run_ok("sh", &["-c", ". /etc/os-release && printf %s \"$NAME\""]);
    assert_eq!(si["OSName"], os_name);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(si["TotalPhysicalMemoryInKB"], total);
    assert_eq!(
        si["ExtraDetails"]["CpuCount"],
        run_ok("getconf", &["_NPROCESSORS_ONLN"]).trim()
    );
    // Every interface `ip` lists, with its MAC and every address `ip` shows on it.
    let links: Value = serde_json::from_str(&run_ok("ip", &["-j", "addr"])).unwrap();
    let extra = si["ExtraDetails"].as_object().unwrap();
    for link in links.as_array().unwrap() {
        let name = link["ifname"].as_str().unwrap();
        if let Some(mac) = link["address"].as_str() {
            assert_eq!(extra[&format!("Nic.{name}.Mac")], mac, "{name}");
        }
        for family in ["inet", "inet6"] {
            let addrs: BTreeSet<String> = link["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["family"] == family)
                .map(|a| {
                    let ip: std::net::IpAddr = a["local"].as_str().unwrap().parse().unwrap();
                    ip.to_string()
                })
                .collect();
            let key = format!(
                "Nic.{name}.{}",
                if family == "inet" { "IPv4" } else { "IPv6" }
            );
            let got: BTreeSet<String> = extra
                .get(&key)
                .and_then(Value::as_str)
                .map(|s| s.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            assert_eq!(got, addrs, "{key}");
        }
    }
}

/// `snapshot.baseline_include_passed` reaches the collectors: a host (synthetic, a temporary
/// tree with only `kernel.randomize_va_space = 2`) whose ASLR check passes shows it only
/// when the setting asks for passed checks; the other checks err (their files are missing)
/// either way.
#[test]
fn passed_baseline_checks_are_printed_only_when_the_setting_asks() {
    let host = tempfile::tempdir().expect("temp dir");
    let sys = host.path().join("proc/sys/kernel");
    std::fs::create_dir_all(&sys).expect("mkdir");
    std::fs::write(sys.join("randomize_va_space"), "2\n").expect("write");
    let root = host.path().to_str().expect("utf-8 temp path");
    let results = |include: &str| -> Vec<(String, String)> {
        let out = Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
            .args(["snapshot", "--host-root", root])
            .env(
                "AZUREIOTSECURITY_SNAPSHOT__BASELINE_INCLUDE_PASSED",
                include,
            )
            .output()
            .expect("run snapshot");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        items(&events, "OSBaseline")
            .iter()
            .map(|i| {
                (
                    i["CceId"].as_str().unwrap_or_default().to_owned(),
                    i["Result"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let aslr = "CIS-debian-12-1.5.1".to_owned();
    let without = results("false");
    let with = results("true");
    assert!(!without.iter().any(|(id, _)| *id == aslr), "{without:?}");
    assert!(with.contains(&(aslr, "Pass".to_owned())), "{with:?}");
    assert!(without.iter().all(|(_, r)| r != "Pass"), "{without:?}");
    assert_eq!(
        with.len(),
        without.len() + with.iter().filter(|(_, r)| r == "Pass").count()
    );
}
