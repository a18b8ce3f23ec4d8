//! oxsdn through real container runtimes on a test node: containerd's CRI plugin driven
//! as kubelet drives it, and podman's CNI backend. Each runtime runs in the node's
//! network namespace with its state in the test's directory, its CNI config directory
//! the one the node's agent writes, and images built here.

use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use oxsdn_tests::{
    inventory::{pod_records, pod_veths},
    probe,
    runtime_cri::{Containerd, CriPod, PortMapping},
    runtime_podman::Podman,
    Node, TestCluster,
};
use serde_json::{json, Value};

/// The port of the echo server a container runs (`nc -ll -e cat`).
const ECHO_PORT: u16 = 7777;

/// The node agent's record of the pod at `ip`, if any.
fn record_of(node: &Node, ip: &str) -> Result<Option<Value>> {
    Ok(pod_records(node)?.into_iter().find(|r| r["ip"] == ip))
}

/// A busybox echo server in a container of `pod`.
fn start_echo(containerd: &Containerd, pod: &CriPod) -> Result<String> {
    containerd.start_container(pod, "echo", &["/bin/nc", "-ll", "-p", &ECHO_PORT.to_string(), "-e", "/bin/cat"])
}

/// One ping from a container to `ip`: whether a reply came.
fn container_pings(containerd: &Containerd, container: &str, ip: &str) -> Result<bool> {
    Ok(containerd.exec(container, &["/bin/ping", "-c", "1", "-W", "2", ip])?.0 == 0)
}

/// A line sent from a container to the echo server at `ip`: whether it came back.
fn container_echoes(containerd: &Containerd, container: &str, ip: &str) -> Result<bool> {
    let script = format!("echo oxsdn | nc -w 2 {ip} {ECHO_PORT}");
    let (_, out) = containerd.exec(container, &["/bin/sh", "-c", &script])?;
    Ok(out.contains("oxsdn"))
}

#[test]
fn containerd_cri_pods_get_their_project_talk_within_it_and_are_torn_down_by_stop() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let containerd = Containerd::start(node, &cluster.dir.join("containerd"))?;

    let web = containerd.run_pod("red", "web")?;
    let client = containerd.run_pod("red", "client")?;
    let stranger = containerd.run_pod("blue", "stranger")?;
    for pod in [&web, &client, &stranger] {
        let ip: Ipv4Addr =
            pod.ip.parse().with_context(|| format!("{}/{} has no IPv4 address: {pod:?}", pod.namespace, pod.name))?;
        let record =
            record_of(node, &ip.to_string())?.with_context(|| format!("the agent has no record of {pod:?}"))?;
        // containerd passed the pod's namespace and name: the agent put it in that project.
        assert_eq!(record["project"], pod.namespace.as_str(), "{record}");
        assert_eq!(record["podName"], pod.name.as_str(), "{record}");
        assert_eq!(record["containerId"], pod.id.as_str(), "{record}");
    }
    let (red, blue) = (cluster.netid("red")?, cluster.netid("blue")?);
    ensure!(
        red != 0 && blue != 0 && red != blue,
        "projects red ({red}) and blue ({blue}) need distinct non-global VNIDs"
    );

    let echo = start_echo(&containerd, &web)?;
    let client_box = containerd.start_container(&client, "box", &[])?;
    let stranger_box = containerd.start_container(&stranger, "box", &[])?;
    assert!(container_pings(&containerd, &client_box, &web.ip)?, "red/client cannot ping red/web");
    assert!(container_echoes(&containerd, &client_box, &web.ip)?, "red/client gets no echo from red/web");
    assert!(!container_pings(&containerd, &stranger_box, &web.ip)?, "blue/stranger pings red/web");
    assert!(!container_echoes(&containerd, &stranger_box, &web.ip)?, "blue/stranger reaches red/web's echo server");

    // As kubelet deletes a pod: its containers, the sandbox (CNI DEL), later its removal.
    let veths_before = pod_veths(node)?.len();
    containerd.stop_container(&echo)?;
    containerd.stop_pod(&web)?;
    assert_eq!(record_of(node, &web.ip)?, None, "StopPodSandbox left the agent's record of red/web");
    assert_eq!(pod_veths(node)?.len(), veths_before - 1, "StopPodSandbox left red/web's veth");
    containerd.remove_pod(&web)?;
    assert!(!containerd.pod_ids()?.contains(&web.id), "RemovePodSandbox left the sandbox");
    assert!(!container_pings(&containerd, &client_box, &web.ip)?, "red/web's address still answers");

    for (pod, container) in [(&client, &client_box), (&stranger, &stranger_box)] {
        containerd.stop_container(container)?;
        containerd.stop_pod(pod)?;
        containerd.remove_pod(pod)?;
    }
    assert_eq!(pod_records(node)?, Vec::<Value>::new(), "pod records left");
    assert_eq!(pod_veths(node)?.len(), 0, "veths left");
    Ok(())
}

