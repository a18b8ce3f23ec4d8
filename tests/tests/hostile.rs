//! What a malicious pod can try beyond spoofing (see docs/threat-model.md): crafted
//! fragments into another project, broadcast and multicast floods, the agent's socket
//! from a non-root process, and requests or a pod table that name the node's devices.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::Result;
use oxsdn_cni::{
    client, code,
    naming::host_veth_name,
    protocol::{Attachment, Command, Request, Response},
};
use oxsdn_tests::{
    cni::CniCall,
    flows::{packets, FlowLine},
    frames::{self, pod_mac, BROADCAST},
    netns::Netns,
    probe::RawSocket,
    TestCluster,
};
use serde_json::{json, Value};

#[test]
fn crafted_fragments_do_not_cross_projects() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    let attacker = node.add_pod("blue", "attacker")?;
    let friend = node.add_pod("red", "friend")?;
    let victim = node.add_pod("red", "victim")?;
    cluster.oxsdnctl(&["create", "service", "web", "-n", "red", "--udp", "53", "--cluster-ip", "172.30.0.53"])?;
    cluster.oxsdnctl(&["set", "endpoints", "web", "-n", "red", &victim.ip.to_string()])?;
    std::thread::sleep(Duration::from_secs(1));
    let service: Ipv4Addr = "172.30.0.53".parse()?;
    let watch = RawSocket::open(&victim.netns, "eth0")?;
    let later = |from: &oxsdn_tests::Pod, dst: Ipv4Addr, marker: &[u8]| {
        let frag = frames::FragmentOf { id: 0x4242, offset: 185, more: false };
        frames::ipv4_fragment((pod_mac(from.ip), pod_mac(victim.ip)), from.ip, dst, 17, frag, marker)
    };
    let send = |from: &oxsdn_tests::Pod, frame: Vec<u8>| RawSocket::open(&from.netns, "eth0")?.send(&frame);

    // Control: a later fragment from the victim's own project arrives.
    send(&friend, later(&friend, victim.ip, b"oxsdn-frag-friend"))?;
    assert_eq!(watch.capture(Duration::from_millis(300), |f| frames::contains(f, b"oxsdn-frag-friend")).len(), 1);

    let isolated_before = packets(&node.dump_flows()?, 80, 0, "");
    send(&attacker, later(&attacker, victim.ip, b"oxsdn-frag-pod"))?;
    send(&attacker, later(&attacker, service, b"oxsdn-frag-svc"))?;
    assert!(
        watch.capture(Duration::from_millis(300), |f| frames::contains(f, b"oxsdn-frag-")).is_empty(),
        "a fragment crossed projects"
    );
    let flows = node.dump_flows()?;
    assert!(packets(&flows, 80, 0, "") >= isolated_before + 2, "table 80 did not count both");
    assert!(
        packets(&flows, 60, 100, "ip,nw_dst=172.30.0.53,nw_frag=later") >= 1,
        "the ClusterIP's fragment rule did not match"
    );
    Ok(())
}

#[test]
fn only_root_may_use_the_agent_socket() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    // STATUS only talks to the agent: whatever fails is the socket.
    let mut conf = node.network_config()?;
    conf["cniVersion"] = serde_json::json!("1.1.0");
    let call = CniCall::new("STATUS", &conf);
    node.cni(&call).success()?;
    // setpriv drops to nobody (65534) after the namespace switch, which needs root.
    let out = call.invoke_via(&node.netns, &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]);
    assert_ne!(out.code, Some(0), "a non-root caller got through: {}", out.stdout);
    assert!(out.stdout.contains("ermission denied"), "not refused for lack of permission: {}", out.stdout);
    let socket_mode = std::fs::metadata(&node.socket)?.permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&socket_mode) & 0o777, 0o600);
    Ok(())
}

