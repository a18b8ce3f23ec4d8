//! `dump-flows`: the pipeline's rules with their counters, in `ovs-ofctl dump-flows`
//! style, read from a node's pinned maps. Every rule's text is its table's declaration
//! (`oxsdn_tables`): node-wide rules once, per-pod, per-remote-node, per-service and
//! per-policy rules once per pod, node, service or NetworkPolicy entry, table 101's
//! once per egress firewall entry, with their placeholders filled in.

use std::fmt;

use anyhow::Result;
use aya::maps::lpm_trie::Key;
use ipnetwork::Ipv4Network;
use oxsdn_common::{
    egress::{EgressCidr, EgressVerdict, EGRESS_ALLOW, EGRESS_INVALID, EGRESS_KEY_FIXED_BITS},
    stats, Counter, NodeConfig,
};
use oxsdn_tables::rule::{Rule, Scope};

use crate::maps::{ip_from_key, total, LocalPods, NodeMaps};

/// Which rule a flow is, as the eBPF programs count it (and record it in trace mode:
/// `oxsdn_common::trace::hop_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RuleRef {
    /// A node-wide rule.
    NodeWide { rule: u32 },
    /// A per-pod rule of the pod with this IP (map form).
    Pod { ip: u32, rule: u32 },
    /// A per-remote-node rule of the node in counter `slot`.
    RemoteNode { slot: u32, rule: u32 },
    /// Table 60's rule of the service port or ClusterIP in counter `slot`.
    Service { slot: u32, rule: u32 },
    /// Table 80's rule of the NetworkPolicy in counter `slot`.
    Policy { slot: u32, rule: u32 },
    /// Table 101's rule of the egress firewall entry in counter `slot`.
    Egress { slot: u32, rule: u32 },
}

impl RuleRef {
    /// The `rules!` declaration this rule comes from.
    pub fn declaration(self) -> &'static Rule {
        let (scope, id) = match self {
            RuleRef::NodeWide { rule } => (Scope::Node, rule),
            RuleRef::Pod { rule, .. } => (Scope::Pod, rule),
            RuleRef::RemoteNode { rule, .. } => (Scope::RemoteNode, rule),
            RuleRef::Service { rule, .. } => (Scope::Service, rule),
            RuleRef::Policy { rule, .. } => (Scope::Policy, rule),
            RuleRef::Egress { rule, .. } => (Scope::Egress, rule),
        };
        oxsdn_tables::rules().find(|r| r.scope == scope && r.id == id).expect("every rule has its declaration")
    }
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

/// Fills in a rule's placeholders: this node's addresses, then `values` (name, value).
/// A rule whose `{VNID}` is unknown (`None`) drops: so do the programs.
fn expand(template: &str, cfg: &NodeConfig, values: &[(&str, &str)]) -> String {
    let node = [
        ("{GW}", ip_from_key(cfg.gateway).to_string()),
        ("{L}", network(cfg.local_net, cfg.local_mask)),
        ("{C}", network(cfg.cluster_net, cfg.cluster_mask)),
        ("{S}", network(cfg.service_net, cfg.service_mask)),
        ("{NODEIP}", ip_from_key(cfg.node_ip).to_string()),
        ("{VXP}", cfg.vxlan_port.to_string()),
        ("{UNDERLAY}", if cfg.underlay_ifindex == 0 { "none".into() } else { ifname_or_index(cfg.underlay_ifindex) }),
    ];
    let text = node.iter().fold(template.to_string(), |t, (k, v)| t.replace(k, v));
    values.iter().fold(text, |t, (k, v)| t.replace(k, v))
}

/// One flow of `rule` with its placeholders filled in.
fn flow(rule: &Rule, id: RuleRef, cfg: &NodeConfig, values: &[(&str, &str)], counter: Counter) -> Flow {
    let vnid_unknown = values.iter().any(|(k, v)| *k == "{VNID}" && v.is_empty());
    Flow {
        id,
        table: rule.table,
        priority: rule.priority,
        matches: expand(rule.matches, cfg, values),
        actions: if vnid_unknown { "drop".into() } else { expand(rule.actions, cfg, values) },
        counter,
    }
}

