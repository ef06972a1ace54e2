"""Reader of a user's folder: an nnU-Net v2 raw dataset, or plain image/label pairs.

The layout is detected from what the folder holds:

- nnU-Net v2 raw (`dataset.json` present): `imagesTr/<case>_<XXXX><ending>`
  + `labelsTr/<case><ending>`, optionally `imagesTs/` + `labelsTs/` as the test
  split (`r2u.data.nnunet`). Classes from its `labels`.
- Plain pairs: `train/images/*` + `train/masks/*` (optionally `test/images/` +
  `test/masks/`), an image and its label map sharing a file stem (`a.jpg` +
  `a.png`). Classes from `labels.json` when present, else the values of the
  training label maps (`r2u.data.labels`). Every image gets the channels of the
  first training image: 1 if it is gray (or RGB with equal channels), else 3.

`listing` finds the cases and holds `VALIDATION_FRACTION` of the training cases
(or `validation_count`) out as the validation split, drawn at random but fixed
by the seed, unless the folder names them: fold 0 of nnU-Net's
`splits_final.json` ([{"train": [...], "val": [...]}, ...]); `read_example` reads
one case at its native size: the image, its label map as class indices, and the
FOV, 0 on the ignore label so those pixels are neither trained on nor scored. Every
problem is a `DataError` of one line naming the file.
"""

import dataclasses
import functools
import hashlib
import json
import os

import numpy as np
from absl import logging

from r2u import errors
from r2u.data import imageio
from r2u.data import labels as labels_lib
from r2u.data import nnunet

SPLITS_FILE = "splits_final.json"  # nnU-Net's folds; fold 0 names the validation
VALIDATION_FRACTION = 0.2
IMAGE_EXTENSIONS = nnunet.ENDINGS  # the same readers, either layout
LABELS_FILE = "labels.json"


@dataclasses.dataclass(frozen=True)
class Listing:
    """The cases of a folder, split.

    Attributes:
      layout: "nnunet" or "pairs".
      root: the folder.
      splits: {split: [{"id", "layout", "images": [paths], "mask": path,
        "channels", ["missing"]}]}: a case's image files in channel order, its
        label map, the channels to read (and an nnU-Net case's next channel file).
      channels: the image channels of every example.
      label_files: the files the classes come from (for the fingerprint).
      description: one sentence for the manifest.
      declared: the classes of dataset.json or labels.json, None if undeclared.
    """
    layout: str
    root: str
    splits: dict
    channels: int
    label_files: tuple
    description: str
    declared: labels_lib.Labels | None = None

    @functools.cached_property
    def labels(self) -> labels_lib.Labels:
        """The declared classes, else those of the training label maps (read once)."""
        if self.declared is not None:
            return self.declared
        return labels_lib.discover(self.label_files, self.root)


def _pair_cases(images: str, masks: str) -> list[dict]:
    """Image/label-map pairs of two folders, matched by file stem."""
    by_stem = []
    for folder in (images, masks):
        stems = {}
        for name, path in nnunet.visible_files(folder, IMAGE_EXTENSIONS).items():
            stem = os.path.splitext(name)[0]
            if stem in stems:
                raise errors.DataError(f"{stems[stem]} and {path}: two files for "
                                       f"case {stem!r}")
            stems[stem] = path
        by_stem.append(stems)
    image_files, mask_files = by_stem
    for stem, path in image_files.items():
        if stem not in mask_files:
            raise errors.DataError(f"{path}: image without label (expected "
                                   f"{os.path.join(masks, stem)}.png)")
    for stem, path in mask_files.items():
        if stem not in image_files:
            raise errors.DataError(f"{path}: label without image (expected "
                                   f"{os.path.join(images, stem)}.*)")
    return [{"id": stem, "layout": "pairs", "images": [path], "mask": mask_files[stem]}
            for stem, path in sorted(image_files.items())]


def _pair_test(root: str) -> list[dict]:
    images, masks = (os.path.join(root, "test", sub) for sub in ("images", "masks"))
    if not os.path.isdir(images):
        return []
    if not os.path.isdir(masks):
        logging.info("%s: test images without test/masks/, no test split", images)
        return []
    return _pair_cases(images, masks)


def _pairs(root: str) -> dict:
    """The training and test pairs of `root`, as `nnunet.find` returns them."""
    images, masks = (os.path.join(root, "train", sub) for sub in ("images", "masks"))
    if not os.path.isdir(masks):
        raise errors.DataError(f"{root}: folder train/images/ without train/masks/")
    train = _pair_cases(images, masks)
    if not train:
        raise errors.DataError(f"{images}: no training images "
                               f"({', '.join(IMAGE_EXTENSIONS)})")
    first = imageio.read_image(train[0]["images"][0], channels=None,
                               sixteen_bit=imageio.WINDOW)
    channels = 1 if imageio.is_gray(first) else 3
    test = _pair_test(root)
    for entry in train + test:
        entry["channels"] = channels
    declared = os.path.join(root, LABELS_FILE)
    if os.path.isfile(declared):
        return {"train": train, "test": test, "channels": channels,
                "labels": labels_lib.from_file(declared), "label_files": (declared,)}
    return {"train": train, "test": test, "channels": channels, "labels": None,
            "label_files": tuple(e["mask"] for e in train)}


