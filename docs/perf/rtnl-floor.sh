#!/bin/bash
# The netlink floor of CNI ADD on this kernel: N pods set up at once with iproute2 doing
# only what a pod's network needs (veth pair with the pod end created in the pod's
# namespace, MTU, MAC, address, links up, two routes), no CNI, no agent, no eBPF.
# Prints each pod's wall time (ms), sorted. Everything lives in namespaces of its own.
# Usage: rtnl-floor.sh [N=20] [ROUNDS=3]
set -eu
n=${1:-20}; rounds=${2:-3}
p=oxfloor$$
cleanup() { for i in $(seq 0 "$n"); do ip netns del "$p-$i" 2>/dev/null || true; done; ip netns del "$p-node" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$p-node"
for r in $(seq 1 "$rounds"); do
  for i in $(seq 1 "$n"); do ip netns add "$p-$i"; done
  for i in $(seq 1 "$n"); do
    (
      t0=$(date +%s%N)
      ip -n "$p-node" link add "h$i" mtu 1450 type veth peer name eth0 netns "$p-$i" mtu 1450 address "0a:58:0a:80:00:$(printf %02x "$i")"
      ip -n "$p-node" link set "h$i" up
      ip -n "$p-$i" -b - <<B
link set lo up
link set eth0 up
addr add 10.128.0.$((i + 1))/23 dev eth0
route add 10.128.0.0/14 dev eth0
route add default via 10.128.0.1 dev eth0 onlink
B
      echo $((($(date +%s%N) - t0) / 1000000))
    ) &
  done | sort -n | tr '\n' ' '
  echo
  for i in $(seq 1 "$n"); do ip netns del "$p-$i"; done
done