/// A node-wide rule as `dump-flows` shows it on this node (without its counter).
pub fn node_wide(rule: &Rule, cfg: &NodeConfig) -> Flow {
    flow(rule, RuleRef::NodeWide { rule: rule.id }, cfg, &[], Counter::default())
}

/// Per-policy rule `rule` of the NetworkPolicy `name` in counter slot `slot`, without
/// its counter.
pub fn policy(rule: &Rule, slot: u32, name: &str, cfg: &NodeConfig) -> Flow {
    flow(rule, RuleRef::Policy { slot, rule: rule.id }, cfg, &[("{POLICY}", name)], Counter::default())
}

/// The flow of an egress firewall entry (table 101): priority `rules - rule` as
/// OpenShift gave rule `rule` of `rules`, 1 for a VNID whose policy cannot apply.
pub fn egress(key: &Key<EgressCidr>, verdict: &EgressVerdict, cfg: &NodeConfig, counter: Counter) -> Flow {
    use oxsdn_tables::t101_egress_policy::{ALLOW_CIDR, DENY_CIDR, INVALID};
    let (id, priority) = match verdict.action {
        EGRESS_ALLOW => (ALLOW_CIDR, verdict.rules - verdict.rule),
        EGRESS_INVALID => (INVALID, 1),
        _ => (DENY_CIDR, verdict.rules - verdict.rule),
    };
    let data = key.data();
    let prefix = key.prefix_len().saturating_sub(EGRESS_KEY_FIXED_BITS);
    let cidr = network(data.ip, u32::MAX.checked_shl(32 - prefix).unwrap_or(0).to_be());
    let vnid = format!("{:#x}", data.vnid);
    let reference = RuleRef::Egress { slot: verdict.slot, rule: id };
    let mut flow = flow(reference.declaration(), reference, cfg, &[("{VNID}", &vnid), ("{CIDR}", &cidr)], counter);
    flow.priority = u16::try_from(priority).unwrap_or(u16::MAX);
    flow
}

fn rules_of(scope: Scope) -> impl Iterator<Item = &'static Rule> {
    oxsdn_tables::rules().filter(move |r| r.scope == scope)
}

