#!/usr/bin/env python3
"""Samples per GB by kind of kernel work, from `perf record -e cpu-clock -C 0,1 -g`
taken during one iperf3 run: profile.py <perf.data> <Gbit/s during the recording>
[seconds recorded, default 10]. Counts samples of iperf3 and of any stack running the
network softirq (it also runs in other tasks' context), by leaf function. The VM has
no PMU: cpu-clock samples taken with interrupts off land on the function that turns
them back on (_raw_spin_unlock_irqrestore, handle_softirqs, in "other")."""
import collections
import re
import subprocess
import sys

KINDS = [
    ("eBPF programs + redirect", r"(bpf_|skb_do_redirect|__bpf_redirect|tcf_|tcx_|dev_forward_skb|__dev_forward_skb|sch_handle)"),
    ("netfilter conntrack/NAT", r"(nf_|__nf_|nft_|ipv4_conntrack|masquerade|hash_conntrack|tcp_in_window)"),
    ("bridge + br_netfilter", r"(br_|__br_|nbp_)"),
    ("routing lookups", r"(fib_|ip_route_|__fib|rt_|__mkroute|find_exception|dst_)"),
    ("user copy", r"(_copy_from_iter|_copy_to_iter|copy_user|__check_object_size|__check_heap_object)"),
    ("tcp", r"(tcp_|__tcp_|inet_csk|__inet_lookup|inet_)"),
    ("ip receive/output/forward", r"(ip_|__ip_|ipv4_)"),
    ("device rx/tx, backlog, veth", r"(__netif|netif_|process_backlog|net_rx_action|__napi|napi_|__dev_queue_xmit|dev_hard_start_xmit|veth_|eth_type_trans|validate_xmit|enqueue_to_backlog|skb_defer|__skb_flow_dissect|dev_get_by_index)"),
    ("skb and memory alloc/free", r"(kmem_|__kmem|kfree|__alloc|alloc_|skb_|__skb_|__kfree_skb|__build_skb|___slab|__slab|get_page|__free|free_|page_|__folio|folio_|consume_skb)"),
]


def samples(data):
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,ip,sym"], capture_output=True, text=True).stdout
    for block in out.split("\n\n"):
        lines = block.strip().split("\n")
        if lines and lines[0]:
            yield lines[0].split()[0], [l.split(None, 1)[1] for l in lines[1:] if len(l.split(None, 1)) == 2]


counts, total = collections.Counter(), 0
for comm, frames in samples(sys.argv[1]):
    if not frames or (comm != "iperf3" and not any(f.startswith(("net_rx_action", "__dev_queue_xmit", "tcp_")) for f in frames)):
        continue
    total += 1
    counts[next((k for k, rx in KINDS if re.match(rx, frames[0])), "other")] += 1
gb = float(sys.argv[2]) * float(sys.argv[3] if len(sys.argv) > 3 else 10) / 8
print(f"{total} samples, {total / gb:.0f} per GB")
for kind in [k for k, _ in KINDS] + ["other"]:
    print(f"  {kind:32} {100 * counts[kind] / total:5.1f} %  {counts[kind] / gb:6.0f} per GB")
