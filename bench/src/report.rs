//! The targets as mechanically checkable ratios, and `RESULTS.md` rendered from the
//! results JSON alone (so anyone can regenerate it from a JSON file).

use std::fmt::Write;

use serde_json::{json, Map, Value};

/// The figures every scenario is measured on: key, heading, unit.
pub const FIGURES: [(&str, &str, &str); 5] = [
    ("tcp_1_stream_gbps", "TCP, 1 stream", "Gbit/s"),
    ("tcp_4_streams_gbps", "TCP, 4 streams", "Gbit/s"),
    ("rtt_p50_us", "Ping round trip, p50", "µs"),
    ("rtt_p99_us", "Ping round trip, p99", "µs"),
    ("udp_64b_pps", "UDP 64-byte datagrams received", "packets/s"),
];

enum Cmp {
    AtLeast,
    AtMost,
}

/// Where what was measured about a target lies (repository paths): why it is missed or
/// what bounds it.
fn account(key: &str) -> Option<&'static str> {
    Some(match key {
        k if k.starts_with("same_node") || k == "cross_node_tcp1_vs_kernel_vxlan" => {
            "docs/design.md#what-bounds-the-same-node-and-cross-node-figures"
        }
        "cross_node_rtt_p50_minus_kernel_vxlan_us" => "docs/design.md#native-vxlan-the-programs-put-the-headers-on-and-take-them-off",
        "cross_node_tcp1_vs_ovs_userspace" => "bench/README.md#open-vswitch-userspace-datapath",
        "egress_tcp1_vs_node_egress" => "docs/design.md#egress-path-what-was-measured-2026-11-25-issue-5",
        "cni_add_p99_concurrent_ms" => "bench/README.md#cni-add-with-20-pods-at-once-where-the-time-goes",
        "longest_path_without_encapsulation_ns" => "docs/design.md#per-packet-cost-of-each-path-issue-5",
        _ => return None,
    })
}

/// One target: `value` compared with `target`.
fn entry(what: &str, value: Option<f64>, cmp: Cmp, target: f64) -> Value {
    paired_entry(what, value.map(|v| (v, Vec::new())), cmp, target)
}

/// One target on a comparison of two scenarios: the median of the per-round values,
/// which are recorded too.
fn paired_entry(what: &str, value: Option<(f64, Vec<f64>)>, cmp: Cmp, target: f64) -> Value {
    let comparison = match cmp {
        Cmp::AtLeast => ">=",
        Cmp::AtMost => "<=",
    };
    let Some((value, per_round)) = value else {
        return json!({ "what": what, "value": null, "comparison": comparison, "target": target, "met": false, "note": "a figure it needs is missing" });
    };
    let margin = match cmp {
        Cmp::AtLeast => value - target,
        Cmp::AtMost => target - value,
    };
    let mut e = json!({ "what": what, "value": value, "comparison": comparison, "target": target, "met": margin >= 0.0, "margin": margin });
    if !per_round.is_empty() {
        e["per_round"] = json!(per_round);
    }
    e
}

/// `a` against `b` on `figure` by `op` (a ratio, a difference): per round, from the
/// samples the two took in the same round, and the median of those; the medians' `op`
/// when the rounds cannot be paired.
fn paired(scenarios: &Value, a: &str, b: &str, figure: &str, op: fn(f64, f64) -> f64) -> Option<(f64, Vec<f64>)> {
    let samples = |s: &str| -> Option<Vec<f64>> { scenarios[s][figure]["samples"].as_array()?.iter().map(Value::as_f64).collect() };
    match (samples(a), samples(b)) {
        (Some(x), Some(y)) if x.len() == y.len() && !x.is_empty() => {
            let per_round: Vec<f64> = x.iter().zip(&y).map(|(x, y)| op(*x, *y)).collect();
            Some((crate::measure::Stats::of(&per_round).median, per_round))
        }
        _ => Some((op(scenarios[a][figure]["median"].as_f64()?, scenarios[b][figure]["median"].as_f64()?), Vec::new())),
    }
}

