//! The benchmark's smoke variant: one short round of every scenario and the CNI
//! latency, through the real binary. It checks that everything sets up and carries
//! traffic, never how fast (performance is never a test assertion).

use std::process::Command;

#[test]
fn smoke_round_sets_up_every_scenario_and_carries_traffic() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_oxsdn-bench")).arg("--smoke").output().expect("running oxsdn-bench --smoke");
    assert!(out.status.success(), "oxsdn-bench --smoke failed:\n{}", String::from_utf8_lossy(&out.stderr));
}
