#!/usr/bin/env bash
# Kiln's CPU runtime against ONNX Runtime on the same weights, interleaved, in one go on one machine.
#   tools/bench_infer_vs_ort.sh CHECKPOINT [ROUNDS]
# Needs: pip install onnxruntime onnx safetensors numpy. Packs CHECKPOINT as f32, int8, int4 and mixed,
# exports it to ONNX (tools/export_onnx.py), then alternates `kiln bench infer --threads 1` and ORT with one
# intra-op thread, ROUNDS times (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:?usage: tools/bench_infer_vs_ort.sh CHECKPOINT [ROUNDS]}
rounds=${2:-2}
out=$(mktemp -d /tmp/kiln-vs-ort.XXXXXX)
cargo build --release -q -p kiln
kiln=${CARGO_TARGET_DIR:-target}/release/kiln
for q in f32 int8 int4 mixed; do
  "$kiln" convert "$ckpt" -o "$out/model-$q.kiln" --quant "$q" --no-eval >/dev/null
done
file=$("$kiln" convert "$ckpt" -o "$out/probe.kiln" --quant f32 --no-eval | sed -n 's/^Packed .* from \(.*\) in .*/\1/p')
python3 tools/export_onnx.py "$file" "$out/model.onnx" >/dev/null
lscpu | grep -E "Model name|^CPU\(s\)|MHz" || true
for r in $(seq "$rounds"); do
  echo "== round $r"
  python3 tools/bench_ort.py "$out/model.onnx" 200 1
  for q in f32 int8 int4 mixed; do
    "$kiln" bench infer "$out/model-$q.kiln" --threads 1
  done
done
rm -rf "$out"
