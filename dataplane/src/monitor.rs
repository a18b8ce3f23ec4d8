//! `oxsdnctl monitor`'s side of the monitor (`oxsdn_common::monitor`): the lease in
//! `MONITOR_CONFIG` that turns reporting on while a monitor runs, the reader of the
//! `MONITOR_EVENTS` ring buffer, and the events as the operator reads them (the rule
//! that dropped a packet as `dump-flows` shows it). The agent ends leases whose monitor
//! died (`end_expired_leases`), so the programs go back to costing nothing.

use std::{
    os::fd::{AsFd, AsRawFd},
    path::Path,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context, Result};
use aya::maps::MapData;
use oxsdn_common::{
    conntrack::{HOST_OWNER, TUNNEL_OWNER},
    monitor::{self, port, MonitorBudget, MonitorConfig, MonitorEvent, EVENTS_BYTES, L3_ARP, L3_IPV4, NO_RULE},
    trace::output_kind,
    NodeConfig,
};
use serde::Serialize;

use crate::{
    flows::{self, ifname_or_index, RuleRef},
    maps::{ip_from_key, monotonic_ns, NodeMaps},
};

/// How long a lease lasts unless renewed; a monitor renews it every `RENEW_EVERY`.
pub const LEASE: Duration = Duration::from_secs(5);
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often the agent looks for leases whose monitor died.
const EXPIRY_CHECK: Duration = Duration::from_secs(5);

/// What a monitor asks the programs for.
#[derive(Clone, Copy, Debug)]
pub struct Wanted {
    /// `WATCH_DROPS`, and `WATCH_FORWARDS` for every decision.
    pub flags: u32,
    /// Events per second per CPU, and how many a CPU may send at once.
    pub rate: u32,
    pub burst: u32,
}

/// A running monitor's hold on a node's programs; dropping it turns reporting off.
pub struct Lease {
    maps: NodeMaps,
    config: MonitorConfig,
}

fn pid_alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

impl Lease {
    /// Turns reporting on for this process, unless another live monitor holds the node
    /// (the ring buffer has one reader).
    pub fn take(pin_dir: &Path, wanted: Wanted) -> Result<Lease> {
        if wanted.rate == 0 || wanted.burst == 0 {
            bail!("the rate and the burst must be at least 1");
        }
        let maps = NodeMaps::open(pin_dir)?;
        let current = maps.monitor_config.get(&0, 0)?;
        let me = std::process::id();
        if current.flags != 0
            && current.holder != me
            && current.lease_until > monotonic_ns()
            && pid_alive(current.holder)
        {
            bail!("another monitor (pid {}) is watching this node; one at a time", current.holder);
        }
        let cost_ns = 1_000_000_000 / u64::from(wanted.rate);
        let config = MonitorConfig {
            flags: wanted.flags,
            holder: me,
            lease_until: 0,
            cost_ns,
            max_credit_ns: cost_ns * u64::from(wanted.burst),
        };
        let mut lease = Lease { maps, config };
        lease.renew()?;
        Ok(lease)
    }

    /// Extends the lease by `LEASE` from now.
    pub fn renew(&mut self) -> Result<()> {
        self.config.lease_until = monotonic_ns() + LEASE.as_nanos() as u64;
        self.maps.monitor_config.set(0, self.config, 0)?;
        Ok(())
    }

    /// Events the programs emitted and suppressed, over all CPUs, since the maps were
    /// made.
    pub fn budget(&self) -> Result<MonitorBudget> {
        Ok(self.maps.monitor_budget.get(&0, 0)?.iter().fold(MonitorBudget::default(), |a, b| MonitorBudget {
            emitted: a.emitted + b.emitted,
            suppressed: a.suppressed + b.suppressed,
            ..a
        }))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Err(e) = self.maps.monitor_config.set(0, MonitorConfig::default(), 0) {
            tracing::warn!("ending the monitor's lease: {e}");
        }
    }
}

