//! `oxsdnctl trace`: a packet through a node's programs, printed like
//! `ovs-appctl ofproto/trace` with the rules as `dump-flows` shows them.

use std::{io::Write, net::Ipv4Addr, path::Path, str::FromStr};

use anyhow::{Context, Result};
use oxsdn_dataplane::{
    flows::{self, Flow, RuleRef},
    maps::{ip_from_key, LocalPods, NodeMaps},
    tracer::{xdp_action_name, Ingress, Output, Packet, PolicyRule, Proto, Trace, Tracer},
};
use serde_json::json;

use crate::output::{write_value, Format};

/// Where the packet comes from: `pod:IP`, `node`, `tunnel:NODE_IP:VNI` or
/// `underlay:NODE_IP:VNI`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local pod, by its IP.
    Pod(Ipv4Addr),
    /// The node's host stack, into tun0.
    Node,
    /// Another node, over VXLAN with this VNI.
    Tunnel(Ipv4Addr, u32),
    /// A VXLAN frame with this outer source and VNI arriving on the underlay device,
    /// through the prefilter first.
    Underlay(Ipv4Addr, u32),
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ip = |v: &str| v.parse::<Ipv4Addr>().map_err(|_| format!("{v:?} is not an IPv4 address"));
        match s.split(':').collect::<Vec<_>>()[..] {
            ["node"] => Ok(Source::Node),
            ["pod", addr] => Ok(Source::Pod(ip(addr)?)),
            [kind @ ("tunnel" | "underlay"), addr, vni] => {
                let vni = vni.parse().map_err(|_| format!("{vni:?} is not a VNI (0-4294967295)"))?;
                Ok(if kind == "tunnel" { Source::Tunnel(ip(addr)?, vni) } else { Source::Underlay(ip(addr)?, vni) })
            }
            _ => Err(format!("{s:?} is not pod:IP, node, tunnel:NODE_IP:VNI or underlay:NODE_IP:VNI")),
        }
    }
}

/// `IP` or `IP:PORT`.
pub fn parse_destination(s: &str) -> Result<(Ipv4Addr, u16), String> {
    let (addr, port) = s.split_once(':').unwrap_or((s, "0"));
    let addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let port = port.parse().map_err(|_| format!("{port:?} is not a port number (0-65535)"))?;
    Ok((addr, port))
}

/// What to trace.
pub struct Request {
    pub from: Source,
    pub to: (Ipv4Addr, u16),
    pub proto: Proto,
    pub src: Option<Ipv4Addr>,
    pub src_port: u16,
}

/// Runs the request through the node's programs pinned in `pin_dir` and prints it.
pub fn trace(pin_dir: &Path, node: &str, request: &Request, format: Format, out: &mut dyn Write) -> Result<()> {
    let maps = NodeMaps::open(pin_dir)
        .with_context(|| format!("node {node} has no dataplane here (is its agent started?)"))?;
    let cfg = maps.config.get(&0, 0)?;
    let (ingress, default_src) = match request.from {
        Source::Pod(ip) => (Ingress::Pod { in_port: maps.pod_port(ip)? }, ip),
        Source::Node => (Ingress::Tun0, ip_from_key(cfg.gateway)),
        Source::Tunnel(node_ip, vni) => {
            let src = request.src.context("--from tunnel needs --src: the sending pod's address")?;
            (Ingress::Tunnel { src: node_ip, vni }, src)
        }
        Source::Underlay(node_ip, vni) => {
            let src = request.src.context("--from underlay needs --src: the sending pod's address")?;
            (Ingress::Underlay { src: node_ip, vni }, src)
        }
    };
    let packet = Packet::new(request.proto, request.src.unwrap_or(default_src), request.to.0)
        .ports(request.src_port, request.to.1);
    let result = Tracer::load(pin_dir)?.trace(ingress, &packet.frame())?;
    let rules = flows::collect(&maps, flows::ifname_or_index)?;
    let passed: Vec<Option<&Flow>> = result.hops.iter().map(|hop| rules.iter().find(|f| f.id == *hop)).collect();
    let policies = policy_verdicts(&maps, &result)?;
    let traced = Traced { packet, ingress, result, passed, policies };
    match format {
        Format::Json | Format::Yaml => print_structured(out, node, &traced, format),
        Format::Table => print_table(out, node, &traced),
    }
}

