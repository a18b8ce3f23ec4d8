//! What the tables read and write besides the frame: the node's maps, counters, the
//! clock, randomness. The eBPF programs implement it on the pinned maps (`oxsdn-ebpf`'s
//! `lib/env.rs`), once for the live programs and once for trace mode, which records the
//! rules a packet matches instead of counting them and writes no map.
//!
//! Every method is a single map access or helper; the tables hold the logic.

use oxsdn_common::{
    bandwidth::PodBandwidth,
    egress::EgressVerdict,
    egress_ip::EgressIpEntry,
    policy::{IdentityPolicy, PolicyConnection, PolicyKey, PortSet},
    EndpointKey, EndpointMember, FlowKey, FragmentKey, FragmentPorts, PodEntry, ProjectEntry, RemoteNode,
    ServiceConnection, ServiceIp, ServiceKey, ServicePort, ServiceReply,
};

pub trait Env: Copy {
    /// The local pod in slot `slot` (`PODS`), if there is one.
    fn pod(self, slot: u32) -> Option<PodEntry>;
    /// The address of the local pod in `slot` if it is a service endpoint, else 0
    /// (`ENDPOINT_PODS`).
    fn endpoint_pod(self, slot: u32) -> u32;
    /// The project in node-local slot `slot` (`PROJECTS`).
    fn project(self, slot: u32) -> Option<ProjectEntry>;
    /// The remote node whose subnet holds `addr` (`REMOTE_SUBNETS`).
    fn remote_subnet(self, addr: u32) -> Option<RemoteNode>;
    /// The remote node with underlay address `addr` (`NODE_IPS`).
    fn remote_node_ip(self, addr: u32) -> Option<RemoteNode>;
    /// Whether `addr` lies in a source network the operator denies at the underlay
    /// device (`PREFILTER_DENY`).
    fn prefilter_denied(self, addr: u32) -> bool;
    /// Whether `ip`:`port` is an endpoint of the cluster store (`STORE_ENDPOINTS`).
    fn store_endpoint(self, ip: u32, port: u16) -> bool;
    fn service_port(self, key: &ServiceKey) -> Option<ServicePort>;
    fn service_ip(self, ip: u32) -> Option<ServiceIp>;
    fn endpoint(self, key: &EndpointKey) -> Option<u32>;
    /// Whether the endpoint still serves its service (`ENDPOINT_SET`).
    fn serves(self, member: &EndpointMember) -> bool;
    /// The end of the endpoint's drain window (`DRAINING`).
    fn drain_until(self, member: &EndpointMember) -> Option<u64>;
    fn connection(self, flow: &FlowKey) -> Option<ServiceConnection>;
    fn reply(self, flow: &FlowKey) -> Option<ServiceReply>;
    /// Marks a tracked connection's half as used now, and closing if `closing`.
    fn refresh_connection(self, flow: &FlowKey, closing: bool);
    fn refresh_reply(self, flow: &FlowKey, closing: bool);
    /// Inserts a new connection's half if there is room; whether it is in (trace mode
    /// inserts nothing and says yes).
    fn insert_connection(self, flow: &FlowKey, connection: &ServiceConnection) -> bool;
    fn insert_reply(self, flow: &FlowKey, reply: &ServiceReply) -> bool;
    /// Takes back a reply half whose connection half could not be inserted.
    fn remove_reply(self, flow: &FlowKey);
    /// How many connections `owner` has tracked (`CT_SHARES`).
    fn share(self, owner: u32) -> u32;
    /// Counts one more connection of `owner`.
    fn take_share(self, owner: u32);
    fn fragment_ports(self, key: &FragmentKey) -> Option<FragmentPorts>;
    /// Records a first fragment's ports (not in trace mode).
    fn record_fragment(self, key: &FragmentKey, ports: &FragmentPorts);
    /// The identity of the local pod in `slot` (0: none yet).
    fn pod_identity(self, slot: u32) -> u32;
    /// The identity of the pod of the cluster with address `ip` (0: not a known pod).
    fn ip_identity(self, ip: u32) -> u32;
    /// What policies say of `identity`.
    fn identity_policy(self, identity: u32) -> Option<IdentityPolicy>;
    /// What a subject may exchange with a peer identity in a direction.
    fn policy_peers(self, key: &PolicyKey) -> Option<&'static PortSet>;
    /// What a subject may exchange, in a direction, with the address block holding `ip`.
    fn policy_cidrs(self, subject: u32, direction: u32, ip: u32) -> Option<&'static PortSet>;
    /// The policy maps' write generation (`POLICY_GENERATION`).
    fn policy_generation(self) -> u32;
    /// The connection policies track under `key` (`policy::connection_key`), marked as
    /// used now (and closing if `closing`).
    fn policy_connection(self, key: &FlowKey, closing: bool) -> Option<&'static PolicyConnection>;
    /// Sets `flags` on the connection under `key` and records the verdict of its opening
    /// direction (`PolicyConnection`'s fields); nothing in trace mode.
    fn update_policy_connection(
        self,
        key: &FlowKey,
        flags: u32,
        generation: u32,
        egress_count: u32,
        ingress_count: u32,
    );
    /// Tracks a connection policies let through (`connection.owner`'s share); whether
    /// it is in (trace mode tracks nothing and says yes).
    fn track_policy_connection(self, key: &FlowKey, connection: &PolicyConnection) -> bool;
    /// The egress firewall's entry for traffic of VNID `vnid` to `dst` (`EGRESS_CIDRS`).
    fn egress_verdict(self, vnid: u32, dst: u32) -> Option<EgressVerdict>;
    /// The bandwidth limits of the local pod in `slot` (`BANDWIDTH`).
    fn pod_bandwidth(self, slot: u32) -> Option<PodBandwidth>;
    /// The departure time last given to a packet from (`bandwidth::EGRESS`) or to
    /// (`INGRESS`) the local pod in `slot` (`PACING`; 0: none).
    fn last_departure(self, slot: u32, direction: u32) -> u64;
    /// Records it (not in trace mode).
    fn set_last_departure(self, slot: u32, direction: u32, at: u64);
    /// Whether VNID `vnid` has multicast enabled and pods on this node (`MCAST_GROUPS`).
    fn multicast_group(self, vnid: u32) -> bool;
    /// The egress IPs of VNID `vnid` and their holders (`EGRESS_IPS`).
    fn egress_ips(self, vnid: u32) -> Option<&'static EgressIpEntry>;
    /// CLOCK_MONOTONIC in ns.
    fn now_ns(self) -> u64;
    fn random(self) -> u32;

