//! `dump-flows`: the pipeline's rules with their counters, in `ovs-ofctl dump-flows`
//! style, read from a node's pinned maps. Node-wide rules come from
//! `oxsdn_common::rules::RULES`; per-pod rules from the pod maps.

use std::fmt;

use anyhow::Result;
use ipnetwork::Ipv4Network;
use oxsdn_common::{node_rule, node_stat_index, pod_rule, pod_stat_index, rules::RULES, Counter, NodeConfig};

use crate::maps::{ip_from_key, total, NodeMaps};

/// Which rule a flow is, as the eBPF programs count it (and record it in trace mode:
/// `oxsdn_common::trace::hop_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RuleRef {
    /// A rule of `oxsdn_common::rules::RULES`.
    NodeWide { rule: u32 },
    /// A per-pod rule (`oxsdn_common::pod_rule`) of the pod with this IP (map form).
    Pod { ip: u32, rule: u32 },
    /// A per-remote-node rule (`oxsdn_common::node_rule`) of the node in counter `slot`.
    RemoteNode { slot: u32, rule: u32 },
    /// Table 60's rule of the service port or ClusterIP in counter `slot`.
    Service { slot: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub id: RuleRef,
    pub table: u8,
    pub priority: u16,
    pub matches: String,
    pub actions: String,
    pub counter: Counter,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.matches.is_empty() { "" } else { "," };
        write!(
            f,
            " table={}, n_packets={}, n_bytes={}, priority={}{sep}{} actions={}",
            self.table, self.counter.packets, self.counter.bytes, self.priority, self.matches, self.actions
        )
    }
}

fn network(addr: u32, mask: u32) -> String {
    let prefix = u32::from_be(mask).count_ones() as u8;
    Ipv4Network::new(ip_from_key(addr), prefix).map(|n| n.to_string()).unwrap_or_default()
}

/// Fills in a rule template's placeholders with this node's addresses.
fn expand(template: &str, cfg: &NodeConfig) -> String {
    template
        .replace("{GW}", &ip_from_key(cfg.gateway).to_string())
        .replace("{L}", &network(cfg.local_net, cfg.local_mask))
        .replace("{C}", &network(cfg.cluster_net, cfg.cluster_mask))
        .replace("{S}", &network(cfg.service_net, cfg.service_mask))
        .replace("{NODEIP}", &ip_from_key(cfg.node_ip).to_string())
        .replace("{VXP}", &cfg.vxlan_port.to_string())
}

