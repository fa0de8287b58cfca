//! SOCKADDR ([`sockaddr`]): `saddr=` is the hex of the `struct sockaddr` exactly as user space
//! passed it (at most `sizeof(struct sockaddr_storage)` = 128 bytes), logged before the
//! protocol checks it, so it is decoded without allocating and never trusted to be well
//! formed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use thiserror::Error;

use crate::audit::syscalls::Endian;

use super::value::{hex_val, push_lossy};

pub const AF_UNSPEC: u16 = 0;
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const AF_NETLINK: u16 = 16;

/// `sizeof(struct sockaddr_storage)`: the most the kernel logs.
pub const MAX_SOCKADDR_LEN: usize = 128;

/// Room for a unix name: everything after the family.
const UNIX_NAME_MAX: usize = MAX_SOCKADDR_LEN - 2;

/// A unix socket path or abstract name, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UnixName {
    buf: [u8; UNIX_NAME_MAX],
    len: u8,
}

impl UnixName {
    fn new(b: &[u8]) -> Self {
        let mut buf = [0; UNIX_NAME_MAX];
        let len = b.len().min(UNIX_NAME_MAX);
        buf[..len].copy_from_slice(&b[..len]);
        UnixName {
            buf,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len).min(UNIX_NAME_MAX)]
    }
}

impl fmt::Debug for UnixName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The address of an AF_UNIX socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixAddr {
    /// No name: the sockaddr holds just the family (an unbound peer, seen on accept).
    Unnamed,
    /// A filesystem path, up to its NUL.
    Path(UnixName),
    /// An abstract name (after the leading NUL), with trailing NUL padding removed.
    Abstract(UnixName),
}

impl fmt::Display for UnixAddr {
    /// The path; `@name` for an abstract socket (as `ss` shows it); empty when unnamed.
    /// Lossy UTF-8.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, name) = match self {
            UnixAddr::Unnamed => return Ok(()),
            UnixAddr::Path(n) => ("", n),
            UnixAddr::Abstract(n) => ("@", n),
        };
        let mut s = String::with_capacity(UNIX_NAME_MAX + 1);
        s.push_str(prefix);
        push_lossy(&mut s, name.as_bytes());
        f.write_str(&s)
    }
}

/// A decoded `saddr=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockAddr {
    Inet(SocketAddrV4),
    /// `v4_mapped` is the IPv4 address of a `::ffff:a.b.c.d` address (an IPv6 socket
    /// talking IPv4), so callers can report it as IPv4.
    Inet6 {
        addr: SocketAddrV6,
        v4_mapped: Option<Ipv4Addr>,
    },
    Unix(UnixAddr),
    /// `pid` and `groups` in host order.
    Netlink {
        pid: u32,
        groups: u32,
    },
    /// Any other family (AF_UNSPEC 0, AF_PACKET 17, AF_VSOCK 40, …).
    Other(u16),
}

impl SockAddr {
    pub fn family(&self) -> u16 {
        match self {
            SockAddr::Inet(_) => AF_INET,
            SockAddr::Inet6 { .. } => AF_INET6,
            SockAddr::Unix(_) => AF_UNIX,
            SockAddr::Netlink { .. } => AF_NETLINK,
            SockAddr::Other(f) => *f,
        }
    }

    /// The IP address and port; IPv4 for a v4-mapped IPv6 address.
    pub fn ip_port(&self) -> Option<(IpAddr, u16)> {
        match *self {
            SockAddr::Inet(a) => Some((IpAddr::V4(*a.ip()), a.port())),
            SockAddr::Inet6 { addr, v4_mapped } => Some((
                v4_mapped.map_or(IpAddr::V6(*addr.ip()), IpAddr::V4),
                addr.port(),
            )),
            _ => None,
        }
    }
}

/// Why a `saddr=` could not be decoded.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum SockAddrError {
    #[error("saddr is not hex (odd length or a non-hex character)")]
    BadHex,
    #[error("sockaddr of {len} bytes is longer than sockaddr_storage")]
    TooLong { len: usize },
    #[error("sockaddr of {len} bytes has no address family")]
    NoFamily { len: usize },
    #[error("sockaddr of {len} bytes is too short for address family {family}")]
    TooShort { family: u16, len: usize },
}

/// Decode a `saddr=` (hex) of a little-endian machine: all our targets. Use
/// [`sockaddr_endian`] when the record's arch says otherwise.
pub fn sockaddr(saddr_hex: &[u8]) -> Result<SockAddr, SockAddrError> {
    sockaddr_endian(saddr_hex, Endian::Little)
}

