//! Stand-ins for IoT Edge, as child processes: the edgeHub stand-in (Qpid Proton,
//! python-qpid-proton built with TLS into the repository's `.venv`), the workload API stand-in
//! (Python standard library), the official Node.js SDK as a
//! reference client, and the module binary itself. Each stand-in records what it saw as JSON
//! lines; the tests assert on those. A missing Python, Proton (or one without TLS)
//! or Node fails the test with what to run (never skips it). `scripts/install-test-deps.sh`
//! installs them all.
//!
//! Records of the edgeHub stand-in (tests/standin/edgehub.py), one JSON object a line, each
//! with `kind`, `conn` (1, 2, … per accepted connection) and `time` (Unix seconds, float):
//! * `connection`: `sasl` ("ANONYMOUS" or null = no SASL layer), `sasl_outcome`,
//!   `tls_protocol`, `hostname` (Open), `container_id`, `idle_timeout_ms` (null when absent
//!   or 0), `max_frame_size`, `channel_max`, `properties` (typed map, below),
//!   `offered_capabilities`, `desired_capabilities`.
//! * `put-token`: `operation`, `type`, `name`, `expiration`, `app_property_types`
//!   ({key: AMQP type}), `body_type`, `audience` (url-decoded `sr`), `expiry` (`se`),
//!   `token_valid`, `reason` (null or why the token cannot open the link it names), `status`,
//!   `message_id`, `message_id_type`, `reply_to`, `link`. Never the token.
//! * `cbs-reply`: `link`, `correlation_id`, `status`.
//! * `attach`: `role` (the client's: "sender"/"receiver"), `name`, `address`, `source`,
//!   `target`, `properties` (typed map), `snd_settle_mode`, `rcv_settle_mode` (numbers as on
//!   the wire, null when absent), `max_message_size`, `refused` (null or the reason).
//! * `detach` (the client detached): `name`, `address`, `condition`, `description`.
//! * `message`: `link`, `address`, `settled_by_client`, `sections` (wire order, e.g.
//!   ["header","message-annotations","properties","data"]), `message_id`,
//!   `message_id_type`, `correlation_id_type`, `to`, `content_type`, `content_encoding`,
//!   `message_properties` (those present), `header` (null when absent), `annotations` and
//!   `delivery_annotations` (typed maps), `application_properties` ({key: value}),
//!   `application_property_types` ({key: {key_type, value_type}}), `body_sections` ("data",
//!   "value", "sequence", "data,data", …), `body_section` (same, kept for older tests),
//!   `body` (UTF-8 text), `size` (encoded bytes), `outcome`.
//! * `twin-request` (a request on the module's twin sender link): the `message` fields (but
//!   `outcome`; `correlation_id` too) and `operation`, `resource`, `reply_status` (null: not
//!   answered), `note` (null, or why not answered / refused, e.g. "failed with 429 (control)"),
//!   `twin` (`{"desired", "reported"}` after the request).
//! * `twin-reply` and `twin-desired` (what the stand-in sent on the module's twin receiver
//!   link: an answer, a desired patch): `link` (null and `sent` false when there was none),
//!   `correlation_id` (null for a patch), `correlation_id_type`, `status` (null for a patch),
//!   `annotations` (typed map), `body` (UTF-8 text), `sent`.
//! * `link-closed`: the stand-in detached a twin link as edgeHub's ClientConnectionHandler
//!   does (`name`, `reason`: a newer link of the same type, or another channel correlation id).
//! * `control`: a command of the control file applied: `command` (with its `id`), `result`,
//!   `error`, `twin`.
//! * `message` also has `output_name` (the sender's `iothub-outputname`, or null) and
//!   `routes` (null without a route table, else the routes that took it, one per sink).
//! * `routed`: a message the stand-in sent a module on its inputs link, as edgeHub's
//!   `AmqpMessageConverter.FromMessage` makes it: `link`, `route`, `module` (the target),
//!   `input`, `sequence` (`x-opt-sequence-number`), `lock_token`, `from_device`,
//!   `from_module`, and the `message` fields of what was sent (`annotations`, `body`, …).
//! * `routed-outcome`: the target's disposition of it: `module`, `input`, `sequence`,
//!   `message_id`, `outcome` ("accepted", "rejected", "released", "modified", "timeout" after
//!   30 s, "link-gone", "settled-without-outcome"), `settled_by_client`, `retry` (true for
//!   any outcome but "accepted": the same message is sent again, first in line, as edgeHub's
//!   routing retries a failed module send).
//! * `ignored`: a transfer on a refused link (`link`, `reason`).
//! * `closed`: the stand-in closed the connection (`reason`: an expired or bad token).
//! * `disconnect`: `client_closed` (the client sent Close), `client_condition`,
//!   `client_description`, `transport_condition`.
//!
//! Routing (tests/standin/edgehub.py's doc has the contract): [`EdgeHub::route`] adds a route
//! (`FROM /messages/modules/<m>/* INTO BrokeredEndpoint("/modules/<t>/inputs/<i>")`, …);
//! [`EdgeHubOptions::module`] may name several modules (a comma list), the sender and its
//! targets; [`NodeScript`] runs the Node SDK's receive.js (`on('inputMessage')`) and
//! [`node_output`] its output.js (`sendOutputEvent`).
//!
//! The module twin (tests/standin/edgehub.py's doc has the contract): its initial desired is
//! [`EdgeHubOptions::twin_desired`]; a test changes it or makes requests fail through
//! [`EdgeHub::control`] ([`EdgeHub::push_desired`], [`EdgeHub::fail_twin`], [`EdgeHub::twin`])
//! and reads the frames back with [`EdgeHub::twin_frames`]; [`NodeTwin`] runs the Node SDK's
//! twin (tests/standin/node/twin.js).
//!
//! A typed map is `{key: {"key_type": "symbol"|"string"|…, "value": …, "value_type":
//! "string"|"int32"|"ulong"|"long"|"uuid"|"binary"|…}}`.
//!
//! Records of the workload stand-in: `{"kind": "request", "method", "path", "api_version",
//! "status", "time"}`, for sign requests also `content_type`, `key_id`, `algo`, `data` (the
//! decoded string-to-sign).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use super::certs::Certs;
use super::root;

