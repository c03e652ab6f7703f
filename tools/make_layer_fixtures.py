#!/usr/bin/env python3
"""Fixtures for the layers beyond the 3x3-same conv, made by the real frameworks (Keras 3, tf2onnx, onnx), and
ONNX's own node conformance cases for the ops Kiln's ONNX importer maps.

    python3 tools/make_layer_fixtures.py [OUTDIR]              # models (default tests/fixtures/layers), then
                                                               # the node cases (tests/fixtures/onnx-node)
    python3 tools/make_layer_fixtures.py --models-only [OUTDIR]
    python3 tools/make_layer_fixtures.py --node-only [--node-out DIR]

Each model is a small MNIST network built with Keras (input pixels / 255 as [N, 28, 28, 1], a final linear Dense:
logits, trained with from_logits=True), trained briefly with Adam on the bundled 10,000 training digits (fixed
seeds), exported with tf2onnx (opset 13, tf2onnx.convert.from_keras, Dropout gone as in inference):

  lenet5             LeNet-5: conv 6 5x5 same, tanh, avg pool 2, conv 16 5x5 valid, tanh, avg pool 2, dense
                     120 tanh, dense 84 tanh, dense 10
  pytorch_example    PyTorch's examples/mnist/main.py network: conv 32 3x3 valid, relu, conv 64 3x3 valid, relu,
                     max pool 2, dropout 0.25, flatten 9216, fc 128, relu, dropout 0.5, fc 10; two files:
                       pytorch_example.tf2onnx.onnx  tf2onnx: NHWC input
                       pytorch_example.nchw.onnx     the same weights written with onnx.helper the way
                                                     torch.onnx.export writes this model in eval mode (torch does
                                                     not install here): NCHW input, Conv OIHW with bias, MaxPool,
                                                     Flatten (C,H,W order: fc1's rows permuted from Keras' H,W,C),
                                                     Gemm transB=1, no Dropout
  keras_convnet      keras.io's "Simple MNIST convnet": conv 32 3x3 relu, max pool 2, conv 64 3x3 relu, max pool 2
                     (11x11 -> 5x5), flatten, dropout 0.5, dense 10
  bn_gap             conv 16 3x3 same no bias, BN, relu; conv 32 3x3 stride 2 same no bias, BN, relu; conv 64
                     3x3 stride 2 same, BN, relu; global average pool; dense 10; two files:
                       bn_gap.tf2onnx.onnx   from_keras: Keras 3 computes BN as tf.nn.batch_normalization's
                                             arithmetic; when tf2onnx freezes the graph TensorFlow folds it into
                                             the bias-free convs (with or without tf2onnx's optimizers); after
                                             conv3 (with bias) it stays a Mul and an Add
                       bn_gap.unfused.onnx   the trained BN layers applied with tf.compat.v1.nn.fused_batch_norm
                                             (FusedBatchNormV3), tf2onnx's optimizers off (they would fold it):
                                             explicit BatchNormalization nodes, Transposes around every op
  activations        zero pad ((1,0),(1,0)), conv 8 3x3 stride 2 valid, leaky relu 0.1; conv 16 5x5 same, relu6,
                     BN (after the activation: cannot fold into the conv); conv 16 1x1 sigmoid; max pool 3 stride
                     2 same; average pool 3 stride 1 same (padding excluded from the average); global average
                     pool; dense 10; two files:
                       activations.tf2onnx.onnx    from_keras: the BN as Mul, Add
                       activations.batchnorm.onnx  the BN as FusedBatchNormV3, tf2onnx's optimizers on: a
                                                   BatchNormalization node after the Clip (nothing to fold into)

Beside each ONNX file: `<file stem>.ort-logits.f32`, ONNX Runtime's logits on the full 10,000-digit test set in
the file's layout, little-endian float32 [10000, 10]. (The Keras logits and the tf2onnx copy of the PyTorch
example are compared, then deleted, to keep the fixtures under 8 MB.) `provenance.json` records versions, seeds, epochs, accuracies, each ONNX file's op counts,
inputs and logits output, and the Keras-vs-ORT differences.

Then ONNX's node conformance cases (onnx.backend.test.case.node.collect_testcases) for the ops in NODE_OPS, each
a single-node model with float32 data input, in `<node-out>/<case>/`: model.onnx (every graph input after the
first made an initializer holding the case's value), input.f32 (the first input), expected.f32 (the first
output), case.json (op, shapes, attributes, opset, initializers, ONNX Runtime's check); manifest.json lists
them per op, and the cases skipped, with the reason. Training-mode variants (Dropout with training_mode,
BatchNormalization with its extra outputs) are kept: the importer must refuse them.
"""
import argparse
import collections
import gzip
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # same numbers run to run
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "mnist")
if not os.path.isdir(DATA):
    DATA = os.path.join(HERE, "..", "..", "shared", "data", "mnist")
