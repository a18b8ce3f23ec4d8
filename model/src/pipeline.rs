//! Profile A's forwarding decision (spec §3, §5.1), one function per table, plus the
//! service translation oxsdn does instead of the host's kube-proxy (docs/design.md,
//! "Services"). Registers: `src_vnid` is reg0, the destination VNID reg1, the output
//! reg2.

use std::net::Ipv4Addr;

use crate::packet::{self, Arp, Ipv4, Translation, L3};
use crate::policy::{self, Direction, Flow};
use crate::state::{Connection, Mode, State, IPPROTO_UDP};

/// Where a frame enters the pipeline (OpenShift's in_port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    /// A pod port: the ifindex of the pod's host-side veth.
    Pod(u32),
    Tun0,
    /// vxlan0, with the outer source address and the VNI.
    Tunnel {
        src: Ipv4Addr,
        vni: u32,
    },
}

/// Where a frame leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    Pod(u32),
    Tun0,
    Tunnel { node_ip: Ipv4Addr, vni: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub out: Out,
    pub frame: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Dropped, with the table rule that dropped it.
    Drop(&'static str),
    Deliver(Delivery),
    /// A new service connection: any one of these, one per endpoint (an endpoint that
    /// cannot be reached gives a drop).
    AnyOf(Vec<Verdict>),
}

/// The whole pipeline for one frame.
pub fn pipeline(state: &State, ingress: Ingress, frame: &[u8]) -> Verdict {
    let p = Pass { state, ingress, frame };
    match ingress {
        Ingress::Pod(port) => p.table0_pod(port),
        Ingress::Tun0 => p.table0_tun0(),
        Ingress::Tunnel { src, vni } => p.table0_tunnel(src, vni),
    }
}

struct Pass<'a> {
    state: &'a State,
    ingress: Ingress,
    frame: &'a [u8],
}

