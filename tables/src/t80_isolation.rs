//! Table 80: the network plugin's policy, where a packet for a local pod is delivered
//! (to `reg2`) or dropped. `NodeConfig.mode` says which plugin decides; this is the
//! one place a mode plugs in (OpenShift's `osdnPolicy`):
//! - `ovs-multitenant`: deliver iff the source is the gateway, either VNID is 0
//!   (global), or both VNIDs are equal;
//! - `ovs-subnet`: everything is delivered (every pod's reg0 is 0 too, table 20, so
//!   its packets cross the tunnel with VNI 0);
//! - `ovs-networkpolicy`: NetworkPolicies (`oxsdn_common::policy`): a pod no policy
//!   selects for a direction is open in that direction; a selected one exchanges only
//!   what some rule of a selecting policy allows, plus the replies of connections it was
//!   allowed to open or accept (and ICMP errors about them). The node always reaches its
//!   pods. This mode judges a packet once its output is known (`at_output`, called by
//!   the entry programs): the sending pod's egress policy wherever its packet goes, the
//!   receiving local pod's ingress policy, after a service's translation (so with the
//!   client's address and the endpoint's port). One place, called once per program: in
//!   each table that routes it made the programs too large for the verifier.
//!
//! `translated_vni` is the VNI a service's translated traffic carries to an endpoint on
//! another node.

use oxsdn_common::{
    mode,
    policy::{
        connection_key, PolicyConnection, PolicyKey, PortRange, PortSet, ANY_PROTO, BOTH_WAYS, EGRESS, INGRESS,
        MAX_COUNTED_RULE, NO_COUNT, OPENED_FROM_DST, POLICY_COUNT,
    },
    trace::REG1_SET,
    FlowKey,
};

use crate::{
    fragments,
    frame::{Ipv4, Tuple, L3},
    Env, Packet,
};

crate::rules! {
    table 80;
    node FROM_GW = 23, priority 300, "ip,nw_src={GW}" => "output:NXM_NX_REG2[]";
    node SRC_GLOBAL = 24, priority 200, "mode=multitenant,reg0=0" => "output:NXM_NX_REG2[]";
    node DST_GLOBAL = 25, priority 200, "mode=multitenant,reg1=0" => "output:NXM_NX_REG2[]";
    node SAME_VNID = 26, priority 100, "reg0=reg1" => "output:NXM_NX_REG2[]";
    node ISOLATED = 27, priority 0, "" => "drop";
    /// networkpolicy: a reply (or an ICMP error) of a connection policies let through.
    node POLICY_REPLY = 57, priority 250, "ip,ct_state=+est+rpl,policy" => "output:NXM_NX_REG2[]";
    /// networkpolicy: no policy selects the source for egress.
    node EGRESS_OPEN = 58, priority 200, "ip,policy=egress,isolated=no" => "resubmit";
    /// networkpolicy: a pod always reaches its own node (Kubernetes' rule), by the
    /// gateway or the node's address.
    node TO_GW = 63, priority 200, "ip,policy=egress,nw_dst={GW}" => "resubmit";
    node TO_NODE_IP = 64, priority 200, "ip,policy=egress,nw_dst={NODEIP}" => "resubmit";
    /// ovs-subnet: everything is delivered (OpenShift's single table-80 rule).
    node SUBNET = 65, priority 400, "mode=subnet" => "output:NXM_NX_REG2[]";
    /// networkpolicy: no policy selects the destination for ingress.
    node INGRESS_OPEN = 59, priority 200, "ip,policy=ingress,isolated=no" => "output:NXM_NX_REG2[]";
    /// networkpolicy: the destination pod has no identity yet (its labels are not in
    /// place): nothing reaches it.
    node NO_IDENTITY = 60, priority 150, "ip,policy=ingress,identity=none" => "drop";
    /// networkpolicy: the connection tables have no room to let its replies through.
    node TRACKING_FULL = 61, priority 150, "ip,ct_state=+new,policy,ct_table=full" => "drop";
    policy ALLOW_INGRESS = 0, priority 110, "ip,policy=ingress,policy_name={POLICY}" => "ct(commit),output:NXM_NX_REG2[]";
    policy ALLOW_EGRESS = 1, priority 110, "ip,policy=egress,policy_name={POLICY}" => "ct(commit),resubmit";
    policy DENY_INGRESS = 2, priority 100, "ip,policy=ingress,isolated_by={POLICY}" => "drop";
    policy DENY_EGRESS = 3, priority 100, "ip,policy=egress,isolated_by={POLICY}" => "drop";
}

