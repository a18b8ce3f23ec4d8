#!/usr/bin/env python3
"""Per variant and client address: median Gbit/s, CPU-seconds per GB (iperf3's own
getrusage of client and server, which includes the softirq work run in their
context), retransmits and RTT. Usage: cost.py <json dir> [tag prefix]"""
import collections
import glob
import json
import statistics
import sys

rows = collections.defaultdict(list)
for path in sorted(glob.glob(f"{sys.argv[1]}/*.json")):
    tag = path.rsplit("/", 1)[-1].rsplit("-", 1)[0]
    if tag.startswith("bench-") or (len(sys.argv) > 2 and not tag.startswith(sys.argv[2])):
        continue
    run = json.load(open(path))
    end, sender = run["end"], run["end"]["streams"][0]["sender"]
    recv, cpu = end["sum_received"], end["cpu_utilization_percent"]
    gb = recv["bytes"] / 1e9
    client = run["start"]["connected"][0]["local_host"]
    rows[(tag, client)].append((
        recv["bits_per_second"] / 1e9,
        cpu["host_total"] / 100 * recv["seconds"] / gb,
        cpu["remote_total"] / 100 * recv["seconds"] / gb,
        end["sum_sent"].get("retransmits", 0),
        sender.get("mean_rtt", 0),
    ))
for (tag, client), v in sorted(rows.items()):
    med = lambda i: statistics.median(x[i] for x in v)
    print(f"{tag:28} {client:15} n={len(v):2}  {med(0):5.2f} Gbit/s  client {med(1):.3f} + server {med(2):.3f} CPU-s/GB"
          f"  retr {med(3):5.0f}  rtt {med(4):4.0f} us")