impl Pass<'_> {
    fn gateway(&self) -> Ipv4Addr {
        self.state.node.gateway()
    }

    fn in_cluster(&self, ip: Ipv4Addr) -> bool {
        self.state.node.cluster.contains(ip)
    }

    /// Table 0 for pod ports, then table 20 (anti-spoofing, reg0 <- the pod's VNID).
    fn table0_pod(&self, port: u32) -> Verdict {
        let l3 = packet::parse(self.frame);
        if let L3::Other = l3 {
            return Verdict::Drop("T0 not ARP or IPv4");
        }
        let Some(pod) = self.state.pod_by_port(port) else { return Verdict::Drop("T20 unknown port") };
        let own = match l3 {
            L3::Arp(a) => a.sender_ip == pod.ip && a.sender_mac[2..] == pod.ip.octets(),
            L3::Ipv4(ip) => ip.src == pod.ip,
            L3::Other => false,
        };
        if !own {
            return Verdict::Drop("T20 spoofed");
        }
        let Some(vnid) = self.state.vnid(pod.project) else { return Verdict::Drop("T20 project without VNID") };
        // ovs-subnet: every pod is global.
        let vnid = if self.state.mode == Mode::Subnet { 0 } else { vnid };
        self.table30(l3, vnid, self.state.is_endpoint(pod.ip))
    }

    /// Table 0 for tun0: IPv4 except multicast, ARP from the gateway into the cluster.
    /// reg0 stays 0: the host is global.
    fn table0_tun0(&self) -> Verdict {
        let l3 = packet::parse(self.frame);
        match l3 {
            L3::Ipv4(ip) if ip.dst.is_multicast() => Verdict::Drop("T0 multicast from tun0"),
            L3::Ipv4(_) => self.table30(l3, 0, false),
            L3::Arp(a) if a.sender_ip == self.gateway() && self.in_cluster(a.target_ip) => self.table30(l3, 0, false),
            _ => Verdict::Drop("T0 other from tun0"),
        }
    }

    /// Table 0 for vxlan0 (reg0 <- VNI), then table 10 (known nodes only).
    fn table0_tunnel(&self, src: Ipv4Addr, vni: u32) -> Verdict {
        let l3 = packet::parse(self.frame);
        let admitted = match l3 {
            L3::Arp(a) => self.in_cluster(a.sender_ip) && self.state.node.local.contains(a.target_ip),
            L3::Ipv4(ip) => self.in_cluster(ip.src) || self.in_cluster(ip.dst),
            L3::Other => false,
        };
        if !admitted {
            return Verdict::Drop("T0 other from vxlan0");
        }
        if !self.state.is_remote_node(src) {
            return Verdict::Drop("T10 unknown node");
        }
        self.table30(l3, vni, true)
    }

    /// Table 30: routing on the destination. `may_be_reply`: the packet comes from a
    /// service endpoint (a local one, or any over the tunnel), so it may be a reply that
    /// must get the service's address back.
    fn table30(&self, l3: L3, src_vnid: u32, may_be_reply: bool) -> Verdict {
        match l3 {
            L3::Arp(a) => self.out(self.route_arp(a, src_vnid)),
            L3::Ipv4(ip) => {
                if may_be_reply {
                    if let Some(verdict) = self.service_reply(&ip, src_vnid) {
                        return verdict;
                    }
                }
                self.route_ipv4(&ip, src_vnid)
            }
            L3::Other => Verdict::Drop("T0 not ARP or IPv4"),
        }
    }

    /// ARP is never isolated: tables 30, 40, 50.
    fn route_arp(&self, a: Arp, src_vnid: u32) -> Result<Out, &'static str> {
        let node = &self.state.node;
        if a.target_ip == self.gateway() {
            Ok(Out::Tun0)
        } else if node.local.contains(a.target_ip) {
            self.state.pod_by_ip(a.target_ip).map(|p| Out::Pod(p.ifindex)).ok_or("T40 no pod")
        } else if self.in_cluster(a.target_ip) {
            self.state
                .remote_node_for(a.target_ip)
                .map(|n| Out::Tunnel { node_ip: n.node_ip, vni: src_vnid })
                .ok_or("T50 no node")
        } else {
            Err("T30 ARP elsewhere")
        }
    }

    fn route_ipv4(&self, ip: &Ipv4, src_vnid: u32) -> Verdict {
        let node = &self.state.node;
        let routed = if ip.dst == self.gateway() {
            Ok(Out::Tun0)
        } else if node.local.contains(ip.dst) {
            self.table70(ip, src_vnid)
        } else if node.service.contains(ip.dst) {
            return self.table60(ip, src_vnid);
        } else if self.in_cluster(ip.dst) {
            self.state
                .remote_node_for(ip.dst)
                .map(|n| Out::Tunnel { node_ip: n.node_ip, vni: src_vnid })
                .ok_or("T90 no node")
        } else if ip.dst.is_multicast() {
            // Tables 110/120: no project has multicast enabled.
            Err("T110 multicast")
        } else {
            self.table100(ip)
        };
        self.out(routed)
    }

    /// Table 70 (local pod: reg1, reg2), then table 80.
    fn table70(&self, ip: &Ipv4, src_vnid: u32) -> Result<Out, &'static str> {
        let pod = self.state.pod_by_ip(ip.dst).ok_or("T70 no pod")?;
        let dst_vnid = self.state.vnid(pod.project).ok_or("T70 project without VNID")?;
        self.table80(ip, src_vnid, dst_vnid)?;
        Ok(Out::Pod(pod.ifindex))
    }

    /// Table 80, the isolation predicate (spec §5.1 step 4); ovs-subnet delivers
    /// everything (its single priority-200 rule), networkpolicy judges at the output.
    fn table80(&self, ip: &Ipv4, src_vnid: u32, dst_vnid: u32) -> Result<(), &'static str> {
        if self.state.mode != Mode::Multitenant {
            return Ok(());
        }
        let admitted = ip.src == self.gateway() || src_vnid == 0 || dst_vnid == 0 || src_vnid == dst_vnid;
        admitted.then_some(()).ok_or("T80 isolated")
    }

    /// Table 100: egress (no egress IPs), then table 101 (no EgressNetworkPolicy): tun0.
    fn table100(&self, ip: &Ipv4) -> Result<Out, &'static str> {
        match ip.ports {
            Some((_, dport)) if ip.protocol == IPPROTO_UDP && dport == self.state.node.vxlan_port => {
                Err("T100 VXLAN from a pod")
            }
            _ => Ok(Out::Tun0),
        }
    }

    /// Table 60: service isolation per declared port (the ClusterIP alone for later
    /// fragments); global sources skip the check, and services are isolated only in
    /// multitenant mode (the others judge the translated packet by the endpoint's pod).
    fn table60(&self, ip: &Ipv4, src_vnid: u32) -> Verdict {
        if src_vnid != 0 && self.state.mode == Mode::Multitenant {
            let project = if ip.later_fragment {
                self.state.service_by_ip(ip.dst).map(|s| s.project)
            } else {
                ip.ports
                    .and_then(|(_, dport)| self.state.service_port(ip.dst, ip.protocol, dport))
                    .map(|(s, _)| s.project)
            };
            let Some(project) = project else { return Verdict::Drop("T60 no service port") };
            let Some(dst_vnid) = self.state.vnid(project) else { return Verdict::Drop("T60 project without VNID") };
            if let Err(why) = self.table80(ip, src_vnid, dst_vnid) {
                return Verdict::Drop(why);
            }
        }
        self.table61(ip, src_vnid)
    }

    /// The ports of a packet, from the first fragment's record for later fragments.
    fn ports(&self, ip: &Ipv4) -> Option<(u16, u16)> {
        if ip.later_fragment {
            self.state.fragment_ports(ip.src, ip.dst, ip.id, ip.protocol)
        } else {
            ip.ports
        }
    }

    /// Table 61: the service translation (kube-proxy's DNAT, done here). A tracked
    /// connection keeps its endpoint while the service still lists it, or while a TCP
    /// connection's endpoint drains; otherwise any listed endpoint may be chosen.
    fn table61(&self, ip: &Ipv4, src_vnid: u32) -> Verdict {
        let Some((sport, dport)) = self.ports(ip) else { return Verdict::Drop("T61 no ports") };
        let Some((service, port)) = self.state.service_port(ip.dst, ip.protocol, dport) else {
            return Verdict::Drop("T61 no service port");
        };
        let client = (ip.src, sport);
        let tracked = self
            .state
            .connection_from_client(ip.protocol, client, (ip.dst, dport))
            .filter(|c| service.keeps(c.protocol, c.endpoint.0, self.state.now));
        let endpoints: Vec<(Ipv4Addr, u16)> = match tracked {
            Some(c) => vec![c.endpoint],
            None => service.endpoints.iter().map(|e| (*e, port.target_port)).collect(),
        };
        let mut choices: Vec<Verdict> = endpoints
            .into_iter()
            .map(|endpoint| {
                let source = if endpoint.0 == ip.src { (self.gateway(), sport) } else { client };
                self.deliver_translated(ip, Translation { src: source, dst: endpoint }, false, src_vnid)
            })
            .collect();
        choices.dedup();
        match choices.len() {
            0 => Verdict::Drop("T61 no endpoint"),
            1 => choices.remove(0),
            _ => Verdict::AnyOf(choices),
        }
    }

    /// A reply of a tracked service connection gets the service address back (table
    /// 30's reply rule).
    fn service_reply(&self, ip: &Ipv4, src_vnid: u32) -> Option<Verdict> {
        let (sport, dport) = self.ports(ip)?;
        let c: &Connection = self.state.connection_from_endpoint(ip.protocol, (ip.src, sport), (ip.dst, dport))?;
        Some(self.deliver_translated(ip, Translation { src: c.service, dst: c.client }, true, src_vnid))
    }

    /// A translated packet continues as the host's masqueraded packet did in OpenShift:
    /// global (VNI 0, no isolation check), to its new destination. Endpoints are in the
    /// cluster network (the controller refuses others); a reply may go to a client
    /// outside it (routed to the node by an external router, spec §5 case 22): the host
    /// sends it on. In networkpolicy mode it keeps the client's VNID (the endpoint's
    /// node judges it by the client) and policies judge it as translated; a reply of a
    /// translated connection passes (the connection was judged).
    fn deliver_translated(&self, ip: &Ipv4, to: Translation, reply: bool, src_vnid: u32) -> Verdict {
        let vni = if self.state.mode == Mode::NetworkPolicy { src_vnid } else { 0 };
        let node = &self.state.node;
        let dst = to.dst.0;
        let routed = if dst == self.gateway() {
            Ok(Out::Tun0)
        } else if node.local.contains(dst) {
            self.state.pod_by_ip(dst).map(|p| Out::Pod(p.ifindex)).ok_or("T70 no pod")
        } else if self.in_cluster(dst) {
            self.state.remote_node_for(dst).map(|n| Out::Tunnel { node_ip: n.node_ip, vni }).ok_or("T90 no node")
        } else if reply {
            Ok(Out::Tun0)
        } else {
            Err("T61 endpoint outside the cluster network")
        };
        match routed {
            // A hairpin goes back to the pod it came from; the tunnel and tun0 never
            // get a packet back.
            Ok(out) if self.is_ingress(out) && !matches!(out, Out::Pod(_)) => {
                Verdict::Drop("output to the ingress port")
            }
            Ok(out) => {
                let flow = Flow { protocol: ip.protocol, src: to.src, dst: to.dst };
                if let Err(why) = self.policy_allows(out, ip, Some(flow), reply) {
                    return Verdict::Drop(why);
                }
                let to_pod = !matches!(out, Out::Tun0);
                Verdict::Deliver(Delivery { out, frame: packet::translate(self.frame, ip, to, to_pod) })
            }
            Err(why) => Verdict::Drop(why),
        }
    }

    /// The frame leaves unchanged, except never out of the port it came in on (OpenFlow
    /// ignores such an output).
    fn out(&self, routed: Result<Out, &'static str>) -> Verdict {
        match routed {
            Ok(out) if self.is_ingress(out) => Verdict::Drop("output to the ingress port"),
            Ok(out) => {
                if let L3::Ipv4(ip) = packet::parse(self.frame) {
                    let ports = if ip.later_fragment {
                        self.state.fragment_ports(ip.src, ip.dst, ip.id, ip.protocol)
                    } else {
                        Some(policy::first_fragment_ports(self.frame, &ip))
                    };
                    let flow = ports.map(|(sport, dport)| Flow {
                        protocol: ip.protocol,
                        src: (ip.src, sport),
                        dst: (ip.dst, dport),
                    });
                    if let Err(why) = self.policy_allows(out, &ip, flow, false) {
                        return Verdict::Drop(why);
                    }
                }
                Verdict::Deliver(Delivery { out, frame: self.frame.to_vec() })
            }
            Err(why) => Verdict::Drop(why),
        }
    }

    /// networkpolicy mode: whether policies let an IPv4 packet the tables send to `out`
    /// go (`flow`: as it leaves, `None` if its ports are unknown; `reply`: a service's
    /// reply translated back). The sending pod's egress policies (for a packet from a
    /// pod port) and the receiving local pod's ingress policies, after a service's
    /// translation.
    fn policy_allows(&self, out: Out, ip: &Ipv4, flow: Option<Flow>, reply: bool) -> Result<(), &'static str> {
        if self.state.mode != Mode::NetworkPolicy || reply {
            return Ok(());
        }
        let policies = &self.state.policy;
        let ports_known = flow.is_some();
        let flow = flow.unwrap_or(Flow { protocol: ip.protocol, src: (ip.src, 0), dst: (ip.dst, 0) });
        let node = &self.state.node;
        // Traffic from the node always reaches its pods.
        if flow.src.0 == self.gateway() {
            return Ok(());
        }
        let source = match self.ingress {
            Ingress::Pod(port) => self.state.pod_by_port(port).and_then(|p| policies.pods.get(&p.ip)),
            _ => None,
        };
        let destination = match out {
            Out::Pod(port) => match self.state.pod_by_port(port).map(|p| policies.pods.get(&p.ip)) {
                Some(Some(info)) => Some(info),
                // A local pod whose labels are not known yet receives nothing.
                _ => return Err("T80 pod without identity"),
            },
            _ => None,
        };
        // A pod always reaches its own node.
        let to_node = flow.dst.0 == self.gateway() || flow.dst.0 == node.node_ip;
        let egress = source.filter(|s| !to_node && policies.isolated(s, Direction::Egress));
        let ingress = destination.filter(|d| policies.isolated(d, Direction::Ingress));
        if egress.is_none() && ingress.is_none() {
            return Ok(());
        }
        // A reply of a connection policies let through, or an ICMP error about one.
        let original = match policy::icmp_error_about(self.frame, ip) {
            Some(quoted) => Some(quoted),
            None if ports_known && !policy::is_icmp_error(self.frame, ip) => Some(flow.reversed()),
            None => None,
        };
        if original.is_some_and(|o| policies.tracked(&o)) {
            return Ok(());
        }
        if egress.is_some_and(|s| !policies.allows(s, Direction::Egress, &flow, ports_known)) {
            return Err("T80 egress not allowed");
        }
        if ingress.is_some_and(|d| !policies.allows(d, Direction::Ingress, &flow, ports_known)) {
            return Err("T80 ingress not allowed");
        }
        Ok(())
    }

    fn is_ingress(&self, out: Out) -> bool {
        matches!((self.ingress, out), (Ingress::Tun0, Out::Tun0) | (Ingress::Tunnel { .. }, Out::Tunnel { .. }))
            || matches!((self.ingress, out), (Ingress::Pod(a), Out::Pod(b)) if a == b)
    }
}
