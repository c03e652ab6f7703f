#!/usr/bin/env python3
"""Fixtures for Kiln's importers, made by the real frameworks (TensorFlow's Saver, tf2onnx, onnx).

    python3 tools/make_import_fixtures.py [OUTDIR]         # the small fixtures (default tests/fixtures/import)
    python3 tools/make_import_fixtures.py --vgg OUTDIR     # the series' VGG, 184 MB, for the acceptance run
    python3 tools/make_import_fixtures.py --onnx [OUTDIR]  # only the ONNX files, from the saved checkpoints

Each network is built the way the "Learn TensorFlow Now" posts build it, in TF 2.x's `tf.compat.v1` graph mode:
placeholders, `tf.Variable`/`tf.compat.v1.get_variable`, `tf.nn.conv2d` plus `+ bias`, `tf.nn.relu`,
`tf.nn.max_pool`, `tf.reshape`, `tf.matmul`; the VGG pads 28 to 32 with `tf.image.resize_with_crop_or_pad`.
Each trains briefly on the bundled training digits and is saved with `tf.compat.v1.train.Saver` and a
global step, so the files are exactly what a reader of post 9 has:

  fc3/fc3.ckpt-<step>.{index,data-00000-of-00001,meta}, fc3/checkpoint      plain gradient descent (post 3)
  convnet4/convnet4.ckpt-<step>.{...}, convnet4/checkpoint                   Adam (posts 5-7): Adam slots
  vgg/vgg_net.ckpt-<step>.{...}, vgg/checkpoint      (--vgg only)            Adam, post 8's network

and beside each, `<name>.tf-logits.f32`: TensorFlow's own logits on the full 10,000-digit test set, little-endian
float32 `[10000, 10]`, computed from pixels / 255 as the network's input. `provenance.json` records the versions,
steps and seeds. The `checkpoint` state files' absolute paths are rewritten to another machine's
(`/home/learner/<name>/...`), as a directory copied from the machine that trained has them.

Then the ONNX files, in `onnx/`, each with `<name>.ort-logits.f32`: ONNX Runtime's logits on the full test set:

  fc3.tf2onnx.onnx, convnet4.tf2onnx.onnx   tf2onnx on the inference graph, restored from the saved checkpoint
                                            the way post 9 restores it (import_meta_graph, restore), frozen:
                                            NHWC input, Transposes around the convs, MatMul + Add
  nchw_convnet.onnx                         a small ConvNet written with onnx.helper the way torch.onnx.export
                                            writes one (torch does not install here): NCHW input, Conv with
                                            bias, Flatten in C,H,W order, Gemm with transB=1; He-initialized
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "mnist")


def idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    if raw[2] == 8 and raw[3] == 3:
        n, r, c = (int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(3))
        return np.frombuffer(raw, np.uint8, offset=16).reshape(n, r, c)
    n = int.from_bytes(raw[4:8], "big")
    return np.frombuffer(raw, np.uint8, offset=8)[:n]


def load():
    train_x = idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    train_y = idx("train-labels-idx1-ubyte.gz")
    test_x = idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    test_y = idx("t10k-labels-idx1-ubyte.gz")
    return train_x, train_y, test_x, test_y


def build(tf, name):
    """The series' graph for `name`; returns (input placeholder, labels placeholder, logits)."""
    v1 = tf.compat.v1
    if name == "fc3":
        # Post 3: 784 -> 500 -> 500 -> 10, N(0,1) weights scaled down so a short run learns something.
        x = v1.placeholder(tf.float32, shape=(None, 784), name="input")
        labels = v1.placeholder(tf.float32, shape=(None, 10), name="labels")
        w1 = tf.Variable(v1.random_normal([784, 500], stddev=0.05), name="layer1_weights")
        b1 = tf.Variable(tf.zeros([500]), name="layer1_bias")
        l1 = tf.nn.relu(tf.matmul(x, w1) + b1)
        w2 = tf.Variable(v1.random_normal([500, 500], stddev=0.05), name="layer2_weights")
        b2 = tf.Variable(tf.zeros([500]), name="layer2_bias")
        l2 = tf.nn.relu(tf.matmul(l1, w2) + b2)
        w3 = tf.Variable(v1.random_normal([500, 10], stddev=0.05), name="layer3_weights")
        b3 = tf.Variable(tf.zeros([10]), name="layer3_bias")
        logits = tf.add(tf.matmul(l2, w3), b3, name="logits")
        return x, labels, logits
    x = v1.placeholder(tf.float32, shape=(None, 28, 28, 1), name="input")
    labels = v1.placeholder(tf.float32, shape=(None, 10), name="labels")
    he = v1.variance_scaling_initializer()
    xavier = v1.glorot_uniform_initializer()
    k = [0]

    def conv(h, cin, cout):
        k[0] += 1
        w = v1.get_variable(f"layer{k[0]}_weights", [3, 3, cin, cout], initializer=he)
        b = tf.Variable(tf.zeros([cout]), name=f"layer{k[0]}_bias")
        return tf.nn.relu(tf.nn.conv2d(h, filters=w, strides=[1, 1, 1, 1], padding="SAME") + b)

    def pool(h):
        return tf.nn.max_pool2d(h, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME")

    def dense(h, cin, cout, relu, init, out_name=None):
        k[0] += 1
        w = v1.get_variable(f"layer{k[0]}_weights", [cin, cout], initializer=init)
        b = tf.Variable(tf.zeros([cout]), name=f"layer{k[0]}_bias")
        y = tf.add(tf.matmul(h, w), b, name=out_name)
        return tf.nn.relu(y) if relu else y

    if name == "convnet4":
        h = pool(conv(conv(x, 1, 64), 64, 64))
        h = pool(conv(conv(h, 64, 128), 128, 128))
        h = tf.reshape(h, [-1, 7 * 7 * 128])
        return x, labels, dense(h, 7 * 7 * 128, 10, False, xavier, "logits")
    # Post 8's VGG: pad to 32x32, then 2-2-3-3 convs with pools, dense 4096, dense 10.
    h = tf.image.resize_with_crop_or_pad(x, 32, 32)
    h = pool(conv(conv(h, 1, 64), 64, 64))
    h = pool(conv(conv(h, 64, 128), 128, 128))
    h = pool(conv(conv(conv(h, 128, 256), 256, 256), 256, 256))
    h = pool(conv(conv(conv(h, 256, 512), 512, 512), 512, 512))
    h = tf.reshape(h, [-1, 2 * 2 * 512])
    h = dense(h, 2 * 2 * 512, 4096, True, he)
    return x, labels, dense(h, 4096, 10, False, xavier, "logits")


def make_tf(tf, name, out, steps, optimizer, lr, seed, data):
    train_x, train_y, test_x, _ = data
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        x, labels, logits = build(tf, name)
        cost = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        global_step = v1.train.get_or_create_global_step()
        opt = {"sgd": v1.train.GradientDescentOptimizer, "adam": v1.train.AdamOptimizer}[optimizer](lr)
        train = opt.minimize(cost, global_step=global_step)
        saver = v1.train.Saver()
        os.makedirs(out, exist_ok=True)
        flat = name == "fc3"
        feed_x = (lambda a: a.reshape(len(a), 784)) if flat else (lambda a: a.reshape(len(a), 28, 28, 1))
        rng = np.random.default_rng(seed)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for step in range(steps):
                batch = rng.choice(len(train_x), 64, replace=False)
                sess.run(train, {x: feed_x(train_x[batch]), labels: np.eye(10, dtype=np.float32)[train_y[batch]]})
            prefix = saver.save(sess, os.path.join(os.path.abspath(out), f"{'vgg_net' if name == 'vgg' else name}.ckpt"),
                                global_step=global_step)
            test_logits = np.concatenate([sess.run(logits, {x: feed_x(test_x[i:i + 500])})
                                          for i in range(0, len(test_x), 500)])
            graph_def = graph.as_graph_def()
    test_logits.astype("<f4").tofile(os.path.join(out, f"{name}.tf-logits.f32"))
    # The state file names absolute paths of this machine. Rewrite them to another machine's, as a copied
    # directory has them: the importer must find the checkpoint beside the state file.
    state = os.path.join(out, "checkpoint")
    with open(state) as f:
        text = f.read()
    with open(state, "w") as f:
        f.write(text.replace(os.path.abspath(out), f"/home/learner/{name}"))
    print(f"{name}: {steps} steps ({optimizer}, lr {lr}), saved {prefix}, test accuracy "
          f"{(test_logits.argmax(1) == data[3]).mean() * 100:.2f}%")
    return prefix, graph_def, test_logits


def restore_frozen(tf, prefix):
    """The checkpoint's inference graph, restored from its files alone and frozen up to `logits`."""
    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph, v1.Session() as sess:
        saver = v1.train.import_meta_graph(prefix + ".meta")
        saver.restore(sess, prefix)
        frozen = v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["logits"])
    return v1.graph_util.extract_sub_graph(frozen, ["logits"])


