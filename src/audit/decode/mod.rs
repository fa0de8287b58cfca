//! Decoding of the values the kernel encodes, one decoder per file: [`value`] (quoted or
//! hex strings, lossy text), [`execve`] (argv across EXECVE records),
//! [`proctitle`](mod@proctitle) (PROCTITLE) and [`sockaddr`](mod@sockaddr) (SOCKADDR). Each
//! works on parsed records ([`super::parse`]), allocates within stated bounds and never fails
//! on hostile input: it says what was missing or why a value could not be decoded.

pub mod execve;
pub mod proctitle;
pub mod sockaddr;
pub mod value;

pub use execve::{ArgIter, Argv, ArgvLimits, ArgvResult, MAX_EXECVE_AUDIT_LEN};
pub use proctitle::{MAX_PROCTITLE_AUDIT_LEN, Proctitle, proctitle};
pub use sockaddr::{
    AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, AF_UNSPEC, MAX_SOCKADDR_LEN, SockAddr, SockAddrError,
    UnixAddr, UnixName, sockaddr, sockaddr_bytes, sockaddr_endian,
};
pub use value::{field_string, hex, hex_into, hex_or_raw, push_lossy};

/// A parsed record of a test line (the decoders' tests share it).
#[cfg(test)]
fn rec(line: &str) -> crate::audit::parse::Record<'_> {
    crate::audit::parse::Record::parse(line.as_bytes()).unwrap()
}

/// Upper-case hex of `b`, as the kernel writes it.
#[cfg(test)]
fn hexu(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}
