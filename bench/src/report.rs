//! The targets as mechanically checkable ratios, and `RESULTS.md` rendered from the
//! results JSON alone (so anyone can regenerate it from a JSON file).

use std::fmt::Write;

use serde_json::{json, Map, Value};

/// What a figure measures, which decides how it is rendered and checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// How much got through (higher is better; a smoke run needs it above 0).
    Traffic,
    /// Round-trip time.
    Latency,
    /// CPU time per unit of traffic, net of the background (lower is better).
    Cost,
}

/// How two samples of a figure are compared: as a ratio, or as a difference in the
/// figure's unit (round trips: a few µs matter whatever the base).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Compare {
    Ratio,
    Difference,
}

pub struct Figure {
    pub key: &'static str,
    pub heading: &'static str,
    pub unit: &'static str,
    pub kind: Kind,
    pub compare: Compare,
}

const fn figure_of(key: &'static str, heading: &'static str, unit: &'static str, kind: Kind) -> Figure {
    let compare = if matches!(kind, Kind::Latency) { Compare::Difference } else { Compare::Ratio };
    Figure { key, heading, unit, kind, compare }
}

/// The figures every scenario is measured on. The CPU figures come from the same runs as
/// the traffic figure before them: `…_cpu_…` counts the whole machine, `…_cgroup_cpu_…`
/// the run's cgroup (src/cpu.rs).
pub const FIGURES: [Figure; 13] = [
    figure_of("tcp_1_stream_gbps", "TCP, 1 stream", "Gbit/s", Kind::Traffic),
    figure_of("tcp_1_stream_cpu_s_per_gb", "CPU time per GB, TCP 1 stream, machine", "CPU-s/GB", Kind::Cost),
    figure_of("tcp_1_stream_cgroup_cpu_s_per_gb", "CPU time per GB, TCP 1 stream, cgroup", "CPU-s/GB", Kind::Cost),
    figure_of("tcp_4_streams_gbps", "TCP, 4 streams", "Gbit/s", Kind::Traffic),
    figure_of("tcp_4_streams_cpu_s_per_gb", "CPU time per GB, TCP 4 streams, machine", "CPU-s/GB", Kind::Cost),
    figure_of("tcp_4_streams_cgroup_cpu_s_per_gb", "CPU time per GB, TCP 4 streams, cgroup", "CPU-s/GB", Kind::Cost),
    figure_of("rtt_p50_us", "Ping round trip, p50", "µs", Kind::Latency),
    figure_of("rtt_p99_us", "Ping round trip, p99", "µs", Kind::Latency),
    figure_of("udp_64b_pps", "UDP 64-byte datagrams received", "packets/s", Kind::Traffic),
    figure_of(
        "udp_64b_cpu_ns_per_packet",
        "CPU time per UDP 64-byte datagram received, machine",
        "CPU-ns/packet",
        Kind::Cost,
    ),
    figure_of(
        "udp_64b_cgroup_cpu_ns_per_packet",
        "CPU time per UDP 64-byte datagram received, cgroup",
        "CPU-ns/packet",
        Kind::Cost,
    ),
    figure_of(
        "ping_cpu_ns_per_round_trip",
        "CPU time per flood-ping round trip, machine",
        "CPU-ns/round trip",
        Kind::Cost,
    ),
    figure_of(
        "ping_cgroup_cpu_ns_per_round_trip",
        "CPU time per flood-ping round trip, cgroup",
        "CPU-ns/round trip",
        Kind::Cost,
    ),
];

pub fn figure_by_key(key: &str) -> Option<&'static Figure> {
    FIGURES.iter().find(|f| f.key == key)
}

enum Cmp {
    AtLeast,
    AtMost,
}

/// Where what was measured about a target lies (repository paths): why it is missed or
/// what bounds it.
fn account(key: &str) -> Option<&'static str> {
    Some(match key {
        k if k.starts_with("same_node") || (k.starts_with("cross_node_tcp1") && k.ends_with("kernel_vxlan")) => {
            "docs/design.md#what-bounds-the-same-node-and-cross-node-figures"
        }
        "cross_node_rtt_p50_minus_kernel_vxlan_us" => {
            "docs/design.md#native-vxlan-the-programs-put-the-headers-on-and-take-them-off"
        }
        k if k.starts_with("cross_node_tcp1") && k.ends_with("ovs_userspace") => {
            "bench/README.md#open-vswitch-userspace-datapath"
        }
        k if k.starts_with("egress_tcp1") => "docs/design.md#what-bounds-the-egress-figure",
        k if k.starts_with("egress_ip_tcp1") => "docs/design.md#what-the-egress-ip-path-costs",
        "cni_add_p99_concurrent_ms" => "bench/README.md#cni-add-with-20-pods-at-once-where-the-time-goes",
        "longest_path_without_encapsulation_ns" => "docs/design.md#per-packet-cost-of-each-path",
        k if k.contains("xdp_decap") => "docs/design.md#xdp-decapsulation-for-local-pods",
        k if k.starts_with("flood") || k.contains("xdp_generic") => "docs/design.md#xdp-on-the-underlay-the-prefilter",
        _ => return None,
    })
}

