//! The decoders on arbitrary input.
//!
//! - EXECVE argv: every line is a record (one that does not parse is read as the body of an
//!   EXECVE record); EXECVE records go through `Argv::add_record`, the fields of any other
//!   record through `Argv::add_field`. The result must be consistent: as many arguments
//!   from `iter` as `len`, `get` past the end is `None`, the command line within the bound.
//! - SOCKADDR: `saddr=` values of the records, and the input itself both as hex text and as
//!   raw bytes, in both byte orders; decoding the hex of some bytes gives what decoding the
//!   bytes gives.
//! - PROCTITLE: `proctitle=` values, and the input as bare (hex) and quoted values.

#![no_main]

use std::fmt::Write as _;

use azureiotsecurity::audit::decode::{
    self, AF_INET, AF_INET6, Argv, ArgvLimits, MAX_SOCKADDR_LEN, SockAddr,
};
use azureiotsecurity::audit::parse::{Record, Value};
use azureiotsecurity::audit::syscalls::{self, Endian};
use azureiotsecurity::audit::types;
use libfuzzer_sys::fuzz_target;

const LIMITS: ArgvLimits = ArgvLimits {
    max_bytes: 4096,
    max_args: 1024,
};

fn hex_upper(b: &[u8]) -> Vec<u8> {
    const D: &[u8; 16] = b"0123456789ABCDEF";
    b.iter()
        .flat_map(|&x| [D[usize::from(x >> 4)], D[usize::from(x & 15)]])
        .collect()
}

fn check_sockaddr(r: Result<SockAddr, decode::SockAddrError>) {
    let mut s = String::new();
    match r {
        Ok(sa) => {
            let fam = sa.family();
            let ip = sa.ip_port();
            assert_eq!(ip.is_some(), fam == AF_INET || fam == AF_INET6);
            if let SockAddr::Unix(u) = sa {
                let _ = write!(s, "{u}");
            }
            let _ = write!(s, "{sa:?}");
        }
        Err(e) => {
            let _ = write!(s, "{e}");
        }
    }
}

fn check_proctitle(v: Value<'_>) {
    let p = decode::proctitle(v);
    let n = p.args().count();
    assert!(n <= p.as_bytes().len() + 1);
    let line = p.command_line();
    assert!(line.len() <= 3 * p.as_bytes().len() + n);
    let _ = p.possibly_truncated();
}

fuzz_target!(|data: &[u8]| {
    // argv
    let mut argv = Argv::new(LIMITS);
    let mut wrapped = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        match Record::parse(line) {
            Ok(rec) if rec.rtype == types::EXECVE => argv.add_record(&rec),
            Ok(rec) => {
                let arch = rec.get(b"arch").map(|v| v.raw()).unwrap_or_default();
                let endian = Endian::of_arch_hex(arch);
                if let (Some(n), a0) =
                    (rec.get(b"syscall").and_then(|v| v.as_u64()), rec.get(b"a0"))
                {
                    let _ = syscalls::classify(arch, n, a0.map(|v| v.raw()));
                    let _ = syscalls::is_socketcall(arch, n);
                }
                let _ = syscalls::arch_name(arch);
                for f in rec.fields() {
                    argv.add_field(f.key, f.value);
                    match f.key {
                        b"saddr" => check_sockaddr(decode::sockaddr_endian(f.value.raw(), endian)),
                        b"proctitle" => check_proctitle(f.value),
                        _ => {}
                    }
                }
            }
            Err(_) => {
                wrapped.clear();
                wrapped.extend_from_slice(b"type=EXECVE msg=audit(1.000:1): ");
                wrapped.extend_from_slice(line);
                if let Ok(rec) = Record::parse(&wrapped) {
                    argv.add_record(&rec);
                }
            }
        }
    }
    let argv = argv.finish();
    assert_eq!(argv.iter().count(), argv.len());
    assert_eq!(argv.iter().len(), argv.len());
    assert!(argv.get(argv.len()).is_none());
    for i in 0..argv.len().min(64) {
        assert!(argv.get(i).is_some());
        assert_eq!(argv.get(i), argv.iter().nth(i));
    }
    let line = argv.command_line();
    assert!(
        line.len() <= LIMITS.max_bytes,
        "command line of {} bytes",
        line.len()
    );
    let _ = argv.is_complete();
    let _ = argv.is_empty();

    // sockaddr: the input as hex text, and as raw bytes (also through their hex).
    for endian in [Endian::Little, Endian::Big] {
        check_sockaddr(decode::sockaddr_endian(data, endian));
        let raw = &data[..data.len().min(MAX_SOCKADDR_LEN)];
        let direct = decode::sockaddr_bytes(raw, endian);
        let via_hex = decode::sockaddr_endian(&hex_upper(raw), endian);
        assert_eq!(direct, via_hex, "hex and raw decodings differ");
        check_sockaddr(direct);
    }
    check_sockaddr(decode::sockaddr(data));

    // proctitle and the other encoded-string helpers.
    check_proctitle(Value::Bare(data));
    check_proctitle(Value::Quoted(data));
    let hex = hex_upper(&data[..data.len().min(256)]);
    let p = decode::proctitle(Value::Bare(&hex));
    assert_eq!(p.as_bytes(), &data[..data.len().min(256)]);
    let _ = decode::field_string(Value::Bare(data));
    let _ = decode::hex_or_raw(data);
    let mut s = String::new();
    decode::push_lossy(&mut s, data);
    assert!(s.len() <= 3 * data.len());
});
