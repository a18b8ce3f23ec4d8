//! The tables' environment (`oxsdn_tables::Env`) on the pinned maps, in two copies: the
//! live programs count rules and write connection tracking; trace mode
//! (`oxsdn_common::trace`) records the rules in `TRACE` and writes no map (nor reports to
//! the monitor). Which copy a program runs is chosen once, at its entry
//! (`trace_mode::by_mode`).

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    maps::lpm_trie::Key,
};
use oxsdn_common::{
    bandwidth::{PodBandwidth, INGRESS},
    conntrack::CLOSING,
    egress::{EgressCidr, EgressVerdict, EGRESS_KEY_FIXED_BITS},
    egress_ip::EgressIpEntry,
    monitor::NO_RULE,
    policy::{IdentityPolicy, PolicyCidr, PolicyConnection, PolicyKey, PortSet, CIDR_KEY_FIXED_BITS},
    stats,
    trace::{hop_kind, output_kind},
    Counter, EndpointKey, EndpointMember, FlowKey, FragmentKey, FragmentPorts, PodEntry, ProjectEntry, RemoteNode,
    ServiceConnection, ServiceIp, ServiceKey, ServicePort, ServiceReply, StoreEndpoint,
};
use oxsdn_tables::{Env, Packet, Translation};

use crate::shared::{maps::*, monitor, output::Decision, trace_mode};

/// `bpf_map_update_elem` flag: only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// The maps, with trace mode a constant of the copy.
#[derive(Clone, Copy, Default)]
pub struct Maps<const TRACE: bool>;

/// The live programs' environment.
pub type Live = Maps<false>;

#[inline(always)]
fn bump(counter: Option<*mut Counter>, len: u32) {
    if let Some(c) = counter {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
    }
}

impl<const TRACE: bool> Maps<TRACE> {
    /// The pipeline's decision `d` on `p`: trace mode records it, the live programs tell
    /// a monitor that wants forwards.
    #[inline(always)]
    pub fn decision(self, d: &Decision, p: &Packet<Self>) {
        if TRACE {
            trace_mode::decision(d.kind, d.ifindex, d.ip, d.vni, &p.xlate);
        } else {
            monitor::report(p, d, NO_RULE);
        }
    }

    /// The pipeline dropped `p`: trace mode records it, the live programs tell a monitor
    /// the rule that dropped it.
    #[inline(always)]
    pub fn dropped(self, p: &Packet<Self>) {
        if TRACE {
            trace_mode::decision(output_kind::DROP, 0, 0, 0, &p.xlate);
        } else {
            monitor::report(p, &Decision { kind: output_kind::DROP, ..Decision::default() }, p.dropped_by.get());
        }
    }

    /// The underlay's XDP prefilter dropped a frame (counted): trace mode records it.
    /// The monitor is not told: its events describe a parsed packet, which the
    /// prefilter does not build.
    #[inline(always)]
    pub fn dropped_at_prefilter(self) {
        if TRACE {
            trace_mode::decision(output_kind::DROP, 0, 0, 0, &Translation::default());
        }
    }

    /// The output dropped `p` by table 254's `rule` (counted): the live programs tell a
    /// monitor (a trace has the decision and the rule's hop already).
    #[inline(always)]
    pub fn dropped_at_output(self, p: &Packet<Self>, rule: u32) {
        if !TRACE {
            monitor::report(p, &Decision { kind: output_kind::DROP, ..Decision::default() }, rule);
        }
    }
}

impl<const TRACE: bool> Env for Maps<TRACE> {
    #[inline(always)]
    fn pod(self, slot: u32) -> Option<PodEntry> {
        PODS.get(slot).copied()
    }

