//! The node agent: sets up the node (tun0, pipeline, projects), then plugs pods in and
//! out for CNI requests. ADD, DEL and GC run one at a time (OpenShift's single worker),
//! so concurrent requests never hand out one address twice or half-remove a pod.

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsFd,
    path::PathBuf,
    sync::{
        mpsc::{RecvTimeoutError, Sender},
        Arc, Mutex,
    },
};

use anyhow::{Context, Result};
use ipnetwork::Ipv4Network;
use oxsdn_cni::{
    code, del_queue,
    env::{validate_container_id, validate_ifname},
    naming::host_veth_name,
    netns::open_netns,
    protocol::{format_mac, pod_mac, Attachment, Command, PodNetwork, Request, Response},
    runtime_config::PortMapping,
    CniError,
};
use oxsdn_common::{bandwidth::PodBandwidth, mode, stats, PodEntry, POD_RULES};
use oxsdn_controller::{
    egress::EgressNetworkPolicyRecord,
    policy::{NetworkPolicyRecord, PodAddress, PodMeta},
    store::{self, StoreBackend, StoreError},
    Cluster, ClusterConfig, Error as ControllerError, HostSubnet, NetNamespace,
};

use crate::{
    conntrack, egress,
    egress_firewall::EgressFirewall,
    egress_ip::EgressIps,
    entries::{self, NodeAddresses, ProjectRef},
    hostport::{self, HostPort},
    ipam::{Ipam, IpamError},
    loader::{remove_if_exists, Programs},
    maps::{self, ip_key, LocalPods, NodeMaps},
    mirror::{self, mode::Mode, projects::Projects, remote_nodes::RemoteNodes, services::Services, Mirror},
    multicast::Multicast,
    netdev::{self, HostVeth},
    pods::{PodRecord, PodTable},
    policy::{mirrors::Follow, LocalPod, PolicyEngine},
    prefilter::{self, PrefilterMode, XdpDecap},
};

pub struct AgentConfig {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub store: StoreBackend,
    /// Where the agent keeps its pod table.
    pub state_dir: PathBuf,
    /// The CNI socket.
    pub socket: PathBuf,
    /// bpffs directory under which the node's pins live (`<dir>/<node name>`).
    pub bpffs_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    /// Connections each project (and the host, and the tunnel) may hold in the tracking
    /// tables (`oxsdn_common::conntrack`); 0: no limit but the tables' size.
    pub ct_quota: u32,
    /// How to attach the underlay device's XDP prefilter.
    pub prefilter: PrefilterMode,
    /// Source networks the prefilter drops everything from.
    pub prefilter_deny: Vec<Ipv4Network>,
    /// Which VXLAN to local pods the prefilter decapsulates itself.
    pub xdp_decap: XdpDecap,
    /// The DNS server that resolves egress firewall `dnsName` rules (`None`: the first
    /// nameserver of /etc/resolv.conf).
    pub dns_server: Option<SocketAddr>,
}

struct PodState {
    table: PodTable,
    ipam: Ipam,
}

pub struct Agent {
    pub config: AgentConfig,
    cluster: Arc<Cluster>,
    network: ClusterConfig,
    subnet: Ipv4Network,
    gateway: Ipv4Addr,
    pipeline: Mutex<Programs>,
    maps: Arc<Mutex<NodeMaps>>,
    projects: Arc<Projects>,
    policy: Arc<PolicyEngine>,
    multicast: Arc<Multicast>,
    egress_ips: Arc<EgressIps>,
    pods: Mutex<PodState>,
    /// Wakes the publisher of this node's pods' addresses (`publish_pod_addresses`).
    addresses_changed: Mutex<Option<Sender<()>>>,
    /// The pod table generation known to be on disk. Held while saving, so requests
    /// that changed the table meanwhile find their change saved by that one write
    /// (group commit) instead of each waiting for an fsync of its own.
    saved: Mutex<u64>,
}

/// Name of the CNI config file the agent writes when ready.
pub const CNI_CONF_FILE: &str = "80-oxsdn.conflist";
/// The project of pods whose runtime names no Kubernetes namespace (podman): an
/// ordinary project, isolated like any other, never `default` (VNID 0, global).
pub const STANDALONE_PROJECT: &str = "oxsdn-standalone";

