//! The audit rules the module needs, in `auditctl -R` format (`azureiotsecurity rules [--arch
//! ARCH]` prints them, `scripts/setup-host.sh` loads them; the module never changes the host's
//! rules). One rule set per ABI of the machine, every rule tagged with [`KEY`]. The text has no
//! `-D`, `-b` or `-e` line: loading it only adds rules and leaves the rest of the host's audit
//! configuration alone. Login needs no rule: PAM, sshd, su and login write `USER_*` records
//! from user space, and the kernel's `LOGIN` (the write to `/proc/self/loginuid`) is always
//! emitted.

use std::fmt::Write as _;

/// The audit key on every rule (`-k azureiotsecurity`, shown as `-F key=azureiotsecurity`), so
/// an operator (and the setup script) lists and removes exactly these rules with
/// `auditctl -l -k azureiotsecurity` and `auditctl -D -k azureiotsecurity`.
pub const KEY: &str = "azureiotsecurity";

/// A machine architecture the rules are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    I386,
    Aarch64,
    Arm,
}

/// One syscall ABI of a machine, as named by auditctl's `-F arch=` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    B64,
    B32,
}

impl Abi {
    /// The `-F arch=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Abi::B64 => "b64",
            Abi::B32 => "b32",
        }
    }
}

/// Which syscall table an ABI uses: the names `ausyscall` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    X86_64,
    I386,
    Aarch64,
    Arm,
}

impl Table {
    /// The table's name for `ausyscall <table> <syscall>`.
    pub fn ausyscall_name(self) -> &'static str {
        match self {
            Table::X86_64 => "x86_64",
            Table::I386 => "i386",
            Table::Aarch64 => "aarch64",
            Table::Arm => "arm",
        }
    }
}

/// One audit rule: `-a always,exit -F arch=<abi> -S <syscalls> <filters> -k azureiotsecurity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub abi: Abi,
    /// The syscall table of `abi` on the machine the rule is for.
    pub table: Table,
    pub syscalls: &'static [&'static str],
    /// Further `-F` filters, each as `field=value` (in this order).
    pub filters: &'static [&'static str],
}

impl Rule {
    /// The rule as one `auditctl` line (without the newline).
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "-a always,exit -F arch={} -S {}",
            self.abi.as_str(),
            self.syscalls.join(",")
        );
        for f in self.filters {
            // Writing into a String cannot fail.
            let _ = write!(line, " -F {f}");
        }
        let _ = write!(line, " -k {KEY}");
        line
    }
}

/// A failed exec (a `PATH` search hitting `ENOENT`) has no `EXECVE` record and creates no
/// process, and a refused connect (`ECONNREFUSED`, `ENETUNREACH` …) no connection: not worth
/// the kernel's and auditd's time.
const SUCCESS: &[&str] = &["success=1"];
/// A non-blocking connect returns `-EINPROGRESS` (-115), which `success=1` alone would miss,
/// although it is how most daemons connect.
const IN_PROGRESS: &[&str] = &["exit=-EINPROGRESS"];

/// The rules of an ABI whose table has direct `connect`, `accept` and `accept4` (x86_64,
/// aarch64, arm EABI). aarch64 and arm EABI have no `socketcall`: arm's number (102) is
/// OABI-only (`ausyscall arm` still lists it from the old table), and EABI programs, 32-bit
/// ones on aarch64 included, call `connect`, `accept` and `accept4` directly.
fn direct(abi: Abi, table: Table) -> [Rule; 6] {
    [
        Rule {
            abi,
            table,
            // execveat is what fexecve() uses.
            syscalls: &["execve", "execveat"],
            filters: SUCCESS,
        },
        Rule {
            abi,
            table,
            syscalls: &["connect"],
            filters: SUCCESS,
        },
        Rule {
            abi,
            table,
            syscalls: &["connect"],
            filters: IN_PROGRESS,
        },
        Rule {
            abi,
            table,
            // The inbound side: their SOCKADDR is the peer's address.
            syscalls: &["accept", "accept4"],
            filters: SUCCESS,
        },
        // Connect records carry no socket type, and every DNS lookup connects a UDP socket:
        // the module remembers (pid, fd) → SOCK_STREAM/SOCK_DGRAM from the inet socket()
        // calls (a0=2 AF_INET, a0=10 AF_INET6) to tell TCP from UDP.
        Rule {
            abi,
            table,
            syscalls: &["socket"],
            filters: &["a0=2", "success=1"],
        },
        Rule {
            abi,
            table,
            syscalls: &["socket"],
            filters: &["a0=10", "success=1"],
        },
    ]
}