    #[inline(always)]
    fn endpoint_pod(self, slot: u32) -> u32 {
        ENDPOINT_PODS.get(slot).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn project(self, slot: u32) -> Option<ProjectEntry> {
        PROJECTS.get(slot).copied()
    }

    #[inline(always)]
    fn remote_subnet(self, addr: u32) -> Option<RemoteNode> {
        REMOTE_SUBNETS.get(&Key::new(32, addr)).copied()
    }

    #[inline(always)]
    fn remote_node_ip(self, addr: u32) -> Option<RemoteNode> {
        // SAFETY: read-only access to a map value.
        unsafe { NODE_IPS.get(&addr) }.copied()
    }

    #[inline(always)]
    fn prefilter_denied(self, addr: u32) -> bool {
        PREFILTER_DENY.get(&Key::new(32, addr)).is_some()
    }

    #[inline(always)]
    fn store_endpoint(self, ip: u32, port: u16) -> bool {
        STORE_ENDPOINTS.get_ptr(&StoreEndpoint { ip, port, _pad: 0 }).is_some()
    }

    #[inline(always)]
    fn service_port(self, key: &ServiceKey) -> Option<ServicePort> {
        // SAFETY: read-only access to a map value.
        unsafe { SERVICES.get(key) }.copied()
    }

    #[inline(always)]
    fn service_ip(self, ip: u32) -> Option<ServiceIp> {
        // SAFETY: read-only access to a map value.
        unsafe { SERVICE_IPS.get(&ip) }.copied()
    }

    #[inline(always)]
    fn endpoint(self, key: &EndpointKey) -> Option<u32> {
        // SAFETY: read-only access to a map value.
        unsafe { ENDPOINTS.get(key) }.copied()
    }

    #[inline(always)]
    fn serves(self, member: &EndpointMember) -> bool {
        ENDPOINT_SET.get_ptr(member).is_some()
    }

    #[inline(always)]
    fn drain_until(self, member: &EndpointMember) -> Option<u64> {
        // SAFETY: read-only access to a map value.
        unsafe { DRAINING.get(member) }.copied()
    }

    #[inline(always)]
    fn connection(self, flow: &FlowKey) -> Option<ServiceConnection> {
        // SAFETY: read-only access to a map value.
        unsafe { CT_FORWARD.get(flow) }.copied()
    }

    #[inline(always)]
    fn reply(self, flow: &FlowKey) -> Option<ServiceReply> {
        // SAFETY: read-only access to a map value.
        unsafe { CT_REVERSE.get(flow) }.copied()
    }

    #[inline(always)]
    fn refresh_connection(self, flow: &FlowKey, closing: bool) {
        if TRACE {
            return;
        }
        if let Some(c) = CT_FORWARD.get_ptr_mut(flow) {
            // SAFETY: a map value of this map's type; a racing CPU writes the same.
            unsafe {
                (*c).last_seen = self.now_ns();
                if closing {
                    (*c).flags |= CLOSING;
                }
            }
        }
    }

    #[inline(always)]
    fn refresh_reply(self, flow: &FlowKey, closing: bool) {
        if TRACE {
            return;
        }
        if let Some(r) = CT_REVERSE.get_ptr_mut(flow) {
            // SAFETY: a map value of this map's type; a racing CPU writes the same.
            unsafe {
                (*r).last_seen = self.now_ns();
                if closing {
                    (*r).flags |= CLOSING;
                }
            }
        }
    }

    #[inline(always)]
    fn insert_connection(self, flow: &FlowKey, connection: &ServiceConnection) -> bool {
        // A trace commits nothing.
        TRACE || CT_FORWARD.insert(flow, connection, 0).is_ok()
    }

    #[inline(always)]
    fn insert_reply(self, flow: &FlowKey, reply: &ServiceReply) -> bool {
        TRACE || CT_REVERSE.insert(flow, reply, 0).is_ok()
    }

    #[inline(always)]
    fn remove_reply(self, flow: &FlowKey) {
        if !TRACE {
            let _ = CT_REVERSE.remove(flow);
        }
    }

    #[inline(always)]
    fn share(self, owner: u32) -> u32 {
        CT_SHARES.get(owner).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn take_share(self, owner: u32) {
        if TRACE {
            return;
        }
        if let Some(share) = CT_SHARES.get_ptr_mut(owner) {
            // SAFETY: an aligned u32 of the map's memory; the agent counts it down
            // atomically too. The old value is not used: BPF's atomic add without fetch.
            unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(share, 1) };
        }
    }

    #[inline(always)]
    fn fragment_ports(self, key: &FragmentKey) -> Option<FragmentPorts> {
        // SAFETY: read-only access to a map value.
        unsafe { FRAGMENTS.get(key) }.copied()
    }

    #[inline(always)]
    fn record_fragment(self, key: &FragmentKey, ports: &FragmentPorts) {
        if !TRACE {
            let _ = FRAGMENTS.insert(key, ports, 0);
        }
    }

    #[inline(always)]
    fn pod_identity(self, slot: u32) -> u32 {
        POD_IDENTITIES.get(slot).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn ip_identity(self, ip: u32) -> u32 {
        // SAFETY: read-only access to a map value.
        unsafe { IP_IDENTITIES.get(&ip) }.copied().unwrap_or(0)
    }

    #[inline(always)]
    fn identity_policy(self, identity: u32) -> Option<IdentityPolicy> {
        IDENTITIES.get(identity).copied()
    }

    #[inline(always)]
    fn policy_peers(self, key: &PolicyKey) -> Option<&'static PortSet> {
        // SAFETY: read-only access to a map value, which only userspace changes.
        unsafe { POLICY_PEERS.get(key) }
    }

    #[inline(always)]
    fn policy_cidrs(self, subject: u32, direction: u32, ip: u32) -> Option<&'static PortSet> {
        let key = Key::new(CIDR_KEY_FIXED_BITS + 32, PolicyCidr { subject, direction, ip });
        POLICY_CIDRS.get(&key)
    }

