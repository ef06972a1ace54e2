#!/usr/bin/env python3
"""The 3x3 convs' filter gradient as nine shifted matmuls (a `tf.custom_gradient`) against
TF's own Conv2DBackpropFilter, in the whole train step, interleaved rounds.

    .venv/bin/python benchmarks/levers/filter_grad_matmul.py --arch=r2unet --min_channels=64
    .venv/bin/python benchmarks/levers/filter_grad_matmul.py --per_layer   # each gradient alone

Only convs with at least `--min_channels` input channels use the matmul form (alone, it
beat oneDNN's kernel from 32 channels up; benchmarks/NOTES.md). Not used by r2u: in the
whole step it did not pay.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the r2u commands, before TF
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import tensorflow as tf  # noqa: E402

from r2u import bench  # noqa: E402
from r2u import config  # noqa: E402
from r2u.nn import layers  # noqa: E402

_ARCH = flags.DEFINE_enum("arch", "r2unet", config.ARCHS, "Architecture.")
_FILTERS = flags.DEFINE_integer("filters", 16, "Width of level 0.")
_DEPTH = flags.DEFINE_integer("depth", 4, "Number of poolings.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Square image side.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Images per step.")
_MIN_CHANNELS = flags.DEFINE_integer("min_channels", 32, "Smallest input width using "
                                     "the matmul form.")
_STEPS = flags.DEFINE_integer("steps", 6, "Timed steps per block.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
_PER_LAYER = flags.DEFINE_bool("per_layer", False, "Instead of the step, time the two "
                               "filter gradients alone for each level's 3x3 conv shape.")


def filter_grad(x, dy, k):
    """dL/dw of a k x k SAME conv: one [C, N*H*W] x [N*H*W, D] matmul per tap."""
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    p = k // 2
    xp = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
    c, d = x.shape[-1], dy.shape[-1]
    dy = tf.reshape(dy, [-1, d])
    taps = [tf.matmul(tf.reshape(xp[:, i:i + h, j:j + w], [-1, c]), dy, transpose_a=True)
            for i in range(k) for j in range(k)]
    return tf.reshape(tf.stack(taps), [k, k, c, d])


@tf.custom_gradient
def conv_matmul_grad(x, w):
    def grad(dy):
        dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w,
                                            out_backprop=dy, strides=[1, 1, 1, 1],
                                            padding="SAME")
        return dx, filter_grad(x, dy, w.shape[0])
    return tf.nn.conv2d(x, w, 1, "SAME"), grad


def matmul_grad_call(self, x):
    w = tf.cast(self.w, x.dtype)
    if w.shape[0] == 3 and w.shape[2] >= _MIN_CHANNELS.value:
        y = conv_matmul_grad(x, w)
    else:
        y = tf.nn.conv2d(x, w, strides=1, padding="SAME")
    return y if self.b is None else tf.nn.bias_add(y, tf.cast(self.b, x.dtype))


def check_filter_grad(channels: int) -> float:
    """Largest relative gap between `filter_grad` and TF's kernel on a random case."""
    rng = tf.random.Generator.from_seed(0)
    x, dy = rng.normal([2, 9, 7, channels]), rng.normal([2, 9, 7, channels + 1])
    want = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=[3, 3, channels,
                                                                  channels + 1],
                                           out_backprop=dy, strides=[1, 1, 1, 1],
                                           padding="SAME")
    gap = float(tf.reduce_max(tf.abs(filter_grad(x, dy, 3) - want))
                / tf.reduce_max(tf.abs(want)))
    if gap > 1e-5:
        raise AssertionError(f"filter_grad differs from Conv2DBackpropFilter by {gap:.1e}")
    return gap


def per_layer() -> None:
    """GFLOP/s of both filter gradients alone, level by level (width doubles, side halves)."""
    rng = tf.random.Generator.from_seed(0)
    for level in range(_DEPTH.value + 1):
        c, side = _FILTERS.value * 2**level, _IMAGE_SIZE.value // 2**level
        x, dy = rng.normal([_BATCH.value, side, side, c]), rng.normal([_BATCH.value, side,
                                                                       side, c])
        fns = {"native": tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
                   input=x, filter_sizes=[3, 3, c, c], out_backprop=dy,
                   strides=[1, 1, 1, 1], padding="SAME")),
               "matmul": tf.function(lambda: filter_grad(x, dy, 3))}
        times = {k: [] for k in fns}
        for r in range(_ROUNDS.value):
            for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                times[k].append(bench.time_fn(fns[k], 1, _STEPS.value, 1)["median"])
        gflop = 2 * _BATCH.value * side * side * 9 * c * c / 1e9
        print(f"batch {_BATCH.value} {side}x{side} {c} channels: " + ", ".join(
            f"{k} {1000 * statistics.median(t):.1f} ms "
            f"({gflop / statistics.median(t):.0f} GFLOP/s)" for k, t in times.items()))


def main(argv):
    del argv
    print(f"filter_grad vs Conv2DBackpropFilter: max relative difference "
          f"{check_filter_grad(_MIN_CHANNELS.value):.1e}")
    if _PER_LAYER.value:
        return per_layer()
    native_call, benches = layers.Conv2D.__call__, {}
    overrides = {"filters": _FILTERS.value, "depth": _DEPTH.value}
    try:
        for name, call in (("native", native_call), ("matmul", matmul_grad_call)):
            layers.Conv2D.__call__ = call  # only while building and tracing this variant
            benches[name] = bench.ArchBench(_ARCH.value, "float32", False,
                                            _IMAGE_SIZE.value, 1, _BATCH.value,
                                            model_overrides=overrides)
            benches[name].compile()
    finally:
        layers.Conv2D.__call__ = native_call
    for r in range(_ROUNDS.value):
        for name in (list(benches) if r % 2 == 0 else list(benches)[::-1]):
            benches[name].run(_STEPS.value)
    rates = {k: b.result()["train_img_s_all"] for k, b in benches.items()}
    ratios = [m / n for m, n in zip(rates["matmul"], rates["native"])]
    for name, r in rates.items():
        print(f"{_ARCH.value} min_channels={_MIN_CHANNELS.value} {name}: train "
              f"{statistics.median(r):.2f} img/s ({', '.join(f'{v:.2f}' for v in r)})")
    print(f"matmul/native: {statistics.median(ratios):.3f} (rounds "
          f"{', '.join(f'{v:.3f}' for v in ratios)})")


if __name__ == "__main__":
    app.run(main)
