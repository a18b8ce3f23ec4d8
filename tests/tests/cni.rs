//! The CNI plugin binary against a real agent: every command, every error path with
//! its code, concurrency, and nothing left behind.

use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::{Context, Result};
use oxsdn_tests::{
    cni::CniCall,
    inventory::{pod_records, pod_veths, Inventory},
    netns::Netns,
    Node, TestCluster,
};
use serde_json::{json, Value};

/// Pod IPs with a table 70 rule in the node's dataplane.
fn plugged_ips(node: &Node) -> Result<BTreeSet<String>> {
    Ok(node
        .dump_flows()?
        .into_iter()
        .filter(|f| f.table == 70 && f.priority == 100)
        .map(|f| f.matches.trim_start_matches("ip,nw_dst=").to_string())
        .collect())
}

fn recorded_pods(node: &Node) -> Result<usize> {
    Ok(pod_records(node)?.len())
}

/// What a failed call must not have changed: veths, dataplane entries, pod records.
struct Snapshot {
    veths: BTreeSet<String>,
    ips: BTreeSet<String>,
    records: usize,
}

impl Snapshot {
    fn take(node: &Node) -> Result<Snapshot> {
        Ok(Snapshot { veths: pod_veths(node)?, ips: plugged_ips(node)?, records: recorded_pods(node).unwrap_or(0) })
    }

    fn assert_same(&self, node: &Node, what: &str) -> Result<()> {
        let now = Snapshot::take(node)?;
        assert_eq!(self.veths, now.veths, "{what}: veths changed");
        assert_eq!(self.ips, now.ips, "{what}: dataplane changed");
        assert_eq!(self.records, now.records, "{what}: pod records changed");
        Ok(())
    }
}

fn add_call(node: &Node, id: &str, netns: &Netns, project: &str) -> Result<CniCall> {
    Ok(CniCall::add(&node.network_config()?, id, &netns.path(), project, id))
}

#[test]
fn add_check_del_and_the_result_format_of_every_version() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    for (i, version) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let mut conf = node.network_config()?;
        conf["cniVersion"] = json!(version);
        let ns = Netns::create(&format!("{}-v{i}", node.prefix()))?;
        let id = format!("{}-v{i}", node.prefix());
        let result = node.cni(&CniCall::add(&conf, &id, &ns.path(), "red", "p")).success()?;
        assert_eq!(result["cniVersion"], version);
        let addr = result["ips"][0]["address"].as_str().expect("address");
        let ip: Ipv4Addr = addr.split('/').next().unwrap().parse()?;
        assert!(addr.ends_with("/23"), "{addr}");
        assert_eq!(result["ips"][0]["gateway"], "10.128.0.1");
        assert_eq!(result["ips"][0]["interface"], 0);
        assert_eq!(result["ips"][0].get("version").is_some(), version.starts_with("0."), "{result}");
        let o = ip.octets();
        let mac = format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
        assert_eq!(result["interfaces"][0]["mac"], mac.as_str());
        assert_eq!(result["interfaces"][0]["name"], "eth0");
        assert_eq!(result["interfaces"][0]["sandbox"], ns.path().display().to_string());
        let routes = result["routes"].to_string();
        assert!(routes.contains("0.0.0.0/0") && routes.contains("10.128.0.0/14"), "{routes}");

        // The pod's side really looks like that.
        let link = ns.ip(&["-o", "link", "show", "eth0"])?;
        assert!(link.contains("mtu 1450") && link.contains(&mac), "{link}");
        assert!(ns.ip(&["-o", "addr", "show", "eth0"])?.contains(addr));
        let routes = ns.ip(&["route"])?;
        assert!(routes.contains("default via 10.128.0.1") && routes.contains("10.128.0.0/14 dev eth0"), "{routes}");

        let check = CniCall::new("CHECK", &{
            let mut c = conf.clone();
            c["prevResult"] = result.clone();
            c
        })
        .var("CNI_CONTAINERID", &id)
        .var("CNI_NETNS", &ns.path().display().to_string())
        .var("CNI_IFNAME", "eth0")
        .var("CNI_ARGS", "K8S_POD_NAMESPACE=red");
        if version == "0.3.1" {
            assert_eq!(node.cni(&check).error_code()?, 1, "CHECK needs 0.4.0");
        } else {
            node.cni(&check).success()?;
            // A pod whose interface drifted fails CHECK.
            ns.ip(&["link", "set", "eth0", "mtu", "1400"])?;
            assert!(node.cni(&check).error_code()? >= 100);
            ns.ip(&["link", "set", "eth0", "mtu", "1450"])?;
        }
        let del = CniCall::del(&conf, &id, Some(&ns.path()));
        node.cni(&del).success()?;
        node.cni(&del).success().map_err(|e| e.context("second DEL must succeed too"))?;
    }
    assert!(pod_veths(node)?.is_empty());
    assert!(plugged_ips(node)?.is_empty());
    assert_eq!(recorded_pods(node)?, 0);
    Ok(())
}

