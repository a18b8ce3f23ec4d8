//! What a fixed amount of traffic costs in CPU time, read two ways around each transfer
//! (bench/README.md, "CPU cost", says why both):
//!
//! - **the machine**: every CPU's time less its idle, iowait and steal time
//!   (`/proc/stat`), less the background: the busy rate measured while no traffic ran,
//!   times the transfer's wall time. It counts the work wherever it runs: in the
//!   processes, in softirq on whichever task or idle CPU a packet interrupts, in
//!   ksoftirqd and kworkers. Sound only while nothing else runs on the machine; the
//!   background share records how much was subtracted.
//! - **the cgroup**: the CPU time (cgroup v2 `cpu.stat`) of a cgroup of this run that
//!   holds the traffic's processes (iperf3, ping, OVS's userspace datapath) and so the
//!   softirq work that ran in their context. Other load on the machine does not reach it,
//!   but it misses work done elsewhere (ksoftirqd, interrupts on an idle CPU).

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Cumulative CPU times of the machine (from the first line of `/proc/stat`), seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct MachineTimes {
    /// user + nice (guests included).
    user: f64,
    system: f64,
    /// irq + softirq.
    softirq: f64,
    /// idle + iowait: nohz measures these per CPU exactly (not by sampling ticks).
    idle: f64,
    steal: f64,
    cpus: u32,
}

impl MachineTimes {
    /// Parses `/proc/stat`, whose times are in clock ticks of `ticks_per_s`.
    fn parse(stat: &str, ticks_per_s: f64) -> Result<MachineTimes> {
        let total = stat.lines().next().filter(|l| l.starts_with("cpu ")).context("no cpu line in /proc/stat")?;
        let v: Vec<f64> = total
            .split_whitespace()
            .skip(1)
            .map(|t| t.parse::<f64>().map(|t| t / ticks_per_s))
            .collect::<Result<_, _>>()?;
        if v.len() < 8 {
            bail!("short cpu line in /proc/stat: {total}");
        }
        let cpus = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        Ok(MachineTimes {
            user: v[0] + v[1],
            system: v[2],
            idle: v[3] + v[4],
            softirq: v[5] + v[6],
            steal: v[7],
            cpus: cpus as u32,
        })
    }
}

/// CPU time of the machine and of the run's cgroup at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    at: Instant,
    machine: MachineTimes,
    cgroup_us: Option<u64>,
}

/// What ran between two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub wall_s: f64,
    /// CPU-seconds the machine was busy: all CPUs' wall time less idle, iowait and steal.
    pub machine_s: f64,
    pub steal_s: f64,
    /// Of the machine's busy time as its tick-sampled columns split it: user, system,
    /// irq + softirq (shares of their sum).
    pub user_share: f64,
    pub system_share: f64,
    pub softirq_share: f64,
    pub cgroup_s: Option<f64>,
    pub cpus: u32,
}

impl Reading {
    pub fn until(&self, later: &Reading) -> Usage {
        let (a, b) = (&self.machine, &later.machine);
        let wall_s = later.at.duration_since(self.at).as_secs_f64();
        let steal_s = b.steal - a.steal;
        let sampled = (b.user - a.user) + (b.system - a.system) + (b.softirq - a.softirq);
        let share = |x: f64| if sampled > 0.0 { x / sampled } else { 0.0 };
        Usage {
            wall_s,
            machine_s: (wall_s * f64::from(b.cpus) - (b.idle - a.idle) - steal_s).max(0.0),
            steal_s,
            user_share: share(b.user - a.user),
            system_share: share(b.system - a.system),
            softirq_share: share(b.softirq - a.softirq),
            cgroup_s: self.cgroup_us.zip(later.cgroup_us).map(|(a, b)| b.saturating_sub(a) as f64 / 1e6),
            cpus: b.cpus,
        }
    }
}

/// Busy CPU-seconds per second of wall time while no traffic ran: the machine's and the
/// cgroup's (its OVS daemons idling).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Background {
    pub machine_per_s: f64,
    pub cgroup_per_s: Option<f64>,
}

