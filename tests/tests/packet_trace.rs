//! `oxsdnctl trace` against real nodes: each path's rules, registers and decision, read
//! from the nodes' live maps, and proof that tracing changes no counter and no
//! connection-tracking or fragment state.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{ensure, Context, Result};
use oxsdn_tests::{
    bins,
    flows::FlowLine,
    netns::run,
    probe::{serve_identity, IdentityClient},
    scenario::wait_applied_everywhere,
    Node, PathPods, Pod, TestCluster,
};
use serde_json::Value;

const PORT: u16 = 80;
const TARGET: u16 = 8080;

/// The maps a trace must not write besides counters.
const STATE_MAPS: [&str; 3] = ["CT_FORWARD", "CT_REVERSE", "FRAGMENTS"];

/// Everything of a node's dataplane state a trace could change: dump-flows with its
/// counters, and the contents of the state maps.
#[derive(Debug, PartialEq, Eq)]
struct State {
    flows: Vec<FlowLine>,
    maps: Vec<String>,
}

fn state(cluster: &TestCluster, node: &Node) -> Result<State> {
    // Pods send IPv6 (router solicitations, MLD) on their own; table 0 drops it with its
    // catch-all rule, which no trace here passes (checked in `trace`).
    let flows = node.dump_flows()?.into_iter().filter(|f| !(f.table == 0 && f.priority == 0)).collect();
    let maps = STATE_MAPS
        .iter()
        .map(|m| {
            let pin: PathBuf = cluster.bpffs.join(&node.name).join(m);
            run(std::process::Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(&pin))
        })
        .collect::<Result<_>>()?;
    Ok(State { flows, maps })
}

/// `oxsdnctl trace -o json` in the node's namespace, checking that the node's state is
/// the same before and after.
fn trace(cluster: &TestCluster, node: &Node, args: &[&str]) -> Result<Value> {
    let before = state(cluster, node)?;
    let text = run(node
        .netns
        .command(bins::oxsdnctl())
        .args(["trace", "--node", &node.name, "-o", "json"])
        .arg("--bpffs-dir")
        .arg(&cluster.bpffs)
        .args(args))?;
    let t: Value = serde_json::from_str(&text).with_context(|| format!("trace output {text}"))?;
    ensure!(
        !rules(&t).iter().any(|r| r["table"] == 0 && r["priority"] == 0),
        "the trace passed table 0's catch-all rule"
    );
    let after = state(cluster, node)?;
    ensure!(before == after, "the trace {args:?} changed the node's state:\nbefore {before:?}\nafter {after:?}");
    Ok(t)
}

fn rules(t: &Value) -> Vec<Value> {
    t["rules"].as_array().cloned().unwrap_or_default()
}

/// Whether the trace passed the rule of `table` whose match is `matches`.
fn passed(t: &Value, table: u8, matches: &str) -> bool {
    rules(t).iter().any(|r| r["table"] == table && r["matches"] == matches)
}

fn last_rule(t: &Value) -> (u64, u64, String, String) {
    let r = rules(t).last().cloned().unwrap_or_default();
    let text = |k: &str| r[k].as_str().unwrap_or_default().to_string();
    (r["table"].as_u64().unwrap_or(999), r["priority"].as_u64().unwrap_or(0), text("matches"), text("actions"))
}

fn from_pod(pod: &Pod) -> String {
    format!("pod:{}", pod.ip)
}

fn to_pod(pod: &Pod, port: u16) -> String {
    format!("{}:{port}", pod.ip)
}

fn output_pod(t: &Value, pod: &Pod) {
    assert_eq!(t["output"]["to"], "pod", "{t:#}");
    assert_eq!(t["output"]["ip"], pod.ip.to_string(), "{t:#}");
    assert_eq!(t["verdict"], "TC_ACT_REDIRECT", "{t:#}");
}

fn dropped(t: &Value) {
    assert_eq!(t["output"]["to"], "drop", "{t:#}");
    assert_eq!(t["verdict"], "TC_ACT_SHOT", "{t:#}");
    assert_eq!(t["datapath_actions"], "drop", "{t:#}");
}