/// One target: `value` compared with `target`.
fn entry(what: &str, value: Option<f64>, cmp: Cmp, target: f64) -> Value {
    let mut e = target_entry(what, value.map(|v| (v, Vec::new())), cmp, target);
    e["resolution_note"] = json!("a single figure, not a comparison of two scenarios: no A/A band");
    e
}

/// One target on comparing scenario `a` with `b` on `figure`: the median of the
/// per-round values (ratios or differences, as the figure compares), which are recorded
/// too.
fn paired_entry(what: &str, scenarios: &Value, (a, b): (&str, &str), figure: &str, cmp: Cmp, target: f64) -> Value {
    let compare = figure_by_key(figure).map_or(Compare::Ratio, |f| f.compare);
    let mut e = target_entry(what, paired(scenarios, a, b, figure, compare), cmp, target);
    e["figure"] = json!(figure);
    e["compares"] = json!([a, b]);
    e
}

fn target_entry(what: &str, value: Option<(f64, Vec<f64>)>, cmp: Cmp, target: f64) -> Value {
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

/// The samples of `figure` of scenario `name`, one per round.
fn samples(scenarios: &Value, name: &str, figure: &str) -> Option<Vec<f64>> {
    scenarios[name][figure]["samples"].as_array()?.iter().map(Value::as_f64).collect()
}

/// `a` against `b` on `figure` (their ratio or difference): per round, from the samples
/// the two took in the same round, and the median of those; the medians' ratio or
/// difference when the rounds cannot be paired.
fn paired(scenarios: &Value, a: &str, b: &str, figure: &str, compare: Compare) -> Option<(f64, Vec<f64>)> {
    let op = |x: f64, y: f64| match compare {
        Compare::Ratio => x / y,
        Compare::Difference => x - y,
    };
    match (samples(scenarios, a, figure), samples(scenarios, b, figure)) {
        (Some(x), Some(y)) if x.len() == y.len() && !x.is_empty() => {
            let per_round: Vec<f64> = x.iter().zip(&y).map(|(x, y)| op(*x, *y)).collect();
            Some((crate::measure::Stats::of(&per_round).median, per_round))
        }
        _ => Some((op(scenarios[a][figure]["median"].as_f64()?, scenarios[b][figure]["median"].as_f64()?), Vec::new())),
    }
}

/// A target on a throughput ratio, `a` / `b` ≥ `at_least`; and its twin on the ratio of
/// their CPU time per unit of traffic from the same runs, ≤ 1 / `at_least`.
struct ThroughputTarget {
    key: &'static str,
    what: &'static str,
    a: &'static str,
    b: &'static str,
    rate: &'static str,
    cpu: &'static str,
    at_least: f64,
}

const fn tcp1(key: &'static str, a: &'static str, b: &'static str, at_least: f64) -> ThroughputTarget {
    ThroughputTarget {
        key,
        what: "TCP 1 stream",
        a,
        b,
        rate: "tcp_1_stream_gbps",
        cpu: "tcp_1_stream_cpu_s_per_gb",
        at_least,
    }
}

const THROUGHPUT_TARGETS: [ThroughputTarget; 14] = [
    tcp1("same_node_tcp1_vs_raw_veth", "oxsdn-same-node", "raw-veth", 0.95),
    tcp1("same_node_tcp1_vs_linux_bridge", "oxsdn-same-node", "linux-bridge", 1.0),
    ThroughputTarget {
        key: "same_node_udp_pps_vs_raw_veth",
        what: "UDP 64 B packets/s",
        a: "oxsdn-same-node",
        b: "raw-veth",
        rate: "udp_64b_pps",
        cpu: "udp_64b_cpu_ns_per_packet",
        at_least: 0.9,
    },
    tcp1("cross_node_tcp1_vs_kernel_vxlan", "oxsdn-cross-node", "kernel-vxlan", 1.15),
    tcp1("cross_node_tcp1_vs_ovs_userspace", "oxsdn-cross-node", "ovs-userspace-cross-node", 10.0),
    // What the underlay's XDP prefilter, attached where `auto` would not (a veth, in
    // generic mode), costs legitimate overlay traffic (docs/design.md).
    tcp1("cross_node_xdp_generic_tcp1_vs_default", "oxsdn-cross-node-xdp-generic", "oxsdn-cross-node", 0.95),
    ThroughputTarget {
        key: "cross_node_xdp_generic_udp_pps_vs_default",
        what: "UDP 64 B packets/s",
        a: "oxsdn-cross-node-xdp-generic",
        b: "oxsdn-cross-node",
        rate: "udp_64b_pps",
        cpu: "udp_64b_cpu_ns_per_packet",
        at_least: 0.95,
    },
    // XDP decapsulation (`--xdp-decap all`) against TC's `from_underlay`, both behind the
    // same generic XDP hook: whether XDP should take VXLAN off (docs/design.md).
    tcp1("cross_node_xdp_decap_tcp1_vs_tc_decap", "oxsdn-cross-node-xdp-decap", "oxsdn-cross-node-xdp-generic", 1.0),
    ThroughputTarget {
        key: "cross_node_xdp_decap_udp_pps_vs_tc_decap",
        what: "UDP 64 B packets/s",
        a: "oxsdn-cross-node-xdp-decap",
        b: "oxsdn-cross-node-xdp-generic",
        rate: "udp_64b_pps",
        cpu: "udp_64b_cpu_ns_per_packet",
        at_least: 1.0,
    },
    tcp1("service_tcp1_vs_cross_node", "oxsdn-service", "oxsdn-cross-node", 0.9),
    tcp1("egress_tcp1_vs_node_egress", "oxsdn-egress", "node-egress", 0.9),
    // Through an egress IP held by another node (VXLAN to it, SNAT there) against plain
    // egress (issue 16's goal).
    tcp1("egress_ip_tcp1_vs_egress", "oxsdn-egress-ip", "oxsdn-egress", 0.9),
    // Through an egress IP its own node holds (SNAT where it leaves) against plain egress.
    tcp1("egress_ip_local_tcp1_vs_egress", "oxsdn-egress-ip-local", "oxsdn-egress", 0.9),
    tcp1("networkpolicy_tcp1_vs_multitenant", "oxsdn-same-node-networkpolicy", "oxsdn-same-node", 0.95),
];

/// The targets of the benchmark issue, from the paired rounds in `scenarios`, the CNI
/// figures, the per-path costs, the scale figures and the flood figures. Each throughput target has a twin
/// on CPU time per unit of traffic (`…_cpu_vs_…`) with the reciprocal bound (throughput
/// ≥ 0.95× raw veth becomes CPU per GB ≤ 1/0.95 of raw veth's): the same claim where
/// the CPU is what limits throughput, on the figure that drifts less.
pub fn ratios(scenarios: &Value, cni: &Value, cost: &Value, scale: &Value, flood: &Value) -> Value {
    let largest_agent_rss = scale["memory"]
        .as_object()
        .and_then(|nodes| nodes.values().filter_map(|n| n["agent"]["vm_rss_mib"].as_f64()).reduce(f64::max));
    let paired = |what: &str, pair: (&str, &str), figure: &str, cmp: Cmp, target: f64| {
        paired_entry(what, scenarios, pair, figure, cmp, target)
    };
    let mut targets = json!({
        "same_node_rtt_p50_minus_raw_veth_us": paired("oxsdn-same-node − raw-veth, RTT p50 (µs)", ("oxsdn-same-node", "raw-veth"), "rtt_p50_us", Cmp::AtMost, 3.0),
        "cross_node_rtt_p50_minus_kernel_vxlan_us": paired("oxsdn-cross-node − kernel-vxlan, RTT p50 (µs)", ("oxsdn-cross-node", "kernel-vxlan"), "rtt_p50_us", Cmp::AtMost, 0.0),
        "cni_add_p99_concurrent_ms": entry("CNI ADD p99 with concurrent pods (ms)", cni["add_concurrent_ms"]["p99"].as_f64(), Cmp::AtMost, 50.0),
        "longest_path_without_encapsulation_ns": entry("per-packet cost of the longest path without encapsulation (ns)", cost["longest_without_encapsulation"]["ns_per_packet"].as_f64(), Cmp::AtMost, 100.0),
        "scale_agent_rss_mib": entry("agent resident memory with the scale load (MiB)", largest_agent_rss, Cmp::AtMost, 64.0),
        "flood_tcp1_during_vs_without_xdp": entry("pods' TCP across nodes during an unknown-source VXLAN flood / without it, XDP prefilter in the driver (native)", flood["variants"]["xdp-native"]["during_vs_without"].as_f64(), Cmp::AtLeast, 0.8),
    });
    for t in &THROUGHPUT_TARGETS {
        let what = format!("{} / {}, {}", t.a, t.b, t.what);
        targets[t.key] = paired(&what, (t.a, t.b), t.rate, Cmp::AtLeast, t.at_least);
        let unit = figure_by_key(t.cpu).map_or("", |f| f.unit);
        targets[t.key.replacen("_vs_", "_cpu_vs_", 1)] =
            paired(&format!("{what}, {unit}"), (t.a, t.b), t.cpu, Cmp::AtMost, 1.0 / t.at_least);
    }
    for (key, target) in targets.as_object_mut().into_iter().flatten() {
        if let Some(doc) = account(key) {
            target["account"] = json!(doc);
        }
    }
    targets
}

/// The A/A copy's suffix (src/scenarios.rs names copies `<name>~<suffix>`).
pub const AA: &str = "aa";
/// The A/B copy's suffix: the same scenario set up with another build.
pub const AB: &str = "b";

/// How much wider a median's standard error is than a mean's, for normal samples (√(π/2)).
const MEDIAN_OVER_MEAN_SE: f64 = 1.2533;

/// The two-sided 95 % quantile of Student's t with `dof` degrees of freedom: the spread
/// is estimated from as few samples as there are rounds, so a normal z would understate
/// the band (by 30 % at 5 rounds). Exact to three decimals up to 10, the Cornish–Fisher
/// expansion beyond.
fn t95(dof: usize) -> f64 {
    const TABLE: [f64; 10] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
    if let Some(t) = dof.checked_sub(1).and_then(|i| TABLE.get(i)) {
        return *t;
    }
    let (z, v) = (1.959_964_f64, dof as f64);
    z + (z.powi(3) + z) / (4.0 * v) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
}

/// The noise band of the median of `deviations` (per-round log ratios, or differences),
/// 95 %, two-sided: from their root mean square around no difference (so a systematic
/// offset between two copies of one scenario counts as noise too, and the RMS has as many
/// degrees of freedom as rounds).
fn band(deviations: &[f64]) -> f64 {
    let n = deviations.len();
    let rms = (deviations.iter().map(|d| d * d).sum::<f64>() / n as f64).sqrt();
    t95(n) * MEDIAN_OVER_MEAN_SE * rms / (n as f64).sqrt()
}

/// What the benchmark can resolve, from its A/A copies: every figure of each scenario
/// measured twice (`<name>` and `<name>~aa`, set up separately, interleaved and paired
/// per round as any comparison), by figure and scenario: the per-round ratios (or
/// differences) of the copy to the original, their median, and `band`: how far from no
/// difference the median of that many rounds falls by noise alone (95 %). For a ratio
/// the band is relative (0.05: a ratio within 1/1.05…1.05 is not told apart from 1); for
/// a difference it is in the figure's unit.
pub fn resolution(scenarios: &Value) -> Value {
    let mut by_figure = Map::new();
    let copies = scenarios.as_object().into_iter().flatten().filter_map(|(name, _)| Some((name, copy_of(name, AA)?)));
    for (copy, original) in copies {
        for f in &FIGURES {
            let Some((median, per_round)) =
                paired(scenarios, copy, original, f.key, f.compare).filter(|(_, r)| !r.is_empty())
            else {
                continue;
            };
            let deviations: Option<Vec<f64>> = match f.compare {
                Compare::Ratio => per_round.iter().map(|r| (*r > 0.0).then(|| r.ln())).collect(),
                Compare::Difference => Some(per_round.clone()),
            };
            let entry = match deviations {
                Some(d) => {
                    let b = band(&d);
                    json!({ "per_round": per_round, "median": median, "band": if f.compare == Compare::Ratio { b.exp() - 1.0 } else { b } })
                }
                None => {
                    json!({ "per_round": per_round, "median": median, "band": null, "note": "a value at or below zero (more background than work)" })
                }
            };
            by_figure.entry(f.key).or_insert_with(|| json!({}))[original] = entry;
        }
    }
    Value::Object(by_figure)
}

/// The original's name if `name` is its copy with `suffix`.
fn copy_of<'n>(name: &'n str, suffix: &str) -> Option<&'n str> {
    name.strip_suffix(suffix)?.strip_suffix(crate::scenarios::COPY_SEPARATOR)
}

