//! Mirroring store records into the dataplane: list everything, reconcile, then follow
//! the store's watch; when the watch breaks (store restarted, connection lost), list
//! and reconcile again, so a node that lost the store catches up without a restart.

use std::{sync::mpsc::Receiver, sync::Arc, time::Duration};

use anyhow::Result;

/// Something kept equal to a set of store records.
pub trait Mirror: Send + Sync + 'static {
    type Event: Send;
    const WHAT: &'static str;
    /// Lists the records, makes the dataplane match them exactly, and returns the store
    /// revision they were read at.
    fn resync(&self) -> Result<u64>;
    fn watch(&self, after_revision: u64) -> Result<Receiver<Self::Event>>;
    fn apply(&self, event: Self::Event) -> Result<()>;
}

const RETRY: Duration = Duration::from_millis(500);

/// Follows the store from `revision` forever, on its own thread.
pub fn follow<M: Mirror>(mirror: Arc<M>, mut revision: u64) {
    std::thread::spawn(move || loop {
        match mirror.watch(revision) {
            Ok(events) => {
                for event in events {
                    if let Err(e) = mirror.apply(event) {
                        tracing::error!("applying a {} change: {e:#}", M::WHAT);
                    }
                }
                tracing::warn!("{} watch ended; resyncing", M::WHAT);
            }
            Err(e) => tracing::warn!("cannot watch {}: {e:#}", M::WHAT),
        }
        loop {
            std::thread::sleep(RETRY);
            match mirror.resync() {
                Ok(r) => {
                    revision = r;
                    break;
                }
                Err(e) => tracing::warn!("{} resync failed: {e:#}", M::WHAT),
            }
        }
    });
}
