//! `EtcdStore`: the store on an etcd v3 cluster, shared by every node and the CLI.

use std::{
    collections::HashSet,
    fmt,
    future::Future,
    sync::mpsc::{self, Receiver, Sender},
    time::Duration,
};

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
    WatchStream,
};
use tokio::runtime::Runtime;
use tonic::Code;

use super::{
    tls::{self, HandshakeProbe},
    Compare, EtcdConfig, EtcdTls, KeyValue, Op, Snapshot, Store, StoreError, WatchEvent,
};

/// How long any call (and the start of a watch) may take before it fails as
/// `Unavailable`: long enough for a loaded etcd to commit, short enough that an agent or
/// the CLI notices a dead etcd at once. (A call that fails sooner may take up to a
/// further second over TLS, to find out whether etcd refuses the certificate.)
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings while watches are open, so that a watch on a connection that died
/// silently (etcd's host gone, the network cut) breaks within about 9 s instead of
/// waiting forever. etcd closes connections that ping more often than every 5 s
/// (`--grpc-keepalive-min-time`), hence not less.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(6);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response accepted. A list returns every record under a prefix in one message,
/// which tonic would otherwise cap at 4 MiB (some 25,000 projects).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The store on an etcd v3 cluster (etcd 3.4 or later).
///
/// Keys, values and revisions are etcd's own: a transaction is one etcd `Txn` (compares,
/// then ops), so revisions are etcd's global revision and concurrent writers are
/// serialised by etcd. The store is synchronous, for callers outside any async runtime:
/// it runs the gRPC client on a runtime of its own with one worker thread, blocking the
/// calling thread for the duration of each call. It must not be called, nor dropped,
/// from within a tokio runtime.
///
/// Connections are made lazily and again after any failure, so a store created while
/// etcd is down works once etcd is back, without being created anew; until then every
/// call fails with `StoreError::Unavailable` within `CALL_TIMEOUT`.
pub struct EtcdStore {
    /// The endpoints, comma-separated, for messages.
    endpoints: String,
    /// The TLS files, for messages.
    tls_files: Option<EtcdTls>,
    /// With TLS: finds out why etcd closes connections.
    probe: Option<HandshakeProbe>,
    pub(super) client: Client,
    /// Declared after `client`, so it is dropped after it. Dropping it ends the watch
    /// tasks, closing the channels of any watch still open.
    runtime: Runtime,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A store on the etcd cluster `config` names. Reads its certificate files but does
    /// not contact etcd: this fails only for a file that cannot be read or holds no
    /// certificate or key (`Config`, naming the file), or when the client's thread
    /// cannot be started.
    pub fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let joined = config.to_string();
        let (tls, probe) = match &config.tls {
            Some(files) => {
                let (options, probe) = tls::load(files, &config.endpoints)?;
                (Some(options), Some(probe))
            }
            None => (None, None),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("oxsdn-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start the etcd client for {joined}: {e}")))?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            // etcd counts pings on a connection without streams against the client and
            // closes it; open watches are what the pings are for anyway.
            .with_keep_alive_while_idle(false)
            // A member cut off from the others' majority refuses requests and ends
            // watches, rather than serving stale data or staying silent.
            .with_require_leader(true);
        if let Some(tls) = tls {
            options = options.with_tls(tls);
        }
        let client = runtime
            .block_on(Client::connect(config.urls(), Some(options)))
            .map_err(|e| StoreError::Config(format!("etcd endpoints {joined}: {e}")))?;
        Ok(EtcdStore { endpoints: joined, tls_files: config.tls.clone(), probe, client, runtime })
    }

    /// Runs one request on the client's runtime, within `CALL_TIMEOUT`.
    pub(super) fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        self.call_or_etcd_error(what, request)?.map_err(|e| self.error(what, e))
    }

    /// `call`, leaving etcd's own errors to the caller: only a timeout is an error here.
    pub(super) fn call_or_etcd_error<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<Result<T, etcd_client::Error>, StoreError> {
        // The timer must be created inside the runtime, hence within the async block.
        self.runtime.block_on(async { tokio::time::timeout(CALL_TIMEOUT, request).await }).map_err(|_| {
            StoreError::Unavailable(format!("etcd at {}: no answer to {what} within {CALL_TIMEOUT:?}", self.endpoints))
        })
    }

    /// Requests etcd answered with a definite refusal are `Refused` (`PermissionDenied`
    /// for its access control), and so are TLS failures (a certificate that does not
    /// verify, on either side); anything else (connection failures, no leader,
    /// overload) may pass and is `Unavailable`.
    pub(super) fn error(&self, what: &str, e: etcd_client::Error) -> StoreError {
        // etcd_client's errors do not name their causes; a status's are its source's.
        let tls = match &e {
            etcd_client::Error::GRpcStatus(status) => tls::failure(status),
            other => tls::failure(other),
        };
        if let Some(tls) = tls {
            return self.tls_refusal(what, tls);
        }
        match self.classify(what, e) {
            // With TLS 1.3, etcd refuses a client certificate after the handshake and
            // the client sees only a closed connection; a TLS 1.2 handshake says why.
            StoreError::Unavailable(message) => match self.probe.as_ref().and_then(HandshakeProbe::failure) {
                Some(tls) => self.tls_refusal(what, &tls),
                None => StoreError::Unavailable(message),
            },
            other => other,
        }
    }

    /// Who this client is to etcd, for messages about refusals.
    fn identity(&self) -> String {
        self.tls_files.as_ref().map_or_else(|| "no client certificate".to_owned(), EtcdTls::identity)
    }

    fn tls_refusal(&self, what: &str, tls: &rustls::Error) -> StoreError {
        let why = match (tls, &self.tls_files) {
            (rustls::Error::InvalidCertificate(_), Some(files)) => {
                format!("etcd's certificate does not verify against --etcd-cacert {} ({tls})", files.cacert.display())
            }
            (rustls::Error::AlertReceived(_), Some(EtcdTls { cert_and_key: None, .. })) => format!(
                "etcd refused a connection without a client certificate ({tls}): give --etcd-cert and --etcd-key"
            ),
            (rustls::Error::AlertReceived(_), _) => format!(
                "etcd refused {} ({tls}): is it signed by a CA that etcd trusts (its --trusted-ca-file)?",
                self.identity()
            ),
            _ => format!("TLS failed with {}: {tls}", self.identity()),
        };
        StoreError::Refused(format!("etcd at {}: {what}: {why}", self.endpoints))
    }

    fn classify(&self, what: &str, e: etcd_client::Error) -> StoreError {
        let etcd_client::Error::GRpcStatus(status) = e else {
            return StoreError::Unavailable(format!("etcd at {}: {what}: {e}", self.endpoints));
        };
        // The status's own text repeats its source's debug form; its message and the
        // root cause (such as "Connection refused") say the same in one line.
        let mut text = status.message().to_owned();
        let mut source = std::error::Error::source(&status);
        let mut root = None;
        while let Some(cause) = source {
            root = Some(cause);
            source = cause.source();
        }
        if let Some(root) = root {
            text = format!("{text}: {root}");
        }
        let message = format!("etcd at {}: {what}: {text}", self.endpoints);
        match status.code() {
            Code::PermissionDenied => StoreError::PermissionDenied(format!("{message} (as {})", self.identity())),
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unauthenticated
            | Code::Unimplemented => StoreError::Refused(message),
            _ => StoreError::Unavailable(message),
        }
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        convert(kv).map_err(|reason| StoreError::Corrupted { path: format!("etcd at {}", self.endpoints), reason })
    }
}

