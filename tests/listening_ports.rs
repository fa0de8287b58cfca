//! ListeningPorts read from this machine (against listeners the test opens and `ss -ltun` /
//! `ss -ltunp`) and from the synthetic host tree `tests/data/host-ports` (see its README).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;

mod support;

use azureiotsecurity::collectors::listening_ports::{self, Collected, Owner, Table4};
use azureiotsecurity::collectors::{CollectOptions, HostRoot};
use azureiotsecurity::events::{Payload, SecurityEvent};
use azureiotsecurity::validate::validate_message;

fn tree() -> HostRoot {
    HostRoot::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/host-ports"))
}

fn this_host() -> HostRoot {
    HostRoot::default()
}

/// The registry's collector on `host`, each payload as a message: valid in the module's
/// own validator and in the reference validator.
fn assert_valid_events(host: &HostRoot) -> Vec<Payload> {
    let payloads = listening_ports::collect(host, &CollectOptions::default());
    let messages: Vec<String> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ev = SecurityEvent {
                id: uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 + i as u128),
                time_ms: 1_700_000_000_123,
                payload: p.clone(),
            };
            support::envelope(&[serde_json::to_value(&ev).unwrap()])
        })
        .collect();
    for m in &messages {
        assert_eq!(
            validate_message(m).map_err(|v| format!("{v:?}")),
            Ok(()),
            "{m}"
        );
    }
    for (m, verdict) in messages.iter().zip(support::reference_validate(&messages)) {
        assert_eq!(verdict, "ok", "{m}");
    }
    payloads
}

/// (protocol, address, port) → owner, of a collection.
fn rows(c: &Collected) -> Vec<(String, String, u16, Option<Owner>)> {
    c.sockets
        .iter()
        .map(|(s, o)| {
            (
                s.table.file().to_string(),
                s.local.to_string(),
                s.port,
                o.clone(),
            )
        })
        .collect()
}

fn owner(pid: u32, exe: &str) -> Option<Owner> {
    Some(Owner {
        pid,
        executable: Some(exe.to_string()),
    })
}

#[test]
fn the_synthetic_tree_decodes_every_family_and_finds_owners() {
    let c = listening_ports::read(&tree());
    assert_eq!(c.malformed, 0);
    assert!(c.unreadable.is_empty(), "{:?}", c.unreadable);
    assert_eq!(c.truncation, Default::default());
    let s = |t: &str, a: &str, p, o| (t.to_string(), a.to_string(), p, o);
    assert_eq!(
        rows(&c),
        vec![
            s("tcp", "0.0.0.0", 22, owner(300, "/usr/sbin/sshd")),
            s("tcp", "127.0.0.1", 65535, None),
            s("tcp6", "::", 22, owner(300, "/usr/sbin/sshd")),
            s("tcp6", "::ffff:127.0.0.1", 8080, None),
            s("tcp6", "fe80::1", 80, None),
            s("udp", "127.0.0.53", 53, owner(500, "/usr/sbin/named")),
            s("udp6", "::1", 547, None),
        ]
    );
    // What the registry's collector makes of it: one event with these items, valid.
    assert_eq!(
        assert_valid_events(&tree()),
        vec![Payload::ListeningPorts(c.items())]
    );
    let items = serde_json::to_value(c.items()).unwrap();
    assert_eq!(
        items[5],
        serde_json::json!({"LocalAddress": "127.0.0.53", "LocalPort": "53", "Protocol": "UDP",
            "ExtraDetails": {"ProcessId": "500", "Executable": "/usr/sbin/named"}})
    );
    assert_eq!(
        items[1],
        serde_json::json!({"LocalAddress": "127.0.0.1", "LocalPort": "65535", "Protocol": "TCP"})
    );
}

#[test]
fn a_missing_table_leaves_its_sockets_out_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("proc/1/net");
    std::fs::create_dir_all(&net).unwrap();
    std::fs::copy(tree().root().join("proc/1/net/udp"), net.join("udp")).unwrap();
    let c = listening_ports::read(&HostRoot::new(dir.path()));
    let missing: Vec<Table4> = c.unreadable.iter().map(|(t, _)| *t).collect();
    assert_eq!(missing, vec![Table4::Tcp, Table4::Tcp6, Table4::Udp6]);
    // No fd tables under this root: the socket is listed without an owner. With no table
    // at all, the collector has nothing to say (no event, not an empty one).
    std::fs::remove_file(net.join("udp")).unwrap();
    let none = HostRoot::new(dir.path());
    assert_eq!(listening_ports::read(&none).unreadable.len(), 4);
    assert_eq!(
        listening_ports::collect(&none, &CollectOptions::default()),
        vec![]
    );
    std::fs::copy(tree().root().join("proc/1/net/udp"), net.join("udp")).unwrap();
    assert_eq!(
        rows(&c),
        vec![("udp".into(), "127.0.0.53".into(), 53, None)]
    );
}