OPSET = 13
NODE_OPS = ["Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "Tanh",
            "Sigmoid", "Clip", "LeakyRelu", "Relu", "Dropout", "Flatten", "Gemm", "MatMul", "Add", "Pad"]
NODE_CASE_LIMIT = 200 * 1024


def load():
    """The bundled digits as [n, 28, 28, 1] floats in [0, 1] and their labels (make_import_fixtures' reader)."""
    import make_import_fixtures
    make_import_fixtures.DATA = DATA
    train_x, train_y, test_x, test_y = make_import_fixtures.load()
    return train_x[..., None], train_y, test_x[..., None], test_y


def build(keras, name):
    """The Keras model for `name`: input [N, 28, 28, 1], output `logits` (a final linear Dense)."""
    L = keras.layers
    x = keras.Input((28, 28, 1), name="input")
    if name == "lenet5":
        h = L.Conv2D(6, 5, padding="same", activation="tanh", name="conv1")(x)
        h = L.AveragePooling2D(2, name="pool1")(h)
        h = L.Conv2D(16, 5, padding="valid", activation="tanh", name="conv2")(h)
        h = L.AveragePooling2D(2, name="pool2")(h)
        h = L.Flatten(name="flatten")(h)
        h = L.Dense(120, activation="tanh", name="fc1")(h)
        h = L.Dense(84, activation="tanh", name="fc2")(h)
    elif name == "pytorch_example":
        h = L.Conv2D(32, 3, activation="relu", name="conv1")(x)
        h = L.Conv2D(64, 3, activation="relu", name="conv2")(h)
        h = L.MaxPooling2D(2, name="pool")(h)
        h = L.Dropout(0.25, name="dropout1")(h)
        h = L.Flatten(name="flatten")(h)
        h = L.Dense(128, activation="relu", name="fc1")(h)
        h = L.Dropout(0.5, name="dropout2")(h)
    elif name == "keras_convnet":
        h = L.Conv2D(32, 3, activation="relu", name="conv1")(x)
        h = L.MaxPooling2D(2, name="pool1")(h)
        h = L.Conv2D(64, 3, activation="relu", name="conv2")(h)
        h = L.MaxPooling2D(2, name="pool2")(h)
        h = L.Flatten(name="flatten")(h)
        h = L.Dropout(0.5, name="dropout")(h)
    elif name == "bn_gap":
        h = x
        for i, (filters, stride, bias) in enumerate([(16, 1, False), (32, 2, False), (64, 2, True)], 1):
            h = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=bias, name=f"conv{i}")(h)
            h = L.BatchNormalization(momentum=0.9, name=f"bn{i}")(h)
            h = L.ReLU(name=f"relu{i}")(h)
        h = L.GlobalAveragePooling2D(name="gap")(h)
    elif name == "activations":
        h = L.ZeroPadding2D(((1, 0), (1, 0)), name="pad")(x)
        h = L.Conv2D(8, 3, strides=2, padding="valid", name="conv1")(h)
        h = L.LeakyReLU(negative_slope=0.1, name="leaky")(h)
        h = L.Conv2D(16, 5, padding="same", name="conv2")(h)
        h = L.ReLU(max_value=6.0, name="relu6")(h)
        h = L.BatchNormalization(momentum=0.9, name="bn")(h)
        h = L.Conv2D(16, 1, activation="sigmoid", name="conv3")(h)
        h = L.MaxPooling2D(3, strides=2, padding="same", name="maxpool")(h)
        h = L.AveragePooling2D(3, strides=1, padding="same", name="avgpool")(h)
        h = L.GlobalAveragePooling2D(name="gap")(h)
    else:
        raise ValueError(name)
    return keras.Model(x, L.Dense(10, name="logits")(h), name=name)


