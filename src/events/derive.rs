//! Audit events → security events: the deriver state machine.
//!
//! State it keeps, all bounded:
//! - a pid → command line cache filled by ProcessCreate, read by ConnectionCreate (connect
//!   and accept records carry only the 128-byte, possibly stale, PROCTITLE);
//! - a (pid, fd) → socket type cache filled by `socket()` events (the module's rules audit
//!   successful socket() calls of the inet families), so that a connect can be told TCP from
//!   UDP: connect records carry no socket type. A socket created in another process (inherited
//!   or passed) is not in the cache, and its connections say Protocol "Unknown";
//! - the login tracker (see [`super::login`]).

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::connection_create::{ConnectionCreate, Direction};
use super::login::LoginTracker;
use super::process_create::ProcessCreate;
use super::{ExtraDetails, Payload, SecurityEvent, event_id};
use crate::audit::coalesce::AuditEvent;
use crate::audit::decode::{self, Argv, SockAddr};
use crate::audit::parse::{Record, Value};
use crate::audit::syscalls::{self, Syscall};
use crate::audit::types;

/// Counters of the deriver.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DeriveStats {
    /// Security events derived.
    pub events: u64,
    pub process_create: u64,
    pub connection_create: u64,
    pub login: u64,
    /// Exec events without an EXECVE record (failed or truncated).
    pub exec_without_argv: u64,
    /// Command lines shortened to the configured maximum.
    pub command_lines_shortened: u64,
    /// Connections whose command line came from PROCTITLE (the process was not seen starting).
    pub command_line_from_proctitle: u64,
    /// connect() to 0.0.0.0 or :: (address probes), not reported.
    pub unspecified_address: u64,
    /// Entries pushed out of the process cache.
    pub process_cache_evicted: u64,
    /// Pids the login tracker forgot early (bounds in entries or bytes reached); their held
    /// Login was emitted then.
    pub login_evicted: u64,
}

/// A FIFO cache bounded in entries and bytes.
#[derive(Debug)]
struct BoundedCache<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    size: fn(&V) -> usize,
}

impl<K: std::hash::Hash + Eq + Copy, V> BoundedCache<K, V> {
    fn new(max_entries: usize, max_bytes: usize, size: fn(&V) -> usize) -> Self {
        BoundedCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
            size,
        }
    }

    /// Insert; returns how many entries were evicted to make room.
    fn insert(&mut self, k: K, v: V) -> u64 {
        let sz = (self.size)(&v);
        if let Some(old) = self.map.insert(k, v) {
            self.bytes -= (self.size)(&old);
            self.order.retain(|x| *x != k);
        }
        self.order.push_back(k);
        self.bytes += sz;
        let mut evicted = 0;
        while self.map.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.map.remove(&old) {
                self.bytes -= (self.size)(&v);
                evicted += 1;
            }
        }
        evicted
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }
}

/// The socket type of an inet socket, from its socket() call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SockType {
    Tcp,
    Udp,
    Other,
}

/// EINPROGRESS: a non-blocking connect under way.
const EINPROGRESS: i64 = -115;

/// Audit events in, security events out.
#[derive(Debug)]
pub struct Deriver {
    max_command_line: usize,
    processes: BoundedCache<i64, String>,
    sockets: BoundedCache<(i64, u64), SockType>,
    logins: LoginTracker,
    logins_out: Vec<(super::login::LoginKey, super::login::Login)>,
    /// Newest record time seen (ms): the clock of the login tracker.
    latest_ms: u64,
    stats: DeriveStats,
}

/// The parts of a SYSCALL record every event needs.
struct Syscall0<'a> {
    rec: Record<'a>,
    call: Syscall,
    success: bool,
    exit: Option<i64>,
    pid: i64,
    /// i386's socketcall multiplexer: the arguments are in the SOCKETCALL record.
    socketcall: bool,
}

fn text(v: Option<Value<'_>>) -> Option<String> {
    decode::field_string(v?)
}

fn id_text(v: Option<Value<'_>>) -> Option<String> {
    let v = v?;
    match v.as_u64() {
        Some(u) if u == u64::from(u32::MAX) => Some("unset".to_string()),
        Some(u) => Some(u.to_string()),
        None => None,
    }
}

