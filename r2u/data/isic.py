"""Reader for ISIC 2017 Part 1 (skin lesion segmentation).

Official layout under the data directory:
`ISIC-2017_{Training,Validation,Test_v2}_Data/ISIC_NNNNNNN.jpg` and
`ISIC-2017_{Training,Validation,Test_v2}_Part1_GroundTruth/
ISIC_NNNNNNN_segmentation.png` (masks 0/255). Training is required (and
validation by `prepare`); the other splits are read when their folders
exist. Images may also be `.jpeg`
or `.png` (any case), but one id with two image files is an error: which
one is meant is unknown. Other files (e.g. `*_superpixels.png`, metadata
CSVs) are ignored.

Images and masks come in many sizes, and a mask may differ from its image
(our copy has 256x256 training images with original-size masks;
`check_mask_fits` says which differences are accepted), so both are resized
to a common size: the image bilinear (antialiased), the mask
nearest-neighbour. There is no field of view: `fov` is all ones.

`protocol_splits` is what training uses: 10% of the official training pairs
(evenly spaced by id) are held out as `validation` (model selection and the
threshold), the official Validation folder (or Test_v2 when present) is
`test`, kept at its original resolution because the challenge scores each
image at that resolution.
"""

import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging

from r2u import errors
from r2u.data import imageio

DEFAULT_SIZE = (256, 256)
VALIDATION_FRACTION = 0.1
SPLIT_FOLDERS = {"train": "Training", "validation": "Validation",
                 "test": "Test_v2"}
_IMAGE = re.compile(r"(ISIC_\d{7})\.(?i:jpe?g|png)")
_MASK = re.compile(r"(ISIC_\d{7})_segmentation\.png")


def _folders(data_dir: str, split: str) -> tuple[str, str]:
    tag = SPLIT_FOLDERS[split]
    return (os.path.join(data_dir, f"ISIC-2017_{tag}_Data"),
            os.path.join(data_dir, f"ISIC-2017_{tag}_Part1_GroundTruth"))


def _list_split(data_dir: str, split: str) -> list[dict]:
    images, masks = _folders(data_dir, split)
    if not os.path.isdir(masks):
        raise errors.DataError(
            f"{data_dir}: wrong directory layout, expected folder "
            f"{os.path.basename(masks)!r} next to {os.path.basename(images)!r}")
    files = {}
    for m in filter(None, map(_IMAGE.fullmatch, sorted(os.listdir(images)))):
        if m[1] in files:
            raise errors.DataError(
                f"{os.path.join(images, files[m[1]])} and "
                f"{os.path.join(images, m[0])}: two images for id {m[1]!r}")
        files[m[1]] = m[0]
    image_ids = sorted(files)
    if not image_ids:
        raise errors.DataError(f"{images}: no ISIC_NNNNNNN.jpg images")
    mask_ids = {m[1] for m in map(_MASK.fullmatch, os.listdir(masks)) if m}
    entries = []
    for image_id in image_ids:
        image = os.path.join(images, files[image_id])
        if image_id not in mask_ids:
            raise errors.DataError(
                f"{image}: missing mask, expected "
                f"{os.path.join(masks, image_id + '_segmentation.png')}")
        entries.append({"id": image_id, "image": image, "mask": os.path.join(
            masks, f"{image_id}_segmentation.png")})
    orphans = mask_ids.difference(image_ids)
    if orphans:
        logging.warning("%s: %d masks without an image ignored (e.g. %s)",
                        masks, len(orphans), min(orphans))
    return entries


def list_splits(data_dir: str, required: Sequence[str] = ("train",)
                ) -> dict[str, list[dict]]:
    """Lists image/mask pairs per split, sorted by ID.

    Args:
      data_dir: the ISIC 2017 folder.
      required: splits whose folders must exist; the others are optional.

    Returns:
      {split: [{"id": "ISIC_0000000", "image": path, "mask": path}, ...]}.

    Raises:
      DataError: missing directory or required split folder, empty folder, an
        image without mask, two images for one id.
    """
    if not os.path.isdir(data_dir):
        raise errors.DataError(f"{data_dir}: ISIC 2017 folder not found")
    for split in required:
        images = _folders(data_dir, split)[0]
        if not os.path.isdir(images):
            raise errors.DataError(
                f"{data_dir}: wrong directory layout, expected folder "
                f"{os.path.basename(images)!r} (and its _Part1_GroundTruth)")
    return {split: _list_split(data_dir, split) for split in SPLIT_FOLDERS
            if os.path.isdir(_folders(data_dir, split)[0])}


