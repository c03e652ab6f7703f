#!/usr/bin/env python3
"""Kiln's inference peers on the same weights: ONNX Runtime and LiteRT (TFLite), float and int8.

    python3 tools/peers.py make WEIGHTS.safetensors OUTDIR      # build and check the peer models
    python3 tools/peers.py bench OUTDIR [--threads T] [--runs R] # time them, printed like `kiln bench infer`

`make` reads a Kiln weights file (a checkpoint, or the file `kiln convert` reports packing), and writes to OUTDIR:
  model.onnx                  f32, from `kiln export` (the kiln binary in $KILN, else on PATH)
  model-ort-int8-dynamic.onnx quantize_dynamic (Conv -> ConvInteger, dense -> MatMulInteger; Gemm is first
                              split into MatMul + Add, since ORT's dynamic quantizer skips Gemm)
  model-ort-int8-qdq.onnx     quantize_static, QDQ, s8 activations and per-channel s8 weights, MinMax
                              calibration on 200 training digits
  model-f32.tflite            TensorFlow's converter on a tf.function built from the network JSON
  model-int8-dynamic.tflite   Optimize.DEFAULT, no representative data: int8 weights, float activations
  model-int8-full.tflite      int8 weights and activations (TFLITE_BUILTINS_INT8) calibrated on 200 training
                              digits; input and output stay float32 (quantize/dequantize ops at the ends)
  peers.json                  name, MFLOP per image, normalisation, for `bench`
and checks on 100 test digits that the float models' logits match ORT f32's within 1e-3 and how often the
quantized ones agree with ORT f32's top-1 class.

Every model takes NHWC float input made from 8-bit pixels as Kiln's runtime does: (pixel / 255 - mean) / std,
with mean and std from the network JSON's "normalization" (default 0 and 1). `bench` converts the digits
before timing (Kiln's `bench infer` times its conversion inside the run).

`bench` times batch 1 (median and p90 over R runs after 10 untimed) and batch 64 (5 batches after one
warm-up) on real test digits with T threads: ORT intra_op_num_threads=T; LiteRT Interpreter num_threads=T with
its default XNNPACK delegate. Unlike `kiln bench infer --threads T`, whose batch 1 is always one thread and
whose batch 64 runs T independent sessions, a peer runs one session with T intra-op threads for both.
Needs: pip install onnxruntime onnx safetensors numpy (make also tensorflow-cpu; bench also ai-edge-litert).
"""
import argparse
import gzip
import json
import os
import struct
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "mnist")
BATCH, BATCHES, WARMUP = 64, 5, 10
ORT_MODELS = [("ort-f32", "model.onnx"), ("ort-int8-dynamic", "model-ort-int8-dynamic.onnx"),
              ("ort-int8-qdq", "model-ort-int8-qdq.onnx")]
TFLITE_MODELS = [("litert-f32", "model-f32.tflite"), ("litert-int8-dynamic", "model-int8-dynamic.tflite"),
                 ("litert-int8-full", "model-int8-full.tflite")]


def digits(name, count):
    """The first `count` 8-bit images of an MNIST idx file, [count, 28, 28, 1]."""
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, offset=16)[: count * 784].reshape(count, 28, 28, 1)


def normalize(pixels, norm):
    return ((pixels.astype(np.float32) / np.float32(255.0) - np.float32(norm["mean"])) / np.float32(norm["std"]))


def read_network(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    network = json.loads(header["__metadata__"]["kiln.network"])
    norm = {"mean": 0.0, "std": 1.0, **network.get("normalization", {})}
    return network, norm


def layers(network):
    for layer in network["layers"]:
        yield (layer, {}) if isinstance(layer, str) else next(iter(layer.items()))


def forward_flops(network):
    """As kiln-core's Plan::forward_flops: 2 x weights x output pixels for conv2d, 2 x weights for dense."""
    h, w, c = network["input"]["h"], network["input"]["w"], network["input"]["c"]
    flops = 0
    for kind, args in layers(network):
        if kind == "pad":
            h, w = h + args["top"] + args["bottom"], w + args["left"] + args["right"]
        elif kind == "conv2d":
            flops += 2 * 9 * c * args["filters"] * h * w
            c = args["filters"]
        elif kind == "max_pool":
            h, w = h // 2, w // 2
        elif kind == "flatten":
            h, w, c = 1, 1, h * w * c
        elif kind == "dense":
            flops += 2 * c * args["units"]
            c = args["units"]
    return flops


# --- make -----------------------------------------------------------------------------------------------------


def gemm_to_matmul(src, dst):
    """Gemm(x, W, b) -> Add(MatMul(x, W), b), so that quantize_dynamic reaches the dense layers too."""
    import onnx
    from onnx import helper

    model = onnx.load(src)
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and not attrs.get("transA") and not attrs.get("transB") and \
                attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
            x, w, b = node.input
            mid = node.output[0] + "_mm"
            nodes += [helper.make_node("MatMul", [x, w], [mid]), helper.make_node("Add", [mid, b], list(node.output))]
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, dst)