/// The A/A band that applies to comparing scenarios `a` and `b` on `figure`: the wider
/// of their own A/A bands, else the widest of the figure's; with what it came from.
fn band_for(resolution: &Value, figure: &str, a: &str, b: &str) -> Option<(f64, String)> {
    let bands = resolution[figure].as_object()?;
    let widest = |names: &mut dyn Iterator<Item = &String>| {
        names.filter_map(|n| Some((bands[n]["band"].as_f64()?, n.clone()))).max_by(|x, y| x.0.total_cmp(&y.0))
    };
    if let Some((band, from)) = widest(&mut bands.keys().filter(|n| *n == a || *n == b)) {
        return Some((band, format!("A/A of {from}")));
    }
    widest(&mut bands.keys()).map(|(band, from)| (band, format!("widest A/A of this figure ({from})")))
}

/// Whether `value` is told apart from `target` by more than the noise band.
fn outside_band(value: f64, target: f64, band: f64, compare: Compare) -> bool {
    match compare {
        Compare::Ratio if value > 0.0 && target > 0.0 => (value / target).ln().abs() > (1.0 + band).ln(),
        Compare::Ratio => false,
        Compare::Difference => (value - target).abs() > band,
    }
}

/// Adds to each target on a comparison of two scenarios the noise band it is judged
/// against (`resolution`, from the A/A copies), and whether its value lies outside it
/// (`resolved`): a target met or missed within the band is met or missed by noise.
pub fn attach_resolution(targets: &mut Value, resolution: &Value) {
    for target in targets.as_object_mut().into_iter().flat_map(|t| t.values_mut()) {
        let (Some(figure), Some([a, b])) =
            (target["figure"].as_str(), target["compares"].as_array().map(Vec::as_slice))
        else {
            continue;
        };
        let compare = figure_by_key(figure).map_or(Compare::Ratio, |f| f.compare);
        match band_for(resolution, figure, a.as_str().unwrap_or_default(), b.as_str().unwrap_or_default()) {
            Some((band, from)) => {
                let resolved = target["value"]
                    .as_f64()
                    .zip(target["target"].as_f64())
                    .map(|(v, t)| outside_band(v, t, band, compare));
                target["resolution"] = json!(band);
                target["resolution_from"] = json!(from);
                target["resolved"] = json!(resolved);
            }
            None => target["resolution_note"] = json!("no A/A copy measured this figure"),
        }
    }
}