/// A transfer's cost: CPU-seconds net of the background, per unit of traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub machine_s: f64,
    pub cgroup_s: Option<f64>,
    /// The background subtracted, as a share of the machine's busy time.
    pub background_share: f64,
    /// The background subtracted, as a share of the cgroup's CPU time.
    pub cgroup_background_share: f64,
    /// Steal time as a share of all CPUs' wall time (the hypervisor ran something else).
    pub steal_share: f64,
    pub usage: Usage,
}

impl Cost {
    pub fn of(usage: Usage, background: Background) -> Cost {
        let machine_background = background.machine_per_s * usage.wall_s;
        let cgroup_background = background.cgroup_per_s.unwrap_or(0.0) * usage.wall_s;
        let all_cpus_s = usage.wall_s * f64::from(usage.cpus);
        Cost {
            machine_s: usage.machine_s - machine_background,
            cgroup_s: usage.cgroup_s.map(|c| c - cgroup_background),
            background_share: if usage.machine_s > 0.0 { machine_background / usage.machine_s } else { 0.0 },
            cgroup_background_share: match usage.cgroup_s {
                Some(c) if c > 0.0 => cgroup_background / c,
                _ => 0.0,
            },
            steal_share: if all_cpus_s > 0.0 { usage.steal_s / all_cpus_s } else { 0.0 },
            usage,
        }
    }
}

/// Reads the machine's and the run's cgroup's CPU time.
pub struct Meter {
    ticks_per_s: f64,
    cgroup: Option<Cgroup>,
}

impl Meter {
    /// A meter with a cgroup of this run when a cgroup v2 hierarchy is mounted (else the
    /// cgroup figures are not measured).
    pub fn new() -> Result<Meter> {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
        if ticks <= 0 {
            bail!("sysconf(_SC_CLK_TCK) failed");
        }
        let cgroup = match Cgroup::create() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("no cgroup CPU figures: {e:#}");
                None
            }
        };
        Ok(Meter { ticks_per_s: ticks as f64, cgroup })
    }

    pub fn has_cgroup(&self) -> bool {
        self.cgroup.is_some()
    }

    pub fn read(&self) -> Result<Reading> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let at = Instant::now();
        let machine = MachineTimes::parse(&stat, self.ticks_per_s)?;
        let cgroup_us = self.cgroup.as_ref().map(Cgroup::usage_us).transpose()?;
        Ok(Reading { at, machine, cgroup_us })
    }

    /// The background: what the machine and the cgroup use over `window` with no
    /// traffic.
    pub fn background(&self, window: Duration) -> Result<Background> {
        let before = self.read()?;
        std::thread::sleep(window);
        let usage = before.until(&self.read()?);
        Ok(Background {
            machine_per_s: usage.machine_s / usage.wall_s,
            cgroup_per_s: usage.cgroup_s.map(|c| c / usage.wall_s),
        })
    }

    /// Moves this process into the cgroup until the guard drops, so that whatever it
    /// starts meanwhile (and all their descendants) is counted in the cgroup.
    pub fn inside(&self) -> Result<Inside<'_>> {
        if let Some(c) = &self.cgroup {
            c.move_pid(&c.dir, std::process::id())?;
        }
        Ok(Inside { cgroup: self.cgroup.as_ref() })
    }

    /// Moves a running process (e.g. a userspace datapath) into the cgroup for the rest
    /// of its life.
    pub fn adopt(&self, pid: u32) -> Result<()> {
        match &self.cgroup {
            Some(c) => c.move_pid(&c.dir, pid),
            None => Ok(()),
        }
    }
}

/// While it lives, this process is in the run's cgroup.
pub struct Inside<'m> {
    cgroup: Option<&'m Cgroup>,
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.cgroup {
            if let Err(e) = c.move_pid(&c.home, std::process::id()) {
                eprintln!("leaving the measurement cgroup: {e:#}");
            }
        }
    }
}

/// A cgroup of this run (`oxt<pid>-bench-cpu`) under this process's own cgroup v2, which
/// gets the process back and is removed at the end.
struct Cgroup {
    dir: PathBuf,
    /// The cgroup this process was in.
    home: PathBuf,
}

