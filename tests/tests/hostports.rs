//! Host ports (CNI `portMappings`, passed by the runtime as `runtimeConfig` because the
//! agent's conflist declares the capability): `node:hostPort` reaches the pod from
//! outside, from pods (of any project, as the node is reachable) and from the node
//! itself; replies come back translated; a taken host port is refused; DEL and a
//! restarted agent leave exactly the recorded pods' ports.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use oxsdn_cni::code;
use oxsdn_tests::{
    cluster::EXTERNAL_HOST,
    cni::CniCall,
    netns::{run, Netns},
    probe::{serve_whoami, whoami_tcp, whoami_udp},
    Pod, TestCluster,
};
use serde_json::{json, Value};

const CONTAINER_PORT: u16 = 7070;
const HOST_PORT: u16 = 30080;

fn mappings(host_port: u16) -> Value {
    json!({"portMappings": [
        {"hostPort": host_port, "containerPort": CONTAINER_PORT, "protocol": "tcp"},
        {"hostPort": host_port, "containerPort": CONTAINER_PORT, "protocol": "udp"}
    ]})
}

fn gateway(pod: &Pod) -> Result<String> {
    let gw = pod.result["ips"][0]["gateway"].as_str().context("no gateway in the CNI result")?;
    Ok(gw.to_string())
}

fn hostports_table(node: &Netns) -> String {
    run(node.command("nft").args(["list", "table", "ip", "oxsdn-hostports"])).unwrap_or_default()
}

#[test]
fn host_port_reaches_the_pod_from_outside_pods_and_the_node() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let server = n1.add_pod_with("red", "server", Some(mappings(HOST_PORT)))?;
    let other_project = n1.add_pod("blue", "client")?;
    let remote = n2.add_pod("green", "remote")?;
    serve_whoami(&server.netns, CONTAINER_PORT)?;
    let external: Ipv4Addr = EXTERNAL_HOST.parse()?;

    // From outside: the pod sees the client's own address, both protocols.
    assert_eq!(whoami_tcp(&cluster.external, n1.ip, HOST_PORT)?, external.to_string(), "TCP from outside");
    assert_eq!(whoami_udp(&cluster.external, n1.ip, HOST_PORT)?, external.to_string(), "UDP from outside");
    // From a pod of another project on the node: reachable as the node is, the pod's
    // connection masqueraded to tun0's address so the reply goes back through the node.
    assert_eq!(whoami_tcp(&other_project.netns, n1.ip, HOST_PORT)?, gateway(&server)?, "from a pod of the node");
    assert_eq!(whoami_udp(&other_project.netns, n1.ip, HOST_PORT)?, gateway(&server)?, "UDP from a pod");
    // The pod itself through its own host port (hairpin).
    assert_eq!(whoami_tcp(&server.netns, n1.ip, HOST_PORT)?, gateway(&server)?, "hairpin");
    // From a pod on another node: it leaves its node with that node's address.
    assert_eq!(whoami_tcp(&remote.netns, n1.ip, HOST_PORT)?, n2.ip.to_string(), "from a pod of another node");
    // From the node itself.
    assert_eq!(whoami_tcp(&n1.netns, n1.ip, HOST_PORT)?, n1.ip.to_string(), "from the node");
    // Isolation stays: the blue pod cannot reach the red pod's address directly.
    assert!(whoami_tcp(&other_project.netns, server.ip, CONTAINER_PORT).is_err(), "isolation broken");
    // Only the node's addresses are translated: another node's address is not.
    assert!(whoami_tcp(&cluster.external, n2.ip, HOST_PORT).is_err(), "node2 forwards node1's host port");
    Ok(())
}

#[test]
fn host_ip_restricts_the_address() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    let rc = json!({"portMappings": [
        {"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp", "hostIP": node.ip.to_string()}
    ]});
    let server = node.add_pod_with("red", "server", Some(rc))?;
    serve_whoami(&server.netns, CONTAINER_PORT)?;
    let client = node.add_pod("blue", "client")?;
    assert!(whoami_tcp(&client.netns, node.ip, HOST_PORT).is_ok(), "the host IP");
    let gw: Ipv4Addr = gateway(&server)?.parse()?;
    assert!(whoami_tcp(&client.netns, gw, HOST_PORT).is_err(), "another address of the node");
    Ok(())
}

