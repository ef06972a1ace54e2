"""Readers for the retinal vessel datasets DRIVE, STARE and CHASE_DB1.

Each `*_splits(data_dir)` lists the official files as entries
`{"id", "image", "mask", "fov", ["mask2"]}` (paths; `fov` None when the
dataset ships no FOV masks) per split; `read_example` turns an entry into an
example dict. Splits:

- DRIVE: the official train (21-40) and test (01-20); test keeps the second
  observer (`2nd_manual`) as `mask2`.
- STARE: the 20 Hoover-labelled images (`labels-ah`) sorted by number, the
  first 10 train and the last 10 test (`labels-vk` becomes test `mask2`
  when present).
- CHASE_DB1: the 28 images sorted by name, the first 20 (children 01-10)
  train and the last 8 test; `1stHO` is the mask, `2ndHO` test `mask2`.

None of them has a validation split, so the last training images (by id)
are held out of training as `validation`: 20% of them by default (DRIVE
37-40, STARE the last 2 of the 10, CHASE_DB1 children 09 and 10, both
eyes), or `validation_count`. Validation never shares an image with train.
The pooled `retina` dataset concatenates whichever of `DRIVE/`, `STARE/`
and `CHASE_DB1/` exist under its directory, ids prefixed by dataset name.
"""

import os
import re
from collections.abc import Iterator

import numpy as np

from r2u import errors
from r2u.data import components
from r2u.data import imageio

VALIDATION_FRACTION = 0.2
FOV_THRESHOLD = 20
STARE_TRAIN, STARE_TOTAL = 10, 20
CHASE_TRAIN, CHASE_TOTAL = 20, 28
POOLED = (("drive", "DRIVE"), ("stare", "STARE"), ("chase", "CHASE_DB1"))
DESCRIPTIONS = {  # For manifests.
    "drive": "DRIVE: official train (21-40) / test (01-20); official FOV "
             "masks; test mask2 = 2nd_manual.",
    "stare": "STARE: the 20 labels-ah images sorted by number, first 10 "
             "train, last 10 test; mask2 = labels-vk when present.",
    "chase": "CHASE_DB1: 28 images sorted by name, first 20 train, last 8 "
             "test; mask = 1stHO, test mask2 = 2ndHO.",
    "retina": "Pooled DRIVE + STARE + CHASE_DB1 (whichever present), ids "
              "prefixed drive-/stare-/chase-, each with its own split.",
}


def _folder(data_dir: str, *parts: str) -> str:
    path = os.path.join(data_dir, *parts)
    if not os.path.isdir(path):
        raise errors.DataError(
            f"{data_dir}: wrong directory layout, expected folder "
            f"{os.path.join(*parts)!r}")
    return path


def _need(path: str, image: str, what: str) -> str:
    if not os.path.isfile(path):
        raise errors.DataError(f"{image}: missing {what}, expected {path}")
    return path


def _matching(folder: str, pattern: str) -> list[re.Match]:
    """Files of `folder` matching `pattern`; its group 1 (the id) must be unique."""
    found = sorted(filter(None, map(re.compile(pattern).fullmatch,
                                    os.listdir(folder))), key=lambda m: m[0])
    if not found:
        raise errors.DataError(f"{folder}: no files named like {pattern!r}")
    first = {}
    for m in found:  # e.g. im0001.ah.ppm next to im0001.ah.ppm.gz
        if m[1] in first:
            raise errors.DataError(
                f"{os.path.join(folder, first[m[1]])} and "
                f"{os.path.join(folder, m[0])}: two files for id {m[1]!r}")
        first[m[1]] = m[0]
    return found


def hold_out(train: list[dict], count: int | None, fraction: float,
             where: str) -> tuple[list[dict], list[dict]]:
    """(train, validation): the last `count` entries (default: `fraction` of
    them, at least 1) move to validation, so the two share no image."""
    if count is None:
        count = max(1, round(fraction * len(train)))
    if not 0 < count < len(train):
        raise errors.DataError(
            f"{where}: cannot hold out {count} of {len(train)} training images "
            f"for validation (need 1 to {len(train) - 1})")
    return train[:-count], train[-count:]


