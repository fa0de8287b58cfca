//! Audit record type numbers (from the kernel's `include/uapi/linux/audit.h` and libaudit's
//! `libaudit.h`; numbers are facts, the table is ours).
//!
//! Only the numbers matter to the coalescer (which types are single-record events) and to
//! the derivers; names we do not know map to 0 and are kept as text by the parser.

pub const LOGIN: u16 = 1006;
pub const USER_AUTH: u16 = 1100;
pub const USER_ACCT: u16 = 1101;
pub const USER_MGMT: u16 = 1102;
pub const CRED_ACQ: u16 = 1103;
pub const CRED_DISP: u16 = 1104;
pub const USER_START: u16 = 1105;
pub const USER_END: u16 = 1106;
pub const USER_CHAUTHTOK: u16 = 1108;
pub const USER_ERR: u16 = 1109;
pub const CRED_REFR: u16 = 1110;
pub const USER_LOGIN: u16 = 1112;
pub const USER_LOGOUT: u16 = 1113;
pub const ADD_USER: u16 = 1114;
pub const DEL_USER: u16 = 1115;
pub const ADD_GROUP: u16 = 1116;
pub const DEL_GROUP: u16 = 1117;
pub const USER_CMD: u16 = 1123;
pub const DAEMON_START: u16 = 1200;
pub const DAEMON_END: u16 = 1201;
pub const DAEMON_ABORT: u16 = 1202;
pub const DAEMON_CONFIG: u16 = 1203;
pub const DAEMON_ROTATE: u16 = 1205;
pub const DAEMON_RESUME: u16 = 1206;
pub const SYSCALL: u16 = 1300;
pub const PATH: u16 = 1302;
pub const IPC: u16 = 1303;
pub const SOCKETCALL: u16 = 1304;
pub const CONFIG_CHANGE: u16 = 1305;
pub const SOCKADDR: u16 = 1306;
pub const CWD: u16 = 1307;
pub const EXECVE: u16 = 1309;
pub const EOE: u16 = 1320;
pub const BPRM_FCAPS: u16 = 1321;
pub const CAPSET: u16 = 1322;
pub const MMAP: u16 = 1323;
pub const NETFILTER_PKT: u16 = 1324;
pub const NETFILTER_CFG: u16 = 1325;
pub const SECCOMP: u16 = 1326;
pub const PROCTITLE: u16 = 1327;
pub const KERNEL: u16 = 2000;

/// The first kernel event type: types below it (but LOGIN) are single-record events.
pub const FIRST_EVENT: u16 = 1300;

