#!/usr/bin/env python3
"""ONNX Runtime's side of `tools/bench_infer_vs_ort.sh`: batch-1 latency (median, p90) and batch-64 throughput
on real test digits, one intra-op thread, printed like `kiln bench infer`.

    python3 tools/bench_ort.py model.onnx [runs] [threads]
"""
import gzip
import sys
import time

import numpy as np
import onnxruntime as ort


def main(path, runs=200, threads=1):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    raw = gzip.open("data/mnist/t10k-images-idx3-ubyte.gz").read()[16:]
    digits = np.frombuffer(raw, dtype=np.uint8)[: 64 * 784].reshape(64, 28, 28, 1).astype(np.float32) / 255.0
    times = []
    for r in range(10 + runs):
        x = digits[r % 64 : r % 64 + 1]
        t0 = time.perf_counter()
        session.run(None, {"input": x})
        if r >= 10:
            times.append(time.perf_counter() - t0)
    times.sort()
    pick = lambda q: times[round((len(times) - 1) * q)]
    print(f"ORT {ort.__version__}, {threads} thread(s)")
    print(f"batch 1:  median {pick(0.5) * 1e3:.3f} ms, p90 {pick(0.9) * 1e3:.3f} ms over {runs} runs")
    session.run(None, {"input": digits})
    t0 = time.perf_counter()
    for _ in range(5):
        session.run(None, {"input": digits})
    print(f"batch 64: {5 * 64 / (time.perf_counter() - t0):.1f} images/s")


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    main(args[0], *(int(a) for a in args[1:]))
