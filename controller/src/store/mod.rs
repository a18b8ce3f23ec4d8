//! The storage trait, narrow and etcd-shaped (keys, values, revisions, compare-and-swap
//! transactions, prefix watches), and its backends: `FileStore`, the embedded, crash-safe
//! default for a single node, and `EtcdStore`, an etcd v3 cluster that every node and
//! the CLI share (over TLS, each with its own etcd user: see `roles`). `StoreOptions`,
//! `StoreBackend` and `open` choose between them from configuration.

mod etcd;
pub(crate) mod file;
mod options;
pub mod roles;
mod tls;

#[cfg(test)]
mod contract;
#[cfg(test)]
pub(crate) mod testing;

use std::{
    fmt,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{mpsc::Receiver, Arc},
};

pub use etcd::EtcdStore;
pub use file::FileStore;
pub use options::{EtcdConfig, EtcdTls, StoreOptions};

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
    /// The store cannot be reached now (down, unreachable, too slow); trying again later
    /// may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the request (a transaction over the server's size limits, a
    /// certificate it does not trust): trying again will not help.
    #[error("store refused the request: {0}")]
    Refused(String),
    /// The store's access control refused the request: these credentials may not
    /// read or write what it needed.
    #[error("store permission denied: {0}")]
    PermissionDenied(String),
    /// The options naming the store are wrong (a malformed or unsafe endpoint, a
    /// missing or unreadable certificate file); the message names the option or file.
    #[error("invalid store options: {0}")]
    Config(String),
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

/// The environment variable the command-line tools read etcd endpoints from, like
/// their `--etcd-endpoints` option.
pub const ETCD_ENDPOINTS_ENV: &str = "OXSDN_ETCD_ENDPOINTS";

/// Where the cluster state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreBackend {
    /// The embedded store in this directory.
    File(PathBuf),
    /// An etcd v3 cluster.
    Etcd(EtcdConfig),
}

impl StoreBackend {
    /// The IPv4 addresses and TCP ports of the store's servers (host names resolved),
    /// which pods must not reach: none for the file store.
    pub fn endpoint_addrs(&self) -> Result<Vec<(Ipv4Addr, u16)>, StoreError> {
        match self {
            StoreBackend::File(_) => Ok(Vec::new()),
            StoreBackend::Etcd(config) => config.endpoint_addrs(),
        }
    }
}

impl fmt::Display for StoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreBackend::File(dir) => write!(f, "file store {}", dir.display()),
            StoreBackend::Etcd(config) => write!(f, "etcd at {config}"),
        }
    }
}

/// Opens the store `backend` names. The file store's directory is created if missing;
/// etcd is connected to lazily, so this succeeds while etcd is down and the first call
/// then reports `StoreError::Unavailable`; its certificate files are read here.
pub fn open(backend: &StoreBackend) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match backend {
        StoreBackend::File(dir) => Arc::new(FileStore::open(dir)?),
        StoreBackend::Etcd(config) => Arc::new(EtcdStore::connect(config)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_chooses_the_backend() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = open(&StoreBackend::File(dir.clone())).unwrap();
        assert_eq!(store.list("").unwrap().revision, 0);
        assert!(dir.is_dir());
        // Nothing listens on port 1: connecting is lazy, the first call says so.
        let etcd = EtcdConfig::new(&["http://127.0.0.1:1"], None, false).unwrap();
        let store = open(&StoreBackend::Etcd(etcd)).unwrap();
        let err = store.get("/k").unwrap_err();
        assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("http://127.0.0.1:1")), "{err}");
    }
}
