//! The SystemInformation snapshot: what the host is, from files under the host root.
//!
//! | field | source (under the host root) |
//! |---|---|
//! | OSName, OSVersion | `/etc/os-release` (else `/usr/lib/os-release`): `NAME`, `VERSION` (else `VERSION_ID`) |
//! | OSVendor | os-release `VENDOR_NAME` (systemd 254+), else its `ID` |
//! | OsArchitecture | `/proc/sys/kernel/arch` (the kernel's `uname -m`) |
//! | HostName | `/etc/hostname`, else `/proc/sys/kernel/hostname` |
//! | BIOSVersion | `/sys/class/dmi/id/bios_version` (absent on boards without DMI) |
//! | BootDevice | the source of `/` in `/proc/1/mounts`, else `root=` of `/proc/cmdline` |
//! | Total/FreePhysicalMemoryInKB | `/proc/meminfo` `MemTotal`, `MemAvailable` (else `MemFree`) |
//! | Total/FreeVirtualMemoryInKB | the same plus `SwapTotal`, `SwapFree` |
//!
//! ExtraDetails: `KernelRelease` (`/proc/sys/kernel/osrelease`), `CpuModel` and `CpuCount`
//! (`/proc/cpuinfo`), `UptimeSeconds` (`/proc/uptime`), and per network interface
//! `Nic.<name>.Type`, `.Mac`, `.IPv4`, `.IPv6` (addresses `,`-separated) as the micro agent's
//! `nics[type, info{mac, ipv4_address, ipv6_address}]`: interfaces from `/sys/class/net`,
//! IPv6 addresses from `/proc/1/net/if_inet6`, IPv4 ones from `/proc/1/net/fib_trie` (local
//! addresses) matched to an interface by `/proc/1/net/route` — `/proc/1/net` is the host's
//! network namespace even when the module runs in a container of its own.
//!
//! Quirks: `/proc/sys/kernel/hostname` is the *reader's* UTS namespace (a container's own
//! name), hence `/etc/hostname` first. `/proc/meminfo`, `/proc/cpuinfo` and
//! `/proc/sys/kernel/*` are kernel-wide and the same in any namespace. A field whose source is
//! missing or unreadable is left out.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{CollectOptions, HostRoot};
use crate::events::{Details, Payload, SystemInformation};

/// The most network interfaces described (a host with thousands of veths would make the
/// item unreasonably large).
pub const MAX_INTERFACES: usize = 64;

/// The host's SystemInformation: one event with one item, none when no source at all could
/// be read (a host root that is not a host).
pub fn collect(host: &HostRoot, _opts: &CollectOptions) -> Vec<Payload> {
    let item = read(host);
    if item == SystemInformation::default() {
        return Vec::new();
    }
    vec![Payload::SystemInformation(vec![item])]
}

/// The item, field by field.
pub fn read(host: &HostRoot) -> SystemInformation {
    let text = |rel: &str| host.read_to_string(rel).ok();
    let line = |rel: &str| text(rel).and_then(|t| first_line(&t));
    let os = text("/etc/os-release")
        .or_else(|| text("/usr/lib/os-release"))
        .map(|t| parse_os_release(&t))
        .unwrap_or_default();
    let meminfo = text("/proc/meminfo")
        .map(|t| parse_meminfo(&t))
        .unwrap_or_default();
    let mem = |k: &str| meminfo.get(k).copied();
    let free_physical = mem("MemAvailable").or_else(|| mem("MemFree"));
    let mut extra = Details::new();
    if let Some(r) = line("/proc/sys/kernel/osrelease") {
        extra.insert("KernelRelease".into(), r);
    }
    if let Some(cpu) = text("/proc/cpuinfo") {
        let (model, count) = parse_cpuinfo(&cpu);
        if let Some(m) = model {
            extra.insert("CpuModel".into(), m);
        }
        if count > 0 {
            extra.insert("CpuCount".into(), count.to_string());
        }
    }
    if let Some(up) = text("/proc/uptime").and_then(|t| parse_uptime(&t)) {
        extra.insert("UptimeSeconds".into(), up.to_string());
    }
    for (k, v) in nic_details(host) {
        extra.insert(k, v);
    }
    SystemInformation {
        os_name: os.get("NAME").cloned(),
        os_version: os.get("VERSION").or_else(|| os.get("VERSION_ID")).cloned(),
        os_vendor: os.get("VENDOR_NAME").or_else(|| os.get("ID")).cloned(),
        os_architecture: line("/proc/sys/kernel/arch"),
        host_name: line("/etc/hostname").or_else(|| line("/proc/sys/kernel/hostname")),
        bios_version: line("/sys/class/dmi/id/bios_version"),
        boot_device: text("/proc/1/mounts")
            .and_then(|t| root_device(&t))
            .or_else(|| text("/proc/cmdline").and_then(|t| cmdline_root(&t))),
        total_physical_memory_kb: mem("MemTotal"),
        free_physical_memory_kb: free_physical,
        total_virtual_memory_kb: mem("MemTotal")
            .zip(mem("SwapTotal"))
            .map(|(a, b)| a.saturating_add(b)),
        free_virtual_memory_kb: free_physical
            .zip(mem("SwapFree"))
            .map(|(a, b)| a.saturating_add(b)),
        extra_details: extra,
    }
}

