//! `oxsdn-bench`: sets up every scenario in namespaces of its own, measures them
//! interleaved (A B C A B C …) so drift hits all alike, and writes the medians, the
//! targets as checkable ratios, and `RESULTS.md`.

mod cni_latency;
mod cost;
mod measure;
mod ovs;
mod report;
mod scale;
mod scenarios;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use crate::{measure::Durations, report::FIGURES, scenarios::Scenario};

#[derive(Parser)]
#[command(about = "Side-by-side benchmark of oxsdn and the alternatives")]
struct Args {
    /// Rounds over all scenarios (more short rounds beat fewer long ones: the machine's
    /// drift, not a run's length, is what spreads the samples).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 2)]
    seconds: u32,
    /// Pings per round trip sample (5 ms apart).
    #[arg(long, default_value_t = 200)]
    pings: u32,
    /// Directory of the results JSON (`latest.json` and a dated copy).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    results_dir: PathBuf,
    /// Where to write the markdown table.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md"))]
    markdown: PathBuf,
    /// One short round of everything (1 s per figure, 50 pings, few CNI calls), written to a
    /// temporary directory; fails if any scenario cannot be set up or carries no
    /// traffic. For CI.
    #[arg(long)]
    smoke: bool,
    /// Measure only these scenarios (comma-separated names; `cni` for the CNI latency,
    /// `cost` for the per-path cost, `scale` for the scale figures), to look into one
    /// figure. Results go where they would go otherwise.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Packets per timing of the per-path cost (BPF_PROG_TEST_RUN, --rounds rounds).
    #[arg(long, default_value_t = 1_000_000)]
    cost_repeat: u32,
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
        let results: Value = serde_json::from_slice(&std::fs::read(json).with_context(|| format!("reading {}", json.display()))?)?;
        std::fs::write(&args.markdown, report::markdown(&results))?;
        return Ok(());
    }
    if args.cost_only {
        return print_json(&cost::measure(args.cost_repeat, args.rounds, args.cost_object)?);
    }
    if args.scale_only {
        return print_json(&scale::measure(&args.scale)?);
    }
    let cni_plan = if args.smoke {
        let dir = std::env::temp_dir().join(format!("oxsdn-bench-smoke-{}", std::process::id()));
        args.rounds = 1;
        args.seconds = 1;
        args.pings = 50;
        args.results_dir = dir.clone();
        args.markdown = dir.join("RESULTS.md");
        args.cost_repeat = 10_000;
        args.scale = scale::Load::smoke();
        cni_latency::Plan { sequential: 3, concurrent: 4, batches: 1 }
    } else {
        cni_latency::Plan { sequential: 50, concurrent: 20, batches: 3 }
    };
    let durations = Durations { iperf_seconds: args.seconds, pings: args.pings };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let load_before = load_average();

    const EXTRAS: [&str; 3] = ["cni", "cost", "scale"];
    if let Some(unknown) = args.only.iter().find(|o| !scenarios::NAMES.contains(&o.as_str()) && !EXTRAS.contains(&o.as_str())) {
        bail!("unknown --only name {unknown}; known: {}, {}", scenarios::NAMES.join(", "), EXTRAS.join(", "));
    }
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut setup_errors = BTreeMap::new();
    let mut ready = Vec::new();
    for name in scenarios::NAMES.into_iter().filter(|n| wanted(n)) {
        eprintln!("setting up {name}");
        match scenarios::setup(name) {
            Ok(s) => ready.push(s),
            Err(e) => {
                eprintln!("{name}: set-up failed: {e:#}");
                setup_errors.insert(name, format!("set-up failed: {e:#}"));
            }
        }
    }
    if args.hold {
        return hold(&ready);
    }
    let samples = measure_rounds(&ready, args.rounds, durations);
    let no_ping: BTreeMap<&str, &str> = ready.iter().filter_map(|s| Some((s.name, s.no_ping?))).collect();
    drop(ready);

    let cni = extra(wanted("cni"), "CNI latency", || cni_latency::measure(&cni_plan));
    let cost = extra(wanted("cost"), "per-path cost", || cost::measure(args.cost_repeat, args.rounds, None));
    let scale = extra(wanted("scale"), "scale", || scale::measure(&args.scale));

    let scenarios = report::object(scenarios::NAMES.iter().filter(|n| wanted(n)).map(|name| {
        let value = match setup_errors.get(name) {
            Some(error) => json!({ "error": error }),
            None => report::object(FIGURES.iter().map(|(figure, _, _)| {
                let v = match samples.get(&(*name, *figure)) {
                    Some(Ok(values)) => report::figure(values),
                    Some(Err(error)) => json!({ "error": error }),
                    None => json!({ "not_measured": no_ping.get(name).copied().unwrap_or("not measured") }),
                };
                (figure.to_string(), v)
            })),
        };
        (name.to_string(), value)
    }));
    let ratios = report::ratios(&scenarios, &cni, &cost, &scale);
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
            "iperf_seconds": args.seconds,
            "pings": args.pings,
            "smoke": args.smoke,
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "method": method(),
        "scenarios": scenarios,
        "ratios": ratios,
        "cni": cni,
        "cost": cost,
        "scale": scale,
    });
    write(&args, &date, &results)?;
    if args.smoke {
        check_smoke(&results).with_context(|| format!("results in {}", args.results_dir.display()))?;
        let _ = std::fs::remove_dir_all(&args.results_dir);
    }
    Ok(())
}

