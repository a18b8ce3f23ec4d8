//! Egress IPs on each node (OpenShift's `NetNamespace.egressIPs` with
//! `HostSubnet.egressIPs`/`egressCIDRs`): this agent's lease, the placement every agent
//! computes alike from the store's records and the live nodes (`EgressIpState::placement`),
//! and what follows from it here:
//! - `EGRESS_IPS`: per VNID of a project with egress IPs, the holders of those that live
//!   nodes hold (table 100 picks one per flow, or drops if there is none);
//! - for each address this node holds: the address on the underlay device, announced
//!   with gratuitous ARP, an SNAT rule for its mark and a rule that lets only replies in
//!   to it (nftables table `ip oxsdn-egress-ip`, rewritten whole and atomically).
//!
//! A node is live while its lease is renewed (`LEASE_INTERVAL_MS`); one whose lease this
//! agent has not seen renewed for `LEASE_TIMEOUT_MS` is dead, and the placement is
//! computed again without it. No node holds an address another node may take: this node
//! counts itself live only while its own renewals succeed, and gives up its addresses
//! sooner (`OWN_LEASE_TIMEOUT`) than the others take them; while this agent's watch is
//! down it judges no other node dead (a gap in the watch is no death); and a stopping
//! agent deletes its lease and gives up its automatic addresses first, so they move at
//! once instead of being held twice.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use ipnetwork::Ipv4Network;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressProtocol};
use nftables::{
    batch::Batch,
    expr::{Expression, Meta, MetaKey, NamedExpression, CT},
    helper::apply_ruleset,
    schema::{Chain, NfListObject, Rule, Table},
    stmt::{Accept, Drop, NATFamily, Operator, Statement, NAT},
    types::{NfChainPolicy, NfChainType, NfFamily, NfHook},
};
use oxsdn_cni::{netlink, netns::with_netlink};
use oxsdn_common::egress_ip::{EgressIpEntry, EGRESS_MARK_BASE, MAX_EGRESS_IPS, MAX_HELD_EGRESS_IPS};
use oxsdn_controller::{
    cluster::{EgressIpEvent, HostSubnetEvent, NetNamespaceEvent},
    egress_ip::{EgressIpState, NodeLease, LEASE_INTERVAL_MS, LEASE_TIMEOUT_MS},
    Cluster, HostSubnet, NetNamespace,
};

use crate::{
    egress::{ip_field, matches, prefix},
    maps::{ignore_missing, ip_key, NodeMaps},
    policy::mirrors::PolicyInput,
};

const TABLE: &str = "oxsdn-egress-ip";
/// Before the masquerade chain (`egress`, priority 100): the first NAT chain that maps
/// a connection decides its source.
const SNAT_PRIORITY: i32 = 99;
/// Gratuitous ARPs per newly held address: the first at once, then again, in case one is
/// lost or a neighbour's entry was still locked (the kernel ignores updates within a
/// second of the last).
const ANNOUNCEMENTS: [Duration; 3] = [Duration::ZERO, Duration::from_millis(500), Duration::from_millis(1200)];
/// How long after its last successful renewal this node still counts itself live: half
/// a renewal less than the others wait (`LEASE_TIMEOUT_MS`, from when they saw it), so it
/// gives an address up before another node can take it.
const OWN_LEASE_TIMEOUT: Duration = Duration::from_millis(LEASE_TIMEOUT_MS - LEASE_INTERVAL_MS / 2);
/// `IFA_PROTO` of the egress IPs this agent puts on a device: an address left behind
/// (its record deleted while no agent ran, or the node uninstalled) is still known as
/// ours and taken off.
const ADDRESS_PROTOCOL: u8 = 0x0e;

