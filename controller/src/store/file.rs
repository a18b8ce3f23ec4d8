//! `FileStore`: the embedded, crash-safe default store, a directory on the node.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, DirBuilder, File, OpenOptions},
    io::{ErrorKind, Read, Write},
    ops::Bound,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver, Sender},
    time::Duration,
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Compare, KeyValue, Op, Snapshot, Store, StoreError, WatchEvent};

/// Name of the data file inside the store directory.
const STATE_FILE: &str = "state";
/// Name of the file writers `flock`.
const LOCK_FILE: &str = "lock";
/// Prefix of the temporary files a writer renames over `state`.
const TMP_PREFIX: &str = "state.tmp.";
const FORMAT_VERSION: u32 = 1;
const HEADER_PREFIX: &str = "oxsdn-store ";
/// `oxsdn-store 1 sha256=` + 64 hex digits + `\n`.
const HEADER_LEN: usize = HEADER_PREFIX.len() + "1 sha256=".len() + 64 + 1;
/// How often a watch looks at the state file.
const WATCH_POLL: Duration = Duration::from_millis(50);

/// The embedded store: a directory holding `state` (the data) and `lock`.
///
/// `state` is one line of header, `oxsdn-store 1 sha256=<hex of the body>`, followed by
/// a JSON body `{"revision": N, "kvs": {key: {"value": "...", "modRevision": n}}}`.
/// Values that are valid UTF-8 (in practice JSON) are stored as a JSON string under
/// `value`, so the file stays readable; any other bytes are stored hex-encoded under
/// `valueHex` instead.
///
/// Writers hold `flock(LOCK_EX)` on `lock` for the whole read-check-write cycle and
/// replace `state` by writing a temporary file, fsyncing it, renaming it over `state` and
/// fsyncing the directory, so `state` is at every instant either the old or the new
/// complete file, even across a crash or SIGKILL. Readers take no lock: they open
/// whichever `state` the last rename installed. Every read verifies the header and the
/// checksum; a store that fails them is reported as `StoreError::Corrupted` and is never
/// reset or overwritten.
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
    state_path: PathBuf,
    lock_path: PathBuf,
}

/// The decoded contents of `state`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    revision: u64,
    kvs: BTreeMap<String, Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    value: Vec<u8>,
    mod_revision: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskState {
    revision: u64,
    kvs: BTreeMap<String, DiskEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DiskEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
    mod_revision: u64,
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    s.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => {
                let digit = |b: u8| char::from(b).to_digit(16);
                Some((digit(*hi)? * 16 + digit(*lo)?) as u8)
            }
            _ => None,
        })
        .collect()
}

