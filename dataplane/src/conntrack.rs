//! The collector of the connection tables (`oxsdn_common::conntrack`: services' two
//! halves, and `POLICY_CT`'s connections whose replies policies let through): the
//! programs insert connections and never remove them; this removes those idle longer
//! than their protocol's timeout, a service connection's both halves at once, and gives
//! their owners' shares back. It is the only place connections leave the tables, so no connection loses one
//! half and keeps the other.

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use aya::maps::MapData;
use oxsdn_common::{
    conntrack::{CLOSING, SHARES},
    policy::PolicyConnection,
    FlowKey, ServiceConnection, ServiceReply,
};
use oxsdn_tables::{frame::IPPROTO_TCP, t61_load_balance::reply_key};

use crate::maps::{ignore_missing, monotonic_ns, NodeMaps};

/// How long a connection may stay idle: TCP as kube-proxy sets conntrack's established
/// timeout; once a FIN or RST passed, as conntrack's CLOSE/TIME_WAIT do briefly; UDP
/// and the rest as conntrack's unreplied UDP.
pub const TCP_IDLE: Duration = Duration::from_secs(24 * 3600);
pub const TCP_CLOSING_IDLE: Duration = Duration::from_secs(10);
pub const OTHER_IDLE: Duration = Duration::from_secs(30);
/// A reply half without its connection half is taken back after this long (the
/// programs insert the reply half a moment before the other).
const ORPHAN_GRACE: Duration = Duration::from_secs(2);
/// How often the tables are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// `CT_SHARES`, mapped into this process: the programs count up with atomic adds on the
/// same memory, this counts down atomically.
pub struct Shares {
    base: NonNull<AtomicU32>,
    len: usize,
    /// The map the memory belongs to, kept open while it is mapped.
    _map: MapData,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for Shares {}
// SAFETY: as above.
unsafe impl Sync for Shares {}

impl Shares {
    /// Maps the node's pinned `CT_SHARES`.
    pub fn open(pin_dir: &Path) -> Result<Shares> {
        let path = pin_dir.join("CT_SHARES");
        let map = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let bytes = (SHARES as usize * 4).next_multiple_of(page_size());
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: mapping an mmapable array map's memory, shared, of the size the kernel
        // allocated for it (its values rounded up to pages).
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if base == libc::MAP_FAILED {
            bail!("mapping {}: {}", path.display(), std::io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<AtomicU32>()).context("mmap returned null")?;
        Ok(Shares { base, len: SHARES as usize, _map: map })
    }

    fn slot(&self, owner: u32) -> Option<&AtomicU32> {
        let index = owner as usize;
        // SAFETY: within the mapping, 4-byte aligned (page-aligned base, u32 values).
        (index < self.len).then(|| unsafe { &*self.base.as_ptr().add(index) })
    }

    /// Connections `owner` holds.
    pub fn get(&self, owner: u32) -> u32 {
        self.slot(owner).map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// Gives one connection of `owner` back (never below zero).
    pub fn give_back(&self, owner: u32) {
        if let Some(s) = self.slot(owner) {
            let _ = s.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Sets every share to what the tables hold (at the agent's start).
    fn set_all(&self, counts: &HashMap<u32, u32>) {
        for owner in 0..self.len as u32 {
            if let Some(s) = self.slot(owner) {
                s.store(counts.get(&owner).copied().unwrap_or(0), Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Shares {
    fn drop(&mut self) {
        let bytes = (self.len * 4).next_multiple_of(page_size());
        // SAFETY: unmapping what `open` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), bytes) };
    }
}

fn page_size() -> usize {
    // SAFETY: plain sysconf call.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// What a sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Connections left in the tables.
    pub kept: usize,
    /// Connections removed (both halves).
    pub removed: usize,
    /// Reply halves whose connection half was gone.
    pub orphans: usize,
}

/// Whether a connection idle since `last_seen` is over its timeout at `now`.
fn expired(proto: u8, closing: bool, last_seen: u64, now: u64) -> bool {
    let idle = match (proto, closing) {
        (IPPROTO_TCP, false) => TCP_IDLE,
        (IPPROTO_TCP, true) => TCP_CLOSING_IDLE,
        _ => OTHER_IDLE,
    };
    now.saturating_sub(last_seen) > idle.as_nanos() as u64
}

/// The connection half a reply half belongs to.
fn connection_key(reverse: &FlowKey, reply: &ServiceReply) -> FlowKey {
    FlowKey {
        src: reply.client_ip,
        dst: reply.service_ip,
        sport: reply.client_port,
        dport: reply.service_port,
        proto: reverse.proto,
        _pad: [0; 3],
    }
}

/// Whether `reply` is the reply half of connection `conn` of flow `flow`.
fn pairs(flow: &FlowKey, conn: &ServiceConnection, reverse: &FlowKey, reply: &ServiceReply, gateway: u32) -> bool {
    reply_key(flow, conn, gateway) == *reverse && connection_key(reverse, reply) == *flow
}

/// Sweeps the tables once at `now`: removes expired connections and orphaned reply
/// halves. `recount`: set every share to what remains (the agent's first sweep).
pub fn sweep(maps: &mut NodeMaps, shares: &Shares, now: u64, recount: bool) -> Result<Swept> {
    let gateway = maps.config.get(&0, 0)?.gateway;
    let mut swept = Swept::default();
    let mut counts: HashMap<u32, u32> = HashMap::new();
    let connections: Vec<(FlowKey, ServiceConnection)> = maps.ct_forward.iter().filter_map(|e| e.ok()).collect();
    for (flow, conn) in connections {
        let reverse = reply_key(&flow, &conn, gateway);
        let reply = maps.ct_reverse.get(&reverse, 0).ok().filter(|r| pairs(&flow, &conn, &reverse, r, gateway));
        let last_seen = reply.map_or(conn.last_seen, |r| r.last_seen.max(conn.last_seen));
        let closing = (conn.flags | reply.map_or(0, |r| r.flags)) & CLOSING != 0;
        if reply.is_some() && !expired(flow.proto, closing, last_seen, now) {
            swept.kept += 1;
            *counts.entry(conn.owner).or_default() += 1;
            continue;
        }
        // Both halves at once (a connection half without its reply half is dead: the
        // endpoint's answers would not be translated).
        if reply.is_some() {
            ignore_missing(maps.ct_reverse.remove(&reverse))?;
        }
        ignore_missing(maps.ct_forward.remove(&flow))?;
        if !recount {
            shares.give_back(conn.owner);
        }
        swept.removed += 1;
    }
    let replies: Vec<(FlowKey, ServiceReply)> = maps.ct_reverse.iter().filter_map(|e| e.ok()).collect();
    for (reverse, reply) in replies {
        let flow = connection_key(&reverse, &reply);
        let paired = maps.ct_forward.get(&flow, 0).ok().is_some_and(|c| pairs(&flow, &c, &reverse, &reply, gateway));
        if !paired && now.saturating_sub(reply.last_seen) > ORPHAN_GRACE.as_nanos() as u64 {
            ignore_missing(maps.ct_reverse.remove(&reverse))?;
            swept.orphans += 1;
        }
    }
    let policy: Vec<(FlowKey, PolicyConnection)> = maps.policy_ct.iter().filter_map(|e| e.ok()).collect();
    for (flow, conn) in policy {
        if expired(flow.proto, conn.flags & CLOSING != 0, conn.last_seen, now) {
            ignore_missing(maps.policy_ct.remove(&flow))?;
            if !recount {
                shares.give_back(conn.owner);
            }
            swept.removed += 1;
        } else {
            swept.kept += 1;
            *counts.entry(conn.owner).or_default() += 1;
        }
    }
    if recount {
        shares.set_all(&counts);
    }
    Ok(swept)
}

/// Sweeps every `SWEEP_INTERVAL` on its own thread, the first time at once with a
/// recount of the shares (what a previous agent left; a connection opened during that
/// first sweep may be counted once less). It has its own handles on the node's maps: no
/// other writer waits for a sweep.
pub fn sweep_periodically(pin_dir: &Path) -> Result<()> {
    let mut maps = NodeMaps::open(pin_dir)?;
    let shares = Shares::open(pin_dir)?;
    std::thread::spawn(move || {
        let mut recount = true;
        loop {
            let swept = sweep(&mut maps, &shares, monotonic_ns(), recount);
            if let Ok(swept) = &swept {
                crate::metrics::global().set_tracked_connections(swept.kept);
            }
            match swept {
                Ok(swept) if swept.removed + swept.orphans > 0 => tracing::debug!(?swept, "connection tables swept"),
                Ok(_) => {}
                Err(e) => tracing::warn!("sweeping the connection tables: {e:#}"),
            }
            recount = false;
            std::thread::sleep(SWEEP_INTERVAL);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_by_protocol_and_state() {
        let s = 1_000_000_000u64;
        let now = 100_000 * s;
        assert!(!expired(IPPROTO_TCP, false, now - 3600 * s, now));
        assert!(expired(IPPROTO_TCP, false, now - 25 * 3600 * s, now));
        assert!(expired(IPPROTO_TCP, true, now - 11 * s, now));
        assert!(!expired(IPPROTO_TCP, true, now - 9 * s, now));
        assert!(expired(17, false, now - 31 * s, now));
        assert!(!expired(17, false, now - 29 * s, now));
        // A timestamp after now (another CPU's clock read) is not idle.
        assert!(!expired(17, false, now + s, now));
    }
}
