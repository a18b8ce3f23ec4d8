#!/usr/bin/env bash
# Builds the oxsdn image (deploy/Containerfile) with podman from the binaries of
# target/$PROFILE (release unless PROFILE says otherwise): oxsdn-agent, oxsdnctl,
# oxsdn-kube, the CNI plugins oxsdn and loopback (Debian's containernetworking-plugins),
# nft (the agent programs its masquerade rule through it), busybox (static), and every shared library they load, found with ldd. Offline: the
# image starts FROM scratch and copies only files of this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
TAG=${IMAGE:-oxsdn:$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
root=deploy/image-root
rm -rf "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/opt/oxsdn/cni" "$root/bin" "$root/tmp"
install -m 0755 target/"$PROFILE"/{oxsdn-agent,oxsdnctl,oxsdn-kube} "$root/usr/bin/"
install -m 0755 target/"$PROFILE"/oxsdn /usr/lib/cni/loopback "$root/opt/oxsdn/cni/"
install -m 0755 /bin/busybox "$root/bin/busybox"
install -m 0755 "$(command -v nft)" "$root/usr/sbin/nft"
# The libraries and the dynamic loader, at the paths the binaries look for them.
for binary in "$root"/usr/bin/* "$root"/usr/sbin/* "$root"/opt/oxsdn/cni/*; do
  ldd "$binary" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
podman build --pull=never -f deploy/Containerfile -t "$TAG" deploy
echo "built $TAG"
