//! Host ports (CNI `portMappings`): `hostIP:hostPort/protocol` on the node reaches a
//! pod's `containerPort`. As OpenShift SDN's node (kubelet's hostport syncer, iptables
//! `KUBE-HOSTPORTS` with tun0 as the hairpin interface), the translation is the kernel's
//! DNAT, in an nftables table of our own (`ip oxsdn-hostports`): what arrives from the
//! underlay, from pods (through tun0) or from the node itself is addressed to the node,
//! so it is the host stack's to translate, and conntrack turns the replies back.
//! The DNAT'ed packet then enters the pod network through tun0 like any traffic of
//! the node. A pod's own connection is masqueraded to tun0's address as well, so the
//! reply comes back through the host stack (docs/design.md, "Host ports").
//! The table is rewritten whole and atomically from the pod table at each change.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use ipnetwork::Ipv4Network;
use nftables::{helper::apply_ruleset, schema::Nftables};
use oxsdn_cni::runtime_config::PortMapping;
use serde_json::{json, Value};

pub const TABLE: &str = "oxsdn-hostports";
const CHAIN: &str = "hostports";

/// A host port of a local pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub mapping: PortMapping,
    pub pod_ip: Ipv4Addr,
}

fn command(verb: &str, object: Value) -> Value {
    json!({ verb: object })
}

fn table() -> Value {
    json!({"table": {"family": "ip", "name": TABLE}})
}

fn base_chain(name: &str, hook: &str, prio: i32) -> Value {
    json!({"chain": {"family": "ip", "table": TABLE, "name": name, "type": "nat", "hook": hook, "prio": prio, "policy": "accept"}})
}

fn rule(chain: &str, expr: Vec<Value>, comment: String) -> Value {
    json!({"rule": {"family": "ip", "table": TABLE, "chain": chain, "expr": expr, "comment": comment}})
}

fn field_is(protocol: &str, field: &str, value: Value) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": field}}, "right": value}})
}

fn transport(m: &PortMapping, port: u16) -> [Value; 2] {
    [
        json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": m.protocol.as_str()}}),
        field_is("th", "dport", json!(port)),
    ]
}

/// The whole table for `ports`: DNAT at prerouting (from the underlay and from pods
/// through tun0) and output (from the node), masquerade of pods' own connections.
pub fn ruleset(ports: &[HostPort], cluster_network: Ipv4Network, tun0: &str) -> Value {
    // Kernel priorities "dstnat" and "srcnat".
    const DSTNAT: i32 = -100;
    const SRCNAT: i32 = 100;
    // add + delete + add: the table exists afterwards with exactly these contents.
    let mut cmds = vec![
        command("add", table()),
        command("delete", table()),
        command("add", table()),
        command("add", base_chain("prerouting", "prerouting", DSTNAT)),
        command("add", base_chain("output", "output", DSTNAT)),
        command("add", base_chain("postrouting", "postrouting", SRCNAT)),
        command("add", json!({"chain": {"family": "ip", "table": TABLE, "name": CHAIN}})),
    ];
    for hook in ["prerouting", "output"] {
        cmds.push(command("add", rule(hook, vec![json!({"jump": {"target": CHAIN}})], "oxsdn: host ports".into())));
    }
    let cluster = json!({"prefix": {"addr": cluster_network.network().to_string(), "len": cluster_network.prefix()}});
    for p in ports {
        let m = &p.mapping;
        // No host IP: any of the node's own addresses (kubelet's `--dst-type LOCAL`).
        let to_node = match m.host_ip {
            Some(ip) => field_is("ip", "daddr", json!(ip.to_string())),
            None => {
                json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})
            }
        };
        let mut dnat = vec![to_node];
        dnat.extend(transport(m, m.host_port));
        dnat.push(json!({"dnat": {"addr": p.pod_ip.to_string(), "port": m.container_port}}));
        cmds.push(command(
            "add",
            rule(CHAIN, dnat, format!("oxsdn: host port {m} to {}:{}", p.pod_ip, m.container_port)),
        ));

        let mut masquerade =
            vec![field_is("ip", "saddr", cluster.clone()), field_is("ip", "daddr", json!(p.pod_ip.to_string()))];
        masquerade.extend(transport(m, m.container_port));
        masquerade.push(json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}));
        masquerade.push(json!({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": tun0}}));
        masquerade.push(json!({"masquerade": null}));
        cmds.push(command(
            "add",
            rule(
                "postrouting",
                masquerade,
                format!("oxsdn: pods' connections to host port {m} come back through the node"),
            ),
        ));
    }
    json!({"nftables": cmds})
}

/// Makes the node's host-port table equal to `ports`.
pub fn sync(ports: &[HostPort], cluster_network: Ipv4Network, tun0: &str) -> Result<()> {
    let ruleset: Nftables = serde_json::from_value(ruleset(ports, cluster_network, tun0))
        .context("building the host ports' nftables ruleset")?;
    apply_ruleset(&ruleset).context("programming the host ports with nft")
}

/// Removes the table (uninstall).
pub fn remove() -> Result<()> {
    let ruleset: Nftables =
        serde_json::from_value(json!({"nftables": [command("add", table()), command("delete", table())]}))
            .context("building the host ports' nftables ruleset")?;
    apply_ruleset(&ruleset).context("removing the oxsdn-hostports nftables table")
}
