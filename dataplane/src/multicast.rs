//! Multicast on each node (OpenShift's tables 110, 111 and 120): which VNIDs have it
//! enabled (every project sharing the VNID carries the annotation
//! `netnamespace.network.openshift.io/multicast-enabled: "true"`), which local pods
//! receive each one's multicast, and which other nodes a pod's multicast is copied to,
//! written into `MCAST_GROUPS`, `MCAST_PORTS` and `MCAST_NODES`
//! (`oxsdn_common::multicast`).
//!
//! Copies go to every other node, as OpenShift's table 111 sends them, not only to the
//! nodes that host pods of the VNID: which remote pods belong to which VNID reaches a
//! node only through the pods' address records, published after the pod starts, so a
//! pod that had just started elsewhere would miss its project's multicast; a node
//! without members drops a copy at once (table 120, counted). The loops that make the
//! copies are bounded: past `MAX_MCAST_LOCAL_PODS` local pods of a VNID (by ifindex) or
//! `MAX_MCAST_NODES` other nodes (by address), the rest get none, and the agent warns.
//!
//! A restarted agent reads the maps back and changes only what differs, once it has
//! listed the projects, the nodes and its pods: until then the maps stay as they were.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use anyhow::Result;
use oxsdn_common::multicast::{McastPort, MAX_MCAST_LOCAL_PODS, MAX_MCAST_NODES};
use oxsdn_controller::{
    cluster::{HostSubnetEvent, NetNamespaceEvent},
    netnamespaces::multicast_vnids,
    HostSubnet, NetNamespace,
};

use crate::{
    maps::{ignore_missing, ip_key, NodeMaps},
    policy::mirrors::PolicyInput,
};

pub struct Multicast {
    maps: Arc<Mutex<NodeMaps>>,
    own_node: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Projects by name: VNID and whether the project enables multicast.
    projects: HashMap<String, (u32, bool)>,
    /// Other nodes' underlay addresses, by node name.
    nodes: HashMap<String, Ipv4Addr>,
    /// Local pods: host veth ifindex -> project.
    pods: BTreeMap<u32, String>,
    /// What the maps hold: VNID -> its receiving pods' ifindexes, and the node list.
    groups: BTreeMap<u32, Vec<u32>>,
    node_ips: Vec<u32>,
    listed_projects: bool,
    listed_nodes: bool,
    listed_pods: bool,
}

impl Multicast {
    /// Takes over what the maps hold (a previous agent's groups and nodes).
    pub fn start(maps: Arc<Mutex<NodeMaps>>, own_node: &str) -> Result<Arc<Multicast>> {
        let mut state = State::default();
        {
            let maps = maps.lock().unwrap();
            for entry in maps.mcast_groups.iter() {
                let (vnid, pods) = entry?;
                let ports = (0..pods.min(MAX_MCAST_LOCAL_PODS))
                    .map(|index| maps.mcast_ports.get(&McastPort { vnid, index }, 0).unwrap_or(0))
                    .collect();
                state.groups.insert(vnid, ports);
            }
            let nodes = maps.mcast_nodes.get(&0, 0)?.min(MAX_MCAST_NODES);
            state.node_ips = (1..=nodes).map(|i| maps.mcast_nodes.get(&i, 0)).collect::<Result<_, _>>()?;
        }
        Ok(Arc::new(Multicast { maps, own_node: own_node.to_owned(), state: Mutex::new(state) }))
    }

    /// A pod of `project` is in the dataplane with host veth `ifindex`.
    pub fn pod_plugged(&self, ifindex: u32, project: &str) {
        self.changed(|state| {
            state.pods.insert(ifindex, project.to_owned());
        });
    }

    /// The pod with host veth `ifindex` left the dataplane.
    pub fn pod_unplugged(&self, ifindex: u32) {
        self.changed(|state| {
            state.pods.remove(&ifindex);
        });
    }

    /// Every pod the agent had is plugged in again (after a restart).
    pub fn pods_restored(&self) {
        self.changed(|state| state.listed_pods = true);
    }

    fn changed(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap();
        change(&mut state);
        if !(state.listed_projects && state.listed_nodes && state.listed_pods) {
            return;
        }
        if let Err(e) = self.write(&mut state) {
            tracing::error!("writing the multicast maps: {e:#}");
        }
    }