/// The venv Python that has python-qpid-proton with TLS (`AZUREIOTSECURITY_PYTHON` overrides).
pub fn python() -> PathBuf {
    super::venv_python()
}

/// Panics, saying what to run, unless the venv Python imports Proton with TLS. Checked once.
pub fn require_proton() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = CHECKED.get_or_init(|| {
        let py = python();
        let out = Command::new(&py)
            .args([
                "-c",
                "import proton; assert proton.SSL.present(), 'Proton without TLS'; print(proton.VERSION)",
            ])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", py.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} cannot import python-qpid-proton with TLS: {}",
                py.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e} (run scripts/install-test-deps.sh)");
    }
}

/// Panics, saying what to run, unless `node` runs and the SDK is installed.
pub fn require_node() {
    let dir = root().join("tests/standin/node");
    let ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "node does not run (run scripts/install-test-deps.sh)");
    assert!(
        dir.join("node_modules/azure-iot-device-amqp").is_dir()
            && dir.join("node_modules/azure-iot-device").is_dir(),
        "the Node SDK is not installed in {} (run scripts/install-test-deps.sh)",
        dir.display()
    );
}

fn standin(name: &str) -> PathBuf {
    root().join("tests/standin").join(name)
}

/// Whether process `pid` has ended (gone, or a zombie not yet reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => true,
    }
}

/// A child process killed (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    /// Panics when the process has ended: a stand-in that died (a Python exception) fails
    /// the test at once instead of timing it out.
    pub fn assert_alive(&self) {
        assert!(
            !exited(self.child.id()),
            "the {} stand-in (pid {}) has exited; its stderr (above) says why",
            self.name,
            self.child.id()
        );
    }

    /// SIGTERM, then SIGKILL after 5 s; always reaped.
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
    require_proton();
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot start the {name} stand-in: {e} (run scripts/install-test-deps.sh)")
    });
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => line,
        Err(_) => {
            let mut p = Proc { child, name };
            p.terminate();
            panic!("the {name} stand-in did not say READY within 20 s");
        }
    };
    let Some(rest) = line.trim().strip_prefix("READY") else {
        let mut p = Proc { child, name };
        p.terminate();
        panic!("the {name} stand-in said {line:?}, not READY; its stderr (above) says why");
    };
    let rest = rest.trim().to_owned();
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
        let mut cmd = Command::new(python());
        cmd.arg(standin("workload.py"))
            .arg("--socket")
            .arg(&socket)
            .args(["--key-base64", key_b64, "--module", module])
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

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    pub fn record_path(&self) -> &Path {
        &self.record
    }

    /// The requests it answered, in order.
    pub fn records(&self) -> Vec<Value> {
        records(&self.record)
    }
}