/// Waits until node's table 60 has the service's rule.
fn wait_service(node: &Node, ip: Ipv4Addr) -> Result<()> {
    let rule = format!("tcp,nw_dst={ip},tp_dst={PORT}");
    let start = std::time::Instant::now();
    while !node.dump_flows()?.iter().any(|f| f.table == 60 && f.matches == rule) {
        ensure!(start.elapsed() < Duration::from_secs(5), "{}: no table 60 rule {rule}", node.name);
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn trace_shows_each_path_and_changes_nothing() -> Result<()> {
    let pods = PathPods::new()?;
    let (cluster, a, b, c, d) = (&pods.cluster, &pods.a, &pods.b, &pods.c, &pods.d);
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (red, blue) = (cluster.netid("red")?, cluster.netid("blue")?);

    // Same project, same node: table 80's reg0=reg1 rule, out of b's port.
    let t = trace(cluster, n1, &["--from", &from_pod(a), "--to", &to_pod(b, 5000), "--proto", "tcp"])?;
    output_pod(&t, b);
    assert_eq!((t["reg0"].as_u64(), t["reg1"].as_u64()), (Some(red.into()), Some(red.into())), "{t:#}");
    let from_a = format!(",nw_src={}", a.ip);
    assert!(
        rules(&t).iter().any(|r| r["table"] == 20 && r["matches"].as_str().is_some_and(|m| m.ends_with(&from_a))),
        "{t:#}"
    );
    assert!(passed(&t, 70, &format!("ip,nw_dst={}", b.ip)), "{t:#}");
    assert_eq!(last_rule(&t), (80, 100, "reg0=reg1".into(), "output:NXM_NX_REG2[]".into()), "{t:#}");

    // Another project: dropped by table 80's last rule.
    let t = trace(cluster, n1, &["--from", &from_pod(a), "--to", &to_pod(c, 5000), "--proto", "udp"])?;
    dropped(&t);
    assert_eq!((t["reg0"].as_u64(), t["reg1"].as_u64()), (Some(red.into()), Some(blue.into())), "{t:#}");
    assert_eq!(last_rule(&t), (80, 0, String::new(), "drop".into()), "{t:#}");

    // A spoofed source: table 20's drop, before any VNID is known.
    let t = trace(
        cluster,
        n1,
        &["--from", &from_pod(a), "--src", "10.128.0.250", "--to", &to_pod(b, 5000), "--proto", "tcp"],
    )?;
    dropped(&t);
    assert_eq!(last_rule(&t), (20, 0, String::new(), "drop".into()), "{t:#}");
    assert!(t["reg0"].is_null(), "{t:#}");

    // To a pod on node2: VXLAN to node2 with red's VNID.
    let t = trace(cluster, n1, &["--from", &from_pod(a), "--to", &to_pod(d, 5000), "--proto", "icmp"])?;
    assert_eq!(t["output"]["to"], "tunnel", "{t:#}");
    assert_eq!(t["output"]["node_ip"], n2.ip.to_string(), "{t:#}");
    assert_eq!(t["output"]["vni"].as_u64(), Some(red.into()), "{t:#}");
    assert_eq!(t["verdict"], "TC_ACT_REDIRECT", "{t:#}");
    assert_eq!(last_rule(&t).0, 90, "{t:#}");

    // The same packet as node2 receives it from the tunnel.
    let from_tunnel = format!("tunnel:{}:{red}", n1.ip);
    let t = trace(
        cluster,
        n2,
        &["--from", &from_tunnel, "--src", &a.ip.to_string(), "--to", &to_pod(d, 5000), "--proto", "tcp"],
    )?;
    output_pod(&t, d);
    assert!(passed(&t, 10, &format!("tun_src={}", n1.ip)), "{t:#}");
    assert_eq!(t["reg0"].as_u64(), Some(red.into()), "{t:#}");

    // A pod's ARP for its neighbour.
    let t = trace(cluster, n1, &["--from", &from_pod(a), "--to", &b.ip.to_string(), "--proto", "arp"])?;
    output_pod(&t, b);
    assert!(passed(&t, 40, &format!("arp,arp_tpa={}", b.ip)), "{t:#}");

    // After joining blue to red, a reaches c.
    cluster.oxsdnctl(&["pod-network", "join-projects", "--to=red", "blue"])?;
    wait_applied_everywhere(cluster, std::slice::from_ref(c), "blue")?;
    let t = trace(cluster, n1, &["--from", &from_pod(a), "--to", &to_pod(c, 5000), "--proto", "udp"])?;
    output_pod(&t, c);
    assert_eq!(t["reg1"].as_u64(), Some(red.into()), "{t:#}");

    // A service with an endpoint on each node, with a connection tracked already.
    for pod in [b, d] {
        serve_identity(&pod.netns, TARGET, &pod.name)?;
    }
    let ports = format!("{PORT}:{TARGET}");
    cluster.oxsdnctl(&["create", "service", "web", "-n", "red", "--tcp", &ports])?;
    cluster.oxsdnctl(&["set", "endpoints", "web", "-n", "red", &b.ip.to_string(), &d.ip.to_string()])?;
    let ip = cluster.service_ip("red", "web")?;
    wait_service(n1, ip)?;
    std::thread::sleep(Duration::from_millis(500));
    // Kept open through the traces: a closed connection leaves the tables (the
    // collector) while they run. Its last packets (the ACK) have passed before the
    // traces compare counters.
    let mut tracked = IdentityClient::connect(&a.netns, ip, PORT)?;
    tracked.ask()?;
    std::thread::sleep(Duration::from_millis(500));
    let mut endpoints_seen = Vec::new();
    for _ in 0..20 {
        let t = trace(cluster, n1, &["--from", &from_pod(a), "--to", &format!("{ip}:{PORT}"), "--proto", "tcp"])?;
        let rw = &t["translation"];
        assert_eq!((rw["src"].as_str(), rw["sport"].as_u64()), (Some(a.ip.to_string().as_str()), Some(40000)), "{t:#}");
        assert_eq!(rw["dport"].as_u64(), Some(TARGET.into()), "{t:#}");
        assert!(passed(&t, 60, &format!("tcp,nw_dst={ip},tp_dst={PORT}")), "{t:#}");
        assert!(passed(&t, 61, "ct_state=+new"), "a trace is a new connection: {t:#}");
        let dst = rw["dst"].as_str().unwrap_or_default();
        if dst == b.ip.to_string() {
            output_pod(&t, b);
        } else {
            assert_eq!(dst, d.ip.to_string(), "DNAT to a non-endpoint: {t:#}");
            assert_eq!(t["output"]["to"], "tunnel", "{t:#}");
            assert_eq!(
                (t["output"]["node_ip"].as_str(), t["output"]["vni"].as_u64()),
                (Some(n2.ip.to_string().as_str()), Some(0)),
                "{t:#}"
            );
        }
        endpoints_seen.push(dst.to_string());
    }
    endpoints_seen.sort();
    endpoints_seen.dedup();
    assert_eq!(endpoints_seen.len(), 2, "20 traces picked only {endpoints_seen:?}");
    Ok(())
}

#[test]
fn trace_refuses_what_it_cannot_trace() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let n1 = &cluster.nodes[0];
    let traced = |args: &[&str]| {
        run(n1
            .netns
            .command(bins::oxsdnctl())
            .args(["trace", "--node", &n1.name])
            .arg("--bpffs-dir")
            .arg(&cluster.bpffs)
            .args(args))
    };
    let err = traced(&["--from", "pod:10.128.0.77", "--to", "10.128.0.3", "--proto", "icmp"]).unwrap_err();
    assert!(err.to_string().contains("no pod with address 10.128.0.77"), "{err}");
    let err = traced(&["--from", "tunnel:172.22.122.12:5", "--to", "10.128.0.3", "--proto", "icmp"]).unwrap_err();
    assert!(err.to_string().contains("--src"), "{err}");
    let err = run(n1
        .netns
        .command(bins::oxsdnctl())
        .args(["trace", "--node", "nosuch", "--from", "node", "--to", "10.128.0.3", "--proto", "icmp"])
        .arg("--bpffs-dir")
        .arg(&cluster.bpffs))
    .unwrap_err();
    assert!(err.to_string().contains("node nosuch has no dataplane here"), "{err}");
    // From the node: the gateway's packet to a pod is delivered (table 80, from the gateway).
    let pod = n1.add_pod("red", "p")?;
    let text = traced(&["--from", "node", "--to", &format!("{}:22", pod.ip), "--proto", "tcp"])?;
    assert!(text.contains("Datapath actions: output:"), "{text}");
    assert!(text.contains(" 80. ip,nw_src="), "{text}");
    Ok(())
}