    /// Makes the maps hold what `state` wants, changing only what differs.
    fn write(&self, state: &mut State) -> Result<()> {
        let wanted_groups = wanted_groups(state);
        let wanted_nodes = wanted_nodes(state);
        let mut maps = self.maps.lock().unwrap();
        let gone: Vec<u32> = state.groups.keys().filter(|v| !wanted_groups.contains_key(v)).copied().collect();
        for vnid in gone {
            // The group first: the programs then read none of its ports.
            ignore_missing(maps.mcast_groups.remove(&vnid))?;
            for index in 0..state.groups[&vnid].len() as u32 {
                ignore_missing(maps.mcast_ports.remove(&McastPort { vnid, index }))?;
            }
            state.groups.remove(&vnid);
            tracing::info!(vnid, "multicast off on this node");
        }
        for (vnid, ports) in &wanted_groups {
            let old = state.groups.get(vnid).cloned().unwrap_or_default();
            if *ports == old && maps.mcast_groups.get(vnid, 0).is_ok() {
                continue;
            }
            // Ports, then the count, then ports past it: every port a program reads is
            // one of the VNID's pods, before and after.
            for (index, ifindex) in ports.iter().enumerate() {
                maps.mcast_ports.insert(McastPort { vnid: *vnid, index: index as u32 }, ifindex, 0)?;
            }
            maps.mcast_groups.insert(vnid, ports.len() as u32, 0)?;
            for index in ports.len()..old.len() {
                ignore_missing(maps.mcast_ports.remove(&McastPort { vnid: *vnid, index: index as u32 }))?;
            }
            tracing::info!(vnid, pods = ports.len(), "multicast group applied");
            state.groups.insert(*vnid, ports.clone());
        }
        if wanted_nodes != state.node_ips {
            for (i, ip) in wanted_nodes.iter().enumerate() {
                maps.mcast_nodes.set(i as u32 + 1, ip, 0)?;
            }
            maps.mcast_nodes.set(0, wanted_nodes.len() as u32, 0)?;
            tracing::info!(nodes = wanted_nodes.len(), "multicast replication nodes applied");
            state.node_ips = wanted_nodes;
        }
        Ok(())
    }
}

/// Per enabled VNID with local pods: their host veths, lowest ifindex first, at most
/// `MAX_MCAST_LOCAL_PODS`.
fn wanted_groups(state: &State) -> BTreeMap<u32, Vec<u32>> {
    let enabled = multicast_vnids(state.projects.values().copied());
    let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (ifindex, project) in &state.pods {
        let Some((vnid, _)) = state.projects.get(project) else { continue };
        if !enabled.contains(vnid) {
            continue;
        }
        let ports = groups.entry(*vnid).or_default();
        if ports.len() < MAX_MCAST_LOCAL_PODS as usize {
            ports.push(*ifindex);
        } else {
            tracing::warn!(
                vnid,
                ifindex,
                "more than {MAX_MCAST_LOCAL_PODS} local pods of a VNID: no multicast for this one"
            );
        }
    }
    groups
}

/// The other nodes' addresses, in order, at most `MAX_MCAST_NODES`.
fn wanted_nodes(state: &State) -> Vec<u32> {
    let all: BTreeSet<Ipv4Addr> = state.nodes.values().copied().collect();
    if all.len() > MAX_MCAST_NODES as usize {
        tracing::warn!(nodes = all.len(), "more than {MAX_MCAST_NODES} other nodes: multicast reaches the first only");
    }
    all.into_iter().take(MAX_MCAST_NODES as usize).map(ip_key).collect()
}

impl PolicyInput<Multicast> for NetNamespace {
    type Event = NetNamespaceEvent;
    const WHAT: &'static str = "multicast projects";
    fn replace_all(multicast: &Multicast, all: Vec<Self>) {
        multicast.changed(|state| {
            state.projects = all.into_iter().map(|ns| (ns.name.clone(), (ns.netid, ns.multicast_enabled()))).collect();
            state.listed_projects = true;
        });
    }
    fn apply(multicast: &Multicast, event: NetNamespaceEvent) {
        multicast.changed(|state| match event {
            NetNamespaceEvent::Upsert(ns) => {
                state.projects.insert(ns.name.clone(), (ns.netid, ns.multicast_enabled()));
            }
            NetNamespaceEvent::Deleted(name) => {
                state.projects.remove(&name);
            }
        });
    }
}

impl PolicyInput<Multicast> for HostSubnet {
    type Event = HostSubnetEvent;
    const WHAT: &'static str = "multicast nodes";
    fn replace_all(multicast: &Multicast, all: Vec<Self>) {
        multicast.changed(|state| {
            state.nodes =
                all.into_iter().filter(|hs| hs.host != multicast.own_node).map(|hs| (hs.host, hs.host_ip)).collect();
            state.listed_nodes = true;
        });
    }
    fn apply(multicast: &Multicast, event: HostSubnetEvent) {
        multicast.changed(|state| match event {
            HostSubnetEvent::Upsert(hs) if hs.host != multicast.own_node => {
                state.nodes.insert(hs.host, hs.host_ip);
            }
            HostSubnetEvent::Upsert(_) => {}
            HostSubnetEvent::Deleted(name) => {
                state.nodes.remove(&name);
            }
        });
    }
}
