"""Prepares a dataset into TFRecord shards + manifest.json.

  r2u-prepare --dataset=drive --out_dir=runs/data/drive
  r2u-prepare --dataset=isic --data_dir=/path/to/ISIC2017 --image_size=256
  r2u-prepare --dataset=synthetic
  r2u-prepare --dataset=folder --data_dir=/path/to/Dataset120_Roads

Raw data defaults to $R2U_DATA_DIR/<folder> (else <repo>/../shared/data).
`--dataset=folder` reads your own folder (required --data_dir), K classes: an
nnU-Net v2 raw dataset (dataset.json, imagesTr/, labelsTr/, optionally
imagesTs/ + labelsTs/) or image/label pairs (train/images/ + train/masks/,
optionally test/..., class names from an optional labels.json).
Re-running with the same inputs and options does nothing.
"""

import os
import sys

from r2u import cli

cli.setup()  # before TensorFlow is imported

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from r2u import errors  # noqa: E402
from r2u.data import prepare  # noqa: E402

_DATASET = flags.DEFINE_enum("dataset", None, list(prepare.DATASETS),
                             "Dataset to prepare.", required=True)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Raw data folder (default: $R2U_DATA_DIR/<dataset folder>; "
    "required for --dataset=folder).")
_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "Output folder (default: runs/data/<dataset> in the repo; in the "
    "current folder when r2u is installed, not run from a checkout).")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None, "Square output size (default: 256 for isic, native for "
    "retina and folder datasets, 64/96 for synthetic/synthetic_vessels).",
    lower_bound=1)
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", None, "Shards per split (default: one per 256 examples, <=16).",
    lower_bound=1)
_LIMIT = flags.DEFINE_integer("limit", None, "At most this many examples per "
                              "split (quick runs).", lower_bound=1)
_FORCE = flags.DEFINE_bool("force", False, "Rewrite even if up to date.")
_VALIDATION_COUNT = flags.DEFINE_integer(
    "validation_count", None, "Training images held out as the validation split "
    "(default: 20% for retina and folder datasets, 10% for isic).", lower_bound=1)
_SEED = flags.DEFINE_integer(
    "seed", 0, "Seed of the synthetic datasets and of the draw of a folder "
    "dataset's validation cases.")


def _progress(split: str, done: int, total: int) -> None:
    end = "\n" if done == total else ""
    sys.stderr.write(f"\r{split}: {done}/{total} examples{end}")
    sys.stderr.flush()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    out_dir = _OUT_DIR.value or os.path.join(cli.checkout_root() or "", "runs", "data",
                                             _DATASET.value)
    try:
        manifest = prepare.prepare(
            _DATASET.value, _DATA_DIR.value, out_dir,
            image_size=_IMAGE_SIZE.value, num_shards=_NUM_SHARDS.value,
            limit=_LIMIT.value, seed=_SEED.value, force=_FORCE.value,
            progress=_progress, validation_count=_VALIDATION_COUNT.value)
    except (errors.DataError, ValueError, OSError) as e:
        sys.stderr.write(f"prepare: error: {e}\n")
        return 1
    counts = ", ".join(f"{split} {info['num_examples']}"
                       for split, info in sorted(
                           manifest["splits"].items(),
                           key=lambda kv: ("train", "validation", "test").index(kv[0])))
    weights = ", ".join(f"{w:.3f}" for w in manifest["class_weights"])
    classes = ", ".join(manifest.get("classes") or ())
    print(f"{out_dir}: {counts}; classes [{classes}]; class weights [{weights}]")
    return 0


run = cli.entry_point(main)  # `r2u-prepare` and `bin/prepare`


if __name__ == "__main__":
    run()
