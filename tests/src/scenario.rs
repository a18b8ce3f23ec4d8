//! The three-project story the demo shows and the isolation test checks: pods in
//! `default`, `red` and `blue`, then `join-projects --to=red blue`, `isolate-projects
//! blue`, `make-projects-global red`, with the reachability the spec (§8.2) prescribes.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{
    cluster::{Node, Pod, TestCluster},
    matrix,
    probe::{serve_echo, ECHO_PORT},
};

/// (project, pod name, node index) of the pods started before any command. On fewer
/// nodes, the node index wraps.
pub const INITIAL_PODS: [(&str, &str, usize); 5] =
    [("default", "d1", 0), ("red", "r1", 0), ("red", "r2", 1), ("blue", "b1", 2), ("blue", "b2", 1)];

pub struct Step {
    pub command: &'static [&'static str],
    /// The project whose VNID the command changes.
    pub changed: &'static str,
    /// A pod of `changed` started after the command, and its node index.
    pub new_pod: (&'static str, usize),
}

pub const STEPS: [Step; 3] = [
    Step { command: &["pod-network", "join-projects", "--to=red", "blue"], changed: "blue", new_pod: ("b3", 2) },
    Step { command: &["pod-network", "isolate-projects", "blue"], changed: "blue", new_pod: ("b4", 0) },
    Step { command: &["pod-network", "make-projects-global", "red"], changed: "red", new_pod: ("r3", 1) },
];

/// Which projects share a VNID after `stage` steps: `None` = global (VNID 0).
fn group(stage: usize, project: &str) -> Option<&'static str> {
    match (stage, project) {
        (_, "default") => None,
        (0, "red") => Some("red"),
        (0, "blue") => Some("blue"),
        // join: blue takes red's VNID.
        (1, _) => Some("red"),
        // isolate: blue gets a VNID of its own again.
        (2, "red") => Some("red"),
        (2, "blue") => Some("blue-again"),
        // global: red gets VNID 0.
        (3, "red") => None,
        (3, "blue") => Some("blue-again"),
        _ => panic!("no pods of {project} in this story"),
    }
}

/// Whether pod `a` may reach pod `b` after `stage` steps (table 80's predicate).
pub fn allowed(stage: usize, a: &Pod, b: &Pod) -> bool {
    allowed_between(stage, &a.project, &b.project)
}

/// Whether a pod of project `a` may reach a pod (or a service) of project `b` after
/// `stage` steps.
pub fn allowed_between(stage: usize, a: &str, b: &str) -> bool {
    match (group(stage, a), group(stage, b)) {
        (None, _) | (_, None) => true,
        (x, y) => x == y,
    }
}

/// Adds a pod serving TCP echo on node `node` (modulo the number of nodes).
pub fn add_pod(cluster: &TestCluster, pods: &mut Vec<Pod>, project: &str, name: &str, node: usize) -> Result<()> {
    let pod = cluster.nodes[node % cluster.nodes.len()].add_pod(project, name)?;
    serve_echo(&pod.netns, ECHO_PORT)?;
    pods.push(pod);
    Ok(())
}

/// Waits until every node's dataplane has applied `project`'s VNID (see
/// `wait_applied`); returns the longest time it took.
pub fn wait_applied_everywhere(cluster: &TestCluster, pods: &[Pod], project: &str) -> Result<Duration> {
    let start = Instant::now();
    for node in &cluster.nodes {
        wait_applied(cluster, node, pods, project)?;
    }
    Ok(start.elapsed())
}

/// Waits until the node's dataplane loads, for every pod of `project` on it, the VNID the
/// store now gives the project (read from the pods' table 20 rules); returns how long
/// that took after the call.
pub fn wait_applied(cluster: &TestCluster, node: &Node, pods: &[Pod], project: &str) -> Result<Duration> {
    let start = Instant::now();
    let netid = cluster.netid(project)?;
    let want = format!("load:{netid:#x}->NXM_NX_REG0[],goto_table:21");
    let ips: Vec<String> = pods
        .iter()
        .filter(|p| p.project == project && p.node == node.name)
        .map(|p| format!("nw_src={}", p.ip))
        .collect();
    loop {
        let flows = node.dump_flows()?;
        let applied = ips
            .iter()
            .all(|ip| flows.iter().any(|f| f.table == 20 && f.matches.ends_with(ip.as_str()) && f.actions == want));
        if applied {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{project}: the dataplane does not load {want} for all its pods");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks the reachability matrix of `pods` against the rules after `stage` steps.
pub fn check_matrix(stage: usize, pods: &[Pod]) -> Result<()> {
    let m = matrix::measure(pods);
    let bad = matrix::mismatches(pods, &m, |a, b| allowed(stage, a, b));
    if !bad.is_empty() {
        bail!("after {stage} steps:\n{}\n{}", matrix::format(pods, &m), bad.join("\n"));
    }
    Ok(())
}

/// The whole story on `cluster`'s nodes: pods, then each step, checking the matrix
/// every time (running pods switched, pods started after the change included) and that
/// each change reached every node's dataplane within one second.
pub fn run_story(cluster: &TestCluster) -> Result<()> {
    let mut pods = Vec::new();
    for (project, name, node) in INITIAL_PODS {
        add_pod(cluster, &mut pods, project, name, node)?;
    }
    check_matrix(0, &pods)?;
    for (i, step) in STEPS.iter().enumerate() {
        cluster.oxsdnctl(step.command)?;
        let took = wait_applied_everywhere(cluster, &pods, step.changed)?;
        if took > Duration::from_secs(1) {
            bail!("{:?} reached the dataplanes after {took:?}", step.command);
        }
        let (name, node) = step.new_pod;
        add_pod(cluster, &mut pods, step.changed, name, node)?;
        check_matrix(i + 1, &pods)?;
    }
    Ok(())
}