#[test]
fn version_status_and_gc() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let conf = node.network_config()?;

    let version: Value = node.cni(&CniCall::new("VERSION", &json!({"cniVersion": "1.1.0"}))).success()?;
    let supported = version["supportedVersions"].to_string();
    for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(supported.contains(v), "{version}");
    }

    let mut conf11 = conf.clone();
    conf11["cniVersion"] = json!("1.1.0");
    node.cni(&CniCall::new("STATUS", &conf11)).success()?;

    let namespaces: Vec<Netns> =
        (0..3).map(|i| Netns::create(&format!("{}-gc{i}", node.prefix()))).collect::<Result<_>>()?;
    let ids: Vec<String> = (0..3).map(|i| format!("{}-gc{i}", node.prefix())).collect();
    for (id, ns) in ids.iter().zip(&namespaces) {
        node.cni(&add_call(node, id, ns, "red")?).success()?;
    }
    let mut gc = conf11.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": ids[1], "ifname": "eth0" }]);
    node.cni(&CniCall::new("GC", &gc)).success()?;
    assert_eq!(recorded_pods(node)?, 1);
    assert_eq!(pod_veths(node)?.len(), 1);
    assert_eq!(plugged_ips(node)?.len(), 1);
    Ok(())
}

#[test]
fn every_bad_input_gets_its_error_code_and_changes_nothing() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let ns = Netns::create(&format!("{}-bad", node.prefix()))?;
    let good = add_call(node, "bad-input", &ns, "red")?;
    let conf = node.network_config()?;
    let not_a_netns = node.state_dir.join("pods.json");
    let with_conf = |f: &dyn Fn(&mut Value)| {
        let mut c = conf.clone();
        f(&mut c);
        good.clone().stdin(serde_json::to_vec(&c).unwrap())
    };
    let cases: Vec<(&str, CniCall, u64)> = vec![
        ("malformed JSON", good.clone().stdin(&b"{\"cniVersion\": \"1.0.0\", "[..]), 6),
        (
            "oversize JSON",
            good.clone().stdin(format!(
                "{{\"cniVersion\":\"1.0.0\",\"name\":\"oxsdn\",\"type\":\"oxsdn\",\"pad\":\"{}\"}}",
                "x".repeat(2 << 20)
            )),
            6,
        ),
        ("unknown version", with_conf(&|c| c["cniVersion"] = json!("9.9.9")), 1),
        ("wrong type", with_conf(&|c| c["type"] = json!("bridge")), 7),
        (
            "missing name",
            with_conf(&|c| {
                c.as_object_mut().unwrap().remove("name");
            }),
            7,
        ),
        ("missing CNI_COMMAND", good.clone().unset("CNI_COMMAND"), 4),
        ("unknown CNI_COMMAND", good.clone().var("CNI_COMMAND", "FROB"), 4),
        ("missing CNI_NETNS", good.clone().unset("CNI_NETNS"), 4),
        ("netns that does not exist", good.clone().var("CNI_NETNS", "/run/netns/oxsdn-no-such-netns"), 4),
        ("netns path that is not a netns", good.clone().var("CNI_NETNS", &not_a_netns.display().to_string()), 4),
        ("missing CNI_CONTAINERID", good.clone().unset("CNI_CONTAINERID"), 4),
        ("bad CNI_IFNAME", good.clone().var("CNI_IFNAME", "eth0/../x"), 4),
        ("too long CNI_IFNAME", good.clone().var("CNI_IFNAME", "abcdefghijklmnopq"), 4),
        (
            "missing K8S_POD_NAMESPACE, no defaultProject",
            with_conf(&|c| {
                c.as_object_mut().unwrap().remove("defaultProject");
            })
            .var("CNI_ARGS", "K8S_POD_NAME=x"),
            4,
        ),
        ("invalid defaultProject", with_conf(&|c| c["defaultProject"] = json!("Not_A_Project")), 7),
        (
            "odd characters in the namespace",
            good.clone().var("CNI_ARGS", "K8S_POD_NAMESPACE=Red_Team;K8S_POD_NAME=x"),
            4,
        ),
        ("malformed CNI_ARGS", good.clone().var("CNI_ARGS", "K8S_POD_NAMESPACE"), 4),
    ];
    let before = Snapshot::take(node)?;
    for (what, call, code) in cases {
        let out = node.cni(&call);
        assert_eq!(out.error_code().map_err(|e| e.context(what.to_string()))?, code, "{what}: {}", out.stdout);
        before.assert_same(node, what)?;
    }
    // CHECK and STATUS/GC need newer versions.
    let mut old = conf.clone();
    old["cniVersion"] = json!("1.0.0");
    assert_eq!(node.cni(&CniCall::new("STATUS", &old)).error_code()?, 1);
    // The node's own namespace is never a pod's.
    let own = good.clone().var("CNI_NETNS", &node.netns.path().display().to_string());
    assert_eq!(node.cni(&own).error_code()?, 4);
    before.assert_same(node, "ADD into the node's namespace")?;
    // Finally the good call works.
    node.cni(&good).success()?;
    Ok(())
}

