"""Segment image files with a trained model.

  r2u-predict --model_dir=runs/isic-r2unet --input=photos/ --out_dir=predictions

For every image under --input (a file, or a folder walked recursively without following
symbolic links to folders; PNG, JPEG, TIFF, BMP, GIF, PPM/PGM, optionally .gz) it
writes into --out_dir, for a binary model, <name>_prob.png (probability * 255),
<name>_mask.png (0/255) and <name>_overlay.png; for a model of more classes,
<name>_labels.png (a palette PNG whose values are the class indices, one fixed colour
per class) and <name>_overlay.png (the classes tinted over the image, with a legend).
Names are sanitised so nothing is written outside --out_dir; files in a subfolder are
named <subfolder>__<name>. Gray and RGB inputs are converted to what the model
expects. Images larger than --max_side or --max_pixels are predicted in tiles.
--input may also be a folder dataset (`r2u-train --dataset=folder`): an nnU-Net
dataset (or its imagesTs/), whose cases' channel files are read together and named by
case, or a train/ + test/ pairs folder, whose test/images are predicted.
Loading a model runs what it contains: use only model folders you trust.

A file that cannot be read is reported on stderr (one line naming it and the problem)
and skipped. Exit status: 0 if every file was written, 1 if any file failed, 2 if the
model could not be loaded, --out_dir cannot be written or the input holds no image file.
"""

import os
import sys

from r2u import cli

cli.setup()  # before TensorFlow is imported

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from r2u import errors  # noqa: E402
from r2u import files  # noqa: E402
from r2u.inference import predict  # noqa: E402

_MODEL = cli.define_model_flags(
    tile_help="0: whole images unless large; else always tiles of this size "
    "(rounded up to a multiple of 2**depth).")
_INPUT = flags.DEFINE_string("input", None, "Image file or folder.", required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder.", required=True)
_MAX_SIDE = flags.DEFINE_integer("max_side", predict.MAX_SIDE,
                                 "Tile images with a longer side.", lower_bound=1)
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", predict.MAX_PIXELS,
                                   "Tile images with more pixels.", lower_bound=1)
_AUTO_TILE = flags.DEFINE_integer("auto_tile", predict.AUTO_TILE,
                                  "Tile size for large images.", lower_bound=1)

def _report(index: int, total: int, path: str, error) -> None:
    del index, total, path  # progress goes to the log (stderr), one line per file
    if error:
        print(f"error: {error}", file=sys.stderr, flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not os.path.exists(_INPUT.value) and not os.path.islink(_INPUT.value):
        print(f"predict: error: {_INPUT.value}: no such file or folder",
              file=sys.stderr)
        return 2
    try:
        predictor = _MODEL.predictor()
    except (ValueError, OSError) as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 2
    try:
        files.ensure_writable_folder(_OUT_DIR.value)
    except OSError as e:  # else every file would fail alike, one line each
        print(f"predict: error: {e}", file=sys.stderr)
        return 2
    threshold = _MODEL.threshold.value
    if threshold is None:
        threshold = predictor.threshold
    options = predict.Options(threshold=threshold, tile=_MODEL.tile.value,
                              stride=_MODEL.stride.value, max_side=_MAX_SIDE.value,
                              max_pixels=_MAX_PIXELS.value, auto_tile=_AUTO_TILE.value)
    try:
        inputs = predict.dataset_inputs(_INPUT.value)
    except errors.DataError as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 2
    if inputs is None:
        inputs = predict.list_inputs(_INPUT.value, exclude=_OUT_DIR.value)
    if not inputs:
        print(f"predict: error: {_INPUT.value}: no image files found", file=sys.stderr)
        return 2
    root = _INPUT.value if os.path.isdir(_INPUT.value) else None
    failures = predict.predict_all(predictor, inputs, _OUT_DIR.value, options,
                                   root=root, report=_report)
    print(f"{len(inputs) - len(failures)} of {len(inputs)} images written to "
          f"{_OUT_DIR.value}" + (f"; {len(failures)} failed" if failures else ""))
    return 1 if failures else 0


run = cli.entry_point(main)  # `r2u-predict` and `bin/predict`


if __name__ == "__main__":
    run()