const CGROUP_SUFFIX: &str = "-bench-cpu";

impl Cgroup {
    fn create() -> Result<Option<Cgroup>> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        // Fields: id parent dev root mountpoint options [optional…] - fstype source options.
        let Some(mount) = mountinfo.lines().find_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            (after.split_whitespace().next() == Some("cgroup2"))
                .then(|| before.split_whitespace().nth(4).map(PathBuf::from))?
        }) else {
            bail!("no cgroup v2 hierarchy mounted");
        };
        let own = fs::read_to_string("/proc/self/cgroup")?;
        let path =
            own.lines().find_map(|l| l.strip_prefix("0::")).context("no cgroup v2 entry in /proc/self/cgroup")?;
        let home = mount.join(path.trim_start_matches('/'));
        remove_stale(&home);
        let dir = home.join(format!("oxt{}{CGROUP_SUFFIX}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        let cgroup = Cgroup { dir, home };
        cgroup.usage_us()?;
        Ok(Some(cgroup))
    }

    fn usage_us(&self) -> Result<u64> {
        let stat = fs::read_to_string(self.dir.join("cpu.stat"))
            .with_context(|| format!("reading {}/cpu.stat", self.dir.display()))?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .context("no usage_usec in cpu.stat")?
            .trim()
            .parse()
            .context("usage_usec")
    }

    fn move_pid(&self, to: &Path, pid: u32) -> Result<()> {
        fs::write(to.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving process {pid} to cgroup {}", to.display()))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Fails while a process is left inside; a later run removes it (remove_stale).
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Removes the (empty) cgroups of earlier runs whose process is gone.
fn remove_stale(home: &Path) {
    for entry in fs::read_dir(home).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let pid = name.strip_prefix("oxt").and_then(|r| r.strip_suffix(CGROUP_SUFFIX));
        if pid.is_some_and(|p| p.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "cpu  100 5 50 800 20 1 9 15 0 0\ncpu0 50 5 25 400 10 1 4 7 0 0\ncpu1 50 0 25 400 10 0 5 8 0 0\nintr 1\n";

    #[test]
    fn machine_times_sum_the_columns_in_seconds() {
        let t = MachineTimes::parse(STAT, 100.0).unwrap();
        let got = [t.user, t.system, t.softirq, t.idle, t.steal];
        for (got, want) in got.iter().zip([1.05, 0.5, 0.1, 8.2, 0.15]) {
            assert!((got - want).abs() < 1e-9, "{t:?}");
        }
        assert_eq!(t.cpus, 2);
    }

    #[test]
    fn busy_time_is_wall_time_less_idle_and_steal() {
        let start = Instant::now();
        let a = Reading {
            at: start,
            machine: MachineTimes { user: 1.0, system: 1.0, softirq: 0.0, idle: 10.0, steal: 0.0, cpus: 2 },
            cgroup_us: Some(1_000),
        };
        let b = Reading {
            at: start + Duration::from_secs(2),
            machine: MachineTimes { user: 2.0, system: 3.0, softirq: 1.0, idle: 10.5, steal: 0.5, cpus: 2 },
            cgroup_us: Some(2_501_000),
        };
        let u = a.until(&b);
        // 2 CPUs × 2 s, less 0.5 s idle and 0.5 s steal.
        assert_eq!(u.machine_s, 3.0);
        assert_eq!(u.cgroup_s, Some(2.5));
        assert_eq!((u.user_share, u.system_share, u.softirq_share), (0.25, 0.5, 0.25));
        let cost = Cost::of(u, Background { machine_per_s: 0.15, cgroup_per_s: Some(0.05) });
        assert!((cost.steal_share - 0.125).abs() < 1e-9, "{cost:?}");
        assert!((cost.machine_s - 2.7).abs() < 1e-9, "{cost:?}");
        assert!((cost.cgroup_s.unwrap() - 2.4).abs() < 1e-9, "{cost:?}");
        assert!((cost.background_share - 0.1).abs() < 1e-9, "{cost:?}");
    }
}
