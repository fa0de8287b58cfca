//! ListeningPorts (`messageEventSecurityListeningPorts_v1_0.json`): what listens on the host.
//!
//! Contract: [`read`] (and the registry's [`collect`]) reads, under the host root, the host network namespace's socket tables
//! `proc/1/net/{tcp,tcp6,udp,udp6}` (pid 1's view: the host's namespace even when the module
//! runs in a container of its own, once the host's `/proc` is under the root) and keeps TCP
//! sockets in LISTEN and bound, unconnected UDP sockets — the set `ss -ltun` shows. The owner
//! of each socket (pid and executable) is found by walking `proc/<pid>/fd` for
//! `socket:[inode]` links; a socket whose owner's fd table cannot be read has no owner (left
//! out, never guessed). Nothing is executed or written. Everything is bounded: the bytes read
//! of each table, the sockets kept ([`MAX_SOCKETS`]) and the processes and descriptors walked
//! ([`MAX_PROCESSES`], [`MAX_FD_LINKS`]); a bound that is hit is said in [`Collected`] and
//! logged once per collection.
//!
//! [`parse_table`] is the pure part (one table's text → sockets); it never fails: a line it
//! cannot read is counted in [`Table::malformed`] and skipped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::{CollectOptions, HostRoot};
use crate::events::{Details, ListeningPort, Payload};

/// At most this many sockets are kept per collection (the rest is counted, not sent).
pub const MAX_SOCKETS: usize = 4096;
/// At most this many processes' fd tables are walked for owners.
pub const MAX_PROCESSES: usize = 16384;
/// At most this many fd links are read in all while looking for owners.
pub const MAX_FD_LINKS: usize = 262_144;
/// At most this many bytes are read of one table (a table of [`MAX_SOCKETS`] sockets is
/// about 600 KB for tcp6; TIME_WAIT rows are in it too, hence the margin).
pub const MAX_TABLE_BYTES: u64 = 16 << 20;

/// The four tables, each one transport and one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table4 {
    Tcp,
    Tcp6,
    Udp,
    Udp6,
}

impl Table4 {
    pub const ALL: [Table4; 4] = [Table4::Tcp, Table4::Tcp6, Table4::Udp, Table4::Udp6];

    /// The file name under `proc/1/net`.
    pub fn file(self) -> &'static str {
        match self {
            Table4::Tcp => "tcp",
            Table4::Tcp6 => "tcp6",
            Table4::Udp => "udp",
            Table4::Udp6 => "udp6",
        }
    }

    /// The payload's `Protocol` (the schema's examples spell it `TCP`, `UDP`; the family is
    /// in the address).
    pub fn protocol(self) -> &'static str {
        match self {
            Table4::Tcp | Table4::Tcp6 => "TCP",
            Table4::Udp | Table4::Udp6 => "UDP",
        }
    }

    fn is_v6(self) -> bool {
        matches!(self, Table4::Tcp6 | Table4::Udp6)
    }

    /// The `st` column value of a socket that listens: TCP_LISTEN (0x0A) for TCP. A bound
    /// UDP socket that is not connected is TCP_CLOSE (0x07) — `ss -l` calls it UNCONN; a
    /// connected one (0x01) is not listening. An unbound UDP socket is not in the table.
    fn listening_state(self) -> u8 {
        match self {
            Table4::Tcp | Table4::Tcp6 => 0x0A,
            Table4::Udp | Table4::Udp6 => 0x07,
        }
    }
}

/// The byte order the kernel printed the address words in.
///
/// Quirk: the kernel prints each 32-bit word of the address (`__be32` in memory, network
/// order) with `%08X` as a *host* integer, so on a little-endian machine 127.0.0.1 reads
/// `0100007F`; a big-endian one prints `7F000001`. The port is converted with `ntohs` first
/// and reads normally on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    /// The machine's own order: the tables read here were printed by this kernel.
    pub const NATIVE: Endian = if cfg!(target_endian = "big") {
        Endian::Big
    } else {
        Endian::Little
    };

    fn word_bytes(self, word: u32) -> [u8; 4] {
        match self {
            Endian::Little => word.to_le_bytes(),
            Endian::Big => word.to_be_bytes(),
        }
    }
}

