//! Keys and values of the pinned maps (`crate::maps` says which map holds which).
//! Addresses are wire-order `u32`s (`crate::addr`); ports and other numbers are host
//! order unless a field says otherwise.

use crate::wire;

wire! {
    /// Node-wide settings, the single entry of `CONFIG`.
    pub struct NodeConfig {
        /// `LAYOUT_VERSION` of the agent that wrote it.
        pub layout_version: u32,
        /// Gateway address (first address of the node subnet), held by tun0.
        pub gateway: u32,
        /// This node's subnet `L`.
        pub local_net: u32,
        pub local_mask: u32,
        /// The cluster network `C`.
        pub cluster_net: u32,
        pub cluster_mask: u32,
        /// The service network `S`.
        pub service_net: u32,
        pub service_mask: u32,
        /// The node's underlay address.
        pub node_ip: u32,
        /// ifindex of tun0 (OpenShift's port 2).
        pub tun0_ifindex: u32,
        /// ifindex of vxlan0, the collect_md VXLAN device (OpenShift's port 1).
        pub vxlan_ifindex: u32,
        /// VXLAN UDP port.
        pub vxlan_port: u16,
        /// Which VXLAN the underlay's XDP program takes off itself and redirects to a
        /// local pod (`crate::xdp_decap` flags; 0: none, `from_underlay` at TC does).
        pub xdp_decap: u16,
        /// ifindex of the underlay device holding `node_ip`, on which the programs put
        /// VXLAN headers on and take them off themselves (0: unknown, everything goes
        /// through vxlan0).
        pub underlay_ifindex: u32,
        /// Which network plugin decides table 80 (`crate::mode`).
        pub mode: u32,
        /// Connections each project (and the node's host, and the tunnel) may have in
        /// the tracking tables at once (`conntrack`); 0: no limit but the tables' size.
        pub ct_quota: u32,
    }

    /// Value of `PODS`, indexed by the pod's slot (`crate::addr::pod_slot`): a local pod,
    /// what tables 20, 40 and 70 need. `ifindex` 0: no pod in that slot.
    pub struct PodEntry {
        /// ifindex of the pod's host-side veth (OpenShift's pod port `P`).
        pub ifindex: u32,
        pub ip: u32,
        /// Index of the pod's project in `PROJECTS`.
        pub project_slot: u32,
        /// The project's id, which that `PROJECTS` entry must carry: a slot reused by
        /// another project never gives this pod that project's VNID.
        pub project_id: u32,
    }

    /// Value of `PROJECTS`, indexed by the project's node-local slot. Pods reference
    /// the slot, so a join/isolate/global is one map update for all pods of a project
    /// on this node. `id` 0: a free slot.
    pub struct ProjectEntry {
        /// The project's cluster-wide id (never reused by the controller).
        pub id: u32,
        pub vnid: u32,
    }

    /// A remote node: value of `REMOTE_SUBNETS` (key: the node's subnet) and of
    /// `NODE_IPS` (key: the node's IP), what tables 10, 50 and 90 need.
    pub struct RemoteNode {
        /// The node's underlay IP, the VXLAN destination.
        pub node_ip: u32,
        /// Index of the node's counters in `NODE_STATS` (< `MAX_NODES`).
        pub slot: u32,
    }

    /// Key of `SERVICES`: a declared service port (table 60's per-port rules).
    pub struct ServiceKey {
        pub ip: u32,
        pub port: u16,
        /// IPPROTO_TCP or IPPROTO_UDP.
        pub proto: u8,
        pub _pad: u8,
    }

    /// Value of `SERVICES`.
    pub struct ServicePort {
        /// The service's stable id: its endpoints are `ENDPOINTS[(service, 0..endpoints)]`.
        pub service: u32,
        /// The service's project (its slot and id, as in `PodEntry`): isolation is keyed
        /// on it (its VNID is `reg1`).
        pub project_slot: u32,
        pub project_id: u32,
        pub endpoints: u32,
        /// Index of this port's counter in `SERVICE_STATS`.
        pub slot: u32,
        pub target_port: u16,
        pub _pad: u16,
    }

    /// Value of `SERVICE_IPS` (key: a ClusterIP): for fragments after the first, which
    /// are matched on the address alone.
    pub struct ServiceIp {
        pub project_slot: u32,
        pub project_id: u32,
        pub slot: u32,
    }

    /// Key of `ENDPOINTS` (value: the endpoint's IPv4).
    pub struct EndpointKey {
        pub service: u32,
        pub index: u32,
    }

    /// Key of `ENDPOINT_SET` (value: 1): whether an endpoint still serves a service,
    /// checked before a tracked connection is sent on to it; and of `DRAINING` (value:
    /// the end of the drain window of an endpoint that left, `bpf_ktime_get_ns` time).
    pub struct EndpointMember {
        pub service: u32,
        pub ip: u32,
    }

    /// A connection's addresses as one direction of it carries them (`CT_FORWARD` key:
    /// the client's packets to the service; `CT_REVERSE` key: the endpoint's packets
    /// back).
    pub struct FlowKey {
        pub src: u32,
        pub dst: u32,
        pub sport: u16,
        pub dport: u16,
        pub proto: u8,
        pub _pad: [u8; 3],
    }

    /// Value of `CT_FORWARD`: where a client's connection to a service was sent. The
    /// two halves of a connection live and die together: the programs insert both or
    /// neither, and only the agent's collector removes them, both at once.
    pub struct ServiceConnection {
        /// When a packet of the client last used it (`bpf_ktime_get_ns` time).
        pub last_seen: u64,
        pub service: u32,
        pub endpoint_ip: u32,
        pub endpoint_port: u16,
        /// The client is its own endpoint (hairpin): its source becomes the gateway.
        pub hairpin: u16,
        /// Whose share of the tracking tables it uses (`CT_SHARES`' index).
        pub owner: u32,
        /// `conntrack::CLOSING` once a FIN or RST passed this way.
        pub flags: u32,
        pub _pad: u32,
    }

    /// Value of `CT_REVERSE`: the addresses an endpoint's reply must carry to the client.
    pub struct ServiceReply {
        /// When a reply last used it.
        pub last_seen: u64,
        pub service_ip: u32,
        pub client_ip: u32,
        pub service_port: u16,
        pub client_port: u16,
        /// `conntrack::CLOSING` once a FIN or RST passed this way.
        pub flags: u32,
    }

    /// Key of `FRAGMENTS`: one fragmented IPv4 datagram.
    pub struct FragmentKey {
        pub src: u32,
        pub dst: u32,
        pub id: u16,
        pub proto: u8,
        pub _pad: u8,
    }

    /// Value of `FRAGMENTS`: the L4 ports the first fragment carried.
    pub struct FragmentPorts {
        pub sport: u16,
        pub dport: u16,
    }

    /// Key of `STORE_ENDPOINTS`: an address and TCP/UDP port of the cluster store.
    pub struct StoreEndpoint {
        pub ip: u32,
        pub port: u16,
        pub _pad: u16,
    }

    /// A rule's counter (one per CPU in the per-CPU arrays; userspace sums them).
    pub struct Counter {
        pub packets: u64,
        pub bytes: u64,
    }
}
