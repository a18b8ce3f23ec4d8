//! A node's view of the cluster at one moment: what Profile A's flow tables are built
//! from (node config, local pods, NetNamespaces, remote HostSubnets, services), plus the
//! connection and fragment tracking oxsdn adds for its in-dataplane service translation.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::policy::Policies;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        let net = Net { addr, prefix };
        Net { addr: Ipv4Addr::from(u32::from(addr) & net.mask()), prefix }
    }

    pub fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// The address `offset` places after the network address.
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(offset))
    }

    pub fn size(&self) -> u32 {
        (!self.mask()).wrapping_add(1)
    }
}

/// Node-wide configuration (the `C`, `L`, `S`, `NODEIP` and `VXP` of the spec's notation).
#[derive(Clone, Debug)]
pub struct Node {
    pub cluster: Net,
    pub local: Net,
    pub service: Net,
    pub node_ip: Ipv4Addr,
    pub vxlan_port: u16,
}

impl Node {
    /// `GW`: the first address of the node subnet (§9.4).
    pub fn gateway(&self) -> Ipv4Addr {
        self.local.nth(1)
    }
}

/// A pod on this node: its host-side port (OpenShift's `P`, here the veth's ifindex),
/// its address and its project.
#[derive(Clone, Debug)]
pub struct Pod {
    pub ip: Ipv4Addr,
    pub ifindex: u32,
    pub project: u32,
}

/// A remote HostSubnet: table 10 accepts VXLAN from `node_ip`; tables 50/90 send there.
#[derive(Clone, Debug)]
pub struct RemoteNode {
    pub subnet: Net,
    pub node_ip: Ipv4Addr,
}

/// A declared port of a service (table 60's per-port rules).
#[derive(Clone, Debug)]
pub struct ServicePort {
    pub port: u16,
    pub protocol: u8,
    pub target_port: u16,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub cluster_ip: Ipv4Addr,
    /// Isolation is keyed on the service's project, not its endpoints' (§5).
    pub project: u32,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Ipv4Addr>,
    /// Endpoints that left the service, still draining (none is in `endpoints`).
    pub draining: Vec<Draining>,
}

/// An endpoint that left its service, and when its drain window ends (design.md: until
/// then tracked TCP connections keep it; nothing else picks it).
#[derive(Clone, Debug)]
pub struct Draining {
    pub ip: Ipv4Addr,
    /// CLOCK_MONOTONIC, ns: the window is open while `State::now` is earlier.
    pub until: u64,
}

impl Service {
    /// Whether a tracked connection of `protocol` to `endpoint` keeps it at `now`.
    pub fn keeps(&self, protocol: u8, endpoint: Ipv4Addr, now: u64) -> bool {
        self.endpoints.contains(&endpoint)
            || (protocol == IPPROTO_TCP && self.draining.iter().any(|d| d.ip == endpoint && now < d.until))
    }
}

/// A service connection the dataplane has already sent to an endpoint (design.md:
/// later packets keep their endpoint while it still serves the service, or drains).
#[derive(Clone, Debug)]
pub struct Connection {
    pub protocol: u8,
    pub client: (Ipv4Addr, u16),
    pub service: (Ipv4Addr, u16),
    pub endpoint: (Ipv4Addr, u16),
}

impl Connection {
    /// A client that is its own endpoint is given the gateway as source (hairpin).
    pub fn hairpin(&self) -> bool {
        self.client.0 == self.endpoint.0
    }
}

/// A fragmented datagram whose first fragment was seen: its L4 ports, for the later
/// fragments (which carry none).
#[derive(Clone, Debug)]
pub struct Fragmented {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub id: u16,
    pub protocol: u8,
    pub ports: (u16, u16),
}

/// The network plugin (`NodeConfig.mode`): what table 80 decides with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// `ovs-multitenant`: projects isolated by VNID.
    #[default]
    Multitenant,
    /// `ovs-subnet`: flat; pods send VNI 0, table 80 delivers everything.
    Subnet,
    /// `ovs-networkpolicy`: VNIDs on the wire, isolation by NetworkPolicies
    /// (`crate::policy`), judged once the output is known.
    NetworkPolicy,
}