impl Agent {
    /// Node start (OpenShift's order): read the cluster config, get this node's subnet,
    /// set up tun0 and the pipeline, sync projects, apply the deletions recorded while no
    /// agent ran, take the pods back. The CNI config a previous agent wrote stays (an
    /// agent restart must not make the node NotReady: ADD waits for the socket, DEL works
    /// without it); `announce_ready` writes it anew.
    pub fn start(config: AgentConfig) -> Result<Arc<Agent>> {
        let store = store::open(&config.store).with_context(|| format!("opening the {}", config.store))?;
        let cluster = Arc::new(Cluster::new(store));
        let network = until_store_answers(|| cluster.config()).context("reading the cluster configuration")?;
        let hostsubnet = until_store_answers(|| cluster.register_node(&config.node_name, config.node_ip))
            .context("registering the node")?;
        let subnet = hostsubnet.subnet;
        let gateway = hostsubnet.gateway();
        tracing::info!(node = %config.node_name, %subnet, %gateway, "node subnet");

        let tun0_ifindex = netdev::ensure_tun0(&netdev::Tun0 {
            gateway,
            subnet,
            mtu: network.mtu,
            cluster_network: network.cluster_network,
            service_network: network.service_network,
        })?;
        netdev::disable_ipv6(netdev::TUN0)?;
        egress::enable_forwarding()?;
        egress::install_masquerade(network.cluster_network, netdev::TUN0)?;
        let vxlan_ifindex = netdev::ensure_vxlan0(network.vxlan_port, network.mtu)?;
        netdev::disable_ipv6(netdev::VXLAN0)?;

        let pin_dir = config.bpffs_dir.join(&config.node_name);
        let mut pipeline = Programs::load(&pin_dir)?;
        let mut maps = pipeline.maps()?;
        let underlay = netdev::device_with_address(config.node_ip)?;
        if underlay.is_none() {
            tracing::warn!(node_ip = %config.node_ip, "no device holds the node's address: all overlay traffic goes through vxlan0");
        }
        let underlay_ifindex = underlay.as_ref().map_or(0, |(_, index)| *index);
        let node =
            NodeAddresses { subnet, gateway, node_ip: config.node_ip, tun0_ifindex, vxlan_ifindex, underlay_ifindex };
        let networks = entries::Networks {
            cluster: network.cluster_network,
            service: network.service_network,
            vxlan_port: network.vxlan_port,
        };
        // The mode the programs run in stays until the policy engine has taken the pods
        // back (`Mode` follows the cluster's from then on).
        let running_mode = maps.config.get(&0, 0).map_or(mode::MULTITENANT, |c| c.mode);
        // Checked before anything is written. A native XDP redirect into a veth needs the
        // pod's end to run NAPI (an XDP program or GRO there), which the plugin does not
        // set up: the frames would be dropped.
        if config.xdp_decap != XdpDecap::Off && config.prefilter != PrefilterMode::Generic {
            anyhow::bail!(
                "--xdp-decap needs --prefilter generic: a native XDP redirect into a pod's veth is dropped unless \
                 the pod's eth0 runs NAPI"
            );
        }
        let settings = entries::NodeSettings {
            mode: running_mode,
            ct_quota: config.ct_quota,
            xdp_decap: config.xdp_decap.flags(),
        };
        maps.config.set(0, entries::node_config(&networks, &node, &settings), 0)?;
        close_store_to_pods(&mut maps, &config.store, &node)?;
        pipeline.attach_tun0(netdev::TUN0)?;
        pipeline.attach_vxlan0(netdev::VXLAN0)?;
        pipeline.attach_underlay(underlay.as_ref().map(|(name, _)| name.as_str()))?;
        if config.prefilter == PrefilterMode::Off && !config.prefilter_deny.is_empty() {
            anyhow::bail!("--prefilter-deny needs the prefilter: it cannot be off");
        }
        prefilter::set_deny_list(&mut maps, &config.prefilter_deny)?;
        let device = underlay.as_ref().map(|(name, index)| (name.as_str(), *index));
        match pipeline.attach_prefilter(device, config.prefilter)? {
            Some(mode) => tracing::info!(%mode, device = device.map(|(name, _)| name), "underlay XDP prefilter"),
            None if config.xdp_decap != XdpDecap::Off => {
                anyhow::bail!("--xdp-decap needs the prefilter, which has no underlay device to attach to")
            }
            None if config.prefilter_deny.is_empty() => {}
            None if device.is_none() => tracing::warn!("no underlay device: the prefilter's deny list drops nothing"),
            None => anyhow::bail!(
                "--prefilter-deny needs the prefilter, which --prefilter auto does not attach to this underlay device \
                 (a veth, or no XDP in its driver): add --prefilter generic or native"
            ),
        }
        let maps = Arc::new(Mutex::new(maps));

        let projects = Arc::new(Projects::new(cluster.clone(), maps.clone()));
        mirror::follow(projects.clone(), projects.resync()?);
        let nodes = Arc::new(RemoteNodes::new(&config.node_name, cluster.clone(), maps.clone()));
        mirror::follow(nodes.clone(), nodes.resync()?);
        let services = Arc::new(Services::new(cluster.clone(), maps.clone(), projects.clone(), subnet));
        mirror::follow(services.clone(), services.resync()?);
        mirror::services::sweep_drained_periodically(services);
        conntrack::sweep_periodically(&pin_dir)?;
        let policy = PolicyEngine::start(&config.node_name, &pin_dir)?;
        follow_policy_input::<NetNamespace, _>(&cluster, &policy)?;
        follow_policy_input::<NetworkPolicyRecord, _>(&cluster, &policy)?;
        follow_policy_input::<PodMeta, _>(&cluster, &policy)?;
        follow_policy_input::<PodAddress, _>(&cluster, &policy)?;
        let egress_firewall = EgressFirewall::start(maps.clone(), config.dns_server)?;
        follow_policy_input::<NetNamespace, _>(&cluster, &egress_firewall)?;
        follow_policy_input::<EgressNetworkPolicyRecord, _>(&cluster, &egress_firewall)?;
        let multicast = Multicast::start(maps.clone(), &config.node_name)?;
        follow_policy_input::<NetNamespace, _>(&cluster, &multicast)?;
        follow_policy_input::<HostSubnet, _>(&cluster, &multicast)?;
        let egress_ips = EgressIps::start(
            cluster.clone(),
            maps.clone(),
            &config.node_name,
            config.node_ip,
            network.cluster_network,
            underlay.as_ref().map(|(name, index)| (name.as_str(), *index)),
        )?;
        follow_policy_input::<NetNamespace, _>(&cluster, &egress_ips)?;
        follow_policy_input::<HostSubnet, _>(&cluster, &egress_ips)?;

        std::fs::create_dir_all(&config.state_dir)?;
        let table = PodTable::load(&config.state_dir.join("pods.json"))?;
        let ipam = Ipam::new(subnet, table.last_ip);
        let agent = Arc::new(Agent {
            config,
            cluster,
            network,
            subnet,
            gateway,
            pipeline: Mutex::new(pipeline),
            maps,
            projects,
            policy,
            multicast,
            egress_ips,
            pods: Mutex::new(PodState { table, ipam }),
            addresses_changed: Mutex::new(None),
            saved: Mutex::new(0),
        });
        agent.apply_queued_deletions()?;
        agent.restore_pods()?;
        agent.multicast.pods_restored();
        let mode = Arc::new(Mode::new(agent.cluster.clone(), agent.maps.clone()));
        mirror::follow(mode.clone(), mode.resync()?);
        publish_pod_addresses_periodically(&agent);
        Ok(agent)
    }

