//! Table 61 (oxsdn's own: what kube-proxy did behind tun0 in OpenShift): a service
//! connection gets an endpoint, tracked in `CT_FORWARD` (the client's direction) and
//! `CT_REVERSE` (the endpoint's replies, which table 30 translates back), and its
//! packets are translated to it. A tracked connection keeps its endpoint while the
//! endpoint serves the service (TCP also while it drains); a new one gets a random
//! endpoint among those serving.

use oxsdn_common::{
    conntrack::CLOSING, EndpointKey, EndpointMember, FlowKey, ServiceConnection, ServiceKey, ServicePort, ServiceReply,
};

use crate::{
    fragments,
    frame::{Ipv4, IPPROTO_TCP},
    t254_output, t80_isolation, Env, Output, Packet, Translation,
};

crate::rules! {
    table 61;
    node ESTABLISHED = 42, priority 200, "ct_state=+est" => "ct(nat),output:endpoint";
    node DRAINING = 46, priority 150, "tcp,ct_state=+est,endpoint=draining" => "ct(nat),output:endpoint";
    node NEW = 43, priority 100, "ct_state=+new" => "ct(commit,nat(dst=random_endpoint)),output:endpoint";
    /// The sender's share of the tracking tables is used up (like a conntrack zone limit).
    node OVER_QUOTA = 55, priority 100, "ct_state=+new,ct_zone_limit=reached" => "drop";
    /// The tracking tables are full.
    node TABLE_FULL = 56, priority 100, "ct_state=+new,ct_table=full" => "drop";
    /// A later fragment whose first fragment's ports are unknown (as OVS's tracker
    /// marks a fragment it cannot place).
    node UNKNOWN_FRAGMENT = 44, priority 50, "ip,nw_frag=later,ct_state=+inv" => "drop";
    node NO_ENDPOINT = 45, priority 0, "" => "drop";
}

/// `found`: the declared port, if table 60 looked it up.
#[inline(always)]
pub fn table61<E: Env>(p: &mut Packet<E>, ip: &Ipv4, found: Option<ServicePort>) -> Output {
    let Some((sport, dport)) = fragments::ports(p, ip) else {
        return p.drop_by(UNKNOWN_FRAGMENT);
    };
    let svc = ServiceKey { ip: ip.dst, port: dport, proto: ip.proto, _pad: 0 };
    let Some(port) = found.or_else(|| p.env.service_port(&svc)) else {
        return p.drop_by(NO_ENDPOINT);
    };
    let flow = FlowKey { src: ip.src, dst: ip.dst, sport, dport: svc.port, proto: ip.proto, _pad: [0; 3] };
    let existing = p.env.connection(&flow);
    let conn = match existing.and_then(|c| keeps(p, ip, c, port.service)) {
        Some((conn, rule)) => {
            p.env.refresh_connection(&flow, ip.closes());
            p.count(rule);
            conn
        }
        None => match connect(p, ip, &flow, &port, existing) {
            Ok(conn) => {
                p.count(NEW);
                conn
            }
            Err(rule) => return p.drop_by(rule),
        },
    };
    let src = if conn.hairpin != 0 { p.cfg.gateway } else { ip.src };
    p.xlate = Translation { active: 1, src, sport, dst: conn.endpoint_ip, dport: conn.endpoint_port };
    deliver_translated(p, conn.endpoint_ip, false)
}

/// A tracked connection if its endpoint still takes it, with the rule that says why.
#[inline(always)]
fn keeps<E: Env>(p: &Packet<E>, ip: &Ipv4, conn: ServiceConnection, service: u32) -> Option<(ServiceConnection, u32)> {
    if conn.service != service {
        return None;
    }
    let member = EndpointMember { service, ip: conn.endpoint_ip };
    if p.env.serves(&member) {
        Some((conn, ESTABLISHED))
    } else if drains(p, ip, &member) {
        Some((conn, DRAINING))
    } else {
        None
    }
}

/// Whether a tracked connection to an endpoint that left its service keeps it: TCP
/// connections do until the endpoint's drain window ends (as kube-proxy's conntrack
/// entries keep a terminating pod's established connections); other protocols choose
/// again at once (as kube-proxy flushes UDP entries of removed endpoints).
#[inline(always)]
fn drains<E: Env>(p: &Packet<E>, ip: &Ipv4, member: &EndpointMember) -> bool {
    ip.proto == IPPROTO_TCP && p.env.drain_until(member).is_some_and(|until| p.env.now_ns() < until)
}

