//! `oxsdn-bench`: sets up every scenario in namespaces of its own, measures them
//! interleaved (A B C A B C …) so drift hits all alike, and writes the medians.

mod measure;
mod scenarios;

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Result;
use clap::Parser;
use serde_json::{json, Value};

use crate::measure::Stats;

#[derive(Parser)]
#[command(about = "Side-by-side benchmark of oxsdn and the alternatives")]
struct Args {
    /// Rounds over all scenarios.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
    /// Measure only these scenarios (comma-separated names); ratios whose two sides
    /// were not both measured are null.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scenarios = scenarios::all(&args.only)?;
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 1..=args.rounds {
        for s in &scenarios {
            let gbps = measure::tcp_gbps(s, args.seconds)?;
            eprintln!("round {round}: {:<16} TCP 1 stream {gbps:6.2} Gbit/s", s.name);
            samples.entry(s.name).or_default().push(gbps);
        }
    }
    let stats: BTreeMap<&str, Stats> = samples.iter().map(|(k, v)| (*k, Stats::of(v))).collect();
    let ratio = |a: &str, b: &str| Some(stats.get(a)?.median / stats.get(b)?.median);
    let results = json!({
        "rounds": args.rounds,
        "seconds": args.seconds,
        "tcp_1_stream_gbps": stats.iter().map(|(k, s)| (k.to_string(), s.to_json())).collect::<serde_json::Map<String, Value>>(),
        "ratios": {
            "oxsdn_same_node_vs_raw_veth": ratio("oxsdn-same-node", "raw-veth"),
            "oxsdn_same_node_vs_linux_bridge": ratio("oxsdn-same-node", "linux-bridge"),
            "oxsdn_cross_node_vs_kernel_vxlan": ratio("oxsdn-cross-node", "kernel-vxlan"),
            "oxsdn_cross_node_vs_underlay": ratio("oxsdn-cross-node", "underlay"),
            "oxsdn_service_vs_oxsdn_cross_node": ratio("oxsdn-service", "oxsdn-cross-node"),
            "oxsdn_egress_vs_node_egress": ratio("oxsdn-egress", "node-egress"),
        },
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
