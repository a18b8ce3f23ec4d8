//! The measurements between a scenario's two ends: iperf3 TCP throughput, ping round
//! trips, iperf3 UDP small-packet rate.

use anyhow::{bail, Context, Result};
use oxsdn_tests::{netns::Netns, probe::Iperf3Server};
use serde_json::Value;

use crate::scenarios::Scenario;

/// Median, minimum and maximum of a figure's samples.
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
}

/// The value at quantile `q` (0..=1) of `samples`, nearest rank.
pub fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// How long each figure runs, and how many pings make a round-trip sample.
#[derive(Clone, Copy)]
pub struct Durations {
    pub iperf_seconds: u32,
    pub pings: u32,
}

/// Runs iperf3 from the scenario's client to an iperf3 server at its server end, with
/// `args` added, and returns the client's JSON report. Client and server are pinned to
/// different CPUs (`-A 0,1`): on a 2-core machine an unpinned run varies by up to 40 %,
/// a pinned one by about 15 %.
fn iperf3(s: &Scenario, seconds: u32, args: &[&str]) -> Result<Value> {
    let server = Iperf3Server::start(&s.server)?;
    let out = s
        .client
        .command("iperf3")
        .args(["-c", &s.server_ip.to_string(), "-t", &seconds.to_string(), "-J", "-A", "0,1"])
        .args(args)
        .output()
        .context("running iperf3")?;
    server.wait();
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 output")?;
    if let Some(error) = v["error"].as_str() {
        bail!("iperf3 to {} in {}: {error}", s.server_ip, s.name);
    }
    Ok(v)
}

/// Gbit/s the iperf3 server received over `streams` parallel TCP streams.
pub fn tcp_gbps(s: &Scenario, seconds: u32, streams: u32) -> Result<f64> {
    let v = iperf3(s, seconds, &["-P", &streams.to_string()])?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("no TCP throughput in iperf3 output: {v}"))
}

/// UDP payload size of the small-packet figure.
pub const UDP_PAYLOAD: u32 = 64;

/// Packets per second that arrive at the server when the client sends 64-byte UDP
/// datagrams as fast as it can (`-b 0`): the receiver's count (datagrams received, that
/// is the highest sequence seen minus those lost, over the receiver's interval), not the
/// sender's, so drops anywhere on the path count against the figure.
pub fn udp_pps(s: &Scenario, seconds: u32) -> Result<f64> {
    let v = iperf3(s, seconds, &["-u", "-l", &UDP_PAYLOAD.to_string(), "-b", "0"])?;
    let received = &v["end"]["sum_received"];
    let (packets, lost, secs) = (received["packets"].as_f64(), received["lost_packets"].as_f64(), received["seconds"].as_f64());
    match (packets, lost, secs) {
        (Some(p), Some(l), Some(t)) if t > 0.0 => Ok((p - l) / t),
        _ => bail!("no UDP receiver count in iperf3 output: {v}"),
    }
}

/// Round-trip times in µs of `count` pings 5 ms apart from `from` to the scenario's
/// server; fails if fewer than 95 % come back.
pub fn ping_rtts_us(from: &Netns, to: std::net::Ipv4Addr, count: u32) -> Result<Vec<f64>> {
    let out = from
        .command("ping")
        .args(["-n", "-i", "0.005", "-W", "1", "-c", &count.to_string(), &to.to_string()])
        .output()
        .context("running ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.trim_end_matches(" ms").parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect();
    if (rtts.len() as u32) * 100 < count * 95 {
        bail!("{} of {count} pings to {to} answered", rtts.len());
    }
    Ok(rtts)
}