/// What the deriver is told (built by `config::stages::derive` from `[events]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeriveConfig {
    /// Entries of the pid → command line cache ConnectionCreate reads.
    pub process_cache_entries: usize,
    /// Bytes of command lines held by that cache.
    pub process_cache_bytes: usize,
    /// A command line longer than this is shortened (and the event says so).
    pub max_command_line_bytes: usize,
    /// Bytes of the login tracker's per-pid state (held Logins).
    pub login_tracking_bytes: usize,
}

impl Default for DeriveConfig {
    fn default() -> Self {
        DeriveConfig {
            process_cache_entries: 4096,
            process_cache_bytes: 4 << 20,
            max_command_line_bytes: 32 << 10,
            login_tracking_bytes: super::login::DEFAULT_MAX_BYTES,
        }
    }
}

impl Deriver {
    pub fn new(s: &DeriveConfig) -> Self {
        Deriver {
            max_command_line: s.max_command_line_bytes,
            processes: BoundedCache::new(
                s.process_cache_entries,
                s.process_cache_bytes,
                |v: &String| v.len() + 64,
            ),
            sockets: BoundedCache::new(s.process_cache_entries, usize::MAX, |_| 0),
            logins: LoginTracker::new(s.login_tracking_bytes),
            logins_out: Vec::new(),
            latest_ms: 0,
            stats: DeriveStats::default(),
        }
    }

    pub fn stats(&self) -> &DeriveStats {
        &self.stats
    }

    /// Derive the security events of one audit event.
    pub fn derive(&mut self, ev: &AuditEvent, out: &mut Vec<SecurityEvent>) {
        let time = ev.id().millis();
        self.latest_ms = self.latest_ms.max(time);
        let Some(first) = ev.records().next() else {
            return;
        };
        if types::is_single_record(first.rtype) {
            self.logins.record(&first, &mut self.logins_out);
            self.drain_logins(out);
            return;
        }
        let Some(sc) = ev
            .records()
            .find(|r| r.rtype == types::SYSCALL)
            .and_then(parse_syscall)
        else {
            return;
        };
        match sc.call {
            Syscall::Execve | Syscall::Execveat if sc.success => self.process_create(ev, &sc, out),
            Syscall::Connect if sc.success || sc.exit == Some(EINPROGRESS) => {
                self.connection(ev, &sc, Direction::Out, out)
            }
            Syscall::Accept | Syscall::Accept4 if sc.success => {
                self.connection(ev, &sc, Direction::In, out)
            }
            Syscall::Socket if sc.success => self.socket(ev, &sc),
            _ => {}
        }
    }

    /// Emit held logins that are due (by record time).
    pub fn tick(&mut self, out: &mut Vec<SecurityEvent>) {
        self.logins.expire(self.latest_ms, &mut self.logins_out);
        self.drain_logins(out);
    }

    /// Emit everything held.
    pub fn flush(&mut self, out: &mut Vec<SecurityEvent>) {
        self.logins.flush(&mut self.logins_out);
        self.drain_logins(out);
    }

    fn drain_logins(&mut self, out: &mut Vec<SecurityEvent>) {
        self.stats.login_evicted = self.logins.evicted();
        for (key, login) in self.logins_out.drain(..) {
            self.stats.login += 1;
            self.stats.events += 1;
            out.push(SecurityEvent {
                id: event_id(&key.node, &key.id, "Login", 0),
                time_ms: key.id.millis(),
                payload: Payload::Login(login),
            });
        }
    }

    fn shorten(&mut self, mut s: String, extra: &mut ExtraDetails) -> String {
        if s.len() > self.max_command_line {
            let full = s.len();
            let mut cut = self.max_command_line;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            extra.insert("CommandLineTruncated", "true".to_string());
            extra.insert("CommandLineLength", full.to_string());
            self.stats.command_lines_shortened += 1;
        }
        s
    }

