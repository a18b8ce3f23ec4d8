#!/usr/bin/env bash
# Installs whatever oxsdn needs that this machine lacks. Idempotent: every step checks
# first and does nothing when its target is already present.
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }

# Debian packages: the test tools and the real servers/daemons the suite drives
# (dnsmasq-base: the DNS server of the egress firewall tests, without a service).
PACKAGES=(iperf3 iputils-ping iproute2 bpftool tcpdump ethtool nftables iptables
          protobuf-compiler etcd-server etcd-client openvswitch-switch curl prometheus
          dnsmasq-base)
# The container runtimes the runtime tests drive (containerd's CRI plugin with runc,
# podman's CNI backend), Debian's reference CNI plugins (containerd runs `loopback` for
# every pod) and busybox-static (the tests' images). Without their recommends: podman's
# would add netavark, buildah and slirp4netns, which the tests do not use.
RUNTIME_PACKAGES=(containerd runc podman containernetworking-plugins busybox-static)

missing_of() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf '%s\n' "$p"
  done
}
mapfile -t missing < <(missing_of "${PACKAGES[@]}")
mapfile -t missing_runtimes < <(missing_of "${RUNTIME_PACKAGES[@]}")
if ((${#missing[@]} + ${#missing_runtimes[@]})); then
  log "installing Debian packages: ${missing[*]} ${missing_runtimes[*]}"
  apt-get update -qq
  # Packaged daemons (openvswitch-switch, etcd-server, containerd, prometheus) must not start in the
  # root namespace: the benchmark and tests run their own in namespaces they create. A
  # policy-rc.d that refuses every start does that during the install only.
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
  fi
  install=(apt-get install -y -qq)
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive "${install[@]}" "${missing[@]}" >/dev/null
  fi
  # podman ships a bridge network config for /etc/cni/net.d, the root namespace's CNI
  # directory: it is left out, so no runtime of this machine picks up a network there.
  if ((${#missing_runtimes[@]})); then
    DEBIAN_FRONTEND=noninteractive "${install[@]}" --no-install-recommends \
      -o "Dpkg::Options::=--path-exclude=/etc/cni/net.d/*" "${missing_runtimes[@]}" >/dev/null
  fi
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

# kubernetes-validate (PyPI): the manifests of deploy/ against the Kubernetes API's
# OpenAPI schemas, offline (kube-source/tests/deploy.rs).
KUBERNETES_VALIDATE=1.37.0
if [[ "$(kubernetes-validate --version 2>/dev/null)" != "$KUBERNETES_VALIDATE" ]]; then
  log "installing kubernetes-validate $KUBERNETES_VALIDATE"
  python3 -m pip install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE"
fi

# bpffs: the agent pins its programs and maps there.
if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
log "ok"
