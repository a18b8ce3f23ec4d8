//! The storage trait, narrow and etcd-shaped (keys, values, revisions, compare-and-swap
//! transactions, prefix watches) so a distributed backend fits behind it; and `FileStore`,
//! the embedded, crash-safe default.

use std::sync::mpsc::Receiver;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Store revision of the last change to this key (> 0).
    pub mod_revision: u64,
}

/// Keys under a prefix at one revision of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: u64,
    /// Sorted by key.
    pub kvs: Vec<KeyValue>,
}

/// A transaction condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this; 0 means the key must not exist.
    ModRevision { key: String, mod_revision: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The store's data failed its integrity check. Never silently reset.
    #[error("store {path} is corrupted: {reason}")]
    Corrupted { path: String, reason: String },
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    fn list(&self, prefix: &str) -> Result<Snapshot, StoreError>;
    /// Applies `ops` atomically iff every compare holds. Returns whether it applied.
    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<bool, StoreError>;
    /// Changes under `prefix` with a revision greater than `after_revision`, in revision
    /// order. The channel closes if the watch breaks; the watcher then lists again.
    fn watch(&self, prefix: &str, after_revision: u64) -> Result<Receiver<WatchEvent>, StoreError>;
}