/// The module identity the stand-ins and the module share in the tests.
pub const KEY: &str = "bW9kdWxlLWtleS1mb3ItdGhlLWludGVyb3AtdGVzdHM=";
pub const HUB: &str = "hub.example.net";
pub const DEVICE: &str = "dev1";
pub const MODULE: &str = "azureiotsecurity";

/// The edgeHub stand-in for that identity, accepting everything, on `port` (0: any).
pub fn hub_options(port: u16) -> EdgeHubOptions {
    EdgeHubOptions {
        port,
        key_b64: KEY.into(),
        hub: HUB.into(),
        device: DEVICE.into(),
        module: MODULE.into(),
        outcomes: vec![],
        clock_skew_secs: 0,
        twin_desired: serde_json::json!({}),
        control_at_start: vec![],
    }
}

/// A TCP port free now (for a stand-in that starts later than the module).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("its address").port()
}

/// How the edgeHub stand-in behaves (tests/standin/edgehub.py).
#[derive(Debug, Clone)]
pub struct EdgeHubOptions {
    /// 0: a free port (the stand-in binds port 0 and reports the port it got).
    pub port: u16,
    pub key_b64: String,
    pub hub: String,
    pub device: String,
    pub module: String,
    /// One per transfer on the events link, then "accept": accept, release, reject, modify,
    /// drop (cut the TCP connection without settling).
    pub outcomes: Vec<&'static str>,
    /// A token is expired when `se + clock_skew_secs < now`.
    pub clock_skew_secs: i64,
    /// The module twin's initial desired properties (`$version` optional, default 1); the
    /// reported properties start as `{"$version": 1}`.
    pub twin_desired: Value,
    /// Control commands (see [`EdgeHub::control`]) applied before the stand-in accepts a
    /// connection, e.g. a twin that fails from the first request; their `control` records
    /// have the ids `0..n`.
    pub control_at_start: Vec<Value>,
}

impl Default for EdgeHubOptions {
    fn default() -> Self {
        EdgeHubOptions {
            port: 0,
            key_b64: String::new(),
            hub: "hub.example.net".into(),
            device: "dev1".into(),
            module: "azureiotsecurity".into(),
            outcomes: Vec::new(),
            clock_skew_secs: 0,
            twin_desired: serde_json::json!({}),
            control_at_start: Vec::new(),
        }
    }
}

pub struct EdgeHub {
    pub proc: Proc,
    pub port: u16,
    pub record: PathBuf,
    /// The stand-in's `--control` file: one JSON command a line (see [`EdgeHub::control`]).
    pub control: PathBuf,
    /// The device it serves.
    pub device: String,
    control_seq: std::sync::atomic::AtomicU64,
}

impl EdgeHub {
    pub fn start(dir: &Path, certs: &Certs, o: &EdgeHubOptions) -> EdgeHub {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let record = dir.join(format!("edgehub-{}-{n}.jsonl", o.port));
        let control = dir.join(format!("edgehub-{}-{n}.control.jsonl", o.port));
        let at_start: String = o
            .control_at_start
            .iter()
            .enumerate()
            .map(|(id, c)| {
                let mut c = c.clone();
                c["id"] = id.into();
                format!("{c}\n")
            })
            .collect();
        std::fs::write(&control, at_start).expect("write the control file");
        let mut cmd = Command::new(python());
        cmd.arg(standin("edgehub.py"))
            .args(["--port", &o.port.to_string()])
            .arg("--cert")
            .arg(&certs.chain)
            .arg("--key")
            .arg(&certs.key)
            .args(["--key-base64", &o.key_b64, "--hub", &o.hub])
            .args(["--device", &o.device, "--module", &o.module])
            .args(["--outcomes", &o.outcomes.join(",")])
            .args(["--clock-skew-secs", &o.clock_skew_secs.to_string()])
            .args(["--twin-desired", &o.twin_desired.to_string()])
            .arg("--control")
            .arg(&control)
            .arg("--record")
            .arg(&record);
        let (proc, rest) = start_ready("edgeHub", cmd);
        let port = rest
            .parse()
            .unwrap_or_else(|_| panic!("the edgeHub stand-in said READY {rest:?}, not a port"));
        EdgeHub {
            proc,
            port,
            record,
            control,
            device: o.device.clone(),
            control_seq: std::sync::atomic::AtomicU64::new(o.control_at_start.len() as u64),
        }
    }

