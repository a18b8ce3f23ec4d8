//! `oxsdn-demo`: a sandboxed two-node cluster in network namespaces, joined by the
//! VXLAN overlay. Pods of the projects `default`, `red` and `blue`, spread over both
//! nodes, get isolated networks; the demo shows the reachability matrix before and
//! after each `oxsdnctl pod-network` command, checks it against the isolation rules,
//! shows `dump-flows`, and cleans everything up.

use std::process::ExitCode;

use anyhow::Result;
use oxsdn_tests::{
    matrix,
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

fn main() -> ExitCode {
    let mut tally = Tally::default();
    if let Err(e) = run(&mut tally) {
        println!("demo aborted: {e:#}");
        tally.failed += 1;
    }
    println!("demo: {} checks passed, {} failed", tally.passed, tally.failed);
    if tally.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
