//! Scale figures (issue 5): an agent's memory with a large cluster loaded, and how long a
//! `join-projects` of a project with many running pods takes to be enforced everywhere.
//!
//! Two real nodes (agents in namespaces, on etcd) carry the pods; the other nodes exist
//! only as HostSubnet records, which every agent mirrors into its maps like real ones.
//! Projects, remote nodes and services are created through the controller API (from a
//! thread inside the underlay namespace, where etcd listens), pods through the CNI binary.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use oxsdn_common::MAX_PROJECT_SLOTS;
use oxsdn_controller::{
    store::{self, StoreBackend, StoreOptions},
    Cluster, NewService, Protocol, ServicePort,
};
use oxsdn_dataplane::maps::NodeMaps;
use oxsdn_tests::{netns::run, probe, Node, Pod, TestCluster};
use serde_json::{json, Value};

/// What is loaded (options of the scale figures).
#[derive(Clone, Debug, clap::Args)]
pub struct Load {
    /// Projects besides the two the join uses.
    #[arg(long = "scale-projects", default_value_t = 10_000)]
    pub projects: usize,
    /// Nodes that exist only as HostSubnet records.
    #[arg(long = "scale-remote-nodes", default_value_t = 1_000)]
    pub remote_nodes: usize,
    /// Services, each with one port and two endpoints.
    #[arg(long = "scale-services", default_value_t = 10_000)]
    pub services: usize,
    /// Running pods of the project that is joined, on the first node.
    #[arg(long = "scale-pods", default_value_t = 500)]
    pub pods: usize,
}

impl Load {
    /// A small load for the smoke run: the same steps, in seconds.
    pub fn smoke() -> Self {
        Load { projects: 20, remote_nodes: 5, services: 20, pods: 4 }
    }
}

/// The cluster network must hold the remote nodes' subnets: a /8 with /23 per node.
const INIT_ARGS: &[&str] = &["--cluster-network", "10.0.0.0/8", "--host-subnet-length", "9"];
/// The project whose pods fill the first node, and the project it is joined to.
const BIG: &str = "big";
const PEER: &str = "peer";
/// Remote node IPs: outside the cluster and service networks; nothing is ever sent there.
const REMOTE_NODE_IPS: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
/// How long enforcement may take before the run is declared failed.
const ENFORCE_TIMEOUT: Duration = Duration::from_secs(60);

