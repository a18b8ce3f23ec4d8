//! `oxsdnctl monitor`: the node's drops (and with --all every forwarding decision) as
//! they happen, like `cilium monitor --type drop` / `hubble observe`.

use std::{
    collections::HashMap,
    io::Write,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use oxsdn_common::monitor::{WATCH_DROPS, WATCH_FORWARDS};
use oxsdn_controller::Cluster;
use oxsdn_dataplane::{
    maps::NodeMaps,
    monitor::{Describer, Events, Lease, Observation, Wanted, RENEW_EVERY},
};
use serde_json::json;

use crate::output::{write_record, Format};

pub struct Request {
    pub all: bool,
    pub rate: u32,
    pub burst: u32,
    /// Only events whose source or destination VNID is this project's, or whose source
    /// is a pod of it.
    pub project: Option<String>,
    /// Stop after this many events.
    pub count: Option<u64>,
    pub output: Format,
}

/// Project names by id, from the store (none without one).
fn project_names(cluster: Option<&Cluster>) -> HashMap<u32, (String, u32)> {
    let Some(cluster) = cluster else { return HashMap::new() };
    match cluster.list_netnamespaces() {
        Ok((all, _)) => all.into_iter().map(|ns| (ns.id, (ns.name, ns.netid))).collect(),
        Err(e) => {
            eprintln!("oxsdnctl: project names unavailable: {e}");
            HashMap::new()
        }
    }
}

/// Stops on SIGINT or SIGTERM (the lease ends with the monitor).
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;
    let flag = stop.clone();
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    });
    Ok(stop)
}

pub fn monitor(pin_dir: &Path, cluster: Option<Cluster>, req: &Request, out: &mut dyn Write) -> Result<()> {
    let names = project_names(cluster.as_ref());
    let vnid = match &req.project {
        Some(p) => {
            let found = names.values().find(|(name, _)| name == p).map(|(_, vnid)| *vnid);
            Some(found.with_context(|| format!("no project {p} in the store (--project needs the store)"))?)
        }
        None => None,
    };
    let maps = NodeMaps::open(pin_dir).with_context(|| format!("no dataplane at {}", pin_dir.display()))?;
    let slot_names: HashMap<u32, String> = (0..oxsdn_common::MAX_PROJECT_SLOTS)
        .filter_map(|slot| maps.projects.get(&slot, 0).ok().map(|p| (slot, p)))
        .filter(|(_, p)| p.id != 0)
        .filter_map(|(slot, p)| names.get(&p.id).map(|(name, _)| (slot, name.clone())))
        .collect();
    drop(maps);
    let stop = stop_on_signals()?;
    let mut events = Events::open(pin_dir)?;
    let describer = Describer::new(pin_dir)?;
    let flags = if req.all { WATCH_DROPS | WATCH_FORWARDS } else { WATCH_DROPS };
    let mut lease = Lease::take(pin_dir, Wanted { flags, rate: req.rate, burst: req.burst })?;
    let start = lease.budget()?;
    let (mut shown, mut reported_suppressed) = (0u64, 0u64);
    let mut renewed = Instant::now();
    if req.output == Format::Table {
        writeln!(
            out,
            "Listening for {} on this node; Ctrl-C to stop.",
            if req.all { "drops and forwards" } else { "drops" }
        )?;
        out.flush()?;
    }
    while !stop.load(Ordering::SeqCst) && req.count.is_none_or(|n| shown < n) {
        if renewed.elapsed() >= RENEW_EVERY {
            lease.renew()?;
            renewed = Instant::now();
            let suppressed = lease.budget()?.suppressed - start.suppressed;
            if suppressed > reported_suppressed {
                report_suppressed(out, req.output, suppressed)?;
                reported_suppressed = suppressed;
            }
        }
        for event in events.next_batch(Duration::from_millis(200))? {
            let o = describer.describe(&event, |slot| slot_names.get(&slot).cloned());
            let wanted = vnid.is_none_or(|v| o.reg0 == v || o.reg1 == v)
                || req.project.as_ref().is_some_and(|p| o.source_project.as_ref() == Some(p));
            if !wanted || req.count.is_some_and(|n| shown >= n) {
                continue;
            }
            print_observation(out, req.output, &o)?;
            shown += 1;
        }
    }
    let budget = lease.budget()?;
    let suppressed = budget.suppressed - start.suppressed;
    match req.output {
        Format::Json | Format::Yaml => {
            write_record(out, &json!({ "events": shown, "suppressed": suppressed }), req.output)?
        }
        Format::Table => writeln!(out, "{shown} events shown, {suppressed} suppressed by the programs' rate limit")?,
    }
    Ok(())
}

fn report_suppressed(out: &mut dyn Write, format: Format, suppressed: u64) -> Result<()> {
    match format {
        Format::Json | Format::Yaml => write_record(out, &json!({ "suppressed": suppressed }), format)?,
        Format::Table => writeln!(out, "... {suppressed} events suppressed so far (rate limit)")?,
    }
    out.flush()?;
    Ok(())
}

fn print_observation(out: &mut dyn Write, format: Format, o: &Observation) -> Result<()> {
    match format {
        Format::Json | Format::Yaml => write_record(out, o, format)?,
        Format::Table => writeln!(out, "{o}")?,
    }
    out.flush()?;
    Ok(())
}
