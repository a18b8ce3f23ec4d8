//! The collector of the connection tables on a private pin directory: what it removes
//! (both halves of expired connections, half connections, orphaned reply halves), what
//! it keeps, and the shares it gives back. Needs root and bpffs at /sys/fs/bpf.

use std::{net::Ipv4Addr, path::PathBuf};

use oxsdn_common::conntrack::CLOSING;
use oxsdn_dataplane::{
    conntrack::{sweep, Shares},
    entries::{self, Connection, Networks, NodeAddresses, NodeSettings},
    loader::{remove_pins, Programs},
    maps::{monotonic_ns, NodeMaps},
};

/// Removes the pins on drop, also when the test fails.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = remove_pins(&self.0);
    }
}

const SECOND: u64 = 1_000_000_000;
const OWNER: u32 = 7;

#[test]
fn sweeps_expired_and_half_connections_and_gives_their_shares_back() {
    let dir = PinDir(PathBuf::from(format!("/sys/fs/bpf/oxsdn-ct-sweep-test-{}", std::process::id())));
    let _programs = Programs::load(&dir.0).unwrap();
    let mut maps = NodeMaps::open(&dir.0).unwrap();
    let node = NodeAddresses {
        subnet: "10.128.0.0/23".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 128, 0, 1),
        node_ip: Ipv4Addr::new(192, 168, 0, 1),
        tun0_ifindex: 100,
        vxlan_ifindex: 101,
        underlay_ifindex: 0,
    };
    let networks = Networks {
        cluster: "10.128.0.0/14".parse().unwrap(),
        service: "172.30.0.0/16".parse().unwrap(),
        vxlan_port: 4789,
    };
    maps.config.set(0, entries::node_config(&networks, &node, &NodeSettings::default()), 0).unwrap();
    let shares = Shares::open(&dir.0).unwrap();

    let now = monotonic_ns();
    let connection = |client_port: u16, protocol: u8, idle_s: u64| Connection {
        protocol,
        client: (Ipv4Addr::new(10, 128, 0, 2), client_port),
        service: (Ipv4Addr::new(172, 30, 0, 10), 80),
        endpoint: (Ipv4Addr::new(10, 128, 0, 3), 8080),
        service_id: 1,
        owner: OWNER,
        last_seen: now - idle_s * SECOND,
    };
    let (tcp, udp) = (entries::IPPROTO_TCP, entries::IPPROTO_UDP);
    // (connection, closing, expected to stay)
    let cases = [
        (connection(1, udp, 1), false, true),
        (connection(2, udp, 31), false, false),
        (connection(3, tcp, 3600), false, true),
        (connection(4, tcp, 11), true, false),
        (connection(5, tcp, 5), true, true),
    ];
    for (c, closing, _) in &cases {
        let ((flow, mut forward), (reverse, reply)) = entries::connection_entries(c, node.gateway);
        if *closing {
            forward.flags = CLOSING;
        }
        maps.ct_forward.insert(flow, forward, 0).unwrap();
        maps.ct_reverse.insert(reverse, reply, 0).unwrap();
    }
    // A connection half without its reply half, and a reply half without its connection.
    let ((half, half_value), _) = entries::connection_entries(&connection(6, tcp, 1), node.gateway);
    maps.ct_forward.insert(half, half_value, 0).unwrap();
    let (_, (orphan, orphan_value)) = entries::connection_entries(&connection(7, tcp, 10), node.gateway);
    maps.ct_reverse.insert(orphan, orphan_value, 0).unwrap();

    // The programs counted every connection they inserted: 6.
    let recounted = sweep(&mut maps, &shares, now, true).unwrap();
    assert_eq!(shares.get(OWNER), 3, "the first sweep recounts the shares from what stays");
    assert_eq!((recounted.kept, recounted.removed, recounted.orphans), (3, 3, 1));
    for (c, _, stays) in &cases {
        let ((flow, _), (reverse, _)) = entries::connection_entries(c, node.gateway);
        assert_eq!(maps.ct_forward.get(&flow, 0).is_ok(), *stays, "connection half of {c:?}");
        assert_eq!(maps.ct_reverse.get(&reverse, 0).is_ok(), *stays, "reply half of {c:?}");
    }
    assert!(maps.ct_forward.get(&half, 0).is_err(), "a connection half without its reply half stays");
    assert!(maps.ct_reverse.get(&orphan, 0).is_err(), "an orphaned reply half stays");

    // Later sweeps give the shares of what they remove back.
    let swept = sweep(&mut maps, &shares, now + 40 * SECOND, false).unwrap();
    assert_eq!((swept.kept, swept.removed), (1, 2));
    assert_eq!(shares.get(OWNER), 1);
}
