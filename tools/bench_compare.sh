#!/usr/bin/env bash
# Two kiln binaries, interleaved run by run on the same machine, on the same models: batch-1 medians and
# batch-64 throughput of `kiln bench infer` (one thread), and VGG training images/s of `kiln bench train`.
# For checking that a change (a refactor, say) keeps the speed: build the old commit's binary elsewhere, then
#   tools/bench_compare.sh OLD_KILN NEW_KILN ROUNDS MODEL.kiln...
# Prints one line per run and, per benchmark, the median of each binary and their ratio (new / old).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 OLD_KILN NEW_KILN ROUNDS MODEL.kiln..." >&2
  exit 2
fi
old=$1 new=$2 rounds=$3
shift 3
lscpu | grep -E '^Model name' || true
results=$(mktemp /tmp/kiln-bench-compare.XXXXXX)
trap 'rm -f "$results"' EXIT

for ((round = 1; round <= rounds; round++)); do
  for which in old new; do
    bin=${!which}
    for model in "$@"; do
      out=$("$bin" bench infer "$model" --threads 1)
      # "batch 1: median 7.61 ms, ..." and "batch 64: ... 171 images/s".
      median=$(grep -oE 'median [0-9.]+ ms' <<<"$out" | head -1 | grep -oE '[0-9.]+')
      rate=$(grep -E 'batch 64' <<<"$out" | grep -oE '[0-9,.]+ images/s' | head -1 | tr -d ', ' | grep -oE '^[0-9.]+')
      echo "round $round $which $(basename "$model") batch-1 median ${median} ms, batch-64 ${rate} img/s"
      echo "$(basename "$model")-batch1-ms $which $median" >>"$results"
      echo "$(basename "$model")-batch64-img/s $which $rate" >>"$results"
    done
    out=$("$bin" bench train --model vgg --steps 10 --warmup 2)
    rate=$(grep -oE '[0-9,.]+ images/s' <<<"$out" | tail -1 | tr -d ', ' | grep -oE '^[0-9.]+')
    echo "round $round $which vgg training ${rate} img/s"
    echo "vgg-train-img/s $which $rate" >>"$results"
  done
done

echo
printf '%-28s %12s %12s %8s\n' benchmark old new new/old
for name in $(cut -d' ' -f1 "$results" | sort -u); do
  median() { grep "^$name $1 " "$results" | cut -d' ' -f3 | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
  o=$(median old) n=$(median new)
  printf '%-28s %12s %12s %8.3f\n' "$name" "$o" "$n" "$(awk -v o="$o" -v n="$n" 'BEGIN { print n / o }')"
done
