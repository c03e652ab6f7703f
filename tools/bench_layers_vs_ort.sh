#!/usr/bin/env bash
# Batch-1 latency on one thread, Kiln against ONNX Runtime on the same ONNX file, interleaved: each round
# times Kiln (`kiln bench infer` on the file's f32 import) and then ONNX Runtime (intra_op_num_threads=1,
# 10 warm-up runs, median of 200 on real test digits).
#   tools/bench_layers_vs_ort.sh [ROUNDS] FILE.onnx...      (default: LeNet-5 and the PyTorch example)
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
rounds=${1:-3}
shift || true
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(tests/fixtures/layers/lenet5.tf2onnx.onnx tests/fixtures/layers/pytorch_example.nchw.onnx)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for f in "${files[@]}"; do
  name=$(basename "$f" .onnx)
  "$KILN" convert "$f" -o "$tmp/$name.kiln" --quant f32 > /dev/null
  for r in $(seq "$rounds"); do
    kiln_ms=$("$KILN" bench infer "$tmp/$name.kiln" | sed -n 's/^batch 1, 1 thread: *median \([0-9.]*\) ms.*/\1/p')
    ort_ms=$(python3 - "$f" <<'PY'
import gzip, os, statistics, sys, time
import numpy as np, onnxruntime as ort
path = sys.argv[1]
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
inp = s.get_inputs()[0]
raw = gzip.open("data/mnist/t10k-images-idx3-ubyte.gz").read()[16:]
digits = np.frombuffer(raw, np.uint8).reshape(-1, 28, 28).astype(np.float32) / 255.0
shape = [1] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
xs = [digits[i].reshape(shape) for i in range(210)]
for x in xs[:10]: s.run(None, {inp.name: x})
times = []
for x in xs[10:]:
    t = time.perf_counter(); s.run(None, {inp.name: x}); times.append(time.perf_counter() - t)
print(f"{statistics.median(times) * 1e3:.3f}")
PY
)
    ratio=$(python3 -c "print(f'{$kiln_ms / $ort_ms:.2f}')")
    echo "$name round $r: Kiln $kiln_ms ms, ONNX Runtime $ort_ms ms, Kiln / ORT = $ratio"
  done
done