    /// Counts node-wide rule `rule` for a frame of `len` bytes (trace mode: records it).
    fn count(self, rule: u32, len: u32);
    /// Counts per-pod rule `rule` of the pod with address `ip` in `slot`.
    fn count_pod(self, slot: u32, ip: u32, rule: u32, len: u32);
    /// Counts per-node rule `rule` of the remote node in counter slot `slot`.
    fn count_remote_node(self, slot: u32, rule: u32, len: u32);
    /// Counts per-service rule `rule` of the service port or ClusterIP in `slot`.
    fn count_service(self, slot: u32, rule: u32, len: u32);
    /// Counts per-policy rule `rule` of the policy in counter slot `slot`; `matched`: the
    /// index of the policy's rule that matched (for a trace).
    fn count_policy(self, slot: u32, rule: u32, matched: u32, len: u32);
    /// Counts egress firewall rule `rule` of the entry in counter slot `slot`.
    fn count_egress(self, slot: u32, rule: u32, len: u32);
    /// Counts a dropped packet against its source (`SOURCE_DROPS[source]`, see
    /// `oxsdn_common::monitor::drop_source`); nothing in trace mode.
    fn count_drop(self, source: u32);
    /// Trace mode: records a register as the tables computed it
    /// (`oxsdn_common::trace::REG0_SET` / `REG1_SET`).
    fn register(self, which: u32, value: u32);
}
