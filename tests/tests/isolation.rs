//! The multitenant isolation matrix on one node, before and after each pod-network
//! command, for running pods and for pods created after the change.

use anyhow::Result;
use oxsdn_tests::{scenario::run_story, TestCluster};

#[test]
fn isolation_matrix_follows_pod_network_commands() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    run_story(&cluster)
}

#[test]
fn isolating_the_default_project_is_refused() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let err = cluster.oxsdnctl(&["pod-network", "isolate-projects", "default"]).unwrap_err();
    assert!(err.to_string().contains("default"), "{err}");
    Ok(())
}
