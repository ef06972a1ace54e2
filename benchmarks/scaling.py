#!/usr/bin/env python3
"""How r2u scales: images/s and peak RSS against image size and batch size, and
whole-image inference against patch-based sliding-window reconstruction.

    .venv/bin/python benchmarks/scaling.py --arch=r2unet --dtype=float32 \
        --json=benchmarks/results/scaling.json

Image-size sweep: `--image_sizes` at `--size_batch`; batch-size sweep: `--batch_sizes`
at `--batch_image_size`. Each point runs in a fresh process, so its peak RSS (the
high-water mark over compile and steps, TF's own ~0.7 GB included) is its own. The
inference comparison predicts one `--whole` (H,W) image (DRIVE's 565x584,
reflect-padded to a multiple of 2**depth) in one forward pass and by
`r2u.inference.network.tiled_probabilities` over `--tile`-sized patches every `--stride`
pixels (the report's 48x48, stride 5). On this CPU float32 is the fast dtype (no
native bfloat16): see benchmarks/NOTES.md.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the r2u commands, before TF
from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from r2u import bench
from r2u import config
from r2u import devices
from r2u import files
from r2u.inference import network
from r2u.nn import models

_ARCH = flags.DEFINE_enum("arch", "r2unet", config.ARCHS, "Architecture.")
_DTYPE = flags.DEFINE_enum("dtype", "auto", ["auto", *config.DTYPES],
                           "Compute dtype (auto: devices.resolve_dtype).")
_XLA = flags.DEFINE_enum("xla", "off", ["off", "on", "auto"], "XLA.")
_CHANNELS = flags.DEFINE_integer("channels", 1, "Input channels.")
_IMAGE_SIZES = flags.DEFINE_list("image_sizes", ["64", "128", "256", "512"],
                                 "Image sides of the size sweep.")
_SIZE_BATCH = flags.DEFINE_integer("size_batch", 2, "Batch size of the size sweep.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "2", "4", "8", "16"],
                                 "Batch sizes of the batch sweep.")
_BATCH_IMAGE_SIZE = flags.DEFINE_integer("batch_image_size", 128,
                                         "Image side of the batch sweep.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed calls per block.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed blocks per point.")
_WHOLE = flags.DEFINE_list("whole", ["584", "565"],
                           "Whole image height,width (DRIVE); empty: skip.")
_TILE = flags.DEFINE_integer("tile", 48, "Sliding-window patch side.")
_STRIDE = flags.DEFINE_integer("stride", 5, "Sliding-window stride.")
_TILE_BATCH = flags.DEFINE_integer("tile_batch", 64, "Patches per forward pass.")
_REMAPPING = flags.DEFINE_bool(
    "grappler_remapping", True,
    "Grappler's remapper (TF default on). With oneDNN it fuses inference conv+BN+ReLU "
    "into a kernel that is ~10x slower at batch 1 (benchmarks/NOTES.md).")
_JSON = flags.DEFINE_string("json", None, "Write the results here.")
_POINT = flags.DEFINE_string("point", None, "Internal: measure one SIZE,BATCH point in "
                             "this process and print its JSON record.")


def sweep_point(image_size: int, batch_size: int) -> dict:
    """One point, measured in this process (`--point`)."""
    b = bench.ArchBench(_ARCH.value, devices.resolve_dtype(_DTYPE.value),
                        devices.resolve_xla(_XLA.value),
                        image_size, _CHANNELS.value, batch_size)
    b.run(_STEPS.value, repeats=_REPEATS.value)
    return b.result()


def isolated_point(image_size: int, batch_size: int, peak: float) -> dict:
    """One point in a fresh process: its RSS high-water mark is its own."""
    forwarded = [f"--{k}={flags.FLAGS[k].value}" for k in (
        "arch", "dtype", "xla", "channels", "steps", "repeats", "grappler_remapping")]
    proc = subprocess.run([sys.executable, os.path.abspath(__file__),
                           f"--point={image_size},{batch_size}", *forwarded],
                          capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"point {image_size}x{image_size} batch {batch_size} failed "
                           f"(exit {proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(lines[-1])
    result["peak_fraction"] = result["gflop_s"] / peak
    logging.info("%dx%d batch %d: train %.2f img/s, infer %.2f img/s, peak RSS %.0f MB",
                 image_size, image_size, batch_size, result["train_img_s"],
                 result["infer_img_s"], result["rss_mb"])
    return result


def whole_vs_tiled(height: int, width: int) -> dict:
    """Seconds to predict one image whole (padded) and by overlapping tiles."""
    model = models.build(_ARCH.value, in_channels=_CHANNELS.value,
                         compute_dtype=devices.resolve_dtype(_DTYPE.value))
    jit = devices.resolve_xla(_XLA.value)
    image = np.random.default_rng(0).standard_normal(
        (height, width, _CHANNELS.value)).astype(np.float32)
    whole = tf.function(lambda x: network.probabilities(model, x), jit_compile=jit)
    spec = tf.TensorSpec([None, _TILE.value, _TILE.value, _CHANNELS.value], tf.float32)
    tiles = tf.function(lambda x: tf.nn.softmax(model(x, training=False)),
                        input_signature=[spec], jit_compile=jit)
    record = {"height": height, "width": width, "tile": _TILE.value,
              "stride": _STRIDE.value, "tile_batch": _TILE_BATCH.value}
    bench.reset_peak_memory()
    start = time.perf_counter()
    whole_probs = whole(image[None]).numpy()[0]  # first call: trace + compile + run
    record["whole_first_s"] = time.perf_counter() - start
    timing = bench.time_fn(lambda: whole(image[None]), warmup=0, steps=1,
                           repeats=_REPEATS.value)
    record.update(whole_s=timing["median"], whole_s_all=timing["all"],
                  whole_rss_mb=bench.peak_memory_mb()["rss_mb"])
    padded = [-(-n // 2**model.cfg.depth) * 2**model.cfg.depth for n in (height, width)]
    record["whole_padded"] = padded
    record["whole_gflop"] = bench.forward_gflop(model, padded, _CHANNELS.value)
    rows = network.tile_starts(height, _TILE.value, _STRIDE.value)
    cols = network.tile_starts(width, _TILE.value, _STRIDE.value)
    record["num_tiles"] = int(len(rows) * len(cols))
    tiles(tf.zeros([1, _TILE.value, _TILE.value, _CHANNELS.value]))  # compile apart
    bench.reset_peak_memory()
    start = time.perf_counter()
    tiled_probs = network.tiled_probabilities(
        tiles, image, _TILE.value, _STRIDE.value, batch_size=_TILE_BATCH.value)
    record.update(tiled_s=time.perf_counter() - start,
                  tiled_rss_mb=bench.peak_memory_mb()["rss_mb"],
                  tiled_gflop=record["num_tiles"] * bench.forward_gflop(
                      model, _TILE.value, _CHANNELS.value))
    record["tiled_over_whole_time"] = record["tiled_s"] / record["whole_s"]
    # An untrained net differs near tile borders; the mean gap shows both ran the model.
    record["mean_abs_prob_difference"] = float(np.abs(whole_probs - tiled_probs).mean())
    logging.info("whole %dx%d: %.2f s; %d tiles: %.1f s", height, width,
                 record["whole_s"], record["num_tiles"], record["tiled_s"])
    return record


def main(argv):
    del argv
    if not _REMAPPING.value:
        tf.config.optimizer.set_experimental_options({"remapping": False})
    if _POINT.value:
        print(json.dumps(sweep_point(*(int(v) for v in _POINT.value.split(",")))))
        return
    load_start = os.getloadavg()
    peak = bench.peak_gflops(devices.resolve_dtype(_DTYPE.value))
    sizes = [int(s) for s in _IMAGE_SIZES.value]
    batches = [int(b) for b in _BATCH_SIZES.value]
    out = {"config": {k: flags.FLAGS[k].value for k in (
        "arch", "dtype", "xla", "channels", "image_sizes", "size_batch", "batch_sizes",
        "batch_image_size", "steps", "repeats", "whole", "tile", "stride",
        "tile_batch", "grappler_remapping")},
        "peak": peak}
    out["image_size_sweep"] = [isolated_point(s, _SIZE_BATCH.value, peak["peak"])
                               for s in sizes]
    out["batch_size_sweep"] = [isolated_point(_BATCH_IMAGE_SIZE.value, b, peak["peak"])
                               for b in batches]
    if _WHOLE.value:
        out["whole_image"] = whole_vs_tiled(*(int(v) for v in _WHOLE.value))
    out["machine"] = {**devices.machine(), "load_avg_start": load_start,
                      "load_avg_end": os.getloadavg(),
                      "env": {k: v for k, v in os.environ.items()
                              if k.startswith(("TF_ENABLE_ONEDNN", "XLA_", "OMP_"))}}
    print(f"{'size':>5} {'batch':>5} {'train img/s':>11} {'infer img/s':>11} "
          f"{'RSS MB':>7}")
    for r in out["image_size_sweep"] + out["batch_size_sweep"]:
        print(f"{r['image_size']:5d} {r['batch_size']:5d} {r['train_img_s']:11.2f} "
              f"{r['infer_img_s']:11.2f} {r['rss_mb']:7.0f}")
    if "whole_image" in out:
        w = out["whole_image"]
        print(f"whole {w['height']}x{w['width']}: {w['whole_s']:.2f} s; "
              f"{w['num_tiles']} {w['tile']}x{w['tile']} tiles stride {w['stride']}: "
              f"{w['tiled_s']:.1f} s ({w['tiled_over_whole_time']:.0f}x)")
    if _JSON.value:
        os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
        files.write_json(_JSON.value, out, sort_keys=False)


if __name__ == "__main__":
    app.run(main)