/// The targets of the benchmark issue, from the paired rounds in `scenarios`, the CNI
/// figures, the per-path costs and the scale figures.
pub fn ratios(scenarios: &Value, cni: &Value, cost: &Value, scale: &Value) -> Value {
    let largest_agent_rss = scale["memory"].as_object().and_then(|nodes| {
        nodes.values().filter_map(|n| n["agent"]["vm_rss_mib"].as_f64()).reduce(f64::max)
    });
    let ratio = |a: &str, b: &str, f: &str| paired(scenarios, a, b, f, |x, y| x / y);
    let minus = |a: &str, b: &str, f: &str| paired(scenarios, a, b, f, |x, y| x - y);
    let tcp = "tcp_1_stream_gbps";
    let mut targets = json!({
        "same_node_tcp1_vs_raw_veth": paired_entry("oxsdn-same-node / raw-veth, TCP 1 stream", ratio("oxsdn-same-node", "raw-veth", tcp), Cmp::AtLeast, 0.95),
        "same_node_tcp1_vs_linux_bridge": paired_entry("oxsdn-same-node / linux-bridge, TCP 1 stream", ratio("oxsdn-same-node", "linux-bridge", tcp), Cmp::AtLeast, 1.0),
        "same_node_rtt_p50_minus_raw_veth_us": paired_entry("oxsdn-same-node − raw-veth, RTT p50 (µs)", minus("oxsdn-same-node", "raw-veth", "rtt_p50_us"), Cmp::AtMost, 3.0),
        "same_node_udp_pps_vs_raw_veth": paired_entry("oxsdn-same-node / raw-veth, UDP 64 B packets/s", ratio("oxsdn-same-node", "raw-veth", "udp_64b_pps"), Cmp::AtLeast, 0.9),
        "cross_node_tcp1_vs_kernel_vxlan": paired_entry("oxsdn-cross-node / kernel-vxlan, TCP 1 stream", ratio("oxsdn-cross-node", "kernel-vxlan", tcp), Cmp::AtLeast, 1.15),
        "cross_node_tcp1_vs_ovs_userspace": paired_entry("oxsdn-cross-node / ovs-userspace-cross-node, TCP 1 stream", ratio("oxsdn-cross-node", "ovs-userspace-cross-node", tcp), Cmp::AtLeast, 10.0),
        "cross_node_rtt_p50_minus_kernel_vxlan_us": paired_entry("oxsdn-cross-node − kernel-vxlan, RTT p50 (µs)", minus("oxsdn-cross-node", "kernel-vxlan", "rtt_p50_us"), Cmp::AtMost, 0.0),
        "service_tcp1_vs_cross_node": paired_entry("oxsdn-service / oxsdn-cross-node, TCP 1 stream", ratio("oxsdn-service", "oxsdn-cross-node", tcp), Cmp::AtLeast, 0.9),
        "egress_tcp1_vs_node_egress": paired_entry("oxsdn-egress / node-egress, TCP 1 stream", ratio("oxsdn-egress", "node-egress", tcp), Cmp::AtLeast, 0.9),
        "cni_add_p99_concurrent_ms": entry("CNI ADD p99 with concurrent pods (ms)", cni["add_concurrent_ms"]["p99"].as_f64(), Cmp::AtMost, 50.0),
        "longest_path_without_encapsulation_ns": entry("per-packet cost of the longest path without encapsulation (ns)", cost["longest_without_encapsulation"]["ns_per_packet"].as_f64(), Cmp::AtMost, 100.0),
        "scale_agent_rss_mib": entry("agent resident memory with the scale load (MiB)", largest_agent_rss, Cmp::AtMost, 64.0),
    });
    for (key, target) in targets.as_object_mut().into_iter().flatten() {
        if let Some(doc) = account(key) {
            target["account"] = json!(doc);
        }
    }
    targets
}

