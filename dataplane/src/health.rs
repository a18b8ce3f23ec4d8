//! A node's health, as `oxsdnctl status` checks it (like `cilium status`): the agent
//! answers on its socket (its own report: mirrors, last minute's drops), the store
//! answers, every expected device has its program attached through its pinned link,
//! the maps hold what the store says, the CNI config is there. Each check is
//! independent, so one broken part does not hide the others.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};
use oxsdn_cni::{
    client,
    protocol::{AgentHealth, Command, Request, Response},
};
use oxsdn_controller::Cluster;
use serde::Serialize;

use crate::{
    agent::CNI_CONF_FILE,
    flows::ifname_or_index,
    loader::XDP_UNDERLAY,
    maps::{ip_from_key, LocalPods, NodeMaps},
    metrics::{self, recent::RecentDropsWindow},
    prefilter::{self, Attached},
};

/// What the agent's report needs beyond the agent: set once by `oxsdn-agent`.
pub struct Observed {
    pub recent_drops: Arc<RecentDropsWindow>,
    pub metrics_address: Option<String>,
}

static OBSERVED: OnceLock<Observed> = OnceLock::new();

pub fn observe(observed: Observed) {
    let _ = OBSERVED.set(observed);
}

/// The agent's answer to `Command::Health`.
pub fn agent_report(node: &str) -> AgentHealth {
    let m = metrics::global();
    let (recent_drops, window) = match OBSERVED.get().map(|o| o.recent_drops.drops()) {
        Some(Ok(drops)) => drops,
        Some(Err(e)) => {
            tracing::warn!("reading the recent drops: {e:#}");
            (Vec::new(), 0)
        }
        None => (Vec::new(), 0),
    };
    AgentHealth {
        node: node.into(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_unix_ms: metrics::unix_ms(m.started()),
        mirrors: m.mirrors(),
        metrics_address: OBSERVED.get().and_then(|o| o.metrics_address.clone()),
        recent_drops,
        drops_window_secs: window,
    }
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The whole status of a node.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub healthy: bool,
    pub checks: Vec<Check>,
    /// The agent's own report, if it answered.
    pub agent: Option<AgentHealth>,
}

/// Where a node's parts are, as given to its agent.
pub struct NodePaths {
    pub node: String,
    pub pin_dir: PathBuf,
    pub socket: PathBuf,
    pub cni_conf_dir: PathBuf,
}

/// How long the agent has to accept and to answer on its socket. (A mirror's last sync
/// has no age limit: an open watch keeps it current however quiet the store is; a
/// broken one is listed again within a second, so `watching` is what tells.)
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
/// A dataplane that differs from the store is read again after this, to tell a change
/// still on its way from a lasting difference.
const SETTLE: Duration = Duration::from_secs(2);

fn check(name: &'static str, outcome: Result<String>) -> Check {
    match outcome {
        Ok(detail) => Check { name, ok: true, detail },
        Err(e) => Check { name, ok: false, detail: format!("{e:#}") },
    }
}

/// Checks a node. `cluster`: the store, or why it could not be opened.
pub fn node_status(paths: &NodePaths, cluster: Result<Cluster>) -> NodeStatus {
    let mut checks = Vec::new();
    let agent = ask_agent(&paths.socket);
    checks.push(check(
        "agent",
        agent
            .as_ref()
            .map(|a| format!("pid {}, up {}s", a.pid, age_secs(a.started_unix_ms)))
            .map_err(|e| anyhow::anyhow!("{e:#}")),
    ));
    checks.push(check("cni socket", cni_status(&paths.socket)));
    let store = cluster.and_then(|c| StoreView::read(&c).map(|v| (c, v)));
    checks.push(check(
        "store",
        store
            .as_ref()
            .map(|(_, v)| {
                format!("{} projects, {} nodes, {} services", v.projects.len(), v.nodes.len(), v.service_ips.len())
            })
            .map_err(|e| anyhow::anyhow!("{e:#}")),
    ));
    if let Ok(a) = &agent {
        checks.push(check("sync", sync(a)));
    }
    let maps = NodeMaps::open(&paths.pin_dir);
    match &maps {
        Ok(maps) => {
            checks.push(check("programs", programs(maps, &paths.pin_dir)));
            if let Ok((cluster, view)) = &store {
                checks.push(check("maps", consistent(maps, cluster, view, &paths.node)));
            }
        }
        Err(e) => checks.push(Check { name: "dataplane", ok: false, detail: format!("{e:#}") }),
    }
    checks.push(check("cni config", conflist(&paths.cni_conf_dir, &paths.socket)));
    if let Ok(a) = &agent {
        let total: u64 = a.recent_drops.iter().map(|d| d.packets).sum();
        let by_rule: Vec<String> =
            a.recent_drops.iter().map(|d| format!("table {} {} {}", d.table, d.rule, d.packets)).collect();
        let detail = format!(
            "{total} in the last {} s{}{}",
            a.drops_window_secs,
            if by_rule.is_empty() { "" } else { ": " },
            by_rule.join(", ")
        );
        checks.push(Check { name: "drops", ok: true, detail });
    }
    NodeStatus { node: paths.node.clone(), healthy: checks.iter().all(|c| c.ok), checks, agent: agent.ok() }
}

fn age_secs(unix_ms: u64) -> u64 {
    metrics::unix_ms(SystemTime::now()).saturating_sub(unix_ms) / 1000
}

fn ask_agent(socket: &Path) -> Result<AgentHealth> {
    match client::call_with_timeouts(socket, &Request::of(Command::Health), SOCKET_TIMEOUT, SOCKET_TIMEOUT) {
        Ok(Response::Health(h)) => Ok(h),
        Ok(other) => bail!("the agent answered HEALTH with {other:?}"),
        Err(e) => bail!("no answer on {}: {}", socket.display(), e.msg),
    }
}

/// The CNI plugin's own STATUS call.
fn cni_status(socket: &Path) -> Result<String> {
    match client::call_with_timeouts(socket, &Request::of(Command::Status), SOCKET_TIMEOUT, SOCKET_TIMEOUT) {
        Ok(Response::Done) => Ok(format!("{} answers STATUS", socket.display())),
        Ok(other) => bail!("{} answered STATUS with {other:?}", socket.display()),
        Err(e) => bail!("{} does not answer STATUS: {}", socket.display(), e.msg),
    }
}

/// Every mirror watches the store and has synced.
fn sync(a: &AgentHealth) -> Result<String> {
    let mut parts = Vec::new();
    let mut broken = Vec::new();
    for m in &a.mirrors {
        let state = if m.last_sync_unix_ms == 0 {
            "never synced".to_string()
        } else {
            format!("synced {}s ago", age_secs(m.last_sync_unix_ms))
        };
        let line = format!("{}: {}{state}", m.kind, if m.watching { "watching, " } else { "not watching, " });
        if !m.watching || m.last_sync_unix_ms == 0 {
            broken.push(format!("{line}{}", m.last_error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()));
        }
        parts.push(line);
    }
    if a.mirrors.is_empty() {
        bail!("the agent follows no part of the store");
    }
    if !broken.is_empty() {
        bail!("{}", broken.join("; "));
    }
    Ok(parts.join("; "))
}

/// What the store says this node's maps must hold.
struct StoreView {
    /// Project id -> VNID.
    projects: BTreeMap<u32, u32>,
    /// Node name -> (underlay IP, subnet).
    nodes: BTreeMap<String, (Ipv4Addr, String)>,
    service_ips: BTreeSet<Ipv4Addr>,
}

impl StoreView {
    fn read(cluster: &Cluster) -> Result<StoreView> {
        let (projects, _) = cluster.list_netnamespaces().context("listing projects")?;
        let (nodes, _) = cluster.list_hostsubnets().context("listing nodes")?;
        let (services, _) = cluster.list_services().context("listing services")?;
        Ok(StoreView {
            projects: projects.iter().map(|ns| (ns.id, ns.netid)).collect(),
            nodes: nodes.iter().map(|hs| (hs.host.clone(), (hs.host_ip, hs.subnet.to_string()))).collect(),
            service_ips: services.iter().map(|s| s.cluster_ip).collect(),
        })
    }
}

/// The maps hold the store's projects (each with its VNID, no others), the other nodes
/// and the services' ClusterIPs. A difference is looked at again after `SETTLE`: a change
/// on its way is not a fault.
fn consistent(maps: &NodeMaps, cluster: &Cluster, view: &StoreView, node: &str) -> Result<String> {
    match differences(maps, view, node)? {
        d if d.is_empty() => {}
        _ => {
            std::thread::sleep(SETTLE);
            let view = StoreView::read(cluster)?;
            let d = differences(maps, &view, node)?;
            if !d.is_empty() {
                bail!("{}", d.join("; "));
            }
        }
    }
    Ok(format!(
        "{} projects, {} remote nodes, {} ClusterIPs, {} pods as the store says",
        view.projects.len(),
        view.nodes.len().saturating_sub(1),
        view.service_ips.len(),
        maps.local_pods()?.len()
    ))
}

fn differences(maps: &NodeMaps, view: &StoreView, node: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut in_map: BTreeMap<u32, u32> = BTreeMap::new();
    for slot in 0..oxsdn_common::MAX_PROJECT_SLOTS {
        let entry = maps.projects.get(&slot, 0)?;
        if entry.id != 0 {
            in_map.insert(entry.id, entry.vnid);
        }
    }
    for (id, vnid) in &view.projects {
        match in_map.get(id) {
            None => found.push(format!("project id {id} missing from PROJECTS")),
            Some(v) if v != vnid => {
                found.push(format!("project id {id} has VNID {v} in PROJECTS, {vnid} in the store"))
            }
            _ => {}
        }
    }
    let stale: Vec<String> = in_map.keys().filter(|id| !view.projects.contains_key(id)).map(u32::to_string).collect();
    if !stale.is_empty() {
        found.push(format!("stale PROJECTS entries of project ids {}", stale.join(", ")));
    }
    let node_ips: BTreeSet<Ipv4Addr> = maps.node_ips.keys().filter_map(|k| k.ok()).map(ip_from_key).collect();
    let wanted: BTreeSet<Ipv4Addr> =
        view.nodes.iter().filter(|(n, _)| n.as_str() != node).map(|(_, (ip, _))| *ip).collect();
    if node_ips != wanted {
        found.push(format!("NODE_IPS holds {node_ips:?}, the store's other nodes are at {wanted:?}"));
    }
    let service_ips: BTreeSet<Ipv4Addr> = maps.service_ips.keys().filter_map(|k| k.ok()).map(ip_from_key).collect();
    if service_ips != view.service_ips {
        found.push(format!("SERVICE_IPS holds {service_ips:?}, the store's ClusterIPs are {:?}", view.service_ips));
    }
    Ok(found)
}

/// A pinned tcx or XDP link: the program it runs, where and in which direction (XDP:
/// ingress).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinnedLinkInfo {
    pub prog_id: u32,
    /// 0 once the device is gone (the link outlived it).
    pub ifindex: u32,
    pub ingress: bool,
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_LINK_TYPE_XDP: u32 = 6;
const BPF_LINK_TYPE_TCX: u32 = 11;
const BPF_TCX_INGRESS: u32 = 46;

/// `bpf_link_info`'s head and its tcx member, whose ifindex is also the xdp member's
/// (the union is 8-byte aligned).
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    kind: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    attach_type: u32,
    _rest: [u64; 6],
}