pub struct EgressIps {
    cluster: Arc<Cluster>,
    maps: Arc<Mutex<NodeMaps>>,
    node: String,
    node_ip: Ipv4Addr,
    cluster_network: Ipv4Network,
    /// The underlay device (name, ifindex) and its network; none: this node holds no
    /// egress IP (nowhere to put one).
    underlay: Option<(String, u32, Ipv4Network)>,
    /// tun0's MAC, which frames for the host must carry.
    tun0_mac: [u8; 8],
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    egress: EgressIpState,
    vnids: HashMap<String, u32>,
    /// Leases: last beat seen and when it changed, by node.
    leases: HashMap<String, (u64, Instant)>,
    live: BTreeSet<String>,
    /// Addresses this node holds, with their mark slot.
    held: BTreeMap<Ipv4Addr, u32>,
    /// What `EGRESS_IPS` holds, by VNID.
    written: HashMap<u32, EgressIpEntry>,
    listed_projects: bool,
    listed_nodes: bool,
    listed_egress: bool,
    /// Whether `ip oxsdn-egress-ip` holds the rules of `held` (a failed write is retried;
    /// at start it holds an earlier agent's).
    rules_current: bool,
    /// Whether the watch of leases runs (since its last list).
    watching: bool,
    /// When this node's lease was last written.
    renewed: Option<Instant>,
    /// The agent stops: this node is no longer live, but keeps its manual addresses.
    stopping: bool,
}

impl EgressIps {
    /// Starts renewing this node's lease and following egress records and leases.
    pub fn start(
        cluster: Arc<Cluster>,
        maps: Arc<Mutex<NodeMaps>>,
        node: &str,
        node_ip: Ipv4Addr,
        cluster_network: Ipv4Network,
        underlay: Option<(&str, u32)>,
    ) -> Result<Arc<EgressIps>> {
        let underlay = match underlay {
            Some((name, index)) => {
                let addresses = with_netlink(|h| async move { netlink::ipv4_addresses(&h, index).await })??;
                let prefix = addresses.iter().find(|(a, _)| *a == node_ip).map_or(32, |(_, p)| *p);
                Some((name.to_owned(), index, Ipv4Network::new(node_ip, prefix)?))
            }
            None => None,
        };
        let mac = with_netlink(|h| async move { netlink::get_link(&h, crate::netdev::TUN0).await })??
            .and_then(|l| l.mac)
            .filter(|m| m.len() == 6)
            .context("tun0 has no MAC")?;
        let mut tun0_mac = [0; 8];
        tun0_mac[..6].copy_from_slice(&mac);
        // A previous agent's entries stay (its projects keep their egress IPs, or stay
        // dropped, until this one has listed everything) and are then made current.
        let mut state = State::default();
        let network = match &underlay {
            Some((_, _, network)) => *network,
            None => Ipv4Network::new(node_ip, 32)?,
        };
        // Not fatal: without a lease (a store whose roles predate leases) this node only
        // looks dead to the others, which then place no automatic egress IP on it.
        match cluster.renew_lease(&NodeLease { node: node.to_owned(), network, beat: 0 }) {
            Ok(()) => state.renewed = Some(Instant::now()),
            Err(e) => tracing::warn!("writing the node's lease: {e:#}"),
        }
        for entry in maps.lock().unwrap().egress_ips.iter() {
            let (vnid, entry) = entry?;
            state.written.insert(vnid, entry);
        }
        let egress = Arc::new(EgressIps {
            tun0_mac,
            cluster,
            maps,
            node: node.to_owned(),
            node_ip,
            cluster_network,
            underlay,
            state: Mutex::new(state),
        });
        std::thread::Builder::new().name("egress-ip-lease".into()).spawn({
            let egress = egress.clone();
            move || egress.renew_forever(network)
        })?;
        std::thread::Builder::new().name("egress-ip-watch".into()).spawn({
            let egress = egress.clone();
            move || egress.follow_forever()
        })?;
        Ok(egress)
    }

    fn renew_forever(&self, network: Ipv4Network) {
        let mut beat = 1;
        loop {
            std::thread::sleep(Duration::from_millis(LEASE_INTERVAL_MS));
            if self.state.lock().unwrap().stopping {
                return;
            }
            match self.cluster.renew_lease(&NodeLease { node: self.node.clone(), network, beat }) {
                Ok(()) => self.state.lock().unwrap().renewed = Some(Instant::now()),
                Err(e) => tracing::warn!("renewing the node's lease: {e:#}"),
            }
            beat += 1;
            self.check_liveness();
        }
    }