def _with_validation(train: list[dict], test: list[dict],
                     validation_count: int | None, where: str) -> dict:
    train, validation = hold_out(train, validation_count, VALIDATION_FRACTION,
                                 where)
    return {"train": train, "validation": validation, "test": test}


def drive_splits(data_dir: str, validation_count: int | None = None
                 ) -> dict[str, list[dict]]:
    """Lists DRIVE (`training/`, `test/` with `images`, `1st_manual`, `mask`)."""
    splits = {}
    for split, folder in (("train", "training"), ("test", "test")):
        images = _folder(data_dir, folder, "images")
        manual = _folder(data_dir, folder, "1st_manual")
        masks = _folder(data_dir, folder, "mask")
        second = (_folder(data_dir, folder, "2nd_manual") if split == "test"
                  else None)
        entries = []
        for m in _matching(images, rf"(\d+)_{folder}\.tif"):
            image = os.path.join(images, m[0])
            entry = {"id": f"{m[1]}_{folder}", "image": image,
                     "mask": _need(os.path.join(manual, f"{m[1]}_manual1.gif"),
                                   image, "mask"),
                     "fov": _need(os.path.join(
                         masks, f"{m[1]}_{folder}_mask.gif"), image, "FOV mask")}
            if second:
                entry["mask2"] = _need(os.path.join(
                    second, f"{m[1]}_manual2.gif"), image, "second observer mask")
            entries.append(entry)
        splits[split] = entries
    return _with_validation(splits["train"], splits["test"], validation_count,
                            data_dir)


def _fixed_split(entries: list[dict], num_train: int, total: int,
                 where: str, validation_count: int | None) -> dict:
    if len(entries) != total:
        raise errors.DataError(
            f"{where}: expected the {total} official labelled images, found "
            f"{len(entries)}; the fixed train/test split needs all of them")
    test = entries[num_train:]
    for entry in entries[:num_train]:
        entry.pop("mask2", None)
    return _with_validation(entries[:num_train], test, validation_count, where)


def stare_splits(data_dir: str, validation_count: int | None = None
                 ) -> dict[str, list[dict]]:
    """Lists STARE (`stare-images/imNNNN.ppm.gz`, `labels-ah/imNNNN.ah.ppm.gz`)."""
    images = _folder(data_dir, "stare-images")
    labels = _folder(data_dir, "labels-ah")
    second = os.path.join(data_dir, "labels-vk")
    entries = []
    for m in _matching(labels, r"(im\d{4})\.ah\.ppm(\.gz)?"):
        mask = os.path.join(labels, m[0])
        image = os.path.join(images, f"{m[1]}.ppm{m[2] or ''}")
        entry = {"id": m[1], "image": _need(image, mask, "image"),
                 "mask": mask, "fov": None}
        if os.path.isdir(second):
            entry["mask2"] = _need(os.path.join(
                second, f"{m[1]}.vk.ppm{m[2] or ''}"), image, "labels-vk mask")
        entries.append(entry)
    return _fixed_split(entries, STARE_TRAIN, STARE_TOTAL, labels,
                        validation_count)


def chase_splits(data_dir: str, validation_count: int | None = None
                 ) -> dict[str, list[dict]]:
    """Lists CHASE_DB1 (flat: `Image_NNL.jpg`, `Image_NNL_{1st,2nd}HO.png`)."""
    if not os.path.isdir(data_dir):
        raise errors.DataError(f"{data_dir}: CHASE_DB1 folder not found")
    entries = []
    for m in _matching(data_dir, r"(Image_\d\d[LR])\.jpg"):
        image = os.path.join(data_dir, m[0])
        entries.append({
            "id": m[1], "image": image, "fov": None,
            "mask": _need(os.path.join(data_dir, f"{m[1]}_1stHO.png"), image,
                          "mask"),
            "mask2": _need(os.path.join(data_dir, f"{m[1]}_2ndHO.png"), image,
                           "second observer mask")})
    return _fixed_split(entries, CHASE_TRAIN, CHASE_TOTAL, data_dir,
                        validation_count)


