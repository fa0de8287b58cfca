//! Audit architectures and the syscall numbers the module cares about.
//!
//! A SYSCALL record names its ABI with `arch=` (the kernel's `AUDIT_ARCH_*`, hex without
//! `0x`) and the call with `syscall=` (decimal, that ABI's own number). The same call has a
//! different number on every ABI, and a 64-bit kernel runs 32-bit processes with the 32-bit
//! numbers, so a number means nothing without its arch: [`classify`] takes both.

// An `AUDIT_ARCH_*` constant is the ELF machine (`EM_*`) or-ed with these two flags.

/// `__AUDIT_ARCH_64BIT`.
pub const ARCH_64BIT: u32 = 0x8000_0000;
/// `__AUDIT_ARCH_LE`: the ABI is little-endian. It matters for SOCKADDR, whose `sa_family`
/// is host-endian (see [`super::decode::sockaddr_endian`]).
pub const ARCH_LE: u32 = 0x4000_0000;

/// `AUDIT_ARCH_X86_64` (`EM_X86_64` 62 | 64BIT | LE). x32 shares it, with syscall numbers
/// that have bit 0x4000_0000 set: not mapped, they classify as [`Syscall::Other`].
pub const ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_I386` (`EM_386` 3 | LE).
pub const ARCH_I386: u32 = 0x4000_0003;
/// `AUDIT_ARCH_AARCH64` (`EM_AARCH64` 183 | 64BIT | LE).
pub const ARCH_AARCH64: u32 = 0xc000_00b7;
/// `AUDIT_ARCH_ARM` (`EM_ARM` 40 | LE).
pub const ARCH_ARM: u32 = 0x4000_0028;
/// `AUDIT_ARCH_ARMEB` (`EM_ARM` 40, big-endian).
pub const ARCH_ARMEB: u32 = 0x0000_0028;

/// i386 and ARM OABI `socketcall(call, args)`, whose first argument selects the operation.
/// i386 has no `accept`, and its direct `socket`, `connect` and `accept4` only appeared in
/// Linux 4.3: before that, and still in static or old glibc, every socket call goes through
/// it. 32-bit ARM EABI has no 102 (only OABI does), but both report `arch=40000028`, so 102 is
/// mapped as on i386: right for OABI, harmless for EABI.
pub const NR_SOCKETCALL_32: u64 = 102;

/// `socketcall` operation numbers (`include/uapi/linux/net.h`).
pub const SYS_SOCKET: u64 = 1;
pub const SYS_CONNECT: u64 = 3;
pub const SYS_ACCEPT: u64 = 5;
pub const SYS_ACCEPT4: u64 = 18;

/// Byte order of an ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Endian {
    #[default]
    Little,
    Big,
}

impl Endian {
    /// The byte order of an `AUDIT_ARCH_*` value: its `__AUDIT_ARCH_LE` bit.
    pub fn of_arch(arch: u32) -> Endian {
        if arch & ARCH_LE != 0 {
            Endian::Little
        } else {
            Endian::Big
        }
    }

    /// The byte order of an `arch=` field; little-endian when the field is not a hex
    /// number (all our targets are little-endian).
    pub fn of_arch_hex(arch_hex: &[u8]) -> Endian {
        parse_arch(arch_hex).map_or(Endian::Little, Endian::of_arch)
    }
}

/// The calls the module derives events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syscall {
    Execve,
    Execveat,
    Connect,
    Accept,
    Accept4,
    Socket,
    Other,
}

/// The numbers of one ABI.
struct Table {
    arch: u32,
    name: &'static str,
    execve: u64,
    execveat: u64,
    connect: u64,
    /// i386 has none (only `socketcall(SYS_ACCEPT)` and `accept4`).
    accept: Option<u64>,
    accept4: u64,
    socket: u64,
    socketcall: Option<u64>,
}

/// Every number checked with `ausyscall <arch> <name>` (auditd 3.0.9): `ausyscall x86_64
/// execve` → 59, `ausyscall i386 socketcall` → 102, and so on.
const TABLES: &[Table] = &[
    Table {
        arch: ARCH_X86_64,
        name: "x86_64",
        execve: 59,
        execveat: 322,
        connect: 42,
        accept: Some(43),
        accept4: 288,
        socket: 41,
        socketcall: None,
    },
    Table {
        arch: ARCH_I386,
        name: "i386",
        execve: 11,
        execveat: 358,
        connect: 362,
        accept: None,
        accept4: 364,
        socket: 359,
        socketcall: Some(NR_SOCKETCALL_32),
    },
    Table {
        arch: ARCH_AARCH64,
        name: "aarch64",
        execve: 221,
        execveat: 281,
        connect: 203,
        accept: Some(202),
        accept4: 242,
        socket: 198,
        socketcall: None,
    },
    Table {
        arch: ARCH_ARM,
        // auparse names both 32-bit ARM arches `armeb` (its machine table has one ARM entry,
        // and the enriched `ARCH=` shows `armeb` even on little-endian ARM): we say `arm`.
        name: "arm",
        execve: 11,
        execveat: 387,
        connect: 283,
        accept: Some(285),
        accept4: 366,
        socket: 281,
        socketcall: Some(NR_SOCKETCALL_32),
    },
    Table {
        arch: ARCH_ARMEB,
        name: "armeb",
        execve: 11,
        execveat: 387,
        connect: 283,
        accept: Some(285),
        accept4: 366,
        socket: 281,
        socketcall: Some(NR_SOCKETCALL_32),
    },
];