/// Multicast MAC of an IPv4 group (RFC 1112).
fn multicast_mac(group: Ipv4Addr) -> frames::Mac {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

#[test]
fn broadcast_and_multicast_floods_reach_no_pod_and_are_counted() -> Result<()> {
    use oxsdn_tests::probe::{ping, serve_echo, tcp_echo, ECHO_PORT};

    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let attacker = cluster.nodes[0].add_pod("blue", "attacker")?;
    // Victims: the attacker's own project and another one, on its node and the other.
    let victims = [
        cluster.nodes[0].add_pod("blue", "friend")?,
        cluster.nodes[0].add_pod("red", "local")?,
        cluster.nodes[1].add_pod("red", "remote")?,
    ];
    let (node1, node2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let a_mac = pod_mac(attacker.ip);
    let ip = |s: &str| -> Ipv4Addr { s.parse().expect("address") };
    let marker = b"oxsdn-flood";

    // ARP for every address of both node subnets, of a cluster range no node owns, and
    // outside the cluster: broadcast frames, each of which may reach only its target.
    let mut arp_targets: Vec<Ipv4Addr> = Vec::new();
    for (base, count) in
        [(ip("10.128.0.0"), 512u32), (ip("10.129.0.0"), 512), (ip("10.130.0.0"), 256), (ip("192.0.2.0"), 256)]
    {
        arp_targets.extend((0..count).map(|i| Ipv4Addr::from(u32::from(base) + i)));
    }
    const COPIES: usize = 500;
    let ip_floods: [(&str, Ipv4Addr, frames::Mac); 7] = [
        ("limited broadcast", ip("255.255.255.255"), BROADCAST),
        ("own subnet broadcast", ip("10.128.1.255"), BROADCAST),
        ("other node's subnet broadcast", ip("10.129.1.255"), BROADCAST),
        ("cluster network broadcast", ip("10.131.255.255"), BROADCAST),
        ("all hosts", ip("224.0.0.1"), multicast_mac(ip("224.0.0.1"))),
        ("SSDP", ip("239.255.255.250"), multicast_mac(ip("239.255.255.250"))),
        ("site-local group", ip("239.1.2.3"), multicast_mac(ip("239.1.2.3"))),
    ];
    let flows1 = node1.dump_flows()?;
    let flows2 = node2.dump_flows()?;

    // Every victim captures while the attacker floods.
    let captures: Vec<_> = victims
        .iter()
        .map(|v| -> Result<_> {
            let rx = RawSocket::open(&v.netns, "eth0")?;
            let attacker_ip = attacker.ip.octets();
            Ok(std::thread::spawn(move || {
                rx.capture(Duration::from_secs(4), move |f| {
                    frames::contains(f, b"oxsdn-flood") || (f[12..14] == [0x08, 0x06] && f[28..32] == attacker_ip)
                })
            }))
        })
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_millis(200));
    let tx = RawSocket::open(&attacker.netns, "eth0")?;
    for target in &arp_targets {
        tx.send(&frames::arp(a_mac, BROADCAST, 1, a_mac, attacker.ip, [0; 6], *target))?;
    }
    for (_, dst, dst_mac) in &ip_floods {
        let frame = frames::udp(a_mac, *dst_mac, attacker.ip, *dst, 9, marker);
        for _ in 0..COPIES {
            tx.send(&frame)?;
        }
    }
    for (victim, capture) in victims.iter().zip(captures) {
        let got = capture.join().expect("capture thread");
        let flood: Vec<_> = got.iter().filter(|f| frames::contains(f, marker)).collect();
        assert!(flood.is_empty(), "{} received {} flood frames, e.g. {:02x?}", victim.name, flood.len(), flood[0]);
        // ARP is not isolated but goes only to its target: the one request for the
        // victim's own address.
        let arp_targets: Vec<Ipv4Addr> = got.iter().map(|f| Ipv4Addr::new(f[38], f[39], f[40], f[41])).collect();
        assert_eq!(arp_targets, [victim.ip], "{}: ARP requests received", victim.name);
    }

    // Counted where the spec (Profile A §8) puts them.
    let (after1, after2) = (node1.dump_flows()?, node2.dump_flows()?);
    let delta = |before: &[FlowLine], after: &[FlowLine], table, priority, matches: &str| {
        packets(after, table, priority, matches) - packets(before, table, priority, matches)
    };
    let copies = COPIES as u64;
    assert!(delta(&flows1, &after1, 110, 0, "") >= 3 * copies, "multicast: table 110");
    assert!(delta(&flows1, &after1, 70, 0, "") >= copies, "own subnet broadcast (and ARP to no pod): table 70");
    assert!(delta(&flows1, &after1, 90, 0, "") >= copies, "cluster network broadcast: table 90");
    let remote_broadcast = delta(&flows2, &after2, 70, 0, "");
    assert!(remote_broadcast >= copies, "other node's subnet broadcast: its table 70 counted {remote_broadcast}");
    assert!(delta(&flows1, &after1, 101, 0, "") >= copies, "limited broadcast: handed to the host by table 101");
    assert!(delta(&flows1, &after1, 40, 0, "") >= 500, "ARP for local addresses without a pod: table 40");
    assert!(delta(&flows2, &after2, 40, 0, "") >= 500, "ARP for remote addresses without a pod: node2's table 40");
    assert!(delta(&flows1, &after1, 50, 0, "") >= 256, "ARP for addresses no node owns: table 50");
    assert!(delta(&flows1, &after1, 30, 0, "arp") >= 256, "ARP outside the cluster: table 30");

    // The node and its pods are still fine: pods talk, the gateway answers, CNI works.
    serve_echo(&victims[0].netns, ECHO_PORT)?;
    assert!(tcp_echo(&attacker.netns, victims[0].ip, ECHO_PORT), "pods of one project cannot talk after the flood");
    assert!(ping(&victims[1].netns, Ipv4Addr::new(10, 128, 0, 1)), "the gateway does not answer after the flood");
    let late = node1.add_pod("red", "late")?;
    assert!(ping(&late.netns, victims[2].ip), "a pod added after the flood has no network");
    Ok(())
}

/// An ADD for attachment `container_id`/eth0 in `netns`, naming `host_veth`, sent to the
/// agent's socket the way the plugin sends it.
fn add_request(container_id: &str, host_veth: &str, netns: &std::path::Path) -> Request {
    Request {
        attachment: Some(Attachment { container_id: container_id.into(), ifname: "eth0".into() }),
        netns: Some(netns.display().to_string()),
        pod_namespace: Some("red".into()),
        pod_name: Some(container_id.into()),
        host_veth: Some(host_veth.into()),
        ..Request::of(Command::Add)
    }
}

/// The ifindex of `name` in `ns`.
fn ifindex(ns: &Netns, name: &str) -> Result<u32> {
    let line = ns.ip(&["-o", "link", "show", name])?;
    Ok(line.split(':').next().unwrap_or_default().trim().parse()?)
}

/// The agent accepts, as a pod's port, only the veth the plugin created for that pod,
/// and deletes nothing else: ADDs naming tun0, the underlay device, another pod's veth,
/// or a veth whose peer is not in the pod's namespace are refused with code 4 and change
/// nothing; a pod table naming tun0 and eth0 (edited by hand, or corrupted) neither
/// moves tun0's program nor makes DEL delete them.
#[test]
fn the_agent_takes_only_a_pods_own_veth() -> Result<()> {
    use oxsdn_tests::{inventory::Inventory, probe::ping};

    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let victim = cluster.nodes[0].add_pod("red", "victim")?;
    let remote = cluster.nodes[1].add_pod("red", "remote")?;
    let node = &cluster.nodes[0];
    let prefix = node.prefix().to_string();
    let intruder = Netns::create(&format!("{prefix}-intruder"))?;
    let elsewhere = Netns::create(&format!("{prefix}-elsewhere"))?;
    // A veth with the right name for its attachment, its peer in a namespace that is not
    // the request's; and one whose peer stays in the node's namespace.
    let wrong_peer = host_veth_name("wrong-peer", "eth0");
    node.netns.ip(&["link", "add", &wrong_peer, "type", "veth", "peer", "name", "eth0", "netns", &elsewhere.name])?;
    let node_peer = host_veth_name("node-peer", "eth0");
    node.netns.ip(&["link", "add", &node_peer, "type", "veth", "peer", "name", &format!("{prefix}-np")])?;
    let victim_veth = host_veth_name(&victim.container_id, "eth0");
    let node_ns = Netns::borrowed(&node.netns.name);
    let still_forwarding = |when: &str| {
        let gateway = Ipv4Addr::new(10, 128, 0, 1);
        assert!(ping(&victim.netns, gateway), "{when}: the pod cannot reach its gateway (tun0)");
        assert!(ping(&node_ns, victim.ip), "{when}: the node cannot reach the pod (tun0)");
        assert!(ping(&victim.netns, remote.ip), "{when}: the pod cannot reach the other node's pod (underlay)");
    };
    still_forwarding("before");
    let devices = [("tun0", ifindex(&node.netns, "tun0")?), ("eth0", ifindex(&node.netns, "eth0")?)];
    let before = Inventory::take(node)?;

    let cases = [
        ("tun0", add_request("hostile-tun0", "tun0", &intruder.path())),
        ("the underlay device", add_request("hostile-eth0", "eth0", &intruder.path())),
        ("another pod's veth", add_request("hostile-other", &victim_veth, &intruder.path())),
        (
            "another pod's own attachment, from another namespace",
            add_request(&victim.container_id, &victim_veth, &intruder.path()),
        ),
        ("a veth whose peer is in another namespace", add_request("wrong-peer", &wrong_peer, &intruder.path())),
        ("a veth whose peer is in the node's namespace", add_request("node-peer", &node_peer, &intruder.path())),
    ];
    for (what, req) in &cases {
        match client::call(&node.socket, req).map_err(|e| anyhow::anyhow!("{what}: {e}"))? {
            Response::Error(e) => {
                assert_eq!(e.code, code::INVALID_ENV, "{what}: {e}");
                assert!(e.msg.contains("refused"), "{what}: {e}");
            }
            other => panic!("{what}: accepted: {other:?}"),
        }
        let after = Inventory::take(node)?;
        assert!(before.differences(&after).is_empty(), "{what} changed the node: {:?}", before.differences(&after));
    }
    for (name, index) in devices {
        assert_eq!(ifindex(&node.netns, name)?, index, "{name} was replaced");
    }
    still_forwarding("after the refused ADDs");

    // A pod table naming tun0 and eth0 as pods' veths, read by a restarted agent.
    let poisoned: Vec<(String, &str, u32)> =
        devices.iter().map(|(name, index)| (format!("poison-{name}"), *name, *index)).collect();
    let table_path = node.state_dir.join("pods.json");
    cluster.nodes[0].stop_agent();
    let mut table: Value = serde_json::from_slice(&std::fs::read(&table_path)?)?;
    let template = table["pods"][0].clone();
    for (i, (id, veth, index)) in poisoned.iter().enumerate() {
        let mut rec = template.clone();
        rec["containerId"] = json!(id);
        rec["hostVeth"] = json!(veth);
        rec["ifindex"] = json!(index);
        rec["ip"] = json!(format!("10.128.0.{}", 200 + i));
        table["pods"].as_array_mut().expect("pods").push(rec);
    }
    std::fs::write(&table_path, serde_json::to_vec(&table)?)?;
    cluster.nodes[0].start_agent()?;
    let node = &cluster.nodes[0];
    for (id, _, _) in &poisoned {
        node.cni(&CniCall::del(&node.network_config()?, id, None)).success()?;
    }
    for (name, index) in devices {
        assert_eq!(ifindex(&node.netns, name)?, index, "{name} was deleted or replaced");
    }
    let after = Inventory::take(node)?;
    assert!(
        before.differences(&after).is_empty(),
        "the poisoned table changed the node: {:?}",
        before.differences(&after)
    );
    still_forwarding("after the poisoned pod table");
    assert!(node.log_text().contains("ignoring an invalid pod record"), "the agent did not say it ignored the records");
    Ok(())
}