/// Record types whose name we know, and their numbers.
const TABLE: &[(&[u8], u16)] = &[
    (b"SYSCALL", SYSCALL),
    (b"EOE", EOE),
    (b"PATH", PATH),
    (b"CWD", CWD),
    (b"EXECVE", EXECVE),
    (b"PROCTITLE", PROCTITLE),
    (b"BPRM_FCAPS", BPRM_FCAPS),
    (b"SOCKADDR", SOCKADDR),
    (b"SOCKETCALL", SOCKETCALL),
    (b"LOGIN", LOGIN),
    (b"USER_AUTH", USER_AUTH),
    (b"USER_ACCT", USER_ACCT),
    (b"USER_MGMT", USER_MGMT),
    (b"CRED_ACQ", CRED_ACQ),
    (b"CRED_DISP", CRED_DISP),
    (b"USER_START", USER_START),
    (b"USER_END", USER_END),
    (b"USER_CHAUTHTOK", USER_CHAUTHTOK),
    (b"USER_ERR", USER_ERR),
    (b"CRED_REFR", CRED_REFR),
    (b"USER_LOGIN", USER_LOGIN),
    (b"USER_LOGOUT", USER_LOGOUT),
    (b"ADD_USER", ADD_USER),
    (b"DEL_USER", DEL_USER),
    (b"ADD_GROUP", ADD_GROUP),
    (b"DEL_GROUP", DEL_GROUP),
    (b"USER_CMD", USER_CMD),
    (b"DAEMON_START", DAEMON_START),
    (b"DAEMON_END", DAEMON_END),
    (b"DAEMON_ABORT", DAEMON_ABORT),
    (b"DAEMON_CONFIG", DAEMON_CONFIG),
    (b"DAEMON_ROTATE", DAEMON_ROTATE),
    (b"DAEMON_RESUME", DAEMON_RESUME),
    (b"DAEMON_ACCEPT", 1207),
    (b"DAEMON_CLOSE", 1208),
    (b"DAEMON_ERR", 1209),
    (b"IPC", IPC),
    (b"CONFIG_CHANGE", CONFIG_CHANGE),
    (b"CAPSET", CAPSET),
    (b"MMAP", MMAP),
    (b"NETFILTER_PKT", NETFILTER_PKT),
    (b"NETFILTER_CFG", NETFILTER_CFG),
    (b"SECCOMP", SECCOMP),
    (b"KERNEL", KERNEL),
    (b"USER", 1005),
    (b"USER_AVC", 1107),
    (b"USER_SELINUX_ERR", 1122),
    (b"USER_TTY", 1124),
    (b"CHGRP_ID", 1119),
    (b"GRP_AUTH", 1120),
    (b"SYSTEM_BOOT", 1127),
    (b"SYSTEM_SHUTDOWN", 1128),
    (b"SYSTEM_RUNLEVEL", 1129),
    (b"SERVICE_START", 1130),
    (b"SERVICE_STOP", 1131),
    (b"USER_MAC_POLICY_LOAD", 1403),
    (b"AVC", 1400),
    (b"SELINUX_ERR", 1401),
    (b"MAC_STATUS", 1404),
    (b"OBJ_PID", 1318),
    (b"TTY", 1319),
    (b"FD_PAIR", 1317),
    (b"KERN_MODULE", 1330),
    (b"FANOTIFY", 1331),
    (b"TIME_INJOFFSET", 1332),
    (b"TIME_ADJNTPVAL", 1333),
    (b"BPF", 1334),
    (b"EVENT_LISTENER", 1335),
    (b"URINGOP", 1336),
    (b"OPENAT2", 1337),
    (b"ANOM_PROMISCUOUS", 1700),
    (b"ANOM_ABEND", 1701),
    (b"ANOM_LINK", 1702),
    (b"ANOM_LOGIN_FAILURES", 2100),
    (b"ANOM_LOGIN_TIME", 2101),
    (b"ANOM_LOGIN_SESSIONS", 2102),
    (b"ANOM_LOGIN_ACCT", 2103),
    (b"ANOM_LOGIN_LOCATION", 2104),
    (b"INTEGRITY_DATA", 1800),
    (b"INTEGRITY_RULE", 1805),
];

/// The number of a record type name: known names from the table, `UNKNOWN[n]` as `n`,
/// anything else 0.
pub fn number(name: &[u8]) -> u16 {
    if let Some(digits) = name
        .strip_prefix(b"UNKNOWN[")
        .and_then(|r| r.strip_suffix(b"]"))
    {
        return super::decimal::parse_u64(digits)
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(0);
    }
    TABLE
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |&(_, num)| num)
}

/// Whether a record of this type is a whole event by itself: types below 1300 other than
/// LOGIN, which belongs to its SYSCALL event (auparse's rule), and the second range of
/// user-space messages, 2100–2999 (ANOM_LOGIN_*, ROLE_*, …, written by PAM modules and
/// tools, never with EOE). DAEMON_* records also use auditd's own serial counter, so they
/// must never be joined to kernel events.
pub fn is_single_record(rtype: u16) -> bool {
    rtype != 0 && (rtype < FIRST_EVENT && rtype != LOGIN || (2100..3000).contains(&rtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(number(b"SYSCALL"), 1300);
        assert_eq!(number(b"USER_LOGIN"), 1112);
        assert_eq!(number(b"UNKNOWN[1336]"), 1336);
        assert_eq!(number(b"UNKNOWN[99999]"), 0);
        assert_eq!(number(b"UNKNOWN[x]"), 0);
        assert_eq!(number(b"NOPE"), 0);
        assert!(is_single_record(USER_AUTH));
        assert!(is_single_record(DAEMON_END));
        assert!(!is_single_record(LOGIN));
        assert!(!is_single_record(SYSCALL));
        assert!(!is_single_record(0));
        assert!(is_single_record(number(b"ANOM_LOGIN_FAILURES")));
        assert!(!is_single_record(number(b"AVC")));
    }

    #[test]
    fn table_has_no_duplicate_names() {
        for (i, (a, _)) in TABLE.iter().enumerate() {
            for (b, _) in &TABLE[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