/// The i386 rules (native on i386, the b32 ABI on x86_64): no `accept`, plus `socketcall`.
///
/// i386 programs usually connect through the multiplexer `socketcall` (102), not `connect`:
/// direct socket syscalls only appeared in Linux 4.3, and glibc (a static binary in
/// particular) still goes through `socketcall`, which a `-S connect` rule does not see. So the
/// `socketcall` rules filter on its first argument, the call number. The kernel adds a
/// `SOCKETCALL` record to those events, and the `SOCKADDR` record as for direct syscalls.
fn i386() -> [Rule; 11] {
    let abi = Abi::B32;
    let table = Table::I386;
    [
        Rule {
            abi,
            table,
            syscalls: &["execve", "execveat"],
            filters: SUCCESS,
        },
        Rule {
            abi,
            table,
            syscalls: &["connect"],
            filters: SUCCESS,
        },
        Rule {
            abi,
            table,
            syscalls: &["connect"],
            filters: IN_PROGRESS,
        },
        Rule {
            abi,
            table,
            // i386 has no `accept` (only `accept4`, since 2.6.28, and `socketcall`): libaudit
            // rejects `-F arch=b32 -S accept` on x86.
            syscalls: &["accept4"],
            filters: SUCCESS,
        },
        Rule {
            abi,
            table,
            syscalls: &["socketcall"],
            // SYS_CONNECT, twice as for `connect`: success and EINPROGRESS.
            filters: &["a0=3", "success=1"],
        },
        Rule {
            abi,
            table,
            syscalls: &["socketcall"],
            filters: &["a0=3", "exit=-EINPROGRESS"],
        },
        Rule {
            abi,
            table,
            syscalls: &["socketcall"],
            // SYS_ACCEPT, then SYS_ACCEPT4.
            filters: &["a0=5", "success=1"],
        },
        Rule {
            abi,
            table,
            syscalls: &["socketcall"],
            filters: &["a0=18", "success=1"],
        },
        Rule {
            abi,
            table,
            syscalls: &["socket"],
            filters: &["a0=2", "success=1"],
        },
        Rule {
            abi,
            table,
            syscalls: &["socket"],
            filters: &["a0=10", "success=1"],
        },
        Rule {
            abi,
            table,
            syscalls: &["socketcall"],
            // SYS_SOCKET: a1 only points to the arguments, so the filter cannot see the family.
            filters: &["a0=1", "success=1"],
        },
    ]
}

impl Arch {
    /// From `uname -m` text (`x86_64`, `i686`, `aarch64`, `armv7l` …); `None` if unsupported.
    pub fn from_uname(machine: &str) -> Option<Arch> {
        match machine.trim() {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "i386" | "i486" | "i586" | "i686" => Some(Arch::I386),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            m if m.starts_with("arm") => Some(Arch::Arm),
            _ => None,
        }
    }

    /// The ABIs (and their syscall tables) a machine of this architecture runs. Syscall
    /// numbers differ between ABIs, and a 64-bit kernel also runs 32-bit programs through a
    /// second table, so every rule names its ABI (`-F arch=b64|b32`, which libaudit resolves
    /// against the machine it runs on): `b32` is i386 on x86_64 and arm EABI (compat) on
    /// aarch64.
    pub fn abis(self) -> &'static [(Abi, Table)] {
        match self {
            Arch::X86_64 => &[(Abi::B64, Table::X86_64), (Abi::B32, Table::I386)],
            Arch::Aarch64 => &[(Abi::B64, Table::Aarch64), (Abi::B32, Table::Arm)],
            Arch::I386 => &[(Abi::B32, Table::I386)],
            Arch::Arm => &[(Abi::B32, Table::Arm)],
        }
    }
}

/// The rules for a machine of this architecture, in load order.
pub fn rules(arch: Arch) -> Vec<Rule> {
    let mut out = Vec::new();
    for &(abi, table) in arch.abis() {
        match table {
            Table::I386 => out.extend(i386()),
            Table::X86_64 | Table::Aarch64 | Table::Arm => out.extend(direct(abi, table)),
        }
    }
    out
}

