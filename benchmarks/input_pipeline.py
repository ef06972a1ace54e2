#!/usr/bin/env python3
"""Input-pipeline throughput: examples/s from sharded TFRecords.

  benchmarks/input_pipeline.py
  benchmarks/input_pipeline.py --prepared_dir=runs/data/drive --json=out.json

For the built-in `synthetic` (lesion, 64x64) and `synthetic_vessels` (96x96)
datasets, prepared into a temporary folder, and for every `--prepared_dir`,
it times the training stream of `PreparedData.dataset` (r2u.data.prepared) in these
variants: cached / uncached x whole images / random patches x with / without
augmentation. Each variant first runs one epoch (filling the cache), then
`--repeats` blocks of `--batches` batches; the table shows the median rate in
batch elements per second (images, or patches) and the source images/s.
"""

import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the r2u commands, before TF
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import tensorflow as tf  # noqa: E402

from r2u.data import prepare  # noqa: E402
from r2u.data import prepared  # noqa: E402

_PREPARED = flags.DEFINE_multi_string(
    "prepared_dir", [], "Prepared dataset folders (e.g. DRIVE, ISIC) to add.")
_JSON = flags.DEFINE_string("json", None, "Also write the results to this file.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Batches per timed block.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed blocks (the median is shown).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Whole-image batch size.")
_PATCH_SIZE = flags.DEFINE_integer("patch_size", 48, "Patch side.")
_PATCHES = flags.DEFINE_integer("patches_per_image", 16, "Patches per image.")
_PATCH_BATCH = flags.DEFINE_integer("patch_batch_size", 32, "Patch batch size.")
_MAX_WARMUP = flags.DEFINE_integer("max_warmup", 300, "Cap on warm-up batches.")
_SYNTHETIC = flags.DEFINE_bool("synthetic", True, "Benchmark the synthetic datasets.")
_CHANNELS = flags.DEFINE_integer("channels", None, "Network input channels "
                                 "(default: as stored; the retina presets use 1).")


def _variants(data: prepared.PreparedData) -> list[dict]:
    """The pipeline settings to time for one dataset."""
    whole = bool(data.image_shape)
    out = []
    for patches in ([False, True] if whole else [True]):
        for cache in (True, False):
            for augment in (True, False):
                out.append({"patches": patches, "cache": cache, "augment": augment})
    return out


def _time_variant(data: prepared.PreparedData, variant: dict) -> dict:
    """Median examples/s of one variant after a one-epoch warm-up."""
    kwargs = dict(training=True, cache=variant["cache"], augment=variant["augment"],
                  channels=_CHANNELS.value)
    per_image = 1
    if variant["patches"]:
        kwargs.update(batch_size=_PATCH_BATCH.value, patch_size=_PATCH_SIZE.value,
                      patches_per_image=_PATCHES.value)
        per_image = _PATCHES.value
    else:
        kwargs.update(batch_size=_BATCH_SIZE.value)
    batch = kwargs["batch_size"]
    images = data.split("train").num_examples
    warmup = min(_MAX_WARMUP.value, -(-images * per_image // batch) + 1)
    iterator = iter(data.dataset("train", **kwargs))
    for _ in range(warmup):
        next(iterator)
    rates = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        for _ in range(_BATCHES.value):
            out = next(iterator)
        out["image"].numpy()
        rates.append(_BATCHES.value * batch / (time.perf_counter() - start))
    median = statistics.median(rates)
    return {**variant, "dataset": data.name,
            "shape": list(out["image"].shape), "examples_per_s": median,
            "images_per_s": median / per_image, "all_examples_per_s": rates,
            "warmup_batches": warmup}


def _synthetic_dirs(root: str) -> list[str]:
    dirs = []
    for name in ("synthetic", "synthetic_vessels"):
        out = os.path.join(root, name)
        prepare.prepare(name, None, out)
        dirs.append(out)
    return dirs


def _table(results: list[dict]) -> str:
    head = (f"{'dataset':<18} {'input':<8} {'cache':<6} {'augment':<8} "
            f"{'batch shape':<18} {'examples/s':>11} {'images/s':>9}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['dataset']:<18} {'patches' if r['patches'] else 'whole':<8} "
            f"{str(r['cache']):<6} {str(r['augment']):<8} {str(r['shape']):<18} "
            f"{r['examples_per_s']:>11.1f} {r['images_per_s']:>9.1f}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    results = []
    with tempfile.TemporaryDirectory() as root:
        dirs = (_synthetic_dirs(root) if _SYNTHETIC.value else []) + _PREPARED.value
        for data_dir in dirs:
            data = prepared.load(data_dir)
            for variant in _variants(data):
                logging.info("timing %s %s", data.name, variant)
                results.append(_time_variant(data, variant))
    print(_table(results))
    print(f"(median of {_REPEATS.value} x {_BATCHES.value} batches; "
          f"{os.cpu_count()} CPUs; tf {tf.__version__})")
    if _JSON.value:
        with open(_JSON.value, "w", encoding="utf-8") as f:
            json.dump({"results": results, "cpus": os.cpu_count(),
                       "tensorflow": tf.__version__,
                       "flags": {k: v.value for k, v in [
                           ("batches", _BATCHES), ("repeats", _REPEATS),
                           ("channels", _CHANNELS),
                           ("batch_size", _BATCH_SIZE), ("patch_size", _PATCH_SIZE),
                           ("patches_per_image", _PATCHES),
                           ("patch_batch_size", _PATCH_BATCH)]}}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    app.run(main)
