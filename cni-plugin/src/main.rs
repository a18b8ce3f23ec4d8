//! `oxsdn`: the CNI plugin binary (network config `"type": "oxsdn"`).
//!
//! Reads the CNI environment and the network config (stdin), runs the command (see
//! `oxsdn_cni::plugin`) within `plugin::DEADLINE`, prints the result or the CNI error JSON
//! on stdout, and exits 0 or 1.

use std::io::Write;

use oxsdn_cni::env::CniEnv;
use oxsdn_cni::plugin;

fn main() {
    let env = CniEnv::from_lookup(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()));
    // Neither a panic, a stdin that never ends nor anything that hangs may leave the
    // runtime without a CNI answer.
    let outcome = plugin::run_within(plugin::DEADLINE, env, std::io::stdin());
    if let Some(v) = &outcome.stdout {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, v);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
    std::process::exit(outcome.exit_code);
}
