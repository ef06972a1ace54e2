"""Segments image files with a trained model and writes the results as PNG files.

For every input image `<name>` it writes, into one output folder, for a binary model:

    <name>_prob.png      foreground probability * 255 (8-bit gray)
    <name>_mask.png      0/255 mask: probability > threshold
    <name>_overlay.png   the input with the predicted foreground tinted green

and for a model of K > 2 classes:

    <name>_labels.png    palette PNG: each pixel's value is its class index (any tool
                         reads it as the label map), shown in a fixed colour per class
    <name>_overlay.png   the input with each class tinted in its colour, and a legend

Output names come from input names through `files.safe_name`, so nothing is ever
written outside the output folder, and every file is written to a temporary name and
renamed (`r2u.files`).
Images larger than a pixel budget are predicted in overlapping tiles. A file that cannot
be read or predicted is reported and skipped; the others are still processed.
"""

import dataclasses
import os
from typing import Callable, List, Optional, Sequence

import numpy as np
from absl import logging

from r2u.inference import loading
from r2u import figures
from r2u import errors
from r2u import files
from r2u.data import imageio
from r2u.data import nnunet
from r2u.data import retina

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".ppm",
                    ".pgm", ".pnm", ".pbm")
SUFFIXES = ("_prob.png", "_mask.png", "_overlay.png")
CLASS_SUFFIXES = ("_labels.png", "_overlay.png")
MAX_SIDE = 2048
MAX_PIXELS = 2048 * 2048
AUTO_TILE = 512
_MAX_ERROR = 400  # characters of an error message (TF errors can be pages long)

# (index, total, path, error message or None) after each file.
Report = Callable[[int, int, str, Optional[str]], None]


@dataclasses.dataclass(frozen=True)
class Options:
    """How to predict and what counts as a large image.

    Attributes:
      threshold: a pixel is foreground iff its probability > threshold.
      tile: 0 for automatic (whole images unless large); > 0 always tiles.
      stride: tile offset; 0 means tile // 2.
      max_side: images with a longer side are tiled (with `auto_tile`).
      max_pixels: images with more pixels are tiled (with `auto_tile`).
      auto_tile: tile size for large images.
    """
    threshold: float = 0.5
    tile: int = 0
    stride: int = 0
    max_side: int = MAX_SIDE
    max_pixels: int = MAX_PIXELS
    auto_tile: int = AUTO_TILE


def is_image_name(path: str) -> bool:
    """True for the supported image extensions, optionally gzipped."""
    name = path.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return name.endswith(IMAGE_EXTENSIONS)


def list_inputs(path: str, exclude: Optional[str] = None) -> List[str]:
    """The image files to predict: `path` itself, or the images under folder `path`.

    Folders are walked without following symbolic links to folders, so link loops are
    harmless; files under `exclude` (the output folder) are left out.
    """
    if not os.path.isdir(path):
        return [path]
    skip = os.path.realpath(exclude) if exclude else None
    found = []
    for root, dirs, names in os.walk(path, followlinks=False):
        dirs.sort()
        if skip and os.path.realpath(root) == skip:
            dirs[:] = []
            continue
        found.extend(os.path.join(root, f) for f in sorted(names) if is_image_name(f))
    return found


def dataset_inputs(path: str) -> Optional[List]:
    """The test images of a folder dataset (`r2u.data.folder`), or None if `path` is
    not one: an nnU-Net dataset (its imagesTs/) or images folder gives its cases, each
    {"id", "images": channel files, ...}; a train/ + test/ pairs folder test/images.

    Raises:
      DataError: a bad dataset.json or case, naming the file.
    """
    meta = os.path.join(path, "dataset.json")
    images = os.path.join(path, "imagesTs")
    if not os.path.isfile(meta):
        meta, images = os.path.join(os.path.dirname(os.path.abspath(path)),
                                    "dataset.json"), path
    if os.path.isfile(meta) and os.path.isdir(images):
        channels, ending, _, _ = nnunet.read_dataset_json(meta)
        return nnunet.image_cases(images, ending, channels)
    if os.path.isdir(os.path.join(path, "train", "images")):
        test = os.path.join(path, "test", "images")
        if not os.path.isdir(test):
            raise errors.DataError(f"{test}: no such folder (the test images of a "
                                   "dataset folder are predicted)")
        return list_inputs(test)
    return None


def output_stem(path: str, root: Optional[str] = None) -> str:
    """The sanitised output name of input `path` (relative to folder `root`)."""
    rel = os.path.relpath(path, root) if root else os.path.basename(path)
    parts = [p for p in rel.split(os.sep) if p not in ("", ".", "..")] or ["image"]
    last = parts[-1]
    if last.lower().endswith(".gz"):
        last = last[:-3]
    stem, ext = os.path.splitext(last)
    parts[-1] = stem if ext.lower() in IMAGE_EXTENSIONS else last
    return files.safe_name("__".join(parts))