/// kubelet's hostPort and bandwidth annotation through containerd: the conflist's
/// capabilities make containerd pass them as `runtimeConfig`, the agent records them
/// with the pod, the host port reaches the pod from outside, and stopping the sandbox
/// takes both away.
#[test]
fn containerd_passes_host_ports_and_bandwidth_from_the_pod_spec() -> Result<()> {
    const HOST_PORT: i32 = 30777;
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let containerd = Containerd::start(node, &cluster.dir.join("containerd"))?;
    let port =
        PortMapping { protocol: 0, container_port: i32::from(ECHO_PORT), host_port: HOST_PORT, host_ip: String::new() };
    let annotations = HashMap::from([("kubernetes.io/egress-bandwidth".to_string(), "10M".to_string())]);
    let web = containerd.run_pod_with("red", "web", vec![port], annotations)?;
    let record = record_of(node, &web.ip)?.with_context(|| format!("the agent has no record of {web:?}"))?;
    assert_eq!(
        record["portMappings"],
        json!([{"hostPort": HOST_PORT, "containerPort": ECHO_PORT, "protocol": "tcp"}]),
        "{record}"
    );
    assert_eq!(record["bandwidth"]["egressRate"], 10_000_000, "{record}");

    let echo = start_echo(&containerd, &web)?;
    assert!(
        probe::tcp_echo(&cluster.external, node.ip, HOST_PORT as u16),
        "no echo through the host port from outside"
    );
    containerd.stop_container(&echo)?;
    containerd.stop_pod(&web)?;
    containerd.remove_pod(&web)?;
    assert!(!probe::tcp_echo(&cluster.external, node.ip, HOST_PORT as u16), "the host port outlived the pod");
    Ok(())
}

/// A pod whose sandbox containerd stops while the node's agent is down (`signal`: a
/// crash or the clean stop of an upgrade): the CNI spec asks DEL to succeed when there
/// is nothing left to do, and kubelet retries StopPodSandbox for as long as it fails
/// (the pod stays Terminating). What DEL could not tell the agent, the agent applies
/// when it starts again.
fn stop_pod_sandbox_while_the_agent_is_down(signal: Signal) -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let containerd = Containerd::start(cluster.node("node1"), &cluster.dir.join("containerd"))?;
    let pod = containerd.run_pod("red", "web")?;
    let veths_before = pod_veths(cluster.node("node1"))?.len();

    cluster.nodes[0].signal_agent(signal);
    containerd.stop_pod(&pod).context("StopPodSandbox while the agent is down")?;
    let node = cluster.node("node1");
    assert_eq!(pod_veths(node)?.len(), veths_before - 1, "StopPodSandbox left red/web's veth");

    cluster.nodes[0].start_agent()?;
    let node = cluster.node("node1");
    containerd.wait_network_ready()?;
    assert_eq!(record_of(node, &pod.ip)?, None, "the restarted agent kept the record of the deleted pod");
    containerd.remove_pod(&pod)?;
    assert!(!containerd.pod_ids()?.contains(&pod.id), "RemovePodSandbox left the sandbox");
    // The node serves new pods again.
    let next = containerd.run_pod("red", "next")?;
    assert!(record_of(node, &next.ip)?.is_some(), "no record of a pod started after the restart");
    Ok(())
}

// Waits for branch h-cni (issue 11 item 6): without it DEL fails with code 11 ("agent
// is not running") and StopPodSandbox fails.
#[test]
fn containerd_stops_a_pod_sandbox_while_the_agent_has_crashed() -> Result<()> {
    stop_pod_sandbox_while_the_agent_is_down(Signal::SIGKILL)
}

