//! ClusterIP services. Table 60 is Profile A's service isolation (reg1 = the service
//! project's VNID, then table 80); table 61 does what kube-proxy did behind tun0 in
//! OpenShift: it picks an endpoint per connection (sticky, tracked in `CT_FORWARD`) and
//! translates the destination; table 30's reply rule puts the service's address back on
//! the endpoint's answers (`CT_REVERSE`). Service traffic that passed table 80 is
//! delivered as OpenShift's masqueraded traffic was: local endpoints directly, remote
//! ones over the tunnel with VNI 0.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use oxsdn_common::{
    rules::*, BackendKey, BackendMember, FlowKey, FragmentKey, FragmentPorts, NodeConfig, ServiceConnection,
    ServiceKey, ServicePort, ServiceReply,
};

use crate::{
    maps::{BACKENDS, BACKEND_SET, CT_FORWARD, CT_REVERSE, DRAINING, FRAGMENTS, PODS, SERVICES, SERVICE_IPS},
    packet::{Frame, Ipv4, IPPROTO_TCP},
    pipeline::{drop, in_cluster, remote_node, table80_isolation, vnid_of, Output, Rewrite},
    stats::{count, count_service},
};

/// The L4 ports of `ip`, also for fragments: the first fragment's ports are recorded,
/// later fragments take them from there. `None`: a later fragment whose first fragment
/// was not seen.
#[inline(always)]
fn ports<const T: bool>(frame: &Frame<T>, ip: &Ipv4) -> Option<(u16, u16)> {
    let key = FragmentKey { src: ip.src, dst: ip.dst, id: ip.id, proto: ip.proto, _pad: 0 };
    if ip.later_fragment {
        // SAFETY: read-only access to a map value.
        return unsafe { FRAGMENTS.get(&key) }.map(|p| (p.sport, p.dport));
    }
    if ip.more_fragments && !frame.tracing() {
        let _ = FRAGMENTS.insert(&key, &FragmentPorts { sport: ip.sport, dport: ip.dport }, 0);
    }
    Some((ip.sport, ip.dport))
}

/// Table 30, priority 400: a packet of an endpoint answering a client of this node gets
/// the service's address back and goes to the client (table 80 was passed when the
/// connection was made).
#[inline(always)]
pub fn table30_service_reply<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, ip: &Ipv4, nat: &mut Rewrite) -> Option<Output> {
    let (sport, dport) = ports(frame, ip)?;
    let key = FlowKey { src: ip.src, dst: ip.dst, sport, dport, proto: ip.proto, _pad: [0; 3] };
    // SAFETY: read-only access to a map value.
    let reply = unsafe { CT_REVERSE.get(&key) }.copied()?;
    count(T30_SERVICE_REPLY, frame);
    *nat = Rewrite { active: 1, src: reply.service_ip, sport: reply.service_port, dst: reply.client_ip, dport: reply.client_port };
    Some(deliver(cfg, frame, reply.client_ip, true))
}

/// Table 60: service isolation. Global sources reach every service; others only the
/// declared ports (fragments after the first: the ClusterIP alone) of services whose
/// project they may talk to.
#[inline(always)]
pub fn table60_to_service<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, ip: &Ipv4, reg0: u32, nat: &mut Rewrite) -> Output {
    if reg0 == 0 {
        count(T60_SRC_GLOBAL, frame);
        return table61_load_balance(cfg, frame, ip, None, nat);
    }
    // The declared port found here is table 61's too (a later fragment's port is not
    // in its header: table 61 finds it by the recorded ports).
    let mut port = None;
    let project = if ip.later_fragment {
        // SAFETY: read-only access to a map value.
        unsafe { SERVICE_IPS.get(&ip.dst) }.map(|s| (s.project, s.slot))
    } else {
        let key = ServiceKey { ip: ip.dst, port: ip.dport, proto: ip.proto, _pad: 0 };
        // SAFETY: read-only access to a map value.
        port = unsafe { SERVICES.get(&key) }.copied();
        port.map(|s| (s.project, s.slot))
    };
    let Some((project, slot)) = project else {
        return drop(T60_NO_SERVICE, frame);
    };
    let Some(reg1) = vnid_of(project) else {
        return drop(T60_NO_SERVICE, frame);
    };
    count_service(slot, frame);
    if !table80_isolation(cfg, frame, ip, reg0, reg1) {
        return Output::Drop;
    }
    table61_load_balance(cfg, frame, ip, port, nat)
}