/// Reads the tcx link pinned at `path`.
pub fn pinned_link(path: &Path) -> Result<PinnedLinkInfo> {
    let info = link_info(path)?;
    if info.kind != BPF_LINK_TYPE_TCX {
        bail!("the link pinned at {} is not a tcx link (type {})", path.display(), info.kind);
    }
    Ok(PinnedLinkInfo { prog_id: info.prog_id, ifindex: info.ifindex, ingress: info.attach_type == BPF_TCX_INGRESS })
}

/// Reads the XDP link pinned at `path` (aya 0.13 has no link info).
pub fn pinned_xdp_link(path: &Path) -> Result<PinnedLinkInfo> {
    let info = link_info(path)?;
    if info.kind != BPF_LINK_TYPE_XDP {
        bail!("the link pinned at {} is not an XDP link (type {})", path.display(), info.kind);
    }
    Ok(PinnedLinkInfo { prog_id: info.prog_id, ifindex: info.ifindex, ingress: true })
}

/// Detaches the link pinned at `path` at once and removes the pin, if there is one.
/// Removing the pin alone releases the link later, from a kernel work queue: until then
/// the program stays attached, and a device's XDP hook refuses another program.
pub fn detach_pinned_link(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let fd = open_pinned(path)?;
    // BPF_LINK_DETACH's attr: link_fd (u32).
    let mut attr = [fd.as_raw_fd() as u32, 0];
    // SAFETY: the attr is a valid BPF_LINK_DETACH attr of the size given.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, attr.as_mut_ptr(), std::mem::size_of_val(&attr)) };
    if r < 0 {
        bail!("detaching the link pinned at {}: {}", path.display(), std::io::Error::last_os_error());
    }
    crate::loader::remove_if_exists(path)
}