/// Whether a packet from reg0 may reach a local pod with VNID `reg1`.
#[inline(always)]
pub fn table80<E: Env>(p: &mut Packet<E>, ip: &Ipv4, reg1: u32) -> bool {
    p.env.register(REG1_SET, reg1);
    p.reg1 = reg1;
    match p.cfg.mode {
        // Judged at the output (`at_output`).
        mode::NETWORKPOLICY => true,
        // Whatever the VNI a packet came with over the tunnel.
        mode::SUBNET => {
            p.count(SUBNET);
            true
        }
        // An unknown mode isolates like multitenant.
        _ => multitenant(p, ip, reg1),
    }
}

/// Multitenant mode's table 60: whether a packet from reg0 may use a service of a
/// project with VNID `reg1` (the same predicate as for pods).
#[inline(always)]
pub fn service_isolation<E: Env>(p: &mut Packet<E>, ip: &Ipv4, reg1: u32) -> bool {
    p.env.register(REG1_SET, reg1);
    multitenant(p, ip, reg1)
}

#[inline(always)]
fn multitenant<E: Env>(p: &mut Packet<E>, ip: &Ipv4, reg1: u32) -> bool {
    let rule = if ip.src == p.cfg.gateway {
        FROM_GW
    } else if p.reg0 == 0 {
        SRC_GLOBAL
    } else if reg1 == 0 {
        DST_GLOBAL
    } else if p.reg0 == reg1 {
        SAME_VNID
    } else {
        p.count(ISOLATED);
        return false;
    };
    p.count(rule);
    true
}

/// networkpolicy mode: whether the packet the tables sent to the local pod in `dst_slot`
/// (or, with `NOT_LOCAL`, elsewhere) may go there. Called by the entry programs once
/// the output is known, in every mode (it passes everything in the others); a service's
/// reply, translated back by table 30, passes (its connection was judged).
#[inline(always)]
pub fn at_output<E: Env>(p: &mut Packet<E>, dst_slot: u32) -> bool {
    if p.cfg.mode != mode::NETWORKPOLICY || p.service_reply {
        return true;
    }
    networkpolicy(p, dst_slot)
}

/// The VNI a translated packet carries to an endpoint on another node: the client's in
/// networkpolicy mode (the endpoint's node judges it by the client), else global.
#[inline(always)]
pub fn translated_vni<E: Env>(p: &Packet<E>) -> u32 {
    if p.cfg.mode == mode::NETWORKPOLICY {
        p.reg0
    } else {
        0
    }
}

/// The packet's addresses, protocol and ports as it leaves (a service's translation
/// applied; a later fragment's ports from its first fragment); `None`: a later fragment
/// whose first was not seen, which no port rule can judge.
#[inline(always)]
fn tuple<E: Env>(p: &Packet<E>, ip: &Ipv4) -> Option<Tuple> {
    let x = &p.xlate;
    if x.active != 0 {
        return Some(Tuple { src: x.src, dst: x.dst, proto: ip.proto, sport: x.sport, dport: x.dport });
    }
    let (sport, dport) = if ip.later_fragment { fragments::ports(p, ip)? } else { ip.flow_ports() };
    Some(Tuple { src: ip.src, dst: ip.dst, proto: ip.proto, sport, dport })
}

fn flow(t: &Tuple) -> FlowKey {
    FlowKey { src: t.src, dst: t.dst, sport: t.sport, dport: t.dport, proto: t.proto, _pad: [0; 3] }
}

/// `at_output`'s `dst_slot` when the destination is not a local pod.
pub const NOT_LOCAL: u32 = u32::MAX;

