//! What the dataplane counted, read from the node's pinned maps at each scrape: the
//! rules' counters (those of `dump-flows`, per-pod, per-node and per-service rules
//! summed per rule), drops by rule and by source, map occupancy against capacity, the
//! connection tables' shares, the monitor's events; and the agent's own state (mirrors,
//! starts).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{Arc, Mutex},
};

use anyhow::Result;
use aya::maps::{MapData, PerCpuArray};
use oxsdn_common::{
    conntrack::{HOST_OWNER, TUNNEL_OWNER},
    maps::{MapKind, SPECS},
    monitor::{MonitorBudget, UNIDENTIFIED_POD},
    LAYOUT_VERSION,
};
use oxsdn_tables::rule::{is_drop, Scope};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use super::{global, Starts};
use crate::{
    conntrack::Shares,
    flows,
    maps::{monotonic_ns, LocalPods, NodeMaps},
    mirror::projects::Projects,
};

/// Reads the node's maps for each scrape.
pub struct NodeCollector {
    maps: Mutex<NodeMaps>,
    shares: Shares,
    projects: Arc<Projects>,
    starts: Starts,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector").finish_non_exhaustive()
    }
}

/// One rule's counter summed over its owners.
#[derive(Default)]
struct RuleTotal {
    scope: &'static str,
    packets: u64,
    bytes: u64,
}