/// Parse an unsigned hex number as the kernel writes it (no `0x`, either case); at most 16
/// digits.
pub fn parse_hex_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        n = n << 4 | u64::from(d);
    }
    Some(n)
}

/// The `AUDIT_ARCH_*` value of an `arch=` field (`c000003e`).
pub fn parse_arch(arch_hex: &[u8]) -> Option<u32> {
    parse_hex_u64(arch_hex).and_then(|a| u32::try_from(a).ok())
}

fn table(arch_hex: &[u8]) -> Option<&'static Table> {
    let arch = parse_arch(arch_hex)?;
    TABLES.iter().find(|t| t.arch == arch)
}

/// The name of a known arch: `x86_64`, `i386`, `aarch64`, `arm`, `armeb`.
pub fn arch_name(arch_hex: &[u8]) -> Option<&'static str> {
    table(arch_hex).map(|t| t.name)
}

/// Whether `syscall_no` is the `socketcall` multiplexer on this arch (i386, 32-bit ARM).
pub fn is_socketcall(arch_hex: &[u8], syscall_no: u64) -> bool {
    table(arch_hex).is_some_and(|t| t.socketcall == Some(syscall_no))
}

/// What a SYSCALL record's call is. `a0` is the record's `a0=` (hex), needed only to map
/// `socketcall` to the call it stands for. Unknown arches and numbers are [`Syscall::Other`].
pub fn classify(arch_hex: &[u8], syscall_no: u64, a0: Option<&[u8]>) -> Syscall {
    let Some(t) = table(arch_hex) else {
        return Syscall::Other;
    };
    let n = syscall_no;
    if n == t.execve {
        Syscall::Execve
    } else if n == t.execveat {
        Syscall::Execveat
    } else if n == t.connect {
        Syscall::Connect
    } else if t.accept == Some(n) {
        Syscall::Accept
    } else if n == t.accept4 {
        Syscall::Accept4
    } else if n == t.socket {
        Syscall::Socket
    } else if t.socketcall == Some(n) {
        // The SYSCALL record writes a0…a3 in hex without `0x`: `a0=12` is 18 (SYS_ACCEPT4),
        // not 12 (SYS_RECVFROM).
        match a0.and_then(parse_hex_u64) {
            Some(SYS_SOCKET) => Syscall::Socket,
            Some(SYS_CONNECT) => Syscall::Connect,
            Some(SYS_ACCEPT) => Syscall::Accept,
            Some(SYS_ACCEPT4) => Syscall::Accept4,
            _ => Syscall::Other,
        }
    } else {
        Syscall::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values are `ausyscall <arch> <name>` output (auditd 3.0.9 on Debian 12):
    //   x86_64:  execve 59, execveat 322, connect 42, accept 43, accept4 288, socket 41,
    //            socketcall "Unknown syscall"
    //   i386:    execve 11, execveat 358, connect 362, accept4 364, socket 359, socketcall 102
    //            (`ausyscall i386 --dump` has no plain accept)
    //   aarch64: execve 221, execveat 281, connect 203, accept 202, accept4 242, socket 198
    //   arm:     execve 11, execveat 387, connect 283, accept 285, accept4 366, socket 281,
    //            socketcall 102
    // Re-check with e.g. `for s in execve connect; do ausyscall aarch64 $s; done`; the tests
    // themselves do not need ausyscall.

    /// Every number below 1000 that classifies as something (without a socketcall a0),
    /// sorted by number.
    fn mapped(arch: &[u8]) -> Vec<(u64, Syscall)> {
        (0..1000u64)
            .map(|n| (n, classify(arch, n, None)))
            .filter(|&(_, s)| s != Syscall::Other)
            .collect()
    }

    #[test]
    fn x86_64_numbers() {
        assert_eq!(
            mapped(b"c000003e"),
            vec![
                (41, Syscall::Socket),
                (42, Syscall::Connect),
                (43, Syscall::Accept),
                (59, Syscall::Execve),
                (288, Syscall::Accept4),
                (322, Syscall::Execveat),
            ]
        );
        assert!(!is_socketcall(b"c000003e", 102));
        assert_eq!(classify(b"c000003e", 102, Some(b"3")), Syscall::Other);
        assert_eq!(arch_name(b"c000003e"), Some("x86_64"));
        assert_eq!(arch_name(b"C000003E"), Some("x86_64"));
    }

    #[test]
    fn i386_numbers_and_socketcall() {
        // No plain accept on i386: only socketcall(SYS_ACCEPT), below.
        assert_eq!(
            mapped(b"40000003"),
            vec![
                (11, Syscall::Execve),
                (358, Syscall::Execveat),
                (359, Syscall::Socket),
                (362, Syscall::Connect),
                (364, Syscall::Accept4),
            ]
        );
        assert!(is_socketcall(b"40000003", 102));
        assert!(!is_socketcall(b"40000003", 11));
        assert_eq!(classify(b"40000003", 102, Some(b"1")), Syscall::Socket);
        assert_eq!(classify(b"40000003", 102, Some(b"3")), Syscall::Connect);
        assert_eq!(classify(b"40000003", 102, Some(b"5")), Syscall::Accept);
        // a0 is hex: 0x12 = 18 = SYS_ACCEPT4; a decimal reading would say SYS_RECVFROM.
        assert_eq!(classify(b"40000003", 102, Some(b"12")), Syscall::Accept4);
        assert_eq!(classify(b"40000003", 102, Some(b"18")), Syscall::Other); // 0x18 = 24
        assert_eq!(classify(b"40000003", 102, Some(b"2")), Syscall::Other); // bind
        assert_eq!(classify(b"40000003", 102, Some(b"zz")), Syscall::Other);
        assert_eq!(classify(b"40000003", 102, None), Syscall::Other);
        assert_eq!(classify(b"40000003", 43, None), Syscall::Other); // x86_64's accept
        assert_eq!(arch_name(b"40000003"), Some("i386"));
    }

    #[test]
    fn aarch64_numbers() {
        assert_eq!(
            mapped(b"c00000b7"),
            vec![
                (198, Syscall::Socket),
                (202, Syscall::Accept),
                (203, Syscall::Connect),
                (221, Syscall::Execve),
                (242, Syscall::Accept4),
                (281, Syscall::Execveat),
            ]
        );
        assert!(!is_socketcall(b"c00000b7", 102));
        assert_eq!(arch_name(b"c00000b7"), Some("aarch64"));
    }

    #[test]
    fn arm_numbers() {
        for arch in [&b"40000028"[..], b"28", b"00000028"] {
            assert_eq!(
                mapped(arch),
                vec![
                    (11, Syscall::Execve),
                    (281, Syscall::Socket),
                    (283, Syscall::Connect),
                    (285, Syscall::Accept),
                    (366, Syscall::Accept4),
                    (387, Syscall::Execveat),
                ]
            );
            assert!(is_socketcall(arch, 102));
            assert_eq!(classify(arch, 102, Some(b"3")), Syscall::Connect);
        }
        assert_eq!(arch_name(b"40000028"), Some("arm"));
        assert_eq!(arch_name(b"28"), Some("armeb"));
    }

    #[test]
    fn unknown_arches() {
        for arch in [&b""[..], b"zz", b"c0000015", b"1c000003e", b"0x3e"] {
            assert_eq!(classify(arch, 59, None), Syscall::Other);
            assert_eq!(arch_name(arch), None);
            assert!(!is_socketcall(arch, 102));
        }
        assert_eq!(classify(b"c000003e", u64::MAX, None), Syscall::Other);
    }

    #[test]
    fn endianness() {
        assert_eq!(Endian::of_arch_hex(b"c000003e"), Endian::Little);
        assert_eq!(Endian::of_arch_hex(b"40000003"), Endian::Little);
        assert_eq!(Endian::of_arch_hex(b"c00000b7"), Endian::Little);
        assert_eq!(Endian::of_arch_hex(b"40000028"), Endian::Little);
        assert_eq!(Endian::of_arch_hex(b"28"), Endian::Big);
        // s390x: EM_S390 22 | 64BIT, big-endian.
        assert_eq!(Endian::of_arch_hex(b"80000016"), Endian::Big);
        assert_eq!(Endian::of_arch_hex(b"nothex"), Endian::Little);
        assert_eq!(Endian::of_arch(ARCH_X86_64), Endian::Little);
    }

    #[test]
    fn hex_numbers() {
        assert_eq!(parse_hex_u64(b"12"), Some(18));
        assert_eq!(parse_hex_u64(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex_u64(b"1ffffffffffffffff"), None);
        assert_eq!(parse_hex_u64(b""), None);
        assert_eq!(parse_hex_u64(b"-1"), None);
        assert_eq!(parse_arch(b"c000003e"), Some(ARCH_X86_64));
        assert_eq!(parse_arch(b"100000000"), None);
    }
}