/// The rules text for a machine of this architecture (`auditctl -R` format: one comment line,
/// then one rule per line).
pub fn render(arch: Arch) -> String {
    let name = match arch {
        Arch::X86_64 => "x86_64",
        Arch::I386 => "i386",
        Arch::Aarch64 => "aarch64",
        Arch::Arm => "arm",
    };
    let mut text = format!("# azureiotsecurity audit rules for {name} (azureiotsecurity rules)\n");
    for rule in rules(arch) {
        text.push_str(&rule.to_line());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uname_names() {
        for (m, a) in [
            ("x86_64", Some(Arch::X86_64)),
            ("amd64", Some(Arch::X86_64)),
            ("i386", Some(Arch::I386)),
            ("i486", Some(Arch::I386)),
            ("i586", Some(Arch::I386)),
            ("i686", Some(Arch::I386)),
            ("aarch64", Some(Arch::Aarch64)),
            ("arm64", Some(Arch::Aarch64)),
            ("armv7l", Some(Arch::Arm)),
            ("armv6l", Some(Arch::Arm)),
            ("armv8l", Some(Arch::Arm)),
            ("arm", Some(Arch::Arm)),
            ("x86_64\n", Some(Arch::X86_64)),
            ("", None),
            ("bogus", None),
            ("riscv64", None),
            ("mips", None),
            ("ppc64le", None),
            ("i786", None),
            ("X86_64", None),
        ] {
            assert_eq!(Arch::from_uname(m), a, "{m:?}");
        }
    }

    const I386_LINES: &str = "\
-a always,exit -F arch=b32 -S execve,execveat -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S connect -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S connect -F exit=-EINPROGRESS -k azureiotsecurity
-a always,exit -F arch=b32 -S accept4 -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S socketcall -F a0=3 -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S socketcall -F a0=3 -F exit=-EINPROGRESS -k azureiotsecurity
-a always,exit -F arch=b32 -S socketcall -F a0=5 -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S socketcall -F a0=18 -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S socket -F a0=2 -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S socket -F a0=10 -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S socketcall -F a0=1 -F success=1 -k azureiotsecurity
";

    const ARM_LINES: &str = "\
-a always,exit -F arch=b32 -S execve,execveat -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S connect -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S connect -F exit=-EINPROGRESS -k azureiotsecurity
-a always,exit -F arch=b32 -S accept,accept4 -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S socket -F a0=2 -F success=1 -k azureiotsecurity
-a always,exit -F arch=b32 -S socket -F a0=10 -F success=1 -k azureiotsecurity
";

    const B64_LINES: &str = "\
-a always,exit -F arch=b64 -S execve,execveat -F success=1 -k azureiotsecurity
-a always,exit -F arch=b64 -S connect -F success=1 -k azureiotsecurity
-a always,exit -F arch=b64 -S connect -F exit=-EINPROGRESS -k azureiotsecurity
-a always,exit -F arch=b64 -S accept,accept4 -F success=1 -k azureiotsecurity
-a always,exit -F arch=b64 -S socket -F a0=2 -F success=1 -k azureiotsecurity
-a always,exit -F arch=b64 -S socket -F a0=10 -F success=1 -k azureiotsecurity
";

    #[test]
    fn x86_64_text() {
        let want = format!(
            "# azureiotsecurity audit rules for x86_64 (azureiotsecurity rules)\n{B64_LINES}{I386_LINES}"
        );
        assert_eq!(render(Arch::X86_64), want);
    }

    #[test]
    fn i386_text() {
        let want = format!(
            "# azureiotsecurity audit rules for i386 (azureiotsecurity rules)\n{I386_LINES}"
        );
        assert_eq!(render(Arch::I386), want);
    }

    #[test]
    fn aarch64_text() {
        let want = format!(
            "# azureiotsecurity audit rules for aarch64 (azureiotsecurity rules)\n{B64_LINES}{ARM_LINES}"
        );
        assert_eq!(render(Arch::Aarch64), want);
    }

    #[test]
    fn arm_text() {
        let want =
            format!("# azureiotsecurity audit rules for arm (azureiotsecurity rules)\n{ARM_LINES}");
        assert_eq!(render(Arch::Arm), want);
    }

    #[test]
    fn every_rule_is_keyed_and_only_adds() {
        for arch in [Arch::X86_64, Arch::I386, Arch::Aarch64, Arch::Arm] {
            let text = render(arch);
            let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
            assert_eq!(lines.len(), rules(arch).len(), "{arch:?}");
            for line in lines {
                assert!(line.starts_with("-a always,exit -F arch=b"), "{line}");
                assert!(line.ends_with(" -k azureiotsecurity"), "{line}");
                assert_eq!(line.matches(" -k ").count(), 1, "{line}");
            }
            for bad in ["-D", "-b ", "-e ", "-f "] {
                assert!(!text.lines().any(|l| l.starts_with(bad)), "{arch:?}: {bad}");
            }
        }
    }

    #[test]
    fn tables_match_abis() {
        assert_eq!(
            rules(Arch::X86_64)
                .iter()
                .map(|r| (r.abi, r.table))
                .collect::<Vec<_>>(),
            [
                vec![(Abi::B64, Table::X86_64); 6],
                vec![(Abi::B32, Table::I386); 11]
            ]
            .concat()
        );
        assert!(rules(Arch::Arm).iter().all(|r| r.table == Table::Arm));
        assert!(
            rules(Arch::Arm)
                .iter()
                .all(|r| !r.syscalls.contains(&"socketcall"))
        );
        assert!(
            rules(Arch::I386)
                .iter()
                .all(|r| !r.syscalls.contains(&"accept"))
        );
    }
}
