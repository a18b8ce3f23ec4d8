//! The measurements: iperf3 throughput between a scenario's two ends.

use anyhow::{Context, Result};
use oxsdn_tests::probe::Iperf3Server;
use serde_json::{json, Value};

use crate::scenarios::Scenario;

pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Stats {
        let mut v = samples.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
        Stats { median, min: v[0], max: v[v.len() - 1] }
    }

    pub fn to_json(&self) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max })
    }
}

/// Gbit/s received by an iperf3 server at the scenario's server end, one TCP stream.
/// Client and server are pinned to different CPUs (`-A 0,1`): on a 2-core machine an
/// unpinned run varies by up to 40 %, a pinned one by about 15 %.
pub fn tcp_gbps(s: &Scenario, seconds: u32) -> Result<f64> {
    let server = Iperf3Server::start(&s.server)?;
    let out = s
        .client
        .command("iperf3")
        .args(["-c", &s.server_ip.to_string(), "-t", &seconds.to_string(), "-J", "-A", "0,1"])
        .output()
        .context("running iperf3")?;
    server.wait();
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 output")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("no throughput in iperf3 output: {}", String::from_utf8_lossy(&out.stdout)))
}