def ort_logits(path, images):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + 500]})[0] for i in range(0, len(images), 500)])


def describe(path):
    """Op counts, inputs and outputs of an ONNX file, for provenance.json."""
    import onnx

    model = onnx.load(path)
    g = model.graph
    inits = {t.name for t in g.initializer}
    shape = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    return {"ops": dict(sorted(collections.Counter(n.op_type for n in g.node).items())),
            "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "inputs": {v.name: shape(v) for v in g.input if v.name not in inits},
            "logits_output": g.output[0].name, "outputs": {v.name: shape(v) for v in g.output}}


def tf2onnx_file(tf, source, path, optimizers=None):
    """tf2onnx's ONNX file for a Keras model (from_keras) or a tf.function (from_function); `optimizers={}` turns
    tf2onnx's ONNX optimizers off (from_function has no such argument: its steps are repeated here with it)."""
    import tf2onnx

    spec = (tf.TensorSpec((None, 28, 28, 1), tf.float32, name="input"),)
    if not isinstance(source, tf.types.experimental.GenericFunction):
        tf2onnx.convert.from_keras(source, input_signature=spec, opset=OPSET, output_path=path, optimizers=optimizers)
    elif optimizers is None:
        tf2onnx.convert.from_function(source, input_signature=spec, opset=OPSET, output_path=path)
    else:
        from tf2onnx.convert import _convert_common, tensor_names_from_structed
        from tf2onnx.tf_loader import from_function

        concrete = source.get_concrete_function(*spec)
        inputs = [t.name for t in concrete.inputs if t.dtype != tf.dtypes.resource]
        outputs = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
        with tf.device("/cpu:0"):
            _convert_common(from_function(concrete, inputs, outputs), name=concrete.name, continue_on_error=True,
                            opset=OPSET, input_names=inputs, output_names=outputs, optimizers=optimizers,
                            tensors_to_rename=tensor_names_from_structed(concrete, inputs, outputs),
                            output_path=path)


def nchw_pytorch_example(model, path):
    """The Keras pytorch_example's weights as torch.onnx.export writes the PyTorch network in eval mode."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = {layer.name: [v.numpy() for v in layer.weights] for layer in model.layers if layer.weights}
    oihw = lambda k: np.ascontiguousarray(k.transpose(3, 2, 0, 1))  # Keras HWIO -> OIHW
    # Keras flattens [12, 12, 64] in H,W,C order, torch in C,H,W: fc1.weight[o, c*144 + h*12 + w] = K[(h*12 + w)*64 + c, o]
    fc1 = np.ascontiguousarray(w["fc1"][0].reshape(12, 12, 64, 128).transpose(3, 2, 0, 1).reshape(128, 9216))
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("conv1.weight", oihw(w["conv1"][0])), ("conv1.bias", w["conv1"][1]),
        ("conv2.weight", oihw(w["conv2"][0])), ("conv2.bias", w["conv2"][1]),
        ("fc1.weight", fc1), ("fc1.bias", w["fc1"][1]),
        ("fc2.weight", np.ascontiguousarray(w["logits"][0].T)), ("fc2.bias", w["logits"][1])]]
    conv = dict(dilations=[1, 1], group=1, kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[1, 1])
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["/conv1/Conv_output_0"], "/conv1/Conv", **conv),
        helper.make_node("Relu", ["/conv1/Conv_output_0"], ["/Relu_output_0"], "/Relu"),
        helper.make_node("Conv", ["/Relu_output_0", "conv2.weight", "conv2.bias"], ["/conv2/Conv_output_0"],
                         "/conv2/Conv", **conv),
        helper.make_node("Relu", ["/conv2/Conv_output_0"], ["/Relu_1_output_0"], "/Relu_1"),
        helper.make_node("MaxPool", ["/Relu_1_output_0"], ["/MaxPool_output_0"], "/MaxPool",
                         ceil_mode=0, dilations=[1, 1], kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2]),
        helper.make_node("Flatten", ["/MaxPool_output_0"], ["/Flatten_output_0"], "/Flatten", axis=1),
        helper.make_node("Gemm", ["/Flatten_output_0", "fc1.weight", "fc1.bias"], ["/fc1/Gemm_output_0"], "/fc1/Gemm",
                         alpha=1.0, beta=1.0, transB=1),
        helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/Relu_2_output_0"], "/Relu_2"),
        helper.make_node("Gemm", ["/Relu_2_output_0", "fc2.weight", "fc2.bias"], ["logits"], "/fc2/Gemm",
                         alpha=1.0, beta=1.0, transB=1),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", 10])], inits)
    onnx_model = helper.make_model(graph, producer_name="pytorch",
                                   producer_version="2.5.0 (layout of; written by onnx.helper)",
                                   opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, path)


def fused_bn_function(tf, model):
    """`model`'s inference function with every BatchNormalization layer applied as FusedBatchNormV3."""
    import keras

    @tf.function
    def fn(x):
        h = x
        for layer in model.layers[1:]:
            if isinstance(layer, keras.layers.BatchNormalization):
                h, _, _ = tf.compat.v1.nn.fused_batch_norm(
                    h, layer.gamma, layer.beta, mean=layer.moving_mean, variance=layer.moving_variance,
                    epsilon=layer.epsilon, data_format="NHWC", is_training=False)
            else:
                h = layer(h, training=False)
        return {"logits": h}  # the ONNX output's name
    return fn