    fn process_create(&mut self, ev: &AuditEvent, sc: &Syscall0<'_>, out: &mut Vec<SecurityEvent>) {
        let mut argv = Argv::default();
        let mut cwd = None;
        let mut saw_execve = false;
        for r in ev.records() {
            match r.rtype {
                types::EXECVE => {
                    saw_execve = true;
                    argv.add_record(&r);
                }
                types::CWD => cwd = text(r.get(b"cwd")),
                _ => {}
            }
        }
        if !saw_execve {
            self.stats.exec_without_argv += 1;
            return;
        }
        let argv = argv.finish();
        let r = &sc.rec;
        let mut extra = ExtraDetails::new();
        if let Some(c) = cwd {
            extra.insert("Cwd", c);
        }
        common_extra(r, &mut extra);
        if argv.missing > 0 {
            // The command line holds only the arguments that arrived (never padding for the
            // others); like a shortened one, it says it is not the whole argv.
            extra.insert("ArgumentsMissing", argv.missing.to_string());
            extra.insert("CommandLineIncomplete", "true".to_string());
        }
        let command_line = argv.command_line();
        let command_line = self.shorten(command_line, &mut extra);
        self.stats.process_cache_evicted += self.processes.insert(sc.pid, command_line.clone());
        let payload = ProcessCreate {
            executable: text(r.get(b"exe")).unwrap_or_default(),
            process_id: sc.pid,
            parent_process_id: r.get(b"ppid").and_then(|v| v.as_i64()).unwrap_or(0),
            user_id: id_text(r.get(b"uid")).unwrap_or_default(),
            user_name: enriched_name(r, b"UID"),
            command_line,
            extra_details: extra,
        };
        self.stats.process_create += 1;
        self.stats.events += 1;
        out.push(SecurityEvent {
            id: event_id(ev.node(), &ev.id(), "ProcessCreate", 0),
            time_ms: ev.id().millis(),
            payload: Payload::ProcessCreate(payload),
        });
    }

    /// The fd a socket call works on: a0 of the SYSCALL record, or of the SOCKETCALL record
    /// for i386's socketcall (whose a1 points to the real arguments).
    /// The hex argument `arg` (a0, a1 …) of a socket call: from the SYSCALL record, or for
    /// i386's socketcall (whose a1 only points to the real arguments) from its SOCKETCALL
    /// record.
    fn socket_arg(ev: &AuditEvent, sc: &Syscall0<'_>, arg: &[u8]) -> Option<u64> {
        let v = if sc.socketcall {
            ev.records()
                .find(|r| r.rtype == types::SOCKETCALL)
                .and_then(|r| r.get(arg))
        } else {
            sc.rec.get(arg)
        }?;
        syscalls::parse_hex_u64(v.raw())
    }

    fn socket(&mut self, ev: &AuditEvent, sc: &Syscall0<'_>) {
        // socket(family, type, protocol) returns the fd; type may carry SOCK_NONBLOCK etc.
        let args = Self::socket_arg(ev, sc, b"a0").zip(Self::socket_arg(ev, sc, b"a1"));
        let (Some((family, ty)), Some(fd)) = (args, sc.exit) else {
            return;
        };
        if family != 2 && family != 10 {
            return;
        }
        let Ok(fd) = u64::try_from(fd) else { return };
        let t = match ty & 0xf {
            1 => SockType::Tcp,
            2 => SockType::Udp,
            _ => SockType::Other,
        };
        self.sockets.insert((sc.pid, fd), t);
    }