fn seconds(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

pub fn measure(load: &Load) -> Result<Value> {
    let started = Instant::now();
    let mut cluster = TestCluster::with_etcd(INIT_ARGS)?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let idle = agent_memory(&cluster.nodes[0])?;

    // As the operator, whose credentials the cluster's oxsdnctl uses.
    let backend = match &cluster.store {
        oxsdn_tests::cluster::StoreArgs::Etcd { endpoint, cert } => StoreOptions {
            etcd_endpoints: vec![endpoint.clone()],
            etcd_cacert: cert.as_ref().map(|c| c.ca.clone()),
            etcd_cert: cert.as_ref().map(|c| c.cert.clone()),
            etcd_key: cert.as_ref().map(|c| c.key.clone()),
            ..StoreOptions::default()
        }
        .backend()?,
        oxsdn_tests::cluster::StoreArgs::File(_) => bail!("the scale run needs etcd"),
    };
    let records = load.clone();
    let store_setup = cluster.underlay.enter(move || load_store(&backend, &records))??;
    eprintln!("scale: store loaded: {store_setup}");

    let t = Instant::now();
    let big_pods = add_pods(&cluster.nodes[0], BIG, load.pods)?;
    let pods_s = seconds(t);
    eprintln!("scale: {} pods added in {pods_s} s", big_pods.len());
    let big_remote = cluster.nodes[1].add_pod(BIG, "big-remote")?;
    let peer_local = cluster.nodes[0].add_pod(PEER, "peer-local")?;
    let peer_remote = cluster.nodes[1].add_pod(PEER, "peer-remote")?;

    let big_id = project_id(&cluster, BIG)?;
    // Every record reached both agents' maps: projects, the other nodes, service ports.
    for node in &cluster.nodes {
        let maps = NodeMaps::open(&node_pins(&cluster, node))?;
        let wanted =
            [("PROJECTS", load.projects + 2), ("NODE_IPS", load.remote_nodes + 1), ("SERVICES", load.services)];
        for (map, count) in wanted {
            wait_for(&format!("{} mirroring {map}", node.name), || Ok(map_entries(&maps, map)? >= count))?;
        }
    }
    let memory: BTreeMap<String, Value> = cluster
        .nodes
        .iter()
        .map(|node| {
            Ok((
                node.name.clone(),
                json!({ "agent": agent_memory(node)?, "maps": map_memory(&node_pins(&cluster, node))? }),
            ))
        })
        .collect::<Result<_>>()?;

    // Isolated before: the probes must fail.
    let probes =
        [(&peer_remote, &big_pods[0]), (&peer_local, &big_remote), (&peer_local, big_pods.last().context("no pods")?)];
    if let Some((from, to)) = probes.iter().find(|(from, to)| probe::ping(&from.netns, to.ip)) {
        bail!("{} reaches {} before the join", from.name, to.name);
    }
    let join = measure_join(&cluster, big_id, &probes)?;

    Ok(json!({
        "load": {
            "projects": load.projects,
            "remote_nodes": load.remote_nodes,
            "services": load.services,
            "endpoints_per_service": ENDPOINTS_PER_SERVICE,
            "pods_on_node1": big_pods.len() + 1,
            "pods_on_node2": 2,
        },
        "setup_s": {
            "store": store_setup,
            "pods": pods_s,
            "total": seconds(started),
        },
        "memory_idle_node1": { "agent": idle },
        "memory": memory,
        "rss_goal_mib": 64,
        "join": join,
    }))
}

const ENDPOINTS_PER_SERVICE: usize = 2;

/// Records per controller call when loading: each call is one transaction, which this
/// keeps within etcd's default `--max-txn-ops` (128).
const BATCH: usize = 100;

/// Creates the projects and services through the controller's batch calls and registers
/// the remote nodes one by one (as their agents would), timing each kind.
fn load_store(backend: &StoreBackend, load: &Load) -> Result<Value> {
    let cluster = Cluster::new(store::open(backend)?);
    let t = Instant::now();
    cluster.create_netnamespaces(&[BIG.to_string(), PEER.to_string()])?;
    let projects: Vec<String> = (0..load.projects).map(|i| format!("p{i}")).collect();
    for batch in projects.chunks(BATCH) {
        cluster.create_netnamespaces(batch)?;
    }
    let projects_s = seconds(t);
    let t = Instant::now();
    let mut subnets = Vec::new();
    for i in 0..load.remote_nodes {
        let ip = Ipv4Addr::from(u32::from(REMOTE_NODE_IPS) + 1 + i as u32);
        subnets.push(cluster.register_node(&format!("remote{i}"), ip)?.subnet);
    }
    let nodes_s = seconds(t);
    let t = Instant::now();
    let services: Vec<NewService> = (0..load.services)
        .map(|i| NewService {
            project: projects[i % projects.len()].clone(),
            name: format!("s{i}"),
            ports: vec![ServicePort::new(Protocol::Tcp, 80, 8080)],
            cluster_ip: None,
            // On the remote nodes, a different node for each endpoint of a service.
            endpoints: (0..ENDPOINTS_PER_SERVICE)
                .map(|k| {
                    let subnet = subnets[(i + k) % subnets.len()];
                    Ipv4Addr::from(u32::from(subnet.network()) + 2 + (i / subnets.len()) as u32 % 500)
                })
                .collect(),
        })
        .collect();
    for batch in services.chunks(BATCH) {
        cluster.create_services(batch)?;
    }
    Ok(
        json!({ "projects": projects_s, "remote_nodes": nodes_s, "services": seconds(t), "records_per_transaction": BATCH }),
    )
}

fn add_pods(node: &Node, project: &str, count: usize) -> Result<Vec<Pod>> {
    (0..count).map(|i| node.add_pod(project, &format!("{project}-{i}"))).collect()
}

fn project_id(cluster: &TestCluster, project: &str) -> Result<u32> {
    let list: Value = serde_json::from_str(&cluster.oxsdnctl(&["get", "netnamespaces", "-o", "json"])?)?;
    list.as_array()
        .and_then(|all| all.iter().find(|ns| ns["name"] == project))
        .and_then(|ns| ns["id"].as_u64())
        .and_then(|id| u32::try_from(id).ok())
        .with_context(|| format!("no id of project {project}"))
}

/// Runs the join and times, from the moment the command starts: the command itself, each
/// node's `PROJECTS` entry of the project taking the new VNID (polled every 10 ms), and every probe (a ping across the isolation boundary) passing.
fn measure_join(cluster: &TestCluster, big_id: u32, probes: &[(&Pod, &Pod)]) -> Result<Value> {
    // Read before the timer starts: listing every project takes a while at this scale.
    let vnid = cluster.netid(PEER)?;
    let slots = cluster
        .nodes
        .iter()
        .map(|node| {
            let maps = NodeMaps::open(&node_pins(cluster, node))?;
            let slot = project_slot(&maps, big_id)?;
            Ok((maps, slot))
        })
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    cluster.oxsdnctl(&["pod-network", "join-projects", &format!("--to={PEER}"), BIG])?;
    let command_s = seconds(start);
    let mut maps_s = BTreeMap::new();
    for (node, (maps, slot)) in cluster.nodes.iter().zip(slots) {
        wait_for(&format!("{}'s map", node.name), || Ok(maps.projects.get(&slot, 0)?.vnid == vnid))?;
        maps_s.insert(node.name.clone(), seconds(start));
    }
    for (from, to) in probes {
        wait_for(&format!("{} reaching {}", from.name, to.name), || Ok(probe::ping(&from.netns, to.ip)))?;
    }
    let traffic_s = seconds(start);
    if cluster.netid(BIG)? != vnid {
        bail!("{BIG} did not take {PEER}'s VNID");
    }
    Ok(json!({
        "method": "timer starts before `oxsdnctl pod-network join-projects --to=peer big` (big: the pods on node1 plus one on node2); maps: each node's PROJECTS entry of big holds peer's VNID (10 ms polls); traffic: pings peer(node2)->big(node1), peer(node1)->big(node2), peer(node1)->big(node1) all answered (each try up to 0.5 s)",
        "command_s": command_s,
        "maps_enforced_s": maps_s,
        "traffic_enforced_s": traffic_s,
    }))
}

fn wait_for(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !done()? {
        if start.elapsed() > ENFORCE_TIMEOUT {
            bail!("{what}: not after {ENFORCE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn node_pins(cluster: &TestCluster, node: &Node) -> std::path::PathBuf {
    cluster.bpffs.join(&node.name)
}

fn bpftool(args: &[&str]) -> Result<Value> {
    Ok(serde_json::from_str(&run(Command::new("bpftool").arg("-j").args(args))?)?)
}

/// The slot of project `id` in a node's `PROJECTS`.
fn project_slot(maps: &NodeMaps, id: u32) -> Result<u32> {
    (0..MAX_PROJECT_SLOTS)
        .find(|slot| maps.projects.get(slot, 0).is_ok_and(|p| p.id == id))
        .with_context(|| format!("project {id} is not in PROJECTS"))
}

/// Entries of one of the maps the scale load fills.
fn map_entries(maps: &NodeMaps, map: &str) -> Result<usize> {
    Ok(match map {
        "PROJECTS" => (0..MAX_PROJECT_SLOTS).filter(|slot| maps.projects.get(slot, 0).is_ok_and(|p| p.id != 0)).count(),
        "NODE_IPS" => maps.node_ips.keys().count(),
        "SERVICES" => maps.services.keys().count(),
        other => bail!("no count of {other}"),
    })
}

/// `VmRSS` and `VmHWM` of the node's agent, in MiB.
fn agent_memory(node: &Node) -> Result<Value> {
    let pid = node.agent_pid().context("agent not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| -> Result<f64> {
        let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
        let n: f64 = line.split_whitespace().nth(1).context("no value")?.parse()?;
        Ok((n / 1024.0 * 10.0).round() / 10.0)
    };
    Ok(json!({ "vm_rss_mib": kib("VmRSS:")?, "vm_hwm_mib": kib("VmHWM:")? }))
}

/// Kernel memory of the node's pinned maps (`bytes_memlock` as bpftool reports it), in
/// total and per map, in MiB.
fn map_memory(pins: &Path) -> Result<Value> {
    let mut per_map = BTreeMap::new();
    for entry in std::fs::read_dir(pins)? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let info = bpftool(&["map", "show", "pinned", path.to_str().context("pin path")?])?;
        let bytes = info["bytes_memlock"].as_u64().context("no bytes_memlock")?;
        let name = path.file_name().context("pin name")?.to_string_lossy().into_owned();
        per_map.insert(name, json!({ "mib": bytes as f64 / 1048576.0, "max_entries": info["max_entries"] }));
    }
    let total: f64 = per_map.values().filter_map(|m| m["mib"].as_f64()).sum();
    Ok(json!({ "total_mib": (total * 10.0).round() / 10.0, "per_map": per_map }))
}