/// The keys `ops` write, for messages: the first few.
fn written_keys(ops: &[Op]) -> String {
    const SHOWN: usize = 3;
    let keys: Vec<&str> = ops
        .iter()
        .map(|op| match op {
            Op::Put { key, .. } | Op::Delete { key } => key.as_str(),
        })
        .collect();
    let mut text = keys.iter().take(SHOWN).copied().collect::<Vec<_>>().join(", ");
    if keys.len() > SHOWN {
        text.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    text
}

/// Our form of an etcd key-value; the error says why it has none.
fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue, String> {
    let key = kv.key_str().map_err(|_| format!("key {:?} is not UTF-8", String::from_utf8_lossy(kv.key())))?;
    Ok(KeyValue { key: key.to_owned(), value: kv.value().to_vec(), mod_revision: revision(kv.mod_revision()) })
}

/// etcd's revisions are signed but never negative.
fn revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or_default()
}

/// The ops that leave the same result as `ops` applied in order: the last one for each
/// key. etcd refuses a transaction that writes a key twice.
fn last_op_per_key(ops: &[Op]) -> Vec<TxnOp> {
    let mut seen = HashSet::new();
    let mut out: Vec<TxnOp> = ops
        .iter()
        .rev()
        .filter(|op| {
            seen.insert(match op {
                Op::Put { key, .. } | Op::Delete { key } => key.as_str(),
            })
        })
        .map(|op| match op {
            Op::Put { key, value } => TxnOp::put(key.as_str(), value.as_slice(), None),
            Op::Delete { key } => TxnOp::delete(key.as_str(), None),
        })
        .collect();
    out.reverse();
    out
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let response = self.call("get", kv.get(key, None))?;
        response.kvs().first().map(|kv| self.key_value(kv)).transpose()
    }

    fn list(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        let mut kv = self.client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        // etcd returns a range in key order (bytewise, which for UTF-8 keys is the order
        // of `str`), so no sort is asked for.
        let response = self.call("list", kv.get(prefix, Some(GetOptions::new().with_prefix())))?;
        Ok(Snapshot {
            revision: response.header().map_or(0, |h| revision(h.revision())),
            kvs: response.kvs().iter().map(|kv| self.key_value(kv)).collect::<Result<_, _>>()?,
        })
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<bool, StoreError> {
        let mut when = Vec::with_capacity(compares.len());
        for compare in compares {
            let Compare::ModRevision { key, mod_revision } = compare;
            // etcd compares a missing key as if its mod revision were 0, so one compare
            // covers "unchanged" and "still absent" alike.
            let Ok(mod_revision) = i64::try_from(*mod_revision) else {
                // No key has a revision etcd cannot even represent.
                return Ok(false);
            };
            when.push(EtcdCompare::mod_revision(key.as_str(), CompareOp::Equal, mod_revision));
        }
        let etcd_ops = last_op_per_key(ops);
        let (n_compares, n_ops) = (when.len(), etcd_ops.len());
        let txn = Txn::new().when(when).and_then(etcd_ops);
        let mut kv = self.client.kv_client();
        let response = self.call("txn", kv.txn(txn)).map_err(|e| match e {
            StoreError::Refused(message) if message.contains("too many operations") => StoreError::Refused(format!(
                "{message} ({n_compares} compares, {n_ops} ops; etcd's --max-txn-ops limits each)"
            )),
            StoreError::PermissionDenied(message) => {
                StoreError::PermissionDenied(format!("{message}; the transaction writes {}", written_keys(ops)))
            }
            other => other,
        })?;
        Ok(response.succeeded())
    }

    /// An etcd watch from `after_revision + 1`, whose events a task on the client's
    /// runtime forwards. The channel closes when the watch breaks: etcd unreachable or
    /// restarted, the start revision compacted away, the watch canceled by etcd. The
    /// task stops, ending the etcd watch, when it finds the receiver dropped at the next
    /// event it forwards, and when the store is dropped.
    fn watch(&self, prefix: &str, after_revision: u64) -> Result<Receiver<WatchEvent>, StoreError> {
        let start = after_revision
            .checked_add(1)
            .and_then(|r| i64::try_from(r).ok())
            .ok_or_else(|| StoreError::Refused(format!("cannot watch after revision {after_revision}")))?;
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut client = self.client.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        // etcd first confirms that it created the watch: waiting for that makes a watch
        // that cannot start fail here rather than look like one that ended at once.
        let (stream, first) = self.call("watch", async {
            let mut stream = client.watch(prefix, Some(options)).await?;
            let first = stream.message().await?;
            Ok((stream, first))
        })?;
        match first {
            Some(r) if r.created() && !r.canceled() => {}
            Some(r) => {
                return Err(StoreError::Refused(format!(
                    "etcd at {}: watch of {prefix:?} not created: {}",
                    self.endpoints,
                    r.cancel_reason()
                )))
            }
            None => {
                return Err(StoreError::Unavailable(format!(
                    "etcd at {}: watch of {prefix:?} ended as it started",
                    self.endpoints
                )))
            }
        }
        let (tx, rx) = mpsc::channel();
        self.runtime.spawn(forward(stream, tx, prefix.to_owned()));
        Ok(rx)
    }
}