/// A traced packet and what the node's rules and policies made of it.
struct Traced<'a> {
    packet: Packet,
    ingress: Ingress,
    result: Trace,
    /// The rule of each hop, if the node still has it.
    passed: Vec<Option<&'a Flow>>,
    /// What NetworkPolicies said, with each policy's `namespace/name`.
    policies: Vec<(String, PolicyRule)>,
}

/// What NetworkPolicies said of the packet, each with the policy's `namespace/name`.
fn policy_verdicts(maps: &NodeMaps, t: &Trace) -> Result<Vec<(String, PolicyRule)>> {
    t.policy_rules
        .iter()
        .map(|rule| {
            let name = match maps.policy_slots.get(&rule.slot, 0) {
                Ok(slot) => slot.name(),
                Err(_) => format!("(policy slot {}, no longer in the node's maps)", rule.slot),
            };
            Ok((name, *rule))
        })
        .collect()
}

/// A policy verdict as a sentence.
fn policy_line((name, rule): &(String, PolicyRule)) -> String {
    let (direction, pod) = if rule.direction == "ingress" { ("ingress", "destination") } else { ("egress", "source") };
    if rule.allowed {
        format!("allowed by NetworkPolicy {name}, {direction} rule {}", rule.index)
    } else {
        format!("no NetworkPolicy allowed it: {name} (and any other selecting the {pod}) isolates the {pod} for {direction}")
    }
}

fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
        Proto::Arp => "arp",
    }
}

/// The packet as an OpenFlow match, like ofproto/trace's `Flow:` line.
fn flow_line(packet: &Packet, ingress: &Ingress) -> String {
    let in_port = match ingress {
        Ingress::Pod { in_port } => flows::ifname_or_index(*in_port),
        Ingress::Tun0 => "tun0".into(),
        Ingress::Tunnel { src, vni } => format!("vxlan0,tun_src={src},tun_id={vni:#x}"),
        Ingress::Underlay { src, vni } => format!("underlay,tun_src={src},tun_id={vni:#x}"),
    };
    let (src, dst) = (packet.src, packet.dst);
    match packet.proto {
        Proto::Arp => format!("arp,in_port={in_port},arp_spa={src},arp_tpa={dst},arp_op=1"),
        Proto::Icmp => format!("icmp,in_port={in_port},nw_src={src},nw_dst={dst},icmp_type=8"),
        proto => format!(
            "{},in_port={in_port},nw_src={src},nw_dst={dst},tp_src={},tp_dst={}",
            proto_name(proto),
            packet.sport,
            packet.dport
        ),
    }
}

/// The output as datapath actions.
fn actions(output: &Option<Output>) -> String {
    match output {
        None => "drop (the program stopped before the tables)".into(),
        Some(Output::Drop) => "drop".into(),
        Some(Output::Tun0 { .. }) => "output:tun0".into(),
        Some(Output::Pod { ifindex, .. }) => format!("output:{}", flows::ifname_or_index(*ifindex)),
        Some(Output::Tunnel { node_ip, vni, .. }) => {
            format!("set_field:{vni:#x}->tun_id,set_field:{node_ip}->tun_dst,output:vxlan0")
        }
        Some(Output::Multicast { vnid, to_nodes: true }) => {
            format!("set_field:{vnid:#x}->tun_id,output:vxlan0 (each other node),output:local pods of VNID {vnid}")
        }
        Some(Output::Multicast { vnid, to_nodes: false }) => format!("output:local pods of VNID {vnid}"),
    }
}

fn missing(hop: &RuleRef) -> String {
    format!("(rule {hop:?}, no longer in the node's maps)")
}