    fn connection(
        &mut self,
        ev: &AuditEvent,
        sc: &Syscall0<'_>,
        direction: Direction,
        out: &mut Vec<SecurityEvent>,
    ) {
        let Some(saddr) = ev
            .records()
            .find(|r| r.rtype == types::SOCKADDR)
            .and_then(|r| r.get(b"saddr"))
        else {
            return;
        };
        // sa_family is host-endian: the record's arch says which host.
        let endian =
            syscalls::Endian::of_arch_hex(sc.rec.get(b"arch").map_or(&b""[..], |v| v.raw()));
        let (addr, port, mapped) = match decode::sockaddr_endian(saddr.raw(), endian) {
            Ok(SockAddr::Inet(a)) => (a.ip().to_string(), a.port(), false),
            Ok(SockAddr::Inet6 { addr, v4_mapped }) => match v4_mapped {
                Some(v4) => (v4.to_string(), addr.port(), true),
                None => (addr.ip().to_string(), addr.port(), false),
            },
            _ => return, // not an IP connection (unix, netlink, …) or unreadable
        };
        if addr == "0.0.0.0" || addr == "::" {
            // A UDP socket connected to the unspecified address (sshd and getaddrinfo's
            // AI_ADDRCONFIG probes do this) reaches no remote host: not a connection.
            self.stats.unspecified_address += 1;
            return;
        }
        let r = &sc.rec;
        let mut extra = ExtraDetails::new();
        common_extra(r, &mut extra);
        if mapped {
            extra.insert("AddressFamily", "inet6-v4mapped".to_string());
        }
        if !sc.success {
            extra.insert("Status", "InProgress".to_string());
        }
        let protocol = match direction {
            // accept() only exists for connection-oriented sockets.
            Direction::In => "TCP",
            Direction::Out => {
                match Self::socket_arg(ev, sc, b"a0").and_then(|fd| self.sockets.get(&(sc.pid, fd)))
                {
                    Some(SockType::Tcp) => "TCP",
                    Some(SockType::Udp) => "UDP",
                    _ => "Unknown",
                }
            }
        };
        let command_line = match self.processes.get(&sc.pid) {
            Some(c) => Some(c.clone()),
            None => {
                let title = ev
                    .records()
                    .find(|r| r.rtype == types::PROCTITLE)
                    .and_then(|r| r.get(b"proctitle"))
                    .map(|v| decode::proctitle(v).command_line());
                if title.is_some() {
                    extra.insert("CommandLineSource", "PROCTITLE".to_string());
                    self.stats.command_line_from_proctitle += 1;
                }
                title
            }
        };
        let payload = ConnectionCreate {
            remote_address: addr,
            remote_port: port.to_string(),
            direction,
            protocol: protocol.to_string(),
            process_id: sc.pid,
            user_id: id_text(r.get(b"uid")).unwrap_or_default(),
            executable: text(r.get(b"exe")).unwrap_or_default(),
            command_line,
            extra_details: extra,
        };
        self.stats.connection_create += 1;
        self.stats.events += 1;
        out.push(SecurityEvent {
            id: event_id(ev.node(), &ev.id(), "ConnectionCreate", 0),
            time_ms: ev.id().millis(),
            payload: Payload::ConnectionCreate(payload),
        });
    }
}

fn parse_syscall(rec: Record<'_>) -> Option<Syscall0<'_>> {
    let arch = rec.get(b"arch")?;
    let no = rec.get(b"syscall")?.as_u64()?;
    let a0 = rec.get(b"a0").map(|v| v.raw());
    let call = syscalls::classify(arch.raw(), no, a0);
    let socketcall = syscalls::is_socketcall(arch.raw(), no);
    let success = rec.get(b"success").is_some_and(|v| v.raw() == b"yes");
    let exit = rec.get(b"exit").and_then(|v| v.as_i64());
    let pid = rec.get(b"pid")?.as_i64()?;
    Some(Syscall0 {
        rec,
        call,
        success,
        exit,
        pid,
        socketcall,
    })
}

/// The enriched name of an id field (`UID="root"`), when the record is enriched.
fn enriched_name(r: &Record<'_>, key: &[u8]) -> Option<String> {
    let v = r.get_enriched(key)?;
    let s = String::from_utf8_lossy(v.raw()).into_owned();
    (s != "unset" && !s.is_empty() && !s.starts_with("unknown(")).then_some(s)
}

/// ExtraDetails every syscall-derived event carries.
fn common_extra(r: &Record<'_>, extra: &mut ExtraDetails) {
    if let Some(a) = id_text(r.get(b"auid")) {
        extra.insert("AuditUserId", a);
    }
    if let Some(s) = id_text(r.get(b"ses")) {
        extra.insert("SessionId", s);
    }
    let arch = r
        .get_enriched(b"ARCH")
        .map(|v| String::from_utf8_lossy(v.raw()).into_owned())
        .or_else(|| {
            r.get(b"arch")
                .and_then(|v| syscalls::arch_name(v.raw()))
                .map(str::to_string)
        });
    if let Some(a) = arch {
        extra.insert("Arch", a);
    }
    if let Some(e) = id_text(r.get(b"euid")) {
        extra.insert("EffectiveUserId", e);
    }
    if let Some(c) = text(r.get(b"comm")) {
        extra.insert("Comm", c);
    }
}