    /// The agent stops (an upgrade, or for good): no renewal any more, the lease deleted
    /// so that the other nodes take this node's automatic egress IPs at once, and those
    /// addresses given up here first (its manual ones no other node takes: they stay,
    /// for its own pods, until the next agent).
    pub fn stop(&self) {
        self.changed(|s| s.stopping = true);
        if let Err(e) = self.cluster.delete_lease(&self.node) {
            tracing::warn!("deleting the node's lease (the others wait for it to expire): {e:#}");
        }
    }

    /// Lists the egress records and leases, then follows their changes; again from a
    /// new list whenever the watch breaks.
    fn follow_forever(&self) {
        loop {
            if let Err(e) = self.follow() {
                tracing::warn!("following egress IPs: {e:#}");
            }
            self.state.lock().unwrap().watching = false;
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn follow(&self) -> Result<()> {
        let (projects, r1) = self.cluster.list_project_egress_ips()?;
        let (nodes, r2) = self.cluster.list_node_egress()?;
        let (leases, r3) = self.cluster.list_leases()?;
        let events = self.cluster.watch_egress_ips(r1.min(r2).min(r3))?;
        self.changed(|s| {
            s.egress.projects = projects.into_iter().map(|p| (p.project.clone(), p)).collect();
            s.egress.nodes = nodes.into_iter().map(|n| (n.node.clone(), n)).collect();
            for lease in leases {
                s.saw_lease(lease);
            }
            s.listed_egress = true;
            s.watching = true;
        });
        for event in events {
            self.changed(|s| match event {
                EgressIpEvent::Project(p) => {
                    s.egress.projects.insert(p.project.clone(), p);
                }
                EgressIpEvent::ProjectDeleted(name) => {
                    s.egress.projects.remove(&name);
                }
                EgressIpEvent::Node(n) => {
                    s.egress.nodes.insert(n.node.clone(), n);
                }
                EgressIpEvent::NodeDeleted(name) => {
                    s.egress.nodes.remove(&name);
                }
                EgressIpEvent::Lease(lease) => s.saw_lease(lease),
                EgressIpEvent::LeaseDeleted(name) => {
                    s.leases.remove(&name);
                }
            });
        }
        anyhow::bail!("the watch of egress IPs ended")
    }

    /// Recomputes the live nodes; a change moves egress IPs.
    fn check_liveness(&self) {
        self.changed(|_| {});
    }

    fn changed(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap();
        change(&mut state);
        let timeout = Duration::from_millis(LEASE_TIMEOUT_MS);
        let mut live: BTreeSet<String> = if state.watching {
            state.leases.iter().filter(|(_, (_, at))| at.elapsed() < timeout).map(|(n, _)| n.clone()).collect()
        } else {
            state.live.clone()
        };
        live.remove(&self.node);
        if !state.stopping && state.renewed.is_some_and(|at| at.elapsed() < OWN_LEASE_TIMEOUT) {
            live.insert(self.node.clone());
        }
        live.retain(|n| state.egress.node_ips.contains_key(n));
        if live != state.live {
            tracing::info!(live = ?live, "live nodes for egress IPs");
            state.live = live;
        }
        if !(state.listed_projects && state.listed_nodes && state.listed_egress) {
            return;
        }
        if let Err(e) = self.write(&mut state) {
            tracing::error!("programming egress IPs: {e:#}");
        }
    }

    /// Makes the map, the addresses and the nftables rules what the placement says.
    fn write(&self, state: &mut State) -> Result<()> {
        let mut placement = state.egress.placement(&state.live);
        if state.stopping {
            // Its manual addresses stay this node's: no other node takes them.
            let project_ips: BTreeSet<Ipv4Addr> =
                state.egress.projects.values().flat_map(|p| p.egress_ips.iter().copied()).collect();
            if let Some(own) = state.egress.nodes.get(&self.node) {
                for ip in own.egress_ips.iter().filter(|ip| project_ips.contains(ip)) {
                    placement.insert(*ip, self.node.clone());
                }
            }
        }
        // The addresses this node holds: kept ones keep their mark slot.
        let mine: BTreeSet<Ipv4Addr> = match self.underlay {
            Some(_) => placement.iter().filter(|(_, n)| **n == self.node).map(|(ip, _)| *ip).collect(),
            None => BTreeSet::new(),
        };
        let gone: Vec<Ipv4Addr> = state.held.keys().filter(|ip| !mine.contains(ip)).copied().collect();
        let new: Vec<Ipv4Addr> = mine.iter().filter(|ip| !state.held.contains_key(ip)).copied().collect();
        for ip in &gone {
            state.held.remove(ip);
        }
        for ip in &new {
            let used: BTreeSet<u32> = state.held.values().copied().collect();
            let slot = (0..MAX_HELD_EGRESS_IPS).find(|s| !used.contains(s)).context("too many egress IPs held")?;
            state.held.insert(*ip, slot);
        }
        // Rules before addresses before map entries: traffic meets a complete path.
        if !gone.is_empty() || !new.is_empty() || !state.rules_current {
            state.rules_current = false;
            self.install_rules(&state.held)?;
            state.rules_current = true;
        }
        if let Some((_, index, network)) = &self.underlay {
            // Every egress IP of the records, and those just given up (no longer any
            // project's perhaps): the ones this node may have to take off.
            let projects = state.egress.projects.values().flat_map(|p| p.egress_ips.iter().copied());
            let nodes = state.egress.nodes.values().flat_map(|n| n.egress_ips.iter().copied());
            let every: BTreeSet<Ipv4Addr> = projects.chain(nodes).chain(gone.iter().copied()).collect();
            sync_addresses(*index, *network, &state.held, &every, self.node_ip)?;
            for ip in &new {
                announce_in_background(*index, *ip);
            }
        }
        let node_ips = &state.egress.node_ips;
        let mut wanted: HashMap<u32, EgressIpEntry> = HashMap::new();
        for project in state.egress.projects.values() {
            let Some(&vnid) = state.vnids.get(&project.project) else { continue };
            if vnid == 0 {
                continue;
            }
            let entry = wanted.entry(vnid).or_insert(EgressIpEntry { tun0_mac: self.tun0_mac, ..Default::default() });
            for ip in &project.egress_ips {
                let Some(holder) = placement.get(ip).and_then(|n| node_ips.get(n)) else { continue };
                let i = entry.count as usize;
                if i >= MAX_EGRESS_IPS as usize {
                    break;
                }
                entry.holders[i] = ip_key(*holder);
                entry.marks[i] = state.held.get(ip).map_or(0, |slot| EGRESS_MARK_BASE + slot);
                entry.count += 1;
            }
        }
        let mut maps = self.maps.lock().unwrap();
        for (vnid, entry) in &wanted {
            if state.written.get(vnid) != Some(entry) {
                maps.egress_ips.insert(vnid, entry, 0)?;
                state.written.insert(*vnid, *entry);
            }
        }
        let stale: Vec<u32> = state.written.keys().filter(|v| !wanted.contains_key(v)).copied().collect();
        for vnid in stale {
            ignore_missing(maps.egress_ips.remove(&vnid))?;
            state.written.remove(&vnid);
        }
        if !gone.is_empty() || !new.is_empty() {
            tracing::info!(held = ?state.held.keys().collect::<Vec<_>>(), "egress IPs held by this node");
        }
        Ok(())
    }

    /// Rewrites table `ip oxsdn-egress-ip`: per held address, SNAT of its mark's packets
    /// from the cluster network, and only replies (and their ICMP errors) in to it.
    fn install_rules(&self, held: &BTreeMap<Ipv4Addr, u32>) -> Result<()> {
        let table = NfListObject::Table(Table { family: NfFamily::IP, name: TABLE.into(), handle: None });
        let mut batch = Batch::new();
        batch.add(table.clone());
        batch.delete(table.clone());
        batch.add(table);
        let chain = |name: &'static str, kind, hook, prio| {
            NfListObject::Chain(Chain {
                family: NfFamily::IP,
                table: TABLE.into(),
                name: name.into(),
                _type: Some(kind),
                hook: Some(hook),
                prio: Some(prio),
                policy: Some(NfChainPolicy::Accept),
                ..Default::default()
            })
        };
        batch.add(chain("snat", NfChainType::NAT, NfHook::Postrouting, SNAT_PRIORITY));
        batch.add(chain("replies-only", NfChainType::Filter, NfHook::Input, 0));
        let rule = |chain: &'static str, expr: Vec<Statement<'static>>| {
            NfListObject::Rule(Rule {
                family: NfFamily::IP,
                table: TABLE.into(),
                chain: chain.into(),
                expr: Cow::Owned(expr),
                handle: None,
                index: None,
                comment: None,
            })
        };
        for (ip, slot) in held {
            let address = || Expression::String(ip.to_string().into());
            batch.add(rule(
                "snat",
                vec![
                    matches(ip_field("saddr"), Operator::EQ, prefix(self.cluster_network)),
                    matches(
                        Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Mark })),
                        Operator::EQ,
                        Expression::Number(EGRESS_MARK_BASE + slot),
                    ),
                    Statement::SNAT(Some(NAT {
                        addr: Some(address()),
                        family: Some(NATFamily::IP),
                        port: None,
                        flags: None,
                    })),
                ],
            ));
            let ct_state = Expression::Named(NamedExpression::CT(CT { key: "state".into(), family: None, dir: None }));
            let replies =
                Expression::List(vec![Expression::String("established".into()), Expression::String("related".into())]);
            batch.add(rule(
                "replies-only",
                vec![
                    matches(ip_field("daddr"), Operator::EQ, address()),
                    matches(ct_state, Operator::IN, replies),
                    Statement::Accept(Some(Accept {})),
                ],
            ));
            batch.add(rule(
                "replies-only",
                vec![matches(ip_field("daddr"), Operator::EQ, address()), Statement::Drop(Some(Drop {}))],
            ));
        }
        apply_ruleset(&batch.to_nftables()).context("programming the egress IP rules with nft")
    }
}

