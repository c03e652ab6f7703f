#!/usr/bin/env python3
"""The series' networks in TensorFlow 1 graph mode, trained with Adam at batch 64 on the bundled data.

`--model vgg` is post 8's network, `--model convnet4` posts 5-6's. Prints steady-state training images per
second, for comparison with `kiln bench train --model ...`. Used by tools/bench_vs_tf.sh; needs
`pip install tensorflow-cpu`.
"""
import argparse
import gzip
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1


def load(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def he(shape, fan_in):
    # TF1 variance_scaling_initializer defaults: factor 2, fan-in, truncated normal (stddev sqrt(1.3*2/n)).
    return tf1.truncated_normal(shape, stddev=np.sqrt(1.3 * 2.0 / fan_in))


def conv_blocks(net, blocks, channels):
    """3x3 SAME convs with bias and ReLU, each block followed by a 2x2 max pool."""
    for block, (filters, count) in enumerate(blocks):
        for i in range(count):
            w = tf1.Variable(he([3, 3, channels, filters], 9 * channels), name=f"conv{block}_{i}/weights")
            b = tf1.Variable(tf.zeros([filters]), name=f"conv{block}_{i}/bias")
            net = tf.nn.relu(tf.nn.conv2d(net, w, strides=1, padding="SAME") + b)
            channels = filters
        net = tf.nn.max_pool2d(net, 2, 2, padding="VALID")
    return net


def dense(net, n_in, n_out, relu, name):
    if relu:
        w = tf1.Variable(he([n_in, n_out], n_in), name=f"{name}/weights")
    else:
        limit = np.sqrt(6.0 / (n_in + n_out))
        w = tf1.Variable(tf1.random_uniform([n_in, n_out], -limit, limit), name=f"{name}/weights")
    b = tf1.Variable(tf.zeros([n_out]), name=f"{name}/bias")
    out = tf.matmul(net, w) + b
    return tf.nn.relu(out) if relu else out


def vgg(x):
    """Post 8's network with explicit variables (Keras 3 removed tf.compat.v1.layers)."""
    net = tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]])
    net = conv_blocks(net, [(64, 2), (128, 2), (256, 3), (512, 3)], 1)
    net = tf.reshape(net, [-1, 2 * 2 * 512])
    net = dense(net, 2048, 4096, True, "dense1")
    return dense(net, 4096, 10, False, "dense2")


def convnet4(x):
    """Posts 5-6's network."""
    net = conv_blocks(x, [(64, 2), (128, 2)], 1)
    net = tf.reshape(net, [-1, 7 * 7 * 128])
    return dense(net, 7 * 7 * 128, 10, False, "dense1")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="vgg", choices=["vgg", "convnet4"])
    parser.add_argument("--data", default="data/mnist")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    images = load(os.path.join(args.data, "train-images-idx3-ubyte.gz"), 16).reshape(-1, 28, 28, 1) / 255.0
    labels = load(os.path.join(args.data, "train-labels-idx1-ubyte.gz"), 8).astype(np.int64)

    tf1.disable_eager_execution()
    tf1.set_random_seed(1)
    x = tf1.placeholder(tf.float32, [None, 28, 28, 1], name="input")
    y = tf1.placeholder(tf.int64, [None])
    logits = {"vgg": vgg, "convnet4": convnet4}[args.model](x)
    cost = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    train = tf1.train.AdamOptimizer(0.001).minimize(cost)
    config = tf1.ConfigProto(intra_op_parallelism_threads=os.cpu_count(), inter_op_parallelism_threads=os.cpu_count())
    with tf1.Session(config=config) as sess:
        sess.run(tf1.global_variables_initializer())
        times = []
        for step in range(args.warmup + args.steps):
            start = (step * args.batch) % (len(labels) - args.batch)
            feed = {x: images[start : start + args.batch], y: labels[start : start + args.batch]}
            t = time.perf_counter()
            sess.run(train, feed)
            if step >= args.warmup:
                times.append(time.perf_counter() - t)
    total = sum(times)
    print(
        f"tensorflow {tf.__version__} {args.model} batch {args.batch}: {args.steps * args.batch / total:.1f} images/s "
        f"(mean over {args.steps} steps), median step {sorted(times)[len(times) // 2]:.3f} s"
    )


if __name__ == "__main__":
    main()
