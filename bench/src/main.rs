//! `oxsdn-bench`: sets up every scenario in namespaces of its own (some twice, to see
//! the noise: A/A), moves fixed amounts of traffic through them interleaved (A B C A B C
//! …) so drift hits all alike, and writes throughput and the CPU time the traffic cost,
//! the targets as checkable ratios with the noise band each is judged against, and
//! `RESULTS.md`.

mod cni_latency;
mod cost;
mod cpu;
mod flood;
mod measure;
mod ovs;
mod policy;
mod policy_enforcement;
mod report;
mod scale;
mod scenarios;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use crate::{
    cpu::{Background, Cost, Meter},
    measure::{Amounts, Transfer},
    report::{Kind, FIGURES},
    scenarios::Scenario,
};

#[derive(Parser)]
#[command(about = "Side-by-side benchmark of oxsdn and the alternatives")]
struct Args {
    /// Rounds over all scenarios (more short rounds beat fewer long ones: the machine's
    /// drift, not a run's length, is what spreads the samples).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Bytes each TCP figure moves (iperf3 -n; divided by --userspace-divisor through a
    /// userspace datapath).
    #[arg(long, default_value_t = 2_000_000_000)]
    tcp_bytes: u64,
    /// 64-byte UDP datagrams the UDP figure sends (iperf3 -k).
    #[arg(long, default_value_t = 100_000)]
    udp_packets: u64,
    /// Round trips of the flood ping that measures the CPU time per round trip (divided by
    /// --userspace-divisor through a userspace datapath).
    #[arg(long, default_value_t = 50_000)]
    ping_round_trips: u32,
    /// How much less TCP and flood-ping traffic a path through a userspace datapath (OVS
    /// netdev, 10–30× slower) moves, so that it takes about as long as the others.
    #[arg(long, default_value_t = 16)]
    userspace_divisor: u32,
    /// Pings per round trip sample (5 ms apart).
    #[arg(long, default_value_t = 200)]
    pings: u32,
    /// Seconds of no traffic before each figure's pass over the scenarios in each round,
    /// which measure the background CPU time that the CPU figures subtract.
    #[arg(long, default_value_t = 1.0)]
    idle_seconds: f64,
    /// A/A: set these scenarios up a second time (`<name>~aa`) and measure both, paired
    /// per round as any comparison: what the benchmark can resolve (`resolution`).
    /// `none` for no copies.
    #[arg(long, value_delimiter = ',', default_value = "oxsdn-same-node,oxsdn-cross-node,oxsdn-service,oxsdn-egress")]
    aa: Vec<String>,
    /// A/B: set every measured oxsdn scenario up a second time (`<name>~b`) with the
    /// binaries (agent, CNI plugin, oxsdnctl) of another build in this directory, e.g. an
    /// earlier `target/release`, and compare them (`ab`).
    #[arg(long, value_name = "DIR")]
    ab_bin_dir: Option<PathBuf>,
    /// Directory of the results JSON (`latest.json` and a dated copy).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    results_dir: PathBuf,
    /// Where to write the markdown table.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md"))]
    markdown: PathBuf,
    /// One short round of everything (small amounts of traffic, 50 pings, few CNI calls,
    /// one A/A copy), written to a temporary directory; fails if any scenario cannot be set up or carries no
    /// traffic. For CI.
    #[arg(long)]
    smoke: bool,
    /// Measure only these scenarios (comma-separated names; `cni` for the CNI latency,
    /// `cost` for the per-path cost, `scale` for the scale figures, `flood` for the
    /// underlay flood figures, `policy` for the NetworkPolicy figures), to look into one
    /// figure. Results go where they would go otherwise.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Packets per timing of the per-path cost (BPF_PROG_TEST_RUN, --rounds rounds).
    #[arg(long, default_value_t = 1_000_000)]
    cost_repeat: u32,
    /// Seconds of each TCP sample of the flood figures (`flood`), with and without the
    /// flood.
    #[arg(long, default_value_t = 4)]
    flood_tcp_seconds: u32,
    /// Flood packets each flood-alone sample sends (its drop rate and CPU per packet).
    #[arg(long, default_value_t = 1_000_000)]
    flood_packets: u64,
    /// Only the per-path cost of the programs, printed as JSON (nothing written).
    #[arg(long)]
    cost_only: bool,
    /// With --cost-only: also time this build of the eBPF object (live mode), e.g. an
    /// earlier one.
    #[arg(long, value_name = "FILE")]
    cost_object: Option<PathBuf>,
    /// Only the scale figures (agent and map memory with a large cluster loaded, time to
    /// enforce a join), printed as JSON (nothing written).
    #[arg(long)]
    scale_only: bool,
    #[command(flatten)]
    scale: scale::Load,
    /// Only the NetworkPolicy figures (the policy maps of a large cluster's policies,
    /// the same-node path's cost with them against none, the time from `apply` to
    /// enforced on 3 nodes), printed as JSON (nothing written).
    #[arg(long)]
    policy_only: bool,
    #[command(flatten)]
    policy: policy::PolicyLoad,
    /// Set up the scenarios (all, or those of --only), print where each one's ends are,
    /// and keep them until standard input closes: to run iperf3 or perf by hand on a
    /// path, as when looking into why a target is missed. Measures nothing.
    #[arg(long)]
    hold: bool,
    /// Only render the markdown table from an existing results JSON.
    #[arg(long, value_name = "JSON")]
    render: Option<PathBuf>,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if let Some(json) = &args.render {
        let results: Value =
            serde_json::from_slice(&std::fs::read(json).with_context(|| format!("reading {}", json.display()))?)?;
        std::fs::write(&args.markdown, report::markdown(&results))?;
        return Ok(());
    }
    if args.cost_only {
        return print_json(&cost::measure(args.cost_repeat, args.rounds, args.cost_object)?);
    }
    if args.scale_only {
        return print_json(&scale::measure(&args.scale)?);
    }
    if args.policy_only {
        return print_json(&policy::measure(&args.policy, args.cost_repeat, args.rounds)?);
    }
    let cni_plan = if args.smoke {
        let dir = std::env::temp_dir().join(format!("oxsdn-bench-smoke-{}", std::process::id()));
        args.rounds = 1;
        args.tcp_bytes = 200_000_000;
        args.udp_packets = 20_000;
        args.ping_round_trips = 2_000;
        args.pings = 50;
        args.idle_seconds = 0.2;
        args.aa = vec!["raw-veth".into()];
        args.results_dir = dir.clone();
        args.markdown = dir.join("RESULTS.md");
        args.cost_repeat = 10_000;
        args.flood_tcp_seconds = 1;
        args.flood_packets = 20_000;
        args.scale = scale::Load::smoke();
        args.policy = policy::PolicyLoad::smoke();
        cni_latency::Plan { sequential: 3, concurrent: 4, batches: 1 }
    } else {
        cni_latency::Plan { sequential: 50, concurrent: 20, batches: 3 }
    };
    let amounts = Amounts {
        tcp_bytes: args.tcp_bytes,
        udp_packets: args.udp_packets,
        ping_round_trips: args.ping_round_trips,
        userspace_divisor: args.userspace_divisor.max(1),
        pings: args.pings,
        idle: Duration::from_secs_f64(args.idle_seconds),
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let load_before = load_average();

    const EXTRAS: [&str; 5] = ["cni", "cost", "scale", "flood", "policy"];
    if let Some(unknown) =
        args.only.iter().find(|o| !scenarios::NAMES.contains(&o.as_str()) && !EXTRAS.contains(&o.as_str()))
    {
        bail!("unknown --only name {unknown}; known: {}, {}", scenarios::NAMES.join(", "), EXTRAS.join(", "));
    }
    args.aa.retain(|a| !a.is_empty() && a != "none");
    if let Some(unknown) = args.aa.iter().find(|a| !scenarios::NAMES.contains(&a.as_str())) {
        bail!("unknown --aa name {unknown}; known: {}", scenarios::NAMES.join(", "));
    }
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let meter = Meter::new()?;
    let mut setup_errors = BTreeMap::new();
    let mut ready = Vec::new();
    for (name, copy) in plan(&args, &wanted) {
        let label = if copy.is_empty() { name.to_string() } else { scenarios::copy_name(name, copy) };
        eprintln!("setting up {label}");
        let bin_dir = (copy == report::AB).then_some(args.ab_bin_dir.as_deref()).flatten();
        match with_bin_dir(bin_dir, || scenarios::setup(name, copy)).and_then(|s| adopt_forwarders(&meter, s)) {
            Ok(s) => ready.push(s),
            Err(e) => {
                eprintln!("{label}: set-up failed: {e:#}");
                setup_errors.insert(label, format!("set-up failed: {e:#}"));
            }
        }
    }
    if args.hold {
        return hold(&ready);
    }
    let (samples, backgrounds) = measure_rounds(&ready, &meter, args.rounds, &amounts)?;
    let no_ping: BTreeMap<String, &str> = ready.iter().filter_map(|s| Some((s.name.clone(), s.no_ping?))).collect();
    let measured: Vec<String> = ready.iter().map(|s| s.name.clone()).chain(setup_errors.keys().cloned()).collect();
    drop(ready);

    let cni = extra(wanted("cni"), "CNI latency", || cni_latency::measure(&cni_plan));
    let cost = extra(wanted("cost"), "per-path cost", || cost::measure(args.cost_repeat, args.rounds, None));
    let scale = extra(wanted("scale"), "scale", || scale::measure(&args.scale));
    let flood_plan = flood::Plan {
        rounds: args.rounds,
        tcp_seconds: args.flood_tcp_seconds,
        flood_packets: args.flood_packets,
        idle: amounts.idle,
    };
    let flood = extra(wanted("flood"), "flood", || flood::measure(&meter, &flood_plan));
    let policy =
        extra(wanted("policy"), "NetworkPolicy", || policy::measure(&args.policy, args.cost_repeat, args.rounds));

    let scenarios = report::object(measured.iter().map(|name| {
        let value = match setup_errors.get(name) {
            Some(error) => json!({ "error": error }),
            None => report::object(FIGURES.iter().map(|f| {
                let v = match samples.get(&(name.clone(), f.key)) {
                    Some(Ok(series)) => series.json(),
                    Some(Err(error)) => json!({ "error": error }),
                    None if f.key.contains("cgroup") && !meter.has_cgroup() => {
                        json!({ "not_measured": "no cgroup v2 hierarchy on this machine" })
                    }
                    None => json!({ "not_measured": no_ping.get(name).copied().unwrap_or("not measured") }),
                };
                (f.key.to_string(), v)
            })),
        };
        (name.clone(), value)
    }));
    let resolution = report::resolution(&scenarios);
    let mut ratios = report::ratios(&scenarios, &cni, &cost, &scale, &flood);
    report::attach_resolution(&mut ratios, &resolution);
    let ab = report::ab(&scenarios, &resolution);
    let date = run_text(Command::new("date").args(["-u", "+%Y-%m-%d-%H%M"]))?;
    let results = json!({
        "meta": {
            "date": date,
            "command": command,
            "json": relative_to_repo(&args.results_dir.join("latest.json")),
            "git_commit": run_text(Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"])).unwrap_or_default(),
            "kernel": run_text(Command::new("uname").arg("-r"))?,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": cpu_model(),
            "rounds": args.rounds,
            "tcp_bytes": args.tcp_bytes,
            "udp_packets": args.udp_packets,
            "ping_round_trips": args.ping_round_trips,
            "userspace_divisor": amounts.userspace_divisor,
            "pings": args.pings,
            "idle_seconds": args.idle_seconds,
            "aa": args.aa.join(", "),
            "ab_bin_dir": args.ab_bin_dir,
            "smoke": args.smoke,
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "method": method(),
        "scenarios": scenarios,
        "ratios": ratios,
        "resolution": resolution,
        "ab": ab,
        "background": backgrounds,
        "cni": cni,
        "cost": cost,
        "scale": scale,
        "flood": flood,
        "policy": policy,
    });
    write(&args, &date, &results)?;
    if args.smoke {
        check_smoke(&results).with_context(|| format!("results in {}", args.results_dir.display()))?;
        let _ = std::fs::remove_dir_all(&args.results_dir);
    }
    Ok(())
}

/// The scenarios to set up, in the order they are measured: each wanted scenario, then
/// its A/A copy if asked for, then (for oxsdn scenarios, with --ab-bin-dir) its A/B copy.
/// A copy follows its original, as the scenarios a target compares follow each other.
fn plan(args: &Args, wanted: &dyn Fn(&str) -> bool) -> Vec<(&'static str, &'static str)> {
    let mut plan = Vec::new();
    for name in scenarios::NAMES.into_iter().filter(|n| wanted(n)) {
        plan.push((name, ""));
        if args.aa.iter().any(|a| a == name) {
            plan.push((name, report::AA));
        }
        if args.ab_bin_dir.is_some() && name.starts_with("oxsdn-") {
            plan.push((name, report::AB));
        }
    }
    plan
}

/// Runs `setup` with the workspace binaries taken from `dir` (OXSDN_BIN_DIR, read by the
/// test harness whenever it starts an agent, CNI plugin or oxsdnctl), if given.
fn with_bin_dir<T>(dir: Option<&Path>, setup: impl FnOnce() -> Result<T>) -> Result<T> {
    let Some(dir) = dir else { return setup() };
    const VAR: &str = "OXSDN_BIN_DIR";
    let before = std::env::var_os(VAR);
    // Set-up runs on this one thread; no other thread reads the environment meanwhile.
    std::env::set_var(VAR, dir);
    let result = setup();
    match before {
        Some(v) => std::env::set_var(VAR, v),
        None => std::env::remove_var(VAR),
    }
    result
}

/// Moves the processes that forward a scenario's packets into the meter's cgroup.
fn adopt_forwarders(meter: &Meter, s: Scenario) -> Result<Scenario> {
    for pid in &s.forwarders {
        meter.adopt(*pid)?;
    }
    Ok(s)
}

/// One figure's samples (one per round) and, for a CPU figure, how each was accounted.
#[derive(Default)]
struct Series {
    values: Vec<f64>,
    background_share: Vec<f64>,
    steal_share: Vec<f64>,
    user_share: Vec<f64>,
    system_share: Vec<f64>,
    softirq_share: Vec<f64>,
}

impl Series {
    fn json(&self) -> Value {
        let mut v = report::figure(&self.values);
        let median = |x: &[f64]| (!x.is_empty()).then(|| measure::Stats::of(x).median);
        if !self.background_share.is_empty() {
            v["background_share"] = json!(median(&self.background_share));
            v["steal_share"] = json!(median(&self.steal_share));
        }
        if !self.user_share.is_empty() {
            v["busy_split"] = json!({ "user": median(&self.user_share), "system": median(&self.system_share), "softirq": median(&self.softirq_share) });
        }
        v
    }
}

/// Every figure of every scenario, `rounds` times, interleaved: the samples (or the
/// error) per (scenario, figure), sample `i` from round `i`.
type Samples = BTreeMap<(String, &'static str), Result<Series, String>>;

/// A pass of one round: one transfer of a fixed amount on every scenario, giving a
/// traffic figure (if any) and its two CPU figures, stated per `per_unit` units of what
/// `run` returns (GB, packets, round trips).
struct Pass {
    what: &'static str,
    rate: Option<&'static str>,
    cpu: &'static str,
    cgroup_cpu: &'static str,
    per_unit: f64,
    /// Round-trip passes skip the scenarios that cannot be pinged.
    needs_ping: bool,
    run: fn(&Scenario, &Meter, &Amounts) -> Result<Transfer>,
}

const PASSES: [Pass; 4] = [
    Pass {
        what: "TCP 1 stream",
        rate: Some("tcp_1_stream_gbps"),
        cpu: "tcp_1_stream_cpu_s_per_gb",
        cgroup_cpu: "tcp_1_stream_cgroup_cpu_s_per_gb",
        per_unit: 1.0,
        needs_ping: false,
        run: |s, m, a| measure::tcp(s, m, a, 1),
    },
    Pass {
        what: "TCP 4 streams",
        rate: Some("tcp_4_streams_gbps"),
        cpu: "tcp_4_streams_cpu_s_per_gb",
        cgroup_cpu: "tcp_4_streams_cgroup_cpu_s_per_gb",
        per_unit: 1.0,
        needs_ping: false,
        run: |s, m, a| measure::tcp(s, m, a, 4),
    },
    Pass {
        what: "UDP 64 B",
        rate: Some("udp_64b_pps"),
        cpu: "udp_64b_cpu_ns_per_packet",
        cgroup_cpu: "udp_64b_cgroup_cpu_ns_per_packet",
        per_unit: 1e9,
        needs_ping: false,
        run: measure::udp,
    },
    Pass {
        what: "flood ping",
        rate: None,
        cpu: "ping_cpu_ns_per_round_trip",
        cgroup_cpu: "ping_cgroup_cpu_ns_per_round_trip",
        per_unit: 1e9,
        needs_ping: true,
        run: measure::ping_flood,
    },
];

/// Each round measures one figure on every scenario before the next figure, so the
/// samples a ratio pairs are taken a few seconds apart; odd rounds go through the
/// scenarios in reverse, so no scenario always follows the same one (on a 2-CPU VM a
/// figure drifts by more than most targets' margins within minutes). Before each pass
/// the background CPU time is measured with no traffic, for the CPU figures to subtract.
/// Round trips are finer still: see `ping_interleaved`. Returns the samples and the
/// backgrounds measured.
fn measure_rounds(ready: &[Scenario], meter: &Meter, rounds: usize, amounts: &Amounts) -> Result<(Samples, Value)> {
    let mut samples: Samples = BTreeMap::new();
    let (mut machine_backgrounds, mut cgroup_backgrounds) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut order: Vec<&Scenario> = ready.iter().collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for pass in &PASSES {
            let background = meter.background(amounts.idle)?;
            eprintln!("round {round}: background before {}: {:.3} CPU-s/s", pass.what, background.machine_per_s);
            machine_backgrounds.push(background.machine_per_s);
            cgroup_backgrounds.extend(background.cgroup_per_s);
            for s in order.iter().filter(|s| !pass.needs_ping || s.no_ping.is_none()) {
                let transfer = (pass.run)(s, meter, amounts);
                record_transfer(&mut samples, &s.name, pass, transfer, background);
            }
        }
        for (s, rtts) in order.iter().zip(ping_interleaved(&order, amounts.pings)) {
            let Some(rtts) = rtts else { continue };
            let p50 = rtts.as_ref().map(|r| measure::percentile(r, 0.5)).map_err(|e| anyhow::anyhow!("{e:#}"));
            let p99 = rtts.as_ref().map(|r| measure::percentile(r, 0.99)).map_err(|e| anyhow::anyhow!("{e:#}"));
            eprintln!("round {round}: {:<30} RTT p50 {} µs, p99 {} µs", s.name, show(&p50), show(&p99));
            record(&mut samples, &s.name, "rtt_p50_us", p50.map(|v| (v, None)));
            record(&mut samples, &s.name, "rtt_p99_us", p99.map(|v| (v, None)));
        }
    }
    let backgrounds = json!({
        "what": "busy CPU-s per s with no traffic, measured before each figure's pass of each round (the CPU figures subtract it)",
        "machine_cpu_per_s": (!machine_backgrounds.is_empty()).then(|| report::figure(&machine_backgrounds)),
        "cgroup_cpu_per_s": (!cgroup_backgrounds.is_empty()).then(|| report::figure(&cgroup_backgrounds)),
    });
    Ok((samples, backgrounds))
}

/// How a CPU figure's sample was accounted: the background subtracted and the steal time,
/// as shares, and the machine's busy time split into user, system and softirq.
struct Accounting {
    background_share: f64,
    steal_share: f64,
    busy_split: Option<[f64; 3]>,
}

/// Records a sample of `figure` (with its accounting, for a CPU figure), or the error that
/// ends the figure's series.
fn record(samples: &mut Samples, name: &str, figure: &'static str, value: Result<(f64, Option<Accounting>)>) {
    let slot = samples.entry((name.to_string(), figure)).or_insert_with(|| Ok(Series::default()));
    match (value, slot.as_mut()) {
        (Ok((v, accounting)), Ok(series)) => {
            series.values.push(v);
            if let Some(a) = accounting {
                series.background_share.push(a.background_share);
                series.steal_share.push(a.steal_share);
                if let Some([user, system, softirq]) = a.busy_split {
                    series.user_share.push(user);
                    series.system_share.push(system);
                    series.softirq_share.push(softirq);
                }
            }
        }
        (Err(e), Ok(_)) => *slot = Err(format!("{e:#}")),
        (_, Err(_)) => {}
    }
}

/// Records a transfer's traffic figure and its CPU figures.
fn record_transfer(samples: &mut Samples, name: &str, pass: &Pass, transfer: Result<Transfer>, background: Background) {
    let t = match transfer {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name} {}: {e:#}", pass.what);
            let error = format!("{e:#}");
            for figure in pass.rate.into_iter().chain([pass.cpu, pass.cgroup_cpu]) {
                record(samples, name, figure, Err(anyhow::anyhow!("{error}")));
            }
            return;
        }
    };
    let cost = Cost::of(t.usage, background);
    let per_unit = |cpu_s: f64| cpu_s * pass.per_unit / t.units;
    eprintln!(
        "{name:<30} {:<13} {:>9} {} ({:.2} s), CPU {:.4} machine ({:.0} % background), {} cgroup, {}",
        pass.what,
        if pass.rate.is_some() { show(&Ok(t.rate)) } else { format!("{:.0}", t.units) },
        pass.rate.and_then(report::figure_by_key).map_or("round trips", |f| f.unit),
        t.usage.wall_s,
        per_unit(cost.machine_s),
        cost.background_share * 100.0,
        cost.cgroup_s.map_or("–".into(), |c| format!("{:.4}", per_unit(c))),
        report::figure_by_key(pass.cpu).map_or("", |f| f.unit),
    );
    if let Some(rate) = pass.rate {
        record(samples, name, rate, Ok((t.rate, None)));
    }
    let u = &cost.usage;
    let machine = Accounting {
        background_share: cost.background_share,
        steal_share: cost.steal_share,
        busy_split: Some([u.user_share, u.system_share, u.softirq_share]),
    };
    record(samples, name, pass.cpu, Ok((per_unit(cost.machine_s), Some(machine))));
    if let Some(cgroup_s) = cost.cgroup_s {
        let cgroup = Accounting {
            background_share: cost.cgroup_background_share,
            steal_share: cost.steal_share,
            busy_split: None,
        };
        record(samples, name, pass.cgroup_cpu, Ok((per_unit(cgroup_s), Some(cgroup))));
    }
}

/// Pings per batch of `ping_interleaved`.
const PING_BATCH: u32 = 20;

/// `pings` round trips of every scenario that can be pinged (None for the others), sent
/// in batches of `PING_BATCH` that take turns across the scenarios, so that each
/// scenario's round trips spread over the same seconds as the others': pings 5 ms apart
/// find the caches cold, and how cold moves by tens of µs within seconds.
fn ping_interleaved(order: &[&Scenario], pings: u32) -> Vec<Option<Result<Vec<f64>>>> {
    let mut all: Vec<Option<Result<Vec<f64>>>> =
        order.iter().map(|s| s.no_ping.is_none().then(|| Ok(Vec::new()))).collect();
    let mut left = pings;
    while left > 0 {
        let batch = left.min(PING_BATCH);
        for (s, rtts) in order.iter().zip(all.iter_mut()) {
            if let Some(Ok(so_far)) = rtts {
                match measure::ping_rtts_us(&s.client, s.server_ip, batch) {
                    Ok(more) => so_far.extend(more),
                    Err(e) => *rtts = Some(Err(e)),
                }
            }
        }
        left -= batch;
    }
    all
}

fn hold(ready: &[Scenario]) -> Result<()> {
    for s in ready {
        println!("{}: client netns {}, server netns {}, server {}", s.name, s.client.name, s.server.name, s.server_ip);
    }
    eprintln!("holding the scenarios until standard input closes");
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    Ok(())
}

fn show(v: &Result<f64>) -> String {
    match v {
        Ok(x) if *x >= 1000.0 => format!("{x:.0}"),
        Ok(x) => format!("{x:.2}"),
        Err(_) => "failed".into(),
    }
}

/// How each figure is measured, recorded with the results.
fn method() -> Value {
    json!({
        "tcp": "iperf3 -c <server> -n <tcp_bytes> -A 0,1 [-P 4] (a fixed amount; divided by userspace_divisor through OVS's userspace datapath): client and server pinned to different CPUs; Gbit/s received by the server",
        "rtt": "ping -i 0.005 in batches of 20 that take turns across the scenarios until each has <pings>: p50 and p99 of each scenario's round trips in each round, then median/min/max over rounds",
        "udp": format!("iperf3 -u -l {} -b 0 -k <udp_packets> -A 0,1: datagrams the server received (highest sequence minus lost) per second of its receive interval, sender unthrottled", measure::UDP_PAYLOAD),
        "cpu": "around each fixed-amount transfer (iperf3 TCP and UDP as above; ping -f -c <ping_round_trips> for the round-trip cost), the CPU time it cost, per GB received, per datagram received, per round trip answered. _cpu_ figures: the whole machine from /proc/stat, all CPUs' time less idle, iowait and steal, less the background (busy CPU-s per s measured for idle_seconds with no traffic before each figure's pass, times the transfer's wall time; background_share is the part subtracted). _cgroup_cpu_ figures: cgroup v2 usage of a cgroup holding iperf3/ping and the userspace datapath (ovs-vswitchd), less its own background: unaffected by other load, blind to work outside those tasks (ksoftirqd, interrupts on an idle CPU)",
        "resolution": "A/A: the scenarios in meta.aa set up a second time (<name>~aa) and measured as two, paired per round; band: 1.96 × 1.2533 × RMS(per-round log ratio, or difference) / √rounds, the 95 % noise band of a median of that many rounds; a target is resolved when its value lies outside the band around its bound (band of the A/A of either scenario it compares, the wider; else the figure's widest)",
        "kernel_vxlan": "per node a Linux bridge and a VXLAN device (VNI 1, port 4789, no learning, a static all-zero FDB entry to the other node), plus flannel's --ip-masq masquerade rule in nftables, which turns connection tracking on in the node's namespace as oxsdn's egress masquerade does",
        "ovs": "Debian's Open vSwitch 3.1 with the userspace datapath (netdev, AF_PACKET on the veths; no kernel module on this machine), own ovsdb-server/ovs-vswitchd per node in the node's namespace, OpenShift SDN Profile A flows (tables 0/10/20/21/30/40/50/70/80/90, VNID in reg0/reg1, tun_id on output); userspace TSO off (OVS 3.1 cannot segment into a VXLAN tunnel), pods' TX checksum offload off (the userspace datapath would forward partial checksums)",
        "rounds": "each round measures one figure on every scenario before the next figure, odd rounds in reverse scenario order, so the two samples a target compares are taken seconds apart",
        "ratios": "per round from the two scenarios' samples of that round (per_round), then the median over the rounds; margin is how far on the good side of the target (negative: missed by that much)",
    })
}

/// Writes `latest.json`, its dated copy (not for smoke runs) and the markdown table.
fn write(args: &Args, date: &str, results: &Value) -> Result<()> {
    std::fs::create_dir_all(&args.results_dir)?;
    let text = serde_json::to_string_pretty(results)? + "\n";
    let latest = args.results_dir.join("latest.json");
    std::fs::write(&latest, &text)?;
    if !args.smoke {
        std::fs::write(args.results_dir.join(format!("{date}.json")), &text)?;
    }
    if let Some(dir) = args.markdown.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.markdown, report::markdown(results))?;
    eprintln!("wrote {} and {}", latest.display(), args.markdown.display());
    print_ratios(&results["ratios"]);
    Ok(())
}

fn print_ratios(ratios: &Value) {
    for (key, r) in ratios.as_object().into_iter().flatten() {
        let met = match r["met"].as_bool() {
            _ if r["value"].is_null() => "n/a",
            Some(true) => "met",
            _ => "MISSED",
        };
        eprintln!("{met:>6} {key}: {} (target {} {})", r["value"], r["comparison"].as_str().unwrap_or(""), r["target"]);
    }
}

/// A smoke run passes when every scenario was set up and carried traffic on every
/// figure it measures, and the CNI calls succeeded.
fn check_smoke(results: &Value) -> Result<()> {
    let mut problems = Vec::new();
    for (name, s) in results["scenarios"].as_object().into_iter().flatten() {
        if let Some(e) = s["error"].as_str() {
            problems.push(format!("{name}: {e}"));
            continue;
        }
        for figure in &FIGURES {
            let f = &s[figure.key];
            if f["not_measured"].is_string() {
                continue;
            }
            // A CPU figure on a busy machine may come out at or below zero (more background
            // than work): it must be there, not positive.
            match f["median"].as_f64() {
                Some(v) if v > 0.0 || figure.kind == Kind::Cost => {}
                _ => problems.push(format!("{name} {}: {}", figure.key, f["error"].as_str().unwrap_or("no traffic"))),
            }
        }
    }
    for part in ["cni", "cost", "scale", "flood", "policy"] {
        if let Some(e) = results[part]["error"].as_str() {
            problems.push(format!("{part}: {e}"));
        }
    }
    if !problems.is_empty() {
        bail!("smoke run failed:\n{}", problems.join("\n"));
    }
    eprintln!("smoke run ok: every scenario set up and carried traffic");
    Ok(())
}

/// A measurement beside the scenarios: its figures, its error, or why it was left out.
fn extra(wanted: bool, what: &str, measure: impl FnOnce() -> Result<Value>) -> Value {
    if !wanted {
        return json!({ "not_measured": "left out with --only" });
    }
    eprintln!("{what}");
    let value = measure().unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    eprintln!("{what}: {value}");
    value
}

fn print_json(value: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn run_text(cmd: &mut Command) -> Result<String> {
    Ok(oxsdn_tests::netns::run(cmd)?.trim().to_string())
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string(Path::new("/proc/cpuinfo")).unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .unwrap_or("unknown")
        .trim()
        .to_string()
}

/// The 1, 5 and 15 minute load averages: how busy the machine was around the run.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// `path` relative to the repository when it lies inside it (the results name the
/// file the way the README does), else as it is.
fn relative_to_repo(path: &Path) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("/"));
    path.strip_prefix(repo).unwrap_or(path).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pass_records_figures_of_the_report() {
        for pass in &PASSES {
            for key in pass.rate.into_iter().chain([pass.cpu, pass.cgroup_cpu]) {
                let figure = report::figure_by_key(key).unwrap_or_else(|| panic!("{key} is not in FIGURES"));
                assert_eq!(figure.kind == Kind::Cost, key != pass.rate.unwrap_or_default(), "{key}");
            }
        }
    }
}
