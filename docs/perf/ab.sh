#!/bin/bash
# Interleaved A/B of agent builds: ab.sh <tag> <scenarios> <pairs> <bin dir A> <bin dir B> ...
# Each bin dir holds oxsdn-agent, oxsdn, oxsdnctl and oxsdn-bench of one variant; runs
# alternate A B A B so drift hits both. Needs docs/perf/iperf3 (real-time iperf3).
# ROUNDS (default 3) per run; per-iperf3 JSON goes to $PERF_JSON_DIR (default /tmp/oxsdn-perf).
set -eu
tag=$1; only=$2; pairs=$3; shift 3
here=$(cd "$(dirname "$0")" && pwd)
export PERF_JSON_DIR=${PERF_JSON_DIR:-/tmp/oxsdn-perf}
for p in $(seq 1 "$pairs"); do
  for d in "$@"; do
    n=$(basename "$d")
    PERF_TAG=$tag-$n PATH=$here:$PATH OXSDN_BIN_DIR=$d "$d/oxsdn-bench" --only "$only" \
      --rounds "${ROUNDS:-3}" --seconds 5 --out "$PERF_JSON_DIR/bench-$tag-$n-$p.json" >/dev/null
    echo "$n run $p: $(grep -o '"oxsdn_[a-z_]*": [0-9.][0-9.]*' "$PERF_JSON_DIR/bench-$tag-$n-$p.json" | tr '\n' ' ')"
  done
done
python3 "$here/cost.py" "$PERF_JSON_DIR" "$tag-"
