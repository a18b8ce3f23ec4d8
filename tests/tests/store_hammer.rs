//! The file store survives its writer's death at any point of a write: `oxsdn-store-hammer`
//! (a process incrementing a counter as fast as it can) is SIGKILLed mid-write, and the
//! store then opens, verifies, and holds every increment the writer reported.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use oxsdn_controller::store::{FileStore, Store};

const KEY: &str = "/hammer";

fn hammer(store: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxsdn-store-hammer"));
    command.arg("--store").arg(store).args(["--key", KEY]);
    command
}

/// `(value, revision)` of a `committed value=V revision=R` line.
fn parse_report(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("committed value=")?;
    let (v, r) = rest.split_once(" revision=")?;
    Some((v.parse().ok()?, r.parse().ok()?))
}

#[test]
fn hammer_reports_each_commit() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let out = hammer(tmp.path()).args(["--count", "3"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let reports: Vec<_> = String::from_utf8(out.stdout).unwrap().lines().map(parse_report).collect();
        // The second run goes on from what the first committed.
        let expected: Vec<_> = (1..=3).map(|i| Some((round * 3 + i, round * 3 + i))).collect();
        assert_eq!(reports, expected);
    }
}

#[test]
fn file_store_survives_sigkill_mid_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mut last = (0, 0);
    for round in 0..5u64 {
        let mut child = hammer(tmp.path()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a varying number of commits, so the kill lands at varying points
        // of the write cycle.
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
