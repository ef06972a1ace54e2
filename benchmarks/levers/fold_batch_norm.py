#!/usr/bin/env python3
"""Inference with batch norm folded into the conv (r2u's default) against the plain affine
map after the conv, both traced from the same weights and timed in interleaved rounds.

    .venv/bin/python benchmarks/levers/fold_batch_norm.py --arch=r2unet

Cases: a batch of `--batch`x`--image_size`^2 images and one `--whole` (H,W) image.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the r2u commands, before TF
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from r2u import bench  # noqa: E402
from r2u.nn import blocks  # noqa: E402
from r2u import config  # noqa: E402
from r2u.nn import models  # noqa: E402

_ARCH = flags.DEFINE_enum("arch", "r2unet", config.ARCHS, "Architecture.")
_FILTERS = flags.DEFINE_integer("filters", 16, "Width of level 0.")
_DEPTH = flags.DEFINE_integer("depth", 4, "Number of poolings.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Side of the batched case.")
_BATCH = flags.DEFINE_integer("batch", 8, "Images in the batched case.")
_WHOLE = flags.DEFINE_list("whole", ["592", "576"], "H,W of the one-image case.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")


def affine_call(self, x, *, training, step=0):
    """ConvBN before folding: conv, then batch norm's own (affine) inference map."""
    y = self.bn(self.conv(x), training=training, step=step)
    return tf.nn.relu(y) if self.relu else y


def main(argv):
    del argv
    model = models.build(_ARCH.value, filters=_FILTERS.value, depth=_DEPTH.value)
    rng = np.random.default_rng(0)
    h, w = (int(v) for v in _WHOLE.value)
    side = _IMAGE_SIZE.value
    cases = {f"{_BATCH.value}x{side}x{side}": rng.standard_normal(
                 (_BATCH.value, side, side, 1), dtype=np.float32),
             f"1x{h}x{w}": rng.standard_normal((1, h, w, 1), dtype=np.float32)}
    folded_call, fns = blocks.ConvBN.__call__, {}
    try:
        for variant, call in (("affine", affine_call), ("folded", folded_call)):
            blocks.ConvBN.__call__ = call  # only while tracing this variant
            fn = tf.function(lambda x: model(x, training=False))
            for x in cases.values():
                fn(x)
            fns[variant] = fn
    finally:
        blocks.ConvBN.__call__ = folded_call
    for case, x in cases.items():
        a, f = fns["affine"](x).numpy(), fns["folded"](x).numpy()
        times = {v: [] for v in fns}
        for r in range(_ROUNDS.value):
            for v in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                times[v] += bench.time_fn(lambda: fns[v](x), 0, 1, 1)["all"]
        ratios = [p / q for p, q in zip(times["affine"], times["folded"])]
        print(f"{_ARCH.value} {case}: affine {statistics.median(times['affine']):.3f} s, "
              f"folded {statistics.median(times['folded']):.3f} s; folded speed-up "
              f"{statistics.median(ratios):.2f}x (rounds "
              f"{', '.join(f'{r:.2f}' for r in ratios)}); max relative difference "
              f"{np.abs(a - f).max() / max(np.abs(a).max(), 1e-30):.1e}")


if __name__ == "__main__":
    app.run(main)