/// One listening socket read from a table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Socket {
    pub table: Table4,
    pub local: IpAddr,
    pub port: u16,
    /// The socket's inode (the `socket:[inode]` its owners' fds link to); 0 if the kernel
    /// gave none.
    pub inode: u64,
}

/// The listening sockets of one table, and how many lines could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub sockets: Vec<Socket>,
    pub malformed: usize,
}

/// Reads one table's text (`/proc/net/tcp` layout): the header line, then one socket a line
/// (`sl: local remote st tx:rx tr:when retrnsmt uid timeout inode …`). Keeps the listening
/// ones (see [`Table4`]); skips and counts a line that does not have the layout.
pub fn parse_table(text: &str, table: Table4, endian: Endian) -> Table {
    let mut out = Table::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if first == "sl" {
            continue; // the header
        }
        match parse_line(first, fields, table, endian) {
            Some(Some(socket)) => out.sockets.push(socket),
            Some(None) => {}
            None => out.malformed += 1,
        }
    }
    out
}

/// `None`: not the layout; `Some(None)`: a socket that does not listen.
fn parse_line<'a>(
    slot: &str,
    mut fields: impl Iterator<Item = &'a str>,
    table: Table4,
    endian: Endian,
) -> Option<Option<Socket>> {
    let slot = slot.strip_suffix(':')?;
    if slot.is_empty() || !slot.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let local = fields.next()?;
    let _remote = fields.next()?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    // tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, then the inode.
    let inode = fields.nth(5)?.parse::<u64>().ok()?;
    let (addr, port) = parse_endpoint(local, table.is_v6(), endian)?;
    if state != table.listening_state() {
        return Some(None);
    }
    Some(Some(Socket {
        table,
        local: addr,
        port,
        inode,
    }))
}

/// `ADDR:PORT` in the table's hex: 8 (IPv4) or 32 (IPv6) hex digits, then 4.
fn parse_endpoint(text: &str, v6: bool, endian: Endian) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = if v6 { 4 } else { 1 };
    if addr.len() != 8 * words || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 16];
    for i in 0..words {
        let word = u32::from_str_radix(addr.get(8 * i..8 * i + 8)?, 16).ok()?;
        bytes[4 * i..4 * i + 4].copy_from_slice(&endian.word_bytes(word));
    }
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    };
    Some((ip, port))
}

/// The process that owns a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// `/proc/<pid>/exe`'s link, else the first word of its cmdline; `None` if neither reads.
    pub executable: Option<String>,
}

/// Which bound was hit in a collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Truncation {
    /// Sockets beyond [`MAX_SOCKETS`] (not sent).
    pub sockets_dropped: usize,
    /// The owner walk stopped at [`MAX_PROCESSES`] or [`MAX_FD_LINKS`]: some owners may be
    /// missing.
    pub walk_stopped: bool,
    /// A table was longer than [`MAX_TABLE_BYTES`]: its end was not read.
    pub table_cut: bool,
}

/// What one collection found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Sorted by protocol, family, address, port, inode.
    pub sockets: Vec<(Socket, Option<Owner>)>,
    /// Lines of the tables that could not be read.
    pub malformed: usize,
    /// Tables that were missing (a kernel without IPv6 has no tcp6/udp6) or unreadable.
    pub unreadable: Vec<(Table4, String)>,
    pub truncation: Truncation,
}

/// The identity of the listening set for the watcher: protocol, address, port of every
/// socket (owners left out: a restarted service listening again is not a new socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub u64);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Collected {
    /// The payload items, in order. Remote address and port are left out: a listening
    /// socket has none (the classic C agent wrote `*`).
    pub fn items(&self) -> Vec<ListeningPort> {
        self.sockets
            .iter()
            .map(|(s, owner)| {
                let mut extra = Details::new();
                if let Some(o) = owner {
                    extra.insert("ProcessId".into(), o.pid.to_string());
                    if let Some(exe) = &o.executable {
                        extra.insert("Executable".into(), exe.clone());
                    }
                }
                ListeningPort {
                    remote_address: None,
                    remote_port: None,
                    local_address: Some(s.local),
                    local_port: s.port.to_string(),
                    protocol: s.table.protocol().to_string(),
                    extra_details: extra,
                }
            })
            .collect()
    }

    /// See [`Digest`]. Stable within one build of the module (std's SipHash with fixed keys).
    pub fn digest(&self) -> Digest {
        digest_of(self.sockets.iter().map(|(s, _)| s))
    }
}