/// The agent answers only once the pod table holding the change is on disk. When it
/// cannot be saved (here its temporary file's path is taken by a directory), ADD fails
/// and leaves nothing behind; DEL fails, and its retry once the disk is back saves the
/// table without the pod.
#[test]
fn a_pod_table_that_cannot_be_saved_fails_the_call_and_leaves_nothing() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let (kept_ns, new_ns) =
        (Netns::create(&format!("{}-kept", node.prefix()))?, Netns::create(&format!("{}-new", node.prefix()))?);
    let kept = add_call(node, "kept", &kept_ns, "red")?;
    node.cni(&kept).success()?;
    let before = Inventory::take(node)?;
    let blocker = node.state_dir.join("pods.tmp");
    std::fs::create_dir(&blocker)?;
    let add = add_call(node, "new", &new_ns, "red")?;
    assert_eq!(node.cni(&add).error_code()?, 100, "ADD with an unsavable pod table");
    let after = Inventory::take(node)?;
    assert!(before.differences(&after).is_empty(), "a failed ADD left: {:?}", before.differences(&after));

    let del = CniCall::del(&node.network_config()?, "kept", Some(&kept_ns.path()));
    assert_eq!(node.cni(&del).error_code()?, 100, "DEL with an unsavable pod table");
    std::fs::remove_dir(&blocker)?;
    node.cni(&del).success()?;
    assert_eq!(recorded_pods(node)?, 0, "the retried DEL left the pod recorded");
    assert!(plugged_ips(node)?.is_empty() && pod_veths(node)?.is_empty());
    node.cni(&add).success()?;
    assert_eq!(recorded_pods(node)?, 1);
    Ok(())
}

/// With no agent, ADD waits for one a while (a restart), then fails with code 11 and
/// leaves nothing; STATUS says the plugin is not available. A stop keeps the node's
/// network config (docs/design.md, CNI).
#[test]
fn a_dead_agent_gives_retryable_errors_and_leaves_nothing() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let conf = cluster.node("node1").network_config()?;
    cluster.nodes[0].stop_agent();
    let node = cluster.node("node1");
    assert!(node.conf_dir.join("80-oxsdn.conflist").exists(), "a stop withdrew the network config");
    let ns = Netns::create(&format!("{}-dead", node.prefix()))?;
    let before = Snapshot::take(node)?;
    let add = CniCall::add(&conf, "dead-agent", &ns.path(), "red", "p");
    let start = std::time::Instant::now();
    assert_eq!(node.cni(&add).error_code()?, 11);
    assert!(start.elapsed() >= oxsdn_cni::plugin::AGENT_START_WAIT, "ADD did not wait for an agent");
    before.assert_same(node, "ADD with the agent down")?;
    assert!(ns.ip(&["-o", "link"])?.lines().count() == 1, "pod namespace touched");
    let mut conf11 = conf.clone();
    conf11["cniVersion"] = json!("1.1.0");
    assert_eq!(node.cni(&CniCall::new("STATUS", &conf11)).error_code()?, 50);
    Ok(())
}