/// The first line, trimmed, when not empty.
fn first_line(t: &str) -> Option<String> {
    let l = t.lines().next()?.trim();
    (!l.is_empty()).then(|| l.to_owned())
}

/// os-release's `KEY=value` lines (os-release(5): shell-style quoting with `"` or `'`,
/// backslash escapes inside double quotes; comments and blank lines skipped; empty values
/// left out).
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = unquote(v.trim());
        if !v.is_empty() {
            out.insert(k.trim().to_owned(), v);
        }
    }
    out
}

fn unquote(v: &str) -> String {
    let bytes = v.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'\'' && bytes[bytes.len() - 1] == b'\'' {
        return v[1..v.len() - 1].to_owned();
    }
    if bytes.len() >= 2 && bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"' {
        let mut out = String::new();
        let mut chars = v[1..v.len() - 1].chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    v.to_owned()
}

/// `/proc/meminfo`'s `Key: value kB` lines, in kB.
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, rest) = l.split_once(':')?;
            let n = rest.split_whitespace().next()?.parse().ok()?;
            Some((k.trim().to_owned(), n))
        })
        .collect()
}

/// The CPU model (`model name` on x86, `Model` or `Hardware` on ARM boards, else
/// `cpu model`) and the number of `processor` entries.
pub fn parse_cpuinfo(text: &str) -> (Option<String>, usize) {
    let mut model: Option<(usize, String)> = None;
    let mut count = 0usize;
    for l in text.lines() {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k == "processor" {
            count += 1;
        }
        // Lower rank wins: the first x86 `model name`, else the board `Model`, …
        let rank = match k {
            "model name" => 0,
            "Model" => 1,
            "Hardware" => 2,
            "cpu model" => 3,
            _ => continue,
        };
        if !v.is_empty() && model.as_ref().is_none_or(|(r, _)| rank < *r) {
            model = Some((rank, v.to_owned()));
        }
    }
    (model.map(|(_, m)| m), count)
}

/// Whole seconds of `/proc/uptime`'s first number.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let first = text.split_whitespace().next()?;
    let whole = first.split('.').next()?;
    whole.parse().ok()
}

/// The device mounted at `/` in a mounts table (the last mount there wins, as it hides the
/// ones below; the initramfs' `rootfs` is not a device).
pub fn root_device(mounts: &str) -> Option<String> {
    mounts.lines().rev().find_map(|l| {
        let mut f = l.split_whitespace();
        let dev = f.next()?;
        let at = f.next()?;
        (at == "/" && dev != "rootfs" && dev != "none").then(|| dev.to_owned())
    })
}

/// `root=` of a kernel command line.
pub fn cmdline_root(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .rev()
        .filter_map(|w| w.strip_prefix("root="))
        .find(|v| !v.is_empty())
        .map(str::to_owned)
}

/// One network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub kind: Option<String>,
    pub mac: Option<String>,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
}