def tf_model(network, tensors):
    """The network as a tf.function on NHWC float input, weights as constants from the same file."""
    import tensorflow as tf

    steps, conv, dense = [], 0, 0
    for kind, args in layers(network):
        if kind == "pad":
            steps.append(("pad", [[0, 0], [args["top"], args["bottom"]], [args["left"], args["right"]], [0, 0]]))
        elif kind == "conv2d":
            conv += 1
            steps.append(("conv2d", tf.constant(tensors[f"conv{conv}/weights"]), tf.constant(tensors[f"conv{conv}/bias"])))
        elif kind == "dense":
            dense += 1
            steps.append(("dense", tf.constant(tensors[f"dense{dense}/weights"]), tf.constant(tensors[f"dense{dense}/bias"])))
        elif kind in ("relu", "max_pool", "flatten"):
            steps.append((kind,))
        else:
            sys.exit(f"layer kind {kind} has no TensorFlow mapping here")
    inp = network["input"]

    @tf.function(input_signature=[tf.TensorSpec([None, inp["h"], inp["w"], inp["c"]], tf.float32, name="input")])
    def forward(x):
        for step in steps:
            if step[0] == "pad":
                x = tf.pad(x, step[1])
            elif step[0] == "conv2d":
                x = tf.nn.bias_add(tf.nn.conv2d(x, step[1], strides=1, padding="SAME"), step[2])
            elif step[0] == "dense":
                x = tf.nn.bias_add(tf.matmul(x, step[1]), step[2])
            elif step[0] == "relu":
                x = tf.nn.relu(x)
            elif step[0] == "max_pool":
                x = tf.nn.max_pool2d(x, 2, 2, padding="VALID")
            elif step[0] == "flatten":
                x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])  # NHWC order, as Kiln's dense weights
        return tf.identity(x, name="logits")

    return forward


