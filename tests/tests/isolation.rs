//! The multitenant isolation matrix on one node, before and after each pod-network
//! command, for running pods and for pods created after the change.

use std::time::Duration;

use anyhow::{bail, Result};
use oxsdn_tests::{
    matrix,
    scenario::{add_pod, allowed, wait_applied, INITIAL_PODS, STEPS},
    Pod, TestCluster,
};

fn check(stage: usize, pods: &[Pod]) -> Result<()> {
    let m = matrix::measure(pods);
    let bad = matrix::mismatches(pods, &m, |a, b| allowed(stage, a, b));
    if !bad.is_empty() {
        bail!("after {stage} steps:\n{}\n{}", matrix::format(pods, &m), bad.join("\n"));
    }
    Ok(())
}

#[test]
fn isolation_matrix_follows_pod_network_commands() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let mut pods = Vec::new();
    for (project, name) in INITIAL_PODS {
        add_pod(node, &mut pods, project, name)?;
    }
    check(0, &pods)?;
    for (i, step) in STEPS.iter().enumerate() {
        cluster.oxsdnctl(step.command)?;
        let took = wait_applied(&cluster, node, &pods, step.changed)?;
        assert!(took <= Duration::from_secs(1), "{:?} reached the dataplane after {took:?}", step.command);
        // Running pods switched; a pod started after the change must get the new VNID too.
        add_pod(node, &mut pods, step.changed, step.new_pod)?;
        check(i + 1, &pods)?;
    }
    Ok(())
}

#[test]
fn isolating_the_default_project_is_refused() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let err = cluster.oxsdnctl(&["pod-network", "isolate-projects", "default"]).unwrap_err();
    assert!(err.to_string().contains("default"), "{err}");
    Ok(())
}