/// In the agent: every few seconds, turns reporting off if its monitor's lease ran out
/// (a monitor killed without ending it).
pub fn end_expired_leases(pin_dir: &Path) -> Result<()> {
    let mut maps = NodeMaps::open(pin_dir)?;
    std::thread::spawn(move || loop {
        match maps.monitor_config.get(&0, 0) {
            Ok(c) if c.flags != 0 && c.lease_until < monotonic_ns() => {
                tracing::info!(holder = c.holder, "ending the lease of a monitor that stopped renewing it");
                if let Err(e) = maps.monitor_config.set(0, MonitorConfig::default(), 0) {
                    tracing::warn!("ending an expired monitor lease: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("reading the monitor's lease: {e}"),
        }
        std::thread::sleep(EXPIRY_CHECK);
    });
    Ok(())
}

/// The reader of a node's `MONITOR_EVENTS`, on the kernel's ring buffer ABI (as libbpf's
/// `ring_buffer__consume`). Not aya 0.13's `RingBuf`: it starts with a producer position
/// of 0 in its cache, so a reader that finds the consumer position elsewhere (any monitor
/// after the first) walks the ring forever.
pub struct Events {
    /// The consumer page (read-write): the consumer position.
    consumer: Mapping,
    /// The producer page, then the data pages twice (read-only).
    producer: Mapping,
    page: usize,
    mask: u64,
    map: MapData,
}

/// A shared mapping of part of a map's memory, unmapped on drop.
struct Mapping {
    base: std::ptr::NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: i32, len: usize, writable: bool, offset: usize) -> Result<Mapping> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a shared mapping of the ring buffer's pages, of the sizes the kernel
        // allows at these offsets.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, offset as libc::off_t) };
        if base == libc::MAP_FAILED {
            bail!("mapping MONITOR_EVENTS: {}", std::io::Error::last_os_error());
        }
        Ok(Mapping { base: std::ptr::NonNull::new(base.cast()).context("mmap returned null")?, len })
    }

    /// The position (u64) at the start of the page.
    fn position(&self) -> &AtomicU64 {
        // SAFETY: page-aligned, within the mapping; the kernel and this reader access it
        // atomically.
        unsafe { &*self.base.as_ptr().cast::<AtomicU64>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

const RINGBUF_BUSY: u32 = 1 << 31;
const RINGBUF_DISCARD: u32 = 1 << 30;
const RINGBUF_HEADER: u64 = 8;

impl Events {
    pub fn open(pin_dir: &Path) -> Result<Events> {
        let path = pin_dir.join("MONITOR_EVENTS");
        let map = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: plain sysconf call.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let size = EVENTS_BYTES as usize;
        Ok(Events {
            consumer: Mapping::new(fd, page, true, 0)?,
            producer: Mapping::new(fd, page + 2 * size, false, page)?,
            page,
            mask: size as u64 - 1,
            map,
        })
    }

    /// The events there are, waiting up to `timeout` for the first.
    pub fn next_batch(&mut self, timeout: Duration) -> Result<Vec<MonitorEvent>> {
        let mut events = self.drain();
        if events.is_empty() {
            let mut fds = [libc::pollfd { fd: self.map.fd().as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            // SAFETY: one valid pollfd for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout.as_millis() as i32) };
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                bail!("waiting for monitor events: {}", std::io::Error::last_os_error());
            }
            events = self.drain();
        }
        Ok(events)
    }

    /// Every committed record from the consumer position to the producer's.
    fn drain(&mut self) -> Vec<MonitorEvent> {
        let mut events = Vec::new();
        let mut consumed = self.consumer.position().load(Ordering::Acquire);
        let produced = self.producer.position().load(Ordering::Acquire);
        while consumed < produced {
            let at = self.page + (consumed & self.mask) as usize;
            // SAFETY: the header lies in the first copy of the data pages (`at` < page +
            // size), 8-byte aligned; the kernel writes it atomically.
            let header = unsafe { &*self.producer.base.as_ptr().add(at).cast::<AtomicU32>() }.load(Ordering::Acquire);
            if header & RINGBUF_BUSY != 0 {
                break;
            }
            let len = header & !(RINGBUF_BUSY | RINGBUF_DISCARD);
            if header & RINGBUF_DISCARD == 0 && len as usize >= std::mem::size_of::<MonitorEvent>() {
                // SAFETY: the record (at most the ring's size) lies within the doubly
                // mapped data pages; `MonitorEvent` is plain data, any bit pattern valid.
                events.push(unsafe {
                    std::ptr::read_unaligned(
                        self.producer.base.as_ptr().add(at + RINGBUF_HEADER as usize).cast::<MonitorEvent>(),
                    )
                });
            }
            consumed += (RINGBUF_HEADER + u64::from(len)).next_multiple_of(8);
            self.consumer.position().store(consumed, Ordering::Release);
        }
        events
    }
}

/// An event as the operator reads it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Observation {
    /// RFC 3339, UTC, µs.
    pub time: String,
    /// `DROPPED` or `FORWARDED`.
    pub verdict: &'static str,
    /// Where it came in: `pod veth NAME`, `tun0`, `tunnel from NODE_IP`.
    pub ingress: String,
    pub src: String,
    pub dst: String,
    /// `tcp`, `udp`, `icmp`, `arp`, a number, or `other` (not IP nor ARP).
    pub protocol: String,
    pub sport: u16,
    pub dport: u16,
    pub length: u32,
    /// Source and destination VNIDs as the tables had them (reg0, reg1).
    pub reg0: u32,
    pub reg1: u32,
    /// The source's project (a pod on this node), if known.
    pub source_project: Option<String>,
    /// A drop: the table and rule that dropped it, and the rule as dump-flows shows it.
    pub table: Option<u8>,
    pub rule: Option<String>,
    pub flow: Option<String>,
    /// A forward: where it went.
    pub output: Option<String>,
    pub cpu: u32,
}

/// Turns `MonitorEvent`s into `Observation`s on one node.
pub struct Describer {
    maps: NodeMaps,
    cfg: NodeConfig,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns.
    wall_offset_ns: i128,
}

fn proto_name(e: &MonitorEvent) -> String {
    match (e.l3, e.proto) {
        (L3_ARP, _) => "arp".into(),
        (L3_IPV4, 1) => "icmp".into(),
        (L3_IPV4, 6) => "tcp".into(),
        (L3_IPV4, 17) => "udp".into(),
        (L3_IPV4, n) => n.to_string(),
        _ => "other".into(),
    }
}

/// RFC 3339 in UTC with microseconds, from Unix time in ns.
fn rfc3339(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let micros = unix_ns.rem_euclid(1_000_000_000) / 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl Describer {
    pub fn new(pin_dir: &Path) -> Result<Describer> {
        let maps = NodeMaps::open(pin_dir)?;
        let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_nanos() as i128;
        let cfg = maps.config.get(&0, 0)?;
        Ok(Describer { maps, cfg, wall_offset_ns: wall - monotonic_ns() as i128 })
    }

    /// `project_of_slot`: the project in a `PROJECTS` slot.
    pub fn describe(&self, e: &MonitorEvent, project_of_slot: impl Fn(u32) -> Option<String>) -> Observation {
        let ingress = match e.port {
            port::POD => format!("pod veth {}", ifname_or_index(e.ingress)),
            port::TUN0 => "tun0".into(),
            port::TUNNEL => format!("tunnel from {}", ip_from_key(e.ingress)),
            _ => "unknown".into(),
        };
        // A NetworkPolicy's drop names the policy (its counter slot's name, if the slot
        // is still taken).
        let (rule, flow) = match (monitor::policy_of(e.rule), monitor::egress_of(e.rule)) {
            (Some((slot, rule)), _) => {
                let rule = RuleRef::Policy { slot, rule }.declaration();
                let name = self.maps.policy_slots.get(&slot, 0).map(|p| p.name()).unwrap_or_else(|_| "?".into());
                (Some(rule), Some(flows::policy(rule, slot, &name, &self.cfg)))
            }
            (None, Some((slot, rule))) => {
                let entry = self.maps.egress_cidrs.iter().filter_map(|entry| entry.ok()).find(|(_, v)| v.slot == slot);
                let reference = RuleRef::Egress { slot, rule };
                let flow = entry.map(|(key, verdict)| flows::egress(&key, &verdict, &self.cfg, Default::default()));
                (Some(reference.declaration()), flow)
            }
            (None, None) if e.rule != NO_RULE => {
                let rule = RuleRef::NodeWide { rule: e.rule }.declaration();
                (Some(rule), Some(flows::node_wide(rule, &self.cfg)))
            }
            (None, None) => (None, None),
        };
        let output = match e.output {
            output_kind::DROP => None,
            output_kind::TUN0 => Some("tun0".to_string()),
            output_kind::POD => {
                Some(format!("pod {} (veth {})", ip_from_key(e.out_ip), ifname_or_index(e.out_ifindex)))
            }
            output_kind::TUNNEL => Some(format!("tunnel to {} VNI {:#x}", ip_from_key(e.out_ip), e.vni)),
            output_kind::MULTICAST if e.out_ifindex != 0 => Some(format!("multicast of VNID {} (pods, nodes)", e.vni)),
            output_kind::MULTICAST => Some(format!("multicast of VNID {} (pods)", e.vni)),
            other => Some(format!("output {other}")),
        };
        let source_project = match e.owner {
            HOST_OWNER | TUNNEL_OWNER => None,
            slot if e.port == port::POD => project_of_slot(slot),
            _ => None,
        };
        Observation {
            time: rfc3339(i128::from(e.time_ns) + self.wall_offset_ns),
            verdict: if e.output == output_kind::DROP { "DROPPED" } else { "FORWARDED" },
            ingress,
            src: ip_from_key(e.src).to_string(),
            dst: ip_from_key(e.dst).to_string(),
            protocol: proto_name(e),
            sport: e.sport,
            dport: e.dport,
            length: e.len,
            reg0: e.reg0,
            reg1: e.reg1,
            source_project,
            table: rule.map(|r| r.table),
            rule: rule.map(|r| r.name.to_string()),
            flow: flow.map(|f| f.to_string().trim().to_string()),
            output,
            cpu: e.cpu,
        }
    }
}

impl std::fmt::Display for Observation {
    /// One line, as `cilium monitor` prints: time, verdict, addresses, and why.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports = |ip: &str, port: u16| if port != 0 { format!("{ip}:{port}") } else { ip.to_string() };
        write!(
            f,
            "{} {} {} -> {} {} len {} from {} reg0={:#x} reg1={:#x}",
            self.time,
            self.verdict,
            ports(&self.src, self.sport),
            ports(&self.dst, self.dport),
            self.protocol,
            self.length,
            self.ingress,
            self.reg0,
            self.reg1
        )?;
        if let Some(project) = &self.source_project {
            write!(f, " project {project}")?;
        }
        match (&self.table, &self.rule, &self.flow, &self.output) {
            (Some(table), Some(rule), Some(flow), _) => write!(f, " by table {table} {rule}: {flow}"),
            (_, _, _, Some(output)) => write!(f, " to {output}"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
    }
}