/// Puts the held addresses on the underlay device (tagged `ADDRESS_PROTOCOL`) and takes
/// off those of other egress IPs (`every`) and other tagged ones: moved away, or left by
/// an earlier agent. In the device's network they are secondary addresses (never the
/// node's own source address), else /32.
fn sync_addresses(
    index: u32,
    network: Ipv4Network,
    held: &BTreeMap<Ipv4Addr, u32>,
    every: &BTreeSet<Ipv4Addr>,
    node_ip: Ipv4Addr,
) -> Result<()> {
    with_netlink(|h| async move {
        use futures::TryStreamExt;
        let mut existing = h.address().get().set_link_index_filter(index).execute();
        let mut present = BTreeSet::new();
        let mut remove = Vec::new();
        while let Some(m) = existing.try_next().await? {
            let Some(ip) = local_address(&m) else { continue };
            if held.contains_key(&ip) {
                present.insert(ip);
            } else if ip != node_ip && (every.contains(&ip) || ours(&m)) {
                remove.push(m);
            }
        }
        for m in remove {
            h.address().del(m).execute().await.context("removing an egress IP")?;
        }
        for ip in held.keys().filter(|ip| !present.contains(ip)) {
            let prefix = if network.contains(*ip) { network.prefix() } else { 32 };
            let mut add = h.address().add(index, std::net::IpAddr::V4(*ip), prefix);
            add.message_mut().attributes.push(AddressAttribute::Protocol(AddressProtocol::from(ADDRESS_PROTOCOL)));
            add.execute().await.with_context(|| format!("adding egress IP {ip}"))?;
        }
        Ok(())
    })?
}