    /// The projects this node knows (for the metrics' project names).
    pub fn projects(&self) -> Arc<Projects> {
        self.projects.clone()
    }

    /// Writes the CNI config: kubelet's signal that the node's network is ready.
    pub fn announce_ready(&self) -> Result<()> {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "oxsdn",
            "plugins": [{
                "type": "oxsdn",
                "agentSocket": self.config.socket,
                "defaultProject": STANDALONE_PROJECT,
                // The runtime then passes a pod's hostPorts and bandwidth annotations
                // as `runtimeConfig`.
                "capabilities": { "portMappings": true, "bandwidth": true },
            }],
        });
        std::fs::create_dir_all(&self.config.cni_conf_dir)?;
        let path = self.config.cni_conf_dir.join(CNI_CONF_FILE);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&conf)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Clean stop, for an upgrade or a restart: the socket goes and nothing else. The
    /// dataplane stays (pinned programs and maps), and so do tun0, vxlan0 and the
    /// masquerade rule, so running pods keep their connections, egress included, until
    /// the next agent takes over; so does the CNI config, so the node stays Ready, ADD
    /// waits for the next agent and DEL records its deletion for it (docs/design.md,
    /// CNI). Uninstalling is `teardown`. The node's automatic egress IPs move to other
    /// nodes now rather than being held twice once its lease expires.
    pub fn shutdown(&self) -> Result<()> {
        self.egress_ips.stop();
        remove_if_exists(&self.config.socket)
    }

    /// Applies the DELs the plugin recorded while no agent ran (`del_queue`): each
    /// releases its pod (veth if still there, address, map entries, link pin, record)
    /// unless the pod recorded for that attachment is a later one. Runs at start, before
    /// the pods are taken back, and again once the socket is open, before serving (for
    /// what was recorded meanwhile), so none is left behind.
    pub fn apply_queued_deletions(&self) -> Result<()> {
        let queue = del_queue::dir_for(&self.config.socket);
        let del_queue::Pending { entries, discarded } =
            del_queue::pending(&queue).with_context(|| format!("reading {}", queue.display()))?;
        for why in discarded {
            tracing::warn!("discarded a delete queue entry: {why}");
        }
        if entries.is_empty() {
            return Ok(());
        }
        let mut state = self.pods.lock().unwrap();
        for (_, deletion) in &entries {
            let Some(rec) = state.table.get(&deletion.attachment).cloned() else { continue };
            if deletion.applies_to(rec.ifindex, recorded_veth_present(&rec)) {
                tracing::info!(pod = %rec.container_id, "applying a DEL recorded while no agent ran");
                self.release(&mut state, &rec)?;
            } else {
                tracing::info!(pod = %rec.container_id, "a DEL recorded while no agent ran is of an earlier pod of this attachment; keeping this one");
            }
        }
        let generation = state.table.generation();
        drop(state);
        self.persist(generation)?;
        for (path, _) in entries {
            del_queue::remove(&path)?;
        }
        Ok(())
    }

    /// Takes the pods of the pod table back: their addresses, and their map entries and
    /// links if the veth is still there. Pods whose veth vanished while no agent ran are
    /// released.
    fn restore_pods(&self) -> Result<()> {
        let mut state = self.pods.lock().unwrap();
        let records: Vec<(PodRecord, bool)> =
            state.table.iter().map(|rec| (rec.clone(), recorded_veth_present(rec))).collect();
        // Their policy state before any `PODS` entry is written anew.
        let present = records.iter().filter(|(_, present)| *present);
        self.policy.begin(present.map(|(rec, _)| (attachment_key(rec), self.local_pod(rec))))?;
        for (rec, present) in records {
            if present {
                state.ipam.reserve(rec.ip)?;
                if let Err(e) = self.plug(&rec) {
                    tracing::error!(pod = %rec.container_id, "cannot restore pod: {e:#}");
                }
            } else {
                tracing::info!(pod = %rec.container_id, "pod's veth is gone; releasing it");
                self.unplug(&rec);
                state.table.remove(&rec.attachment());
            }
        }
        self.remove_unrecorded_pods(&state.table)?;
        // The table anew: an earlier agent's may hold pods deleted since.
        self.sync_host_ports(&state.table)?;
        let generation = state.table.generation();
        drop(state);
        self.persist(generation)
    }

    /// Removes dataplane entries and link pins of pods the table does not hold: an
    /// agent that died between plugging a pod in and recording it leaves them.
    fn remove_unrecorded_pods(&self, table: &PodTable) -> Result<()> {
        let recorded: HashSet<(u32, u32)> = table.iter().map(|p| (ip_key(p.ip), p.ifindex)).collect();
        let veths: HashSet<&str> = table.iter().map(|p| p.host_veth.as_str()).collect();
        let mut maps = self.maps.lock().unwrap();
        for (slot, pod) in maps.local_pods()? {
            if !recorded.contains(&(pod.ip, pod.ifindex)) {
                tracing::info!(ip = %maps::ip_from_key(pod.ip), "removing the entry of an unrecorded pod");
                maps.pods.set(slot, PodEntry::default(), 0)?;
            }
        }
        drop(maps);
        let pipeline = self.pipeline.lock().unwrap();
        for veth in pipeline.pod_port_pins()?.iter().filter(|v| !veths.contains(v.as_str())) {
            tracing::info!(%veth, "removing the link pin of an unrecorded pod");
            pipeline.detach_pod_port(veth)?;
        }
        Ok(())
    }

    pub fn handle(&self, req: Request) -> Response {
        let result = match req.command {
            Command::Add => self.add(&req).map(Response::Pod),
            Command::Del => self.del(&req).map(|_| Response::Done),
            Command::Check => self.check(&req).map(Response::Pod),
            Command::Gc => self.gc(&req).map(|_| Response::Done),
            Command::Status => Ok(Response::Done),
            Command::Health => Ok(Response::Health(crate::health::agent_report(&self.config.node_name))),
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(command = ?req.command, "{e}");
            Response::Error(e)
        })
    }

    /// Adds a pod. What is slow and concerns only this pod (the project lookup, the
    /// port's program, saving the table) happens outside the pod lock, so concurrent
    /// ADDs overlap; the lock covers the address and the maps.
    fn add(&self, req: &Request) -> Result<PodNetwork, CniError> {
        let attachment = required(&req.attachment, "attachment")?;
        let host_veth = required(&req.host_veth, "host_veth")?;
        let project = required(&req.pod_namespace, "K8S_POD_NAMESPACE")?;
        let netns = required(&req.netns, "CNI_NETNS")?;
        let ifindex = verify_host_veth(attachment, host_veth, netns)?;
        let (ns, project_ref) = self.project_of_new_pod(project)?;
        {
            let mut state = self.pods.lock().unwrap();
            if let Some(existing) = state.table.get(attachment).cloned() {
                if existing.ifindex == ifindex {
                    drop(state);
                    return self.pod_network(&existing);
                }
                // A retried ADD: the plugin replaced the veth, so the recorded one is gone
                // (its name is this one's). The new record below is saved with this change.
                self.forget(&mut state, &existing);
            }
        }
        // The port's program before anything can reach the pod (and idempotent: a
        // repeated ADD re-attaches the same program atomically).
        self.pipeline.lock().unwrap().attach_pod_port(host_veth).map_err(internal)?;
        let mut state = self.pods.lock().unwrap();
        if let Err(e) = host_ports_free(&state.table, attachment, &req.port_mappings) {
            drop(state);
            self.detach(host_veth);
            return Err(e);
        }
        let ip = match state.ipam.allocate() {
            Ok(ip) => ip,
            Err(e) => {
                drop(state);
                self.detach(host_veth);
                return Err(match e {
                    IpamError::Exhausted(_) => CniError::new(code::NO_FREE_ADDRESS, e.to_string()),
                    IpamError::OutOfRange(..) => internal(e),
                });
            }
        };
        let record = PodRecord {
            container_id: attachment.container_id.clone(),
            ifname: attachment.ifname.clone(),
            netns: netns.clone(),
            project: ns.name.clone(),
            project_id: ns.id,
            pod_name: req.pod_name.clone().unwrap_or_default(),
            host_veth: host_veth.clone(),
            ifindex,
            ip,
            port_mappings: req.port_mappings.clone(),
            bandwidth: req.bandwidth,
        };
        state.table.last_ip = state.ipam.last();
        let plugged = self
            .reset_pod_counters(ip)
            // Its policy state first: the pod is isolated from its first packet.
            .and_then(|_| self.policy.add_local_pod(&attachment_key(&record), self.local_pod(&record)))
            .and_then(|_| self.enter_maps(&record, project_ref));
        if let Err(e) = plugged {
            self.unplug(&record);
            state.ipam.release(ip);
            return Err(internal(e));
        }
        let generation = state.table.insert(record.clone());
        if !record.port_mappings.is_empty() {
            if let Err(e) = self.sync_host_ports(&state.table) {
                self.forget(&mut state, &record);
                return Err(internal(e));
            }
        }
        drop(state);
        if let Err(e) = self.persist(generation) {
            let mut state = self.pods.lock().unwrap();
            if state.table.get(attachment) == Some(&record) {
                self.forget(&mut state, &record);
            }
            return Err(internal(e));
        }
        tracing::info!(pod = %record.container_id, project = %record.project, %ip, "pod added");
        // Other nodes learn the pod's identity from its address record (retried by the
        // publisher if the store does not take it now).
        if let Err(e) = self.cluster.put_pod_address(&self.pod_address(&record)) {
            tracing::warn!(pod = %record.container_id, "publishing the pod's address: {e}");
            self.wake_address_publisher();
        }
        self.pod_network(&record)
    }

    /// The project a new pod joins: as this node knows it, else from the store
    /// (created if needed, as OpenShift's master does for a new namespace).
    fn project_of_new_pod(&self, name: &str) -> Result<(NetNamespace, ProjectRef), CniError> {
        if let Some(known) = self.projects.get(name) {
            return Ok(known);
        }
        let ns = self.cluster.ensure_netnamespace(name).map_err(controller_error)?;
        let project = self.projects.learn(&ns).map_err(internal)?;
        Ok((ns, project))
    }

    /// Deletes a pod. Its veth goes first and outside the pod lock (netlink waits for
    /// the machine-wide RTNL lock): the pod is cut off before its entries go.
    fn del(&self, req: &Request) -> Result<(), CniError> {
        let attachment = required(&req.attachment, "attachment")?;
        let recorded = {
            let state = self.pods.lock().unwrap();
            state.table.get(attachment).cloned().ok_or(state.table.generation())
        };
        let rec = match recorded {
            Ok(rec) => rec,
            // Gone already; a retry after a failed save still saves the table.
            Err(generation) => return self.persist(generation).map_err(internal),
        };
        delete_host_veth(&rec).map_err(internal)?;
        let mut state = self.pods.lock().unwrap();
        if state.table.get(attachment) != Some(&rec) {
            // Another request released or replaced it meanwhile.
            return Ok(());
        }
        let generation = self.forget(&mut state, &rec);
        drop(state);
        self.persist(generation).map_err(internal)?;
        if let Err(e) = self.cluster.delete_pod_address(&self.config.node_name, &rec.container_id, &rec.ifname) {
            tracing::warn!(pod = %rec.container_id, "withdrawing the pod's address: {e}");
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<PodNetwork, CniError> {
        let attachment = required(&req.attachment, "attachment")?;
        let state = self.pods.lock().unwrap();
        let rec = state.table.get(attachment).cloned().ok_or_else(|| {
            CniError::new(
                code::UNKNOWN_CONTAINER,
                format!("no pod interface {} of container {} on this node", attachment.ifname, attachment.container_id),
            )
        })?;
        let maps = self.maps.lock().unwrap();
        let plugged = maps
            .local_pod(rec.ip)
            .ok()
            .flatten()
            .is_some_and(|p| p.ifindex == rec.ifindex && p.project_id == rec.project_id)
            && netdev::ifindex(&rec.host_veth) == Some(rec.ifindex)
            && self.pipeline.lock().unwrap().pod_port_attached(&rec.host_veth);
        drop(maps);
        if !plugged {
            return Err(CniError::new(
                code::INTERNAL,
                format!("pod {} is not plugged into the dataplane", rec.container_id),
            ));
        }
        self.pod_network(&rec)
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let mut state = self.pods.lock().unwrap();
        let stale: Vec<PodRecord> =
            state.table.iter().filter(|p| !req.valid_attachments.contains(&p.attachment())).cloned().collect();
        for rec in stale {
            tracing::info!(pod = %rec.container_id, "garbage-collecting pod");
            self.release(&mut state, &rec)?;
        }
        let generation = state.table.generation();
        drop(state);
        self.persist(generation).map_err(internal)
    }

    /// Removes a pod completely: its veth, then what `forget` removes. The caller
    /// saves the table.
    fn release(&self, state: &mut PodState, rec: &PodRecord) -> Result<(), CniError> {
        delete_host_veth(rec).map_err(internal)?;
        self.forget(state, rec);
        Ok(())
    }

    /// Takes a pod out of the dataplane, frees its address and drops its record;
    /// returns the table generation to save.
    fn forget(&self, state: &mut PodState, rec: &PodRecord) -> u64 {
        self.unplug(rec);
        state.ipam.release(rec.ip);
        tracing::info!(pod = %rec.container_id, ip = %rec.ip, "pod deleted");
        self.wake_address_publisher();
        let generation = state.table.remove(&rec.attachment());
        if !rec.port_mappings.is_empty() {
            if let Err(e) = self.sync_host_ports(&state.table) {
                tracing::error!(pod = %rec.container_id, "removing the pod's host ports: {e:#}");
            }
        }
        generation
    }

    /// Makes the node's host ports those of the pod table's pods.
    fn sync_host_ports(&self, table: &PodTable) -> Result<()> {
        let ports: Vec<HostPort> = table
            .iter()
            .flat_map(|rec| rec.port_mappings.iter().map(|&mapping| HostPort { mapping, pod_ip: rec.ip }))
            .collect();
        hostport::sync(&ports, self.network.cluster_network, netdev::TUN0)
    }

    /// Saves the pod table up to `generation` (see `saved`).
    fn persist(&self, generation: u64) -> Result<()> {
        let mut saved = self.saved.lock().unwrap();
        if *saved >= generation {
            return Ok(());
        }
        let snapshot = self.pods.lock().unwrap().table.snapshot()?;
        snapshot.save()?;
        *saved = snapshot.generation;
        Ok(())
    }

    /// Zeroes the counters of a new pod's slot (a previous pod of that address may have
    /// left counts). Not on restore: a restarted agent keeps its pods' counters.
    fn reset_pod_counters(&self, ip: Ipv4Addr) -> Result<()> {
        let mut maps = self.maps.lock().unwrap();
        let slot = entries::local_pod_slot(self.subnet, ip);
        for rule in 0..POD_RULES {
            maps::reset(&mut maps.pod_stats, stats::pod_index(slot, rule))?;
        }
        Ok(())
    }

    /// Puts a pod into the dataplane: its port's program, then its `PODS` entry (so the
    /// pod can send as soon as anything can reach it).
    fn plug(&self, rec: &PodRecord) -> Result<()> {
        let project = self
            .projects
            .by_id(rec.project_id)
            .with_context(|| format!("project {} (id {}) is not known to this node", rec.project, rec.project_id))?;
        self.pipeline.lock().unwrap().attach_pod_port(&rec.host_veth)?;
        self.enter_maps(rec, project)
    }

    /// A pod's `PODS` and `BANDWIDTH` entries: the one writer of them. The limit comes
    /// first, with the qdisc that holds paced packets (so the pod's first packet is
    /// paced).
    fn enter_maps(&self, rec: &PodRecord, project: ProjectRef) -> Result<()> {
        let (slot, entry) = entries::pod_entry(self.subnet, rec.ip, rec.ifindex, project);
        let limit = entries::pod_bandwidth(rec.ip, rec.bandwidth.as_ref());
        // fq on every pod's host veth: packets to a limited pod, and a limited pod's
        // packets to a local pod, wait there.
        let mut have_fq = netdev::ensure_fq(rec.ifindex)?;
        if limit.egress_rate != 0 {
            // A limited pod's packets to other nodes and outside leave by the underlay.
            if let Some((_, underlay)) = netdev::device_with_address(self.config.node_ip)? {
                have_fq &= netdev::ensure_fq(underlay)?;
            }
        }
        if !have_fq && limit != PodBandwidth::default() {
            tracing::warn!(pod = %rec.container_id, "this kernel has no fq qdisc: the pod's limits hold by dropping what exceeds its burst, without pacing");
        }
        let mut maps = self.maps.lock().unwrap();
        maps.bandwidth.set(slot, limit, 0)?;
        maps.pods.set(slot, entry, 0)?;
        drop(maps);
        self.multicast.pod_plugged(rec.ifindex, &rec.project);
        Ok(())
    }

    /// Takes a pod out of the dataplane. Best effort: entries already gone are fine.
    fn unplug(&self, rec: &PodRecord) {
        let mut maps = self.maps.lock().unwrap();
        if let Ok(Some(pod)) = maps.local_pod(rec.ip) {
            if pod.ifindex == rec.ifindex {
                let slot = entries::local_pod_slot(self.subnet, rec.ip);
                let _ = maps.pods.set(slot, PodEntry::default(), 0);
                let _ = maps.bandwidth.set(slot, PodBandwidth::default(), 0);
            }
        }
        drop(maps);
        self.multicast.pod_unplugged(rec.ifindex);
        self.policy.remove_local_pod(&attachment_key(rec));
        self.detach(&rec.host_veth);
    }

    /// A pod as the policy engine knows it.
    fn local_pod(&self, rec: &PodRecord) -> LocalPod {
        LocalPod {
            slot: entries::local_pod_slot(self.subnet, rec.ip),
            namespace: rec.project.clone(),
            name: rec.pod_name.clone(),
            ip: rec.ip,
        }
    }

    /// A pod's address record, from which other nodes know its identity.
    fn pod_address(&self, rec: &PodRecord) -> PodAddress {
        PodAddress {
            node: self.config.node_name.clone(),
            container_id: rec.container_id.clone(),
            ifname: rec.ifname.clone(),
            namespace: rec.project.clone(),
            name: rec.pod_name.clone(),
            ip: rec.ip,
        }
    }

    fn wake_address_publisher(&self) {
        if let Some(wake) = self.addresses_changed.lock().unwrap().as_ref() {
            let _ = wake.send(());
        }
    }

    /// Makes the store's address records of this node's pods equal to the pod table.
    fn publish_pod_addresses(&self) -> Result<()> {
        let wanted: HashMap<String, PodAddress> = {
            let state = self.pods.lock().unwrap();
            state.table.iter().map(|rec| self.pod_address(rec)).map(|a| (a.key_name(), a)).collect()
        };
        let (published, _) = self.cluster.list_pod_addresses(Some(&self.config.node_name))?;
        let published: HashMap<String, PodAddress> = published.into_iter().map(|a| (a.key_name(), a)).collect();
        for (key, address) in &wanted {
            if published.get(key) != Some(address) {
                self.cluster.put_pod_address(address)?;
            }
        }
        for stale in published.values().filter(|a| !wanted.contains_key(&a.key_name())) {
            self.cluster.delete_pod_address(&stale.node, &stale.container_id, &stale.ifname)?;
        }
        Ok(())
    }

    /// Removes the link pin of a pod port. Best effort, as `unplug`.
    fn detach(&self, host_veth: &str) {
        if let Err(e) = self.pipeline.lock().unwrap().detach_pod_port(host_veth) {
            tracing::warn!(veth = %host_veth, "removing link pin: {e:#}");
        }
    }

    fn pod_network(&self, rec: &PodRecord) -> Result<PodNetwork, CniError> {
        let vnid = self.projects.get(&rec.project).map(|(ns, _)| ns.netid).ok_or_else(|| {
            CniError::new(code::TRY_AGAIN_LATER, format!("project {} is not known to this node yet", rec.project))
        })?;
        Ok(PodNetwork {
            ip: rec.ip,
            prefix_len: self.subnet.prefix(),
            gateway: self.gateway,
            mac: format_mac(pod_mac(rec.ip)),
            mtu: self.network.mtu,
            cluster_network: self.network.cluster_network.to_string(),
            project: rec.project.clone(),
            vnid,
        })
    }
}

/// Follows the cluster's records of one kind of policy input into an engine.
fn follow_policy_input<R: crate::policy::mirrors::PolicyInput<E>, E: Send + Sync + 'static>(
    cluster: &Arc<Cluster>,
    engine: &Arc<E>,
) -> Result<()>
where
    Cluster: mirror::Feed<R, Event = R::Event>,
{
    let follower = Arc::new(Follow::<R, E>::new(cluster.clone(), engine.clone()));
    mirror::follow(follower.clone(), follower.resync()?);
    Ok(())
}