#[derive(Clone, Debug)]
pub struct State {
    pub mode: Mode,
    /// Namespaces, pods' labels and ports, NetworkPolicies, allowed connections.
    pub policy: Policies,
    pub node: Node,
    pub pods: Vec<Pod>,
    /// Project id -> VNID (NetNamespace.netid); `default` and global projects have 0.
    pub projects: BTreeMap<u32, u32>,
    pub remote_nodes: Vec<RemoteNode>,
    pub services: Vec<Service>,
    pub connections: Vec<Connection>,
    pub fragments: Vec<Fragmented>,
    /// When the frames are seen (CLOCK_MONOTONIC, ns), for drain windows.
    pub now: u64,
}

impl State {
    pub fn pod_by_port(&self, ifindex: u32) -> Option<&Pod> {
        self.pods.iter().find(|p| p.ifindex == ifindex)
    }

    pub fn pod_by_ip(&self, ip: Ipv4Addr) -> Option<&Pod> {
        self.pods.iter().find(|p| p.ip == ip)
    }

    pub fn vnid(&self, project: u32) -> Option<u32> {
        self.projects.get(&project).copied()
    }

    /// Table 10: VXLAN is accepted from remote nodes only.
    pub fn is_remote_node(&self, ip: Ipv4Addr) -> bool {
        self.remote_nodes.iter().any(|n| n.node_ip == ip)
    }

    /// Tables 50/90: the remote node whose subnet holds `ip`.
    pub fn remote_node_for(&self, ip: Ipv4Addr) -> Option<&RemoteNode> {
        self.remote_nodes.iter().filter(|n| n.subnet.contains(ip)).max_by_key(|n| n.subnet.prefix)
    }

    /// Table 60, later fragments: a service with this ClusterIP.
    pub fn service_by_ip(&self, ip: Ipv4Addr) -> Option<&Service> {
        self.services.iter().find(|s| s.cluster_ip == ip)
    }

    /// Table 60, per declared port.
    pub fn service_port(&self, ip: Ipv4Addr, protocol: u8, port: u16) -> Option<(&Service, &ServicePort)> {
        self.services
            .iter()
            .filter(|s| s.cluster_ip == ip)
            .find_map(|s| s.ports.iter().find(|p| p.port == port && p.protocol == protocol).map(|p| (s, p)))
    }

    /// Whether some service lists or drains `ip` (its packets may be replies).
    pub fn is_endpoint(&self, ip: Ipv4Addr) -> bool {
        self.services.iter().any(|s| s.endpoints.contains(&ip) || s.draining.iter().any(|d| d.ip == ip))
    }

    pub fn fragment_ports(&self, src: Ipv4Addr, dst: Ipv4Addr, id: u16, protocol: u8) -> Option<(u16, u16)> {
        self.fragments
            .iter()
            .find(|f| f.src == src && f.dst == dst && f.id == id && f.protocol == protocol)
            .map(|f| f.ports)
    }

    /// The tracked connection a client's packet to a service belongs to.
    pub fn connection_from_client(
        &self,
        protocol: u8,
        client: (Ipv4Addr, u16),
        service: (Ipv4Addr, u16),
    ) -> Option<&Connection> {
        self.connections.iter().find(|c| c.protocol == protocol && c.client == client && c.service == service)
    }

    /// The tracked connection an endpoint's packet is a reply of: it is addressed to the
    /// client as the endpoint saw it (the gateway for a hairpin connection).
    pub fn connection_from_endpoint(
        &self,
        protocol: u8,
        endpoint: (Ipv4Addr, u16),
        to: (Ipv4Addr, u16),
    ) -> Option<&Connection> {
        let gateway = self.node.gateway();
        self.connections.iter().find(|c| {
            let seen_client = if c.hairpin() { (gateway, c.client.1) } else { c.client };
            c.protocol == protocol && c.endpoint == endpoint && seen_client == to
        })
    }
}