fn local_address(m: &AddressMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(std::net::IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    })
}

/// Whether this agent put the address there (an egress IP).
fn ours(m: &AddressMessage) -> bool {
    m.attributes.iter().any(|a| matches!(a, AddressAttribute::Protocol(p) if u8::from(*p) == ADDRESS_PROTOCOL))
}

/// Takes every egress IP this agent put on a device of the node off again (uninstall).
pub fn remove_addresses() -> Result<()> {
    with_netlink(|h| async move {
        use futures::TryStreamExt;
        let mut existing = h.address().get().execute();
        let mut remove = Vec::new();
        while let Some(m) = existing.try_next().await? {
            if ours(&m) {
                remove.push(m);
            }
        }
        for m in remove {
            h.address().del(m).execute().await.context("removing an egress IP")?;
        }
        Ok(())
    })?
}

fn announce_in_background(index: u32, ip: Ipv4Addr) {
    std::thread::spawn(move || {
        let start = Instant::now();
        for at in ANNOUNCEMENTS {
            std::thread::sleep(at.saturating_sub(start.elapsed()));
            if let Err(e) = announce(index, ip) {
                tracing::warn!(%ip, "gratuitous ARP: {e:#}");
            }
        }
    });
}

/// Sends a gratuitous ARP request for `ip` (sender and target `ip`, to broadcast) out
/// of device `index`, so the underlay's neighbours learn that this node has it now.
fn announce(index: u32, ip: Ipv4Addr) -> Result<()> {
    let mac = with_netlink(|h| async move { netlink::get_link_by_index(&h, index).await })??
        .and_then(|l| l.mac)
        .filter(|m| m.len() == 6)
        .context("the underlay device has no MAC")?;
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&ip.octets());
    // SAFETY: plain socket call; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a packet socket");
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = 0x0806u16.to_be();
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: the frame and the address live for the call, with their lengths.
    let sent = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error()).context("sending a gratuitous ARP");
    }
    Ok(())
}