/// How often the address records are compared with the pod table when nothing woke the
/// publisher.
const ADDRESS_RECONCILE: std::time::Duration = std::time::Duration::from_secs(30);

/// Publishes the node's pods' addresses at once, when woken (a pod went, or a store
/// write failed) and every `ADDRESS_RECONCILE`, on its own thread.
fn publish_pod_addresses_periodically(agent: &Arc<Agent>) {
    let (wake, woken) = std::sync::mpsc::channel();
    *agent.addresses_changed.lock().unwrap() = Some(wake);
    let agent = agent.clone();
    std::thread::spawn(move || loop {
        if let Err(e) = agent.publish_pod_addresses() {
            tracing::warn!("publishing the pods' addresses: {e:#}");
        }
        match woken.recv_timeout(ADDRESS_RECONCILE) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => while woken.try_recv().is_ok() {},
            Err(RecvTimeoutError::Disconnected) => return,
        }
    });
}

/// A pod's key in the policy engine.
fn attachment_key(rec: &PodRecord) -> String {
    format!("{}/{}", rec.container_id, rec.ifname)
}

/// Fills `STORE_ENDPOINTS` (its one writer): pods may not connect to the store, whatever
/// its own protection.
fn close_store_to_pods(maps: &mut NodeMaps, store: &StoreBackend, node: &NodeAddresses) -> Result<()> {
    let endpoints = store.endpoint_addrs().context("resolving the store's endpoints")?;
    let on_this_node = |ip| netdev::device_with_address(ip).ok().flatten().is_some();
    let wanted = entries::store_endpoints(&endpoints, node, on_this_node);
    let stale: Vec<_> = maps.store_endpoints.keys().filter_map(|k| k.ok()).filter(|k| !wanted.contains(k)).collect();
    for key in stale {
        maps::ignore_missing(maps.store_endpoints.remove(&key))?;
    }
    for key in wanted {
        maps.store_endpoints.insert(key, 1, 0)?;
    }
    Ok(())
}

