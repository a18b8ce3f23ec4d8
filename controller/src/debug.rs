//! Test support for crash-safety checks: a writer that can be killed at any moment.

use crate::{
    cluster::decode_counter,
    store::{Compare, Op, Store},
    Result,
};

/// Increments the decimal counter at `key` (absent = 0) with compare-and-swap, `count`
/// times or forever if `None`, calling `report(value, revision)` after each commit with
/// the value committed and the key's mod revision read back just after (so the store's
/// revision is at least that from then on). Stops early when `report` returns false.
///
/// A CAS that fails is retried at once, without limit: it fails only because another
/// writer committed, so the writers as a whole always make progress.
pub fn store_hammer(
    store: &dyn Store,
    key: &str,
    count: Option<u64>,
    report: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<()> {
    let mut done = 0;
    while count.is_none_or(|count| done < count) {
        let current = store.get(key)?;
        let value = decode_counter(current.as_ref())? + 1;
        let compare =
            Compare::ModRevision { key: key.to_owned(), mod_revision: current.map_or(0, |kv| kv.mod_revision) };
        let put = Op::Put { key: key.to_owned(), value: value.to_string().into_bytes() };
        if !store.txn(&[compare], &[put])? {
            continue;
        }
        done += 1;
        let revision = store.get(key)?.map_or(0, |kv| kv.mod_revision);
        if !report(value, revision) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader},
        process::{Command, Stdio},
    };

    use super::*;
    use crate::store::FileStore;

    const HAMMER_DIR_ENV: &str = "OXSDN_TEST_HAMMER_STORE";
    const KEY: &str = "/hammer";

    #[test]
    fn hammer_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileStore::open(tmp.path()).unwrap();
        let mut seen = Vec::new();
        store_hammer(&store, KEY, Some(3), &mut |v, r| {
            seen.push((v, r));
            true
        })
        .unwrap();
        assert_eq!(seen, vec![(1, 1), (2, 2), (3, 3)]);
        store_hammer(&store, KEY, None, &mut |v, _| v < 5).unwrap();
        assert_eq!(store.get(KEY).unwrap().unwrap().value, b"5");
    }

    /// The writer process of `survives_sigkill_mid_write`; does nothing unless spawned
    /// by it.
    #[test]
    #[ignore = "helper process, spawned by survives_sigkill_mid_write"]
    fn hammer_child() {
        let Ok(dir) = std::env::var(HAMMER_DIR_ENV) else {
            return;
        };
        let store = FileStore::open(dir).unwrap();
        store_hammer(&store, KEY, None, &mut |v, r| {
            println!("committed value={v} revision={r}");
            true
        })
        .unwrap();
    }

    fn parse_report(line: &str) -> Option<(u64, u64)> {
        let rest = line.strip_prefix("committed value=")?;
        let (v, r) = rest.split_once(" revision=")?;
        Some((v.parse().ok()?, r.parse().ok()?))
    }

    #[test]
    fn survives_sigkill_mid_write() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut last = (0, 0);
        for round in 0..5u64 {
            let mut child = Command::new(&exe)
                .args(["--exact", "debug::tests::hammer_child", "--ignored", "--nocapture", "--test-threads=1"])
                .env(HAMMER_DIR_ENV, tmp.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            // Kill after a varying number of commits, so the kill lands at varying
            // points of the write cycle.
            let commits = 20 + round * 7;
            let mut reported = 0;
            for line in lines.by_ref() {
                if let Some(r) = parse_report(&line.unwrap()) {
                    last = r;
                    reported += 1;
                    if reported == commits {
                        break;
                    }
                }
            }
            assert_eq!(reported, commits, "the writer stopped early");
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            // Whatever it reported before dying counts too.
            for line in lines {
                if let Some(r) = line.ok().as_deref().and_then(parse_report) {
                    last = r;
                }
            }

            let store = FileStore::open(tmp.path()).expect("the store must verify after SIGKILL");
            let kv = store.get(KEY).unwrap().unwrap();
            let value: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
            let revision = store.list("").unwrap().revision;
            // At most the one commit it had no time to report.
            assert!(value == last.0 || value == last.0 + 1, "value {value}, last reported {last:?}");
            assert!(revision >= last.1, "revision {revision}, last reported {last:?}");
            assert_eq!(revision, value, "one revision per increment");
            let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("state.tmp."))
                .collect();
            assert!(leftovers.is_empty(), "open() removes stale temporaries: {leftovers:?}");
        }
    }
}