/// The [`Digest`] of a set of sockets (order-independent: sorted first).
pub fn digest_of<'a>(sockets: impl Iterator<Item = &'a Socket>) -> Digest {
    let mut keys: Vec<(Table4, IpAddr, u16)> =
        sockets.map(|s| (s.table, s.local, s.port)).collect();
    keys.sort();
    keys.dedup();
    let mut h = std::hash::DefaultHasher::new();
    keys.hash(&mut h);
    Digest(h.finish())
}

/// The registry's collector: one ListeningPorts payload with every listening socket (no
/// item when nothing listens: an `IsEmpty` event says so), or nothing when no table could be
/// read at all (no `/proc` under the root: nothing is known).
pub fn collect(host: &HostRoot, _opts: &CollectOptions) -> Vec<Payload> {
    let c = read(host);
    if c.unreadable.len() == Table4::ALL.len() {
        return Vec::new();
    }
    vec![Payload::ListeningPorts(c.items())]
}

/// Reads the listening sockets only (no owners): the watcher's cheap minute sample.
pub fn sample(host: &HostRoot) -> Collected {
    read_tables(host)
}

/// Reads the listening sockets and their owners under the host root.
pub fn read(host: &HostRoot) -> Collected {
    let mut out = read_tables(host);
    let wanted: HashMap<u64, usize> = out
        .sockets
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| s.inode != 0)
        .map(|(i, (s, _))| (s.inode, i))
        .collect();
    // The walk reads `/proc` raw under its resolved path: the per-process entries are not
    // links to resolve (and `fd/*`, `exe` are magic links that must only be read).
    let (owners, stopped) = match host.resolve("/proc", true) {
        Ok(proc) => find_owners(&proc, &wanted),
        Err(_) => (BTreeMap::new(), false),
    };
    out.truncation.walk_stopped = stopped;
    for (inode, owner) in owners {
        if let Some(&i) = wanted.get(&inode) {
            out.sockets[i].1 = Some(owner);
        }
    }
    log_bounds(&out);
    out
}

fn log_bounds(out: &Collected) {
    let t = out.truncation;
    if t.sockets_dropped > 0 || t.table_cut {
        tracing::warn!(
            error_id = "W-PORTS-CAP",
            kept = out.sockets.len(),
            dropped = t.sockets_dropped,
            table_cut = t.table_cut,
            "more listening sockets than a snapshot keeps: the rest is not reported"
        );
    }
    if t.walk_stopped {
        tracing::warn!(
            error_id = "W-PORTS-WALK",
            max_processes = MAX_PROCESSES,
            max_fd_links = MAX_FD_LINKS,
            "the walk of /proc for socket owners stopped at its bound: some owners are left out"
        );
    }
    if out.malformed > 0 {
        tracing::warn!(
            error_id = "W-PORTS-MALFORMED",
            lines = out.malformed,
            "lines of the /proc/net socket tables could not be read and were skipped"
        );
    }
    for (table, error) in &out.unreadable {
        tracing::debug!(table = table.file(), error = %error, "socket table not read");
    }
}

fn read_tables(host: &HostRoot) -> Collected {
    let mut out = Collected::default();
    let mut all = Vec::new();
    for table in Table4::ALL {
        let read = host
            .resolve(&format!("/proc/1/net/{}", table.file()), true)
            .map_err(|e| e.to_string())
            .and_then(|p| read_bounded(&p).map_err(|e| format!("{}: {e}", p.display())));
        match read {
            Ok((text, cut)) => {
                out.truncation.table_cut |= cut;
                let parsed = parse_table(&text, table, Endian::NATIVE);
                out.malformed += parsed.malformed;
                all.extend(parsed.sockets);
            }
            Err(e) => out.unreadable.push((table, e)),
        }
    }
    all.sort();
    if all.len() > MAX_SOCKETS {
        out.truncation.sockets_dropped = all.len() - MAX_SOCKETS;
        all.truncate(MAX_SOCKETS);
    }
    out.sockets = all.into_iter().map(|s| (s, None)).collect();
    out
}