def protocol_splits(data_dir: str, validation_count: int | None = None
                    ) -> dict[str, list[dict]]:
    """train / validation (held out of the official training pairs) / test.

    `validation_count` training pairs, evenly spaced in id order (default
    10%), become validation; test is the official Test_v2 when present, else
    the official Validation split (absent: no test split).
    """
    official = list_splits(data_dir)
    train = official["train"]
    count = validation_count or max(1, round(VALIDATION_FRACTION * len(train)))
    if not 0 < count < len(train):
        raise errors.DataError(
            f"{data_dir}: cannot hold out {count} of {len(train)} training pairs "
            f"for validation (need 1 to {len(train) - 1})")
    held = {round((k + 0.5) * len(train) / count - 0.5) for k in range(count)}
    splits = {"train": [e for i, e in enumerate(train) if i not in held],
              "validation": [e for i, e in enumerate(train) if i in held]}
    test = official.get("test") or official.get("validation")
    if test:
        splits["test"] = test
    return splits


def read_example(entry: dict,
                 image_size: tuple[int, int] | None = DEFAULT_SIZE) -> dict:
    """Reads, checks and resizes one pair to `image_size` (height, width).

    With `image_size` None the image keeps its size and the mask is brought to
    it (nearest). A mask whose size differs from its image's is checked first
    (`check_mask_fits`).
    """
    image = imageio.read_image(entry["image"], channels=3)
    mask = imageio.read_mask(entry["mask"])
    check_mask_fits(entry, image.shape[:2], mask.shape, squashed_ok=bool(image_size))
    image_size = image_size or image.shape[:2]
    image = imageio.resize_image(image, image_size)
    mask = imageio.resize_mask(mask, image_size)
    return {"id": entry["id"], "image": image, "mask": mask,
            "fov": np.ones(image_size, np.uint8)}


def check_mask_fits(entry: dict, image_shape: tuple[int, int],
                    mask_shape: tuple[int, int], squashed_ok: bool) -> None:
    """Refuses a mask that does not fit its image; logs the ones that will be resized.

    A mask of the image's size fits. A mask of its aspect ratio (to a pixel) is a
    pure rescale: resized, one log line. Any other aspect ratio would be stretched
    over a different picture, so it is refused, one line naming the mask, except
    when `squashed_ok` and the image is a square smaller than the mask both ways:
    an image already squashed to a square, as every training image of the ISIC
    2017 copy in shared/data (256x256 JPEGs, original-size masks; refusing those
    would refuse all 2,000 pairs). Such masks are resized with the image, logged
    at verbosity 1 (the first one at INFO). The test split, scored at its original
    resolution, never passes `squashed_ok`.

    Raises:
      DataError: the mask's aspect ratio differs from its image's.
    """
    (h, w), (mh, mw) = image_shape, mask_shape
    if (h, w) == (mh, mw):
        return
    sizes = f"mask {mw}x{mh}, image {entry['image']} {w}x{h} (width x height)"
    if abs(mh * w - mw * h) <= max(mh, mw, h, w):  # a pixel off at most
        logging.info("%s: %s: a rescale, resized", entry["mask"], sizes)
    elif squashed_ok and h == w and h < mh and w < mw:
        note = "%s: %s: taken as an image squashed to a square, mask resized"
        if logging.vlog_is_on(1):
            logging.vlog(1, note, entry["mask"], sizes)
        else:
            logging.log_first_n(logging.INFO, note + " (all such: --verbosity=1)", 1,
                                entry["mask"], sizes)
    else:
        raise errors.DataError(f"{entry['mask']}: {sizes}: not a rescale of the "
                               "image (another aspect ratio)")


def examples(data_dir: str, split: str,
             image_size: tuple[int, int] = DEFAULT_SIZE,
             ids: Sequence[str] | None = None,
             limit: int | None = None) -> Iterator[dict]:
    """Yields examples of `split`, optionally only `ids` and/or the first `limit`.

    Raises:
      DataError: as `list_splits`, for an unknown split or id, and for
        unreadable or non-binary files.
    """
    splits = list_splits(data_dir)
    if split not in splits:
        raise errors.DataError(
            f"{data_dir}: no {split} split (expected folder "
            f"{os.path.basename(_folders(data_dir, split)[0])!r})")
    entries = splits[split]
    if ids is not None:
        by_id = {e["id"]: e for e in entries}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise errors.DataError(
                f"{data_dir}: {split} split has no image {unknown[0]!r}")
        entries = [by_id[i] for i in ids]
    for entry in entries[:limit]:
        yield read_example(entry, image_size)
