//! Table 61 (oxsdn's own: what kube-proxy did behind tun0 in OpenShift): a service
//! connection gets an endpoint, tracked in `CT_FORWARD` (the client's direction) and
//! `CT_REVERSE` (the endpoint's replies, which table 30 translates back), and its
//! packets are translated to it. A tracked connection keeps its endpoint while the
//! endpoint serves the service (TCP also while it drains); a new one gets a random
//! endpoint among those serving.

use oxsdn_common::{EndpointKey, EndpointMember, FlowKey, ServiceConnection, ServiceKey, ServicePort, ServiceReply};

use crate::{
    fragments,
    frame::{Ipv4, IPPROTO_TCP},
    t80_isolation, Env, Output, Packet, Translation,
};

crate::rules! {
    table 61;
    node ESTABLISHED = 42, priority 200, "ct_state=+est" => "ct(nat),output:endpoint";
    node DRAINING = 46, priority 150, "tcp,ct_state=+est,endpoint=draining" => "ct(nat),output:endpoint";
    node NEW = 43, priority 100, "ct_state=+new" => "ct(commit,nat(dst=random_endpoint)),output:endpoint";
    node UNKNOWN_FRAGMENT = 44, priority 50, "ip,nw_frag=later" => "drop";
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
    let conn = match tracked(p, ip, &flow, port.service) {
        Some((conn, rule)) => {
            p.count(rule);
            conn
        }
        None => {
            let Some(conn) = connect(p, ip, &flow, &port) else {
                return p.drop_by(NO_ENDPOINT);
            };
            p.count(NEW);
            conn
        }
    };
    let src = if conn.hairpin != 0 { p.cfg.gateway } else { ip.src };
    p.xlate = Translation { active: 1, src, sport, dst: conn.endpoint_ip, dport: conn.endpoint_port };
    deliver_translated(p, conn.endpoint_ip, false)
}

/// The connection's endpoint if it is tracked and the endpoint still takes it, with the
/// rule that says why.
#[inline(always)]
fn tracked<E: Env>(p: &Packet<E>, ip: &Ipv4, flow: &FlowKey, service: u32) -> Option<(ServiceConnection, u32)> {
    let conn = p.env.connection(flow).filter(|c| c.service == service)?;
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

/// A new connection: a random endpoint of those serving, recorded both ways.
#[inline(always)]
fn connect<E: Env>(p: &Packet<E>, ip: &Ipv4, flow: &FlowKey, port: &ServicePort) -> Option<ServiceConnection> {
    if port.endpoints == 0 {
        return None;
    }
    let index = p.env.random() % port.endpoints;
    let endpoint_ip = p.env.endpoint(&EndpointKey { service: port.service, index })?;
    let hairpin = endpoint_ip == ip.src;
    let conn =
        ServiceConnection { service: port.service, endpoint_ip, endpoint_port: port.target_port, hairpin: hairpin as u16 };
    // A client reaching itself through its service must not see its own address as the
    // source: the gateway stands in for it, as OpenShift's masquerade did.
    let peer = if hairpin { p.cfg.gateway } else { ip.src };
    let reverse =
        FlowKey { src: endpoint_ip, dst: peer, sport: port.target_port, dport: flow.sport, proto: ip.proto, _pad: [0; 3] };
    let reply = ServiceReply { service_ip: flow.dst, client_ip: ip.src, service_port: flow.dport, client_port: flow.sport };
    p.env.track(flow, &conn, &reverse, &reply).then_some(conn)
}

/// Sends a translated packet (`reply`: back to a service's client) to `dst`: a pod here,
/// a pod over the tunnel, or the node's host stack. Table 80's policy is asked again,
/// with the client's identity.
#[inline(always)]
pub fn deliver_translated<E: Env>(p: &mut Packet<E>, dst: u32, reply: bool) -> Output {
    // The gateway: a host process was the client. Outside the cluster network: a client
    // whose router sent it to the node (spec §5 case 22), the host's to reach; endpoints
    // are never there (the controller refuses them).
    if dst == p.cfg.gateway || (reply && !p.in_cluster(dst)) {
        return Output::Tun0;
    }
    if !t80_isolation::after_translation(p) {
        return Output::Drop;
    }
    if let Some(pod) = p.local_pod(dst) {
        return Output::Pod { ifindex: pod.ifindex, ip: dst };
    }
    if !p.in_local_subnet(dst) {
        if let Some(node) = p.env.remote_subnet(dst) {
            return Output::Tunnel { node_ip: node.node_ip, vni: t80_isolation::translated_vni(p) };
        }
    }
    p.drop_by(NO_ENDPOINT)
}