/// A number for a table: three significant digits or so, no exponent.
fn num(v: &Value) -> String {
    match v.as_f64() {
        None if v.is_null() => "–".into(),
        None => v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

/// `RESULTS.md` for a results JSON.
pub fn markdown(results: &Value) -> String {
    let meta = &results["meta"];
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmark results\n");
    let _ = writeln!(
        md,
        "Generated by `oxsdn-bench` from `{}` (do not edit by hand: rerun `make bench`).\n",
        meta["json"].as_str().unwrap_or("the results JSON")
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    for (key, label) in [
        ("date", "run (UTC)"),
        ("command", "command"),
        ("git_commit", "commit"),
        ("cpu_model", "CPU"),
        ("cpus", "CPUs"),
        ("kernel", "kernel"),
        ("rounds", "rounds (interleaved)"),
        ("iperf_seconds", "seconds per iperf3 run"),
        ("pings", "pings per round (5 ms apart)"),
        ("load_average_before", "load average before (1, 5, 15 min)"),
        ("load_average_after", "load average after"),
    ] {
        if !meta[key].is_null() {
            let _ = writeln!(md, "| {label} | {} |", num(&meta[key]).replace('|', "\\|"));
        }
    }
    if let Some(method) = results["method"].as_object() {
        let _ = writeln!(md, "\nMethod:\n");
        for (k, v) in method {
            let _ = writeln!(md, "- **{k}**: {}", v.as_str().unwrap_or_default());
        }
    }

    let _ = writeln!(md, "\n## Targets\n");
    let _ = writeln!(
        md,
        "Each comparison is the median of its per-round values (the two scenarios measured \
         seconds apart in each round). Where a target is missed, the last column links what was \
         measured about why.\n"
    );
    let _ = writeln!(md, "| target | value | needed | met | margin | per round | measured account |\n|---|---|---|---|---|---|---|");
    if let Some(ratios) = results["ratios"].as_object() {
        for (key, r) in ratios {
            let met = if r["met"].as_bool() == Some(true) { "yes" } else { "**no**" };
            let margin = match r["margin"].as_f64() {
                Some(m) if m >= 0.0 => format!("by {}", num(&json!(m))),
                Some(m) => format!("missed by {}", num(&json!(-m))),
                None => r["note"].as_str().unwrap_or_default().to_string(),
            };
            let needed = format!("{} {}", r["comparison"].as_str().unwrap_or(""), num(&r["target"]));
            let per_round = r["per_round"].as_array().map(|v| v.iter().map(num).collect::<Vec<_>>().join(", ")).unwrap_or_default();
            // RESULTS.md lives in bench/: links are relative to it.
            // Also for results recorded before the JSON carried it.
            let account = r["account"].as_str().or(account(key)).map(|doc| {
                let link = doc.strip_prefix("bench/").map(str::to_string).unwrap_or_else(|| format!("../{doc}"));
                format!("[{}]({link})", doc.split('#').next().unwrap_or(doc))
            });
            let _ = writeln!(
                md,
                "| {} | {} | {} | {met} | {margin} | {per_round} | {} |",
                r["what"].as_str().unwrap_or_default(),
                num(&r["value"]),
                needed.trim(),
                account.unwrap_or_default()
            );
        }
    }

    let scenarios = results["scenarios"].as_object().cloned().unwrap_or_default();
    for (key, heading, unit) in FIGURES {
        let _ = writeln!(md, "\n## {heading} ({unit})\n\n| scenario | median | min | max |\n|---|---|---|---|");
        for (name, s) in &scenarios {
            let f = &s[key];
            if f["median"].is_null() {
                let why = f["not_measured"].as_str().or(s["error"].as_str()).unwrap_or("not measured");
                let _ = writeln!(md, "| {name} | – | – | – ({}) |", why.replace('|', "\\|").replace('\n', " "));
            } else {
                let _ = writeln!(md, "| {name} | {} | {} | {} |", num(&f["median"]), num(&f["min"]), num(&f["max"]));
            }
        }
    }

    // The other sections (CNI latency, per-path costs, scale…), whatever their shape.
    let known = ["meta", "method", "ratios", "scenarios"];
    for (key, value) in results.as_object().into_iter().flatten().filter(|(k, _)| !known.contains(&k.as_str())) {
        let _ = writeln!(md, "\n## {key}\n\n| figure | value |\n|---|---|");
        let mut rows = Vec::new();
        flatten("", value, &mut rows);
        for (path, v) in rows {
            let _ = writeln!(md, "| {path} | {} |", num(&v).replace('|', "\\|").replace('\n', " "));
        }
    }
    md
}

/// Leaves of `value` with their dotted paths.
fn flatten(path: &str, value: &Value, rows: &mut Vec<(String, Value)>) {
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten(&join(k), v, rows)),
        Value::Array(items) if items.iter().any(|v| v.is_object() || v.is_array()) => {
            items.iter().enumerate().for_each(|(i, v)| flatten(&join(&i.to_string()), v, rows))
        }
        Value::Array(items) => rows.push((path.to_string(), Value::String(items.iter().map(num).collect::<Vec<_>>().join(", ")))),
        leaf => rows.push((path.to_string(), leaf.clone())),
    }
}

/// A figure's samples as median/min/max (plus the samples), for the JSON.
pub fn figure(samples: &[f64]) -> Value {
    let s = crate::measure::Stats::of(samples);
    json!({ "median": s.median, "min": s.min, "max": s.max, "samples": samples })
}

/// An object of the entries of `pairs`.
pub fn object(pairs: impl IntoIterator<Item = (String, Value)>) -> Value {
    Value::Object(pairs.into_iter().collect::<Map<String, Value>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_compare_medians_in_the_stated_direction() {
        let fig = |m: f64| json!({ "median": m });
        let scenarios = json!({
            "raw-veth": { "tcp_1_stream_gbps": fig(20.0), "rtt_p50_us": fig(40.0), "udp_64b_pps": fig(1000.0) },
            "oxsdn-same-node": { "tcp_1_stream_gbps": fig(19.0), "rtt_p50_us": fig(44.0), "udp_64b_pps": fig(950.0) },
        });
        let cost = json!({ "longest_without_encapsulation": { "ns_per_packet": 120.0 } });
        let scale = json!({ "memory": { "node1": { "agent": { "vm_rss_mib": 20.0 } }, "node2": { "agent": { "vm_rss_mib": 70.0 } } } });
        let r = ratios(&scenarios, &json!({ "add_concurrent_ms": { "p99": 60.0 } }), &cost, &scale);
        assert_eq!(r["same_node_tcp1_vs_raw_veth"]["met"], true);
        assert_eq!(r["same_node_tcp1_vs_raw_veth"]["value"], 0.95);
        assert_eq!(r["same_node_rtt_p50_minus_raw_veth_us"]["met"], false);
        assert_eq!(r["same_node_rtt_p50_minus_raw_veth_us"]["margin"], -1.0);
        assert_eq!(r["same_node_udp_pps_vs_raw_veth"]["met"], true);
        assert_eq!(r["cni_add_p99_concurrent_ms"]["met"], false);
        assert_eq!(r["cross_node_tcp1_vs_kernel_vxlan"]["met"], false);
        assert!(r["cross_node_tcp1_vs_kernel_vxlan"]["value"].is_null());
        assert_eq!(r["longest_path_without_encapsulation_ns"]["margin"], -20.0);
        // The largest agent counts.
        assert_eq!(r["scale_agent_rss_mib"]["value"], 70.0);
        assert_eq!(r["scale_agent_rss_mib"]["met"], false);
    }

    #[test]
    fn comparisons_pair_the_samples_of_each_round() {
        let fig = |samples: &[f64]| json!({ "samples": samples, "median": crate::measure::Stats::of(samples).median });
        let scenarios = json!({
            "raw-veth": { "tcp_1_stream_gbps": fig(&[10.0, 25.0, 10.0]), "rtt_p50_us": fig(&[40.0, 20.0, 30.0]) },
            "oxsdn-same-node": { "tcp_1_stream_gbps": fig(&[10.0, 20.0, 12.0]), "rtt_p50_us": fig(&[45.0, 21.0, 31.0]) },
        });
        let r = ratios(&scenarios, &json!({}), &json!({}), &json!({}));
        // Per round 1.0, 0.8, 1.2: median 1.0 (the medians' ratio would read 1.2).
        assert_eq!(r["same_node_tcp1_vs_raw_veth"]["value"], 1.0);
        assert_eq!(r["same_node_tcp1_vs_raw_veth"]["per_round"], json!([1.0, 0.8, 1.2]));
        assert_eq!(r["same_node_rtt_p50_minus_raw_veth_us"]["value"], 1.0);
        assert_eq!(r["same_node_rtt_p50_minus_raw_veth_us"]["met"], true);
        let md = markdown(&json!({ "ratios": r }));
        assert!(md.contains("| 1, 0.800, 1.200 | [docs/design.md](../docs/design.md#what-bounds-the-same-node-and-cross-node-figures) |"), "{md}");
    }

    #[test]
    fn unknown_sections_render_as_flat_tables() {
        let md = markdown(&json!({ "cost": { "from_pod": { "ns": 41.5, "runs": [1, 2] } } }));
        assert!(md.contains("## cost"), "{md}");
        assert!(md.contains("| from_pod.ns | 41.5 |"), "{md}");
        assert!(md.contains("| from_pod.runs | 1, 2 |"), "{md}");
    }
}