/// Every rule of the node, sorted like `ovs-ofctl dump-flows` (table, then priority
/// from high to low). `port_name` turns a pod port's ifindex into what to print.
pub fn collect(maps: &NodeMaps, port_name: impl Fn(u32) -> String) -> Result<Vec<Flow>> {
    let cfg = maps.config.get(&0, 0)?;
    let mut flows = Vec::new();
    let vnid = |slot: u32, id: u32| match maps.projects.get(&slot, 0) {
        Ok(p) if p.id == id && id != 0 => format!("{:#x}", p.vnid),
        _ => String::new(),
    };
    for rule in rules_of(Scope::Node) {
        flows.push(flow(rule, RuleRef::NodeWide { rule: rule.id }, &cfg, &[], total(&maps.rule_stats, rule.id)?));
    }
    for (slot, pod) in maps.local_pods()? {
        let o = ip_from_key(pod.ip).octets();
        let values = [
            ("{PORT}", port_name(pod.ifindex)),
            ("{IP}", ip_from_key(pod.ip).to_string()),
            ("{MAC}", format!("00:00:{:02x}:{:02x}:{:02x}:{:02x}/00:00:ff:ff:ff:ff", o[0], o[1], o[2], o[3])),
            ("{VNID}", vnid(pod.project_slot, pod.project_id)),
            ("{IFINDEX}", format!("{:#x}", pod.ifindex)),
        ];
        let values: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for rule in rules_of(Scope::Pod) {
            let counter = total(&maps.pod_stats, stats::pod_index(slot, rule.id))?;
            flows.push(flow(rule, RuleRef::Pod { ip: pod.ip, rule: rule.id }, &cfg, &values, counter));
        }
    }
    let remote_rules =
        |slot: u32, node_ip: u32, subnet: Option<String>, tables: &[u8], flows: &mut Vec<Flow>| -> Result<()> {
            let node_ip = ip_from_key(node_ip).to_string();
            let subnet = subnet.unwrap_or_default();
            let values = [("{NODE_IP}", node_ip.as_str()), ("{SUBNET}", subnet.as_str())];
            for rule in rules_of(Scope::RemoteNode).filter(|r| tables.contains(&r.table)) {
                let counter = total(&maps.node_stats, stats::node_index(slot, rule.id))?;
                flows.push(flow(rule, RuleRef::RemoteNode { slot, rule: rule.id }, &cfg, &values, counter));
            }
            Ok(())
        };
    for entry in maps.node_ips.iter() {
        let (_, node) = entry?;
        remote_rules(node.slot, node.node_ip, None, &[10], &mut flows)?;
    }
    for entry in maps.remote_subnets.iter() {
        let (key, node) = entry?;
        let subnet = network(key.data(), u32::MAX.checked_shl(32 - key.prefix_len()).unwrap_or(0).to_be());
        remote_rules(node.slot, node.node_ip, Some(subnet), &[50, 90], &mut flows)?;
    }
    let service_rule =
        |rule: u32| rules_of(Scope::Service).find(|r| r.id == rule).expect("table 60 declares its service rules");
    for entry in maps.services.iter() {
        let (key, port) = entry?;
        let proto = match key.proto {
            6 => "tcp",
            17 => "udp",
            _ => "ip",
        };
        let (ip, vnid, port_number) =
            (ip_from_key(key.ip).to_string(), vnid(port.project_slot, port.project_id), key.port.to_string());
        let values =
            [("{PROTO}", proto), ("{IP}", ip.as_str()), ("{PORT}", port_number.as_str()), ("{VNID}", vnid.as_str())];
        let rule = service_rule(oxsdn_tables::t60_service::PORT);
        let counter = total(&maps.service_stats, port.slot)?;
        flows.push(flow(rule, RuleRef::Service { slot: port.slot, rule: rule.id }, &cfg, &values, counter));
    }
    for entry in maps.service_ips.iter() {
        let (ip, svc) = entry?;
        let (ip, vnid) = (ip_from_key(ip).to_string(), vnid(svc.project_slot, svc.project_id));
        let values = [("{IP}", ip.as_str()), ("{VNID}", vnid.as_str())];
        let rule = service_rule(oxsdn_tables::t60_service::LATER_FRAGMENTS);
        let counter = total(&maps.service_stats, svc.slot)?;
        flows.push(flow(rule, RuleRef::Service { slot: svc.slot, rule: rule.id }, &cfg, &values, counter));
    }
    for entry in maps.policy_slots.iter() {
        let (slot, policy) = entry?;
        let name = policy.name();
        for rule in rules_of(Scope::Policy) {
            let counter = total(&maps.policy_stats, stats::policy_index(slot, rule.id))?;
            flows.push(flow(rule, RuleRef::Policy { slot, rule: rule.id }, &cfg, &[("{POLICY}", &name)], counter));
        }
    }
    for entry in maps.egress_cidrs.iter() {
        let (key, verdict) = entry?;
        flows.push(egress(&key, &verdict, &cfg, total(&maps.egress_stats, verdict.slot)?));
    }
    flows.sort_by(|a, b| {
        (a.table, std::cmp::Reverse(a.priority), &a.matches).cmp(&(b.table, std::cmp::Reverse(b.priority), &b.matches))
    });
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
            expand("arp,arp_spa={GW},arp_tpa={C},{L},{S},in_port={PORT}", &cfg, &[("{PORT}", "veth1")]),
            "arp,arp_spa=10.128.2.1,arp_tpa=10.128.0.0/14,10.128.2.0/23,172.30.0.0/16,in_port=veth1"
        );
    }

    #[test]
    fn prints_like_ovs_ofctl() {
        let flow = Flow {
            id: RuleRef::NodeWide { rule: oxsdn_tables::t80_isolation::ISOLATED },
            table: 80,
            priority: 0,
            matches: String::new(),
            actions: "drop".into(),
            counter: Counter { packets: 3, bytes: 294 },
        };
        assert_eq!(flow.to_string(), " table=80, n_packets=3, n_bytes=294, priority=0 actions=drop");
    }
}