def ort_logits(path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + 500]})[0] for i in range(0, len(images), 500)])


def nchw_convnet(path):
    """conv 1->8, relu, pool, conv 8->16, relu, pool, flatten (C,H,W), gemm 784->32, relu, gemm 32->10."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    he = lambda shape, fan_in: (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    inits = [
        numpy_helper.from_array(he((8, 1, 3, 3), 9), "conv1.weight"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "conv1.bias"),
        numpy_helper.from_array(he((16, 8, 3, 3), 72), "conv2.weight"),
        numpy_helper.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "conv2.bias"),
        numpy_helper.from_array(he((32, 784), 784), "fc1.weight"),
        numpy_helper.from_array((rng.standard_normal(32) * 0.1).astype(np.float32), "fc1.bias"),
        numpy_helper.from_array(he((10, 32), 32), "fc2.weight"),
        numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "fc2.bias"),
    ]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1)
    pool = dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=0)
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["/conv1/Conv_output_0"], "/conv1/Conv", **conv),
        helper.make_node("Relu", ["/conv1/Conv_output_0"], ["/relu1/Relu_output_0"], "/relu1/Relu"),
        helper.make_node("MaxPool", ["/relu1/Relu_output_0"], ["/pool1/MaxPool_output_0"], "/pool1/MaxPool", **pool),
        helper.make_node("Conv", ["/pool1/MaxPool_output_0", "conv2.weight", "conv2.bias"], ["/conv2/Conv_output_0"],
                         "/conv2/Conv", **conv),
        helper.make_node("Relu", ["/conv2/Conv_output_0"], ["/relu2/Relu_output_0"], "/relu2/Relu"),
        helper.make_node("MaxPool", ["/relu2/Relu_output_0"], ["/pool2/MaxPool_output_0"], "/pool2/MaxPool", **pool),
        helper.make_node("Flatten", ["/pool2/MaxPool_output_0"], ["/Flatten_output_0"], "/Flatten", axis=1),
        helper.make_node("Gemm", ["/Flatten_output_0", "fc1.weight", "fc1.bias"], ["/fc1/Gemm_output_0"], "/fc1/Gemm",
                         alpha=1.0, beta=1.0, transB=1),
        helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/relu3/Relu_output_0"], "/relu3/Relu"),
        helper.make_node("Identity", ["/relu3/Relu_output_0"], ["/dropout/Identity_output_0"], "/dropout/Identity"),
        helper.make_node("Gemm", ["/dropout/Identity_output_0", "fc2.weight", "fc2.bias"], ["logits"], "/fc2/Gemm",
                         alpha=1.0, beta=1.0, transB=1),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", 10])], inits)
    model = helper.make_model(graph, producer_name="pytorch", producer_version="2.5.0 (layout of; written by onnx.helper)",
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def make_onnx(tf, root, data, provenance):
    import tf2onnx
    import onnx
    import onnxruntime

    out = os.path.join(root, "onnx")
    os.makedirs(out, exist_ok=True)
    test_x = data[2]
    provenance["onnx"] = {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                          "onnxruntime": onnxruntime.__version__, "opset": 13}
    for name in ["fc3", "convnet4"]:
        with open(os.path.join(root, name, "checkpoint")) as f:
            latest = f.readline().split('"')[1]
        prefix = os.path.join(root, name, os.path.basename(latest))
        frozen = restore_frozen(tf, prefix)
        path = os.path.join(out, f"{name}.tf2onnx.onnx")
        tf2onnx.convert.from_graph_def(frozen, input_names=["input:0"], output_names=["logits:0"], opset=13,
                                       output_path=path)
        images = test_x.reshape(len(test_x), 784) if name == "fc3" else test_x.reshape(len(test_x), 28, 28, 1)
        logits = ort_logits(path, images)
        logits.astype("<f4").tofile(os.path.join(out, f"{name}.ort-logits.f32"))
        tf_logits = np.fromfile(os.path.join(root, name, f"{name}.tf-logits.f32"), "<f4").reshape(-1, 10)
        print(f"{name}: {path}, ORT vs TF max abs logit diff {np.abs(logits - tf_logits).max():.2e}")
    path = os.path.join(out, "nchw_convnet.onnx")
    nchw_convnet(path)
    logits = ort_logits(path, test_x.reshape(len(test_x), 1, 28, 28))
    logits.astype("<f4").tofile(os.path.join(out, "nchw_convnet.ort-logits.f32"))
    print(f"nchw_convnet: {path}, ORT test accuracy {(logits.argmax(1) == data[3]).mean() * 100:.2f}% (untrained)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=os.path.join(HERE, "..", "tests", "fixtures", "import"))
    ap.add_argument("--vgg", action="store_true", help="make only the VGG checkpoint (184 MB), >= 1 epoch")
    ap.add_argument("--onnx", action="store_true", help="make only the ONNX files, from the saved checkpoints")
    args = ap.parse_args()
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    data = load()
    provenance = {"tensorflow": tf.__version__, "numpy": np.__version__, "made_by": "tools/make_import_fixtures.py",
                  "data": "data/mnist (bundled: 10,000 training digits, the 10,000-digit test set)", "models": {}}
    # (name, steps of 64 digits, optimizer, learning rate, seed); the VGG's 320 steps are two epochs of the
    # bundled 10,000 training digits.
    jobs = [("vgg", 320, "adam", 1e-4, 3)] if args.vgg else [("fc3", 300, "sgd", 0.1, 1), ("convnet4", 150, "adam", 1e-3, 2)]
    if args.onnx:
        with open(os.path.join(args.out, "provenance.json")) as f:
            provenance = json.load(f)
        jobs = []
    for name, steps, optimizer, lr, seed in jobs:
        out = os.path.join(args.out, name)
        prefix, _, _ = make_tf(tf, name, out, steps, optimizer, lr, seed, data)
        provenance["models"][name] = {"steps": steps, "optimizer": optimizer, "learning_rate": lr, "seed": seed,
                                      "checkpoint": os.path.relpath(prefix, args.out)}
    if not args.vgg:
        make_onnx(tf, args.out, data, provenance)
    with open(os.path.join(args.out, "vgg" if args.vgg else "", "provenance.json"), "w") as f:
        json.dump(provenance, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