/// The interfaces' ExtraDetails entries.
fn nic_details(host: &HostRoot) -> Vec<(String, String)> {
    let Ok(listing) = host.read_dir_bounded("/sys/class/net", MAX_INTERFACES) else {
        return Vec::new();
    };
    let mut nics: Vec<Nic> = listing
        .names
        .iter()
        .filter_map(|n| n.to_str())
        .map(|name| {
            let dir = format!("/sys/class/net/{name}");
            let attr = |a: &str| {
                host.read_to_string(&format!("{dir}/{a}"))
                    .ok()
                    .and_then(|t| first_line(&t))
            };
            let wireless = host.metadata(&format!("{dir}/wireless")).is_ok();
            Nic {
                name: name.to_owned(),
                kind: attr("type").map(|t| interface_type(&t, wireless)),
                mac: attr("address"),
                ..Nic::default()
            }
        })
        .collect();
    if let Ok(t) = host.read_to_string("/proc/1/net/if_inet6") {
        for (name, addr) in parse_if_inet6(&t) {
            if let Some(n) = nics.iter_mut().find(|n| n.name == name) {
                n.ipv6.push(addr);
            }
        }
    }
    if let Ok(trie) = host.read_to_string("/proc/1/net/fib_trie") {
        let routes = host
            .read_to_string("/proc/1/net/route")
            .map(|t| parse_route(&t))
            .unwrap_or_default();
        for addr in local_ipv4(&trie) {
            let owner = if addr.is_loopback() {
                nics.iter()
                    .find(|n| n.kind.as_deref() == Some("Loopback"))
                    .map(|n| n.name.clone())
            } else {
                interface_of(addr, &routes)
            };
            if let Some(n) = owner.and_then(|o| nics.iter_mut().find(|n| n.name == o)) {
                n.ipv4.push(addr);
            }
        }
    }
    let mut out = Vec::new();
    for n in nics {
        let key = |k: &str| format!("Nic.{}.{k}", n.name);
        if let Some(t) = &n.kind {
            out.push((key("Type"), t.clone()));
        }
        if let Some(m) = &n.mac {
            out.push((key("Mac"), m.clone()));
        }
        if !n.ipv4.is_empty() {
            out.push((key("IPv4"), join(&n.ipv4)));
        }
        if !n.ipv6.is_empty() {
            out.push((key("IPv6"), join(&n.ipv6)));
        }
    }
    out
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// An interface's ARPHRD type number as a name (`include/uapi/linux/if_arp.h`).
pub fn interface_type(number: &str, wireless: bool) -> String {
    match number.trim() {
        "1" if wireless => "Wireless".into(),
        "1" => "Ethernet".into(),
        "772" => "Loopback".into(),
        "512" => "PPP".into(),
        "768" => "IPIP".into(),
        "776" => "SIT".into(),
        "778" => "GRE".into(),
        "280" => "CAN".into(),
        "519" => "RawIP".into(),
        "65534" => "None".into(),
        other => format!("ARPHRD {other}"),
    }
}

/// `/proc/net/if_inet6`: `<32 hex> <ifindex> <prefix> <scope> <flags> <name>` per address.
pub fn parse_if_inet6(text: &str) -> Vec<(String, Ipv6Addr)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[0].len() != 32 {
                return None;
            }
            let n = u128::from_str_radix(f[0], 16).ok()?;
            Some((f[5].to_owned(), Ipv6Addr::from(n)))
        })
        .collect()
}

