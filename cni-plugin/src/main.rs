//! `oxsdn`: the CNI plugin binary (network config `"type": "oxsdn"`).
//!
//! Reads the CNI environment and the network config (stdin), runs the command (see
//! `oxsdn_cni::plugin`), prints the result or the CNI error JSON on stdout, and exits 0 or 1.

use std::io::Write;

use oxsdn_cni::env::CniEnv;
use oxsdn_cni::plugin::{self, Outcome};
use oxsdn_cni::version::CniVersion;
use oxsdn_cni::{code, CniError};

fn main() {
    // Neither a panic nor a failure to read stdin may leave the runtime without a CNI answer.
    let outcome = std::panic::catch_unwind(|| {
        let env =
            CniEnv::from_lookup(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()));
        match plugin::read_bounded(std::io::stdin().lock()) {
            Ok(stdin) => plugin::run(&env, &stdin),
            Err(e) => Outcome {
                stdout: Some(
                    CniError::new(
                        code::IO_FAILURE,
                        "cannot read the network config from stdin",
                    )
                    .with_details(e.to_string())
                    .to_json(CniVersion::LATEST.as_str()),
                ),
                exit_code: 1,
            },
        }
    })
    .unwrap_or_else(|_| Outcome {
        stdout: Some(
            CniError::new(code::INTERNAL, "oxsdn CNI plugin: internal error")
                .to_json(CniVersion::LATEST.as_str()),
        ),
        exit_code: 1,
    });

    if let Some(v) = &outcome.stdout {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, v);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
    std::process::exit(outcome.exit_code);
}