/// `ss -H -ltun[p]`: (netid, address, port) → the pids ss names (empty without -p or when
/// it cannot see the owner).
fn ss(with_owners: bool) -> BTreeMap<(String, IpAddr, u16), BTreeSet<u32>> {
    let flags = if with_owners { "-Hltunp" } else { "-Hltun" };
    let out = Command::new("ss")
        .arg(flags)
        .output()
        .expect("ss (iproute2) must be installed for this test");
    assert!(out.status.success(), "ss {flags}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut set = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (netid, local) = (cols[0], cols[4]);
        let (addr, port) = local.rsplit_once(':').unwrap();
        // `[::1]`, `127.0.0.53%lo` (bound to a device), `*` (any, either family).
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let addr = addr.split('%').next().unwrap();
        let port: u16 = port.parse().unwrap();
        let pids: BTreeSet<u32> = line
            .split("pid=")
            .skip(1)
            .map(|p| p.split(',').next().unwrap().parse().unwrap())
            .collect();
        let families: Vec<IpAddr> = if addr == "*" {
            vec!["0.0.0.0".parse().unwrap(), "::".parse().unwrap()]
        } else {
            vec![addr.parse().unwrap()]
        };
        for a in families {
            let proto = if a.is_ipv4() {
                netid
            } else {
                &format!("{netid}6")
            };
            set.insert((proto.to_string(), a, port), pids.clone());
        }
    }
    set
}

/// This machine's sockets as ss keys them (its `*` expanded to both families, so a
/// collection's row matches whichever family it is).
fn ours(c: &Collected) -> BTreeMap<(String, IpAddr, u16), Option<Owner>> {
    c.sockets
        .iter()
        .map(|(s, o)| ((s.table.file().to_string(), s.local, s.port), o.clone()))
        .collect()
}

#[test]
fn listeners_opened_by_the_test_appear_with_its_pid_and_executable_and_the_set_matches_ss() {
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = TcpListener::bind("[::1]:0").expect("IPv6 loopback is needed for this test");
    let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
    let exe = std::env::current_exe().unwrap().display().to_string();
    let me = owner(std::process::id(), &exe);

    let c = listening_ports::read(&this_host());
    assert_eq!(c.malformed, 0);
    let found = ours(&c);
    for (proto, addr) in [
        ("tcp", v4.local_addr().unwrap()),
        ("tcp6", v6.local_addr().unwrap()),
        ("udp", udp.local_addr().unwrap()),
    ] {
        let key = (proto.to_string(), addr.ip(), addr.port());
        assert_eq!(found.get(&key), Some(&me), "{key:?} in {found:?}");
    }

    // The collector's event from this machine is valid and lists them.
    let payloads = assert_valid_events(&this_host());
    let [Payload::ListeningPorts(items)] = &payloads[..] else {
        panic!("one ListeningPorts payload: {payloads:?}");
    };
    let port = v6.local_addr().unwrap().port().to_string();
    assert!(
        items.iter().any(|i| i.local_port == port
            && i.local_address == Some("::1".parse().unwrap())
            && i.extra_details.get("ProcessId") == Some(&std::process::id().to_string())),
        "{items:?}"
    );

    // The whole set against ss: other processes on this machine open and close sockets
    // meanwhile, so compare a collection with ss when the set did not move around it
    // (bounded retries).
    let mut last = String::new();
    for _ in 0..20 {
        let before = listening_ports::read(&this_host());
        let listed = ss(true);
        let after = listening_ports::read(&this_host());
        if before.digest() != after.digest() {
            last = "the set changed during the comparison".into();
            continue;
        }
        let ours = ours(&before);
        let mine: BTreeSet<_> = ours.keys().cloned().collect();
        // ss prints `*` for an any-address of either family: a key of ss's is in ours or is
        // the expansion of a `*` whose other family is ours.
        let theirs: BTreeSet<_> = listed.keys().cloned().collect();
        let missing: Vec<_> = mine.difference(&theirs).collect();
        let extra: Vec<_> = theirs
            .iter()
            .filter(|k| !mine.contains(*k))
            .filter(|(proto, a, port)| {
                // The other family of a `*` row.
                let twin = if a.is_ipv4() {
                    (format!("{proto}6"), "::".parse().unwrap(), *port)
                } else {
                    (
                        proto.trim_end_matches('6').to_string(),
                        "0.0.0.0".parse().unwrap(),
                        *port,
                    )
                };
                !(a.is_unspecified() && mine.contains(&twin))
            })
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            last = format!("not in ss: {missing:?}; only in ss: {extra:?}");
            continue;
        }
        // Owners: where ss names processes, ours is one of them; where ss names none, we
        // found none either (both read the same fd tables).
        for (key, o) in &ours {
            let pids = &listed[key];
            match o {
                Some(o) => assert!(pids.contains(&o.pid), "{key:?}: ours {o:?}, ss {pids:?}"),
                None => assert!(pids.is_empty(), "{key:?}: ss names {pids:?}, we found none"),
            }
        }
        drop((v4, v6, udp));
        return;
    }
    panic!("no stable comparison with ss in 20 tries: {last}");
}

#[test]
fn a_sample_is_the_set_without_owners_and_has_the_collections_digest() {
    let c = listening_ports::read(&tree());
    let s = listening_ports::sample(&tree());
    assert_eq!(s.digest(), c.digest());
    assert!(s.sockets.iter().all(|(_, o)| o.is_none()));
    assert_eq!(s.sockets.len(), 7);
}