#[test]
fn a_taken_host_port_is_refused_and_freed_by_del() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    let first = node.add_pod_with("red", "first", Some(mappings(HOST_PORT)))?;

    // Another pod (any project) asking the same port: code 103, nothing left behind.
    let netns = Netns::create(&format!("{}-second", cluster.prefix))?;
    let mut config = node.network_config()?;
    config["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": HOST_PORT, "containerPort": 80, "hostIP": node.ip.to_string()}]});
    let container_id = format!("{}-second", cluster.prefix);
    let out = node.cni(&CniCall::add(&config, &container_id, &netns.path(), "blue", "second"));
    assert_eq!(out.error_code()?, u64::from(code::HOST_PORT_IN_USE), "{}", out.stdout);
    assert!(out.stdout.contains("red/first"), "the error names the holder: {}", out.stdout);
    assert!(!netns.ip(&["link"])?.contains("eth0"), "the refused pod kept an interface");
    let pods = std::fs::read_to_string(node.state_dir.join("pods.json"))?;
    assert!(!pods.contains(&container_id), "the refused pod was recorded");
    let table = hostports_table(&node.netns);
    assert_eq!(table.matches("dnat to").count(), 2, "{table}");

    // A malformed request: code 7 before anything is made.
    config["runtimeConfig"] = json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]});
    let out = node.cni(&CniCall::add(&config, &container_id, &netns.path(), "blue", "second"));
    assert_eq!(out.error_code()?, u64::from(code::INVALID_NETWORK_CONFIG), "{}", out.stdout);
    assert!(!netns.ip(&["link"])?.contains("eth0"));

    // Once the holder is deleted, the port is free; its rules went with it.
    node.del_pod(&first)?;
    assert!(!hostports_table(&node.netns).contains(&first.ip.to_string()));
    let second = node.add_pod_with("blue", "second", Some(mappings(HOST_PORT)))?;
    serve_whoami(&second.netns, CONTAINER_PORT)?;
    assert!(whoami_tcp(&cluster.external, node.ip, HOST_PORT).is_ok(), "the freed port to the new pod");
    Ok(())
}

#[test]
fn host_ports_survive_an_agent_restart() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let server = cluster.nodes[0].add_pod_with("red", "server", Some(mappings(HOST_PORT)))?;
    let gone = cluster.nodes[0].add_pod_with("red", "gone", Some(mappings(HOST_PORT + 1)))?;
    serve_whoami(&server.netns, CONTAINER_PORT)?;
    let node_ip = cluster.nodes[0].ip;
    cluster.nodes[0].kill_agent();
    // The rules outlive the agent (a restart must not cut the pods off)...
    assert!(whoami_tcp(&cluster.external, node_ip, HOST_PORT).is_ok(), "while no agent runs");
    // ...and a DEL while it is down is applied by the next one, ports included.
    cluster.nodes[0].del_pod(&gone)?;
    cluster.nodes[0].start_agent()?;
    let table = hostports_table(&cluster.nodes[0].netns);
    assert!(table.contains(&server.ip.to_string()) && !table.contains(&gone.ip.to_string()), "{table}");
    assert!(whoami_tcp(&cluster.external, node_ip, HOST_PORT).is_ok(), "after the restart");
    // The recorded ports stay taken across the restart.
    let out = cluster.nodes[0].cni(&CniCall::add(
        &{
            let mut c = cluster.nodes[0].network_config()?;
            c["runtimeConfig"] = mappings(HOST_PORT);
            c
        },
        &format!("{}-late", cluster.prefix),
        &Netns::create(&format!("{}-late", cluster.prefix))?.path(),
        "red",
        "late",
    ));
    assert_eq!(out.error_code()?, u64::from(code::HOST_PORT_IN_USE));
    Ok(())
}
