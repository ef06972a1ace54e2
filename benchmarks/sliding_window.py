#!/usr/bin/env python3
"""What sliding-window inference costs against whole-image inference.

The default R2U-Net (`build("r2unet", in_channels=1, recurrent_bn="per_step")`) predicts
one-channel images of DRIVE's size (584x565) and 512x512 whole (mirror-padded to a
multiple of 2**depth, `network.network_fn`) and by `sliding_window.predict` (Gaussian
weights, overlap 0.5) with 48, 64 and 128 pixel windows, in float32 and bfloat16
compute. Every mode is traced once (H and W unknown); its first call at each size, which
also sets up the kernels for that shape, is timed apart. Then the repeats interleave all
modes, sizes and dtypes so that load from other processes on the machine falls on all of
them alike; the JSON keeps every time, the medians and each median's ratio to the whole
image's of the same dtype and size:

    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 .venv/bin/python \
        benchmarks/sliding_window.py --json=benchmarks/results/sliding-window-cost.json

One intra-op thread: the machine is shared with a training run, and one thread keeps
the comparison fair to whoever got the other core.
"""

import os
import statistics
import sys
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the r2u commands, before TF
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from r2u import devices  # noqa: E402
from r2u import files  # noqa: E402
from r2u.inference import network  # noqa: E402
from r2u.inference import sliding_window  # noqa: E402
from r2u.nn import models  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["584x565", "512x512"], "Image sizes HxW.")
_WINDOWS = flags.DEFINE_list("windows", ["48", "64", "128"], "Window sides.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes.")
_OVERLAP = flags.DEFINE_float("overlap", 0.5, "Window overlap.")
_BATCH = flags.DEFINE_integer("batch", 4, "Windows per network call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed interleaved rounds.")
_JSON = flags.DEFINE_string("json", None, "Write the results here.")


def _modes(model):
    """{mode name: tf.function over float32 [B, H, W, 1] of any size}."""
    spec = [tf.TensorSpec([None, None, None, 1], tf.float32)]

    def net(x):
        return tf.nn.softmax(model(x, training=False))
    modes = {"whole": network.network_fn(model)}
    for window in (int(w) for w in _WINDOWS.value):
        modes[f"window_{window}"] = tf.function(
            lambda x, w=window: sliding_window.predict(net, x, w, _OVERLAP.value,
                                                       _BATCH.value),
            input_signature=spec)
    return modes


def _timed(fn, image):
    start = time.perf_counter()
    fn(image).numpy()  # the copy to host waits for the result
    return time.perf_counter() - start


def _windows(size, window):
    """Number of windows and the pixels they hold over the image's pixels."""
    h, w = (max(s, window) for s in size)
    count = (len(sliding_window.starts(h, window, _OVERLAP.value))
             * len(sliding_window.starts(w, window, _OVERLAP.value)))
    return count, count * window * window / (size[0] * size[1])


def _run():
    """Times every (dtype, size, mode); returns {key: {"first_s", "s_all"}}."""
    sizes = [tuple(int(v) for v in s.split("x")) for s in _SIZES.value]
    rng = np.random.default_rng(0)
    images = {size: tf.constant(rng.uniform(0, 1, (1, *size, 1)), tf.float32)
              for size in sizes}
    runs, results = [], {}
    for dtype in _DTYPES.value:
        # Same seed, same weights: the dtypes differ only in compute.
        model = models.build("r2unet", in_channels=1, recurrent_bn="per_step",
                             compute_dtype=dtype)
        for name, fn in _modes(model).items():
            for size in sizes:
                key = f"{dtype}/{size[0]}x{size[1]}/{name}"
                results[key] = {"first_s": _timed(fn, images[size]), "s_all": []}
                print(f"{key}: first call {results[key]['first_s']:.2f} s", flush=True)
                runs.append((key, fn, images[size]))
    for round_ in range(_REPEATS.value):
        order = runs if round_ % 2 == 0 else runs[::-1]  # no mode always runs first
        for key, fn, image in order:
            results[key]["s_all"].append(_timed(fn, image))
        print(f"round {round_ + 1}/{_REPEATS.value} done", flush=True)
    return results


def _summarise(results):
    """Medians, ratios to the whole image of the same dtype and size, window counts."""
    for key, r in results.items():
        r["median_s"] = statistics.median(r["s_all"])
    for key, r in results.items():
        dtype, size, mode = key.split("/")
        r["over_whole"] = r["median_s"] / results[f"{dtype}/{size}/whole"]["median_s"]
        if mode != "whole":
            h, w = (int(v) for v in size.split("x"))
            r["windows"], r["window_pixels_over_image"] = _windows(
                (h, w), int(mode.split("_")[1]))
        if dtype != "float32" and f"float32/{size}/{mode}" in results:
            r["over_float32"] = (r["median_s"]
                                 / results[f"float32/{size}/{mode}"]["median_s"])
        print(f"{key:32s} median {r['median_s']:7.2f} s  x{r['over_whole']:.2f} whole",
              flush=True)
    return results


def main(argv):
    del argv
    threads = os.environ.get("TF_NUM_INTRAOP_THREADS")
    if threads:  # TF reads the variable too; this makes sure and records it
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    if os.environ.get("TF_NUM_INTEROP_THREADS"):
        tf.config.threading.set_inter_op_parallelism_threads(
            int(os.environ["TF_NUM_INTEROP_THREADS"]))
    load_start = os.getloadavg()
    start = time.perf_counter()
    results = _summarise(_run())
    out = {
        "command": " ".join(["TF_NUM_INTRAOP_THREADS=1", "TF_NUM_INTEROP_THREADS=1",
                             ".venv/bin/python", "benchmarks/sliding_window.py",
                             *sys.argv[1:]]),
        "config": {"model": "build('r2unet', in_channels=1, recurrent_bn='per_step')",
                   "sizes": _SIZES.value, "windows": [int(w) for w in _WINDOWS.value],
                   "overlap": _OVERLAP.value, "gaussian": True, "batch": _BATCH.value,
                   "dtypes": _DTYPES.value, "repeats": _REPEATS.value, "images": 1},
        "threads": {"TF_NUM_INTRAOP_THREADS": threads,
                    "TF_NUM_INTEROP_THREADS": os.environ.get("TF_NUM_INTEROP_THREADS"),
                    "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                    "why": "one thread: the machine is shared with a training run"},
        "results": results,
        "seconds": time.perf_counter() - start,
        "machine": {**devices.machine(), "load_avg_start": load_start,
                    "load_avg_end": os.getloadavg(),
                    "onednn": devices.onednn_enabled()},
    }
    if _JSON.value:
        files.write_json(_JSON.value, out, indent=1)


if __name__ == "__main__":
    app.run(main)