/// Every rule of the node, sorted like `ovs-ofctl dump-flows` (table, then priority
/// from high to low). `port_name` turns a pod port's ifindex into what to print.
pub fn collect(maps: &NodeMaps, port_name: impl Fn(u32) -> String) -> Result<Vec<Flow>> {
    let cfg = maps.node_config()?;
    let mut flows = Vec::new();
    for rule in RULES {
        flows.push(Flow {
            id: RuleRef::NodeWide { rule: rule.id },
            table: rule.table,
            priority: rule.priority,
            matches: expand(rule.matches, &cfg),
            actions: expand(rule.actions, &cfg),
            counter: total(&maps.rule_stats, rule.id)?,
        });
    }
    for entry in maps.pods.iter() {
        let (ip_key, pod) = entry?;
        let ip = ip_from_key(ip_key);
        let port = port_name(pod.ifindex);
        let vnid = match maps.project_vnid.get(&pod.project, 0) {
            Ok(v) => format!("{v:#x}"),
            Err(_) => "unknown".to_string(),
        };
        let counter = |rule| total(&maps.pod_stats, pod_stat_index(ip_key, cfg.local_mask, rule));
        let o = ip.octets();
        let pod_flow = |table, rule, matches, actions| -> Result<Flow> {
            Ok(Flow { id: RuleRef::Pod { ip: ip_key, rule }, table, priority: 100, matches, actions, counter: counter(rule)? })
        };
        flows.extend([
            pod_flow(20, pod_rule::T20_ARP, format!("arp,in_port={port},arp_spa={ip},arp_sha=00:00:{:02x}:{:02x}:{:02x}:{:02x}/00:00:ff:ff:ff:ff", o[0], o[1], o[2], o[3]),
                format!("load:{vnid}->NXM_NX_REG0[],goto_table:21"))?,
            pod_flow(20, pod_rule::T20_IP, format!("ip,in_port={port},nw_src={ip}"),
                format!("load:{vnid}->NXM_NX_REG0[],goto_table:21"))?,
            pod_flow(40, pod_rule::T40_ARP, format!("arp,arp_tpa={ip}"), format!("output:{port}"))?,
            pod_flow(70, pod_rule::T70_IP, format!("ip,nw_dst={ip}"),
                format!("load:{vnid}->NXM_NX_REG1[],load:{:#x}->NXM_NX_REG2[],goto_table:80", pod.ifindex))?,
        ]);
    }
    for entry in maps.node_ips.iter() {
        let (ip, node) = entry?;
        flows.push(Flow {
            id: RuleRef::RemoteNode { slot: node.slot, rule: node_rule::T10_FROM_NODE },
            table: 10,
            priority: 100,
            matches: format!("tun_src={}", ip_from_key(ip)),
            actions: "goto_table:30".into(),
            counter: total(&maps.node_stats, node_stat_index(node.slot, node_rule::T10_FROM_NODE))?,
        });
    }
    for entry in maps.remote_subnets.iter() {
        let (key, node) = entry?;
        let subnet = network(key.data(), u32::MAX.checked_shl(32 - key.prefix_len()).unwrap_or(0).to_be());
        let actions = format!("move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],set_field:{}->tun_dst,output:vxlan0", ip_from_key(node.node_ip));
        for (table, proto, field, rule) in [(50, "arp", "arp_tpa", node_rule::T50_ARP), (90, "ip", "nw_dst", node_rule::T90_IP)] {
            flows.push(Flow {
                id: RuleRef::RemoteNode { slot: node.slot, rule },
                table,
                priority: 100,
                matches: format!("{proto},{field}={subnet}"),
                actions: actions.clone(),
                counter: total(&maps.node_stats, node_stat_index(node.slot, rule))?,
            });
        }
    }
    let reg1 = |project: u32| match maps.project_vnid.get(&project, 0) {
        Ok(v) => format!("load:{v:#x}->NXM_NX_REG1[],load:0x2->NXM_NX_REG2[],goto_table:80"),
        Err(_) => "drop".to_string(),
    };
    for entry in maps.services.iter() {
        let (key, port) = entry?;
        let proto = match key.proto {
            6 => "tcp",
            17 => "udp",
            _ => "ip",
        };
        flows.push(Flow {
            id: RuleRef::Service { slot: port.slot },
            table: 60,
            priority: 100,
            matches: format!("{proto},nw_dst={},tp_dst={}", ip_from_key(key.ip), key.port),
            actions: reg1(port.project),
            counter: total(&maps.service_stats, port.slot)?,
        });
    }
    for entry in maps.service_ips.iter() {
        let (ip, svc) = entry?;
        flows.push(Flow {
            id: RuleRef::Service { slot: svc.slot },
            table: 60,
            priority: 100,
            matches: format!("ip,nw_dst={},nw_frag=later", ip_from_key(ip)),
            actions: reg1(svc.project),
            counter: total(&maps.service_stats, svc.slot)?,
        });
    }
    flows.sort_by(|a, b| (a.table, std::cmp::Reverse(a.priority), &a.matches).cmp(&(b.table, std::cmp::Reverse(b.priority), &b.matches)));
    Ok(flows)
}

/// The name of an interface of this network namespace, or its ifindex.
pub fn ifname_or_index(ifindex: u32) -> String {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if name.is_null() {
        return ifindex.to_string();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use crate::maps::ip_key;

    #[test]
    fn expands_placeholders_with_node_addresses() {
        let cfg = NodeConfig {
            gateway: ip_key(Ipv4Addr::new(10, 128, 2, 1)),
            local_net: ip_key(Ipv4Addr::new(10, 128, 2, 0)),
            local_mask: ip_key(Ipv4Addr::new(255, 255, 254, 0)),
            cluster_net: ip_key(Ipv4Addr::new(10, 128, 0, 0)),
            cluster_mask: ip_key(Ipv4Addr::new(255, 252, 0, 0)),
            service_net: ip_key(Ipv4Addr::new(172, 30, 0, 0)),
            service_mask: ip_key(Ipv4Addr::new(255, 255, 0, 0)),
            ..Default::default()
        };
        assert_eq!(
            expand("arp,arp_spa={GW},arp_tpa={C},{L},{S}", &cfg),
            "arp,arp_spa=10.128.2.1,arp_tpa=10.128.0.0/14,10.128.2.0/23,172.30.0.0/16"
        );
    }

    #[test]
    fn prints_like_ovs_ofctl() {
        let flow = Flow {
            id: RuleRef::NodeWide { rule: oxsdn_common::rules::T80_ISOLATED },
            table: 80,
            priority: 0,
            matches: String::new(),
            actions: "drop".into(),
            counter: Counter { packets: 3, bytes: 294 },
        };
        assert_eq!(flow.to_string(), " table=80, n_packets=3, n_bytes=294, priority=0 actions=drop");
    }
}