impl State {
    /// A lease listed or changed: its node renewed it if the beat moved since last seen.
    fn saw_lease(&mut self, lease: NodeLease) {
        self.egress.node_networks.insert(lease.node.clone(), lease.network);
        let seen = self.leases.entry(lease.node).or_insert((lease.beat, Instant::now()));
        if seen.0 != lease.beat {
            *seen = (lease.beat, Instant::now());
        }
    }
}

/// Removes the egress IP rules (uninstall).
pub fn remove_rules() -> Result<()> {
    let table = NfListObject::Table(Table { family: NfFamily::IP, name: TABLE.into(), handle: None });
    let mut batch = Batch::new();
    batch.add(table.clone());
    batch.delete(table);
    apply_ruleset(&batch.to_nftables()).context("removing the egress IP nftables table")
}

impl PolicyInput<EgressIps> for NetNamespace {
    type Event = NetNamespaceEvent;
    const WHAT: &'static str = "egress IP projects";
    fn replace_all(egress: &EgressIps, all: Vec<Self>) {
        egress.changed(|s| {
            s.vnids = all.into_iter().map(|ns| (ns.name, ns.netid)).collect();
            s.listed_projects = true;
        });
    }
    fn apply(egress: &EgressIps, event: NetNamespaceEvent) {
        egress.changed(|s| match event {
            NetNamespaceEvent::Upsert(ns) => {
                s.vnids.insert(ns.name, ns.netid);
            }
            NetNamespaceEvent::Deleted(name) => {
                s.vnids.remove(&name);
            }
        });
    }
}

impl PolicyInput<EgressIps> for HostSubnet {
    type Event = HostSubnetEvent;
    const WHAT: &'static str = "egress IP nodes";
    fn replace_all(egress: &EgressIps, all: Vec<Self>) {
        egress.changed(|s| {
            s.egress.node_ips = all.into_iter().map(|hs| (hs.host, hs.host_ip)).collect();
            s.listed_nodes = true;
        });
    }
    fn apply(egress: &EgressIps, event: HostSubnetEvent) {
        egress.changed(|s| match event {
            HostSubnetEvent::Upsert(hs) => {
                s.egress.node_ips.insert(hs.host, hs.host_ip);
            }
            HostSubnetEvent::Deleted(name) => {
                s.egress.node_ips.remove(&name);
            }
        });
    }
}