/// The entries of a node's delete queue (`delete-queue/` next to its socket).
fn queued_deletions(node: &Node) -> Result<Vec<std::path::PathBuf>> {
    let dir = node.socket.parent().context("socket without a directory")?.join("delete-queue");
    match std::fs::read_dir(&dir) {
        Ok(entries) => Ok(entries.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// DEL succeeds with the agent killed or stopped: the plugin deletes the veth pair and
/// records the deletion; the next agent applies it before it serves (the record, the
/// address, the map entries and the link pin go) and the other pods stay.
#[test]
fn del_without_an_agent_is_applied_by_the_next_one() -> Result<()> {
    use nix::sys::signal::Signal;

    for signal in [Signal::SIGKILL, Signal::SIGTERM] {
        let mut cluster = TestCluster::new(&[])?;
        cluster.add_node("node1")?;
        let conf = cluster.node("node1").network_config()?;
        let (gone, kept) = (cluster.nodes[0].add_pod("red", "gone")?, cluster.nodes[0].add_pod("red", "kept")?);
        let gone_veth = oxsdn_cni::naming::host_veth_name(&gone.container_id, "eth0");
        cluster.nodes[0].signal_agent(signal);
        let node = cluster.node("node1");

        let start = std::time::Instant::now();
        node.cni(&CniCall::del(&conf, &gone.container_id, Some(&gone.netns.path())))
            .success()
            .map_err(|e| e.context(format!("DEL after {signal}")))?;
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "DEL after {signal} took {:?}", start.elapsed());
        assert!(!pod_veths(node)?.contains(&gone_veth), "{signal}: the veth stayed");
        assert_eq!(queued_deletions(node)?.len(), 1, "{signal}: the deletion is not recorded");
        // A DEL retried by the runtime is fine too.
        node.cni(&CniCall::del(&conf, &gone.container_id, None)).success()?;

        cluster.nodes[0].start_agent()?;
        let node = cluster.node("node1");
        assert!(node.log_text().contains("applying a DEL recorded while no agent ran"), "{signal}: not applied");
        assert!(queued_deletions(node)?.is_empty(), "{signal}: the entry stayed");
        let records: Vec<String> =
            pod_records(node)?.iter().map(|r| r["containerId"].as_str().unwrap_or_default().to_string()).collect();
        assert_eq!(records, std::slice::from_ref(&kept.container_id), "{signal}");
        let plugged = plugged_ips(node)?;
        assert!(
            !plugged.contains(&gone.ip.to_string()) && plugged.contains(&kept.ip.to_string()),
            "{signal}: {plugged:?}"
        );
        let pins = std::fs::read_dir(node.pin_dir().join("links"))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<Vec<_>>>()?;
        assert!(!pins.contains(&gone_veth), "{signal}: the link pin stayed");
        assert!(
            oxsdn_tests::probe::ping(&kept.netns, Ipv4Addr::new(10, 128, 0, 1)),
            "{signal}: the other pod lost its network"
        );
    }
    Ok(())
}

/// A deletion queued for an earlier pod of an attachment (here one put back after it was
/// applied) does not remove the pod added again under that attachment since.
#[test]
fn a_queued_del_of_an_earlier_pod_leaves_the_new_one() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let conf = cluster.node("node1").network_config()?;
    let first = cluster.nodes[0].add_pod("red", "again")?;
    cluster.nodes[0].kill_agent();
    let node = cluster.node("node1");
    node.cni(&CniCall::del(&conf, &first.container_id, Some(&first.netns.path()))).success()?;
    let queued = queued_deletions(node)?;
    let [entry] = queued.as_slice() else { anyhow::bail!("queued: {queued:?}") };
    let earlier = std::fs::read(entry)?;
    cluster.nodes[0].start_agent()?;
    let node = cluster.node("node1");
    assert!(pod_records(node)?.is_empty(), "the queued DEL was not applied");

    // The same attachment again, in a new namespace, with a new veth.
    let ns = Netns::create(&format!("{}-again2", node.prefix()))?;
    node.cni(&CniCall::add(&conf, &first.container_id, &ns.path(), "red", "again")).success()?;
    let before = pod_records(node)?;
    cluster.nodes[0].stop_agent();
    std::fs::write(entry, &earlier)?;
    cluster.nodes[0].start_agent()?;
    let node = cluster.node("node1");
    assert!(queued_deletions(node)?.is_empty(), "the entry stayed");
    assert_eq!(pod_records(node)?, before, "the new pod's record changed");
    assert!(node.log_text().contains("is of an earlier pod of this attachment"));
    assert!(oxsdn_tests::probe::ping(&ns, Ipv4Addr::new(10, 128, 0, 1)), "the new pod lost its network");
    Ok(())
}

/// An agent restart (an upgrade: SIGTERM, then the new binary) keeps the node's network
/// config, and an ADD issued meanwhile waits for the new agent and succeeds. Prints what
/// docs/design.md quotes.
#[test]
fn an_add_during_an_agent_restart_waits_and_succeeds() -> Result<()> {
    use std::time::{Duration, Instant};

    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let conf = cluster.node("node1").network_config()?;
    let ns = Netns::create(&format!("{}-restart", cluster.prefix))?;
    let add = CniCall::add(&conf, &format!("{}-restart", cluster.prefix), &ns.path(), "red", "p");
    let node_netns = cluster.node("node1").netns.name.clone();

    let stop = Instant::now();
    cluster.nodes[0].stop_agent();
    let stopped = stop.elapsed();
    assert!(cluster.node("node1").conf_dir.join("80-oxsdn.conflist").exists(), "the stop withdrew the network config");
    let issued = Instant::now();
    let adding = std::thread::spawn(move || {
        let out = add.invoke(&Netns::borrowed(&node_netns));
        (out, issued.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    cluster.nodes[0].start_agent()?;
    let restart = start.elapsed();
    let (out, waited) = adding.join().expect("ADD thread");
    out.success().context("ADD during the restart")?;
    eprintln!("agent restart: stop {stopped:?}, start to ready {restart:?}; an ADD issued while no agent ran succeeded after {waited:?}");
    Ok(())
}

#[test]
fn del_after_the_pod_namespace_vanished() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let pod = node.add_pod("red", "gone")?;
    let ip = pod.ip.to_string();
    assert!(plugged_ips(node)?.contains(&ip));
    let conf = node.network_config()?;
    let (id, path) = (pod.container_id.clone(), pod.netns.path());
    drop(pod); // deletes the namespace, and with it the veth pair
    node.cni(&CniCall::del(&conf, &id, Some(&path))).success()?;
    node.cni(&CniCall::del(&conf, &id, None)).success()?;
    assert!(pod_veths(node)?.is_empty());
    assert!(plugged_ips(node)?.is_empty());
    assert_eq!(recorded_pods(node)?, 0);
    Ok(())
}

#[test]
fn twenty_concurrent_adds_then_dels_get_distinct_addresses_and_leak_nothing() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let conf = node.network_config()?;
    let namespaces: Vec<Netns> =
        (0..20).map(|i| Netns::create(&format!("{}-c{i}", node.prefix()))).collect::<Result<_>>()?;
    let calls: Vec<CniCall> = namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            CniCall::add(&conf, &format!("{}-c{i}", node.prefix()), &ns.path(), ["red", "blue", "green"][i % 3], "p")
        })
        .collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = calls.iter().map(|c| s.spawn(|| node.cni(c).success())).collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect::<Result<_>>()
    })?;
    let ips: BTreeSet<String> =
        results.iter().map(|r| r["ips"][0]["address"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(ips.len(), 20, "duplicate addresses: {ips:?}");
    assert_eq!(plugged_ips(node)?.len(), 20);
    assert_eq!(pod_veths(node)?.len(), 20);

    std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let call = CniCall::del(&conf, &format!("{}-c{i}", node.prefix()), Some(&namespaces[i].path()));
                s.spawn(move || node.cni(&call).success())
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().expect("thread").map(|_| ()))
    })?;
    assert!(pod_veths(node)?.is_empty(), "veths leaked");
    assert!(plugged_ips(node)?.is_empty(), "dataplane entries leaked");
    assert_eq!(recorded_pods(node)?, 0, "pod records leaked");
    Ok(())
}