/// The A/B comparison: each scenario set up a second time with another build
/// (`<name>~b`) against the first, per figure, paired per round, with the A/A band of
/// the scenario if it was measured.
pub fn ab(scenarios: &Value, resolution: &Value) -> Value {
    let mut out = Map::new();
    for (copy, original) in
        scenarios.as_object().into_iter().flatten().filter_map(|(name, _)| Some((name, copy_of(name, AB)?)))
    {
        let mut figures = Map::new();
        for f in &FIGURES {
            let Some((median, per_round)) =
                paired(scenarios, copy, original, f.key, f.compare).filter(|(_, r)| !r.is_empty())
            else {
                continue;
            };
            let mut e = json!({ "b_vs_a": median, "per_round": per_round, "compare": if f.compare == Compare::Ratio { "B / A" } else { "B − A" } });
            if let Some(band) = resolution[f.key][original]["band"].as_f64() {
                let no_difference = if f.compare == Compare::Ratio { 1.0 } else { 0.0 };
                e["aa_band"] = json!(band);
                e["resolved"] = json!(outside_band(median, no_difference, band, f.compare));
            }
            figures.insert(f.key.to_string(), e);
        }
        out.insert(original.to_string(), Value::Object(figures));
    }
    Value::Object(out)
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
        // Results recorded before the runs moved fixed amounts.
        ("iperf_seconds", "seconds per iperf3 run"),
        ("tcp_bytes", "bytes per TCP run (iperf3 -n)"),
        ("udp_packets", "datagrams per UDP run (iperf3 -k)"),
        ("ping_round_trips", "round trips per flood ping (CPU per round trip)"),
        ("userspace_divisor", "TCP bytes and flood pings divided by, through a userspace datapath"),
        ("idle_seconds", "seconds of background measured before each figure's pass"),
        ("aa", "A/A copies (resolution)"),
        ("ab_bin_dir", "A/B: the other build's binaries"),
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
         seconds apart in each round). `resolves` is the noise band it is judged against, from \
         this run's A/A copies (see Resolution): a value within the band of its target is met or \
         missed by noise (\"within noise\"). Where a target is missed, the last column links what \
         was measured about why.\n"
    );
    if let Some(ratios) = results["ratios"].as_object() {
        let count = |f: &dyn Fn(&Value) -> bool| ratios.values().filter(|r| f(r)).count();
        let _ = write!(md, "{} of {} met", count(&|r| r["met"].as_bool() == Some(true)), ratios.len());
        let judged = count(&|r| r["resolved"].is_boolean());
        if judged > 0 {
            let resolved = count(&|r| r["resolved"].as_bool() == Some(true));
            let _ = write!(md, "; of the {judged} judged against an A/A band, {resolved} resolved (met or missed by more than the noise)");
        }
        let _ = writeln!(md, ".\n");
    }
    let _ = writeln!(md, "| target | value | needed | met | margin | resolves | per round | measured account |\n|---|---|---|---|---|---|---|---|");
    if let Some(ratios) = results["ratios"].as_object() {
        for (key, r) in ratios {
            let mut met = if r["met"].as_bool() == Some(true) { "yes".to_string() } else { "**no**".to_string() };
            if r["resolved"].as_bool() == Some(false) {
                met.push_str(" (within noise)");
            }
            let margin = match r["margin"].as_f64() {
                Some(m) if m >= 0.0 => format!("by {}", num(&json!(m))),
                Some(m) => format!("missed by {}", num(&json!(-m))),
                None => r["note"].as_str().unwrap_or_default().to_string(),
            };
            let needed = format!("{} {}", r["comparison"].as_str().unwrap_or(""), num(&r["target"]));
            let per_round =
                r["per_round"].as_array().map(|v| v.iter().map(num).collect::<Vec<_>>().join(", ")).unwrap_or_default();
            let compare = r["figure"].as_str().and_then(figure_by_key).map_or(Compare::Ratio, |f| f.compare);
            let resolves = match r["resolution"].as_f64() {
                Some(b) => band_text(b, compare),
                None if r["resolution_note"].is_string() => "–".into(),
                None => String::new(),
            };
            // RESULTS.md lives in bench/: links are relative to it.
            // Also for results recorded before the JSON carried it.
            let account = r["account"].as_str().or(account(key)).map(|doc| {
                let link = doc.strip_prefix("bench/").map(str::to_string).unwrap_or_else(|| format!("../{doc}"));
                format!("[{}]({link})", doc.split('#').next().unwrap_or(doc))
            });
            let _ = writeln!(
                md,
                "| {} | {} | {} | {met} | {margin} | {resolves} | {per_round} | {} |",
                r["what"].as_str().unwrap_or_default(),
                num(&r["value"]),
                needed.trim(),
                account.unwrap_or_default()
            );
        }
    }

    if let Some(by_figure) = results["resolution"].as_object().filter(|r| !r.is_empty()) {
        let _ = writeln!(md, "\n## Resolution (A/A)\n");
        let _ = writeln!(
            md,
            "Scenarios set up twice and measured as two (`<name>~aa`), interleaved and paired per \
             round as any comparison. `band`: how far the median of this many per-round ratios \
             (or differences) falls from no difference by noise alone (95 %); a difference \
             within it is not resolved.\n"
        );
        let _ = writeln!(md, "| figure | scenario | A/A median | band | per round |\n|---|---|---|---|---|");
        for f in &FIGURES {
            for (name, e) in by_figure.get(f.key).and_then(Value::as_object).into_iter().flatten() {
                let per_round = e["per_round"]
                    .as_array()
                    .map(|v| v.iter().map(num).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                let band = e["band"]
                    .as_f64()
                    .map(|b| band_text(b, f.compare))
                    .unwrap_or_else(|| e["note"].as_str().unwrap_or("–").to_string());
                let _ = writeln!(md, "| {} | {name} | {} | {band} | {per_round} |", f.key, num(&e["median"]));
            }
        }
    }

    if let Some(ab) = results["ab"].as_object().filter(|r| !r.is_empty()) {
        let _ = writeln!(md, "\n## A/B: another build (`<name>~b`) against this one\n");
        let _ =
            writeln!(md, "| scenario | figure | B vs A | A/A band | resolved | per round |\n|---|---|---|---|---|---|");
        for (name, figures) in ab {
            for f in &FIGURES {
                let e = &figures[f.key];
                if e.is_null() {
                    continue;
                }
                let per_round = e["per_round"]
                    .as_array()
                    .map(|v| v.iter().map(num).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                let band = e["aa_band"].as_f64().map(|b| band_text(b, f.compare)).unwrap_or_else(|| "–".into());
                let resolved = match e["resolved"].as_bool() {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "–",
                };
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} ({}) | {band} | {resolved} | {per_round} |",
                    f.key,
                    num(&e["b_vs_a"]),
                    e["compare"].as_str().unwrap_or_default()
                );
            }
        }
    }

    let scenarios = results["scenarios"].as_object().cloned().unwrap_or_default();
    for f in &FIGURES {
        // Results recorded before a figure existed have no table for it.
        if !scenarios.values().any(|s| !s[f.key].is_null()) && scenarios.values().any(|s| s["error"].is_null()) {
            continue;
        }
        let cost = f.kind == Kind::Cost;
        let _ = writeln!(md, "\n## {} ({})\n", f.heading, f.unit);
        if cost {
            let _ = writeln!(md, "| scenario | median | min | max | background | steal |\n|---|---|---|---|---|---|");
        } else {
            let _ = writeln!(md, "| scenario | median | min | max |\n|---|---|---|---|");
        }
        for (name, s) in &scenarios {
            let v = &s[f.key];
            if v["median"].is_null() {
                let why = v["not_measured"]
                    .as_str()
                    .or(v["error"].as_str())
                    .or(s["error"].as_str())
                    .unwrap_or("not measured");
                let _ = writeln!(
                    md,
                    "| {name} | – | – | – ({}) |{}",
                    why.replace('|', "\\|").replace('\n', " "),
                    if cost { " | |" } else { "" }
                );
            } else if cost {
                let share =
                    |k: &str| v[k].as_f64().map(|x| format!("{:.0} %", x * 100.0)).unwrap_or_else(|| "–".into());
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {} | {} | {} |",
                    num(&v["median"]),
                    num(&v["min"]),
                    num(&v["max"]),
                    share("background_share"),
                    share("steal_share")
                );
            } else {
                let _ = writeln!(md, "| {name} | {} | {} | {} |", num(&v["median"]), num(&v["min"]), num(&v["max"]));
            }
        }
    }

    // The other sections (CNI latency, per-path costs, scale…), whatever their shape.
    let known = ["meta", "method", "ratios", "scenarios", "resolution", "ab"];
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