/// The file's first [`MAX_TABLE_BYTES`] as text, and whether it was longer.
fn read_bounded(path: &Path) -> std::io::Result<(String, bool)> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_TABLE_BYTES + 1).read_to_end(&mut bytes)?;
    let cut = bytes.len() as u64 > MAX_TABLE_BYTES;
    if cut {
        // Quirk: the cut can fall inside a line; drop the partial last line.
        bytes.truncate(MAX_TABLE_BYTES as usize);
        if let Some(end) = bytes.iter().rposition(|&b| b == b'\n') {
            bytes.truncate(end + 1);
        }
    }
    Ok((String::from_utf8_lossy(&bytes).into_owned(), cut))
}

/// Walks `proc/<pid>/fd` in pid order for the wanted inodes; the first (lowest) pid found
/// owns a socket (a forked server shares it with its children). Stops when every wanted
/// inode has an owner or a bound is hit (then `true`).
fn find_owners(proc: &Path, wanted: &HashMap<u64, usize>) -> (BTreeMap<u64, Owner>, bool) {
    let mut found = BTreeMap::new();
    if wanted.is_empty() {
        return (found, false);
    }
    let Ok(entries) = std::fs::read_dir(proc) else {
        return (found, false);
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    pids.sort_unstable();
    let mut stopped = false;
    if pids.len() > MAX_PROCESSES {
        pids.truncate(MAX_PROCESSES);
        stopped = true;
    }
    let mut links = 0usize;
    'pids: for pid in pids {
        let dir = proc.join(pid.to_string());
        // Unreadable (another user's process without the capability, or gone): no owner.
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let mut exe: Option<Option<String>> = None;
        for fd in fds.flatten() {
            links += 1;
            if links > MAX_FD_LINKS {
                stopped = true;
                break 'pids;
            }
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&target) else {
                continue;
            };
            if !wanted.contains_key(&inode) || found.contains_key(&inode) {
                continue;
            }
            let executable = exe.get_or_insert_with(|| executable_of(&dir)).clone();
            found.insert(inode, Owner { pid, executable });
            if found.len() == wanted.len() {
                break 'pids;
            }
        }
    }
    (found, stopped)
}