/// What one scrape read.
struct Snapshot {
    /// By (table, rule name).
    rules: BTreeMap<(u8, &'static str), RuleTotal>,
    /// Drops by source: (source kind, project name) -> packets.
    drop_sources: Vec<(&'static str, String, u64)>,
    /// Map name -> entries.
    entries: Vec<(&'static str, u64)>,
    ct_quota: u32,
    largest_share: u32,
    owners_at_quota: u64,
    monitor_active: bool,
    monitor: MonitorBudget,
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Node => "node",
        Scope::Pod => "pod",
        Scope::RemoteNode => "remote_node",
        Scope::Service => "service",
        Scope::Policy => "policy",
        Scope::Egress => "egress",
    }
}

fn per_cpu_sum(map: &PerCpuArray<MapData, u64>, index: u32) -> Result<u64> {
    Ok(map.get(&index, 0)?.iter().sum())
}

impl NodeCollector {
    pub fn new(pin_dir: &std::path::Path, projects: Arc<Projects>, starts: Starts) -> Result<Self> {
        Ok(NodeCollector {
            maps: Mutex::new(NodeMaps::open(pin_dir)?),
            shares: Shares::open(pin_dir)?,
            projects,
            starts,
        })
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let maps = self.maps.lock().unwrap();
        let mut rules: BTreeMap<(u8, &'static str), RuleTotal> = BTreeMap::new();
        for flow in flows::collect(&maps, |ifindex| ifindex.to_string())? {
            let rule = flow.id.declaration();
            let total = rules.entry((rule.table, rule.name)).or_default();
            total.scope = scope_name(rule.scope);
            total.packets += flow.counter.packets;
            total.bytes += flow.counter.bytes;
        }

        // Drops by source: every project with a pod here, the host, the tunnel, and
        // pods' frames dropped before they were identified.
        let names = self.projects.names_by_slot();
        let local: BTreeSet<u32> = maps.local_pods()?.into_iter().map(|(_, pod)| pod.project_slot).collect();
        let mut drop_sources = Vec::new();
        for slot in local {
            if let Some(name) = names.get(&slot) {
                drop_sources.push(("project", name.clone(), per_cpu_sum(&maps.source_drops, slot)?));
            }
        }
        for (source, index) in [("host", HOST_OWNER), ("tunnel", TUNNEL_OWNER), ("unidentified_pod", UNIDENTIFIED_POD)]
        {
            drop_sources.push((source, String::new(), per_cpu_sum(&maps.source_drops, index)?));
        }

        let tracked = global().tracked_connections();
        let count = |n: usize| n as u64;
        let entries = vec![
            ("PODS", count(maps.local_pods()?.len())),
            ("PROJECTS", count(names.len())),
            ("REMOTE_SUBNETS", count(maps.remote_subnets.keys().count())),
            ("NODE_IPS", count(maps.node_ips.keys().count())),
            ("SERVICES", count(maps.services.keys().count())),
            ("SERVICE_IPS", count(maps.service_ips.keys().count())),
            ("ENDPOINTS", count(maps.endpoints.keys().count())),
            ("ENDPOINT_SET", count(maps.endpoint_set.keys().count())),
            ("DRAINING", count(maps.draining.keys().count())),
            ("CT_FORWARD", tracked),
            ("CT_REVERSE", tracked),
            ("FRAGMENTS", count(maps.fragments.keys().count())),
            ("STORE_ENDPOINTS", count(maps.store_endpoints.keys().count())),
            ("IP_IDENTITIES", count(maps.ip_identities.keys().count())),
            ("POLICY_PEERS", count(maps.policy_peers.keys().count())),
            ("POLICY_CIDRS", count(maps.policy_cidrs.keys().count())),
            ("EGRESS_CIDRS", count(maps.egress_cidrs.keys().count())),
            ("POLICY_CT", count(maps.policy_ct.keys().count())),
            ("POLICY_SLOTS", count(maps.policy_slots.keys().count())),
        ];

        let cfg = maps.config.get(&0, 0)?;
        let shares: Vec<u32> =
            (0..oxsdn_common::conntrack::SHARES).map(|owner| self.shares.get(owner)).filter(|&n| n > 0).collect();
        let monitor_config = maps.monitor_config.get(&0, 0)?;
        let monitor = maps.monitor_budget.get(&0, 0)?.iter().fold(MonitorBudget::default(), |acc, b| MonitorBudget {
            emitted: acc.emitted + b.emitted,
            suppressed: acc.suppressed + b.suppressed,
            ..acc
        });
        Ok(Snapshot {
            rules,
            drop_sources,
            entries,
            ct_quota: cfg.ct_quota,
            largest_share: shares.iter().copied().max().unwrap_or(0),
            owners_at_quota: shares.iter().filter(|&&n| cfg.ct_quota != 0 && n >= cfg.ct_quota).count() as u64,
            monitor_active: monitor_config.flags != 0 && monitor_config.lease_until > monotonic_ns(),
            monitor,
        })
    }
}

/// Writes one metric family of constant samples.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn one<M: EncodeMetric>(value: M) -> [([(&'static str, &'static str); 0], M); 1] {
    [([], value)]
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snapshot = self.snapshot();
        family(
            &mut e,
            "oxsdn_dataplane_readable",
            "Whether this scrape could read the node's pinned maps (0: the dataplane metrics are missing)",
            MetricType::Gauge,
            one(ConstGauge::new(i64::from(snapshot.is_ok()))),
        )?;
        self.encode_agent(&mut e)?;
        match snapshot {
            Ok(s) => encode_dataplane(&mut e, &s),
            Err(err) => {
                tracing::warn!("reading the dataplane for metrics: {err:#}");
                Ok(())
            }
        }
    }
}

impl NodeCollector {
    fn encode_agent(&self, e: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let m = global();
        family(
            e,
            "oxsdn_agent_starts",
            "Agent starts on this node (kept in its state directory)",
            MetricType::Counter,
            one(ConstCounter::new(self.starts.starts)),
        )?;
        family(
            e,
            "oxsdn_dataplane_rebuilds",
            "Times an agent found pins of another layout and built the dataplane afresh",
            MetricType::Counter,
            one(ConstCounter::new(self.starts.dataplane_rebuilds)),
        )?;
        family(
            e,
            "oxsdn_agent_start_time_seconds",
            "When this agent started (Unix time)",
            MetricType::Gauge,
            one(ConstGauge::new(super::unix_ms(m.started()) as f64 / 1000.0)),
        )?;
        family(
            e,
            "oxsdn_build_info",
            "The agent's version and the layout version of its maps",
            MetricType::Gauge,
            [(
                [("version", env!("CARGO_PKG_VERSION").to_string()), ("layout_version", LAYOUT_VERSION.to_string())],
                ConstGauge::new(1i64),
            )],
        )?;
        let mirrors = m.mirrors();
        family(
            e,
            "oxsdn_store_last_sync_timestamp_seconds",
            "When each mirror of the store last made the dataplane equal to it (a list, or an event applied)",
            MetricType::Gauge,
            mirrors.iter().map(|h| ([("kind", h.kind.clone())], ConstGauge::new(h.last_sync_unix_ms as f64 / 1000.0))),
        )?;
        family(
            e,
            "oxsdn_store_watching",
            "Whether each mirror's watch on the store is open",
            MetricType::Gauge,
            mirrors.iter().map(|h| ([("kind", h.kind.clone())], ConstGauge::new(i64::from(h.watching)))),
        )
    }
}

fn encode_dataplane(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), fmt::Error> {
    let rule_labels = |&(table, rule): &(u8, &'static str), t: &RuleTotal| {
        [("table", table.to_string()), ("rule", rule.to_string()), ("scope", t.scope.to_string())]
    };
    family(
        e,
        "oxsdn_rule_packets",
        "Packets each rule of the tables matched (dump-flows' n_packets; per-pod, per-node and per-service rules summed)",
        MetricType::Counter,
        s.rules.iter().map(|(k, t)| (rule_labels(k, t), ConstCounter::new(t.packets))),
    )?;
    family(
        e,
        "oxsdn_rule_bytes",
        "Bytes each rule of the tables matched (dump-flows' n_bytes)",
        MetricType::Counter,
        s.rules.iter().map(|(k, t)| (rule_labels(k, t), ConstCounter::new(t.bytes))),
    )?;
    let drops = || {
        s.rules.iter().filter(|((table, name), t)| {
            t.scope == "node"
                && oxsdn_tables::rules()
                    .any(|r| r.table == *table && r.name == *name && is_drop(r.id) && r.scope == Scope::Node)
        })
    };
    family(
        e,
        "oxsdn_drop_packets",
        "Packets dropped, by the rule (table and name) that dropped them",
        MetricType::Counter,
        drops().map(|((table, rule), t)| {
            ([("table", table.to_string()), ("rule", rule.to_string())], ConstCounter::new(t.packets))
        }),
    )?;
    family(
        e,
        "oxsdn_drop_bytes",
        "Bytes dropped, by the rule that dropped them",
        MetricType::Counter,
        drops().map(|((table, rule), t)| {
            ([("table", table.to_string()), ("rule", rule.to_string())], ConstCounter::new(t.bytes))
        }),
    )?;
    family(
        e,
        "oxsdn_drop_source_packets",
        "Packets dropped, by their source: the project of a pod on this node, the host, the tunnel, or a pod frame \
         dropped before it was identified (spoofed, VLAN, not IP)",
        MetricType::Counter,
        s.drop_sources.iter().map(|(source, project, n)| {
            ([("source", source.to_string()), ("project", project.clone())], ConstCounter::new(*n))
        }),
    )?;
    family(
        e,
        "oxsdn_map_entries",
        "Entries in each map of the dataplane (CT_*: as of the last sweep, every 5 s)",
        MetricType::Gauge,
        s.entries.iter().map(|(map, n)| ([("map", map.to_string())], ConstGauge::new(*n))),
    )?;
    family(
        e,
        "oxsdn_map_capacity",
        "Capacity of each map of the dataplane (its max_entries)",
        MetricType::Gauge,
        SPECS
            .iter()
            .filter(|spec| spec.kind != MapKind::RingBuf && s.entries.iter().any(|(m, _)| *m == spec.name))
            .map(|spec| ([("map", spec.name.to_string())], ConstGauge::new(u64::from(spec.max_entries)))),
    )?;
    family(
        e,
        "oxsdn_conntrack_quota",
        "Connections each project (and the host, and the tunnel) may hold (--ct-quota; 0: no limit)",
        MetricType::Gauge,
        one(ConstGauge::new(s.ct_quota)),
    )?;
    family(
        e,
        "oxsdn_conntrack_largest_share",
        "Connections held by the owner holding the most",
        MetricType::Gauge,
        one(ConstGauge::new(s.largest_share)),
    )?;
    family(
        e,
        "oxsdn_conntrack_owners_at_quota",
        "Owners (projects, host, tunnel) whose new service connections are refused for their quota",
        MetricType::Gauge,
        one(ConstGauge::new(s.owners_at_quota)),
    )?;
    family(
        e,
        "oxsdn_monitor_active",
        "Whether an oxsdnctl monitor is attached to this node's programs",
        MetricType::Gauge,
        one(ConstGauge::new(i64::from(s.monitor_active))),
    )?;
    family(
        e,
        "oxsdn_monitor_events",
        "Monitor events the programs emitted, and those they suppressed (rate limit, full ring)",
        MetricType::Counter,
        [
            ([("outcome", "emitted")], ConstCounter::new(s.monitor.emitted)),
            ([("outcome", "suppressed")], ConstCounter::new(s.monitor.suppressed)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn a_rule_series_is_named_by_table_and_rule_alone() {
        let mut seen = HashSet::new();
        for rule in oxsdn_tables::rules() {
            assert!(seen.insert((rule.table, rule.name)), "table {} {} twice", rule.table, rule.name);
        }
    }
}
