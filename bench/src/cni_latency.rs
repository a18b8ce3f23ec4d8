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

/// One plugin call; fails if the plugin does.
fn invoke_ok(call: &CniCall, node: &Netns) -> Result<()> {
    let var = |key: &str| call.env.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.clone()).unwrap_or_default();
    call.invoke(node).success().with_context(|| format!("CNI {} of {}", var("CNI_COMMAND"), var("CNI_CONTAINERID")))?;
    Ok(())
}

/// The wall time of `work`, if it succeeds.
fn timed(work: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    work()?;
    Ok(start.elapsed())
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
        add_seq.push(timed(|| {
            invoke_ok(&CniCall::add(&config, &id("seq", i), &pod.path(), "bench", &format!("seq{i}")), &node.netns)
        })?);
    }
    for (i, pod) in pods.iter().take(plan.sequential).enumerate() {
        del_seq.push(timed(|| invoke_ok(&CniCall::del(&config, &id("seq", i), Some(&pod.path())), &node.netns))?);
    }

    let (mut add_conc, mut del_conc) = (Vec::new(), Vec::new());
    for batch in 0..plan.batches {
        let calls = |make: &dyn Fn(usize, &Netns) -> CniCall| -> Vec<CniCall> {
            pods.iter().take(plan.concurrent).enumerate().map(|(i, pod)| make(i, pod)).collect()
        };
        let phase = format!("b{batch}");
        let adds =
            calls(&|i, pod| CniCall::add(&config, &id(&phase, i), &pod.path(), "bench", &format!("{phase}p{i}")));
        add_conc.extend(all_at_once(&adds, &node.netns)?);
        let dels = calls(&|i, pod| CniCall::del(&config, &id(&phase, i), Some(&pod.path())));
        del_conc.extend(all_at_once(&dels, &node.netns)?);
    }
    let (floor_add, floor_del) = netlink_floor(&node.netns, &pods[..plan.concurrent], plan.batches)?;
    let p99 = |samples: &[Duration]| percentile(&samples.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(), 0.99);
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
        "netlink_floor": {
            "method": "the same pods at once, set up and removed by iproute2 with only the netlink requests a pod's network needs (veth pair with the pod end created in the pod's namespace with its MTU and MAC, host end up; in the pod: lo and eth0 up, address, two routes; then the veth deleted), no CNI, agent or eBPF: what the kernel's machine-wide RTNL lock and process starts cost alone",
            "add_concurrent_ms": ms(&floor_add),
            "del_concurrent_ms": ms(&floor_del),
        },
        "add_p99_concurrent_over_netlink_floor": p99(&add_conc) / p99(&floor_add),
        "del_p99_concurrent_over_netlink_floor": p99(&del_conc) / p99(&floor_del),
    }))
}

/// Sets up and removes `pods.len()` pods' networks at once with iproute2 alone, `batches`
/// times: the ADD and DEL wall times of each pod.
fn netlink_floor(node: &Netns, pods: &[Netns], batches: usize) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for _ in 0..batches {
        adds.extend(each_at_once(pods, |i, pod| {
            let host = format!("floor{i}");
            let mac = format!("0a:58:0a:80:00:{:02x}", i + 2);
            node.ip(&["link", "add", &host, "mtu", "1450", "type", "veth", "peer", "name", "eth0", "netns", &pod.name, "mtu", "1450", "address", &mac])?;
            node.ip(&["link", "set", &host, "up"])?;
            let script = format!(
                "link set lo up\nlink set eth0 up\naddr add 10.128.0.{}/23 dev eth0\nroute add 10.128.0.0/14 dev eth0\nroute add default via 10.128.0.1 dev eth0 onlink\n",
                i + 2
            );
            let mut batch = pod.command("ip").args(["-batch", "-"]).stdin(std::process::Stdio::piped()).spawn()?;
            std::io::Write::write_all(&mut batch.stdin.take().context("ip stdin")?, script.as_bytes())?;
            anyhow::ensure!(batch.wait()?.success(), "ip -batch in {} failed", pod.name);
            Ok(())
        })?);
        dels.extend(each_at_once(pods, |i, _| node.ip(&["link", "del", &format!("floor{i}")]).map(|_| ()))?);
    }
    Ok((adds, dels))
}

/// Runs every call on its own thread, all released at the same moment.
fn all_at_once(calls: &[CniCall], node: &Netns) -> Result<Vec<Duration>> {
    each_at_once(calls, |_, call| invoke_ok(call, node))
}

/// Runs `work` for every item on its own thread, all released at the same moment: the
/// wall time of each.
fn each_at_once<T: Sync>(items: &[T], work: impl Fn(usize, &T) -> Result<()> + Sync) -> Result<Vec<Duration>> {
    let start = std::sync::Barrier::new(items.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let (start, work) = (&start, &work);
                s.spawn(move || {
                    start.wait();
                    timed(|| work(i, item))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("thread panicked"))?).collect()
    })
}