def retina_splits(data_dir: str, validation_count: int | None = None
                  ) -> dict[str, list[dict]]:
    """Pools the datasets present under `data_dir`; ids get `<name>-` prefixes.

    `validation_count` applies to each dataset (default: 20% of each)."""
    pooled = {"train": [], "validation": [], "test": []}
    present = [(n, f) for n, f in POOLED
               if os.path.isdir(os.path.join(data_dir, f))]
    if not present:
        raise errors.DataError(
            f"{data_dir}: wrong directory layout, expected at least one of the "
            f"folders {', '.join(f for _, f in POOLED)}")
    for name, folder in present:
        listing = SPLITS[name](os.path.join(data_dir, folder), validation_count)
        for split, entries in listing.items():
            pooled[split] += [dict(e, id=f"{name}-{e['id']}") for e in entries]
    for entry in pooled["train"] + pooled["validation"]:
        entry.pop("mask2", None)  # Only some test sets have a second observer.
    if any("mask2" not in e for e in pooled["test"]):
        for entry in pooled["test"]:
            entry.pop("mask2", None)
    return pooled


SPLITS = {"drive": drive_splits, "stare": stare_splits, "chase": chase_splits,
          "retina": retina_splits}


def derive_fov(image: np.ndarray, threshold: int = FOV_THRESHOLD,
               name: str = "image") -> np.ndarray:
    """Derives a field-of-view mask for a fundus photograph (numpy only).

    Pixels whose red channel (gray for 1 channel) exceeds `threshold` are
    candidates; the largest 8-connected component is kept and its holes
    (background components not touching the border, e.g. dark vessels or
    lesions) are filled. On DRIVE this reproduces the official masks.

    Args:
      image: uint8 [H, W, C].
      threshold: red level separating the black surround from the retina.
      name: used in error messages.

    Returns:
      np.uint8 [H, W] with values {0, 1}.
    """
    candidates = image[:, :, 0] > threshold
    rows, starts, ends = components.runs(candidates)
    if rows.size == 0:
        raise errors.DataError(
            f"{name}: cannot derive a field of view, no pixel brighter than "
            f"{threshold}")
    labels = components.run_labels(rows, starts, ends, diagonal=True)
    sizes = np.bincount(labels, weights=ends - starts)
    keep = labels == np.argmax(sizes)
    fov = components.paint(candidates.shape, rows[keep], starts[keep], ends[keep])
    rows, starts, ends = components.runs(~fov)
    if rows.size:
        labels = components.run_labels(rows, starts, ends, diagonal=False)
        border = ((rows == 0) | (rows == fov.shape[0] - 1) | (starts == 0)
                  | (ends == fov.shape[1]))
        hole = ~np.isin(labels, labels[border])
        fov |= components.paint(fov.shape, rows[hole], starts[hole], ends[hole])
    return fov.astype(np.uint8)


def read_example(entry: dict, image_size: tuple[int, int] | None = None) -> dict:
    """Reads one entry; masks must match the image size before resizing."""
    image = imageio.read_image(entry["image"], channels=3)
    example = {"id": entry["id"], "image": image}
    for key in ("mask", "fov", "mask2"):
        if key == "fov" and entry["fov"] is None:
            example["fov"] = derive_fov(image, name=entry["image"])
        elif entry.get(key):
            plane = imageio.read_mask(entry[key])
            if plane.shape != image.shape[:2]:
                raise errors.DataError(
                    f"{entry[key]}: {key} is {plane.shape[1]}x{plane.shape[0]}"
                    f" but image {entry['image']} is {image.shape[1]}x"
                    f"{image.shape[0]} (width x height)")
            example[key] = plane
    if image_size is not None:
        example["image"] = imageio.resize_image(image, image_size)
        for key in ("mask", "fov", "mask2"):
            if key in example:
                example[key] = imageio.resize_mask(example[key], image_size)
    return example


def examples(dataset: str, data_dir: str, split: str,
             image_size: tuple[int, int] | None = None,
             limit: int | None = None,
             validation_count: int | None = None) -> Iterator[dict]:
    """Yields examples of `split` of `dataset` (drive/stare/chase/retina)."""
    entries = SPLITS[dataset](data_dir, validation_count)[split]
    for entry in entries[:limit]:
        yield read_example(entry, image_size)
