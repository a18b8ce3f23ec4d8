//! Builds the eBPF crate (`../ebpf`) with the nightly toolchain for bpfel-unknown-none,
//! so a plain `cargo build` of the workspace produces the object the agent embeds.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf_dir = manifest_dir.join("../ebpf");
    let common_dir = manifest_dir.join("../common");
    for p in ["src", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", common_dir.join("src").display());

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ebpf_dir)
        .args(["+nightly", "build", "--release", "--locked", "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings are for the host target; keep them out of this one.
    for var in [
        "RUSTC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTUP_TOOLCHAIN",
        "CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect(
        "could not run `cargo +nightly` to build the eBPF programs; run scripts/setup.sh",
    );
    assert!(status.success(), "building the eBPF programs failed (see above); run scripts/setup.sh if bpf-linker or rust-src is missing");
    let object = target_dir.join("bpfel-unknown-none/release/oxsdn-ebpf");
    std::fs::copy(&object, out_dir.join("oxsdn-ebpf.o")).expect("eBPF object missing after build");
}
