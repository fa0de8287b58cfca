//! Live tests: `azureiotsecurity run` against the real auditd of this machine.
//!
//! They need root, auditd running with its af_unix plugin on `/run/audit/audispd_events` and
//! the module's rules loaded (`scripts/setup-host.sh`; `scripts/test.sh` does it on CI), and the
//! programs of `scripts/install-test-deps.sh` (gcc-multilib, openssh-server, sshpass,
//! pamtester, sudo). A missing auditd, socket or rule set FAILS them; they never skip.
//!
//! auditd 3.0.9 serves one socket client at a time, so all live tests are in this one binary
//! and run one after the other (`harness::serial`). Each starts the module, proves it is the
//! client being served (a marker exec it must report), runs its scenario, runs an end marker,
//! stops the module with SIGTERM and reads everything it printed. Each then picks the events
//! of its own processes (by the pids it spawned, its own pid, ports, unique tokens) and
//! asserts their exact values.
//!
//! Schema: every event any live test receives (its own and whatever else the host did
//! meanwhile) is wrapped in a message envelope and validated by the reference validator
//! (`support::reference_validate`) in `Module::finish`; all must be "ok".

mod support;

#[path = "support/live_harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use harness::{Finished, Module, extra, field, name, payload, pid_of, run_ok, serial};

/// This test process's pid, as the module reports it (the audit `pid` is the thread group).
fn my_pid() -> i64 {
    i64::from(std::process::id())
}

fn canonical(p: &str) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .to_string_lossy()
        .into_owned()
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The ExtraDetails object of an event as a map.
fn extra_map(ev: &Value) -> BTreeMap<String, String> {
    payload(ev)["ExtraDetails"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().unwrap_or("<not a string>").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The event's time is within the test's run.
fn assert_recent(ev: &Value, since: SystemTime) {
    let t = ev["TimestampUTC"].as_str().expect("TimestampUTC");
    let t = chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}"));
    let ms = t.timestamp_millis();
    let since_ms = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    assert!(
        ms >= since_ms - 1000 && ms <= now_ms + 1000,
        "event time {t} is outside the test's run: {ev}"
    );
}

/// The `(auid, ses)` of this process, as the module writes them.
fn my_audit_ids() -> (String, String) {
    (
        harness::proc_id_text("/proc/self/loginuid"),
        harness::proc_id_text("/proc/self/sessionid"),
    )
}

fn only<'a>(what: &str, v: Vec<&'a Value>, fin: &Finished) -> &'a Value {
    assert_eq!(
        v.len(),
        1,
        "expected exactly one {what}, got {}: {v:#?}\nmodule log:\n{}",
        v.len(),
        fin.stderr
    );
    v[0]
}