fn print_table(out: &mut dyn Write, node: &str, traced: &Traced) -> Result<()> {
    let Traced { packet, ingress, result: t, passed, policies } = traced;
    writeln!(out, "Flow: {}", flow_line(packet, ingress))?;
    writeln!(out)?;
    let title = format!("node(\"{node}\")");
    writeln!(out, "{title}\n{}", "-".repeat(title.len()))?;
    for (hop, flow) in t.hops.iter().zip(passed) {
        match flow {
            Some(f) => {
                let sep = if f.matches.is_empty() { "" } else { ", " };
                writeln!(out, "{:>3}. {}{sep}priority {}", f.table, f.matches, f.priority)?;
                writeln!(out, "     {}", f.actions)?;
            }
            None => writeln!(out, "     {}", missing(hop))?,
        }
    }
    writeln!(out)?;
    let reg = |r: Option<u32>| r.map_or("-".to_string(), |v| format!("{v:#x}"));
    let reg2 = match t.output {
        Some(Output::Pod { ifindex, .. }) => format!("{ifindex:#x}"),
        _ => "-".into(),
    };
    writeln!(out, "Registers: reg0={} reg1={} reg2={reg2}", reg(t.reg0), reg(t.reg1))?;
    if let Some(x) = &t.translation {
        writeln!(out, "Translation: nw_src={},tp_src={},nw_dst={},tp_dst={}", x.src, x.sport, x.dst, x.dport)?;
    }
    for policy in policies {
        writeln!(out, "NetworkPolicy: {}", policy_line(policy))?;
    }
    writeln!(out, "Datapath actions: {}", actions(&t.output))?;
    if let Some(action) = t.prefilter {
        writeln!(out, "Prefilter: {}", xdp_action_name(action))?;
    }
    writeln!(out, "Verdict: {}", t.verdict_name())?;
    Ok(())
}

fn print_structured(out: &mut dyn Write, node: &str, traced: &Traced, format: Format) -> Result<()> {
    let Traced { packet, ingress, result: t, passed, policies } = traced;
    let rules: Vec<_> = t
        .hops
        .iter()
        .zip(passed)
        .map(|(hop, flow)| match flow {
            Some(f) => json!({"rule": hop, "table": f.table, "priority": f.priority, "matches": f.matches, "actions": f.actions}),
            None => json!({"rule": hop, "missing": true}),
        })
        .collect();
    let value = json!({
        "node": node,
        "flow": flow_line(packet, ingress),
        "packet": packet,
        "ingress": ingress,
        "rules": rules,
        "reg0": t.reg0,
        "reg1": t.reg1,
        "output": t.output,
        "translation": t.translation,
        "network_policies": policies.iter().map(|(name, rule)| json!({
            "policy": name,
            "direction": rule.direction,
            "allowed": rule.allowed,
            "rule": rule.allowed.then_some(rule.index),
            "says": policy_line(&(name.clone(), *rule)),
        })).collect::<Vec<_>>(),
        "datapath_actions": actions(&t.output),
        "prefilter": t.prefilter.map(xdp_action_name),
        "verdict": t.verdict_name(),
    });
    write_value(out, &value, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_and_destinations() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!("node".parse::<Source>(), Ok(Source::Node));
        assert_eq!("pod:10.128.0.2".parse::<Source>(), Ok(Source::Pod(ip("10.128.0.2"))));
        assert_eq!("tunnel:172.22.122.12:7".parse::<Source>(), Ok(Source::Tunnel(ip("172.22.122.12"), 7)));
        assert!("pod:10.128.0.300".parse::<Source>().unwrap_err().contains("10.128.0.300"));
        assert_eq!("underlay:172.22.122.12:7".parse::<Source>(), Ok(Source::Underlay(ip("172.22.122.12"), 7)));
        assert!("tunnel:172.22.122.12".parse::<Source>().unwrap_err().contains("tunnel:NODE_IP:VNI"));
        assert!("tunnel:172.22.122.12:x".parse::<Source>().unwrap_err().contains("\"x\" is not a VNI"));
        assert_eq!(parse_destination("172.30.0.1:80"), Ok((ip("172.30.0.1"), 80)));
        assert_eq!(parse_destination("10.128.0.3"), Ok((ip("10.128.0.3"), 0)));
        assert!(parse_destination("10.128.0.3:99999").unwrap_err().contains("99999"));
    }
}
