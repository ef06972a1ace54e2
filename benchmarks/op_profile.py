#!/usr/bin/env python3
"""Where a train step's time goes: per-op-type share of the forward + backward pass.

    .venv/bin/python benchmarks/op_profile.py --arch=r2unet --image_size=128 --batch_size=8

Builds the model's loss and gradients in a graph, runs them `--steps` times in a session
with full tracing, and sums each op type's kernel time (over both cores' threads, so the
sum can exceed the wall time). Conv ops also get their counted GFLOP/s, which says how
close each kind of convolution runs to the machine's peak (`bin/bench` measures that
peak). The optimizer update is left out: it is a few elementwise passes over 2.4 M
weights.
"""

import collections
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the r2u commands, before TF
from absl import app
from absl import flags
import tensorflow as tf

from r2u import bench
from r2u import config
from r2u.training import losses
from r2u.nn import models

_ARCH = flags.DEFINE_enum("arch", "r2unet", config.ARCHS, "Architecture.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Square image side.")
_CHANNELS = flags.DEFINE_integer("channels", 1, "Input channels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per step.")
_STEPS = flags.DEFINE_integer("steps", 5, "Traced steps (after 2 untraced).")
_TOP = flags.DEFINE_integer("top", 14, "Op types listed.")


def build_step(graph: tf.Graph):
    """The loss and gradients of one fixed random batch, and the graph's conv FLOPs."""
    with graph.as_default():
        model = models.build(_ARCH.value, in_channels=_CHANNELS.value)
        batch = bench.random_batch(_BATCH_SIZE.value, _IMAGE_SIZE.value, _CHANNELS.value)
        weights = bench.inverse_frequency(batch["mask"])
        with tf.GradientTape() as tape:
            logits = model(tf.constant(batch["image"]), training=True)
            loss = losses.loss_fn("wce", weights)(logits, tf.constant(batch["mask"]),
                                                  tf.constant(batch["fov"]))
        grads = tape.gradient(loss, model.trainable_variables)
        init = tf.compat.v1.global_variables_initializer()
    return init, [loss, grads]


def flops_by_node(graph: tf.Graph) -> dict:
    """Counted FLOPs of every conv and matmul node, both conv gradients included."""
    return {op.name: bench.op_flops(op) for op in graph.get_operations()
            if op.type in bench.FLOP_OPS}


def main(argv):
    del argv
    graph = tf.Graph()
    init, fetches = build_step(graph)
    flops = flops_by_node(graph)
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    micros = collections.Counter()
    counted_flops = collections.Counter()
    calls = collections.Counter()
    walls = []
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(init)
        for _ in range(2):
            sess.run(fetches)
        for _ in range(_STEPS.value):
            meta = tf.compat.v1.RunMetadata()
            start = time.perf_counter()
            sess.run(fetches, options=options, run_metadata=meta)
            walls.append(time.perf_counter() - start)
            for dev in meta.step_stats.dev_stats:
                for node in dev.node_stats:
                    kind = node.timeline_label.partition(" = ")[2]
                    op_type = kind.split("(")[0].strip() or node.node_name
                    micros[op_type] += node.all_end_rel_micros
                    calls[op_type] += 1
                    counted_flops[op_type] += flops.get(node.node_name, 0)
    total = sum(micros.values())
    wall = statistics.median(walls)
    print(f"{_ARCH.value} {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}x{_CHANNELS.value} "
          f"batch {_BATCH_SIZE.value}: median traced step {wall:.2f} s "
          f"(tracing adds overhead), kernel time summed over threads "
          f"{total / 1e6 / _STEPS.value:.2f} s per step")
    print(f"{'op type':32} {'share':>6} {'ms/step':>8} {'calls':>6} {'GFLOP/s':>8}")
    for line in bench.op_share_rows(micros, calls, counted_flops, _STEPS.value,
                                    _TOP.value):
        print(line)
    return 0


if __name__ == "__main__":
    app.run(main)
