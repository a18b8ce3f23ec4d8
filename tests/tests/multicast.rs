//! Multicast (OpenShift's tables 110, 111 and 120) between real sockets in pods on two
//! nodes: a project's multicast reaches its pods on both nodes once its NetNamespace
//! carries `netnamespace.network.openshift.io/multicast-enabled=true`, never another
//! project's pods; without it, it is dropped and counted; joined projects need it on
//! every project of the VNID.

use std::{
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::Result;
use oxsdn_tests::{bins, flows::packets, netns::run, Pod, TestCluster};

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
const PORT: u16 = 5353;
const ANNOTATION: &str = "netnamespace.network.openshift.io/multicast-enabled";
/// How soon an annotation change must be in effect on every node.
const TAKES_EFFECT: Duration = Duration::from_secs(1);

/// A socket in `pod` that joined `GROUP` (its kernel reports the membership with IGMP,
/// which the pipeline carries like any multicast) and listens on `PORT`.
fn join(pod: &Pod) -> Result<UdpSocket> {
    let ip = pod.ip;
    pod.netns.enter(move || -> Result<UdpSocket> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT))?;
        socket.join_multicast_v4(&GROUP, &ip)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        Ok(socket)
    })?
}

/// A socket in `pod` that sends to `GROUP` (out of the pod's eth0, by its default route),
/// without the kernel's own local copy (so a copy the pod gets came from the network).
fn sender(pod: &Pod) -> Result<UdpSocket> {
    pod.netns.enter(|| -> Result<UdpSocket> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.set_multicast_loop_v4(false)?;
        Ok(socket)
    })?
}

fn send(socket: &UdpSocket, payload: &str) -> Result<()> {
    socket.send_to(payload.as_bytes(), (GROUP, PORT))?;
    Ok(())
}