    #[inline(always)]
    fn egress_verdict(self, vnid: u32, dst: u32) -> Option<EgressVerdict> {
        let key = Key::new(EGRESS_KEY_FIXED_BITS + 32, EgressCidr { vnid, ip: dst });
        EGRESS_CIDRS.get(&key).copied()
    }

    #[inline(always)]
    fn egress_ips(self, vnid: u32) -> Option<&'static EgressIpEntry> {
        // SAFETY: read-only access to a map value, which only userspace changes.
        unsafe { EGRESS_IPS.get(&vnid) }
    }

    #[inline(always)]
    fn multicast_group(self, vnid: u32) -> bool {
        // SAFETY: read-only access to a map value.
        unsafe { MCAST_GROUPS.get(&vnid) }.is_some()
    }

    #[inline(always)]
    fn policy_generation(self) -> u32 {
        POLICY_GENERATION.get(0).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn policy_connection(self, key: &FlowKey, closing: bool) -> Option<&'static PolicyConnection> {
        let c = POLICY_CT.get_ptr_mut(key)?;
        // SAFETY: a map value of this map's type, valid while the program runs; a racing
        // CPU writes the same.
        unsafe {
            if !TRACE {
                // Coarse: idle timeouts are seconds, and it costs a fraction.
                (*c).last_seen = bpf_ktime_get_coarse_ns();
                if closing {
                    (*c).flags |= CLOSING;
                }
            }
            Some(&*c)
        }
    }

    #[inline(always)]
    fn update_policy_connection(
        self,
        key: &FlowKey,
        flags: u32,
        generation: u32,
        egress_count: u32,
        ingress_count: u32,
    ) {
        if TRACE {
            return;
        }
        if let Some(c) = POLICY_CT.get_ptr_mut(key) {
            // SAFETY: as in `policy_connection`.
            unsafe {
                (*c).flags |= flags;
                (*c).generation = generation;
                (*c).egress_count = egress_count;
                (*c).ingress_count = ingress_count;
            }
        }
    }

    #[inline(always)]
    fn track_policy_connection(self, key: &FlowKey, connection: &PolicyConnection) -> bool {
        if TRACE {
            return true;
        }
        // BPF_NOEXIST: a connection another CPU tracked a moment ago keeps its one share.
        if POLICY_CT.insert(key, connection, BPF_NOEXIST).is_err() {
            return POLICY_CT.get_ptr(key).is_some();
        }
        self.take_share(connection.owner);
        true
    }

    #[inline(always)]
    fn pod_bandwidth(self, slot: u32) -> Option<PodBandwidth> {
        BANDWIDTH.get(slot).copied()
    }

    #[inline(always)]
    fn last_departure(self, slot: u32, direction: u32) -> u64 {
        PACING.get(slot).map_or(0, |p| if direction == INGRESS { p.ingress_last } else { p.egress_last })
    }

    #[inline(always)]
    fn set_last_departure(self, slot: u32, direction: u32, at: u64) {
        if TRACE {
            return;
        }
        if let Some(p) = PACING.get_ptr_mut(slot) {
            // SAFETY: a map value of this map's type; CPUs racing on one pod's time
            // each write a whole, valid time (Cilium's WRITE_ONCE).
            unsafe {
                if direction == INGRESS {
                    core::ptr::write_volatile(&mut (*p).ingress_last, at);
                } else {
                    core::ptr::write_volatile(&mut (*p).egress_last, at);
                }
            }
        }
    }

    #[inline(always)]
    fn now_ns(self) -> u64 {
        // SAFETY: plain helper call.
        unsafe { bpf_ktime_get_ns() }
    }

    #[inline(always)]
    fn random(self) -> u32 {
        // SAFETY: plain helper call.
        unsafe { bpf_get_prandom_u32() }
    }

    #[inline(always)]
    fn count(self, rule: u32, len: u32) {
        if TRACE {
            return trace_mode::hop(hop_kind::NODE_WIDE, rule, 0);
        }
        bump(RULE_STATS.get_ptr_mut(rule), len);
    }

    #[inline(always)]
    fn count_pod(self, slot: u32, ip: u32, rule: u32, len: u32) {
        if TRACE {
            return trace_mode::hop(hop_kind::POD, rule, ip);
        }
        bump(POD_STATS.get_ptr_mut(stats::pod_index(slot, rule)), len);
    }

    #[inline(always)]
    fn count_remote_node(self, slot: u32, rule: u32, len: u32) {
        if TRACE {
            return trace_mode::hop(hop_kind::REMOTE_NODE, rule, slot);
        }
        bump(NODE_STATS.get_ptr_mut(stats::node_index(slot, rule)), len);
    }

    #[inline(always)]
    fn count_service(self, slot: u32, rule: u32, len: u32) {
        if TRACE {
            return trace_mode::hop(hop_kind::SERVICE, rule, slot);
        }
        bump(SERVICE_STATS.get_ptr_mut(slot), len);
    }

    #[inline(always)]
    fn count_policy(self, slot: u32, rule: u32, matched: u32, len: u32) {
        if TRACE {
            return trace_mode::hop(hop_kind::POLICY, rule, (slot & 0xffff) | (matched << 16));
        }
        bump(POLICY_STATS.get_ptr_mut(stats::policy_index(slot, rule)), len);
    }

    #[inline(always)]
    fn count_egress(self, slot: u32, rule: u32, len: u32) {
        if TRACE {
            return trace_mode::hop(hop_kind::EGRESS, rule, slot);
        }
        bump(EGRESS_STATS.get_ptr_mut(slot), len);
    }

    #[inline(always)]
    fn count_drop(self, source: u32) {
        if TRACE {
            return;
        }
        if let Some(count) = SOURCE_DROPS.get_ptr_mut(source) {
            // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
            unsafe { *count += 1 };
        }
    }

    #[inline(always)]
    fn register(self, which: u32, value: u32) {
        if TRACE {
            trace_mode::register(which, value);
        }
    }
}
