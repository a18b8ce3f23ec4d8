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
    out=$PERF_JSON_DIR/bench-$tag-$n-$p
    PERF_TAG=$tag-$n PATH=$here:$PATH OXSDN_BIN_DIR=$d "$d/oxsdn-bench" --only "$only" \
      --rounds "${ROUNDS:-3}" --seconds 5 --results-dir "$out" --markdown "$out/RESULTS.md" 2>/dev/null
    echo "$n run $p: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["ratios"]; print(" ".join(k + "=" + format(v["value"], ".2f") for k,v in r.items() if v["value"] is not None))' "$out/latest.json")"
  done
done
python3 "$here/cost.py" "$PERF_JSON_DIR" "$tag-"
