//! `oxsdn-demo`: a sandboxed two-node cluster in network namespaces, joined by the
//! VXLAN overlay. Pods of the projects `default`, `red` and `blue`, spread over both
//! nodes, get isolated networks; the demo shows the reachability matrix before and
//! after each `oxsdnctl pod-network` command, checks it against the isolation rules,
//! shows `dump-flows`, and cleans everything up.

use std::process::ExitCode;

use anyhow::Result;
use oxsdn_tests::{
    cluster::{node_user, EXTERNAL_HOST, OPERATOR_USER},
    matrix,
    probe::{serve_identity, serve_whoami, whoami_tcp, IdentityClient},
    scenario::{add_pod, allowed, wait_applied_everywhere, INITIAL_PODS, STEPS},
    Pod, TestCluster,
};

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    fn record(&mut self, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            println!("  FAILED: {what}");
        }
    }
}

fn show_matrix(stage: usize, pods: &[Pod], tally: &mut Tally) {
    let m = matrix::measure(pods);
    println!("{}", matrix::format(pods, &m));
    let bad = matrix::mismatches(pods, &m, |a, b| allowed(stage, a, b));
    let pairs = pods.len() * (pods.len() - 1);
    tally.passed += pairs - bad.len();
    for b in &bad {
        tally.record(false, b);
    }
    println!("  {} of {pairs} pairs as the isolation rules say (ping and TCP each)\n", pairs - bad.len());
}

fn run(tally: &mut Tally) -> Result<()> {
    println!("== oxsdn demo: two nodes, projects default, red and blue ==\n");
    let mut cluster = TestCluster::with_etcd(&[])?;
    for name in ["node1", "node2"] {
        let node = cluster.add_node(name)?;
        println!("{name} up ({}): agent ready, tun0, vxlan0 and the eBPF pipeline in place", node.ip);
    }
    println!("\n$ oxsdnctl get hostsubnets\n{}", cluster.oxsdnctl(&["get", "hostsubnets"])?);
    least_privilege(&cluster, tally)?;
    let mut pods = Vec::new();
    for (project, name, node) in INITIAL_PODS {
        add_pod(&cluster, &mut pods, project, name, node)?;
        let pod = pods.last().expect("added");
        println!("  CNI ADD {project}/{name} on {}: {} ({})", pod.node, pod.ip, pod.mac);
    }
    println!("\n$ oxsdnctl get netnamespaces\n{}", cluster.oxsdnctl(&["get", "netnamespaces"])?);
    println!("Reachability (rows reach columns; ✓ ping and TCP pass, ✗ both blocked):");
    show_matrix(0, &pods, tally);

    for (i, step) in STEPS.iter().enumerate() {
        println!("$ oxsdnctl {}", step.command.join(" "));
        let out = cluster.oxsdnctl(step.command);
        tally.record(out.is_ok(), &format!("{:?}: {out:?}", step.command));
        let took = wait_applied_everywhere(&cluster, &pods, step.changed)?;
        println!("  applied to both nodes' dataplanes after {} ms", took.as_millis());
        tally.record(took.as_millis() <= 1000, "change reached the dataplanes within 1 s");
        let (name, node) = step.new_pod;
        add_pod(&cluster, &mut pods, step.changed, name, node)?;
        println!("  new pod {}/{name} started on {} after the change", step.changed, pods.last().expect("added").node);
        println!("\n$ oxsdnctl get netnamespaces\n{}", cluster.oxsdnctl(&["get", "netnamespaces"])?);
        show_matrix(i + 1, &pods, tally);
    }

    egress_and_services(&cluster, &pods, tally)?;

    println!("$ oxsdnctl dump-flows --node node1");
    let text = cluster.node("node1").dump_flows_text()?;
    print!("{text}");
    let flows = oxsdn_tests::flows::parse(&text)?;
    let isolated = flows.iter().find(|f| f.table == 80 && f.priority == 0).map_or(0, |f| f.n_packets);
    println!("\n  node1's table 80 dropped {isolated} packets between isolated projects");
    tally.record(isolated > 0, "table 80 counted the isolation drops");
    println!("\ncleaning up (agent, namespaces, pins)");
    Ok(())
}