    /// Give the stand-in a command and wait (10 s at most) until it has applied it; returns
    /// its `control` record (`result`, `error`, `twin` = the twin after the command).
    /// Commands: `{"cmd": "route", "route": "FROM … INTO …"}` (add a route; `{"cmd":
    /// "routes", "routes": [...]}` replaces the table), `{"cmd": "desired", "patch": {…},
    /// "version": n (optional: default the next one), "push": true (default; false changes
    /// the twin without telling anyone)}`,
    /// `{"cmd": "fail", "operation": "GET"|"PATCH"|"PUT"|"DELETE"|"*", "status": 429 (null:
    /// never answer), "count": 1}`, `{"cmd": "state"}` (nothing: read the twin back).
    pub fn control(&self, mut cmd: Value) -> Value {
        use std::io::Write;
        let id = self
            .control_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cmd["id"] = id.into();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.control)
            .expect("open the control file");
        f.write_all(format!("{cmd}\n").as_bytes())
            .expect("write the control file");
        drop(f);
        let what = format!("the stand-in to apply {cmd}");
        let recs = self.wait(&what, Duration::from_secs(10), |r| {
            r.iter()
                .any(|x| x["kind"] == "control" && x["command"]["id"] == id)
        });
        let rec = recs
            .into_iter()
            .find(|x| x["kind"] == "control" && x["command"]["id"] == id)
            .expect("found above");
        assert!(rec["error"].is_null(), "the stand-in refused {cmd}: {rec}");
        rec
    }

    /// Add `route` to the stand-in's route table (edgeHub's syntax, no WHERE); returns the
    /// table. Without any route, everything goes upstream only.
    pub fn route(&self, route: &str) -> Vec<String> {
        let r = self.control(serde_json::json!({"cmd": "route", "route": route}));
        serde_json::from_value(r["result"].clone()).expect("the route table")
    }

    /// The messages the stand-in sent to `module`'s inputs, in order.
    pub fn routed(&self, module: &str) -> Vec<Value> {
        self.of("routed", None)
            .into_iter()
            .filter(|r| r["module"] == module)
            .collect()
    }

    /// `module`'s dispositions of what was routed to it, in order.
    pub fn routed_outcomes(&self, module: &str) -> Vec<Value> {
        self.of("routed-outcome", None)
            .into_iter()
            .filter(|r| r["module"] == module)
            .collect()
    }

    /// The attach record of `module`'s inputs link (the client a receiver on its events
    /// address), waiting up to `limit`.
    pub fn wait_inputs_link(&self, module: &str, limit: Duration) -> Value {
        let address = format!("/devices/{}/modules/{module}/messages/events", self.device);
        let find = |r: &[Value]| {
            r.iter()
                .find(|x| {
                    x["kind"] == "attach"
                        && x["role"] == "receiver"
                        && x["address"]
                            .as_str()
                            .is_some_and(|a| a.ends_with(address.as_str()))
                })
                .cloned()
        };
        let what = format!("{module}'s inputs link");
        let r = self.wait(&what, limit, |r| find(r).is_some());
        find(&r).expect("found above")
    }

    /// Push a desired-properties patch (the next `$version`) to every subscribed client;
    /// returns `{"version", "sent"}` (`sent`: how many connections it went to).
    pub fn push_desired(&self, patch: Value) -> Value {
        self.control(serde_json::json!({"cmd": "desired", "patch": patch}))["result"].clone()
    }

    /// Change the desired properties by `patch` at `$version` = `version` (None: the next
    /// one); pushed to the subscribed clients only when `push` (false: a patch the module
    /// never sees, as after a dropped link). Returns `{"version", "sent"}`.
    pub fn set_desired(&self, patch: Value, version: Option<i64>, push: bool) -> Value {
        self.control(serde_json::json!({
            "cmd": "desired", "patch": patch, "version": version, "push": push
        }))["result"]
            .clone()
    }

    /// The next `count` twin requests `operation` ("*": any) are answered with `status`, or
    /// never when `status` is None.
    pub fn fail_twin(&self, operation: &str, status: Option<u16>, count: u32) {
        self.control(serde_json::json!({
            "cmd": "fail", "operation": operation, "status": status, "count": count
        }));
    }

    /// The twin as the stand-in holds it now: `{"desired": …, "reported": …}`.
    pub fn twin(&self) -> Value {
        self.control(serde_json::json!({"cmd": "state"}))["twin"].clone()
    }

    /// Every twin frame, in order: the twin links' `attach` records, `twin-request`,
    /// `twin-reply`, `twin-desired` and `link-closed` records.
    pub fn twin_frames(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| {
                (r["kind"] == "attach"
                    && r["address"].as_str().is_some_and(|a| a.ends_with("/twin")))
                    || r["kind"] == "link-closed"
                    || r["kind"].as_str().is_some_and(|k| k.starts_with("twin-"))
            })
            .collect()
    }

    /// The twin requests of `operation` ("GET", "PATCH", "PUT", "DELETE"), in order.
    pub fn twin_requests(&self, operation: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["kind"] == "twin-request" && r["operation"] == operation)
            .collect()
    }

    /// Wait (up to `limit`) until the twin's reported properties, as the module's last
    /// accepted PATCH left them, satisfy `f`; returns them.
    pub fn wait_reported(&self, what: &str, limit: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let last = |r: &[Value]| {
            r.iter()
                .rev()
                .find(|x| {
                    x["kind"] == "twin-request"
                        && x["operation"] == "PATCH"
                        && x["reply_status"] == 204
                })
                .map(|x| x["twin"]["reported"].clone())
        };
        let what = format!("reported properties with {what}");
        let r = self.wait(&what, limit, |r| last(r).is_some_and(|v| f(&v)));
        last(&r).expect("found above")
    }

    pub fn record_path(&self) -> &Path {
        &self.record
    }

    /// The module's telemetry link (not `$cbs`) is attached.
    pub fn wait_telemetry_link(&self) {
        self.wait("the telemetry link", Duration::from_secs(30), |r| {
            r.iter()
                .any(|x| x["kind"] == "attach" && x["role"] == "sender" && x["address"] != "$cbs")
        });
    }

    /// The message records edgeHub accepted, in order.
    pub fn accepted(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["kind"] == "message" && r["outcome"] == "accept")
            .collect()
    }

    /// The first record of `kind`, waiting up to `limit` for it.
    pub fn wait_kind(&self, kind: &str, limit: Duration) -> Value {
        let what = format!("a {kind:?} record");
        let r = self.wait(&what, limit, |r| r.iter().any(|x| x["kind"] == kind));
        r.into_iter()
            .find(|x| x["kind"] == kind)
            .expect("found above")
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
            self.proc.assert_alive();
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
    // Only whole lines: the stand-in may be writing the last one while this reads the file
    // (a record cut at the end of the read is taken at the next read, not misread as bad).
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
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
/// Runs with only `env` and PATH (no IOTEDGE_* or connection string of the caller leaks in).
pub fn node_send(env: &[(String, String)], body: &str, message_id: &str) -> std::process::Output {
    node_send_with(env, body, message_id, &[])
}

/// [`node_send`] with application properties, each added as the SDK's
/// `message.properties.add(key, value)`.
pub fn node_send_with(
    env: &[(String, String)],
    body: &str,
    message_id: &str,
    properties: &[(&str, &str)],
) -> std::process::Output {
    require_node();
    let dir = root().join("tests/standin/node");
    let properties: serde_json::Map<String, Value> = properties
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    Command::new("node")
        .current_dir(&dir)
        .arg("send.js")
        .args([body, message_id, &Value::Object(properties).to_string()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run node (run scripts/install-test-deps.sh)")
}

/// The official Node.js SDK's module twin (tests/standin/node/twin.js), running: getTwin,
/// a reported update, a second GET, then the desired-properties handler until `patches`
/// patches arrived. Its stdout lines arrive as they are printed ([`NodeTwin::wait_line`]).
pub struct NodeTwin {
    pub proc: Proc,
    lines: std::sync::mpsc::Receiver<String>,
    /// The stdout lines read so far.
    pub seen: Vec<String>,
    pub stderr: PathBuf,
}

impl NodeTwin {
    /// Runs with only `env` and PATH, like [`node_send`]; its stderr goes to `dir`.
    pub fn start(dir: &Path, env: &[(String, String)], patches: usize, reported: &Value) -> Self {
        require_node();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stderr = dir.join(format!("node-twin-{n}.err"));
        let mut child = Command::new("node")
            .current_dir(root().join("tests/standin/node"))
            .arg("twin.js")
            .args([patches.to_string(), reported.to_string()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("run node (run scripts/install-test-deps.sh)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NodeTwin {
            proc: Proc {
                child,
                name: "node twin.js",
            },
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The rest of the first line starting with `prefix` (a word), waiting up to `limit`.
    pub fn wait_line(&mut self, prefix: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let found = self.seen.iter().find_map(|l| {
                l.strip_prefix(prefix)
                    .filter(|r| r.is_empty() || r.starts_with(' '))
                    .map(|r| r.trim().to_owned())
            });
            if let Some(rest) = found {
                return rest;
            }
            let left = limit.saturating_sub(start.elapsed());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(e) => panic!(
                    "no {prefix:?} line from twin.js within {limit:?} ({e}); stdout {:#?}; {}",
                    self.seen,
                    self.stderr_text()
                ),
            }
        }
    }

    /// The exit status within `limit`, with every stdout line read.
    pub fn finish(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.proc.child.try_wait().expect("wait") {
                break st;
            }
            assert!(
                start.elapsed() < limit,
                "twin.js did not exit within {limit:?}; stdout {:#?}; {}",
                self.seen,
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF: take what it still holds.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        status
    }

    pub fn stderr_text(&self) -> String {
        format!(
            "stderr: {}",
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

/// Send one message to module output `output` with the official Node.js SDK's
/// `sendOutputEvent` (tests/standin/node/output.js); the body as given (any text), with
/// application properties. Runs with only `env` and PATH, like [`node_send`].
pub fn node_output(
    env: &[(String, String)],
    output: &str,
    body: &str,
    message_id: &str,
    properties: &[(&str, &str)],
) -> std::process::Output {
    require_node();
    let properties: serde_json::Map<String, Value> = properties
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    Command::new("node")
        .current_dir(root().join("tests/standin/node"))
        .arg("output.js")
        .args([
            output,
            body,
            message_id,
            &Value::Object(properties).to_string(),
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run node (run scripts/install-test-deps.sh)")
}

/// A Node SDK script of tests/standin/node running (e.g. receive.js), its stdout lines read
/// as they come ([`NodeScript::wait_lines`]); killed on drop.
pub struct NodeScript {
    pub proc: Proc,
    lines: std::sync::mpsc::Receiver<String>,
    /// The stdout lines read so far.
    pub seen: Vec<String>,
    pub stderr: PathBuf,
}

impl NodeScript {
    /// Runs `node <script> <args>` with only `env` and PATH, like [`node_send`]; its stderr
    /// goes to `dir`.
    pub fn start(dir: &Path, script: &str, args: &[&str], env: &[(String, String)]) -> Self {
        require_node();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stderr = dir.join(format!("node-{script}-{n}.err"));
        let mut child = Command::new("node")
            .current_dir(root().join("tests/standin/node"))
            .arg(script)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("run node (run scripts/install-test-deps.sh)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NodeScript {
            proc: Proc {
                child,
                name: "node script",
            },
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The rests of the first `n` lines starting with the word `prefix`, waiting up to
    /// `limit` for them.
    pub fn wait_lines(&mut self, prefix: &str, n: usize, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let found: Vec<String> = self
                .seen
                .iter()
                .filter_map(|l| {
                    l.strip_prefix(prefix)
                        .filter(|r| r.is_empty() || r.starts_with(' '))
                        .map(|r| r.trim().to_owned())
                })
                .collect();
            if found.len() >= n {
                return found.into_iter().take(n).collect();
            }
            let left = limit.saturating_sub(start.elapsed());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(e) => panic!(
                    "{} of {n} {prefix:?} lines within {limit:?} ({e}); stdout {:#?}; stderr: {}",
                    found.len(),
                    self.seen,
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ),
            }
        }
    }

    /// The exit status within `limit`.
    pub fn finish(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.proc.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                start.elapsed() < limit,
                "the node script did not exit within {limit:?}; stdout {:#?}; stderr: {}",
                self.seen,
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
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