#[test]
fn a_new_pod_reaches_its_gateway_as_soon_as_add_returns() -> Result<()> {
    // The host end of a fresh veth dropped what the node sent for a moment after ADD
    // (its queue not started yet), so a pod's first ARP for the gateway went unanswered.
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    for i in 0..12 {
        let pod = cluster.nodes[i % 2].add_pod("red", &format!("fresh{i}"))?;
        let gateway: Ipv4Addr = pod.result["ips"][0]["gateway"].as_str().unwrap_or_default().parse()?;
        // One echo, half a second: no second ARP attempt fits.
        assert!(oxsdn_tests::probe::ping(&pod.netns, gateway), "{} cannot reach its gateway right after ADD", pod.name);
    }
    Ok(())
}

/// `Threads:` of a process, from /proc.
fn thread_count(pid: u32) -> Result<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("Threads:")).context("no Threads line")?;
    Ok(line["Threads:".len()..].trim().parse()?)
}

/// 1,100 callers that connect and send nothing, or a byte now and then, hold no thread
/// of the agent and do not delay a real ADD; the agent closes the oldest at once when
/// they are more than it keeps open, and the others once their time is up, answering each.
#[test]
fn idle_and_slow_callers_do_not_hold_up_a_real_add() -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::{
        io::{Read, Write},
        os::unix::net::UnixStream,
        time::{Duration, Instant},
    };

    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let agent = node.agent_pid().context("no agent")?;
    let threads_before = thread_count(agent)?;

    // More than the agent keeps open at once (1,024): it closes the oldest to make room.
    let idle: Vec<UnixStream> = (0..600).map(|_| UnixStream::connect(&node.socket)).collect::<Result<_, _>>()?;
    let slow: Vec<UnixStream> = (0..500).map(|_| UnixStream::connect(&node.socket)).collect::<Result<_, _>>()?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| -> Result<()> {
        // Byte-at-a-time: a byte to one slow caller after another, every 2 ms.
        s.spawn(|| {
            for stream in slow.iter().cycle() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = (&*stream).write(b" ");
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let held = (|| -> Result<()> {
            std::thread::sleep(Duration::from_millis(500));
            let threads_held = thread_count(agent)?;
            // The first caller was closed to make room, with an answer saying why.
            let mut first = String::new();
            idle[0].set_read_timeout(Some(Duration::from_millis(500)))?;
            (&idle[0]).read_to_string(&mut first).context("reading the oldest caller's answer")?;
            assert!(first.contains("busy") && first.contains("\"code\":11"), "the oldest caller: {first:?}");
            let start = Instant::now();
            let pod = node.add_pod("red", "prompt")?;
            let took = start.elapsed();
            eprintln!(
                "1,100 idle and slow callers: ADD took {took:?}; agent threads {threads_before} -> {threads_held}"
            );
            assert!(took < Duration::from_secs(3), "ADD took {took:?} with 1,100 callers holding connections");
            assert!(oxsdn_tests::probe::ping(&pod.netns, Ipv4Addr::new(10, 128, 0, 1)), "the pod added has no network");
            assert!(
                threads_held <= threads_before + 2,
                "the agent went from {threads_before} to {threads_held} threads for 1,100 idle connections"
            );
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        held
    })?;
    // Every one of them is answered (an error) and closed once its time is up.
    for stream in idle.iter().chain(&slow).skip(1).step_by(50) {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut answer = String::new();
        (&*stream).read_to_string(&mut answer)?;
        assert!(answer.contains("\"code\""), "no error answer before the close: {answer:?}");
    }
    Ok(())
}

/// A `CNI_NETNS` that is a FIFO (opening it for reading waits for a writer) fails at once
/// with code 4, through the plugin and at the agent's socket alike.
#[test]
fn a_netns_that_is_a_fifo_fails_at_once() -> Result<()> {
    use oxsdn_cni::{
        client, code,
        naming::host_veth_name,
        protocol::{Attachment, Command, Request, Response},
    };
    use std::{os::unix::fs::OpenOptionsExt, time::Duration};

    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let fifo = cluster.dir.join("fifo-netns");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)?;
    let fifo_path = fifo.display().to_string();
    let before = Snapshot::take(node)?;

    let add = CniCall::add(&node.network_config()?, "fifo-netns", &fifo, "red", "p");
    let (tx, rx) = std::sync::mpsc::channel();
    let node_netns = node.netns.name.clone();
    std::thread::spawn(move || tx.send(add.invoke(&Netns::borrowed(&node_netns))));
    let out = match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(out) => out,
        Err(_) => {
            // Release the plugin blocked in open(2), then fail.
            let _ = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo);
            panic!("CNI ADD with a FIFO as CNI_NETNS did not finish within 5 s");
        }
    };
    assert_eq!(out.error_code()?, 4, "{}", out.stdout);
    assert!(out.stdout.contains("is not a network namespace"), "{}", out.stdout);
    before.assert_same(node, "ADD with a FIFO as CNI_NETNS")?;

    let request = Request {
        attachment: Some(Attachment { container_id: "fifo-netns".into(), ifname: "eth0".into() }),
        netns: Some(fifo_path),
        pod_namespace: Some("red".into()),
        pod_name: None,
        host_veth: Some(host_veth_name("fifo-netns", "eth0")),
        ..Request::of(Command::Add)
    };
    let answer = client::call_with_timeouts(&node.socket, &request, client::CONNECT_TIMEOUT, Duration::from_secs(5))
        .map_err(|e| anyhow::anyhow!("the agent did not answer in time: {e}"))?;
    match answer {
        Response::Error(e) => {
            assert!(e.code == code::INVALID_ENV && e.msg.contains("is not a network namespace"), "{e}")
        }
        other => panic!("the agent accepted a FIFO as a netns: {other:?}"),
    }
    before.assert_same(node, "ADD request with a FIFO as CNI_NETNS")?;
    Ok(())
}