impl State {
    /// Encodes the whole file: header line and body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let disk = DiskState {
            revision: self.revision,
            kvs: self
                .kvs
                .iter()
                .map(|(k, e)| {
                    let (value, value_hex) = match std::str::from_utf8(&e.value) {
                        Ok(s) => (Some(s.to_owned()), None),
                        Err(_) => (None, Some(hex_encode(&e.value))),
                    };
                    (k.clone(), DiskEntry { value, value_hex, mod_revision: e.mod_revision })
                })
                .collect(),
        };
        // Serialising plain maps, strings and integers cannot fail.
        let mut body = serde_json::to_vec_pretty(&disk).expect("store state serialises");
        body.push(b'\n');
        Self::with_header(&body)
    }

    /// The file of `body`: the header line with its checksum, then the body.
    pub(crate) fn with_header(body: &[u8]) -> Vec<u8> {
        let digest = hex_encode(&Sha256::digest(body));
        let mut out = format!("{HEADER_PREFIX}{FORMAT_VERSION} sha256={digest}\n").into_bytes();
        out.extend_from_slice(body);
        out
    }

    /// Decodes and verifies a whole file; the error is the reason it is not valid.
    pub(crate) fn decode(bytes: &[u8]) -> Result<State, String> {
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("no header line ({} bytes, truncated?)", bytes.len()))?;
        let (header, body) = (&bytes[..newline], &bytes[newline + 1..]);
        let header = std::str::from_utf8(header).map_err(|_| "header is not UTF-8".to_string())?;
        let rest = header.strip_prefix(HEADER_PREFIX).ok_or_else(|| format!("bad header {header:?}"))?;
        let (version, digest) = rest.split_once(" sha256=").ok_or_else(|| format!("bad header {header:?}"))?;
        if version != FORMAT_VERSION.to_string() {
            return Err(format!("unsupported format version {version:?} (this build reads {FORMAT_VERSION})"));
        }
        let actual = hex_encode(&Sha256::digest(body));
        if digest != actual {
            return Err(format!(
                "checksum mismatch: header says sha256={digest}, body ({} bytes) has sha256={actual}",
                body.len()
            ));
        }
        let disk: DiskState = serde_json::from_slice(body).map_err(|e| format!("body is not valid: {e}"))?;
        let mut kvs = BTreeMap::new();
        for (key, e) in disk.kvs {
            if e.mod_revision == 0 || e.mod_revision > disk.revision {
                return Err(format!("key {key:?} has modRevision {} outside [1, {}]", e.mod_revision, disk.revision));
            }
            let value = match (e.value, e.value_hex) {
                (Some(s), None) => s.into_bytes(),
                (None, Some(h)) => hex_decode(&h).ok_or_else(|| format!("key {key:?} has invalid valueHex"))?,
                _ => return Err(format!("key {key:?} must have exactly one of value, valueHex")),
            };
            kvs.insert(key, Entry { value, mod_revision: e.mod_revision });
        }
        Ok(State { revision: disk.revision, kvs })
    }

    fn snapshot(&self, prefix: &str) -> Snapshot {
        Snapshot {
            revision: self.revision,
            kvs: self
                .kvs
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, e)| KeyValue { key: k.clone(), value: e.value.clone(), mod_revision: e.mod_revision })
                .collect(),
        }
    }

    fn holds(&self, compare: &Compare) -> bool {
        match compare {
            Compare::ModRevision { key, mod_revision } => {
                self.kvs.get(key).map_or(0, |e| e.mod_revision) == *mod_revision
            }
        }
    }

    /// Applies `ops` at the next revision; returns whether anything changed.
    fn apply(&mut self, ops: &[Op]) -> bool {
        let revision = self.revision + 1;
        let mut changed = false;
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    self.kvs.insert(key.clone(), Entry { value: value.clone(), mod_revision: revision });
                    changed = true;
                }
                Op::Delete { key } => changed |= self.kvs.remove(key).is_some(),
            }
        }
        if changed {
            self.revision = revision;
        }
        changed
    }
}

impl FileStore {
    /// Opens the store in `dir`, creating the directory (mode 0700) if missing, and
    /// verifies the state file. Temporary files left by a writer that died mid-write are
    /// removed.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| io_error(&dir, e))?;
        let store = FileStore { state_path: dir.join(STATE_FILE), lock_path: dir.join(LOCK_FILE), dir };
        let _lock = store.lock()?;
        store.remove_stale_temporaries()?;
        store.load()?;
        Ok(store)
    }

    /// Takes the writers' exclusive lock, held until the returned value is dropped.
    fn lock(&self) -> Result<Flock<File>, StoreError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|e| io_error(&self.lock_path, e))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(lock),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(io_error(&self.lock_path, errno.into())),
            }
        }
    }

    /// Only a lock holder writes temporaries, so under the lock any that exist are stale.
    fn remove_stale_temporaries(&self) -> Result<(), StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&self.dir, e))?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let path = entry.path();
                fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
            }
        }
        Ok(())
    }

    fn corrupted(&self, reason: String) -> StoreError {
        StoreError::Corrupted { path: self.state_path.display().to_string(), reason }
    }

    /// Reads the raw state file; `None` if it does not exist yet.
    fn read_raw(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(&self.state_path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&self.state_path, e)),
        }
    }

    fn decode(&self, raw: Option<&[u8]>) -> Result<State, StoreError> {
        match raw {
            None => Ok(State::default()),
            Some(bytes) => State::decode(bytes).map_err(|reason| self.corrupted(reason)),
        }
    }

    fn load(&self) -> Result<State, StoreError> {
        self.decode(self.read_raw()?.as_deref())
    }

    /// Reads the state file only if its header differs from `last_header`, which then
    /// becomes the new header. The header carries the body's checksum, so an unchanged
    /// header means unchanged contents; stat data can't tell that reliably, because an
    /// inode freed by one rename may be reused by the next and mtime is coarse.
    fn load_if_changed(&self, last_header: &mut Vec<u8>) -> Result<Option<State>, StoreError> {
        let mut file = match File::open(&self.state_path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if last_header.is_empty() {
                    return Ok(None);
                }
                last_header.clear();
                return Ok(Some(State::default()));
            }
            Err(e) => return Err(io_error(&self.state_path, e)),
        };
        let mut bytes = Vec::new();
        (&mut file).take(HEADER_LEN as u64).read_to_end(&mut bytes).map_err(|e| io_error(&self.state_path, e))?;
        if bytes == *last_header {
            return Ok(None);
        }
        // Same open file, so the rest belongs to the same version as the header.
        file.read_to_end(&mut bytes).map_err(|e| io_error(&self.state_path, e))?;
        let state = self.decode(Some(&bytes))?;
        bytes.truncate(HEADER_LEN);
        *last_header = bytes;
        Ok(Some(state))
    }

    /// Installs `state` as the contents of the store, atomically and durably.
    fn write(&self, state: &State) -> Result<(), StoreError> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}.{:016x}", std::process::id(), rand::random::<u64>()));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| io_error(&tmp, e))?;
            file.write_all(&state.encode()).map_err(|e| io_error(&tmp, e))?;
            file.sync_all().map_err(|e| io_error(&tmp, e))?;
            fs::rename(&tmp, &self.state_path).map_err(|e| io_error(&self.state_path, e))
        })();
        if result.is_err() {
            // Best effort: the next open removes it anyway.
            let _ = fs::remove_file(&tmp);
        }
        result?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io_error(&self.dir, e))
    }
}

