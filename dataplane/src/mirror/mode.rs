//! Keeps `CONFIG.mode` equal to the cluster's network plugin: `oxsdnctl set
//! network-plugin` reaches every node through the configuration's watch, and each node
//! switches with one map write (the programs read the mode per packet), so the switch
//! is atomic per node and connections already established are judged by the new mode.

use std::sync::{mpsc::Receiver, Arc, Mutex};

use anyhow::Result;
use oxsdn_common::mode;
use oxsdn_controller::{ClusterConfig, NetworkPlugin};

use super::{Feed, Mirror};
use crate::maps::NodeMaps;

type Source = dyn Feed<ClusterConfig, Event = ClusterConfig>;

/// `CONFIG.mode` of a network plugin.
pub fn of(plugin: NetworkPlugin) -> u32 {
    match plugin {
        NetworkPlugin::Multitenant => mode::MULTITENANT,
        NetworkPlugin::Subnet => mode::SUBNET,
        NetworkPlugin::NetworkPolicy => mode::NETWORKPOLICY,
    }
}

pub struct Mode {
    source: Arc<Source>,
    maps: Arc<Mutex<NodeMaps>>,
}

impl Mode {
    pub fn new(source: Arc<Source>, maps: Arc<Mutex<NodeMaps>>) -> Self {
        Mode { source, maps }
    }

    fn set(&self, plugin: NetworkPlugin) -> Result<()> {
        let mut maps = self.maps.lock().unwrap();
        let mut config = maps.config.get(&0, 0)?;
        if config.mode != of(plugin) {
            config.mode = of(plugin);
            maps.config.set(0, config, 0)?;
            tracing::info!(%plugin, "network plugin applied");
        }
        Ok(())
    }
}

impl Mirror for Mode {
    type Event = ClusterConfig;
    const WHAT: &'static str = "network plugin";

    fn resync(&self) -> Result<u64> {
        let (configs, revision) = self.source.list()?;
        if let Some(config) = configs.first() {
            self.set(config.network_plugin)?;
        }
        Ok(revision)
    }

    fn watch(&self, after_revision: u64) -> Result<Receiver<ClusterConfig>> {
        self.source.watch(after_revision)
    }

    fn apply(&self, config: ClusterConfig) -> Result<()> {
        self.set(config.network_plugin)
    }
}