def make_models(out, names, data, provenance):
    import tensorflow as tf
    import keras

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    train_x, train_y, test_x, test_y = data
    os.makedirs(out, exist_ok=True)
    # (name, seed, epochs, batch size, learning rate)
    jobs = [("lenet5", 11, 2, 64, 2e-3), ("pytorch_example", 12, 1, 64, 1e-3), ("keras_convnet", 13, 2, 128, 1e-3),
            ("bn_gap", 14, 2, 64, 2e-3), ("activations", 15, 3, 64, 1e-2)]
    for name, seed, epochs, batch, lr in jobs:
        if names and name not in names:
            continue
        start = time.time()
        keras.utils.set_random_seed(seed)
        model = build(keras, name)
        model.compile(optimizer=keras.optimizers.Adam(lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        model.fit(train_x, train_y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
        train_acc = float((model.predict(train_x, batch_size=500, verbose=0).argmax(1) == train_y).mean())
        logits = model.predict(test_x, batch_size=500, verbose=0).astype("<f4")
        logits.tofile(os.path.join(out, f"{name}.keras-logits.f32"))
        test_acc = float((logits.argmax(1) == test_y).mean())
        entry = {"seed": seed, "epochs": epochs, "batch_size": batch, "optimizer": "adam", "learning_rate": lr,
                 "loss": "sparse categorical cross-entropy, from_logits=True",
                 "train_accuracy": round(train_acc, 4), "test_accuracy": round(test_acc, 4),
                 "keras_logits": f"{name}.keras-logits.f32", "onnx": {}}
        files = [(f"{name}.tf2onnx.onnx", lambda p: tf2onnx_file(tf, model, p), "NHWC")]
        if name == "pytorch_example":
            files.append((f"{name}.nchw.onnx", lambda p: nchw_pytorch_example(model, p), "NCHW"))
        if name == "bn_gap":
            # Keras 3 computes BN as tf.nn.batch_normalization's arithmetic, which TensorFlow folds into the conv
            # when tf2onnx freezes the graph (so from_keras(..., optimizers={}) has no BatchNormalization either);
            # FusedBatchNormV3 becomes ONNX BatchNormalization, which tf2onnx's optimizers would fold in turn.
            files.append((f"{name}.unfused.onnx", lambda p: tf2onnx_file(tf, fused_bn_function(tf, model), p, {}),
                          "NHWC"))
        if name == "activations":
            # The same with FusedBatchNormV3 and tf2onnx's optimizers on: the BN after the ReLU6 cannot fold.
            files.append((f"{name}.batchnorm.onnx", lambda p: tf2onnx_file(tf, fused_bn_function(tf, model), p),
                          "NHWC"))
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                entry.setdefault("batchnorm", {})[layer.name] = {
                    k: [round(float(v.numpy().min()), 4), round(float(v.numpy().max()), 4)]
                    for k, v in [("gamma", layer.gamma), ("beta", layer.beta), ("moving_mean", layer.moving_mean),
                                 ("moving_variance", layer.moving_variance)]}
        for filename, write, layout in files:
            path = os.path.join(out, filename)
            write(path)
            images = test_x.transpose(0, 3, 1, 2).copy() if layout == "NCHW" else test_x
            ort = ort_logits(path, images).astype("<f4")
            stem = filename[:-len(".onnx")]
            ort.tofile(os.path.join(out, f"{stem}.ort-logits.f32"))
            diff = float(np.abs(ort - logits).max())
            entry["onnx"][filename] = dict(describe(path), layout=layout, ort_logits=f"{stem}.ort-logits.f32",
                                           ort_test_accuracy=round(float((ort.argmax(1) == test_y).mean()), 4),
                                           max_abs_diff_vs_keras=diff)
            print(f"  {filename}: ORT vs Keras max abs logit diff {diff:.2e}; ops {entry['onnx'][filename]['ops']}")
        if name == "pytorch_example":
            a, b = (np.fromfile(os.path.join(out, f"{name}.{k}.ort-logits.f32"), "<f4") for k in ("tf2onnx", "nchw"))
            entry["max_abs_diff_tf2onnx_vs_nchw"] = float(np.abs(a - b).max())
            print(f"  tf2onnx vs nchw ORT max abs logit diff {entry['max_abs_diff_tf2onnx_vs_nchw']:.2e}")
        # Kept out of the repository (the fixtures stay under 8 MB): the Keras logits, whose difference from ONNX
        # Runtime's is recorded above, and the tf2onnx copy of the PyTorch example (4.8 MB; the NCHW file, the
        # way torch exports it, is the one the tests read).
        os.remove(os.path.join(out, f"{name}.keras-logits.f32"))
        entry["keras_logits"] = "not committed (max_abs_diff_vs_keras records the comparison)"
        if name == "pytorch_example":
            for extra in (f"{name}.tf2onnx.onnx", f"{name}.tf2onnx.ort-logits.f32"):
                os.remove(os.path.join(out, extra))
            entry["onnx"][f"{name}.tf2onnx.onnx"]["committed"] = False
        provenance["models"][name] = entry
        print(f"{name}: {epochs} epoch(s), train accuracy {train_acc * 100:.2f}%, test accuracy {test_acc * 100:.2f}%, "
              f"{time.time() - start:.1f} s")


def json_value(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    if isinstance(v, (np.generic,)):
        return v.item()
    if hasattr(v, "dims") and hasattr(v, "data_type"):  # a TensorProto attribute
        from onnx import numpy_helper
        return numpy_helper.to_array(v).tolist()
    if hasattr(v, "node"):  # a graph attribute
        return f"<graph {v.name}>"
    return v


def make_node_cases(out):
    """ONNX's node conformance cases for NODE_OPS, their non-data inputs made initializers."""
    import warnings

    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        cases = collect_testcases()
    os.makedirs(out, exist_ok=True)
    manifest = {"made_by": "tools/make_layer_fixtures.py", "onnx": onnx.__version__,
                "source": "onnx.backend.test.case.node.collect_testcases()", "ops": {op: [] for op in NODE_OPS},
                "skipped": {}}
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    # The single-node cases of NODE_OPS; a function op's `<case>_expanded` variants (its body as several nodes)
    # are skipped, and noted.
    single = {c.name: c.model.graph.node[0].op_type for c in cases
              if len(c.model.graph.node) == 1 and c.model.graph.node[0].op_type in NODE_OPS}
    for case in sorted(cases, key=lambda c: c.name):
        nodes = case.model.graph.node
        if case.name not in single:
            if "_expanded" in case.name and case.name.split("_expanded")[0] in single:
                manifest["skipped"][case.name] = \
                    f"{len(nodes)} nodes ({', '.join(sorted({n.op_type for n in nodes}))}): the function's expansion"
            continue
        op = single[case.name]
        inputs, outputs = case.data_sets[0]
        g = case.model.graph
        if g.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            manifest["skipped"][case.name] = \
                f"data input is {onnx.TensorProto.DataType.Name(g.input[0].type.tensor_type.elem_type)}, not FLOAT"
            continue
        x, y = np.asarray(inputs[0]), np.asarray(outputs[0])
        model = onnx.ModelProto()
        model.CopyFrom(case.model)
        g = model.graph
        inits = {}
        for value_info, value in zip(list(g.input[1:]), inputs[1:]):
            value = np.asarray(value)
            g.initializer.append(numpy_helper.from_array(value, value_info.name))
            g.input.remove(value_info)
            inits[value_info.name] = {"shape": list(value.shape), "dtype": str(value.dtype),
                                      **({"value": value.tolist()} if value.size <= 16 else {})}
        data = model.SerializeToString()
        size = len(data) + x.nbytes + y.astype("<f4").nbytes
        if size > NODE_CASE_LIMIT:
            manifest["skipped"][case.name] = f"{size} bytes of files, over {NODE_CASE_LIMIT}"
            continue
        node = g.node[0]
        info = {"op": op, "name": case.name, "input_shape": list(x.shape), "output_shape": list(y.shape),
                "output_dtype": str(y.dtype),
                "attributes": {a.name: json_value(helper.get_attribute_value(a)) for a in node.attribute},
                "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                "node_inputs": list(node.input), "node_outputs": list(node.output), "initializers": inits,
                "rtol": case.rtol, "atol": case.atol}
        try:
            got = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(
                None, {g.input[0].name: x})[0]
            # Dropout in training mode draws a random mask: only its shape can be compared.
            if np.allclose(got, y, rtol=max(case.rtol, 1e-5), atol=max(case.atol, 1e-6)):
                info["ort_check"] = "ok"
            elif op == "Dropout" and any(v["dtype"] == "bool" and v.get("value") for v in inits.values()):
                info["ort_check"] = "differs: training-mode Dropout draws its own random mask"
            else:
                info["ort_check"] = f"differs (max abs {float(np.abs(got.astype(np.float64) - y).max()):.3g})"
        except Exception as e:  # noqa: BLE001 - the note says what ORT thought
            info["ort_check"] = f"error: {str(e).splitlines()[0][:200]}"
        d = os.path.join(out, case.name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(data)
        x.astype("<f4").tofile(os.path.join(d, "input.f32"))
        (y if y.dtype == np.float32 else y.astype(np.float32)).astype("<f4").tofile(os.path.join(d, "expected.f32"))
        with open(os.path.join(d, "case.json"), "w") as f:  # a key a line
            f.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in info.items()) + "\n}\n")
        manifest["ops"][op].append(case.name)
    manifest["counts"] = {op: len(v) for op, v in manifest["ops"].items()}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print("node cases:", ", ".join(f"{op} {n}" for op, n in manifest["counts"].items()),
          f"({len(manifest['skipped'])} skipped)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=os.path.join(HERE, "..", "tests", "fixtures", "layers"))
    ap.add_argument("--node-out", default=os.path.join(HERE, "..", "tests", "fixtures", "onnx-node"))
    ap.add_argument("--models-only", action="store_true")
    ap.add_argument("--node-only", action="store_true")
    ap.add_argument("--model", action="append", help="make only this model (repeatable; provenance keeps the rest)")
    args = ap.parse_args()
    if not args.node_only:
        import onnx
        import onnxruntime
        import tensorflow as tf
        import keras
        import tf2onnx

        prov_path = os.path.join(args.out, "provenance.json")
        provenance = {"made_by": "tools/make_layer_fixtures.py", "tensorflow": tf.__version__,
                      "keras": keras.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                      "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "opset": OPSET,
                      "data": "data/mnist (bundled: 10,000 training digits, the 10,000-digit test set)",
                      "input": "pixels / 255; NHWC files [N, 28, 28, 1], NCHW files [N, 1, 28, 28]",
                      "logits": "little-endian float32 [10000, 10], pre-softmax",
                      "batchnorm": "per BatchNormalization layer, [min, max] over channels of each weight",
                      "models": {}}
        if args.model and os.path.exists(prov_path):
            with open(prov_path) as f:
                provenance["models"] = json.load(f).get("models", {})
        make_models(args.out, args.model, load(), provenance)
        with open(prov_path, "w") as f:
            json.dump(provenance, f, indent=2)
            f.write("\n")
    if not args.models_only:
        make_node_cases(args.node_out)


if __name__ == "__main__":
    sys.exit(main())