def hold_out(train: list[dict], count: int | None, seed: int,
             where: str) -> tuple[list[dict], list[dict]]:
    """(train, validation): `count` cases (default `VALIDATION_FRACTION`, at least
    1, leaving at least 1) drawn at random, fixed by `seed`; both keep id order.

    The draw sorts the cases by a hash of (seed, id): it needs no random number
    generator that could change between NumPy versions, and a case added to the
    folder leaves the others' draw as it was.
    """
    if len(train) < 2:
        raise errors.DataError(f"{where}: {len(train)} training case(s), need at "
                               "least 2 (one is held out for validation)")
    if count is None:
        count = max(1, round(VALIDATION_FRACTION * len(train)))
    if not 0 < count < len(train):
        raise errors.DataError(
            f"{where}: cannot hold out {count} of {len(train)} training cases for "
            f"validation (need 1 to {len(train) - 1})")
    drawn = sorted(train, key=lambda e: hashlib.sha256(
        f"{seed}/{e['id']}".encode()).hexdigest())
    held = {e["id"] for e in drawn[:count]}
    return ([e for e in train if e["id"] not in held],
            [e for e in train if e["id"] in held])


def _named_validation(data_dir: str, train: list[dict]):
    """(train, validation) from `splits_final.json` (nnU-Net's folds: a list of
    {"train": [ids], "val": [ids]}; fold 0's "val" is held out), or None without it."""
    path = os.path.join(data_dir, SPLITS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            held = set(json.load(f)[0]["val"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise errors.DataError(f"{path}: not nnU-Net folds [{{\"train\": [...], "
                               f"\"val\": [...]}}, ...] ({e})") from e
    unknown = sorted(held - {e["id"] for e in train})
    if unknown:
        raise errors.DataError(f"{path}: validation case {unknown[0]!r} is not a "
                               "training case of the folder")
    if not held or len(held) >= len(train):
        raise errors.DataError(f"{path}: fold 0 must hold out 1 to {len(train) - 1} "
                               f"cases, not {len(held)}")
    return ([e for e in train if e["id"] not in held],
            [e for e in train if e["id"] in held])


def listing(data_dir: str, validation_count: int | None = None,
            seed: int = 0) -> Listing:
    """Finds the layout and the cases of `data_dir`, and splits them.

    Args:
      data_dir: the folder.
      validation_count: training cases held out for validation (default 20%).
      seed: fixes which cases are held out.

    Raises:
      DataError: neither layout, or a bad file or folder, naming it.
    """
    if os.path.isfile(os.path.join(data_dir, "dataset.json")):
        layout, found, test = "nnunet", nnunet.find(data_dir), "imagesTs/labelsTs"
    elif os.path.isdir(os.path.join(data_dir, "train", "images")):
        layout, found, test = "pairs", _pairs(data_dir), "test/images + test/masks"
    else:
        raise errors.DataError(
            f"{data_dir}: neither an nnU-Net v2 raw dataset (dataset.json, imagesTr/, "
            "labelsTr/) nor image/label pairs (train/images/, train/masks/)")
    named = _named_validation(data_dir, found["train"])
    if named is not None and validation_count is None:
        train, validation = named
        drawn = f"the {len(validation)} cases of fold 0 of {SPLITS_FILE}"
    else:
        train, validation = hold_out(found["train"], validation_count, seed, data_dir)
        drawn = (f"{len(validation)} of the {len(found['train'])} training cases at "
                 f"random (seed {seed})")
    splits = {"train": train, "validation": validation}
    if found["test"]:
        splits["test"] = found["test"]
    kind = "nnU-Net v2 raw" if layout == "nnunet" else "image/label pairs"
    test = f"{test} ({len(found['test'])} cases)" if found["test"] else "none"
    description = (
        f"Folder dataset ({kind}), {found['channels']} channel(s). Validation = "
        f"{drawn}; test = {test}. 16-bit images windowed to 8 bits between "
        "their 0.1 and 99.9 percentiles; pixels of the ignore label have fov 0.")
    return Listing(layout, data_dir, splits, found["channels"], found["label_files"],
                   description, found["labels"])


def _pair_image(entry: dict) -> np.ndarray:
    """A plain pair's image with the dataset's channels (gray to RGB by copies)."""
    path = entry["images"][0]
    image = imageio.read_image(path, channels=None, sixteen_bit=imageio.WINDOW)
    if entry["channels"] == 3:
        return np.repeat(image, 3 // image.shape[2], axis=2)
    if imageio.is_gray(image):
        return image[..., :1]
    raise errors.DataError(f"{path}: colour image, but the first training image is "
                           "gray (make all images gray or all colour)")


def read_example(entry: dict, labels: labels_lib.Labels,
                 image_size: tuple[int, int] | None = None) -> dict:
    """Reads one case of a `Listing` with its classes `labels`.

    Args:
      entry: a case of `Listing.splits`.
      labels: the dataset's classes (`Listing.labels`).
      image_size: (height, width) to resize to (image bilinear, masks nearest);
        None keeps the native size.

    Returns:
      {"id", "image": uint8 [H, W, C], "mask": uint8 [H, W] class indices,
      "fov": uint8 [H, W], 0 on the ignore label}.

    Raises:
      DataError: naming the file: unreadable, wrong channels, sizes that differ,
        or a label value not among `labels`.
    """
    read = nnunet.read_image if entry["layout"] == "nnunet" else _pair_image
    image = read(entry)
    values = imageio.read_label_map(entry["mask"])
    if values.shape != image.shape[:2]:
        (h, w), (ih, iw) = values.shape, image.shape[:2]
        raise errors.DataError(
            f"{entry['mask']}: label map is {w}x{h} but image {entry['images'][0]} is "
            f"{iw}x{ih} (width x height)")
    mask, fov = labels.indices(values, entry["mask"])
    if image_size is not None:
        image = imageio.resize_image(image, image_size)
        mask = imageio.resize_mask(mask, image_size)
        fov = imageio.resize_mask(fov, image_size)
    return {"id": entry["id"], "image": image, "mask": mask, "fov": fov}