fn spawn_quiet(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

// ------------------------------------------------------------------------------------------
// 1. exec arguments

#[test]
fn exec_arguments_are_reported_exactly() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path().canonicalize().expect("canonical tempdir");
    let cwd_s = cwd.to_str().expect("utf-8 tempdir").to_string();
    let (auid, ses) = my_audit_ids();
    let t0 = SystemTime::now();

    let strange: Vec<String> = [
        "arg with space",
        "double\"quote",
        "single'quote",
        "tab\there",
        "new\nline",
        "ünïcödé",
        "back\\slash",
        "a=b",
        "",
        "semi;colon",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let big = vec!["x".repeat(9000)];
    let many: Vec<String> = (1..=2100).map(|i| format!("arg{i:04}")).collect();
    let cases: Vec<(&str, &Vec<String>)> = vec![
        ("/bin/echo", &strange),
        ("/bin/true", &big),
        ("/bin/true", &many),
    ];

    let m = Module::start(&[]);
    let mut pids = Vec::new();
    for (prog, args) in &cases {
        let mut child = spawn_quiet(Command::new(prog).args(args.iter()).current_dir(&cwd));
        pids.push(i64::from(child.id()));
        assert!(child.wait().expect("wait").success(), "{prog} failed");
    }
    let fin = m.finish();

    for ((prog, args), pid) in cases.iter().zip(&pids) {
        let ev = only(
            &format!("ProcessCreate of {prog} (pid {pid})"),
            fin.select(|e| name(e) == "ProcessCreate" && pid_of(e) == *pid),
            &fin,
        );
        let mut want_cl = prog.to_string();
        for a in args.iter() {
            want_cl.push(' ');
            want_cl.push_str(a);
        }
        let got_cl = field(ev, "CommandLine");
        assert!(
            got_cl == want_cl,
            "CommandLine of {prog} with {} args: got {} bytes, want {} bytes; first difference at byte {:?}\ngot:  {:?}\nwant: {:?}",
            args.len(),
            got_cl.len(),
            want_cl.len(),
            got_cl
                .bytes()
                .zip(want_cl.bytes())
                .position(|(a, b)| a != b),
            &got_cl[..got_cl.len().min(300)],
            &want_cl[..want_cl.len().min(300)],
        );
        let exe = canonical(prog);
        let p = payload(ev);
        assert_eq!(field(ev, "Executable"), exe, "{ev}");
        assert_eq!(p["ProcessId"].as_i64(), Some(*pid), "{ev}");
        assert_eq!(p["ParentProcessId"].as_i64(), Some(my_pid()), "{ev}");
        assert_eq!(field(ev, "UserId"), "0", "{ev}");
        assert_eq!(field(ev, "UserName"), "root", "{ev}");
        let want_extra: BTreeMap<String, String> = [
            ("Arch", "x86_64"),
            ("AuditUserId", auid.as_str()),
            ("Comm", basename(&exe)),
            ("Cwd", cwd_s.as_str()),
            ("EffectiveUserId", "0"),
            ("SessionId", ses.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(extra_map(ev), want_extra, "ExtraDetails of {prog}");
        assert_eq!(ev["Category"], "Triggered");
        assert_eq!(ev["EventType"], "Security");
        assert_eq!(ev["IsEmpty"], false);
        assert!(ev["TimestampUTC"].as_str().unwrap_or("").ends_with('Z'));
        assert_recent(ev, t0);
    }
}

#[test]
fn exec_special_cases_are_reported_exactly() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical tempdir");
    // An executable and a working directory whose names audit writes in hex.
    let odd_dir = root.join("dir with space/ünï");
    std::fs::create_dir_all(&odd_dir).expect("mkdir");
    let odd_exe = odd_dir.join("my \"echo\" 'prog'");
    std::fs::copy("/bin/echo", &odd_exe).expect("copy echo");
    let script = root.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("script");
    run_ok("chmod", &["+x", script.to_str().expect("utf-8")]);
    let execveat = harness::compile("execveat_probe.c", &root, &[]);
    let odd_exe_s = odd_exe.to_str().expect("utf-8").to_string();
    let odd_dir_s = odd_dir.to_str().expect("utf-8").to_string();
    let script_s = script.to_str().expect("utf-8").to_string();
    let execveat_s = execveat.to_str().expect("utf-8").to_string();
    let root_s = root.to_str().expect("utf-8").to_string();
    let missing = format!("/nonexistent/azureiotsecurity-{}", harness::nonce(4));
    // Longer than events.max_command_line_bytes (32 KiB): shortened at a character boundary.
    let long_arg = format!("x{}", "ü".repeat(20_000));

    let m = Module::start(&[]);
    // Runs a command to success; returns its pid.
    let run = |cmd: &mut Command| -> i64 {
        let mut child = spawn_quiet(cmd);
        let pid = i64::from(child.id());
        assert!(child.wait().expect("wait").success(), "{cmd:?} failed");
        pid
    };
    let odd = run(Command::new(&odd_exe)
        .arg("exe with special characters")
        .current_dir(&odd_dir));
    let env = run(Command::new("/usr/bin/env")
        .args(["/bin/echo", "via env"])
        .current_dir(&root));
    let sh = run(Command::new("/bin/sh")
        .args(["-c", "exec /bin/echo via-sh-exec"])
        .current_dir(&root));
    let scr = run(Command::new(&script).arg("script arg").current_dir(&root));
    let fexec = run(Command::new(&execveat).current_dir(&root));
    let failed = run(Command::new("/bin/sh")
        .args(["-c", &format!("{missing} 2>/dev/null; true")])
        .current_dir(&root));
    let long = run(Command::new("/bin/true").arg(&long_arg).current_dir(&root));
    let renamed = run(Command::new("/bin/echo")
        .arg0("renamed-echo")
        .arg("x")
        .current_dir(&root));
    let not_utf8 = run(Command::new("/bin/echo")
        .arg(std::ffi::OsStr::from_bytes(b"bad\xffbyte"))
        .current_dir(&root));
    let fin = m.finish();

    let execs_of = |pid: i64| fin.select(|e| name(e) == "ProcessCreate" && pid_of(e) == pid);
    // (executable, command line, Cwd, Comm) of each exec of `pid`, in order. Comm is the
    // name the program was run by (`sh`, not `dash`), cut to 15 bytes.
    let expect = |pid: i64, want: &[(&str, &str, &str, &str)]| {
        let got = execs_of(pid);
        let got_t: Vec<[String; 4]> = got
            .iter()
            .map(|e| {
                [
                    field(e, "Executable").to_string(),
                    field(e, "CommandLine").to_string(),
                    extra(e, "Cwd").unwrap_or_default().to_string(),
                    extra(e, "Comm").unwrap_or_default().to_string(),
                ]
            })
            .collect();
        let want_t: Vec<[String; 4]> = want
            .iter()
            .map(|(a, b, c, d)| [a.to_string(), b.to_string(), c.to_string(), d.to_string()])
            .collect();
        assert_eq!(got_t, want_t, "execs of pid {pid}: {got:#?}");
        for e in &got {
            assert_eq!(
                payload(e)["ParentProcessId"].as_i64(),
                Some(my_pid()),
                "{e}"
            );
            assert_eq!(field(e, "UserId"), "0", "{e}");
            assert_eq!(extra(e, "Arch"), Some("x86_64"), "{e}");
        }
    };
    let echo = canonical("/bin/echo");
    let dash = canonical("/bin/sh");
    expect(
        odd,
        &[(
            &odd_exe_s,
            &format!("{odd_exe_s} exe with special characters"),
            &odd_dir_s,
            "my \"echo\" 'prog",
        )],
    );
    // Two execs in one pid: the second's PROCTITLE is still the first program's; the command
    // line comes from EXECVE.
    expect(
        env,
        &[
            (
                "/usr/bin/env",
                "/usr/bin/env /bin/echo via env",
                &root_s,
                "env",
            ),
            (&echo, "/bin/echo via env", &root_s, "echo"),
        ],
    );
    expect(
        sh,
        &[
            (
                &dash,
                "/bin/sh -c exec /bin/echo via-sh-exec",
                &root_s,
                "sh",
            ),
            (&echo, "/bin/echo via-sh-exec", &root_s, "echo"),
        ],
    );
    // A #! script: the kernel's argv is the interpreter's.
    expect(
        scr,
        &[(
            &dash,
            &format!("/bin/sh {script_s} script arg"),
            &root_s,
            "script.sh",
        )],
    );
    // fexecve(): the execveat syscall.
    expect(
        fexec,
        &[
            (&execveat_s, &execveat_s, &root_s, "execveat_probe"),
            (&echo, "echo via-fexecve", &root_s, "echo"),
        ],
    );
    // argv[0] is whatever the caller passed; the executable and Comm are the file's.
    expect(renamed, &[(&echo, "renamed-echo x", &root_s, "echo")]);
    // A byte that is not UTF-8 becomes U+FFFD.
    expect(
        not_utf8,
        &[(&echo, "/bin/echo bad\u{fffd}byte", &root_s, "echo")],
    );
    // A failed exec (ENOENT) is no process.
    expect(
        failed,
        &[(
            &dash,
            &format!("/bin/sh -c {missing} 2>/dev/null; true"),
            &root_s,
            "sh",
        )],
    );
    assert!(
        fin.select(|e| field(e, "Executable").starts_with("/nonexistent")
            || field(e, "CommandLine").starts_with("/nonexistent"))
            .is_empty()
    );
    // Shortened to 32768 bytes, backed off to the character boundary before it.
    let full = format!("/bin/true {long_arg}");
    let ev = only(
        "ProcessCreate of the long command line",
        execs_of(long),
        &fin,
    );
    let cut = (0..=32768)
        .rev()
        .find(|&i| full.is_char_boundary(i))
        .expect("boundary");
    assert_eq!(cut, 32767, "the test's cut should fall inside a character");
    assert!(
        field(ev, "CommandLine") == &full[..cut],
        "shortened command line: {} bytes",
        field(ev, "CommandLine").len()
    );
    assert_eq!(
        extra(ev, "CommandLineTruncated"),
        Some("true"),
        "{}",
        extra_map(ev).len()
    );
    assert_eq!(
        extra(ev, "CommandLineLength"),
        Some(full.len().to_string().as_str())
    );
}

/// Several processes exec at once: their records interleave on the socket, and each exec is
/// still reported once, with its own argv.
#[test]
fn concurrent_execs_are_each_reported_once() {
    let _serial = serial();
    let token = format!("azureiotsecurity-concurrent-{}", harness::nonce(4));
    const THREADS: usize = 4;
    const EACH: usize = 150;
    let m = Module::start(&[]);
    let spawned: Vec<(i64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let token = &token;
                s.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let args = [token.clone(), format!("t{t}"), format!("n{i}")];
                            let mut child = spawn_quiet(Command::new("/bin/true").args(&args));
                            let pid = i64::from(child.id());
                            assert!(child.wait().expect("wait").success());
                            (pid, format!("/bin/true {}", args.join(" ")))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("spawner"))
            .collect()
    });
    let fin = m.finish();
    let mut got: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for e in fin
        .select(|e| name(e) == "ProcessCreate" && field(e, "CommandLine").contains(token.as_str()))
    {
        got.entry(pid_of(e))
            .or_default()
            .push(field(e, "CommandLine").to_string());
    }
    let want: BTreeMap<i64, Vec<String>> = spawned
        .into_iter()
        .map(|(pid, cl)| (pid, vec![cl]))
        .collect();
    assert_eq!(got.len(), THREADS * EACH, "execs reported");
    assert_eq!(got, want);
    assert_eq!(fin.stat("lines_dropped_queue_full"), 0);
}

// ------------------------------------------------------------------------------------------
// 2. i386

/// What `i386_probe` printed: the listener port and the peer ports of its two accepts.
fn probe_ports(out: &str) -> (u16, u16, u16) {
    let num = |prefix: &str, after: &str| -> u16 {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|l| l.rsplit(after).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} line in the probe's output:\n{out}"))
    };
    (
        num("listening on 127.0.0.1:", ":"),
        num("accept: peer port ", " "),
        num("accept4: peer port ", " "),
    )
}

