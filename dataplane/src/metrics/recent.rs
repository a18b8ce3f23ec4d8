//! The last minute's drops, by rule, for `oxsdnctl status`: the node-wide drop rules'
//! counters sampled every `SAMPLE_EVERY`, and the difference between now and the
//! sample a `WINDOW` ago.

use std::{
    collections::VecDeque,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use oxsdn_cni::protocol::RecentDrops;
use oxsdn_tables::rule::{is_drop, Rule, Scope};

use crate::maps::{total, NodeMaps};

pub const WINDOW: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

type Sample = (Instant, Vec<u64>);

/// Samples of the drop counters over the last `WINDOW`.
pub struct RecentDropsWindow {
    maps: Mutex<NodeMaps>,
    samples: Mutex<VecDeque<Sample>>,
}

fn drop_rules() -> impl Iterator<Item = &'static Rule> {
    oxsdn_tables::rules().filter(|r| r.scope == Scope::Node && is_drop(r.id))
}

impl RecentDropsWindow {
    /// Starts sampling the node's counters on a thread of its own.
    pub fn start(pin_dir: &Path) -> Result<Arc<RecentDropsWindow>> {
        let window =
            Arc::new(RecentDropsWindow { maps: Mutex::new(NodeMaps::open(pin_dir)?), samples: Mutex::default() });
        let sampler = window.clone();
        std::thread::spawn(move || loop {
            match sampler.read() {
                Ok(sample) => {
                    let mut samples = sampler.samples.lock().unwrap();
                    samples.push_back(sample);
                    // Keep one sample at least `WINDOW` old.
                    while samples.len() > 1 && samples[1].0.elapsed() >= WINDOW {
                        samples.pop_front();
                    }
                }
                Err(e) => tracing::warn!("sampling the drop counters: {e:#}"),
            }
            std::thread::sleep(SAMPLE_EVERY);
        });
        Ok(window)
    }

    fn read(&self) -> Result<Sample> {
        let maps = self.maps.lock().unwrap();
        let counts = drop_rules().map(|r| total(&maps.rule_stats, r.id).map(|c| c.packets)).collect::<Result<_>>()?;
        Ok((Instant::now(), counts))
    }

    /// Drops since the oldest sample (about `WINDOW` ago, less just after the start),
    /// by rule, the rules that dropped nothing left out; and that span in seconds.
    pub fn drops(&self) -> Result<(Vec<RecentDrops>, u64)> {
        let (now, latest) = self.read()?;
        let samples = self.samples.lock().unwrap();
        let Some((then, oldest)) = samples.front() else { return Ok((Vec::new(), 0)) };
        let drops = drop_rules()
            .zip(latest.iter().zip(oldest))
            .filter(|(_, (l, o))| l > o)
            .map(|(rule, (l, o))| RecentDrops { table: rule.table, rule: rule.name.into(), packets: l - o })
            .collect();
        Ok((drops, now.duration_since(*then).as_secs()))
    }
}
