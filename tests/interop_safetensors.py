#!/usr/bin/env python3
"""Reads a Kiln checkpoint with the Python `safetensors` package (numpy) and checks it against what Kiln saved.

Usage: interop_safetensors.py CHECKPOINT EXPECTED
EXPECTED has one line per tensor, written by tests/cli.rs from Kiln's own reader:
    name|d0,d1,...|sum|v0,v1,v2,v3
"""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def main():
    path, expected_path = sys.argv[1], sys.argv[2]
    tensors = load_file(path)
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
    network = json.loads(metadata["kiln.network"])
    assert network["name"], "the network description has a name"
    expected = {}
    with open(expected_path) as f:
        for line in f:
            name, dims, total, first = line.rstrip("\n").split("|")
            expected[name] = ([int(d) for d in dims.split(",")], float(total), [float(v) for v in first.split(",")])
    assert set(tensors) == set(expected), f"names differ: {sorted(set(tensors) ^ set(expected))}"
    for name, (dims, total, first) in expected.items():
        t = tensors[name]
        assert t.dtype == np.float32, f"{name}: dtype {t.dtype}"
        assert list(t.shape) == dims, f"{name}: shape {t.shape}, kiln saved {dims}"
        flat = t.reshape(-1)
        assert np.array_equal(flat[: len(first)], np.array(first, np.float32)), f"{name}: first values differ"
        got = float(flat.astype(np.float64).sum())
        assert abs(got - total) <= 1e-6 * max(1.0, abs(total)), f"{name}: sum {got}, kiln {total}"
    print(f"ok: {len(tensors)} tensors of the {network['name']} checkpoint read by python safetensors agree with kiln")


if __name__ == "__main__":
    main()