def choose_tile(height: int, width: int, options: Options) -> int:
    """The tile size for an image: `options.tile`, else `auto_tile` if it is large."""
    if options.tile:
        return options.tile
    if max(height, width) > options.max_side or height * width > options.max_pixels:
        return options.auto_tile
    return 0


def predict_file(predictor: loading.Predictor, source, out_dir: str, stem: str,
                 options: Options) -> List[str]:
    """Predicts one image file and writes its PNGs (see the module docstring); returns their paths.

    `source` is an image file, or an nnU-Net case (`dataset_inputs`) whose channel
    files are stacked.

    Raises:
      DataError: the file cannot be read as an image.
      ValueError: the output name would leave `out_dir` (cannot happen for
        `files.safe_name` stems, checked anyway).
    """
    # One path component with no separator: the file lands directly in out_dir.
    if stem in ("", ".", "..") or "/" in stem or (os.altsep or "/") in stem or \
            os.sep in stem:
        raise ValueError(f"{_name(source)}: output name {stem!r} would leave {out_dir}")
    names = class_names(predictor)
    suffixes = SUFFIXES if len(names) == 2 else CLASS_SUFFIXES
    targets = [os.path.join(out_dir, stem + suffix) for suffix in suffixes]
    if isinstance(source, dict):
        image, path = nnunet.read_image(source), source["images"][0]
    else:  # uint8 [H, W, 1 | 3]
        image = imageio.read_image(source, channels=None,
                                   sixteen_bit=predictor.spec.sixteen_bit)
        path = source
    height, width = image.shape[:2]
    multiple = 2**predictor.model_cfg.depth
    tile = -(-choose_tile(height, width, options) // multiple) * multiple  # round up
    if tile:
        logging.info("%s: %dx%d, tiled inference with %d px tiles", path, width, height,
                     tile)
    # A model standardised over the field of view gets it as preparation derives it
    # for fundus photographs without a mask (STARE, CHASE).
    fov = retina.derive_fov(image, name=path) if predictor.spec.needs_fov else None
    probs = predictor.predict_image(image, tile=tile, stride=options.stride, fov=fov)
    if len(names) > 2:
        labels = probs.argmax(-1).astype(np.uint8)
        files.write_palette_png(targets[0], labels, figures.class_palette(len(names)))
        files.write_png(targets[1], figures.label_overlay(image, labels, names))
        return targets
    prob = probs[..., 1]
    predicted = prob > options.threshold
    files.write_png(targets[0], np.round(np.clip(prob, 0.0, 1.0) * 255.0))
    files.write_png(targets[1], predicted.astype(np.uint8) * 255)
    files.write_png(targets[2], figures.overlay(image, predicted))
    return targets


def class_names(predictor: loading.Predictor) -> tuple:
    """The model's class names (index order), or background, class_1, ... unnamed."""
    count = predictor.model_cfg.num_classes
    names = tuple(predictor.spec.classes)
    if len(names) == count:
        return names
    return ("background",) + tuple(f"class_{k}" for k in range(1, count))


def predict_all(predictor: loading.Predictor, inputs: Sequence[str], out_dir: str,
                options: Options, root: Optional[str] = None,
                report: Optional[Report] = None) -> List[tuple]:
    """Predicts every input; a failing file is reported and skipped.

    Args:
      predictor: the loaded model.
      inputs: image paths (see `list_inputs`).
      out_dir: output folder (created if needed).
      options: see `Options`.
      root: the input folder, to name outputs by relative path; None uses base names.
      report: called after each file with (index, total, path, error or None); without
        it, failures are logged as warnings.

    Returns:
      [(path, one-line error message)] of the files that failed.
    """
    os.makedirs(out_dir, exist_ok=True)
    used, failures = set(), []
    for index, source in enumerate(inputs, 1):
        path = _name(source)
        stem = (files.safe_name(source["id"]) if isinstance(source, dict)
                else output_stem(path, root))
        base, n = stem, 1
        while stem in used:  # two inputs sanitised to one name
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        error = None
        try:
            predict_file(predictor, source, out_dir, stem, options)
        except Exception as e:  # pylint: disable=broad-except
            # One bad file (undecodable, too large, odd mode) must not stop the batch.
            error = " ".join(str(e).split())[:_MAX_ERROR] or type(e).__name__
            if not error.startswith(path):
                error = f"{path}: {type(e).__name__}: {error}"
            failures.append((path, error))
            if not report:
                logging.warning("%s", error)
        else:
            logging.info("[%d/%d] %s -> %s_*.png", index, len(inputs), path, stem)
        if report:
            report(index, len(inputs), path, error)
    return failures


def _name(source) -> str:
    """The file that names an input in messages: itself, or a case's first file."""
    return source["images"][0] if isinstance(source, dict) else source