/// podman 4 sends `K8S_POD_NAME` and no `K8S_POD_NAMESPACE`: its pods join the project the
/// agent's network config names (`defaultProject`), an ordinary isolated one; without the
/// key such an ADD is refused as before, never put in the global project.
#[test]
fn a_runtime_that_names_no_namespace_gets_the_default_project() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let conf = node.network_config()?;
    assert_eq!(conf["defaultProject"], "oxsdn-standalone", "the agent's network config");
    let red = node.add_pod("red", "red")?;
    let ns = Netns::create(&format!("{}-podman", node.prefix()))?;
    let podman = CniCall::add(&conf, "podman-web", &ns.path(), "unused", "web")
        .var("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web");

    let mut without = conf.clone();
    without.as_object_mut().expect("config object").remove("defaultProject");
    let before = Snapshot::take(node)?;
    let refused = node.cni(&podman.clone().stdin(serde_json::to_vec(&without)?));
    assert_eq!(refused.error_code()?, 4, "{}", refused.stdout);
    before.assert_same(node, "ADD without a namespace or defaultProject")?;

    let result = node.cni(&podman).success()?;
    let ip: Ipv4Addr =
        result["ips"][0]["address"].as_str().unwrap_or_default().split('/').next().unwrap_or_default().parse()?;
    let record = pod_records(node)?.into_iter().find(|r| r["containerId"] == "podman-web").context("no pod record")?;
    assert_eq!(record["project"], "oxsdn-standalone");
    assert_ne!(cluster.netid("oxsdn-standalone")?, 0, "the default project is global");
    assert!(oxsdn_tests::probe::ping(&ns, Ipv4Addr::new(10, 128, 0, 1)), "the pod has no network");
    assert!(!oxsdn_tests::probe::ping(&ns, red.ip), "the pod reaches another project");
    assert!(!oxsdn_tests::probe::ping(&red.netns, ip), "another project reaches the pod");
    node.cni(&CniCall::del(&conf, "podman-web", Some(&ns.path()))).success()?;
    assert!(pod_records(node)?.iter().all(|r| r["containerId"] != "podman-web"));
    Ok(())
}

/// The netlink crates parse this kernel's link messages without complaint: older ones
/// logged `IFLA_INET6_CONF ... expecting 236, got 240` for every link they read, on each
/// CNI call.
#[test]
fn cni_calls_log_no_netlink_parser_warnings() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let ns = Netns::create(&format!("{}-quiet", node.prefix()))?;
    let add = node.cni(&add_call(node, "quiet", &ns, "red")?);
    add.success()?;
    let del = node.cni(&CniCall::del(&node.network_config()?, "quiet", Some(&ns.path())));
    del.success()?;
    for (what, text) in
        [("ADD's stderr", add.stderr), ("DEL's stderr", del.stderr), ("the agent's log", node.log_text())]
    {
        assert!(!text.contains("IFLA_INET6_CONF") && !text.contains("netlink_packet_route"), "{what}: {text}");
    }
    Ok(())
}