/// The local IPv4 addresses of `/proc/net/fib_trie`: each leaf `|-- a.b.c.d` followed by a
/// `/32 host LOCAL` line (broadcast and network leaves are not addresses of the host). Both
/// the Main and the Local tables list them: each address once, in the trie's order.
pub fn local_ipv4(trie: &str) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for l in trie.lines() {
        let t = l.trim();
        if let Some(a) = t.strip_prefix("|-- ") {
            leaf = a.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = leaf
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// `/proc/net/route`'s rows as (interface, destination, mask, gateway). The addresses are the
/// kernel's u32 in host order printed in hex: its bytes in memory are the address.
pub fn parse_route(text: &str) -> Vec<(String, Ipv4Addr, Ipv4Addr, Ipv4Addr)> {
    let addr = |h: &str| {
        u32::from_str_radix(h, 16)
            .ok()
            .map(|n| Ipv4Addr::from(n.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            Some((f[0].to_owned(), addr(f[1])?, addr(f[7])?, addr(f[2])?))
        })
        .collect()
}

/// The interface of the directly connected route (no gateway) with the longest mask that
/// holds `addr`.
pub fn interface_of(
    addr: Ipv4Addr,
    routes: &[(String, Ipv4Addr, Ipv4Addr, Ipv4Addr)],
) -> Option<String> {
    let a = u32::from(addr);
    routes
        .iter()
        .filter(|(_, dest, mask, gw)| {
            gw.is_unspecified()
                && !mask.is_unspecified()
                && a & u32::from(*mask) == u32::from(*dest)
        })
        .max_by_key(|(_, _, mask, _)| u32::from(*mask).count_ones())
        .map(|(iface, ..)| iface.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quoting() {
        // Synthetic: each quoting os-release(5) allows.
        let m = parse_os_release(
            "# comment\nNAME=\"Debian GNU/Linux\"\nVERSION='12 (bookworm)'\nID=debian\n\
             PRETTY=\"say \\\"hi\\\" \\\\ \\$x\"\nEMPTY=\nbad line\n",
        );
        assert_eq!(m["NAME"], "Debian GNU/Linux");
        assert_eq!(m["VERSION"], "12 (bookworm)");
        assert_eq!(m["ID"], "debian");
        assert_eq!(m["PRETTY"], "say \"hi\" \\ $x");
        assert!(!m.contains_key("EMPTY"));
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn meminfo_cpuinfo_uptime_and_root() {
        let m = parse_meminfo("MemTotal:        4026532 kB\nMemFree: 10 kB\nHugePages_Total: 0\n");
        assert_eq!(m["MemTotal"], 4_026_532);
        assert_eq!(m["HugePages_Total"], 0);
        // Synthetic ARM board: no `model name`, the board's Model wins over Hardware.
        let (model, n) = parse_cpuinfo(
            "processor\t: 0\nBogoMIPS\t: 38.40\n\nprocessor\t: 1\n\nHardware\t: BCM2835\n\
             Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
        );
        assert_eq!(model.as_deref(), Some("Raspberry Pi 4 Model B Rev 1.4"));
        assert_eq!(n, 2);
        assert_eq!(parse_uptime("12345.67 2345.01\n"), Some(12345));
        assert_eq!(parse_uptime(""), None);
        let mounts = "rootfs / rootfs rw 0 0\n/dev/vda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n\
                      overlay / overlay rw 0 0\n";
        assert_eq!(root_device(mounts).as_deref(), Some("overlay"));
        assert_eq!(root_device("rootfs / rootfs rw 0 0\n"), None);
        assert_eq!(
            cmdline_root("BOOT_IMAGE=/vmlinuz root=UUID=1234 ro quiet").as_deref(),
            Some("UUID=1234")
        );
    }

    #[test]
    fn addresses_of_fib_trie_if_inet6_and_route() {
        // This machine's /proc/1/net files at the time of writing (captured), with a second
        // interface's lines added (synthetic) for the longest-prefix match.
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
             +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n\
                           /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n\
                   |-- 127.255.255.255\n           /32 link BROADCAST\n\
             +-- 192.0.2.0/24 2 0 2\n           |-- 192.0.2.0\n              /24 link UNICAST\n\
                      |-- 192.0.2.2\n              /32 host LOCAL\n\
                   |-- 192.0.2.255\n           /32 link BROADCAST\n\
             |-- 192.0.2.130\n              /32 host LOCAL\n\
             Local:\n     |-- 127.0.0.1\n              /32 host LOCAL\n";
        let local = local_ipv4(trie);
        assert_eq!(
            local,
            [
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(192, 0, 2, 2),
                Ipv4Addr::new(192, 0, 2, 130)
            ]
        );
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             wlan0\t800200C0\t00000000\t0001\t0\t0\t0\t80FFFFFF\t0\t0\t0\n";
        let routes = parse_route(route);
        if cfg!(target_endian = "little") {
            assert_eq!(routes[1].1, Ipv4Addr::new(192, 0, 2, 0));
            assert_eq!(routes[1].2, Ipv4Addr::new(255, 255, 255, 0));
            assert_eq!(
                interface_of(Ipv4Addr::new(192, 0, 2, 2), &routes).as_deref(),
                Some("eth0")
            );
            assert_eq!(
                interface_of(Ipv4Addr::new(192, 0, 2, 130), &routes).as_deref(),
                Some("wlan0")
            );
        }
        assert_eq!(interface_of(Ipv4Addr::new(10, 0, 0, 1), &routes), None);
        let six = parse_if_inet6(
            "fd000000000000000000000000000002 04 40 00 82     eth0\n\
             00000000000000000000000000000001 01 80 10 80       lo\nshort 1 2\n",
        );
        assert_eq!(
            six,
            [
                ("eth0".to_owned(), "fd00::2".parse().unwrap()),
                ("lo".to_owned(), Ipv6Addr::LOCALHOST)
            ]
        );
        assert_eq!(interface_type("1\n", false), "Ethernet");
        assert_eq!(interface_type("1", true), "Wireless");
        assert_eq!(interface_type("772", false), "Loopback");
        assert_eq!(interface_type("9999", false), "ARPHRD 9999");
    }
}