/// etcd serves only clients with a certificate of its CA, and its roles limit each to
/// what it must write: node1's agent may not change any project's VNID.
fn least_privilege(cluster: &TestCluster, tally: &mut Tally) -> Result<()> {
    let etcd = cluster.etcd.as_ref().map(|e| e.endpoint()).unwrap_or_default();
    println!(
        "The cluster store: etcd at {etcd}, TLS with client certificates, etcd's auth on (oxsdnctl store setup-auth):"
    );
    println!("  oxsdnctl runs as etcd user {OPERATOR_USER} (writes everything of oxsdn's), each agent as {} (writes only its own HostSubnet)", node_user("NAME"));
    let node1 = &cluster.node("node1").store;
    let refused = cluster.oxsdnctl_as(node1, &["create", "project", "intruder"]);
    match &refused {
        Err(e) => println!(
            "  with node1's certificate, `oxsdnctl create project intruder` is refused: {}\n",
            last_line(&format!("{e:#}"))
        ),
        Ok(_) => println!("  with node1's certificate, `oxsdnctl create project intruder` SUCCEEDED\n"),
    }
    tally.record(refused.is_err(), "a node's credentials cannot create a project");
    Ok(())
}

/// The message of an error that quotes a failed command: its last part.
fn last_line(error: &str) -> &str {
    error.rsplit("oxsdnctl: ").next().unwrap_or(error).trim()
}

/// A pod reaching a host outside the cluster (which sees the node's address), and a
/// service in `blue` spread over endpoints on both nodes, used by a pod of the (now
/// global) `red` and refused to a pod of a new, isolated project.
fn egress_and_services(cluster: &TestCluster, pods: &[Pod], tally: &mut Tally) -> Result<()> {
    let external: std::net::Ipv4Addr = EXTERNAL_HOST.parse()?;
    serve_whoami(&cluster.external, 7070)?;
    let client = pods.iter().find(|p| p.name == "b1").expect("b1");
    let node_ip = cluster.nodes.iter().find(|n| n.name == client.node).expect("node").ip;
    let seen = whoami_tcp(&client.netns, external, 7070)?;
    println!("blue/b1 on {} -> external host {external}: it sees the connection from {seen}", client.node);
    tally.record(seen == node_ip.to_string(), "egress leaves with the node's address");

    let endpoints: Vec<&Pod> = pods.iter().filter(|p| p.name == "b1" || p.name == "b2").collect();
    for ep in &endpoints {
        serve_identity(&ep.netns, 9090, &format!("{}@{}", ep.name, ep.node))?;
    }
    cluster.oxsdnctl(&["create", "service", "web", "-n", "blue", "--tcp", "80:9090"])?;
    let ips: Vec<String> = endpoints.iter().map(|p| p.ip.to_string()).collect();
    cluster.oxsdnctl(
        &[&["set", "endpoints", "web", "-n", "blue"][..], &ips.iter().map(String::as_str).collect::<Vec<_>>()].concat(),
    )?;
    println!("\n$ oxsdnctl get services\n{}", cluster.oxsdnctl(&["get", "services"])?);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let ip = cluster.service_ip("blue", "web")?;
    let client = pods.iter().find(|p| p.name == "r3").expect("r3");
    let mut answers: std::collections::BTreeMap<String, usize> = Default::default();
    for _ in 0..20 {
        if let Ok(who) = IdentityClient::connect(&client.netns, ip, 80).and_then(|mut c| c.ask()) {
            *answers.entry(who).or_default() += 1;
        }
    }
    println!("red/r3 -> web ({ip}:80), 20 connections answered by: {answers:?}");
    tally.record(
        answers.len() == 2 && answers.values().sum::<usize>() == 20,
        "the service spreads over both nodes' endpoints",
    );
    let green = cluster.nodes[1].add_pod("green", "g1")?;
    let isolated = IdentityClient::connect(&green.netns, ip, 80).and_then(|mut c| c.ask()).is_err();
    println!(
        "green/g1 (a new project) -> web: {}\n",
        if isolated { "refused by tables 60/80 (green may not talk to blue)" } else { "ANSWERED" }
    );
    tally.record(isolated, "service isolation");
    Ok(())
}

fn main() -> ExitCode {
    let mut tally = Tally::default();
    if let Err(e) = run(&mut tally) {
        println!("demo aborted: {e:#}");
        tally.failed += 1;
    }
    println!("demo: {} checks passed, {} failed", tally.passed, tally.failed);
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