// Waits for branch h-cni (issue 11 item 6): without it the stopped agent removes its
// conflist, containerd has no network config ("cni plugin not initialized") and
// StopPodSandbox fails.
#[test]
fn containerd_stops_a_pod_sandbox_while_the_agent_is_stopped_for_an_upgrade() -> Result<()> {
    stop_pod_sandbox_while_the_agent_is_down(Signal::SIGTERM)
}

/// The project the agent's network config gives pods whose runtime names none (podman
/// sends only `K8S_POD_NAME`).
fn default_project(node: &Node) -> Result<String> {
    let config = node.network_config()?;
    let project = config["defaultProject"]
        .as_str()
        .with_context(|| format!("the agent's network config names no defaultProject: {config}"))?;
    Ok(project.to_string())
}

// Waits for branch h-cni (issue 11 item 6): without the conflist's default project,
// podman's ADD fails with code 4 ("CNI_ARGS has no K8S_POD_NAMESPACE").
#[test]
fn podman_containers_join_the_network_configs_default_project() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let project = default_project(node)?;
    // Pods of kubelet's kind (CNI with a namespace): one in that project, one in another.
    let friend = node.add_pod(&project, "friend")?;
    let stranger = node.add_pod("blue", "stranger")?;
    for pod in [&friend, &stranger] {
        probe::serve_echo(&pod.netns, ECHO_PORT)?;
    }
    let podman = Podman::new(node, &cluster.dir.join("podman"))?;

    let web = podman.run("web", &["/bin/nc", "-ll", "-p", &ECHO_PORT.to_string(), "-e", "/bin/cat"])?;
    let ip: Ipv4Addr = web.ip.parse().with_context(|| format!("podman's container has no IPv4 address: {web:?}"))?;
    let record = record_of(node, &web.ip)?.with_context(|| format!("the agent has no record of {web:?}"))?;
    assert_eq!(record["project"], project.as_str(), "{record}");
    assert_eq!(record["podName"], "web", "{record}");
    let vnid = cluster.netid(&project)?;
    ensure!(
        vnid != 0,
        "the default project {project} is global (VNID 0): podman's containers would reach every project"
    );
    assert_ne!(vnid, cluster.netid("blue")?, "{project} and blue share a VNID");

    let ping = |to: Ipv4Addr| {
        podman.exec("web", &["/bin/ping", "-c", "1", "-W", "2", &to.to_string()]).map(|(code, _)| code == 0)
    };
    assert!(ping(friend.ip)?, "podman's container cannot ping {project}/friend");
    assert!(!ping(stranger.ip)?, "podman's container pings blue/stranger");
    assert!(probe::tcp_echo(&friend.netns, ip, ECHO_PORT), "{project}/friend gets no echo from podman's container");
    assert!(!probe::tcp_echo(&stranger.netns, ip, ECHO_PORT), "blue/stranger reaches podman's container");

    let veths_before = pod_veths(node)?.len();
    podman.remove("web")?;
    assert_eq!(record_of(node, &web.ip)?, None, "podman rm left the agent's record");
    assert_eq!(pod_veths(node)?.len(), veths_before - 1, "podman rm left the container's veth");
    assert!(!probe::ping(&friend.netns, ip), "the removed container's address still answers");
    Ok(())
}

/// `podman run -p`: podman passes the port as the `portMappings` capability; the host
/// port reaches the container from outside until `podman rm`.
#[test]
fn podman_publishes_a_port_through_the_capability() -> Result<()> {
    const HOST_PORT: u16 = 30778;
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let podman = Podman::new(node, &cluster.dir.join("podman"))?;
    let publish = format!("{HOST_PORT}:{ECHO_PORT}");
    let web = podman.run_with(
        "web",
        &["-p", &publish],
        &["/bin/nc", "-ll", "-p", &ECHO_PORT.to_string(), "-e", "/bin/cat"],
    )?;
    let record = record_of(node, &web.ip)?.with_context(|| format!("the agent has no record of {web:?}"))?;
    assert_eq!(record["portMappings"][0]["hostPort"], HOST_PORT, "{record}");
    assert!(probe::tcp_echo(&cluster.external, node.ip, HOST_PORT), "no echo through the host port from outside");
    podman.remove("web")?;
    assert!(!probe::tcp_echo(&cluster.external, node.ip, HOST_PORT), "the host port outlived the container");
    Ok(())
}
