//! Stand-ins for IoT Edge, as child processes: the edgeHub stand-in (Qpid Proton, Debian's
//! python3-qpid-proton under /usr/bin/python3), the workload API stand-in (Python standard
//! library), test certificates (openssl), the official Node.js SDK as a reference client,
//! and the module binary itself. Each records what it saw as JSON lines; the tests assert on
//! those. A missing Python, Proton, openssl or Node fails the test (never skips it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::root;

/// Debian's Python, which has python3-qpid-proton (TLS built in).
pub const PYTHON: &str = "/usr/bin/python3";

fn standin(name: &str) -> PathBuf {
    root().join("tests/standin").join(name)
}

/// A test CA and a server certificate for `localhost` signed by it.
pub struct Certs {
    pub ca: PathBuf,
    pub chain: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn make(dir: &Path) -> Certs {
        let st = Command::new("bash")
            .arg(standin("make_certs.sh"))
            .arg(dir)
            .status()
            .expect("run make_certs.sh (needs openssl: run .ci/run)");
        assert!(st.success(), "make_certs.sh failed");
        Certs {
            ca: dir.join("ca.pem"),
            chain: dir.join("server-chain.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// A child process killed (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Start `cmd` and wait for its first stdout line to start with `READY`; returns the rest.
fn start_ready(name: &'static str, mut cmd: Command) -> (Proc, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {name} stand-in: {e} (run .ci/run)"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the {name} stand-in did not say READY within 20 s"));
    let rest = line
        .trim()
        .strip_prefix("READY")
        .unwrap_or_else(|| {
            panic!(
                "the {name} stand-in said {line:?}, not READY (is python3-qpid-proton installed?)"
            )
        })
        .trim()
        .to_owned();
    (Proc { child, name }, rest)
}

pub struct Workload {
    pub proc: Proc,
    pub socket: PathBuf,
    pub record: PathBuf,
}

impl Workload {
    pub fn start(
        dir: &Path,
        key_b64: &str,
        module: &str,
        generation_id: &str,
        trust_bundle: &Path,
    ) -> Workload {
        let socket = dir.join("workload.sock");
        let record = dir.join("workload.jsonl");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(standin("workload.py"))
            .arg("--socket")
            .arg(&socket)
            .args(["--module-key-base64", key_b64, "--module", module])
            .args(["--generation-id", generation_id])
            .arg("--trust-bundle")
            .arg(trust_bundle)
            .arg("--record")
            .arg(&record);
        let (proc, _) = start_ready("workload", cmd);
        Workload {
            proc,
            socket,
            record,
        }
    }

    pub fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

#[derive(Debug, Clone)]
pub struct EdgeHubOptions {
    pub port: u16,
    pub key_b64: String,
    pub hub: String,
    pub device: String,
    pub module: String,
    pub outcomes: Vec<&'static str>,
    pub clock_skew_secs: i64,
}

pub struct EdgeHub {
    pub proc: Proc,
    pub port: u16,
    pub record: PathBuf,
}

impl EdgeHub {
    pub fn start(dir: &Path, certs: &Certs, o: &EdgeHubOptions) -> EdgeHub {
        let record = dir.join(format!("edgehub-{}.jsonl", o.port));
        let mut cmd = Command::new(PYTHON);
        cmd.arg(standin("edgehub.py"))
            .args(["--port", &o.port.to_string()])
            .arg("--cert")
            .arg(&certs.chain)
            .arg("--key")
            .arg(&certs.key)
            .args(["--module-key-base64", &o.key_b64, "--hub", &o.hub])
            .args(["--device", &o.device, "--module", &o.module])
            .args(["--outcomes", &o.outcomes.join(",")])
            .args(["--clock-skew-secs", &o.clock_skew_secs.to_string()])
            .arg("--record")
            .arg(&record);
        let (proc, rest) = start_ready("edgeHub", cmd);
        let port = rest.parse().expect("READY <port>");
        EdgeHub { proc, port, record }
    }

    pub fn records(&self) -> Vec<Value> {
        records(&self.record)
    }

    /// Records of `kind` on connection `conn`.
    pub fn of(&self, kind: &str, conn: Option<u64>) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["kind"] == kind && conn.is_none_or(|c| r["conn"] == c))
            .collect()
    }

    /// Wait until `f(records)` holds.
    pub fn wait(&self, what: &str, limit: Duration, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let r = self.records();
            if f(&r) {
                return r;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; records: {r:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn records(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a stand-in record is JSON"))
        .collect()
}

/// The IoT Edge environment edgeAgent gives a module, pointing at the stand-ins.
pub fn edge_env(
    workload: &Workload,
    hub: &str,
    device: &str,
    module: &str,
    port: u16,
) -> Vec<(String, String)> {
    [
        ("IOTEDGE_WORKLOADURI", workload.uri()),
        ("IOTEDGE_DEVICEID", device.to_owned()),
        ("IOTEDGE_MODULEID", module.to_owned()),
        ("IOTEDGE_MODULEGENERATIONID", "g1".to_owned()),
        ("IOTEDGE_IOTHUBHOSTNAME", hub.to_owned()),
        ("IOTEDGE_GATEWAYHOSTNAME", format!("localhost:{port}")),
        ("IOTEDGE_AUTHSCHEME", "sasToken".to_owned()),
        ("IOTEDGE_APIVERSION", "2018-06-28".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Send one security message with the official Node.js SDK (tests/standin/node/send.js).
pub fn node_send(env: &[(String, String)], body: &str, message_id: &str) -> std::process::Output {
    let dir = root().join("tests/standin/node");
    assert!(
        dir.join("node_modules/azure-iot-device-amqp").is_dir(),
        "the Node SDK is not installed in tests/standin/node (run .ci/run)"
    );
    Command::new("node")
        .current_dir(&dir)
        .arg("send.js")
        .args([body, message_id])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run node (install nodejs: run .ci/run)")
}

/// The module binary, with its stdout and stderr in files.
pub struct Module {
    pub proc: Proc,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl Module {
    pub fn start(dir: &Path, tag: &str, env: &[(String, String)], args: &[&str]) -> Module {
        let out = dir.join(format!("module-{tag}.out"));
        let err = dir.join(format!("module-{tag}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_azureiotsecurity"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("RuntimeLogLevel")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("start the module");
        Module {
            proc: Proc {
                child,
                name: "module",
            },
            out,
            err,
        }
    }

    /// SIGTERM, and the exit status within `limit`.
    pub fn stop(&mut self, limit: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.proc.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(st) = self.proc.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                start.elapsed() < limit,
                "the module did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.proc.child.try_wait().ok().flatten().is_none()
    }

    /// Everything it wrote, stdout and stderr.
    pub fn output(&self) -> String {
        let mut s = std::fs::read_to_string(&self.out).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(&self.err).unwrap_or_default());
        s
    }
}