/// A noise band for a table: relative (±%) for a ratio, in the figure's unit for a
/// difference.
fn band_text(band: f64, compare: Compare) -> String {
    match compare {
        Compare::Ratio => format!("±{:.1} %", band * 100.0),
        Compare::Difference => format!("±{}", num(&json!(band))),
    }
}

/// Leaves of `value` with their dotted paths.
fn flatten(path: &str, value: &Value, rows: &mut Vec<(String, Value)>) {
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten(&join(k), v, rows)),
        Value::Array(items) if items.iter().any(|v| v.is_object() || v.is_array()) => {
            items.iter().enumerate().for_each(|(i, v)| flatten(&join(&i.to_string()), v, rows))
        }
        Value::Array(items) => {
            rows.push((path.to_string(), Value::String(items.iter().map(num).collect::<Vec<_>>().join(", "))))
        }
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
    use std::path::Path;

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
        let r = ratios(&scenarios, &json!({ "add_concurrent_ms": { "p99": 60.0 } }), &cost, &scale, &json!({}));
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
        let r = ratios(&scenarios, &json!({}), &json!({}), &json!({}), &json!({}));
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

    fn series(samples: &[f64]) -> Value {
        json!({ "samples": samples, "median": crate::measure::Stats::of(samples).median })
    }

    #[test]
    fn the_aa_band_is_the_noise_of_a_median_of_that_many_rounds() {
        // Per-round A/A ratios 1.02, 0.98, 1.0, 1.02, 0.98: RMS of the logs ≈ 0.0179, so
        // the band of a median of 5 is t(5) × 1.2533 × 0.0179 / √5 = 2.571 × … ≈ 2.6 %.
        let scenarios = json!({
            "oxsdn-same-node": { "tcp_1_stream_cpu_s_per_gb": series(&[1.0, 1.0, 1.0, 1.0, 1.0]), "rtt_p50_us": series(&[50.0, 52.0, 51.0, 50.0, 49.0]) },
            "oxsdn-same-node~aa": { "tcp_1_stream_cpu_s_per_gb": series(&[1.02, 0.98, 1.0, 1.02, 0.98]), "rtt_p50_us": series(&[52.0, 50.0, 51.0, 52.0, 49.0]) },
        });
        let r = resolution(&scenarios);
        let cpu = &r["tcp_1_stream_cpu_s_per_gb"]["oxsdn-same-node"];
        assert_eq!(cpu["per_round"], json!([1.02, 0.98, 1.0, 1.02, 0.98]));
        let band = cpu["band"].as_f64().unwrap();
        assert!((band - 0.0261).abs() < 0.0005, "{band}");
        // Differences 2, −2, 0, 2, 0 µs: RMS √(12/5), band ≈ 2.2 µs.
        let rtt = r["rtt_p50_us"]["oxsdn-same-node"]["band"].as_f64().unwrap();
        assert!((rtt - 2.571 * 1.2533 * (12.0f64 / 5.0).sqrt() / 5f64.sqrt()).abs() < 1e-9, "{rtt}");
        // Only copies count: no band for a scenario without one.
        assert!(r["tcp_1_stream_cpu_s_per_gb"]["raw-veth"].is_null());
    }

    #[test]
    fn the_t_quantile_joins_its_expansion_smoothly() {
        assert_eq!(t95(5), 2.571);
        assert!((t95(11) - 2.201).abs() < 0.003, "{}", t95(11));
        assert!((t95(30) - 2.042).abs() < 0.002, "{}", t95(30));
        assert!(t95(10_000) > 1.959 && t95(10_000) < 1.961);
    }

    #[test]
    fn a_target_within_the_band_is_not_resolved() {
        let scenarios = json!({
            "raw-veth": { "tcp_1_stream_cpu_s_per_gb": series(&[1.0, 1.0, 1.0]) },
            "oxsdn-same-node": { "tcp_1_stream_cpu_s_per_gb": series(&[1.06, 1.04, 1.05]) },
            "oxsdn-same-node~aa": { "tcp_1_stream_cpu_s_per_gb": series(&[1.04, 1.06, 1.05]) },
            "oxsdn-cross-node": { "tcp_1_stream_cpu_s_per_gb": series(&[1.5, 1.5, 1.5]) },
            "kernel-vxlan": { "tcp_1_stream_cpu_s_per_gb": series(&[1.0, 1.0, 1.0]) },
        });
        let res = resolution(&scenarios);
        let mut r = ratios(&scenarios, &json!({}), &json!({}), &json!({}), &json!({}));
        attach_resolution(&mut r, &res);
        // 1.05 against ≤ 1.0526 with a band of about ±2 %: met, by noise.
        let same = &r["same_node_tcp1_cpu_vs_raw_veth"];
        assert_eq!(same["what"], "oxsdn-same-node / raw-veth, TCP 1 stream, CPU-s/GB");
        assert_eq!(same["met"], true);
        assert_eq!(same["resolved"], false);
        assert_eq!(same["resolution_from"], "A/A of oxsdn-same-node");
        // 1.5 against ≤ 0.87: missed by far more than the widest band of the figure.
        let cross = &r["cross_node_tcp1_cpu_vs_kernel_vxlan"];
        assert_eq!((cross["met"].as_bool(), cross["resolved"].as_bool()), (Some(false), Some(true)));
        assert_eq!(cross["resolution_from"], "widest A/A of this figure (oxsdn-same-node)");
        let md = markdown(&json!({ "ratios": r, "resolution": res }));
        assert!(md.contains("| yes (within noise) |"), "{md}");
        assert!(md.contains("1 of 34 met; of the 2 judged against an A/A band, 1 resolved"), "{md}");
        assert!(md.contains("## Resolution (A/A)"), "{md}");
    }

    #[test]
    fn the_ab_copy_is_compared_with_its_original_against_the_aa_band() {
        let scenarios = json!({
            "oxsdn-same-node": { "udp_64b_cpu_ns_per_packet": series(&[1000.0, 1000.0]) },
            "oxsdn-same-node~aa": { "udp_64b_cpu_ns_per_packet": series(&[1010.0, 990.0]) },
            "oxsdn-same-node~b": { "udp_64b_cpu_ns_per_packet": series(&[900.0, 880.0]) },
        });
        let ab = ab(&scenarios, &resolution(&scenarios));
        let udp = &ab["oxsdn-same-node"]["udp_64b_cpu_ns_per_packet"];
        assert!((udp["b_vs_a"].as_f64().unwrap() - 0.89).abs() < 1e-9, "{udp}");
        assert_eq!(udp["resolved"], true);
    }

    #[test]
    fn every_recorded_result_still_renders() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let mut rendered = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let results: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            if results["scenarios"].is_null() {
                continue; // scale.json: a section of its own
            }
            let md = markdown(&results);
            assert!(md.contains("## Targets") && md.contains("## TCP, 1 stream (Gbit/s)"), "{}", path.display());
            // Figures the older runs did not measure get no table.
            if results["scenarios"]["raw-veth"]["tcp_1_stream_cpu_s_per_gb"].is_null() {
                assert!(!md.contains("CPU time per GB"), "{}", path.display());
            }
            rendered += 1;
        }
        assert!(rendered > 0);
    }
}
