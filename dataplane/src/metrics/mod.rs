//! The agent's Prometheus metrics (`--metrics-address`, docs in README "Observability").
//!
//! Two kinds: what the agent itself does (CNI requests, the store's watches, program
//! loads) is counted as it happens in the process-wide `Metrics`; what the dataplane
//! counts (rules, drops, map occupancy) is read from the pinned maps at each scrape
//! (`collector`). `server` serves them over HTTP; `recent` keeps the last minute's
//! drops for `oxsdnctl status`.
//!
//! Cardinality is bounded by the node, not the cluster: series per rule (about 70), per
//! map, per CNI command, per mirror, and per project only for drops by source, and only
//! for projects with a pod on this node (at most one per pod).

pub mod collector;
pub mod recent;
pub mod server;

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use oxsdn_cni::protocol::{Command, MirrorHealth, Response};
use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use serde::{Deserialize, Serialize};

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// CNI requests: 1 ms to about 33 s (an ADD waits on netlink and the pod table's fsync).
fn cni_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Applying a store change to the dataplane: 10 µs to about 5 s.
fn apply_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.00001, 2.5, 15))
}

/// What the agent counts as it happens. One per process (`global`).
pub struct Metrics {
    cni_requests: Histograms<Labels2>,
    mirror_events: Family<Labels2, Counter>,
    mirror_apply: Histograms<Labels1>,
    watch_restarts: Family<Labels1, Counter>,
    resyncs: Family<Labels2, Counter>,
    program_loads: Family<Labels2, Counter>,
    /// Connections in the tables, as of the collector's last sweep.
    tracked_connections: AtomicU64,
    /// Layout rebuilds of the pinned dataplane by this process (persisted by `Starts`).
    rebuilds: AtomicU64,
    mirrors: Mutex<BTreeMap<&'static str, MirrorHealth>>,
    started: SystemTime,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn global() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics {
        cni_requests: Family::new_with_constructor(cni_buckets),
        mirror_events: Family::default(),
        mirror_apply: Family::new_with_constructor(apply_buckets),
        watch_restarts: Family::default(),
        resyncs: Family::default(),
        program_loads: Family::default(),
        tracked_connections: AtomicU64::new(0),
        rebuilds: AtomicU64::new(0),
        mirrors: Mutex::new(BTreeMap::new()),
        started: SystemTime::now(),
    })
}