#[test]
fn i386_exec_and_socketcall_connections() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = harness::compile("i386_probe.c", dir.path(), &["-m32", "-static"]);
    let probe_s = probe
        .canonicalize()
        .expect("probe")
        .to_string_lossy()
        .into_owned();
    let (auid, ses) = my_audit_ids();
    let cwd = std::env::current_dir()
        .expect("cwd")
        .canonicalize()
        .expect("cwd");

    let m = Module::start(&[]);
    let child = Command::new(&probe_s)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run i386_probe");
    let probe_pid = i64::from(child.id());
    let out = child.wait_with_output().expect("i386_probe");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "i386_probe failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("non-blocking connect: EINPROGRESS"),
        "{stdout}"
    );
    let (port, peer1, peer2) = probe_ports(&stdout);
    let fin = m.finish();

    // The probe's own exec: made by this (64-bit) process, so its arch is x86_64.
    let ev = only(
        "ProcessCreate of the probe",
        fin.select(|e| name(e) == "ProcessCreate" && pid_of(e) == probe_pid),
        &fin,
    );
    assert_eq!(field(ev, "CommandLine"), probe_s);
    assert_eq!(field(ev, "Executable"), probe_s);
    assert_eq!(payload(ev)["ParentProcessId"].as_i64(), Some(my_pid()));
    assert_eq!(extra(ev, "Arch"), Some("x86_64"), "{ev}");
    assert_eq!(extra(ev, "Comm"), Some("i386_probe"), "{ev}");

    // The /bin/true the 32-bit probe execs: an i386 execve (arch=40000003 syscall=11).
    let ev = only(
        "ProcessCreate of the probe's child",
        fin.select(|e| {
            name(e) == "ProcessCreate" && payload(e)["ParentProcessId"].as_i64() == Some(probe_pid)
        }),
        &fin,
    );
    assert_eq!(
        field(ev, "CommandLine"),
        "/bin/true from-i386 arg with space"
    );
    assert_eq!(field(ev, "Executable"), canonical("/bin/true"));
    assert_eq!(field(ev, "UserId"), "0");
    assert_eq!(field(ev, "UserName"), "root");
    let want_extra: BTreeMap<String, String> = [
        ("Arch", "i386"),
        ("AuditUserId", auid.as_str()),
        ("Comm", "true"),
        ("Cwd", cwd.to_str().expect("utf-8")),
        ("EffectiveUserId", "0"),
        ("SessionId", ses.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(extra_map(ev), want_extra, "{ev}");

    // Its connections, all through socketcall: connect (blocking), accept, connect
    // (non-blocking: EINPROGRESS), accept4.
    let conns = fin.select(|e| name(e) == "ConnectionCreate" && pid_of(e) == probe_pid);
    let summary: Vec<(String, String, String, String, Option<String>)> = conns
        .iter()
        .map(|e| {
            (
                field(e, "Direction").to_string(),
                field(e, "RemoteAddress").to_string(),
                field(e, "RemotePort").to_string(),
                field(e, "Protocol").to_string(),
                extra(e, "Status").map(str::to_string),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    let want = vec![
        (s("Out"), s("127.0.0.1"), port.to_string(), s("TCP"), None),
        (s("In"), s("127.0.0.1"), peer1.to_string(), s("TCP"), None),
        (
            s("Out"),
            s("127.0.0.1"),
            port.to_string(),
            s("TCP"),
            Some(s("InProgress")),
        ),
        (s("In"), s("127.0.0.1"), peer2.to_string(), s("TCP"), None),
    ];
    assert_eq!(summary, want, "the probe's connections: {conns:#?}");
    for e in &conns {
        assert_eq!(field(e, "Executable"), probe_s, "{e}");
        assert_eq!(field(e, "CommandLine"), probe_s, "{e}");
        assert_eq!(field(e, "UserId"), "0", "{e}");
        assert_eq!(extra(e, "Arch"), Some("i386"), "{e}");
        assert_eq!(extra(e, "Comm"), Some("i386_probe"), "{e}");
        assert_eq!(extra(e, "CommandLineSource"), None, "{e}");
    }
}

// ------------------------------------------------------------------------------------------
// 3. TCP and UDP

/// The command line the module derives from this process's PROCTITLE: argv joined by NUL,
/// cut to 128 bytes, trailing NULs trimmed (by the kernel), NULs shown as spaces.
fn my_proctitle_command_line() -> String {
    let raw = std::fs::read("/proc/self/cmdline").expect("/proc/self/cmdline");
    let mut b = raw[..raw.len().min(128)].to_vec();
    while b.last() == Some(&0) {
        b.pop();
    }
    String::from_utf8_lossy(&b).replace('\0', " ")
}

fn free_port_v4() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

type ConnKey = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn conn_key(e: &Value) -> ConnKey {
    (
        field(e, "Direction").to_string(),
        field(e, "RemoteAddress").to_string(),
        field(e, "RemotePort").to_string(),
        field(e, "Protocol").to_string(),
        extra(e, "Status").map(str::to_string),
        extra(e, "AddressFamily").map(str::to_string),
    )
}

fn key(
    dir: &str,
    addr: &str,
    port: u16,
    proto: &str,
    status: Option<&str>,
    family: Option<&str>,
) -> ConnKey {
    (
        dir.to_string(),
        addr.to_string(),
        port.to_string(),
        proto.to_string(),
        status.map(str::to_string),
        family.map(str::to_string),
    )
}

#[test]
fn tcp_and_udp_connections() {
    let _serial = serial();
    let (auid, ses) = my_audit_ids();
    let comm = std::fs::read_to_string("/proc/thread-self/comm")
        .expect("comm")
        .trim()
        .to_string();
    // A UDP socket created before the module starts: its socket() call is never seen.
    let early_udp = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    let udp_target = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    let udp_port = udp_target.local_addr().expect("addr").port();
    let udp6_target = UdpSocket::bind("[::1]:0").expect("udp6 bind");
    let udp6_port = udp6_target.local_addr().expect("addr").port();

    let m = Module::start(&[]);
    let mut want: Vec<ConnKey> = Vec::new();
    let loopback4: SocketAddr = "127.0.0.1:0".parse().expect("addr");

    // TCP over IPv4: blocking connect + accept.
    let l4 = TcpListener::bind("127.0.0.1:0").expect("bind v4");
    let p4 = l4.local_addr().expect("addr").port();
    let c = TcpStream::connect(("127.0.0.1", p4)).expect("connect v4");
    let (_a, peer) = l4.accept().expect("accept v4");
    assert_eq!(peer.port(), c.local_addr().expect("addr").port());
    want.push(key("Out", "127.0.0.1", p4, "TCP", None, None));
    want.push(key("In", "127.0.0.1", peer.port(), "TCP", None, None));
    drop((c, _a));

    // TCP over IPv6.
    let l6 = TcpListener::bind("[::1]:0").expect("bind v6");
    let p6 = l6.local_addr().expect("addr").port();
    let c = TcpStream::connect(("::1", p6)).expect("connect v6");
    let (_a, peer) = l6.accept().expect("accept v6");
    assert_eq!(peer.port(), c.local_addr().expect("addr").port());
    want.push(key("Out", "::1", p6, "TCP", None, None));
    want.push(key("In", "::1", peer.port(), "TCP", None, None));
    drop((c, _a));

    // Non-blocking connect (std's connect_timeout: O_NONBLOCK, connect → EINPROGRESS, poll).
    let mut to_p4 = loopback4;
    to_p4.set_port(p4);
    let c = TcpStream::connect_timeout(&to_p4, Duration::from_secs(5)).expect("connect_timeout");
    let (_a, peer) = l4.accept().expect("accept nb");
    assert_eq!(peer.port(), c.local_addr().expect("addr").port());
    want.push(key("Out", "127.0.0.1", p4, "TCP", Some("InProgress"), None));
    want.push(key("In", "127.0.0.1", peer.port(), "TCP", None, None));
    drop((c, _a));

    // An IPv6 socket to a v4-mapped address: reported as IPv4.
    let c = TcpStream::connect(("::ffff:127.0.0.1", p4)).expect("connect v4-mapped");
    let (_a, peer) = l4.accept().expect("accept v4-mapped");
    assert_eq!(peer.port(), c.local_addr().expect("addr").port());
    want.push(key(
        "Out",
        "127.0.0.1",
        p4,
        "TCP",
        None,
        Some("inet6-v4mapped"),
    ));
    want.push(key("In", "127.0.0.1", peer.port(), "TCP", None, None));
    drop((c, _a));

    // A dual-stack IPv6 listener accepting an IPv4 client: the peer is a v4-mapped address,
    // reported as IPv4.
    let ld = TcpListener::bind("[::]:0").expect("bind dual-stack");
    let pd = ld.local_addr().expect("addr").port();
    let c = TcpStream::connect(("127.0.0.1", pd)).expect("connect dual-stack");
    let (_a, peer) = ld.accept().expect("accept dual-stack");
    assert_eq!(peer.port(), c.local_addr().expect("addr").port());
    assert_eq!(peer.ip().to_string(), "::ffff:127.0.0.1");
    want.push(key("Out", "127.0.0.1", pd, "TCP", None, None));
    want.push(key(
        "In",
        "127.0.0.1",
        peer.port(),
        "TCP",
        None,
        Some("inet6-v4mapped"),
    ));
    drop((c, _a, ld));

    // A refused blocking connect is no connection: no event.
    let closed = free_port_v4();
    let e = TcpStream::connect(("127.0.0.1", closed)).expect_err("connect to a closed port");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);

    // A non-blocking connect to a closed port: on this kernel connect() itself returns
    // EINPROGRESS (the refusal comes later, through poll), and that is all audit sees: the
    // module reports it as a connection in progress.
    let closed_nb = free_port_v4();
    let mut to_closed = loopback4;
    to_closed.set_port(closed_nb);
    let e = TcpStream::connect_timeout(&to_closed, Duration::from_secs(5))
        .expect_err("non-blocking connect to a closed port");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    want.push(key(
        "Out",
        "127.0.0.1",
        closed_nb,
        "TCP",
        Some("InProgress"),
        None,
    ));

    // UDP connects are logged too. The module tells UDP from TCP by the socket() call of the
    // same (pid, fd), which its rules audit (`-S socket -F a0=2|10`): with the rules
    // setup-host.sh loads, a UDP socket made while the module runs says "UDP"; one made
    // before it started (early_udp) was never seen and says "Unknown".
    let u = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    u.connect(("127.0.0.1", udp_port)).expect("udp connect");
    want.push(key("Out", "127.0.0.1", udp_port, "UDP", None, None));
    let u6 = UdpSocket::bind("[::1]:0").expect("udp6 bind");
    u6.connect(("::1", udp6_port)).expect("udp6 connect");
    want.push(key("Out", "::1", udp6_port, "UDP", None, None));
    early_udp
        .connect(("127.0.0.1", udp_port))
        .expect("udp connect");
    want.push(key("Out", "127.0.0.1", udp_port, "Unknown", None, None));

    let fin = m.finish();

    let ports: BTreeSet<String> = want.iter().map(|k| k.2.clone()).collect();
    let mine: Vec<&Value> = fin.select(|e| {
        name(e) == "ConnectionCreate"
            && pid_of(e) == my_pid()
            && ports.contains(field(e, "RemotePort"))
    });
    let mut got: Vec<ConnKey> = mine.iter().map(|e| conn_key(e)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "this process's connections: {mine:#?}");
    // Nothing at all for the refused blocking connect.
    assert!(
        fin.select(
            |e| name(e) == "ConnectionCreate" && field(e, "RemotePort") == closed.to_string()
        )
        .is_empty(),
        "a refused connect was reported"
    );

    let exe = canonical("/proc/self/exe");
    let title = my_proctitle_command_line();
    for e in &mine {
        assert_eq!(field(e, "Executable"), exe, "{e}");
        assert_eq!(field(e, "UserId"), "0", "{e}");
        // This process started before the module: no ProcessCreate, so the command line is
        // its PROCTITLE.
        assert_eq!(field(e, "CommandLine"), title, "{e}");
        let mut want_extra: BTreeMap<String, String> = [
            ("Arch", "x86_64"),
            ("AuditUserId", auid.as_str()),
            ("CommandLineSource", "PROCTITLE"),
            ("Comm", comm.as_str()),
            ("EffectiveUserId", "0"),
            ("SessionId", ses.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(s) = extra(e, "Status") {
            want_extra.insert("Status".into(), s.into());
        }
        if let Some(s) = extra(e, "AddressFamily") {
            want_extra.insert("AddressFamily".into(), s.into());
        }
        assert_eq!(extra_map(e), want_extra, "{e}");
    }
}

// ------------------------------------------------------------------------------------------
// 4. logins

const PASSWORD: &str = "Aios-live-pw-1";

/// A test user, an ssh key for it, and an sshd on 127.0.0.1:<free port>; all removed on drop.
struct LoginHost {
    user: String,
    uid: String,
    dir: tempfile::TempDir,
    port: u16,
    sshd: Option<Child>,
    /// /run/sshd (sshd's privilege separation directory) was made by this test.
    made_run_sshd: bool,
}

impl LoginHost {
    fn new() -> LoginHost {
        let user = format!("aioslive{}", harness::nonce(3));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut host = LoginHost {
            user: user.clone(),
            uid: String::new(),
            dir,
            port: 0,
            sshd: None,
            made_run_sshd: !Path::new("/run/sshd").exists(),
        };
        run_ok("useradd", &["-m", "-s", "/bin/bash", &user]);
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        {
            use std::io::Write;
            let mut si = chpasswd.stdin.take().expect("stdin");
            writeln!(si, "{user}:{PASSWORD}").expect("write chpasswd");
        }
        assert!(chpasswd.wait().expect("chpasswd").success());
        host.uid = run_ok("id", &["-u", &user]).trim().to_string();
        let d = host.dir.path().to_str().expect("utf-8").to_string();
        // The user's key, sshd's host key, and a key the user does not authorize.
        for k in ["id_ed25519", "host_ed25519", "other_ed25519"] {
            let f = format!("{d}/{k}");
            run_ok("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", &f]);
        }
        let ssh_dir = format!("/home/{user}/.ssh");
        run_ok(
            "install",
            &["-d", "-m", "700", "-o", &user, "-g", &user, &ssh_dir],
        );
        run_ok(
            "install",
            &[
                "-m",
                "600",
                "-o",
                &user,
                "-g",
                &user,
                &format!("{d}/id_ed25519.pub"),
                &format!("{ssh_dir}/authorized_keys"),
            ],
        );
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        host.port = free_port_v4();
        let port = host.port.to_string();
        let sshd = Command::new("/usr/sbin/sshd")
            .args([
                "-D",
                "-p",
                &port,
                "-h",
                &format!("{d}/host_ed25519"),
                "-o",
                "ListenAddress=127.0.0.1",
                "-o",
                &format!("PidFile={d}/sshd.pid"),
                "-o",
                "UsePAM=yes",
                "-o",
                "PasswordAuthentication=yes",
                "-o",
                "KbdInteractiveAuthentication=no",
                "-o",
                "PermitRootLogin=no",
                "-o",
                "MaxStartups=50",
                "-E",
                &format!("{d}/sshd.log"),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd");
        host.sshd = Some(sshd);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ss = run_ok("ss", &["-Hltn", &format!("sport = :{port}")]);
            if ss.contains("LISTEN") {
                break;
            }
            if let Some(Ok(Some(st))) = host.sshd.as_mut().map(Child::try_wait) {
                panic!("sshd exited ({st}): {}", host.sshd_log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on 127.0.0.1:{port}: {}",
                host.sshd_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        host
    }

    fn sshd_pid(&self) -> i64 {
        i64::from(self.sshd.as_ref().expect("sshd").id())
    }

    fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn ssh(&self, user: &str, password: Option<&str>, extra_args: &[&str]) -> Command {
        let port = self.port.to_string();
        let mut cmd = match password {
            Some(pw) => {
                let mut c = Command::new("sshpass");
                c.args(["-p", pw, "ssh"]);
                c
            }
            None => Command::new("ssh"),
        };
        cmd.args([
            "-F",
            "/dev/null",
            "-p",
            &port,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
        ]);
        if password.is_some() {
            cmd.args([
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "NumberOfPasswordPrompts=1",
            ]);
        } else {
            if !extra_args.contains(&"-i") {
                let key = self.dir.path().join("id_ed25519");
                cmd.args(["-i", key.to_str().expect("utf-8")]);
            }
            cmd.args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]);
        }
        cmd.args(extra_args);
        cmd.arg(format!("{user}@127.0.0.1"));
        cmd.arg("true");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }
}

impl Drop for LoginHost {
    fn drop(&mut self) {
        if let Some(mut sshd) = self.sshd.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &sshd.id().to_string()])
                .status();
            let _ = sshd.wait();
        }
        // userdel refuses while a process of the user still exits; retry for a while.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Command::new("id")
            .arg(&self.user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && Instant::now() < deadline
        {
            let _ = Command::new("userdel")
                .args(["-r", &self.user])
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.made_run_sshd {
            let _ = std::fs::remove_dir("/run/sshd");
        }
    }
}

/// One login attempt and what identifies its events.
struct Attempt {
    what: &'static str,
    /// The pid that writes the attempt's records (sshd's per-connection process, or the
    /// local program).
    pid: i64,
}

/// Run one ssh attempt; returns the pid of the sshd process that served it (the one new
/// `sshd -R` ProcessCreate whose parent is our sshd).
fn ssh_attempt(
    m: &Module,
    host: &LoginHost,
    known: &mut BTreeSet<i64>,
    mut cmd: Command,
    should_succeed: bool,
    what: &str,
) -> i64 {
    let out = cmd.output().expect("run ssh");
    assert_eq!(
        out.status.success(),
        should_succeed,
        "{what}: ssh exited {}: {}\nsshd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        host.sshd_log()
    );
    let sshd = host.sshd_pid();
    let ev = m
        .wait_event(Duration::from_secs(15), |e| {
            name(e) == "ProcessCreate"
                && payload(e)["ParentProcessId"].as_i64() == Some(sshd)
                && !known.contains(&pid_of(e))
        })
        .unwrap_or_else(|| panic!("{what}: no ProcessCreate of sshd's per-connection process"));
    let pid = pid_of(&ev);
    known.insert(pid);
    pid
}

fn run_local(cmd: &mut Command, stdin: &str, should_succeed: bool) -> i64 {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = i64::from(child.id());
    {
        let mut si = child.stdin.take().expect("stdin");
        let _ = si.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.success(),
        should_succeed,
        "{cmd:?}: exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    pid
}

#[test]
fn logins_ssh_su_pamtester_sudo() {
    let _serial = serial();
    let host = LoginHost::new();
    let user = host.user.clone();
    let uid = host.uid.clone();
    let bad_user = format!("aiosnouser{}", harness::nonce(3));
    let sshd = host.sshd_pid();
    let host_port = host.port;
    let t0 = SystemTime::now();

    let m = Module::start(&[]);
    let mut known = BTreeSet::new();
    let mut attempts = Vec::new();
    let mut ssh = |what: &'static str, cmd: Command, ok: bool, attempts: &mut Vec<Attempt>| {
        let pid = ssh_attempt(&m, &host, &mut known, cmd, ok, what);
        attempts.push(Attempt { what, pid });
        pid
    };
    let wrong_pw = ssh(
        "ssh wrong password",
        host.ssh(&user, Some("wrong-password"), &[]),
        false,
        &mut attempts,
    );
    let invalid = ssh(
        "ssh invalid user",
        host.ssh(&bad_user, Some("wrong-password"), &[]),
        false,
        &mut attempts,
    );
    let right_pw = ssh(
        "ssh right password",
        host.ssh(&user, Some(PASSWORD), &[]),
        true,
        &mut attempts,
    );
    let key = ssh("ssh key", host.ssh(&user, None, &[]), true, &mut attempts);
    let key_tty = ssh(
        "ssh -tt key",
        host.ssh(&user, None, &["-tt"]),
        true,
        &mut attempts,
    );
    let pw_tty = ssh(
        "ssh -tt right password",
        host.ssh(&user, Some(PASSWORD), &["-tt"]),
        true,
        &mut attempts,
    );
    let other_key = host.dir.path().join("other_ed25519");
    let wrong_key = ssh(
        "ssh wrong key",
        host.ssh(&user, None, &["-i", other_key.to_str().expect("utf-8")]),
        false,
        &mut attempts,
    );
    let su = run_local(
        Command::new("su").args(["-", &user, "-c", "true"]),
        "",
        true,
    );
    let pam_ok = run_local(
        Command::new("pamtester").args(["login", &user, "authenticate"]),
        &format!("{PASSWORD}\n"),
        true,
    );
    let pam_bad = run_local(
        Command::new("pamtester").args(["login", &user, "authenticate"]),
        "wrong-password\n",
        false,
    );
    let sudo = run_local(Command::new("sudo").args(["-u", &user, "id"]), "", true);
    let fin = m.finish();
    drop(host);
    assert!(
        !harness::output("id", &[&user]).status.success(),
        "the test user {user} was not removed"
    );

    let logins_of = |pid: i64| fin.select(|e| name(e) == "Login" && pid_of(e) == pid);
    let all_sshd_children: BTreeSet<i64> = fin
        .select(|e| {
            name(e) == "ProcessCreate" && payload(e)["ParentProcessId"].as_i64() == Some(sshd)
        })
        .iter()
        .map(|e| pid_of(e))
        .collect();
    assert_eq!(
        all_sshd_children,
        attempts.iter().map(|a| a.pid).collect(),
        "one sshd process per ssh attempt: {:?}",
        attempts.iter().map(|a| (a.what, a.pid)).collect::<Vec<_>>()
    );
    for e in fin.select(|e| name(e) == "Login") {
        assert_recent(e, t0);
    }

    // Common checks of one Login.
    let check = |what: &str,
                 pid: i64,
                 exe: &str,
                 result: &str,
                 op: &str,
                 user_name: Option<&str>,
                 remote: Option<&str>|
     -> Value {
        let ev = only(
            &format!("Login of {what} (pid {pid})"),
            logins_of(pid),
            &fin,
        );
        let p = payload(ev);
        assert_eq!(field(ev, "Executable"), exe, "{what}: {ev}");
        assert_eq!(field(ev, "Result"), result, "{what}: {ev}");
        assert_eq!(field(ev, "Operation"), op, "{what}: {ev}");
        assert_eq!(p["UserName"].as_str(), user_name, "{what}: {ev}");
        assert_eq!(p["RemoteAddress"].as_str(), remote, "{what}: {ev}");
        ev.clone()
    };
    let lo = Some("127.0.0.1");
    let sshd_exe = "/usr/sbin/sshd";

    // Wrong password: USER_AUTH res=failed, then a USER_LOGIN res=failed summary: one Fail.
    let ev = check(
        "ssh wrong password",
        wrong_pw,
        sshd_exe,
        "Fail",
        "PAM:authentication",
        Some(&user),
        lo,
    );
    assert_eq!(extra(&ev, "RecordType"), Some("USER_AUTH"));

    // Invalid user: sshd writes USER_LOGIN acct="(invalid user)" res=failed (several times)
    // and PAM's USER_AUTH acct="<the name tried>" res=failed: one attempt, one Fail.
    let ev = only(
        "Login of the invalid-user attempt",
        logins_of(invalid),
        &fin,
    );
    assert_eq!(field(ev, "Result"), "Fail", "{ev}");
    assert_eq!(field(ev, "Executable"), sshd_exe, "{ev}");
    assert_eq!(field(ev, "RemoteAddress"), "127.0.0.1", "{ev}");
    assert_eq!(field(ev, "Operation"), "PAM:authentication", "{ev}");
    assert_eq!(field(ev, "UserName"), bad_user, "{ev}");
    // sshd's own summary says the account does not exist.
    assert_eq!(extra(ev, "InvalidUser"), Some("true"), "{ev}");

    // Right password: USER_AUTH res=success (then USER_START, no USER_LOGIN without a tty).
    let ev = check(
        "ssh right password",
        right_pw,
        sshd_exe,
        "Success",
        "PAM:authentication",
        Some(&user),
        lo,
    );
    assert_eq!(extra(&ev, "RecordType"), Some("USER_AUTH"));

    // Key, no tty: no USER_AUTH and no USER_LOGIN; the USER_START of the session is the login.
    let ev = check(
        "ssh key",
        key,
        sshd_exe,
        "Success",
        "PAM:session_open",
        Some(&user),
        lo,
    );
    assert_eq!(extra(&ev, "RecordType"), Some("USER_START"));
    assert_eq!(extra(&ev, "AuditUserId"), Some(uid.as_str()), "{ev}");

    // Key with a tty: USER_START and USER_LOGIN op=login id=<uid>: one login, not two.
    let ev = only("Login of ssh -tt", logins_of(key_tty), &fin);
    assert_eq!(field(ev, "Result"), "Success", "{ev}");
    assert_eq!(field(ev, "Executable"), sshd_exe, "{ev}");
    assert_eq!(field(ev, "RemoteAddress"), "127.0.0.1", "{ev}");
    assert_eq!(field(ev, "Operation"), "login", "{ev}");
    assert_eq!(field(ev, "UserId"), uid, "{ev}");
    assert_eq!(extra(ev, "RecordType"), Some("USER_LOGIN"), "{ev}");
    assert_eq!(extra(ev, "AuditUserId"), Some(uid.as_str()), "{ev}");
    assert!(
        extra(ev, "Terminal").is_some_and(|t| t.starts_with("/dev/pts/")),
        "{ev}"
    );

    // Password with a tty: USER_AUTH res=success, USER_START, USER_LOGIN: one login.
    let ev = check(
        "ssh -tt right password",
        pw_tty,
        sshd_exe,
        "Success",
        "PAM:authentication",
        Some(&user),
        lo,
    );
    assert_eq!(extra(&ev, "RecordType"), Some("USER_AUTH"));

    // A key the user does not authorize: public key authentication does not go through PAM,
    // so there is no USER_AUTH; sshd writes USER_LOGIN res=failed when the client gives up.
    let ev = check(
        "ssh wrong key",
        wrong_key,
        sshd_exe,
        "Fail",
        "login",
        Some(&user),
        lo,
    );
    assert_eq!(extra(&ev, "RecordType"), Some("USER_LOGIN"), "{ev}");

    // The ssh connections themselves: each client's connect (ssh connects non-blocking) and
    // sshd's accept of it.
    let port = host_port.to_string();
    let ssh_exe = canonical("/usr/bin/ssh");
    let outs = fin.select(|e| {
        name(e) == "ConnectionCreate"
            && field(e, "Direction") == "Out"
            && field(e, "Executable") == ssh_exe
            && field(e, "RemotePort") == port
    });
    let ins = fin.select(|e| {
        name(e) == "ConnectionCreate" && field(e, "Direction") == "In" && pid_of(e) == sshd
    });
    assert_eq!(outs.len(), attempts.len(), "ssh connects: {outs:#?}");
    assert_eq!(ins.len(), attempts.len(), "sshd accepts: {ins:#?}");
    for e in &outs {
        assert_eq!(field(e, "RemoteAddress"), "127.0.0.1", "{e}");
        assert_eq!(field(e, "Protocol"), "TCP", "{e}");
        assert_eq!(extra(e, "Status"), Some("InProgress"), "{e}");
        assert!(
            field(e, "CommandLine").starts_with("ssh -F /dev/null -p "),
            "{e}"
        );
    }
    for e in &ins {
        assert_eq!(field(e, "RemoteAddress"), "127.0.0.1", "{e}");
        assert_eq!(field(e, "Protocol"), "TCP", "{e}");
        assert_eq!(field(e, "Executable"), sshd_exe, "{e}");
        assert_eq!(extra(e, "Status"), None, "{e}");
    }
    let client_ports: BTreeSet<&str> = ins.iter().map(|e| field(e, "RemotePort")).collect();
    assert_eq!(client_ports.len(), attempts.len(), "{ins:#?}");

    // su as root: pam_rootok's USER_AUTH res=success.
    let ev = check(
        "su",
        su,
        &canonical("/bin/su"),
        "Success",
        "PAM:authentication",
        Some(&user),
        None,
    );
    assert_eq!(extra(&ev, "RecordType"), Some("USER_AUTH"));

    // pamtester, right and wrong password.
    check(
        "pamtester right password",
        pam_ok,
        "/usr/bin/pamtester",
        "Success",
        "PAM:authentication",
        Some(&user),
        None,
    );
    check(
        "pamtester wrong password",
        pam_bad,
        "/usr/bin/pamtester",
        "Fail",
        "PAM:authentication",
        Some(&user),
        None,
    );

    // sudo is no login.
    assert!(logins_of(sudo).is_empty(), "sudo gave a Login");
    assert!(
        fin.select(|e| name(e) == "Login" && field(e, "Executable").ends_with("/sudo"))
            .is_empty(),
        "a Login from sudo"
    );

    // The processes of the sessions run as the user, with the user's name.
    let (my_auid, _) = my_audit_ids();
    let children_of = |ppid: i64| {
        fin.select(|e| {
            name(e) == "ProcessCreate" && payload(e)["ParentProcessId"].as_i64() == Some(ppid)
        })
    };
    let as_user = |e: &Value, cl: &str, exe: &str, auid: &str| {
        assert_eq!(field(e, "CommandLine"), cl, "{e}");
        assert_eq!(field(e, "Executable"), exe, "{e}");
        assert_eq!(field(e, "UserId"), uid, "{e}");
        assert_eq!(field(e, "UserName"), user, "{e}");
        assert_eq!(extra(e, "AuditUserId"), Some(auid), "{e}");
    };
    let bash = canonical("/bin/bash");
    // sudo -u: the command runs as the user; the audit user stays this process's.
    let ev = only("ProcessCreate of sudo's id", children_of(sudo), &fin);
    as_user(ev, "id", &canonical("/usr/bin/id"), &my_auid);
    // su - user -c true: a login shell as the user (which may run more from its profile).
    let ev = *children_of(su).first().expect("su started no shell");
    as_user(ev, "-bash -c true", &bash, &my_auid);
    // The four ssh logins that got in ran `true` in the user's shell, with the user's audit
    // user id (pam_loginuid).
    let shells = fin.select(|e| {
        name(e) == "ProcessCreate"
            && field(e, "CommandLine") == "bash -c true"
            && field(e, "UserName") == user
    });
    assert_eq!(shells.len(), 4, "{shells:#?}");
    for e in shells {
        as_user(e, "bash -c true", &bash, &uid);
    }

    // MODULE BUG (asserted last, so that everything above is checked first): the Login of a
    // key login with a tty names no user. It comes from `USER_LOGIN op=login id=<uid>`, which
    // has no acct=, while the same sshd pid's USER_START (held by the tracker when the
    // USER_LOGIN arrives, and dropped for it) has acct="<user>". Every other successful
    // login (password with or without a tty, key without a tty) carries UserName; this one
    // only UserId, so a consumer counting logins by user name misses every interactive key
    // login.
    let ev = only("Login of ssh -tt", logins_of(key_tty), &fin);
    assert_eq!(
        payload(ev)["UserName"].as_str(),
        Some(user.as_str()),
        "ssh -tt key login without the user's name (its USER_START said acct=\"{user}\"): {ev}"
    );
}

// ------------------------------------------------------------------------------------------
// 5. pause: the reader keeps draining auditd while the pipeline stalls

fn auditd_state() -> BTreeMap<String, String> {
    run_ok("auditctl", &["--signal", "cont"]);
    // auditd writes the file when it handles the signal; wait for a fresh one.
    let path = Path::new("/var/run/auditd.state");
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = SystemTime::now() - Duration::from_millis(1);
    loop {
        let fresh = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= before - Duration::from_secs(1));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if fresh && text.contains("plugin queue overflow detected") {
            return text
                .lines()
                .filter_map(|l| l.split_once(" = "))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "auditd did not write {} after SIGCONT",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The kernel's count of lost audit records (`auditctl -s`).
fn kernel_lost() -> u64 {
    run_ok("auditctl", &["-s"])
        .lines()
        .find_map(|l| l.strip_prefix("lost "))
        .and_then(|n| n.trim().parse().ok())
        .expect("lost in auditctl -s")
}

#[test]
fn paused_pipeline_drops_in_the_module_not_in_auditd() {
    let _serial = serial();
    let state = auditd_state();
    assert_eq!(
        state
            .get("plugin queue overflow detected")
            .map(String::as_str),
        Some("no"),
        "auditd's plugin queue already overflowed before this test (the flag stays set until \
         auditd restarts: scripts/setup-host.sh --stop && scripts/setup-host.sh): {state:?}"
    );
    let lost_before = kernel_lost();
    let token = format!("azureiotsecurity-load-{}", harness::nonce(6));
    let pause_ms: u64 = 10_000;
    let mut after_ms: u64 = 4_000;
    let pause_s = pause_ms.to_string();
    // Start the module; the pause must begin after the begin marker was seen, else retry
    // with a later pause.
    let m = loop {
        let after_s = after_ms.to_string();
        let m = Module::start(&[
            ("AZUREIOTSECURITY_DEBUG__PAUSE_PIPELINE_AFTER_MS", &after_s),
            ("AZUREIOTSECURITY_DEBUG__PAUSE_PIPELINE_MS", &pause_s),
            ("AZUREIOTSECURITY_AUDIT__QUEUE_MAX_BYTES", "2000000"),
        ]);
        if !m.stderr().contains("pipeline paused") {
            break m;
        }
        assert!(
            after_ms < 30_000,
            "the module never saw its marker before the pause"
        );
        drop(m);
        after_ms *= 2;
    };
    assert!(
        m.wait_log(Duration::from_millis(after_ms + 10_000), "pipeline paused"),
        "the pipeline did not pause:\n{}",
        m.stderr()
    );
    // Exec load from now until 1.5 s after the pipeline resumed.
    let mut spawned: Vec<(i64, u64)> = Vec::new();
    let mut resumed_at: Option<Instant> = None;
    let load_start = Instant::now();
    for n in 0u64.. {
        let mut c = Command::new("/bin/true");
        c.arg(&token).arg(n.to_string());
        let mut child = spawn_quiet(&mut c);
        spawned.push((i64::from(child.id()), n));
        assert!(child.wait().expect("wait").success());
        if n % 64 == 0 {
            if resumed_at.is_none() && m.stderr().contains("pipeline resumed") {
                resumed_at = Some(Instant::now());
            }
            if resumed_at.is_some_and(|t| t.elapsed() > Duration::from_millis(1500)) {
                break;
            }
            assert!(
                load_start.elapsed() < Duration::from_millis(pause_ms + 20_000),
                "the pipeline did not resume:\n{}",
                m.stderr()
            );
        }
    }
    let load_secs = load_start.elapsed().as_secs_f64();
    let fin = m.finish();
    let state = auditd_state();
    let lost_after = kernel_lost();

    let by_pid: BTreeMap<i64, u64> = spawned.iter().copied().collect();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    for e in fin.select(|e| {
        name(e) == "ProcessCreate" && payload(e)["ParentProcessId"].as_i64() == Some(my_pid())
    }) {
        let Some(&n) = by_pid.get(&pid_of(e)) else {
            continue;
        };
        assert_eq!(
            field(e, "CommandLine"),
            format!("/bin/true {token} {n}"),
            "{e}"
        );
        assert!(seen.insert(n), "exec {n} reported twice");
    }
    let execs = spawned.len() as u64;
    let missing = execs - seen.len() as u64;
    let dropped = fin.stat("lines_dropped_queue_full");
    let read = fin.stat("lines_read");
    eprintln!(
        "pause: {execs} execs in {load_secs:.1} s, {} reported, {missing} missing; module: \
         lines_read={read} lines_dropped_queue_full={dropped}; auditd: max plugin queue depth \
         used = {:?}",
        seen.len(),
        state.get("max plugin queue depth used")
    );

    // auditd never had to drop for us: its plugin queue did not overflow.
    assert_eq!(
        state
            .get("plugin queue overflow detected")
            .map(String::as_str),
        Some("no"),
        "auditd's plugin queue overflowed: {state:?}"
    );
    // Nor did the kernel (with a backlog wait time it blocks rather than drops).
    assert_eq!(lost_after, lost_before, "the kernel lost audit records");
    let depth: u64 = state["max plugin queue depth used"].parse().expect("depth");
    let size: u64 = state["plugin queue size"].parse().expect("size");
    assert!(
        depth < size,
        "plugin queue depth {depth} reached its size {size}"
    );
    // The module dropped, in its own queue, and counted it.
    assert!(
        fin.stderr.contains("pipeline behind: audit lines dropped"),
        "no drop warning:\n{}",
        fin.stderr
    );
    assert!(dropped > 0, "nothing dropped: {:?}", fin.stats);
    assert!(
        missing > 0,
        "every exec was reported although the queue overflowed"
    );
    // Every exec lost cost at least one dropped line (its SYSCALL or EXECVE record).
    assert!(
        missing <= dropped,
        "{missing} execs missing but only {dropped} lines dropped"
    );
    assert!(dropped < read, "{dropped} dropped of {read} read");
    // An exec event is about 8 records (SYSCALL, BPRM_FCAPS, EXECVE, CWD, PATH x2, PROCTITLE,
    // EOE) and the reader drops whole chunks of lines: the lines dropped account for the
    // execs missing (other processes' records only add to the lines), and the lines kept
    // for the execs reported.
    assert!(
        dropped >= 4 * missing,
        "{missing} execs missing, but only {dropped} lines dropped"
    );
    assert!(
        read - dropped >= 6 * seen.len() as u64,
        "{} execs reported from only {} lines kept",
        seen.len(),
        read - dropped
    );
    // The first execs (queued before the queue filled) and the last ones (after the pipeline
    // resumed) are all there.
    assert!(seen.contains(&0), "the first exec is missing");
    assert!(seen.contains(&(execs - 1)), "the last exec is missing");

    // MODULE BUG (asserted last): the serial-gap loss estimate, logged as
    // `estimated_kernel_loss`, counts the events the module itself dropped in its own queue
    // (already counted as lines_dropped_queue_full) as lost upstream. Here nothing was lost
    // upstream: the kernel's lost counter did not move and auditd's plugin queue did not
    // overflow. So the estimate must be 0 (or what the kernel lost), not about `missing`.
    let estimated = fin.stat("estimated_kernel_loss");
    assert!(
        estimated <= lost_after - lost_before,
        "estimated_kernel_loss = {estimated} although the kernel lost {} and auditd's plugin \
         queue did not overflow: it counts the module's own queue drops ({dropped} lines, \
         {missing} execs) a second time",
        lost_after - lost_before
    );
}

// ------------------------------------------------------------------------------------------
// `run` as the README shows it: messages, in try-out mode, within a minute.
// ------------------------------------------------------------------------------------------

/// Kills a child on drop (a failing assertion must not leave the module running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_prints_valid_messages_within_a_minute() {
    let _lock = serial();
    harness::require_auditd();
    let data = tempfile::tempdir().expect("data dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
        .arg("run")
        .env("TZ", "UTC")
        .env("AZUREIOTSECURITY_MODULE__TRYOUT", "true")
        .env("AZUREIOTSECURITY_MODULE__DATA_DIR", data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the module");
    let stdout = child.stdout.take().expect("stdout");
    let mut guard = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let token = harness::nonce(8);
    let marker = format!("azureiotsecurity-message-marker-{token}");
    let start = Instant::now();
    let mut messages = Vec::new();
    let mut found = None;
    // Keep running the marker until it arrives in a message (the first execs may be lost
    // while auditd discovers that a previous client left).
    while start.elapsed() < Duration::from_secs(90) && found.is_none() {
        let _ = Command::new("/bin/true").arg(&marker).status();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            if line.contains(&marker) {
                found = Some(start.elapsed());
            }
            messages.push(line);
        }
    }
    let Some(after) = found else {
        panic!(
            "no message with the marker within 90 s; got {} messages",
            messages.len()
        );
    };
    assert!(
        after < Duration::from_secs(75),
        "first marker message after {after:?}"
    );
    // SIGTERM: the rest is flushed and the module exits 0.
    let pid = guard.0.id().to_string();
    run_ok("kill", &["-TERM", &pid]);
    let status = guard.0.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        messages.push(line);
    }
    // The AgentId was created in the data directory and is in every message.
    let agent_id = std::fs::read_to_string(data.path().join("agent_id")).expect("agent_id file");
    let agent_id = agent_id.trim();
    let mut names = BTreeSet::new();
    for m in &messages {
        let v: Value = serde_json::from_str(m).expect("a message is JSON");
        assert_eq!(v["AgentId"], agent_id);
        for e in v["Events"].as_array().expect("Events") {
            names.insert(e["Name"].as_str().unwrap_or("").to_string());
        }
        assert!(m.len() <= 204_800);
    }
    // The marker exec, aggregated (try-out windows are 15 s), and the statistics of the
    // final period.
    let marker_event = messages
        .iter()
        .flat_map(|m| {
            let v: Value = serde_json::from_str(m).unwrap();
            v["Events"].as_array().unwrap().clone()
        })
        .find(|e| e["Payload"][0]["CommandLine"] == format!("/bin/true {marker}"))
        .expect("the marker's ProcessCreate");
    assert_eq!(marker_event["Category"], "Triggered");
    let hits: u64 = marker_event["Payload"][0]["ExtraDetails"]["HitCount"]
        .as_str()
        .expect("HitCount")
        .parse()
        .expect("a number");
    assert!(hits >= 1);
    assert!(names.contains("MessageStatistics"), "{names:?}");
    assert!(names.contains("DroppedEventsStatistics"), "{names:?}");
    for (m, v) in messages.iter().zip(support::reference_validate(&messages)) {
        assert_eq!(v, "ok", "{}", &m[..m.len().min(300)]);
    }
    // The module's own validator agrees.
    let input = messages.join("\n") + "\n";
    let (code, out, err) = support::run_bin(&["validate", "-"], input.as_bytes());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().filter(|l| *l == "ok").count(), messages.len());
}

// ------------------------------------------------------------------------------------------
// 6. auditd restarts under the running module
// ------------------------------------------------------------------------------------------

/// auditd re-creates its socket (a new inode) on every start; the module, reading it by path,
/// reconnects with back-off and events flow again without restarting it. This is why the
/// container binds the directory `/run/audit` and not the socket file: a file bind would keep
/// the old inode, which nobody listens on any more.
///
/// What is counted across the restart: a connection that ends mid-line (`partial_lines`),
/// lines dropped in the module's queue (`lines_dropped_queue_full`), each connection
/// (`audit_connects`), and gaps in the kernel's serials (`estimated_kernel_loss`). What is not
/// counted by the module: records auditd 3.0.9's plugin discarded while no client was
/// connected (between auditd's start and the module's reconnect) show only as such a serial
/// gap, and the kernel's own losses while no auditd runs are in `auditctl -s` (`lost`), which
/// this test checks did not move.
#[test]
fn auditd_restart_reconnects_without_restarting_the_module() {
    let _serial = serial();
    harness::require_auditd();
    let lost_before = kernel_lost();
    let inode_before = harness::socket_inode();
    let mut m = Module::start(&[]);
    let module_pid = m.pid().expect("the module runs");
    let before = format!(
        "/bin/true azureiotsecurity-before-restart-{}",
        harness::nonce(6)
    );
    run_ok("/bin/true", &[before.trim_start_matches("/bin/true ")]);
    assert!(
        m.wait_event(Duration::from_secs(30), |e| harness::is_exec_of(e, &before))
            .is_some(),
        "the exec before the restart was not reported:\n{}",
        m.stderr()
    );

    // The module has been connected for a while when auditd restarts under it, as in the
    // field: a connection that ends within a second (`STABLE_CONNECTION`) counts as flapping
    // instead (W-AUDIT-FLAPPING, with back-off), which is not what this test is about.
    std::thread::sleep(Duration::from_secs(2));
    harness::restart_auditd();
    let inode_after = harness::socket_inode();
    assert_ne!(
        inode_after,
        inode_before,
        "auditd's restart did not re-create {} (same inode)",
        harness::SOCKET
    );
    assert!(
        m.wait_log(Duration::from_secs(30), "E-AUDIT-CLOSED"),
        "the module did not notice that auditd went away:\n{}",
        m.stderr()
    );

    // A program run after the restart reaches the same module process (the marker is run
    // until the module reports it: the first records after auditd's start may go before the
    // module has reconnected).
    m.wait_marker("after-restart");
    assert_eq!(m.pid(), Some(module_pid), "the module was restarted");
    let after = m.marker("after-restart");
    let fin = m.finish();

    // Two connections that lasted, the one before and the one after the restart. auditd may
    // re-create its socket once more while it starts (seen once in several runs right after
    // another restart): a connection to that one ends at once and counts as short, so the
    // count is two plus the short ones.
    let connects = fin.stat("audit_connects");
    let short = fin.stat("short_connections");
    assert_eq!(connects - short, 2, "{:?}\n{}", fin.stats, fin.stderr);
    // auditd stops between records: no line was cut off, and none was dropped in the module.
    assert_eq!(fin.stat("partial_lines"), 0, "{:?}", fin.stats);
    assert_eq!(fin.stat("lines_dropped_queue_full"), 0, "{:?}", fin.stats);
    assert_eq!(
        fin.stderr.matches("E-AUDIT-CLOSED").count(),
        1,
        "one closed connection expected:\n{}",
        fin.stderr
    );
    // Both execs, once each.
    assert_eq!(fin.select(|e| harness::is_exec_of(e, &before)).len(), 1);
    assert_eq!(fin.select(|e| harness::is_exec_of(e, &after)).len(), 1);
    assert_eq!(kernel_lost(), lost_before, "the kernel lost audit records");
    eprintln!(
        "restart: socket inode {inode_before} -> {inode_after}; estimated_kernel_loss = {} (records \
         auditd handled while no client was connected)",
        fin.stat("estimated_kernel_loss")
    );
}

/// Unmounts a bind mount on drop.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The contrast: a bind of the socket *file* (what the deployment did before the socket had
/// its own directory) keeps the old inode across auditd's restart, and the module never hears
/// from auditd again: it is refused, reconnects to the dead inode forever, and a program run
/// after the restart is never reported. (A bind mount here stands in for the container's.)
#[test]
fn a_bind_of_the_socket_file_goes_stale_on_auditd_restart() {
    let _serial = serial();
    harness::require_auditd();
    let dir = tempfile::tempdir().expect("tempdir");
    let bound = dir.path().join("audispd_events");
    std::fs::write(&bound, b"").expect("mount point");
    let bound_s = bound.to_str().expect("utf-8 path").to_string();
    run_ok("mount", &["--bind", harness::SOCKET, &bound_s]);
    let _mount = BindMount(bound.clone());
    let m = Module::start(&[("AZUREIOTSECURITY_AUDIT__SOCKET_PATH", &bound_s)]);
    // Connected for longer than a flapping connection (see the test above).
    std::thread::sleep(Duration::from_secs(2));
    harness::restart_auditd();
    assert!(
        m.wait_log(Duration::from_secs(30), "E-AUDIT-REFUSED"),
        "the module was not refused by the stale socket:\n{}",
        m.stderr()
    );
    let after = format!("/bin/true azureiotsecurity-stale-{}", harness::nonce(6));
    for _ in 0..10 {
        run_ok("/bin/true", &[after.trim_start_matches("/bin/true ")]);
        assert!(
            m.wait_event(Duration::from_millis(500), |e| harness::is_exec_of(
                e, &after
            ))
            .is_none(),
            "an exec after the restart arrived through the stale file bind:\n{}",
            m.stderr()
        );
    }
    let log = m.stderr();
    // Once refused, the module never connects again: the bind still names the dead inode.
    // (Between auditd's stop and the refusal it may connect once more to the old listener
    // while auditd shuts down; that connection is reset at once — W-AUDIT-FLAPPING — and
    // carries nothing. CI saw it: a count of "connected" lines is not the claim.)
    let refused_at = log.find("E-AUDIT-REFUSED").expect("refused above");
    let refused_line = log[..refused_at].rfind('\n').map_or(0, |i| i + 1);
    assert_eq!(
        log[refused_line..]
            .matches("connected to auditd's af_unix socket")
            .count(),
        0,
        "the module reconnected through a stale file bind:\n{log}"
    );
    assert!(
        log.contains("connected to auditd's af_unix socket"),
        "{log}"
    );
    assert!(m.pid().is_some());
    drop(m);
}