def tflite_run(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=os.cpu_count())
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(i["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(i["index"], x)
    interp.invoke()
    return interp.get_tensor(o["index"])


def make(weights, outdir):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from safetensors.numpy import load_file

    import subprocess

    os.makedirs(outdir, exist_ok=True)
    network, norm = read_network(weights)
    calib = normalize(digits("train-images-idx3-ubyte.gz", 200), norm)
    test = normalize(digits("t10k-images-idx3-ubyte.gz", 100), norm)
    p = lambda name: os.path.join(outdir, name)
    print(f"{network['name']}: {forward_flops(network) / 1e6:.1f} MFLOP per image, normalization "
          f"mean {norm['mean']} std {norm['std']}")

    # ONNX: f32, dynamic int8, static QDQ int8.
    subprocess.run([os.environ.get("KILN", "kiln"), "export", weights, "-o", p("model.onnx")], check=True,
                   stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        gemm_to_matmul(p("model.onnx"), os.path.join(tmp, "matmul.onnx"))
        quantize_dynamic(os.path.join(tmp, "matmul.onnx"), p("model-ort-int8-dynamic.onnx"), weight_type=QuantType.QInt8)
    print(f"wrote {p('model-ort-int8-dynamic.onnx')}")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib[i : i + 20]} for i in range(0, len(calib), 20)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(p("model.onnx"), p("model-ort-int8-qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
    print(f"wrote {p('model-ort-int8-qdq.onnx')}")

    # TFLite from the same weights.
    import tensorflow as tf

    tensors = {k: v for k, v in load_file(weights).items() if "/Adam" not in k}
    forward = tf_model(network, tensors)
    concrete = forward.get_concrete_function()

    def convert(name, setup):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], forward)
        setup(converter)
        with open(p(name), "wb") as f:
            f.write(converter.convert())
        print(f"wrote {p(name)}")

    def full_int8(c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # float32 input and output kept

    convert("model-f32.tflite", lambda c: None)
    convert("model-int8-dynamic.tflite", lambda c: setattr(c, "optimizations", [tf.lite.Optimize.DEFAULT]))
    convert("model-int8-full.tflite", full_int8)

    # Checks on 100 test digits against ORT f32.
    run_ort = lambda path: ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": test})[0]
    ref = run_ort(p("model.onnx"))
    top = ref.argmax(1)
    print(f"check on {len(test)} test digits vs ORT f32 (its logits span {ref.min():.4g}..{ref.max():.4g}):")
    ok = True
    for name, logits in [("tensorflow f32 (tf.function)", forward(tf.constant(test)).numpy()),
                         ("litert-f32", tflite_run(p("model-f32.tflite"), test))]:
        diff = float(np.abs(logits - ref).max())
        ok &= diff <= 1e-3
        print(f"  {name:<28} max abs diff {diff:.3g} {'ok' if diff <= 1e-3 else 'OVER 1e-3'}, "
              f"top-1 agreement {(logits.argmax(1) == top).mean() * 100:.0f}%")
    for name, logits in [("ort-int8-dynamic", run_ort(p("model-ort-int8-dynamic.onnx"))),
                         ("ort-int8-qdq", run_ort(p("model-ort-int8-qdq.onnx"))),
                         ("litert-int8-dynamic", tflite_run(p("model-int8-dynamic.tflite"), test)),
                         ("litert-int8-full", tflite_run(p("model-int8-full.tflite"), test))]:
        print(f"  {name:<28} max abs diff {float(np.abs(logits - ref).max()):.3g}, "
              f"top-1 agreement {(logits.argmax(1) == top).mean() * 100:.0f}%")
    with open(p("peers.json"), "w") as f:
        json.dump({"name": network["name"], "flops": forward_flops(network), "normalization": norm}, f)
    if not ok:
        sys.exit("a float model's logits differ from ORT f32's by more than 1e-3")


# --- bench ----------------------------------------------------------------------------------------------------


def timed(run, images, runs):
    """Batch-1 median and p90 (s) over `runs` after WARMUP untimed, then batch-64 images/s."""
    times = []
    for r in range(WARMUP + runs):
        x = images[r % 64 : r % 64 + 1]
        t0 = time.perf_counter()
        run(x)
        if r >= WARMUP:
            times.append(time.perf_counter() - t0)
    times.sort()
    pick = lambda q: times[round((len(times) - 1) * q)]
    return pick(0.5), pick(0.9), len(times)


def throughput(run, images):
    run(images)
    t0 = time.perf_counter()
    for _ in range(BATCHES):
        run(images)
    return BATCHES * len(images) / (time.perf_counter() - t0)


def report(meta, variant, path, engine, threads, lat, ips):
    flops = meta["flops"]
    median, p90, n = lat
    s = "" if threads == 1 else "s"
    print(f"{meta['name']} ({variant}), {os.path.getsize(path):,} bytes, {flops / 1e6:.1f} MFLOP per image, {engine}")
    print(f"{f'batch 1, {threads} thread{s}:':<21} median {median * 1e3:.3f} ms, p90 {p90 * 1e3:.3f} ms over {n} runs "
          f"({flops / median / 1e9:.1f} GFLOP/s)")
    print(f"batch {BATCH}, {threads} thread{s}: {ips:.1f} images/s ({ips * flops / 1e9:.1f} GFLOP/s), {BATCHES} batches")
    sys.stdout.flush()


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8"]
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/vnni/amx"


def delegate_info(interp):
    """What LiteRT ran the model with, from its op list: a DELEGATE node per XNNPACK partition."""
    try:
        parts = sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())
    except Exception:  # a private call; keep the bench going without it
        return "default delegate"
    return f"XNNPACK, {parts} delegate partition{'s' if parts != 1 else ''}" if parts else "no delegate (builtin kernels)"


def bench(outdir, threads, runs):
    import onnxruntime as ort

    with open(os.path.join(outdir, "peers.json")) as f:
        meta = json.load(f)
    pixels = digits("t10k-images-idx3-ubyte.gz", BATCH)
    images = normalize(pixels, meta["normalization"])
    print(f"peers: CPU flags {cpu_flags()}; ORT {ort.__version__} CPUExecutionProvider (MLAS picks its kernels "
          f"from CPUID at run time)", end="")
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter
        print(f"; LiteRT {getattr(ai_edge_litert, '__version__', '?')} (default delegate XNNPACK)")
    except ImportError:
        Interpreter = None
        print("; LiteRT not installed (pip install ai-edge-litert)")

    for variant, name in ORT_MODELS:
        path = os.path.join(outdir, name)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        run = lambda x: session.run(None, {"input": x})
        report(meta, variant, path, f"ORT {ort.__version__} CPU", threads, timed(run, images, runs), throughput(run, images))
        del session, run  # its idle intra-op threads must not spin beside the next engine

    if Interpreter is None:
        return
    for variant, name in TFLITE_MODELS:
        path = os.path.join(outdir, name)
        runners = {}
        for batch in (1, BATCH):
            interp = Interpreter(model_path=path, num_threads=threads)
            i, o = interp.get_input_details()[0], interp.get_output_details()[0]
            interp.resize_tensor_input(i["index"], [batch, 28, 28, 1])
            interp.allocate_tensors()

            def run(x, interp=interp, i=i["index"], o=o["index"]):
                interp.set_tensor(i, x)
                interp.invoke()
                return interp.get_tensor(o)

            runners[batch] = run
        report(meta, variant, path, f"LiteRT {delegate_info(interp)}", threads, timed(runners[1], images, runs),
               throughput(runners[BATCH], images))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="build the peer models from a Kiln weights file")
    m.add_argument("weights")
    m.add_argument("outdir")
    b = sub.add_parser("bench", help="time the peer models in OUTDIR")
    b.add_argument("outdir")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    if args.cmd == "make":
        make(args.weights, args.outdir)
    else:
        bench(args.outdir, args.threads, args.runs)


if __name__ == "__main__":
    main()
