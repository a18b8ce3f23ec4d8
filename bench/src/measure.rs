//! The measurements between a scenario's two ends: fixed amounts of iperf3 TCP and
//! small-packet UDP and of flood pings, with the CPU time each cost, and ping round trips.

use anyhow::{bail, Context, Result};
use oxsdn_tests::{netns::Netns, probe::Iperf3Server};
use serde_json::Value;

use crate::{
    cpu::{Meter, Usage},
    scenarios::Scenario,
};

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

/// How much traffic each figure moves (fixed amounts, so each scenario does the same
/// work whatever its speed), how many pings make a round-trip sample, and how long the
/// background is measured before each figure's pass.
#[derive(Clone, Copy)]
pub struct Amounts {
    pub tcp_bytes: u64,
    pub udp_packets: u64,
    pub ping_round_trips: u32,
    /// Paths through a userspace datapath (OVS netdev) are 10–30× slower: they move the
    /// TCP bytes and flood pings divided by this, to take about as long.
    pub userspace_divisor: u32,
    pub pings: u32,
    pub idle: std::time::Duration,
}

impl Amounts {
    fn tcp_bytes(&self, s: &Scenario) -> u64 {
        if s.userspace_datapath {
            self.tcp_bytes / u64::from(self.userspace_divisor)
        } else {
            self.tcp_bytes
        }
    }

    fn ping_round_trips(&self, s: &Scenario) -> u32 {
        if s.userspace_datapath {
            self.ping_round_trips / self.userspace_divisor
        } else {
            self.ping_round_trips
        }
    }
}

/// A fixed amount of traffic between a scenario's ends: how fast it went, how much
/// arrived (in the unit its cost is stated per: GB, packets, round trips), and the CPU
/// time that ran meanwhile.
pub struct Transfer {
    pub rate: f64,
    pub units: f64,
    pub usage: Usage,
}

/// Runs iperf3 from the scenario's client to an iperf3 server at its server end, with
/// `args` added: the client's JSON report and the CPU time from just before the client
/// started until the server finished. Client and server are pinned to different CPUs
/// (`-A 0,1`): on a 2-core machine an unpinned run varies by up to 40 %, a pinned one by
/// about 15 %. Both run in the meter's cgroup.
fn iperf3(s: &Scenario, meter: &Meter, args: &[&str]) -> Result<(Value, Usage)> {
    let _inside = meter.inside()?;
    let server = Iperf3Server::start(&s.server)?;
    let before = meter.read()?;
    let out = s
        .client
        .command("iperf3")
        .args(["-c", &s.server_ip.to_string(), "-J", "-A", "0,1"])
        .args(args)
        .output()
        .context("running iperf3")?;
    server.wait();
    let usage = before.until(&meter.read()?);
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 output")?;
    if let Some(error) = v["error"].as_str() {
        bail!("iperf3 to {} in {}: {error}", s.server_ip, s.name);
    }
    Ok((v, usage))
}

/// `bytes` (the amount of `amounts`) over `streams` parallel TCP streams: Gbit/s and GB
/// the iperf3 server received.
pub fn tcp(s: &Scenario, meter: &Meter, amounts: &Amounts, streams: u32) -> Result<Transfer> {
    let (v, usage) = iperf3(s, meter, &["-n", &amounts.tcp_bytes(s).to_string(), "-P", &streams.to_string()])?;
    let received = &v["end"]["sum_received"];
    match (received["bits_per_second"].as_f64(), received["bytes"].as_f64()) {
        (Some(bps), Some(bytes)) if bytes > 0.0 => Ok(Transfer { rate: bps / 1e9, units: bytes / 1e9, usage }),
        _ => bail!("no TCP receiver count in iperf3 output: {v}"),
    }
}

/// UDP payload size of the small-packet figure.
pub const UDP_PAYLOAD: u32 = 64;

/// The client sends `udp_packets` 64-byte UDP datagrams as fast as it can (`-b 0`):
/// packets per second that arrive at the server, and the packets that arrived. The
/// receiver's count (datagrams received, that is the highest sequence seen minus those
/// lost, over the receiver's interval), not the sender's, so drops anywhere on the path
/// count against the figure (and the CPU time spent on dropped packets against the
/// delivered ones).
pub fn udp(s: &Scenario, meter: &Meter, amounts: &Amounts) -> Result<Transfer> {
    let (v, usage) =
        iperf3(s, meter, &["-u", "-l", &UDP_PAYLOAD.to_string(), "-b", "0", "-k", &amounts.udp_packets.to_string()])?;
    let received = &v["end"]["sum_received"];
    let (packets, lost, secs) =
        (received["packets"].as_f64(), received["lost_packets"].as_f64(), received["seconds"].as_f64());
    match (packets, lost, secs) {
        (Some(p), Some(l), Some(t)) if t > 0.0 && p > l => Ok(Transfer { rate: (p - l) / t, units: p - l, usage }),
        _ => bail!("no UDP receiver count in iperf3 output: {v}"),
    }
}

/// Longest a flood ping may take (it ends earlier when its count is answered).
const FLOOD_DEADLINE_S: u32 = 60;

/// `ping_round_trips` echo requests back to back (`ping -f`: the next request leaves as
/// the reply arrives), from the client to the server, run in the meter's cgroup: round
/// trips per second and the round trips answered. Fails if fewer than 95 % come back.
pub fn ping_flood(s: &Scenario, meter: &Meter, amounts: &Amounts) -> Result<Transfer> {
    let count = amounts.ping_round_trips(s);
    let _inside = meter.inside()?;
    let before = meter.read()?;
    let out = s
        .client
        .command("ping")
        .args([
            "-n",
            "-q",
            "-f",
            "-c",
            &count.to_string(),
            "-w",
            &FLOOD_DEADLINE_S.to_string(),
            &s.server_ip.to_string(),
        ])
        .output()
        .context("running ping -f")?;
    let usage = before.until(&meter.read()?);
    let text = String::from_utf8_lossy(&out.stdout);
    let answered = text
        .lines()
        .find_map(|l| l.split(", ").nth(1)?.strip_suffix(" received")?.parse::<u32>().ok())
        .with_context(|| format!("no ping summary: {text}"))?;
    if answered * 100 < count * 95 {
        bail!("{answered} of {count} flood pings to {} answered", s.server_ip);
    }
    Ok(Transfer { rate: f64::from(answered) / usage.wall_s, units: f64::from(answered), usage })
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