/// networkpolicy mode: whether the packet may pass from its source (a local pod when
/// `p.src_identity` is set) to its destination (the local pod in `dst_slot`, or
/// `NOT_LOCAL`). A function of its own in the programs (a BPF-to-BPF call), so the
/// caller's stack stays small; its arguments are plain integers (an `Option`'s payload
/// is undefined when it is `None`, and the verifier refuses a register left unset).
///
/// A tracked connection's opening direction was judged once under the current policy
/// maps (`POLICY_GENERATION`): its packets pass with the same counts without a rule
/// lookup. One `POLICY_CT` lookup finds both that and whether the packet is a reply.
#[inline(never)]
fn networkpolicy<E: Env>(p: &mut Packet<E>, dst_slot: u32) -> bool {
    if p.frame.l3 != L3::Ipv4 {
        // ARP is never isolated.
        return true;
    }
    // Before any policy map: a verdict is recorded under the generation it began with.
    let generation = p.env.policy_generation();
    let frame = p.frame;
    let ip = &frame.ipv4;
    // A later fragment whose first was not seen has no ports: only a rule for every
    // protocol and port allows it (protocol 0 is in no port range), and it starts no
    // connection. Between pods no policy isolates, it passes.
    let t = tuple(p, ip).unwrap_or(Tuple { src: ip.src, dst: ip.dst, proto: 0, sport: 0, dport: 0 });
    let t = &t;
    let closing = ip.closes();
    let dst_slot = (dst_slot != NOT_LOCAL).then_some(dst_slot);
    // The node reaches its pods, whatever their policies (Kubernetes' rule). The pod's
    // egress policy judges the replies: the connection is tracked (if the tables have
    // room, else only its replies are lost).
    if t.src == p.cfg.gateway {
        p.count(FROM_GW);
        if let Some(slot) = dst_slot {
            let identity = p.env.pod_identity(slot);
            let isolated = identity != 0 && p.env.identity_policy(identity).is_some_and(|d| d.isolated & EGRESS != 0);
            if isolated {
                let _ = remember(p, t, closing, 0, NO_COUNT, NO_COUNT);
            }
        }
        return true;
    }
    // Only the isolation bits stay live (the stack is tight); a drop reads its slot.
    let src_isolated = isolation(p, p.src_identity);
    let dst_identity = match dst_slot {
        Some(slot) => p.env.pod_identity(slot),
        None => p.env.ip_identity(t.dst),
    };
    if dst_slot.is_some() && dst_identity == 0 {
        p.count(NO_IDENTITY);
        return false;
    }
    let dst_isolated = if dst_slot.is_some() { isolation(p, dst_identity) } else { 0 };
    let egress_isolated = src_isolated & EGRESS != 0;
    let ingress_isolated = dst_isolated & INGRESS != 0;
    // Its replies will be judged by an isolating policy: the connection is tracked.
    let replies_judged = src_isolated & INGRESS != 0 || dst_isolated & EGRESS != 0;
    // One lookup: the connection the packet belongs to, or an ICMP error is about.
    let icmp_error = p.frame.ipv4.is_icmp_error();
    let (key, opened) = connection_key(&if icmp_error {
        let e = p.frame.ipv4.embedded;
        FlowKey { src: e.src, dst: e.dst, sport: e.sport, dport: e.dport, proto: e.proto, _pad: [0; 3] }
    } else {
        flow(t)
    });
    let tracked = if key.proto != 0 && (egress_isolated || ingress_isolated || replies_judged) {
        p.env.policy_connection(&key, closing)
    } else {
        None
    };
    // A reply, or an ICMP error about a connection policies let through.
    let reply_of = if icmp_error { opened } else { opened ^ OPENED_FROM_DST };
    if (egress_isolated || ingress_isolated) && tracked.is_some_and(|c| c.opened(reply_of)) {
        p.count(POLICY_REPLY);
        return true;
    }
    if let Some(c) = tracked.filter(|_| !icmp_error) {
        if generation != 0 && c.generation == generation && c.flags & OPENED_FROM_DST == opened {
            count_side(p, c.egress_count, ALLOW_EGRESS);
            count_side(p, c.ingress_count, ALLOW_INGRESS);
            return true;
        }
    }
    let mut egress_count = NO_COUNT;
    if p.src_identity != 0 {
        egress_count = if t.dst == p.cfg.gateway {
            TO_GW
        } else if t.dst == p.cfg.node_ip {
            TO_NODE_IP
        } else if !egress_isolated {
            EGRESS_OPEN
        } else {
            match allows(p, p.src_identity, EGRESS, dst_identity, t.dst, t) {
                Some(count) => count,
                None => {
                    let slot = p.env.identity_policy(p.src_identity).map_or(0, |d| d.egress_slot);
                    p.count_policy_drop(slot, DENY_EGRESS);
                    return false;
                }
            }
        };
        count_side(p, egress_count, ALLOW_EGRESS);
    }
    let mut ingress_count = NO_COUNT;
    if dst_slot.is_some() {
        let src_identity = if p.src_identity != 0 { p.src_identity } else { p.env.ip_identity(t.src) };
        ingress_count = if !ingress_isolated {
            INGRESS_OPEN
        } else {
            match allows(p, dst_identity, INGRESS, src_identity, t.src, t) {
                Some(count) => count,
                None => {
                    let slot = p.env.identity_policy(dst_identity).map_or(0, |d| d.ingress_slot);
                    p.count_policy_drop(slot, DENY_INGRESS);
                    return false;
                }
            }
        };
        count_side(p, ingress_count, ALLOW_INGRESS);
    }
    if !replies_judged || t.proto == 0 {
        return true;
    }
    if !remember(p, t, closing, generation, egress_count, ingress_count) {
        p.count(TRACKING_FULL);
        return false;
    }
    true
}

