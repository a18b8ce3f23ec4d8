//! What a malicious pod can try beyond spoofing (see docs/threat-model.md): crafted
//! fragments into another project, and the agent's socket from a non-root process.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::Result;
use oxsdn_tests::{
    cni::CniCall,
    flows::packets,
    frames::{self, pod_mac},
    probe::RawSocket,
    TestCluster,
};

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
    assert!(watch.capture(Duration::from_millis(300), |f| frames::contains(f, b"oxsdn-frag-")).is_empty(), "a fragment crossed projects");
    let flows = node.dump_flows()?;
    assert!(packets(&flows, 80, 0, "") >= isolated_before + 2, "table 80 did not count both");
    assert!(packets(&flows, 60, 100, "ip,nw_dst=172.30.0.53,nw_frag=later") >= 1, "the ClusterIP's fragment rule did not match");
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