/// Passes a watch's events on until the watch breaks or the receiver is gone; then
/// returns, dropping `tx` (which closes the channel) and `stream` (which resets the gRPC
/// stream, so etcd drops the watch).
async fn forward(mut stream: WatchStream, tx: Sender<WatchEvent>, prefix: String) {
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                tracing::warn!(prefix, "etcd ended the watch");
                return;
            }
            Err(error) => {
                tracing::warn!(prefix, %error, "etcd watch broken");
                return;
            }
        };
        if response.canceled() {
            tracing::warn!(
                prefix,
                reason = response.cancel_reason(),
                compact_revision = response.compact_revision(),
                "etcd canceled the watch"
            );
            return;
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let kv = match convert(kv) {
                Ok(kv) => kv,
                Err(reason) => {
                    // Skipping it would leave the watcher silently behind; relisting
                    // reports the key as corrupted instead.
                    tracing::warn!(prefix, reason, "etcd watch stopped");
                    return;
                }
            };
            let event = match event.event_type() {
                EventType::Put => WatchEvent::Put(kv),
                EventType::Delete => WatchEvent::Delete { key: kv.key, mod_revision: kv.mod_revision },
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use oxsdn_tests::pki::{ClientCert, Pki};

    use super::*;
    use crate::store::testing::{
        del, delete_event, etcd_config, expect_closed, put, put_event, recv, rev, value, Backing, Kind,
    };

    /// How long a call may take to fail while etcd is down.
    const FAIL_FAST: Duration = Duration::from_millis(CALL_TIMEOUT.as_millis() as u64 + 500);

    /// Runs `call`, which must fail quickly: its error.
    fn fails_fast<T: fmt::Debug>(call: impl FnOnce() -> Result<T, StoreError>) -> StoreError {
        let started = Instant::now();
        let result = call();
        assert!(started.elapsed() < FAIL_FAST, "took {:?}", started.elapsed());
        result.expect_err("the call succeeded")
    }

    /// Runs `call`, which must fail as `Unavailable` naming `endpoint`, quickly.
    fn expect_unavailable<T: fmt::Debug>(endpoint: &str, call: impl FnOnce() -> Result<T, StoreError>) {
        match fails_fast(call) {
            StoreError::Unavailable(message) => {
                assert!(message.contains(endpoint), "{message}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn unavailable_while_down_and_working_again_after_restart() {
        let mut backing = Backing::new(Kind::Etcd);
        let endpoint = backing.etcd().endpoint();
        backing.etcd().stop();
        // Made while etcd is down: it connects once etcd is there.
        let store = backing.open();
        expect_unavailable(&endpoint, || store.get("/a"));
        expect_unavailable(&endpoint, || store.list("/"));
        expect_unavailable(&endpoint, || store.txn(&[], &[put("/a", "1")]));
        expect_unavailable(&endpoint, || store.watch("/", 0));

        backing.etcd().restart().unwrap();
        assert!(store.txn(&[rev("/a", 0)], &[put("/a", "1")]).unwrap());

        // A crash takes the connection the store had; the same store reconnects.
        backing.etcd().kill();
        expect_unavailable(&endpoint, || store.get("/a"));
        backing.etcd().restart().unwrap();
        assert_eq!(value(&*store, "/a").map(|(v, _)| v), Some("1".into()));
    }

    #[test]
    fn calls_time_out_when_etcd_does_not_answer() {
        // Accepts connections (the kernel does, into the backlog) and never answers:
        // neither HTTP/2 nor, over https://, the TLS handshake.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = silent.local_addr().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let cert = Pki::new(tmp.path(), "test CA").unwrap().client("root").unwrap();
        for (endpoint, config) in [(format!("http://{address}"), None), (format!("https://{address}"), Some(&cert))] {
            let config = match config {
                None => EtcdConfig::new(&[&endpoint], None, false).unwrap(),
                Some(cert) => etcd_config(&endpoint, cert),
            };
            let store = EtcdStore::connect(&config).unwrap();
            let started = Instant::now();
            expect_unavailable(&endpoint, || store.get("/a"));
            assert!(started.elapsed() >= CALL_TIMEOUT);
            expect_unavailable(&endpoint, || store.watch("/", 0));
        }
    }

    /// Runs `call`, which must fail quickly as `Refused` saying `why`: a wrong
    /// certificate is a configuration to fix, not a failure to wait out.
    fn expect_tls_refusal<T: fmt::Debug>(why: &str, call: impl FnOnce() -> Result<T, StoreError>) {
        match fails_fast(call) {
            StoreError::Refused(message) => assert!(message.contains(why), "{message}"),
            other => panic!("expected a TLS refusal, got {other:?}"),
        }
    }

    #[test]
    fn certificates_that_do_not_verify_are_refused_on_either_side() {
        let mut backing = Backing::new(Kind::Etcd);
        let endpoint = backing.etcd().endpoint();
        let ours = backing.etcd().client_cert("root").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let foreign = Pki::new(tmp.path(), "another CA").unwrap();
        let foreign_client = foreign.client("root").unwrap();
        // Trusting another CA than etcd's: etcd's certificate does not verify.
        let store = EtcdStore::connect(&etcd_config(&endpoint, &ours.trusting(&foreign.ca()))).unwrap();
        let why = format!(
            "get: etcd's certificate does not verify against --etcd-cacert {} (invalid peer certificate: UnknownIssuer)",
            foreign.ca().display()
        );
        expect_tls_refusal(&why, || store.get("/a"));
        // A client certificate of another CA, and none at all: etcd refuses them.
        let store = EtcdStore::connect(&etcd_config(&endpoint, &foreign_client.trusting(&ours.ca))).unwrap();
        let why = format!(
            "txn: etcd refused the etcd user of certificate {} (received fatal alert: BadCertificate)",
            foreign_client.cert.display()
        );
        expect_tls_refusal(&why, || store.txn(&[], &[put("/a", "1")]));
        let without = EtcdTls { cacert: ours.ca.clone(), cert_and_key: None };
        let store = EtcdStore::connect(&EtcdConfig::new(&[&endpoint], Some(without), false).unwrap()).unwrap();
        expect_tls_refusal("list: etcd refused a connection without a client certificate", || store.list("/"));
        // Nothing was written.
        assert_eq!(backing.open().list("/").unwrap().kvs, []);
    }

    #[test]
    fn unusable_certificate_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(tmp.path(), "test CA").unwrap();
        let good = pki.client("root").unwrap();
        let other = pki.client("other").unwrap();
        let empty = tmp.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = tmp.path().join("missing.pem");
        let cases = [
            (good.trusting(&missing), format!("--etcd-cacert {}: cannot read: No such file", missing.display())),
            (good.trusting(&empty), format!("--etcd-cacert {}: no certificate in PEM form", empty.display())),
            (
                ClientCert { cert: good.key.clone(), ..good.clone() },
                format!("--etcd-cert {}: no certificate", good.key.display()),
            ),
            (
                ClientCert { key: good.cert.clone(), ..good.clone() },
                format!("--etcd-key {}: no private key in PEM form", good.cert.display()),
            ),
            (
                ClientCert { key: other.key.clone(), ..good.clone() },
                format!("--etcd-key {}: not the key of --etcd-cert {}", other.key.display(), good.cert.display()),
            ),
        ];
        for (files, expected) in cases {
            match EtcdStore::connect(&etcd_config("https://127.0.0.1:2379", &files)) {
                Err(StoreError::Config(message)) => {
                    assert!(message.starts_with(&expected), "{message}")
                }
                other => panic!("{files:?}: expected a configuration error, got {other:?}"),
            }
        }
    }

    #[test]
    fn watch_closes_when_etcd_goes_and_catches_up_after_restart() {
        let mut backing = Backing::new(Kind::Etcd);
        let store = backing.open();
        let r = store.list("/p/").unwrap().revision;
        let rx = store.watch("/p/", r).unwrap();
        store.txn(&[], &[put("/p/a", "1")]).unwrap();
        assert_eq!(recv(&rx), put_event("/p/a", "1", r + 1));
        let seen = r + 1;

        backing.etcd().kill();
        expect_closed(&rx, Duration::from_secs(5));
        backing.etcd().restart().unwrap();
        // Written while the watcher was away.
        let writer = backing.open();
        writer.txn(&[], &[put("/p/b", "1")]).unwrap();
        writer.txn(&[], &[del("/p/a")]).unwrap();
        let rx = store.watch("/p/", seen).unwrap();
        assert_eq!(recv(&rx), put_event("/p/b", "1", seen + 1));
        assert_eq!(recv(&rx), delete_event("/p/a", seen + 2));
        writer.txn(&[], &[put("/p/c", "1")]).unwrap();
        assert_eq!(recv(&rx), put_event("/p/c", "1", seen + 3));

        // A clean shutdown ends watches too.
        backing.etcd().stop();
        expect_closed(&rx, Duration::from_secs(5));
    }

    #[test]
    fn watch_from_a_compacted_revision_closes() {
        let backing = Backing::new(Kind::Etcd);
        let store = backing.etcd_store("oxsdn-test");
        for i in 0..3 {
            store.txn(&[], &[put("/p/a", &i.to_string())]).unwrap();
        }
        let r = store.list("").unwrap().revision;
        let mut kv = store.client.kv_client();
        store.call("compact", kv.compact(i64::try_from(r).unwrap(), None)).unwrap();
        // etcd no longer has the history: the watcher must list again.
        let rx = store.watch("/p/", 1).unwrap();
        expect_closed(&rx, Duration::from_secs(5));
        let rx = store.watch("/p/", r).unwrap();
        store.txn(&[], &[put("/p/b", "1")]).unwrap();
        assert_eq!(recv(&rx), put_event("/p/b", "1", r + 1));
    }

    /// etcd's `etcd_debugging_mvcc_watcher_total`: the watches it keeps.
    fn watchers(backing: &mut Backing) -> u64 {
        let metrics = backing.etcd().http_get("/metrics").unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no watcher count in etcd's metrics"))
    }

    #[test]
    fn dropping_the_receiver_ends_the_etcd_watch() {
        let mut backing = Backing::new(Kind::Etcd);
        let store = backing.open();
        let r = store.list("").unwrap().revision;
        let rx = store.watch("/p/", r).unwrap();
        assert_eq!(watchers(&mut backing), 1);
        drop(rx);
        // Noticed at the next event.
        store.txn(&[], &[put("/p/a", "1")]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while watchers(&mut backing) != 0 {
            assert!(Instant::now() < deadline, "etcd still has the watch");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn transactions_over_etcds_limits_are_refused() {
        let backing = Backing::new(Kind::Etcd);
        let store = backing.open();
        // The test server runs with --max-txn-ops 65536 (etcd's default is 128).
        let compares: Vec<Compare> = (0..66_000).map(|i| rev(&format!("/k{i}"), 0)).collect();
        match store.txn(&compares, &[put("/a", "1")]) {
            Err(StoreError::Refused(message)) => {
                assert!(message.contains("too many operations in txn request (66000 compares, 1 ops"), "{message}")
            }
            other => panic!("expected Refused, got {other:?}"),
        }
    }
}
