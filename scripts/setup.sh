#!/usr/bin/env bash
# Installs whatever oxsdn needs that this machine lacks. Idempotent: every step checks
# first and does nothing when its target is already present.
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }

# Debian packages: the test tools and the real servers/daemons the suite drives.
PACKAGES=(iperf3 iputils-ping iproute2 bpftool tcpdump ethtool nftables iptables
          protobuf-compiler etcd-server etcd-client openvswitch-switch curl)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # Packaged daemons (openvswitch-switch, etcd-server) must not start in the root
  # namespace: the benchmark and tests run their own in namespaces they create. A
  # policy-rc.d that refuses every start does that during the install only.
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [[ -n $own_policy ]]; then rm -f "$policy"; fi
fi

# Rust: the eBPF crate needs nightly with rust-src (-Z build-std=core).
if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
fi

# bpf-linker, linked against nightly's own LLVM (Debian has no LLVM 22). The binary keeps
# an rpath to $LLVM_PREFIX/lib, so that directory is permanent.
LLVM_PREFIX="${OXSDN_LLVM_PREFIX:-$HOME/.local/share/oxsdn/llvm}"
if ! command -v bpf-linker >/dev/null 2>&1 || ! bpf-linker --version >/dev/null 2>&1; then
  log "building bpf-linker against nightly's LLVM (about a minute)"
  mkdir -p "$LLVM_PREFIX/lib"
  llvm_so=$(ls "$(rustc +nightly --print sysroot)"/lib/libLLVM.so.*-rust-*-nightly | head -n1)
  ln -sf "$llvm_so" "$LLVM_PREFIX/lib/libLLVM.so"
  LLVM_PREFIX="$LLVM_PREFIX" cargo +nightly install --locked bpf-linker \
    --version 0.13.0 --no-default-features --features llvm-22
fi

# bpffs: the agent pins its programs and maps there.
if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
log "ok"