impl Store for FileStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let state = self.load()?;
        Ok(state.kvs.get(key).map(|e| KeyValue {
            key: key.to_owned(),
            value: e.value.clone(),
            mod_revision: e.mod_revision,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        Ok(self.load()?.snapshot(prefix))
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        let mut state = self.load()?;
        if !compares.iter().all(|c| state.holds(c)) {
            return Ok(false);
        }
        if state.apply(ops) {
            self.write(&state)?;
        }
        Ok(true)
    }

    /// Polls the state file every 50 ms from a thread of its own.
    ///
    /// Deletions are found by comparing successive snapshots, so a deletion that happened
    /// before the watch started (at or before the current revision) is not reported:
    /// callers list first and watch from the list's revision. A `Delete` carries the
    /// revision at which the deletion was first seen, which is exact when one transaction
    /// happened between two polls and otherwise an upper bound; the events of one poll
    /// are sent in that revision order. The thread stops, closing the channel, when the
    /// store becomes unreadable or corrupted or goes back in revision (replaced), and
    /// when the receiver has been dropped, which it notices at the next event it sends.
    fn watch(&self, prefix: &str, after_revision: u64) -> Result<Receiver<WatchEvent>, StoreError> {
        let (tx, rx) = mpsc::channel();
        let mut header = Vec::new();
        let initial = self.load_if_changed(&mut header)?.unwrap_or_default().snapshot(prefix);
        let mut puts: Vec<&KeyValue> = initial.kvs.iter().filter(|kv| kv.mod_revision > after_revision).collect();
        puts.sort_by_key(|kv| kv.mod_revision);
        for kv in puts {
            // The receiver is still in our hands: this cannot fail.
            let _ = tx.send(WatchEvent::Put(kv.clone()));
        }
        let watcher = self.clone();
        let prefix = prefix.to_owned();
        std::thread::Builder::new()
            .name("oxsdn-store-watch".into())
            .spawn(move || watcher.poll(&prefix, initial, header, &tx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start a watch thread: {e}")))?;
        Ok(rx)
    }
}

impl FileStore {
    /// The watch loop; returns (dropping `tx`) when the watch ends.
    fn poll(&self, prefix: &str, mut prev: Snapshot, mut header: Vec<u8>, tx: &Sender<WatchEvent>) {
        loop {
            std::thread::sleep(WATCH_POLL);
            let state = match self.load_if_changed(&mut header) {
                Ok(None) => continue,
                Ok(Some(state)) => state,
                Err(e) => {
                    tracing::warn!(error = %e, prefix, "store watch stopped");
                    return;
                }
            };
            if state.revision < prev.revision {
                tracing::warn!(
                    path = %self.state_path.display(),
                    from = prev.revision,
                    to = state.revision,
                    "store revision went back; store watch stopped"
                );
                return;
            }
            let next = state.snapshot(prefix);
            for event in diff(&prev, &next) {
                if tx.send(event).is_err() {
                    return;
                }
            }
            prev = next;
        }
    }
}

/// The events that turn `prev` into `next` (both sorted by key), in revision order.
fn diff(prev: &Snapshot, next: &Snapshot) -> Vec<WatchEvent> {
    let before: BTreeMap<&str, u64> = prev.kvs.iter().map(|kv| (kv.key.as_str(), kv.mod_revision)).collect();
    let after: BTreeSet<&str> = next.kvs.iter().map(|kv| kv.key.as_str()).collect();
    let mut events: Vec<WatchEvent> = next
        .kvs
        .iter()
        .filter(|kv| before.get(kv.key.as_str()) != Some(&kv.mod_revision))
        .map(|kv| WatchEvent::Put(kv.clone()))
        .chain(
            before
                .keys()
                .filter(|k| !after.contains(*k))
                .map(|k| WatchEvent::Delete { key: (*k).to_owned(), mod_revision: next.revision }),
        )
        .collect();
    // Stable: deletes, seen at `next.revision`, come after the puts of that revision.
    events.sort_by_key(|e| match e {
        WatchEvent::Put(kv) => kv.mod_revision,
        WatchEvent::Delete { mod_revision, .. } => *mod_revision,
    });
    events
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::PermissionsExt, time::Duration};

    use super::*;
    use crate::store::testing::{del, delete_event, expect_closed, put, put_event, recv, value};

    fn expect_corrupted<T: std::fmt::Debug>(r: Result<T, StoreError>, reason_part: &str) {
        match r {
            Err(StoreError::Corrupted { path, reason }) => {
                assert!(path.ends_with("/state"), "{path}");
                assert!(reason.contains(reason_part), "{reason:?} does not mention {reason_part:?}");
            }
            other => panic!("expected Corrupted, got {other:?}"),
        }
    }

    #[test]
    fn open_creates_private_dir_and_empty_store() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let store = FileStore::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(store.get("/k").unwrap(), None);
        assert_eq!(store.list("").unwrap(), Snapshot::default());
        // Nothing is written until the first change.
        assert!(!dir.join(STATE_FILE).exists());
    }

    #[test]
    fn file_format_is_readable_and_binary_values_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path()).unwrap();
        let binary = vec![0xff, 0x00, 0x80];
        store.txn(&[], &[put("/json", r#"{"a":1}"#), Op::Put { key: "/bin".into(), value: binary.clone() }]).unwrap();
        assert_eq!(store.get("/bin").unwrap().unwrap().value, binary);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&all)), Some(all));
        for bad in ["f", "+f", "0g", "ff0"] {
            assert_eq!(hex_decode(bad), None, "{bad}");
        }
        let text = fs::read_to_string(tmp.path().join(STATE_FILE)).unwrap();
        let (header, body) = text.split_once('\n').unwrap();
        assert_eq!(header.len() + 1, HEADER_LEN);
        assert!(header.starts_with("oxsdn-store 1 sha256="));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"revision": 1, "kvs": {
                "/bin": {"valueHex": "ff0080", "modRevision": 1},
                "/json": {"value": "{\"a\":1}", "modRevision": 1},
            }})
        );
    }

    #[test]
    fn corruption_is_detected_and_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path()).unwrap();
        store.txn(&[], &[put("/a", "hello")]).unwrap();
        let path = tmp.path().join(STATE_FILE);
        let good = fs::read(&path).unwrap();

        // A flipped bit in the body.
        let mut bad = good.clone();
        let at = bad.len() - 10;
        bad[at] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        expect_corrupted(store.get("/a"), "checksum mismatch");
        expect_corrupted(store.list(""), "checksum mismatch");
        expect_corrupted(store.txn(&[], &[put("/a", "x")]), "checksum mismatch");
        expect_corrupted(store.watch("", 0), "checksum mismatch");
        expect_corrupted(FileStore::open(tmp.path()), "checksum mismatch");
        assert_eq!(fs::read(&path).unwrap(), bad, "a corrupted store must be left as it is");

        // A flipped byte in the header's checksum.
        let mut bad = good.clone();
        bad[HEADER_LEN - 2] = if bad[HEADER_LEN - 2] == b'0' { b'1' } else { b'0' };
        fs::write(&path, &bad).unwrap();
        expect_corrupted(store.get("/a"), "checksum mismatch");

        // Truncation, anywhere.
        for len in [0, 10, HEADER_LEN - 1, HEADER_LEN, good.len() - 1] {
            fs::write(&path, &good[..len]).unwrap();
            expect_corrupted(store.get("/a"), "");
            expect_corrupted(store.txn(&[], &[put("/a", "x")]), "");
            assert_eq!(fs::read(&path).unwrap(), &good[..len]);
        }

        // Well-formed but inconsistent: a key newer than the store.
        let forged =
            State { revision: 1, kvs: [("/a".to_string(), Entry { value: b"v".to_vec(), mod_revision: 5 })].into() };
        fs::write(&path, forged.encode()).unwrap();
        expect_corrupted(store.get("/a"), "modRevision 5 outside [1, 1]");

        // Another format version is refused rather than misread.
        let text = String::from_utf8(good.clone()).unwrap().replacen("oxsdn-store 1 ", "oxsdn-store 2 ", 1);
        fs::write(&path, text).unwrap();
        expect_corrupted(store.get("/a"), "unsupported format version \"2\"");

        fs::write(&path, &good).unwrap();
        assert_eq!(value(&store, "/a"), Some(("hello".into(), 1)));
    }

    #[test]
    fn open_removes_stale_temporary_files() {
        let tmp = tempfile::tempdir().unwrap();
        FileStore::open(tmp.path()).unwrap().txn(&[], &[put("/a", "1")]).unwrap();
        let stale = tmp.path().join("state.tmp.1234.00000000deadbeef");
        fs::write(&stale, b"half a write").unwrap();
        let store = FileStore::open(tmp.path()).unwrap();
        assert!(!stale.exists());
        assert_eq!(value(&store, "/a"), Some(("1".into(), 1)));
    }

    /// What a polling watch adds to the contract (see `contract`): changes between two
    /// polls are coalesced, and a watch from revision 0 starts with the live keys.
    #[test]
    fn watch_between_polls_and_from_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path()).unwrap();
        store.txn(&[], &[put("/p/b", "1"), put("/p/c", "1")]).unwrap(); // rev 1
        let rx = store.watch("/p/", 1).unwrap();

        // Several transactions between two polls (made deterministic by installing their
        // combined result in one write): still in revision order, the delete reported at
        // the revision where it was seen.
        let mut state = store.load().unwrap();
        state.apply(&[put("/p/a", "3")]); // rev 2
        state.apply(&[del("/p/b"), put("/p/d", "1")]); // rev 3
        state.apply(&[put("/p/a", "4")]); // rev 4
        store.write(&state).unwrap();
        assert_eq!(
            [recv(&rx), recv(&rx), recv(&rx)],
            [put_event("/p/d", "1", 3), put_event("/p/a", "4", 4), delete_event("/p/b", 4),]
        );
        assert!(rx.recv_timeout(WATCH_POLL * 4).is_err(), "no more events");

        // From revision 0 on an existing store: every live key.
        let rx0 = store.watch("/p/", 0).unwrap();
        let mut keys = vec![recv(&rx0), recv(&rx0), recv(&rx0)];
        keys.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(keys, vec![put_event("/p/a", "4", 4), put_event("/p/c", "1", 1), put_event("/p/d", "1", 3)]);
    }

    #[test]
    fn watch_closes_when_store_becomes_corrupted() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path()).unwrap();
        store.txn(&[], &[put("/a", "1")]).unwrap();
        let rx = store.watch("/", 1).unwrap();
        fs::write(tmp.path().join(STATE_FILE), b"garbage\n{}").unwrap();
        expect_closed(&rx, Duration::from_secs(5));
    }
}