/// Whether a tracked connection to an endpoint that left its service keeps it: TCP
/// connections do until the endpoint's drain window ends (as kube-proxy's conntrack
/// entries keep a terminating pod's established connections); other protocols choose
/// again at once (as kube-proxy flushes UDP entries of removed endpoints).
#[inline(always)]
fn drains(ip: &Ipv4, member: &BackendMember) -> bool {
    if ip.proto != IPPROTO_TCP {
        return false;
    }
    // SAFETY: read-only access to a map value; plain helper call.
    unsafe { DRAINING.get(member) }.is_some_and(|until| unsafe { bpf_ktime_get_ns() } < *until)
}

/// Table 61 (kube-proxy's part, in the dataplane): a tracked connection keeps its
/// endpoint while the endpoint serves the service (or, for TCP, drains); a new one gets
/// a random endpoint among those serving. `found`: the declared port, if table 60
/// looked it up.
#[inline(always)]
fn table61_load_balance<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, ip: &Ipv4, found: Option<ServicePort>, nat: &mut Rewrite) -> Output {
    let Some((sport, dport)) = ports(frame, ip) else {
        return drop(T61_UNKNOWN_FRAGMENT, frame);
    };
    let svc = &ServiceKey { ip: ip.dst, port: dport, proto: ip.proto, _pad: 0 };
    // SAFETY: read-only access to a map value.
    let Some(port) = found.or_else(|| unsafe { SERVICES.get(svc) }.copied()) else {
        return drop(T61_NO_ENDPOINT, frame);
    };
    let flow = FlowKey { src: ip.src, dst: ip.dst, sport, dport: svc.port, proto: ip.proto, _pad: [0; 3] };
    // SAFETY: read-only access to a map value.
    let tracked = unsafe { CT_FORWARD.get(&flow) }.copied().filter(|c| c.service == port.service).and_then(|c| {
        let member = BackendMember { service: c.service, ip: c.backend_ip };
        if BACKEND_SET.get_ptr(&member).is_some() {
            Some((c, T61_ESTABLISHED))
        } else if drains(ip, &member) {
            Some((c, T61_DRAINING))
        } else {
            None
        }
    });
    let conn = match tracked {
        Some((c, rule)) => {
            count(rule, frame);
            c
        }
        None => {
            if port.backends == 0 {
                return drop(T61_NO_ENDPOINT, frame);
            }
            // SAFETY: plain helper call.
            let index = unsafe { bpf_get_prandom_u32() } % port.backends;
            // SAFETY: read-only access to a map value.
            let Some(backend_ip) = (unsafe { BACKENDS.get(&BackendKey { service: port.service, index }) }).copied() else {
                return drop(T61_NO_ENDPOINT, frame);
            };
            let hairpin = backend_ip == ip.src;
            let conn = ServiceConnection { service: port.service, backend_ip, backend_port: port.target_port, hairpin: hairpin as u16 };
            // A client reaching itself through its service must not see its own address
            // as the source: the gateway stands in for it, as OpenShift's masquerade did.
            let peer = if hairpin { cfg.gateway } else { ip.src };
            let reverse = FlowKey { src: backend_ip, dst: peer, sport: port.target_port, dport: sport, proto: ip.proto, _pad: [0; 3] };
            let reply = ServiceReply { service_ip: svc.ip, client_ip: ip.src, service_port: svc.port, client_port: sport };
            // A trace commits nothing.
            let committed = frame.tracing()
                || (CT_REVERSE.insert(&reverse, &reply, 0).is_ok() && CT_FORWARD.insert(&flow, &conn, 0).is_ok());
            if !committed {
                return drop(T61_NO_ENDPOINT, frame);
            }
            count(T61_NEW, frame);
            conn
        }
    };
    let src = if conn.hairpin != 0 { cfg.gateway } else { ip.src };
    *nat = Rewrite { active: 1, src, sport, dst: conn.backend_ip, dport: conn.backend_port };
    deliver(cfg, frame, conn.backend_ip, false)
}

/// Sends a translated packet (`reply`: back to a service's client) to `dst`: a pod here,
/// a pod over the tunnel as global (VNI 0) traffic, or the node's host stack.
#[inline(always)]
fn deliver<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, dst: u32, reply: bool) -> Output {
    // The gateway: a host process was the client. Outside the cluster network: a
    // client whose router sent it to the node (spec §5 case 22), the host's to reach;
    // endpoints are never there (the controller refuses them).
    if dst == cfg.gateway || (reply && !in_cluster(cfg, dst)) {
        return Output::Tun0;
    }
    // SAFETY: read-only access to a map value.
    if let Some(pod) = unsafe { PODS.get(&dst) } {
        return Output::Pod { ifindex: pod.ifindex, ip: dst };
    }
    if dst & cfg.local_mask != cfg.local_net {
        if let Some(node) = remote_node(dst) {
            return Output::Tunnel { node_ip: node.node_ip, vni: 0 };
        }
    }
    drop(T61_NO_ENDPOINT, frame)
}