/// Decode a `saddr=` (hex) whose host-order fields are in `endian`
/// ([`Endian::of_arch_hex`] of the SYSCALL record's `arch=`). No allocation.
pub fn sockaddr_endian(saddr_hex: &[u8], endian: Endian) -> Result<SockAddr, SockAddrError> {
    if saddr_hex.len() % 2 != 0 {
        return Err(SockAddrError::BadHex);
    }
    let len = saddr_hex.len() / 2;
    if len > MAX_SOCKADDR_LEN {
        return Err(SockAddrError::TooLong { len });
    }
    let mut raw = [0u8; MAX_SOCKADDR_LEN];
    for (out, pair) in raw.iter_mut().zip(saddr_hex.chunks_exact(2)) {
        let &[h, l] = pair else {
            return Err(SockAddrError::BadHex);
        };
        match (hex_val(h), hex_val(l)) {
            (Some(h), Some(l)) => *out = h << 4 | l,
            _ => return Err(SockAddrError::BadHex),
        }
    }
    sockaddr_bytes(&raw[..len], endian)
}

fn array<const N: usize>(s: &[u8], at: usize) -> Option<[u8; N]> {
    s.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn host_u32(b: [u8; 4], endian: Endian) -> u32 {
    match endian {
        Endian::Little => u32::from_le_bytes(b),
        Endian::Big => u32::from_be_bytes(b),
    }
}

/// Decode the raw bytes of a sockaddr.
pub fn sockaddr_bytes(raw: &[u8], endian: Endian) -> Result<SockAddr, SockAddrError> {
    let len = raw.len();
    let &[f0, f1, ref rest @ ..] = raw else {
        return Err(SockAddrError::NoFamily { len });
    };
    // `sa_family` is host-endian: little-endian on all our targets (x86_64, i386, aarch64,
    // arm), big-endian on s390x, ppc64, armeb. Ports, IPv4 addresses and the IPv6 flow label
    // are network order; the IPv6 scope id and netlink pid/groups are host order.
    let family = match endian {
        Endian::Little => u16::from_le_bytes([f0, f1]),
        Endian::Big => u16::from_be_bytes([f0, f1]),
    };
    let short = SockAddrError::TooShort { family, len };
    match family {
        AF_INET => {
            // sin_port, sin_addr (sin_zero is not needed).
            let [p0, p1, a, b, c, d] = array::<6>(rest, 0).ok_or(short)?;
            Ok(SockAddr::Inet(SocketAddrV4::new(
                Ipv4Addr::new(a, b, c, d),
                u16::from_be_bytes([p0, p1]),
            )))
        }
        AF_INET6 => {
            // sin6_port, sin6_flowinfo, sin6_addr, then sin6_scope_id, which the RFC 2133
            // layout (24 bytes, still accepted by the kernel) lacks.
            let port = array::<2>(rest, 0).ok_or(short)?;
            let flow = array::<4>(rest, 2).ok_or(short)?;
            let ip = Ipv6Addr::from(array::<16>(rest, 6).ok_or(short)?);
            let scope = array::<4>(rest, 22).map_or(0, |b| host_u32(b, endian));
            Ok(SockAddr::Inet6 {
                addr: SocketAddrV6::new(
                    ip,
                    u16::from_be_bytes(port),
                    u32::from_be_bytes(flow),
                    scope,
                ),
                v4_mapped: ip.to_ipv4_mapped(),
            })
        }
        // AF_UNIX addresses come in every length: the 2-byte family alone (an unnamed socket,
        // seen on the accept side), just the path and its NUL (46 bytes for
        // `/var/run/nscd/socket`), or padded to the full 110 bytes.
        AF_UNIX => Ok(SockAddr::Unix(match rest {
            [] => UnixAddr::Unnamed,
            // An abstract name starts with a NUL and is delimited by the length, not a NUL.
            [0, name @ ..] => {
                let end = name.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                UnixAddr::Abstract(UnixName::new(&name[..end]))
            }
            path => {
                let end = memchr::memchr(0, path).unwrap_or(path.len());
                UnixAddr::Path(UnixName::new(&path[..end]))
            }
        })),
        AF_NETLINK => {
            // nl_pad, nl_pid, nl_groups.
            let pid = array::<4>(rest, 2).ok_or(short)?;
            let groups = array::<4>(rest, 6).ok_or(short)?;
            Ok(SockAddr::Netlink {
                pid: host_u32(pid, endian),
                groups: host_u32(groups, endian),
            })
        }
        other => Ok(SockAddr::Other(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::decode::{hexu, rec};

    fn sa(h: &str) -> Result<SockAddr, SockAddrError> {
        sockaddr(h.as_bytes())
    }

    fn unix_of(h: &str) -> (UnixAddr, String) {
        match sa(h) {
            Ok(SockAddr::Unix(u)) => (u, u.to_string()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sockaddr_inet() {
        let r = rec(
            "type=SOCKADDR msg=audit(1.0:3): saddr=020046A07F0000010000000000000000\
             \x1dSADDR={ saddr_fam=inet laddr=127.0.0.1 lport=18080 }",
        );
        let a = sockaddr(r.get(b"saddr").unwrap().raw()).unwrap();
        assert_eq!(
            a,
            SockAddr::Inet(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 18080))
        );
        assert_eq!(a.family(), AF_INET);
        assert_eq!(
            a.ip_port(),
            Some((IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 18080))
        );
        // Without sin_zero still fine; shorter is not.
        assert_eq!(
            sa("02000035C0A80101"),
            Ok(SockAddr::Inet(SocketAddrV4::new(
                Ipv4Addr::new(192, 168, 1, 1),
                53
            )))
        );
        assert_eq!(
            sa("02000050"),
            Err(SockAddrError::TooShort { family: 2, len: 4 })
        );
        // Lower-case hex is accepted too.
        assert_eq!(
            sa("020001bbc0a80101"),
            Ok(SockAddr::Inet(SocketAddrV4::new(
                Ipv4Addr::new(192, 168, 1, 1),
                443
            )))
        );
    }

    #[test]
    fn sockaddr_inet6() {
        let a = sa("0A001F900001234520010DB800000000000000000000000103000000").unwrap();
        let SockAddr::Inet6 { addr, v4_mapped } = a else {
            panic!("{a:?}")
        };
        assert_eq!(addr.ip(), &"2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(addr.port(), 8080);
        assert_eq!(addr.flowinfo(), 0x12345);
        assert_eq!(addr.scope_id(), 3);
        assert_eq!(v4_mapped, None);
        assert_eq!(a.family(), AF_INET6);
        assert_eq!(
            a.ip_port(),
            Some((IpAddr::V6("2001:db8::1".parse().unwrap()), 8080))
        );
        // RFC 2133 layout: no scope id.
        let a = sa("0A0000160000000000000000000000000000000000000001").unwrap();
        let SockAddr::Inet6 { addr, .. } = a else {
            panic!("{a:?}")
        };
        assert_eq!(
            (addr.ip(), addr.port(), addr.scope_id()),
            (&Ipv6Addr::LOCALHOST, 22, 0)
        );
        assert_eq!(
            sa("0A00001600000000000000000000000000000000000000"),
            Err(SockAddrError::TooShort {
                family: 10,
                len: 23
            })
        );
    }

    #[test]
    fn sockaddr_inet6_v4_mapped() {
        let a = sa("0A0000500000000000000000000000000000FFFF0A01020300000000").unwrap();
        let SockAddr::Inet6 { addr, v4_mapped } = a else {
            panic!("{a:?}")
        };
        assert_eq!(v4_mapped, Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(addr.ip().to_string(), "::ffff:10.1.2.3");
        assert_eq!(
            a.ip_port(),
            Some((IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 80))
        );
        // The deprecated v4-compatible form ::a.b.c.d is not v4-mapped.
        let a = sa("0A00005000000000000000000000000000000000000000000A01020300000000");
        assert!(matches!(a, Err(SockAddrError::TooLong { .. }) | Ok(_)));
        let a = sa("0A0000500000000000000000000000000000000000000A010203")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            a,
            SockAddr::Inet6 {
                v4_mapped: None,
                ..
            }
        ));
    }

    #[test]
    fn sockaddr_unix_path() {
        // 46 bytes: family, path, NUL and some padding (the length user space passed).
        let path = b"/var/lib/collectd/unixsock";
        let mut raw = vec![1, 0];
        raw.extend_from_slice(path);
        raw.resize(46, 0);
        let (u, s) = unix_of(&hexu(&raw));
        assert_eq!(u, UnixAddr::Path(UnixName::new(path)));
        assert_eq!(s, "/var/lib/collectd/unixsock");
        // Padded to the full sockaddr_un (110 bytes).
        let mut raw = vec![1, 0];
        raw.extend_from_slice(b"/tmp/p/u.sock");
        raw.resize(110, 0);
        let (_, s) = unix_of(&hexu(&raw));
        assert_eq!(s, "/tmp/p/u.sock");
        // Without a NUL at all.
        let (_, s) = unix_of("01002F72756E2F78");
        assert_eq!(s, "/run/x");
        // Non-UTF-8 path bytes.
        let (u, s) = unix_of("01002F74FF00");
        match u {
            UnixAddr::Path(n) => assert_eq!(n.as_bytes(), b"/t\xff"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s, "/t\u{FFFD}");
        // The longest the kernel logs: 126 name bytes.
        let mut raw = vec![1, 0];
        raw.resize(128, b'a');
        let (u, _) = unix_of(&hexu(&raw));
        assert!(matches!(u, UnixAddr::Path(n) if n.as_bytes() == [b'a'; 126]));
    }

    #[test]
    fn sockaddr_unix_abstract_and_unnamed() {
        let mut raw = vec![1, 0, 0];
        raw.extend_from_slice(b"probe-abstract");
        let (u, s) = unix_of(&hexu(&raw));
        assert_eq!(u, UnixAddr::Abstract(UnixName::new(b"probe-abstract")));
        assert_eq!(s, "@probe-abstract");
        raw.resize(110, 0);
        let (_, s) = unix_of(&hexu(&raw));
        assert_eq!(s, "@probe-abstract");
        // An abstract name may contain NUL: it is delimited by the length.
        let (u, s) = unix_of("010000610062");
        assert!(matches!(u, UnixAddr::Abstract(n) if n.as_bytes() == b"a\0b"));
        assert_eq!(s, "@a\0b");
        // Just the family: unnamed (accept of an unbound peer).
        let (u, s) = unix_of("0100");
        assert_eq!(u, UnixAddr::Unnamed);
        assert_eq!(s, "");
        assert_eq!(sa("0100").map(|a| a.family()), Ok(AF_UNIX));
        assert_eq!(sa("0100").unwrap().ip_port(), None);
    }

    #[test]
    fn sockaddr_netlink_and_others() {
        assert_eq!(
            sa("10000000D204000001000000"),
            Ok(SockAddr::Netlink {
                pid: 1234,
                groups: 1
            })
        );
        assert_eq!(
            sa("10000000D2040000"),
            Err(SockAddrError::TooShort { family: 16, len: 8 })
        );
        assert_eq!(sa("1100030001000000"), Ok(SockAddr::Other(17)));
        assert_eq!(sa("0000"), Ok(SockAddr::Other(AF_UNSPEC)));
        assert_eq!(sa("0000").unwrap().family(), 0);
    }

    #[test]
    fn sockaddr_errors() {
        assert_eq!(sa(""), Err(SockAddrError::NoFamily { len: 0 }));
        assert_eq!(sa("02"), Err(SockAddrError::NoFamily { len: 1 }));
        assert_eq!(sa("0"), Err(SockAddrError::BadHex));
        assert_eq!(sa("020"), Err(SockAddrError::BadHex));
        assert_eq!(sa("0G00"), Err(SockAddrError::BadHex));
        assert_eq!(sa("(null)"), Err(SockAddrError::BadHex));
        let long = "01".repeat(129);
        assert_eq!(sa(&long), Err(SockAddrError::TooLong { len: 129 }));
        assert_eq!(
            SockAddrError::TooShort { family: 2, len: 4 }.to_string(),
            "sockaddr of 4 bytes is too short for address family 2"
        );
    }

    #[test]
    fn sockaddr_big_endian() {
        let h = b"000200507F0000010000000000000000";
        assert_eq!(
            sockaddr_endian(h, Endian::Big),
            Ok(SockAddr::Inet(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80)))
        );
        assert_eq!(
            sockaddr_endian(h, Endian::Little),
            Ok(SockAddr::Other(0x200))
        );
        assert_eq!(
            sockaddr_endian(b"00100000000004D200000001", Endian::Big),
            Ok(SockAddr::Netlink {
                pid: 1234,
                groups: 1
            })
        );
        let be = Endian::of_arch_hex(b"80000016");
        assert_eq!(
            sockaddr_endian(
                b"000A0050000000000000000000000000000000000000000100000007",
                be
            )
            .map(|a| match a {
                SockAddr::Inet6 { addr, .. } => addr.scope_id(),
                _ => 0,
            }),
            Ok(7)
        );
    }
}