fn command_name(command: Command) -> &'static str {
    match command {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Status => "STATUS",
        Command::Gc => "GC",
        Command::Health => "HEALTH",
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Metrics {
    /// A CNI request answered after `took`.
    pub fn cni_request(&self, command: Command, response: &Response, took: Duration) {
        let result = if matches!(response, Response::Error(_)) { "error" } else { "ok" };
        self.cni_requests
            .get_or_create(&[("command", command_name(command)), ("result", result)])
            .observe(took.as_secs_f64());
    }

    fn mirror(&self, kind: &'static str, update: impl FnOnce(&mut MirrorHealth)) {
        let mut mirrors = self.mirrors.lock().unwrap();
        update(mirrors.entry(kind).or_insert_with(|| MirrorHealth { kind: kind.into(), ..Default::default() }));
    }

    /// Mirror `kind` listed the store and made the dataplane equal to it.
    pub fn resynced(&self, kind: &'static str, outcome: &Result<u64>) {
        let result = if outcome.is_ok() { "ok" } else { "error" };
        self.resyncs.get_or_create(&[("kind", kind), ("result", result)]).inc();
        // Zero until a watch breaks, rather than absent.
        let _ = self.watch_restarts.get_or_create(&[("kind", kind)]);
        self.mirror(kind, |m| match outcome {
            Ok(_) => {
                m.last_sync_unix_ms = unix_ms(SystemTime::now());
                m.last_error = None;
            }
            Err(e) => m.last_error = Some(format!("{e:#}")),
        });
    }

    /// Mirror `kind`'s watch started (or could not).
    pub fn watching(&self, kind: &'static str, outcome: Result<(), String>) {
        self.mirror(kind, |m| {
            m.watching = outcome.is_ok();
            if let Err(e) = outcome {
                m.last_error = Some(e);
            }
        });
    }

    /// Mirror `kind`'s watch broke (store restarted, connection lost): it lists again.
    pub fn watch_ended(&self, kind: &'static str) {
        self.watch_restarts.get_or_create(&[("kind", kind)]).inc();
        self.mirror(kind, |m| {
            m.watching = false;
            m.restarts += 1;
        });
    }

    /// A watch event of mirror `kind`, received at `received`, applied (or not) now.
    pub fn mirror_event(&self, kind: &'static str, received: Instant, outcome: &Result<()>) {
        let took = received.elapsed().as_secs_f64();
        let result = if outcome.is_ok() { "ok" } else { "error" };
        self.mirror_events.get_or_create(&[("kind", kind), ("result", result)]).inc();
        self.mirror_apply.get_or_create(&[("kind", kind)]).observe(took);
        self.mirror(kind, |m| match outcome {
            Ok(()) => m.last_sync_unix_ms = unix_ms(SystemTime::now()),
            Err(e) => m.last_error = Some(format!("{e:#}")),
        });
    }

    /// Program `program` was attached anew, or replaced in its pinned link (a reload).
    pub fn program_loaded(&self, program: &'static str, replaced: bool) {
        let how = if replaced { "replaced" } else { "new" };
        self.program_loads.get_or_create(&[("program", program), ("how", how)]).inc();
    }

    /// The pinned dataplane had another layout and was built afresh.
    pub fn dataplane_rebuilt(&self) {
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_tracked_connections(&self, n: usize) {
        self.tracked_connections.store(n as u64, Ordering::Relaxed);
    }

    pub fn tracked_connections(&self) -> u64 {
        self.tracked_connections.load(Ordering::Relaxed)
    }

    /// Each mirror's state, for `oxsdnctl status`.
    pub fn mirrors(&self) -> Vec<MirrorHealth> {
        self.mirrors.lock().unwrap().values().cloned().collect()
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Puts the instruments into `registry`.
    fn register(&'static self, registry: &mut Registry) {
        registry.register(
            "oxsdn_cni_request_duration_seconds",
            "Time to answer a CNI request, by command and result",
            self.cni_requests.clone(),
        );
        registry.register(
            "oxsdn_store_events",
            "Store changes the mirrors applied to the dataplane, by kind of record and result",
            self.mirror_events.clone(),
        );
        registry.register(
            "oxsdn_store_event_apply_seconds",
            "From a store watch event's arrival at the agent to the dataplane holding it, by kind \
             (project: VNID changes)",
            self.mirror_apply.clone(),
        );
        registry.register(
            "oxsdn_store_watch_restarts",
            "Store watches that broke (store restarted, connection lost) and were listed again",
            self.watch_restarts.clone(),
        );
        registry.register(
            "oxsdn_store_resyncs",
            "Full lists of the store made equal in the dataplane, by kind and result",
            self.resyncs.clone(),
        );
        registry.register(
            "oxsdn_program_loads",
            "Programs attached by this agent: new, or replaced in their pinned link (a reload)",
            self.program_loads.clone(),
        );
    }
}

/// Agent starts and layout rebuilds of this node, kept in the state directory so they
/// count across restarts.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Starts {
    pub starts: u64,
    pub dataplane_rebuilds: u64,
}

const STARTS_FILE: &str = "agent-starts.json";

impl Starts {
    /// Counts this start (and the rebuilds it did) in `state_dir`.
    pub fn record(state_dir: &Path) -> Result<Starts> {
        let path = state_dir.join(STARTS_FILE);
        let mut starts: Starts = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("{} is unreadable ({e}); counting starts from here", path.display());
                Starts::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Starts::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        starts.starts += 1;
        starts.dataplane_rebuilds += global().rebuilds.load(Ordering::Relaxed);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&starts)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(starts)
    }
}
