#!/usr/bin/env bash
# Training throughput, Kiln against TensorFlow CPU, in one run on the same machine.
# MODEL=vgg (default) or convnet4; STEPS timed steps per measurement (default 20).
# Runs Kiln, TensorFlow, Kiln, TensorFlow (interleaved, so drift in machine load hits both) and prints
# the ratio of the means. Needs `pip install tensorflow-cpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${STEPS:-20}"
model="${MODEL:-vgg}"
cargo build --release -p kiln -q
kiln="${CARGO_TARGET_DIR:-target}/release/kiln"
python3 -c 'import tensorflow' 2>/dev/null || { echo "tensorflow is not installed: pip install tensorflow-cpu" >&2; exit 1; }
ours=(); theirs=()
for round in 1 2; do
  line=$("$kiln" bench train --model "$model" --batch 64 --steps "$steps" --warmup 3)
  echo "round $round: $line"
  ours+=("$(sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$line")")
  line=$(python3 tools/bench_tf.py --model "$model" --batch 64 --steps "$steps" --warmup 3 2>/dev/null | tail -1)
  echo "round $round: $line"
  theirs+=("$(sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$line")")
done
python3 - "${ours[@]}" "${theirs[@]}" <<'PY'
import sys
v = list(map(float, sys.argv[1:]))
ours, tf = v[:2], v[2:]
print(f"kiln {ours} img/s, tensorflow {tf} img/s; ratio of means {sum(ours)/sum(tf):.2f}x")
PY
