//! Paths of the workspace binaries under test (built by `cargo build` before the tests;
//! `make test` does that). `OXSDN_BIN_DIR` overrides the directory.

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OXSDN_BIN_DIR") {
        return PathBuf::from(d);
    }
    // Test binaries live in target/<profile>/deps; the others one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

pub fn path(name: &str) -> PathBuf {
    let p = dir().join(name);
    assert!(p.exists(), "{} not found: build the workspace first (cargo build)", p.display());
    p
}

pub fn agent() -> PathBuf {
    path("oxsdn-agent")
}

pub fn cni_plugin() -> PathBuf {
    path("oxsdn")
}

pub fn oxsdnctl() -> PathBuf {
    path("oxsdnctl")
}

/// The test tool that increments a store counter (tests/src/bin/store_hammer.rs).
pub fn store_hammer() -> PathBuf {
    path("oxsdn-store-hammer")
}