/// Every figure of every scenario, `rounds` times, interleaved: the samples (or the
/// error) per (scenario, figure), sample `i` from round `i`.
type Samples = BTreeMap<(&'static str, &'static str), Result<Vec<f64>, String>>;

/// The iperf3 figures.
#[derive(Clone, Copy)]
enum Measurement {
    Tcp(u32),
    Udp,
}

/// Each round measures one figure on every scenario before the next figure, so the
/// samples a ratio pairs are taken a few seconds apart; odd rounds go through the
/// scenarios in reverse, so no scenario always follows the same one (on a 2-CPU VM a
/// figure drifts by more than most targets' margins within minutes). Round trips are
/// finer still: see `ping_interleaved`.
fn measure_rounds(ready: &[Scenario], rounds: usize, d: Durations) -> Samples {
    let mut samples: Samples = BTreeMap::new();
    let mut record = |name, figure, value: &Result<f64>| {
        let slot = samples.entry((name, figure)).or_insert_with(|| Ok(Vec::new()));
        match (value, slot.as_mut()) {
            (Ok(v), Ok(values)) => values.push(*v),
            (Err(e), Ok(_)) => *slot = Err(format!("{e:#}")),
            (_, Err(_)) => {}
        }
    };
    for round in 1..=rounds {
        let mut order: Vec<&Scenario> = ready.iter().collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for m in [Measurement::Tcp(1), Measurement::Tcp(4), Measurement::Udp] {
            for s in &order {
                match m {
                    Measurement::Tcp(streams) => {
                        let v = measure::tcp_gbps(s, d.iperf_seconds, streams);
                        eprintln!("round {round}: {:<26} TCP {streams} stream(s) {:>6} Gbit/s", s.name, show(&v));
                        record(s.name, if streams == 1 { "tcp_1_stream_gbps" } else { "tcp_4_streams_gbps" }, &v);
                    }
                    Measurement::Udp => {
                        let v = measure::udp_pps(s, d.iperf_seconds);
                        eprintln!("round {round}: {:<26} UDP 64 B {:>8} packets/s", s.name, show(&v));
                        record(s.name, "udp_64b_pps", &v);
                    }
                }
            }
        }
        for (s, rtts) in order.iter().zip(ping_interleaved(&order, d.pings)) {
            let Some(rtts) = rtts else { continue };
            let p50 = rtts.as_ref().map(|r| measure::percentile(r, 0.5)).map_err(|e| anyhow::anyhow!("{e:#}"));
            let p99 = rtts.as_ref().map(|r| measure::percentile(r, 0.99)).map_err(|e| anyhow::anyhow!("{e:#}"));
            eprintln!("round {round}: {:<26} RTT p50 {} µs, p99 {} µs", s.name, show(&p50), show(&p99));
            record(s.name, "rtt_p50_us", &p50);
            record(s.name, "rtt_p99_us", &p99);
        }
    }
    samples
}

/// Pings per batch of `ping_interleaved`.
const PING_BATCH: u32 = 20;

/// `pings` round trips of every scenario that can be pinged (None for the others), sent
/// in batches of `PING_BATCH` that take turns across the scenarios, so that each
/// scenario's round trips spread over the same seconds as the others': pings 5 ms apart
/// find the caches cold, and how cold moves by tens of µs within seconds.
fn ping_interleaved(order: &[&Scenario], pings: u32) -> Vec<Option<Result<Vec<f64>>>> {
    let mut all: Vec<Option<Result<Vec<f64>>>> = order.iter().map(|s| s.no_ping.is_none().then(|| Ok(Vec::new()))).collect();
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
        "tcp": "iperf3 -c <server> -t <seconds> -A 0,1 [-P 4]: client and server pinned to different CPUs; Gbit/s received by the server",
        "rtt": "ping -i 0.005 in batches of 20 that take turns across the scenarios until each has <pings>: p50 and p99 of each scenario's round trips in each round, then median/min/max over rounds",
        "udp": format!("iperf3 -u -l {} -b 0 -A 0,1: datagrams the server received (highest sequence minus lost) per second of its receive interval, sender unthrottled", measure::UDP_PAYLOAD),
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
        for (figure, _, _) in FIGURES {
            let f = &s[figure];
            if f["not_measured"].is_string() {
                continue;
            }
            match f["median"].as_f64() {
                Some(v) if v > 0.0 => {}
                _ => problems.push(format!("{name} {figure}: {}", f["error"].as_str().unwrap_or("no traffic"))),
            }
        }
    }
    for part in ["cni", "cost", "scale"] {
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
