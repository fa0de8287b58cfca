//! The `/proc/net/{tcp,tcp6,udp,udp6}` table parser on arbitrary input.
//!
//! The first byte picks the table (low 2 bits) and the byte order (bit 2); the rest is the
//! table's text. The parser must not panic, and what it returns must be consistent:
//!
//! - no more sockets plus malformed lines than the text has non-empty lines;
//! - every socket is of the table asked for, and of its address family;
//! - read in the other byte order, the same lines are sockets, with the same ports and
//!   inodes (only the address words differ);
//! - a socket printed back as the kernel prints it parses to the same socket.

#![no_main]

use std::fmt::Write as _;
use std::net::IpAddr;

use azureiotsecurity::collectors::listening_ports::{Endian, Socket, Table4, parse_table};
use libfuzzer_sys::fuzz_target;

/// One line as the kernel prints it (`sl: local remote st tx:rx tr:when retrnsmt uid
/// timeout inode`), its address words in `endian`.
fn kernel_line(s: &Socket, endian: Endian) -> String {
    let bytes: Vec<u8> = match s.local {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut addr = String::new();
    for w in bytes.chunks(4) {
        let w: [u8; 4] = [w[0], w[1], w[2], w[3]];
        let word = match endian {
            Endian::Little => u32::from_le_bytes(w),
            Endian::Big => u32::from_be_bytes(w),
        };
        write!(addr, "{word:08X}").unwrap();
    }
    let remote = "0".repeat(addr.len());
    let state = match s.table {
        Table4::Tcp | Table4::Tcp6 => "0A",
        Table4::Udp | Table4::Udp6 => "07",
    };
    format!(
        "   0: {addr}:{:04X} {remote}:0000 {state} 00000000:00000000 00:00000000 00000000     0        0 {} 1\n",
        s.port, s.inode
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let table = Table4::ALL[usize::from(head & 3)];
    let (endian, other) = if head & 4 == 0 {
        (Endian::Little, Endian::Big)
    } else {
        (Endian::Big, Endian::Little)
    };
    let text = String::from_utf8_lossy(rest);
    let t = parse_table(&text, table, endian);
    let lines = text
        .lines()
        .filter(|l| l.split_ascii_whitespace().next().is_some())
        .count();
    assert!(t.sockets.len() + t.malformed <= lines, "{t:?} from {lines} lines");
    let v6 = matches!(table, Table4::Tcp6 | Table4::Udp6);
    for s in &t.sockets {
        assert_eq!(s.table, table);
        assert_eq!(s.local.is_ipv6(), v6, "{s:?}");
    }

    let o = parse_table(&text, table, other);
    assert_eq!(o.malformed, t.malformed);
    let key = |s: &Socket| (s.port, s.inode);
    assert_eq!(
        o.sockets.iter().map(key).collect::<Vec<_>>(),
        t.sockets.iter().map(key).collect::<Vec<_>>()
    );

    for s in &t.sockets {
        let line = kernel_line(s, endian);
        let back = parse_table(&line, table, endian);
        assert_eq!(back.malformed, 0, "{line}");
        assert_eq!(back.sockets, vec![s.clone()], "{line}");
    }
});
