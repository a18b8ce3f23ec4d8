//! Reliability under operations: the agent stopped (crash or upgrade) and started again
//! while traffic flows, VNID changes hammered under traffic, pod and CLI churn without
//! leaks. Long variants: `OXSDN_HAMMER_SECS`, `OXSDN_SOAK_SECS` (`make soak`).

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{ensure, Result};
use nix::sys::signal::Signal;
use oxsdn_tests::{
    cluster::EXTERNAL_HOST,
    flows::FlowLine,
    inventory::Inventory,
    probe::{ping, serve_echo, serve_whoami, tcp_echo, whoami_tcp, Iperf3Client, Iperf3Server},
    Node, TestCluster,
};

const WHOAMI_PORT: u16 = 7070;
const SERVICE_PORT: &str = "80:8080";

/// A rule without its counters: what must be the same before and after a restart.
fn rule_of(f: &FlowLine) -> (u8, u16, String, String) {
    (f.table, f.priority, f.matches.clone(), f.actions.clone())
}

/// Checks that `after` has exactly the rules of `before` and that no counter went back.
fn same_rules_counters_kept(before: &[FlowLine], after: &[FlowLine]) -> Result<()> {
    let rules = |flows: &[FlowLine]| flows.iter().map(rule_of).collect::<Vec<_>>();
    ensure!(rules(before) == rules(after), "rules changed:\nbefore {:#?}\nafter {:#?}", rules(before), rules(after));
    for (b, a) in before.iter().zip(after) {
        ensure!(a.n_packets >= b.n_packets, "counter reset: {b:?} -> {a:?}");
    }
    Ok(())
}

/// Stops node `index`'s agent with `signal` while iperf3 streams run same-node and
/// cross-node, checks the dataplane without agent, starts the agent again and checks
/// it took the dataplane over as it was.
fn restart_agent_and_compare(cluster: &mut TestCluster, index: usize, signal: Signal, check_alone: impl Fn(&Node) -> Result<()>) -> Result<()> {
    let node = &cluster.nodes[index];
    let (flows, inventory) = (node.dump_flows()?, Inventory::take(node)?);
    cluster.nodes[index].signal_agent(signal);
    check_alone(&cluster.nodes[index])?;
    cluster.nodes[index].start_agent()?;
    let node = &cluster.nodes[index];
    let after = Inventory::take(node)?;
    let diffs = inventory.differences(&after);
    ensure!(diffs.is_empty(), "{}: the restarted agent changed the dataplane ({signal}):\n{}", node.name, diffs.join("\n"));
    same_rules_counters_kept(&flows, &node.dump_flows()?)
}

fn agent_restart_under_traffic(signal: Signal) -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[0].add_pod("red", "b")?;
    let c = cluster.nodes[1].add_pod("red", "c")?;
    let x = cluster.nodes[0].add_pod("blue", "x")?;
    let y = cluster.nodes[1].add_pod("blue", "y")?;
    // A service with an endpoint on each node, used before the restarts so its
    // counters are not zero.
    cluster.oxsdnctl(&["create", "service", "web", "-n", "red", "--tcp", SERVICE_PORT])?;
    cluster.oxsdnctl(&["set", "endpoints", "web", "-n", "red", &b.ip.to_string(), &c.ip.to_string()])?;
    let web = cluster.service_ip("red", "web")?;
    for pod in [&b, &c] {
        serve_echo(&pod.netns, 8080)?;
    }
    std::thread::sleep(Duration::from_secs(1));
    ensure!(tcp_echo(&a.netns, web, 80), "service not reachable before the restarts");
    serve_whoami(&cluster.external, WHOAMI_PORT)?;
    let external: Ipv4Addr = EXTERNAL_HOST.parse()?;

    const SECS: u32 = 10;
    let servers = [Iperf3Server::start(&b.netns)?, Iperf3Server::start(&c.netns)?];
    let clients = [Iperf3Client::start(&a.netns, b.ip, SECS)?, Iperf3Client::start(&a.netns, c.ip, SECS)?];
    std::thread::sleep(Duration::from_secs(1));
    for index in [0, 1] {
        let node_ip = cluster.nodes[index].ip.to_string();
        let from = if index == 0 { &a } else { &c };
        restart_agent_and_compare(&mut cluster, index, signal, |_| {
            // Without an agent: forwarding, isolation, services and egress (a new
            // connection, masqueraded) all work as before.
            ensure!(ping(&a.netns, b.ip) && ping(&a.netns, c.ip), "no forwarding without the agent");
            ensure!(!ping(&a.netns, x.ip) && !ping(&a.netns, y.ip), "no isolation without the agent");
            ensure!(tcp_echo(&a.netns, web, 80), "no service without the agent");
            ensure!(whoami_tcp(&from.netns, external, WHOAMI_PORT)? == node_ip, "no egress without the agent");
            Ok(())
        })?;
        // The restarted agent serves CNI again: a pod comes and goes on its node.
        let node = &cluster.nodes[index];
        let before = Inventory::take(node)?;
        let late = node.add_pod("red", "late")?;
        ensure!(ping(&late.netns, a.ip), "a pod added after the restart has no network");
        node.del_pod(&late)?;
        let diffs = before.differences(&Inventory::take(node)?);
        ensure!(diffs.is_empty(), "pod added and deleted after the restart left: {diffs:?}");
    }
    for client in clients {
        client.finish()?;
    }
    for server in servers {
        server.wait();
    }
    Ok(())
}

#[test]
fn agent_killed_and_restarted_under_traffic_takes_the_dataplane_over_as_it_was() -> Result<()> {
    agent_restart_under_traffic(Signal::SIGKILL)
}

#[test]
fn agent_stopped_for_an_upgrade_under_traffic_takes_the_dataplane_over_as_it_was() -> Result<()> {
    agent_restart_under_traffic(Signal::SIGTERM)
}

#[test]
fn teardown_removes_the_dataplane_and_a_new_agent_rebuilds_it() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[0].add_pod("red", "b")?;
    cluster.nodes[0].stop_agent();
    let node = &cluster.nodes[0];
    ensure!(ping(&a.netns, b.ip), "a stopped agent took the dataplane with it");
    node.teardown()?;
    ensure!(!node.pin_dir().exists(), "pins left after teardown");
    for link in ["tun0", "vxlan0"] {
        ensure!(node.netns.ip(&["link", "show", link]).is_err(), "{link} left after teardown");
    }
    ensure!(node.netns.command("nft").args(["list", "table", "ip", "oxsdn"]).output()?.status.code() != Some(0), "nftables table left");
    ensure!(!node.socket.exists() && !node.conf_dir.join("80-oxsdn.conflist").exists());
    ensure!(!ping(&a.netns, b.ip), "pods still connected without a dataplane");
    // The pods are still recorded: a new agent plugs them back in.
    cluster.nodes[0].start_agent()?;
    ensure!(ping(&a.netns, b.ip), "the new agent did not restore the pods");
    Ok(())
}