/// The payloads `socket` received from now until `window` passed.
fn received(socket: &UdpSocket, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

/// Whether `socket` gets `payload`, sent once.
fn gets(from: &UdpSocket, to: &UdpSocket, payload: &str) -> Result<bool> {
    received(to, Duration::from_millis(50));
    send(from, payload)?;
    Ok(received(to, Duration::from_millis(300)).iter().any(|p| p == payload))
}

/// Sends from `from` every 20 ms until every socket of `to` got a packet (true), or
/// until `within` passed; how long it took.
fn until_all_get(from: &UdpSocket, to: &[&UdpSocket], within: Duration) -> Result<Option<Duration>> {
    for socket in to {
        received(socket, Duration::from_millis(30));
    }
    let start = Instant::now();
    let mut got = vec![false; to.len()];
    while start.elapsed() < within {
        send(from, "probe")?;
        for (i, socket) in to.iter().enumerate() {
            got[i] |= !received(socket, Duration::from_millis(10)).is_empty();
        }
        if got.iter().all(|g| *g) {
            return Ok(Some(start.elapsed()));
        }
    }
    Ok(None)
}

/// Sends from `from` every 20 ms until none of `to` gets anything more (true), or until
/// `within` passed; how long it took.
fn until_none_get(from: &UdpSocket, to: &[&UdpSocket], within: Duration) -> Result<Option<Duration>> {
    let start = Instant::now();
    while start.elapsed() < within {
        send(from, "probe")?;
        std::thread::sleep(Duration::from_millis(20));
        // Copies in flight when the change landed are read here, not counted as after it.
        for socket in to {
            received(socket, Duration::from_millis(5));
        }
        if gets_none(from, to)? {
            return Ok(Some(start.elapsed()));
        }
    }
    Ok(None)
}

fn gets_none(from: &UdpSocket, to: &[&UdpSocket]) -> Result<bool> {
    send(from, "probe")?;
    Ok(to.iter().all(|socket| received(socket, Duration::from_millis(100)).is_empty()))
}

#[test]
fn multicast_reaches_the_projects_pods_on_every_node_when_enabled() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let red_sender = cluster.nodes[0].add_pod("red", "sender")?;
    let red1 = cluster.nodes[0].add_pod("red", "r1")?;
    let red2 = cluster.nodes[1].add_pod("red", "r2")?;
    let blue1 = cluster.nodes[0].add_pod("blue", "b1")?;
    let blue2 = cluster.nodes[1].add_pod("blue", "b2")?;
    let (from_red, from_blue) = (sender(&red_sender)?, sender(&blue1)?);
    let (r1, r2, b1, b2) = (join(&red1)?, join(&red2)?, join(&blue1)?, join(&blue2)?);
    // The sender's own socket joins too: OpenFlow never outputs to the ingress port.
    let own = join(&red_sender)?;

    // Off by default: dropped at table 110 and counted.
    let not_enabled = |node: usize| -> Result<u64> { Ok(packets(&cluster.nodes[node].dump_flows()?, 110, 0, "")) };
    let before = not_enabled(0)?;
    assert!(!gets(&from_red, &r1, "off")?, "multicast delivered before the project enabled it");
    assert!(received(&r2, Duration::from_millis(100)).is_empty(), "multicast reached node2 before it was enabled");
    assert!(not_enabled(0)? > before, "the drop was not counted by table 110");

    // On for red and blue (each its own VNID): within a second on both nodes, red's
    // multicast reaches red's pods only.
    cluster.oxsdnctl(&["annotate", "netnamespace", "red", &format!("{ANNOTATION}=true")])?;
    cluster.oxsdnctl(&["annotate", "netnamespace", "blue", &format!("{ANNOTATION}=true")])?;
    let took = until_all_get(&from_red, &[&r1, &r2], TAKES_EFFECT * 3)?;
    let took = took.expect("red's multicast never reached red's pods on both nodes");
    eprintln!("multicast on after {took:?}");
    assert!(took <= TAKES_EFFECT, "enabling took {took:?}");
    received(&own, Duration::from_millis(50));
    for (i, socket) in [&r1, &r2].into_iter().enumerate() {
        assert!(gets(&from_red, socket, &format!("red-{i}"))?, "red pod {i} missed red's multicast");
    }
    send(&from_red, "red-only")?;
    for (name, socket) in [("blue on node1", &b1), ("blue on node2", &b2), ("the sender", &own)] {
        let got = received(socket, Duration::from_millis(300));
        assert!(!got.iter().any(|p| p.starts_with("red")), "{name} got red's multicast: {got:?}");
    }
    // Blue's multicast goes to blue's pod on the other node, not to red's.
    assert!(gets(&from_blue, &b2, "blue")?, "blue's multicast did not reach node2's blue pod");
    for socket in [&r1, &r2] {
        assert!(!received(socket, Duration::from_millis(100)).iter().any(|p| p == "blue"));
    }

    // Counted on both nodes: tables 110, 111 and 120 on the sender's, the tunnel's
    // multicast rule and table 120 on the other.
    let (flows1, flows2) = (cluster.nodes[0].dump_flows()?, cluster.nodes[1].dump_flows()?);
    assert!(packets(&flows1, 110, 100, "reg0=multicast_enabled") > 0);
    assert!(packets(&flows1, 111, 100, "") > 0);
    assert!(packets(&flows1, 120, 100, "reg0=multicast_enabled") > 0);
    assert!(packets(&flows2, 30, 50, "ip,in_port=vxlan0,nw_dst=224.0.0.0/4") > 0);
    assert!(packets(&flows2, 120, 100, "reg0=multicast_enabled") > 0);

    // The trace shows the decision.
    let node = &cluster.nodes[0];
    let trace = run(node
        .netns
        .command(bins::oxsdnctl())
        .args(["trace", "--node", &node.name, "--bpffs-dir"])
        .arg(&cluster.bpffs)
        .args(["--from", &format!("pod:{}", red_sender.ip), "--to", &format!("{GROUP}:{PORT}"), "--proto", "udp"]))?;
    assert!(trace.contains("output:local pods of VNID"), "{trace}");
    assert!(trace.contains("table=111") || trace.contains("111."), "{trace}");

    // Off again under traffic: within a second nothing more arrives, and drops count.
    cluster.oxsdnctl(&["annotate", "netnamespace", "red", &format!("{ANNOTATION}-")])?;
    let took = until_none_get(&from_red, &[&r1, &r2], TAKES_EFFECT * 3)?;
    let took = took.expect("red's multicast still arrives after the annotation went");
    eprintln!("multicast off after {took:?}");
    assert!(took <= TAKES_EFFECT, "disabling took {took:?}");
    let before = not_enabled(0)?;
    assert!(!gets(&from_red, &r1, "off-again")?);
    assert!(not_enabled(0)? > before);
    // Blue kept it.
    assert!(gets(&from_blue, &b2, "blue-still")?);
    Ok(())
}