/// A new connection: a random endpoint of those serving, recorded both ways in its
/// owner's share; or the rule that refuses it. `replaced`: the tracked connection of the
/// same flow whose endpoint no longer takes it (its share is reused, its reply half
/// goes).
#[inline(always)]
fn connect<E: Env>(
    p: &Packet<E>,
    ip: &Ipv4,
    flow: &FlowKey,
    port: &ServicePort,
    replaced: Option<ServiceConnection>,
) -> Result<ServiceConnection, u32> {
    if port.endpoints == 0 {
        return Err(NO_ENDPOINT);
    }
    if replaced.is_none() && p.cfg.ct_quota != 0 && p.env.share(p.owner) >= p.cfg.ct_quota {
        return Err(OVER_QUOTA);
    }
    let index = p.env.random() % port.endpoints;
    let Some(endpoint_ip) = p.env.endpoint(&EndpointKey { service: port.service, index }) else {
        return Err(NO_ENDPOINT);
    };
    let now = p.env.now_ns();
    let conn = ServiceConnection {
        last_seen: now,
        service: port.service,
        endpoint_ip,
        endpoint_port: port.target_port,
        hairpin: (endpoint_ip == ip.src) as u16,
        owner: replaced.map_or(p.owner, |old| old.owner),
        flags: if ip.closes() { CLOSING } else { 0 },
        _pad: 0,
    };
    let reply = ServiceReply {
        last_seen: now,
        service_ip: flow.dst,
        client_ip: ip.src,
        service_port: flow.dport,
        client_port: flow.sport,
        flags: 0,
    };
    if let Some(old) = replaced {
        p.env.remove_reply(&reply_key(flow, &old, p.cfg.gateway));
    }
    // Both halves or neither: the reply half first, so the endpoint's first answer finds
    // it.
    let reverse = reply_key(flow, &conn, p.cfg.gateway);
    if !p.env.insert_reply(&reverse, &reply) {
        return Err(TABLE_FULL);
    }
    if !p.env.insert_connection(flow, &conn) {
        p.env.remove_reply(&reverse);
        return Err(TABLE_FULL);
    }
    if replaced.is_none() {
        p.env.take_share(p.owner);
    }
    Ok(conn)
}

/// The key of a connection's reply half: the endpoint's packets to the client as the
/// endpoint sees it. A client reaching itself through its service must not see its own
/// address as the source: the gateway stands in for it, as OpenShift's masquerade did.
#[inline(always)]
pub fn reply_key(flow: &FlowKey, conn: &ServiceConnection, gateway: u32) -> FlowKey {
    let peer = if conn.hairpin != 0 { gateway } else { flow.src };
    FlowKey {
        src: conn.endpoint_ip,
        dst: peer,
        sport: conn.endpoint_port,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

/// Sends a translated packet (`reply`: back to a service's client) to `dst`: a pod here,
/// a pod over the tunnel, or the node's host stack. (Networkpolicy mode judges the
/// translated packet at the output, with the client's address.) A `dst` with no way
/// there fails at the output (table 254): the rule that chose it was counted already.
#[inline(always)]
pub fn deliver_translated<E: Env>(p: &mut Packet<E>, dst: u32, reply: bool) -> Output {
    // The gateway: a host process was the client. Outside the cluster network: a client
    // whose router sent it to the node (spec §5 case 22), the host's to reach; endpoints
    // are never there (the controller refuses them).
    if dst == p.cfg.gateway || (reply && !p.in_cluster(dst)) {
        return Output::Tun0;
    }
    if let Some(pod) = p.local_pod(dst) {
        return Output::Pod { ifindex: pod.ifindex, ip: dst };
    }
    if !p.in_local_subnet(dst) {
        if let Some(node) = p.env.remote_subnet(dst) {
            return Output::Tunnel { node_ip: node.node_ip, vni: t80_isolation::translated_vni(p) };
        }
    }
    p.drop_by(t254_output::NOT_SENT)
}
