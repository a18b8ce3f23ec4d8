//! CNI ADD and DEL latency: the real `oxsdn` plugin binary, run the way a runtime runs
//! it, against the agent of a bench cluster node; one pod at a time, then batches of
//! pods at once.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use oxsdn_tests::{cni::CniCall, netns::Netns, TestCluster};
use serde_json::{json, Value};

use crate::measure::percentile;

pub struct Plan {
    /// Pods added one after the other, then deleted one after the other.
    pub sequential: usize,
    /// Pods added at once (and then deleted at once), per batch.
    pub concurrent: usize,
    pub batches: usize,
}

/// One timed plugin call; fails if the plugin does.
fn timed(call: &CniCall, node: &Netns) -> Result<Duration> {
    let start = Instant::now();
    let out = call.invoke(node);
    let took = start.elapsed();
    let var = |key: &str| call.env.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.clone()).unwrap_or_default();
    out.success().with_context(|| format!("CNI {} of {}", var("CNI_COMMAND"), var("CNI_CONTAINERID")))?;
    Ok(took)
}

fn ms(samples: &[Duration]) -> Value {
    let v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    json!({ "p50": percentile(&v, 0.5), "p99": percentile(&v, 0.99), "max": percentile(&v, 1.0), "samples": v.len() })
}

/// ADD and DEL latencies (ms, p50/p99) sequentially and with `plan.concurrent` pods at
/// once.
pub fn measure(plan: &Plan) -> Result<Value> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    let config = node.network_config()?;
    let pods: Vec<Netns> = (0..plan.sequential.max(plan.concurrent))
        .map(|i| Netns::create(&format!("{}-cni{i}", cluster.prefix)))
        .collect::<Result<_>>()?;
    let id = |phase: &str, i: usize| format!("{}-{phase}-{i}", cluster.prefix);

    let (mut add_seq, mut del_seq) = (Vec::new(), Vec::new());
    for (i, pod) in pods.iter().take(plan.sequential).enumerate() {
        add_seq.push(timed(&CniCall::add(&config, &id("seq", i), &pod.path(), "bench", &format!("seq{i}")), &node.netns)?);
    }
    for (i, pod) in pods.iter().take(plan.sequential).enumerate() {
        del_seq.push(timed(&CniCall::del(&config, &id("seq", i), Some(&pod.path())), &node.netns)?);
    }

    let (mut add_conc, mut del_conc) = (Vec::new(), Vec::new());
    for batch in 0..plan.batches {
        let calls = |make: &dyn Fn(usize, &Netns) -> CniCall| -> Vec<CniCall> {
            pods.iter().take(plan.concurrent).enumerate().map(|(i, pod)| make(i, pod)).collect()
        };
        let phase = format!("b{batch}");
        let adds = calls(&|i, pod| CniCall::add(&config, &id(&phase, i), &pod.path(), "bench", &format!("{phase}p{i}")));
        add_conc.extend(all_at_once(&adds, &node.netns)?);
        let dels = calls(&|i, pod| CniCall::del(&config, &id(&phase, i), Some(&pod.path())));
        del_conc.extend(all_at_once(&dels, &node.netns)?);
    }
    Ok(json!({
        "method": format!(
            "the release `oxsdn` plugin binary run in a node namespace against its agent (file store): {} pods added one after \
             the other then deleted, then {} batches of {} pods added at once (threads released together) then deleted at once; \
             wall time of each plugin process",
            plan.sequential, plan.batches, plan.concurrent
        ),
        "sequential_pods": plan.sequential,
        "concurrent_pods": plan.concurrent,
        "concurrent_batches": plan.batches,
        "add_sequential_ms": ms(&add_seq),
        "del_sequential_ms": ms(&del_seq),
        "add_concurrent_ms": ms(&add_conc),
        "del_concurrent_ms": ms(&del_conc),
    }))
}

/// Runs every call on its own thread, all released at the same moment.
fn all_at_once(calls: &[CniCall], node: &Netns) -> Result<Vec<Duration>> {
    let start = std::sync::Barrier::new(calls.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = calls
            .iter()
            .map(|call| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    timed(call, node)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("CNI thread panicked"))?).collect()
    })
}
