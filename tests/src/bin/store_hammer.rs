//! `oxsdn-store-hammer`: a cluster-store writer for crash-safety and access-control
//! tests. It increments the decimal counter at `--key` (absent = 0) with compare-and-swap
//! and prints `committed value=V revision=R` after each commit: V the value committed, R
//! the key's mod revision read back just after (so the store's revision is at least R
//! from then on). Tests race several of them, SIGKILL one mid-write, or run it with a
//! node's credentials to see a raw write refused. It takes the store options of
//! `oxsdnctl`.

use std::{io::Write, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use oxsdn_controller::store::{self, Compare, KeyValue, Op, StoreOptions};

#[derive(Debug, Parser)]
#[command(name = "oxsdn-store-hammer", about = "Increment a store counter in a tight loop (a test tool)")]
struct Cli {
    #[command(flatten)]
    store: StoreOptions,
    #[arg(long, default_value = "/oxsdn/test/hammer")]
    key: String,
    /// Stop after this many commits (default: never).
    #[arg(long)]
    count: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match hammer(&cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxsdn-store-hammer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Commits `cli.count` increments (or forever), reporting each to `out`; stops when
/// `out` is closed. A compare-and-swap that fails is retried at once: it fails only
/// because another writer committed, so the writers as a whole always make progress.
fn hammer(cli: &Cli, out: &mut dyn Write) -> Result<()> {
    let backend = cli.store.backend()?;
    let store = store::open(&backend).with_context(|| format!("opening the {backend}"))?;
    let key = &cli.key;
    let mut done = 0;
    while cli.count.is_none_or(|count| done < count) {
        let current = store.get(key)?;
        let value = counter(current.as_ref())? + 1;
        let compare = Compare::ModRevision { key: key.clone(), mod_revision: current.map_or(0, |kv| kv.mod_revision) };
        let put = Op::Put { key: key.clone(), value: value.to_string().into_bytes() };
        if !store.txn(&[compare], &[put]).with_context(|| format!("incrementing {key}"))? {
            continue;
        }
        done += 1;
        let revision = store.get(key)?.map_or(0, |kv| kv.mod_revision);
        if writeln!(out, "committed value={value} revision={revision}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(())
}

/// The counter's value: a decimal number; absent means 0.
fn counter(kv: Option<&KeyValue>) -> Result<u64> {
    let Some(kv) = kv else { return Ok(0) };
    std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{} is not a decimal counter", kv.key))
}
