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

Images and masks come in many sizes, and may differ from each other (our
copy has 256x256 training images with original-size masks), so both are
resized to a common size: the image bilinear (antialiased), the mask
nearest-neighbour. There is no field of view: `fov` is all ones.
"""

import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging

from r2u.data import imageio

DEFAULT_SIZE = (256, 256)
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
        raise imageio.DataError(
            f"{data_dir}: wrong directory layout, expected folder "
            f"{os.path.basename(masks)!r} next to {os.path.basename(images)!r}")
    files = {}
    for m in filter(None, map(_IMAGE.fullmatch, sorted(os.listdir(images)))):
        if m[1] in files:
            raise imageio.DataError(
                f"{os.path.join(images, files[m[1]])} and "
                f"{os.path.join(images, m[0])}: two images for id {m[1]!r}")
        files[m[1]] = m[0]
    image_ids = sorted(files)
    if not image_ids:
        raise imageio.DataError(f"{images}: no ISIC_NNNNNNN.jpg images")
    mask_ids = {m[1] for m in map(_MASK.fullmatch, os.listdir(masks)) if m}
    entries = []
    for image_id in image_ids:
        image = os.path.join(images, files[image_id])
        if image_id not in mask_ids:
            raise imageio.DataError(
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
        raise imageio.DataError(f"{data_dir}: ISIC 2017 folder not found")
    for split in required:
        images = _folders(data_dir, split)[0]
        if not os.path.isdir(images):
            raise imageio.DataError(
                f"{data_dir}: wrong directory layout, expected folder "
                f"{os.path.basename(images)!r} (and its _Part1_GroundTruth)")
    return {split: _list_split(data_dir, split) for split in SPLIT_FOLDERS
            if os.path.isdir(_folders(data_dir, split)[0])}


def read_example(entry: dict,
                 image_size: tuple[int, int] = DEFAULT_SIZE) -> dict:
    """Reads, checks and resizes one pair to `image_size` (height, width)."""
    image = imageio.resize_image(
        imageio.read_image(entry["image"], channels=3), image_size)
    mask = imageio.resize_mask(imageio.read_mask(entry["mask"]), image_size)
    return {"id": entry["id"], "image": image, "mask": mask,
            "fov": np.ones(image_size, np.uint8)}


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
        raise imageio.DataError(
            f"{data_dir}: no {split} split (expected folder "
            f"{os.path.basename(_folders(data_dir, split)[0])!r})")
    entries = splits[split]
    if ids is not None:
        by_id = {e["id"]: e for e in entries}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise imageio.DataError(
                f"{data_dir}: {split} split has no image {unknown[0]!r}")
        entries = [by_id[i] for i in ids]
    for entry in entries[:limit]:
        yield read_example(entry, image_size)