fn open_pinned(path: &Path) -> Result<OwnedFd> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // BPF_OBJ_GET's attr: pathname (u64), bpf_fd, file_flags.
    let mut get = [0u64; 2];
    get[0] = cpath.as_ptr() as u64;
    // SAFETY: the attr is a valid BPF_OBJ_GET attr of the size given, naming a
    // NUL-terminated path that outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, get.as_mut_ptr(), std::mem::size_of_val(&get)) };
    if fd < 0 {
        bail!("opening the link pinned at {}: {}", path.display(), std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn link_info(path: &Path) -> Result<LinkInfo> {
    let fd = open_pinned(path)?;
    let mut info = LinkInfo::default();
    // BPF_OBJ_GET_INFO_BY_FD's attr: bpf_fd (u32), info_len (u32), info (u64).
    #[repr(C)]
    struct InfoAttr {
        fd: u32,
        len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        fd: fd.as_raw_fd() as u32,
        len: std::mem::size_of::<LinkInfo>() as u32,
        info: &mut info as *mut LinkInfo as u64,
    };
    // SAFETY: the attr points at `info`, of the length given, for the kernel to fill.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if r < 0 {
        bail!("reading the link pinned at {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(info)
}

/// Every expected device has its program through its pinned link: tun0 (egress,
/// `from_tun0`), vxlan0 and the underlay (ingress), each local pod's veth (ingress,
/// `from_pod`), and the underlay's XDP prefilter where the agent attached one (`xdp_underlay`,
/// its mode named); and there is no link pin of a pod this node does not have.
fn programs(maps: &NodeMaps, pin_dir: &Path) -> Result<String> {
    let names: BTreeMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_string())))
        .collect();
    let cfg = maps.config.get(&0, 0)?;
    let mut expected = vec![
        ("tun0".to_string(), cfg.tun0_ifindex, false, "from_tun0"),
        ("vxlan0".to_string(), cfg.vxlan_ifindex, true, "from_tunnel"),
    ];
    if cfg.underlay_ifindex != 0 {
        expected.push(("underlay".to_string(), cfg.underlay_ifindex, true, "from_underlay"));
    }
    let pods = maps.local_pods()?;
    for (_, pod) in &pods {
        expected.push((ifname_or_index(pod.ifindex), pod.ifindex, true, "from_pod"));
    }
    let mut wrong = Vec::new();
    for (pin, ifindex, ingress, program) in &expected {
        let path = pin_dir.join("links").join(pin);
        match pinned_link(&path) {
            Err(e) => wrong.push(format!("{pin}: {e:#}")),
            Ok(link) => {
                let name = names.get(&link.prog_id).map_or("?", String::as_str);
                if link.ifindex != *ifindex || link.ingress != *ingress || name != *program {
                    wrong.push(format!(
                        "{pin}: the link runs {name} on ifindex {} ({}), expected {program} on {ifindex} ({})",
                        link.ifindex,
                        if link.ingress { "ingress" } else { "egress" },
                        if *ingress { "ingress" } else { "egress" },
                    ));
                }
            }
        }
    }
    let prefilter = match prefilter::attached(pin_dir) {
        Ok(None) => "no XDP prefilter".to_string(),
        Ok(Some(Attached { ifindex, prog_id, mode })) => {
            let name = names.get(&prog_id).map_or("?", String::as_str);
            match mode {
                Some(mode) if ifindex == cfg.underlay_ifindex && name == XDP_UNDERLAY => {
                    format!("{mode} XDP prefilter")
                }
                _ => {
                    wrong.push(format!(
                        "{}: the link runs {name} on ifindex {ifindex} ({}), expected {XDP_UNDERLAY} on {}",
                        prefilter::PIN,
                        mode.map_or("no XDP program there".to_string(), |m| format!("{m} XDP")),
                        cfg.underlay_ifindex,
                    ));
                    String::new()
                }
            }
        }
        Err(e) => {
            wrong.push(format!("{}: {e:#}", prefilter::PIN));
            String::new()
        }
    };
    let pins: BTreeSet<String> = std::fs::read_dir(pin_dir.join("links"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let known = |p: &String| p == prefilter::PIN || expected.iter().any(|(pin, ..)| pin == p);
    for stale in pins.iter().filter(|p| !known(p)) {
        wrong.push(format!("link pin {stale} belongs to no device this node expects"));
    }
    if !wrong.is_empty() {
        bail!("{}", wrong.join("; "));
    }
    Ok(format!(
        "{} links: tun0, vxlan0{}, {} pod veths; {prefilter}",
        expected.len(),
        if cfg.underlay_ifindex != 0 { ", underlay" } else { "" },
        pods.len()
    ))
}

/// The CNI config the agent writes when ready, naming its socket.
fn conflist(dir: &Path, socket: &Path) -> Result<String> {
    let path = dir.join(CNI_CONF_FILE);
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let conf: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    let named = conf["plugins"][0]["agentSocket"].as_str().map(PathBuf::from);
    if named.as_deref() != Some(socket) {
        bail!("{} names socket {named:?}, not {}", path.display(), socket.display());
    }
    Ok(path.display().to_string())
}
