"""Evaluate a trained model on a test split: per-image and aggregate scores as JSON.

  r2u-evaluate --model_dir=runs/drive-r2unet --split=test --out=runs/drive-test.json \
      --second_observer --figures=4
  r2u-evaluate --model_dir=runs/drive-r2unet/export --dataset=drive --out=eval.json

MODEL_DIR is a training folder (restores best/, else the latest ckpt/, rebuilt from its
config.json; or its export/ SavedModel if it has no checkpoint) or a SavedModel folder.
Loading a model runs what it contains: use only model folders you trust. The dataset and
its folder default to those of config.json; a raw folder is prepared into MODEL_DIR/data
(or, for a SavedModel folder, next to --out). Only field-of-view pixels are scored;
"pooled" counts all pixels of the split together, "per_image_mean" averages the images.
Exit status: 0 on success, 1 on an error (printed on stderr).
"""

import os
import sys

from r2u import cli

cli.setup()  # before TensorFlow is imported

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from r2u import errors  # noqa: E402
from r2u.evaluation import evaluate  # noqa: E402
from r2u import files  # noqa: E402
from r2u.data import prepare  # noqa: E402

_MODEL = cli.define_model_flags(
    tile_help="0: whole images; else overlapping tiles of this size (a "
    "multiple of 2**depth) with averaged probabilities.")
_DATASET = flags.DEFINE_enum("dataset", None, list(prepare.DATASETS),
                             "Dataset (default: the one of config.json).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Prepared or raw dataset folder "
                                "(default: the one of config.json).")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate.")
_OUT = flags.DEFINE_string("out", None, "Output JSON file.", required=True)
_SECOND = flags.DEFINE_bool(
    "second_observer", False, "Also score the second human observer against the "
    "first (splits with mask2: the DRIVE test split).")
_MAX_IMAGES = flags.DEFINE_integer("max_images", None,
                                   "Evaluate only the first N images.", lower_bound=1)
_FIGURES = flags.DEFINE_integer(
    "figures", 0, "Write input | truth | prediction | errors PNGs of the first N "
    "images.", lower_bound=0)
_FIGURES_DIR = flags.DEFINE_string("figures_dir", None, "Folder of the figures "
                                   "(default: <out without .json>_figures).")
_PROBS_DIR = flags.DEFINE_string("probs_dir", None, "Also write float32 probability "
                                 "maps as <id>.npy into this folder.")

def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    out = _OUT.value
    figures_dir = _FIGURES_DIR.value or os.path.splitext(out)[0] + "_figures"
    options = evaluate.Options(
        threshold=_MODEL.threshold.value, tile=_MODEL.tile.value,
        stride=_MODEL.stride.value,
        second_observer=_SECOND.value, max_images=_MAX_IMAGES.value,
        figures=_FIGURES.value, figures_dir=figures_dir, probs_dir=_PROBS_DIR.value)
    try:
        predictor = _MODEL.predictor()
        # Fail now rather than after the whole evaluation.
        files.ensure_writable_folder(os.path.dirname(os.path.abspath(out)))
        training_dir = _MODEL.model_dir.value if predictor.experiment else None
        work_dir = training_dir or os.path.dirname(os.path.abspath(out))
        data_dir, dataset = evaluate.resolve_data(predictor, work_dir, _DATASET.value,
                                                    _DATA_DIR.value)
        result = evaluate.evaluate(predictor, data_dir, _SPLIT.value, options)
        files.write_json(out, result, allow_nan=False, newline=True)
    except (errors.DataError, ValueError, OSError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 1
    inference = result["inference"]
    mode = {"tiled": f"tiles {options.tile}", "whole": "whole images",
            "sliding_window": f"sliding windows of {inference['window']} px"}[
                inference["mode"]]
    threshold = ("argmax" if inference["threshold"] is None
                 else f"threshold {inference['threshold']}")
    print(f"{dataset} {_SPLIT.value}: {result['num_images']} images, {mode}, "
          f"{threshold}, model from {predictor.source} {predictor.path}")
    print(evaluate.format_table(result))
    print(f"wrote {out} ({result['wall_time_seconds']:.1f} s)")
    return 0


run = cli.entry_point(main)  # `r2u-evaluate` and `bin/evaluate`


if __name__ == "__main__":
    run()
