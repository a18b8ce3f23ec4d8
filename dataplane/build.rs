//! Builds the eBPF crate (`../ebpf`) with the nightly toolchain for bpfel-unknown-none,
//! so a plain `cargo build` of the workspace produces the object the agent embeds.
//!
//! Without that toolchain (nightly with rust-src, bpf-linker), or with
//! `OXSDN_SKIP_EBPF_BUILD` set, the object is left empty and a warning says so, as aya's
//! template does: `cargo check` and `cargo clippy` then work anywhere, and the agent
//! built so refuses to start (`loader::load_programs`).

use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf_dir = manifest_dir.join("../ebpf");
    let common_dir = manifest_dir.join("../common");
    let tables_dir = manifest_dir.join("../tables");
    for p in ["src", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(p).display());
    }
    // The programs are built from the contract and the tables too.
    for crate_dir in [&common_dir, &tables_dir] {
        println!("cargo:rerun-if-changed={}", crate_dir.join("src").display());
        println!("cargo:rerun-if-changed={}", crate_dir.join("Cargo.toml").display());
    }

    println!("cargo:rerun-if-env-changed=OXSDN_SKIP_EBPF_BUILD");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let object = out_dir.join("oxsdn-ebpf.o");
    let skip = if env::var_os("OXSDN_SKIP_EBPF_BUILD").is_some() {
        Some("OXSDN_SKIP_EBPF_BUILD is set")
    } else if !runs(Command::new("cargo").args(["+nightly", "--version"])) {
        Some("the nightly toolchain is missing")
    } else if !on_path("bpf-linker") {
        // Not run here: it loads nightly's LLVM, which only `cargo +nightly` puts on its
        // library path.
        Some("bpf-linker is missing")
    } else {
        None
    };
    if let Some(why) = skip {
        println!(
            "cargo:warning=eBPF programs not built ({why}): the agent of this build cannot start; run scripts/setup.sh"
        );
        std::fs::write(&object, []).expect("writing the empty eBPF object");
        return;
    }
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ebpf_dir).args(["+nightly", "build", "--release", "--locked", "--target-dir"]).arg(&target_dir);
    // The outer build's settings are for the host target; keep them out of this one.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTUP_TOOLCHAIN",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("could not run `cargo +nightly` to build the eBPF programs; run scripts/setup.sh");
    assert!(
        status.success(),
        "building the eBPF programs failed (see above); run scripts/setup.sh if bpf-linker or rust-src is missing"
    );
    let built = target_dir.join("bpfel-unknown-none/release/oxsdn-ebpf");
    std::fs::copy(&built, &object).expect("eBPF object missing after build");
}

/// Whether a command runs and succeeds.
fn runs(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Whether an executable of this name is on `PATH`.
fn on_path(name: &str) -> bool {
    env::var_os("PATH").is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}