/// The directions policies isolate `identity` in (`IdentityPolicy.isolated`; 0: none,
/// not a pod).
#[inline(always)]
fn isolation<E: Env>(p: &Packet<E>, identity: u32) -> u32 {
    if identity == 0 {
        return 0;
    }
    p.env.identity_policy(identity).map_or(0, |d| d.isolated)
}

/// Tracks the connection `t` opens, recording the opening packet's verdict
/// (`generation` and counts); whether it is tracked. (It looks the entry up again: the
/// judging's stack has no room to keep it.)
#[inline(always)]
fn remember<E: Env>(
    p: &Packet<E>,
    t: &Tuple,
    closing: bool,
    generation: u32,
    egress_count: u32,
    ingress_count: u32,
) -> bool {
    let (key, direction) = connection_key(&flow(t));
    let key = &key;
    let tracked = p.env.policy_connection(key, closing);
    let quota_used = p.cfg.ct_quota != 0 && p.env.share(p.owner) >= p.cfg.ct_quota;
    match tracked {
        // Judged again under other maps: recorded for the next packets.
        Some(c) if c.flags & OPENED_FROM_DST == direction => {
            if c.generation != generation {
                p.env.update_policy_connection(key, 0, generation, egress_count, ingress_count);
            }
            true
        }
        Some(c) if c.opened(direction) => true,
        // Opened from the other side too (both ends opened it at once), as a connection
        // of its own would be.
        Some(_) if quota_used => false,
        Some(c) => {
            p.env.update_policy_connection(key, BOTH_WAYS, c.generation, c.egress_count, c.ingress_count);
            true
        }
        None if quota_used => false,
        None => {
            let connection = PolicyConnection {
                last_seen: p.env.now_ns(),
                owner: p.owner,
                flags: direction,
                generation,
                egress_count,
                ingress_count,
                _pad: 0,
            };
            p.env.track_policy_connection(key, &connection)
        }
    }
}

/// Counts what allowed one side of a packet (`PolicyConnection.egress_count`'s form);
/// `allow`: the policy rule kind of that side.
#[inline(always)]
fn count_side<E: Env>(p: &Packet<E>, count: u32, allow: u32) {
    if count == NO_COUNT {
        return;
    }
    if count & POLICY_COUNT != 0 {
        p.env.count_policy(count & 0xffff, allow, (count >> 16) & MAX_COUNTED_RULE, p.frame.len);
    } else {
        p.count(count);
    }
}

/// Whether a rule of `subject`'s policies allows, in `direction`, the peer with
/// `peer_identity` (0: not a pod) and address `peer_ip`, for `t`'s protocol and
/// destination port: the allowing rule's count (`count_side`).
#[inline(always)]
fn allows<E: Env>(
    p: &Packet<E>,
    subject: u32,
    direction: u32,
    peer_identity: u32,
    peer_ip: u32,
    t: &Tuple,
) -> Option<u32> {
    let mut found = None;
    if peer_identity != 0 {
        if let Some(set) = p.env.policy_peers(&PolicyKey { subject, peer: peer_identity, direction }) {
            found = matching(set, t);
        }
    }
    if found.is_none() {
        if let Some(set) = p.env.policy_cidrs(subject, direction, peer_ip) {
            found = matching(set, t);
        }
    }
    let range = found?;
    Some(POLICY_COUNT | (range.rule.min(MAX_COUNTED_RULE) << 16) | u32::from(range.slot))
}

/// The first range of `set` that `t`'s protocol and destination port fall in.
#[inline(always)]
fn matching(set: &PortSet, t: &Tuple) -> Option<PortRange> {
    for range in set.ranges.iter() {
        if range.used == 0 {
            break;
        }
        if range.proto == ANY_PROTO || (range.proto == t.proto && range.start <= t.dport && t.dport <= range.end) {
            return Some(*range);
        }
    }
    None
}