/// Retries `f` while the store is unreachable (an agent may start before etcd does);
/// any other outcome is returned.
fn until_store_answers<T>(f: impl Fn() -> Result<T, ControllerError>) -> Result<T, ControllerError> {
    loop {
        match f() {
            Err(ControllerError::Store(StoreError::Unavailable(why))) => {
                tracing::warn!("cluster store unavailable, retrying: {why}");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// Checks the host veth an ADD names, before anything is attached or recorded: it must
/// be the veth the plugin creates for this attachment (its name is derived from the
/// attachment, never taken from the caller), a veth, and its peer must live in the
/// pod's network namespace (`CNI_NETNS`). Returns its ifindex. Anything else, tun0, the
/// underlay, another pod's veth, is code 4.
fn verify_host_veth(attachment: &Attachment, host_veth: &str, netns_path: &str) -> Result<u32, CniError> {
    validate_container_id(&attachment.container_id)?;
    validate_ifname(&attachment.ifname)?;
    let expected = host_veth_name(&attachment.container_id, &attachment.ifname);
    let refuse = |why: String| CniError::new(code::INVALID_ENV, format!("host veth {host_veth:?} refused: {why}"));
    if host_veth != expected {
        return Err(refuse(format!(
            "the host veth of interface {} of container {} is {expected}",
            attachment.ifname, attachment.container_id
        )));
    }
    let netns = open_netns(netns_path)?;
    let (veth, netns_id) = netdev::inspect_host_veth(host_veth, Some(netns.as_fd())).map_err(internal)?;
    match veth {
        HostVeth::Absent => Err(refuse("it does not exist on this node".into())),
        HostVeth::Foreign(why) => Err(refuse(why.into())),
        HostVeth::Veth { ifindex, peer_netnsid } if netns_id == Some(peer_netnsid) => Ok(ifindex),
        HostVeth::Veth { .. } => Err(refuse(format!("its peer is not in network namespace {netns_path}"))),
    }
}

/// Whether the veth a pod record names is still there: the same link (ifindex), still a
/// veth with its peer in another namespace. (The underlay device can be such a veth
/// too: what makes a veth a pod's is its name, which `PodRecord::validate` checks.)
fn recorded_veth_present(rec: &PodRecord) -> bool {
    rec.validate().is_ok()
        && matches!(netdev::inspect_host_veth(&rec.host_veth, None),
            Ok((HostVeth::Veth { ifindex, .. }, _)) if ifindex == rec.ifindex)
}

/// Deletes a recorded pod's veth (both ends), by ifindex, if it is still the one
/// recorded. A link that has taken its name since (another ADD's new veth, or anything
/// that is not a pod veth) is left alone.
fn delete_host_veth(rec: &PodRecord) -> Result<()> {
    if let Err(why) = rec.validate() {
        tracing::error!(pod = %rec.container_id, "not deleting the veth of an invalid pod record: {why}");
        return Ok(());
    }
    match netdev::inspect_host_veth(&rec.host_veth, None)?.0 {
        HostVeth::Veth { ifindex, .. } if ifindex == rec.ifindex => netdev::delete_link_index(ifindex),
        HostVeth::Absent => Ok(()),
        other => {
            tracing::warn!(pod = %rec.container_id, veth = %rec.host_veth, "not deleting {other:?}: it is not the recorded veth");
            Ok(())
        }
    }
}

/// Refuses host ports another pod of this node has (kubelet's hostport manager refuses
/// them the same way: the second pod's sandbox fails).
fn host_ports_free(table: &PodTable, attachment: &Attachment, wanted: &[PortMapping]) -> Result<(), CniError> {
    for m in wanted {
        let holder = table
            .iter()
            .filter(|rec| rec.attachment() != *attachment)
            .find_map(|rec| rec.port_mappings.iter().find(|held| held.conflicts_with(m)).map(|held| (rec, held)));
        if let Some((rec, held)) = holder {
            return Err(CniError::new(
                code::HOST_PORT_IN_USE,
                format!(
                    "host port {m} is taken on this node: pod {}/{} (container {}) holds {held}",
                    rec.project, rec.pod_name, rec.container_id
                ),
            ));
        }
    }
    Ok(())
}

fn required<'a, T>(field: &'a Option<T>, name: &str) -> Result<&'a T, CniError> {
    field.as_ref().ok_or_else(|| CniError::new(code::INVALID_ENV, format!("{name} is required")))
}

fn internal(e: impl std::fmt::Display) -> CniError {
    CniError::new(code::INTERNAL, format!("{e:#}"))
}

fn controller_error(e: ControllerError) -> CniError {
    let c = match &e {
        ControllerError::InvalidProjectName(_) => code::INVALID_ENV,
        ControllerError::VnidsExhausted { .. } => code::NO_FREE_VNID,
        ControllerError::Contention(_) | ControllerError::Store(StoreError::Unavailable(_)) => code::TRY_AGAIN_LATER,
        _ => code::INTERNAL,
    };
    CniError::new(c, e.to_string())
}

/// Uninstalls a node's dataplane (`oxsdn-agent --teardown`, with no agent running):
/// the readiness config and the socket first (no new pods), then the nftables table,
/// the pins (the links go with their pins, detaching the programs; the maps go with the
/// last program), tun0 and vxlan0. The pod table and the store's records stay: a later
/// agent plugs the pods that are still there back in.
pub fn teardown(
    node_name: &str,
    bpffs_dir: &std::path::Path,
    cni_conf_dir: &std::path::Path,
    socket: &std::path::Path,
) -> Result<()> {
    remove_if_exists(&cni_conf_dir.join(CNI_CONF_FILE))?;
    remove_if_exists(socket)?;
    egress::remove_masquerade()?;
    hostport::remove()?;
    crate::egress_ip::remove_rules()?;
    crate::egress_ip::remove_addresses()?;
    // The underlay device stays: its prefilter is detached now, not when the kernel
    // gets round to releasing the unpinned link.
    crate::health::detach_pinned_link(&bpffs_dir.join(node_name).join("links").join(prefilter::PIN))?;
    crate::loader::remove_pins(&bpffs_dir.join(node_name))?;
    for link in [netdev::TUN0, netdev::VXLAN0] {
        netdev::delete_link(link)?;
    }
    tracing::info!(node = %node_name, "dataplane removed");
    Ok(())
}