/// `socket:[12345]` → 12345.
fn socket_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The process's executable: its `exe` link, else the first word of its cmdline.
fn executable_of(dir: &Path) -> Option<String> {
    if let Ok(exe) = std::fs::read_link(dir.join("exe")) {
        return Some(exe.to_string_lossy().into_owned());
    }
    let mut cmdline = Vec::new();
    let file = std::fs::File::open(dir.join("cmdline")).ok()?;
    file.take(4096).read_to_end(&mut cmdline).ok()?;
    let first = cmdline.split(|&b| b == 0).next()?;
    (!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines from this machine's /proc/net/tcp and tcp6 (Debian 12, x86_64), trimmed to
    // the columns the parser reads plus the rest of the row as the kernel printed it.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     \n   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1062 1 000000004e6399bf 100 0 0 10 0                      \n   1: 0100007F:1F90 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000     0        0 5531 1 0000000000000000 20 4 30 10 -1\n";

    #[test]
    fn keeps_listen_rows_and_decodes_little_endian_ipv4() {
        let t = parse_table(TCP, Table4::Tcp, Endian::Little);
        assert_eq!(t.malformed, 0);
        assert_eq!(
            t.sockets,
            vec![Socket {
                table: Table4::Tcp,
                local: "0.0.0.0".parse().unwrap(),
                port: 2024,
                inode: 1062,
            }]
        );
    }

    #[test]
    fn the_address_words_are_host_endian_and_the_port_is_not() {
        // Synthetic: 127.0.0.1:8080 as a little-endian and a big-endian kernel print it.
        let line = |addr: &str| {
            format!(
                "   0: {addr}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1\n"
            )
        };
        for (endian, addr) in [(Endian::Little, "0100007F"), (Endian::Big, "7F000001")] {
            let t = parse_table(&line(addr), Table4::Tcp, endian);
            assert_eq!(t.sockets.len(), 1, "{endian:?}");
            assert_eq!(t.sockets[0].local.to_string(), "127.0.0.1");
            assert_eq!(t.sockets[0].port, 8080);
        }
        // 2001:db8::1 on each: each 32-bit word byte-swapped on little-endian only.
        let v6 = |addr: &str| {
            format!(
                "   0: {addr}:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 78 2 0000000000000000 0\n"
            )
        };
        for (endian, addr) in [
            (Endian::Little, "B80D0120000000000000000001000000"),
            (Endian::Big, "20010DB8000000000000000000000001"),
        ] {
            let t = parse_table(&v6(addr), Table4::Udp6, endian);
            assert_eq!(t.sockets.len(), 1, "{endian:?}");
            assert_eq!(t.sockets[0].local.to_string(), "2001:db8::1");
            assert_eq!(t.sockets[0].port, 53);
        }
    }

    #[test]
    fn udp_keeps_unconnected_and_drops_connected() {
        // Synthetic: one bound unconnected (07) and one connected (01) UDP socket.
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                    1: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 11 2 0000000000000000 0\n\
                    2: 0100007F:C350 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 12 2 0000000000000000 0\n";
        let t = parse_table(text, Table4::Udp, Endian::Little);
        assert_eq!(t.malformed, 0);
        assert_eq!(t.sockets.len(), 1);
        assert_eq!((t.sockets[0].port, t.sockets[0].inode), (68, 11));
    }

    #[test]
    fn lines_not_in_the_layout_are_counted_not_fatal() {
        // Synthetic: a short address, a non-hex state, a missing inode, a v6 address in the
        // v4 table, and an empty line (not counted).
        let text = "   0: 0100007:1F90 00000000:0000 0A 0 0 0 0 0 1\n\
                    1: 0100007F:1F90 00000000:0000 ZZ 0 0 0 0 0 1\n\
                    2: 0100007F:1F90 00000000:0000 0A 0 0 0 0\n\
                    3: 00000000000000000000000000000000:1F90 00000000:0000 0A 0 0 0 0 0 1\n\
                    \n";
        let t = parse_table(text, Table4::Tcp, Endian::Little);
        assert_eq!(
            t,
            Table {
                sockets: vec![],
                malformed: 4
            }
        );
    }

    #[test]
    fn the_digest_ignores_order_and_owners_but_not_a_new_port() {
        let s = |port| Socket {
            table: Table4::Tcp,
            local: "0.0.0.0".parse().unwrap(),
            port,
            inode: u64::from(port),
        };
        let a = [s(22), s(80)];
        let b = [s(80), s(22)];
        assert_eq!(digest_of(a.iter()), digest_of(b.iter()));
        let mut moved = s(22);
        moved.inode = 999; // the same port listened on again by a restarted service
        assert_eq!(digest_of([moved, s(80)].iter()), digest_of(a.iter()));
        assert_ne!(
            digest_of([s(22), s(80), s(443)].iter()),
            digest_of(a.iter())
        );
    }

    #[test]
    fn items_carry_the_owner_only_when_known() {
        let c = Collected {
            sockets: vec![
                (
                    Socket {
                        table: Table4::Tcp6,
                        local: "::".parse().unwrap(),
                        port: 22,
                        inode: 5,
                    },
                    Some(Owner {
                        pid: 42,
                        executable: Some("/usr/sbin/sshd".into()),
                    }),
                ),
                (
                    Socket {
                        table: Table4::Udp,
                        local: "127.0.0.1".parse().unwrap(),
                        port: 323,
                        inode: 6,
                    },
                    None,
                ),
            ],
            ..Collected::default()
        };
        let json = serde_json::to_string(&c.items()).unwrap();
        assert_eq!(
            json,
            r#"[{"LocalAddress":"::","LocalPort":"22","Protocol":"TCP","ExtraDetails":{"Executable":"/usr/sbin/sshd","ProcessId":"42"}},{"LocalAddress":"127.0.0.1","LocalPort":"323","Protocol":"UDP"}]"#
        );
    }

    #[test]
    fn socket_links_are_read_and_others_are_not() {
        assert_eq!(socket_inode(Path::new("socket:[1062]")), Some(1062));
        assert_eq!(socket_inode(Path::new("pipe:[1062]")), None);
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        assert_eq!(socket_inode(Path::new("socket:[x]")), None);
    }
}
