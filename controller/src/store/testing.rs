//! Test fixtures for running the same test on every backend: a store's data that lives
//! as long as the test needs it, and handles on it.

use std::{
    path::Path,
    sync::{
        mpsc::{Receiver, RecvTimeoutError},
        Arc,
    },
    time::Duration,
};

use oxsdn_tests::{
    etcd::{EtcdServer, Transport},
    pki::ClientCert,
};
use tempfile::TempDir;

use super::{Compare, EtcdConfig, EtcdStore, EtcdTls, FileStore, KeyValue, Op, Store, WatchEvent};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Etcd,
}

/// A store's data, kept until this is dropped: a temporary directory holding the file
/// store, or a private etcd server (on free loopback ports, TLS with client
/// certificates, auth off) and its directory.
pub(crate) struct Backing {
    /// Declared before `dir`: etcd stops before its directory is removed.
    etcd: Option<EtcdServer>,
    dir: TempDir,
}

impl Backing {
    pub(crate) fn new(kind: Kind) -> Backing {
        let dir = tempfile::tempdir().expect("temporary directory");
        let etcd = (kind == Kind::Etcd).then(|| {
            EtcdServer::start_on_loopback(&dir.path().join("etcd"), Transport::Tls)
                .unwrap_or_else(|e| panic!("starting etcd: {e:#}"))
        });
        Backing { etcd, dir }
    }

    /// A new handle on the data, as another process would open it.
    pub(crate) fn open(&self) -> Arc<dyn Store> {
        match &self.etcd {
            Some(_) => Arc::new(self.etcd_store("oxsdn-test")),
            None => Arc::new(FileStore::open(self.dir.path()).expect("file store")),
        }
    }

    /// A handle on the etcd server as etcd user `user` (with a new certificate).
    pub(crate) fn etcd_store(&self, user: &str) -> EtcdStore {
        EtcdStore::connect(&self.etcd_config(user)).expect("etcd store")
    }

    /// How to reach the etcd server as `user`.
    pub(crate) fn etcd_config(&self, user: &str) -> EtcdConfig {
        let server = self.etcd.as_ref().expect("not an etcd store");
        let cert = server.client_cert(user).expect("client certificate");
        etcd_config(&server.endpoint(), &cert)
    }

    /// The file store's directory.
    pub(crate) fn dir(&self) -> &Path {
        assert!(self.etcd.is_none(), "not a file store");
        self.dir.path()
    }

    /// The etcd server, to stop and restart.
    pub(crate) fn etcd(&mut self) -> &mut EtcdServer {
        self.etcd.as_mut().expect("not an etcd store")
    }
}

/// The configuration of a TLS client of `endpoint` with the files `cert` names.
pub(crate) fn etcd_config(endpoint: &str, cert: &ClientCert) -> EtcdConfig {
    let tls = EtcdTls { cacert: cert.ca.clone(), cert_and_key: Some((cert.cert.clone(), cert.key.clone())) };
    EtcdConfig::new(&[endpoint], Some(tls), false).expect("etcd configuration")
}

/// For each `fn(Kind)` named, a `#[test]` of the same name running it on the file store
/// (in a module `file`) and another running it on etcd (in a module `etcd`).
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod file {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::store::testing::Kind::File)
                }
            )*
        }
        mod etcd {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::store::testing::Kind::Etcd)
                }
            )*
        }
    };
}
pub(crate) use on_both_stores;

// ---- shorthands -------------------------------------------------------------------------

pub(crate) fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.into() }
}

pub(crate) fn del(key: &str) -> Op {
    Op::Delete { key: key.into() }
}

pub(crate) fn rev(key: &str, mod_revision: u64) -> Compare {
    Compare::ModRevision { key: key.into(), mod_revision }
}

/// The value at `key` as text, with its mod revision.
pub(crate) fn value(store: &dyn Store, key: &str) -> Option<(String, u64)> {
    store.get(key).unwrap().map(|kv| (String::from_utf8(kv.value).unwrap(), kv.mod_revision))
}

pub(crate) fn put_event(key: &str, value: &str, mod_revision: u64) -> WatchEvent {
    WatchEvent::Put(KeyValue { key: key.into(), value: value.into(), mod_revision })
}

pub(crate) fn delete_event(key: &str, mod_revision: u64) -> WatchEvent {
    WatchEvent::Delete { key: key.into(), mod_revision }
}

pub(crate) fn recv(rx: &Receiver<WatchEvent>) -> WatchEvent {
    rx.recv_timeout(Duration::from_secs(5)).expect("watch event")
}

/// Waits up to `within` for the watch to close, failing on any event.
pub(crate) fn expect_closed(rx: &Receiver<WatchEvent>, within: Duration) {
    match rx.recv_timeout(within) {
        Err(RecvTimeoutError::Disconnected) => {}
        other => panic!("expected the watch to close, got {other:?}"),
    }
}
