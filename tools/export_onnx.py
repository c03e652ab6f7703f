#!/usr/bin/env python3
"""Export a Kiln checkpoint or weights file (safetensors) to ONNX, for side-by-side benchmarks with ONNX Runtime.

The graph takes NHWC float input [N, 28, 28, 1] like Kiln, transposes to NCHW for ONNX's Conv/MaxPool, and
transposes back before Flatten so the dense weights ([in, out], NHWC flatten order) apply unchanged.

    python3 tools/export_onnx.py runs/vgg/vgg-1884.safetensors vgg.onnx
"""
import json
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file


def main(src, dst):
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    network = json.loads(header["__metadata__"]["kiln.network"])
    tensors = load_file(src)
    inp = network["input"]
    nodes, inits = [], []
    x = "input"
    nodes.append(helper.make_node("Transpose", [x], ["nchw0"], perm=[0, 3, 1, 2]))
    x, nchw, conv, dense, k = "nchw0", True, 0, 0, 0

    def name(prefix):
        nonlocal k
        k += 1
        return f"{prefix}{k}"

    for layer in network["layers"]:
        kind, args = (layer, {}) if isinstance(layer, str) else next(iter(layer.items()))
        out = name(kind)
        if kind == "pad":
            pads = np.array([0, 0, args["top"], args["left"], 0, 0, args["bottom"], args["right"]], dtype=np.int64)
            inits.append(numpy_helper.from_array(pads, out + "_pads"))
            nodes.append(helper.make_node("Pad", [x, out + "_pads"], [out], mode="constant"))
        elif kind == "conv2d":
            conv += 1
            w = tensors[f"conv{conv}/weights"].transpose(3, 2, 0, 1).copy()  # HWIO -> OIHW
            inits += [numpy_helper.from_array(w, out + "_w"), numpy_helper.from_array(tensors[f"conv{conv}/bias"], out + "_b")]
            nodes.append(helper.make_node("Conv", [x, out + "_w", out + "_b"], [out], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [x], [out]))
        elif kind == "max_pool":
            nodes.append(helper.make_node("MaxPool", [x], [out], kernel_shape=[2, 2], strides=[2, 2]))
        elif kind == "flatten":
            if nchw:
                nodes.append(helper.make_node("Transpose", [x], [out + "_nhwc"], perm=[0, 2, 3, 1]))
                x, nchw = out + "_nhwc", False
            nodes.append(helper.make_node("Flatten", [x], [out], axis=1))
        elif kind == "dense":
            dense += 1
            inits += [
                numpy_helper.from_array(tensors[f"dense{dense}/weights"], out + "_w"),
                numpy_helper.from_array(tensors[f"dense{dense}/bias"], out + "_b"),
            ]
            nodes.append(helper.make_node("Gemm", [x, out + "_w", out + "_b"], [out]))
        else:
            sys.exit(f"{src}: layer kind {kind} has no ONNX mapping here")
        x = out
    nodes.append(helper.make_node("Identity", [x], ["logits"]))
    graph = helper.make_graph(
        nodes,
        network["name"],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", inp["h"], inp["w"], inp["c"]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", None])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # Opset 17 needs no newer IR than 8; a recent onnx package stamps its own (14), which onnxruntime-web
    # 1.30 refuses (it reads up to 13).
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    print(f"wrote {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