#[test]
fn joined_projects_need_every_projects_annotation() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let red_sender = cluster.nodes[0].add_pod("red", "sender")?;
    let blue2 = cluster.nodes[1].add_pod("blue", "b2")?;
    let red2 = cluster.nodes[1].add_pod("red", "r2")?;
    cluster.oxsdnctl(&["pod-network", "join-projects", "--to=red", "blue"])?;
    let from_red = sender(&red_sender)?;
    let (b2, r2) = (join(&blue2)?, join(&red2)?);

    // Red alone enabled it: the shared VNID stays off (OpenShift's rule).
    cluster.oxsdnctl(&["annotate", "netnamespace", "red", &format!("{ANNOTATION}=true")])?;
    std::thread::sleep(TAKES_EFFECT);
    assert!(gets_none(&from_red, &[&b2, &r2])?, "multicast on while blue, sharing the VNID, has not enabled it");

    // Blue too: both projects' pods on the other node get red's multicast.
    cluster.oxsdnctl(&["annotate", "netnamespace", "blue", &format!("{ANNOTATION}=true")])?;
    let took = until_all_get(&from_red, &[&b2, &r2], TAKES_EFFECT * 3)?;
    assert!(took.is_some(), "joined projects that both enabled multicast do not get it");

    // A value change needs --overwrite, as kubectl's; "false" turns it off.
    let err = cluster.oxsdnctl(&["annotate", "netnamespace", "blue", &format!("{ANNOTATION}=false")]).unwrap_err();
    assert!(err.to_string().contains("--overwrite is false"), "{err}");
    cluster.oxsdnctl(&["annotate", "netnamespace", "blue", &format!("{ANNOTATION}=false"), "--overwrite"])?;
    assert!(until_none_get(&from_red, &[&b2, &r2], TAKES_EFFECT * 3)?.is_some(), "still on after blue's false");

    // Bad keys are refused and change nothing.
    for bad in ["bad_prefix/x=1", "a/b/c=1", "=1", "x"] {
        let err = cluster.oxsdnctl(&["annotate", "netnamespace", "blue", bad]).unwrap_err();
        assert!(err.to_string().contains("invalid annotation"), "{bad}: {err}");
    }
    let yaml = cluster.oxsdnctl(&["get", "netnamespaces", "-o", "yaml"])?;
    assert!(yaml.contains(&format!("{ANNOTATION}: 'false'")), "{yaml}");
    assert!(!yaml.contains("bad_prefix"), "{yaml}");
    Ok(())
}

#[test]
fn multicast_survives_agent_restarts_and_reaches_pods_added_later() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let red_sender = cluster.nodes[0].add_pod("red", "sender")?;
    let red2 = cluster.nodes[1].add_pod("red", "r2")?;
    cluster.oxsdnctl(&["annotate", "netnamespace", "red", &format!("{ANNOTATION}=true")])?;
    let (from_red, r2) = (sender(&red_sender)?, join(&red2)?);
    assert!(until_all_get(&from_red, &[&r2], TAKES_EFFECT * 3)?.is_some(), "multicast never on");

    // The dataplane needs no agent: with both down, multicast still flows.
    cluster.nodes[0].kill_agent();
    cluster.nodes[1].kill_agent();
    assert!(gets(&from_red, &r2, "agents-down")?, "multicast stopped with the agents");
    // Restarted agents take the maps over without a gap.
    cluster.nodes[0].start_agent()?;
    cluster.nodes[1].start_agent()?;
    assert!(gets(&from_red, &r2, "agents-back")?, "multicast stopped after the agents restarted");

    // A pod added later, on either node, gets it; a deleted one's port is gone.
    let red1 = cluster.nodes[0].add_pod("red", "r1")?;
    let red3 = cluster.nodes[1].add_pod("red", "r3")?;
    let (r1, r3) = (join(&red1)?, join(&red3)?);
    assert!(until_all_get(&from_red, &[&r1, &r3, &r2], TAKES_EFFECT * 3)?.is_some(), "new pods miss multicast");
    cluster.nodes[1].del_pod(&red3)?;
    assert!(gets(&from_red, &r2, "after-delete")?);
    Ok(())
}
