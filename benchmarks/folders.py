#!/usr/bin/env python3
"""Writes the shared datasets as the folders a user would bring (outside the repo).

  benchmarks/folders.py drive OUT [--scale=1.7]  # nnU-Net v2 raw: RGB _0000.png, labels
                                                 # background 0, vessel 1, ignore 2 (the
                                                 # outside of the field of view); test =
                                                 # the official 20 (1st_manual);
                                                 # splits_final.json holds out 37-40 as
                                                 # the dedicated reader does
  benchmarks/folders.py isic OUT                 # plain pairs: train = the 2,000 official
                                                 # training pairs (256x256 images, masks
                                                 # resized nearest to them, as
                                                 # r2u.data.isic does), test = the
                                                 # official Validation pairs as they are
  benchmarks/folders.py usgra OUT                # plain pairs linked from USGRA_SEG, plus
                                                 # labels.json naming nerve and vessel

`--scale` serves DRIVE at another size (images bicubic, labels and field of view
nearest): the plan's scale test. The raw data comes from $R2U_DATA_DIR (default
../shared/data). Nothing is written into the repository unless OUT is in it.
"""

import json
import os
import sys

import numpy as np
from absl import app
from absl import flags
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from r2u.data import isic  # noqa: E402
from r2u.data import prepare  # noqa: E402
from r2u.data import retina  # noqa: E402

_SCALE = flags.DEFINE_float("scale", 1.0, "DRIVE: resize factor.", lower_bound=0.1)


def _save(path: str, pixels: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)


def _resized(pixels: np.ndarray, scale: float, method) -> np.ndarray:
    if scale == 1:
        return pixels
    image = Image.fromarray(pixels)
    size = (round(image.width * scale), round(image.height * scale))
    return np.asarray(image.resize(size, method))


def drive(out: str, scale: float = 1.0) -> None:
    listing = retina.SPLITS["drive"](os.path.join(prepare.data_root(), "DRIVE"), None)
    count = 0
    for split, (images, labels) in (("train", ("imagesTr", "labelsTr")),
                                    ("validation", ("imagesTr", "labelsTr")),
                                    ("test", ("imagesTs", "labelsTs"))):
        for entry in listing[split]:
            example = retina.read_example(entry)
            image = _resized(example["image"], scale, Image.Resampling.BICUBIC)
            label = np.where(example["fov"] > 0, example["mask"], 2).astype(np.uint8)
            label = _resized(label, scale, Image.Resampling.NEAREST)
            case = f"drive_{example['id']}"
            _save(os.path.join(out, images, f"{case}_0000.png"), image)
            _save(os.path.join(out, labels, f"{case}.png"), label)
            count += split != "test"
    # The dedicated reader's validation images (37-40), as nnU-Net names a fold.
    ids = {split: [f"drive_{e['id']}" for e in listing[split]]
           for split in ("train", "validation")}
    with open(os.path.join(out, "splits_final.json"), "w") as f:
        json.dump([{"train": ids["train"], "val": ids["validation"]}], f, indent=1)
    with open(os.path.join(out, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "R", "1": "G", "2": "B"},
                   "labels": {"background": 0, "vessel": 1, "ignore": 2},
                   "numTraining": count, "file_ending": ".png"}, f, indent=1)


def _link(source: str, link: str) -> None:
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not os.path.islink(link):
        os.symlink(os.path.abspath(source), link)


def isic_pairs(out: str) -> None:
    listing = isic.protocol_splits(os.path.join(prepare.data_root(), "ISIC2017"), None)
    for split, folder in (("train", "train"), ("validation", "train"), ("test", "test")):
        for entry in listing[split]:
            name = entry["id"]
            _link(entry["image"], os.path.join(out, folder, "images",
                                               name + os.path.splitext(entry["image"])[1]))
            if split == "test":  # the original pairs, untouched
                _link(entry["mask"], os.path.join(out, folder, "masks", name + ".png"))
                continue
            # The training masks are full size, their images squashed to 256x256.
            example = isic.read_example(entry, isic.DEFAULT_SIZE)
            _save(os.path.join(out, folder, "masks", name + ".png"),
                  example["mask"] * 255)


def usgra(out: str) -> None:
    source = os.path.join(prepare.data_root(), "USGRA_SEG")
    for split in ("train", "test"):
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for kind in ("images", "masks"):
            link = os.path.join(out, split, kind)
            if not os.path.islink(link):
                os.symlink(os.path.join(source, split, kind), link)
    with open(os.path.join(out, "labels.json"), "w") as f:
        json.dump({"background": 0, "nerve": 1, "vessel": 2}, f)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("drive", "isic", "usgra"):
        raise app.UsageError("usage: folders.py drive|isic|usgra OUT")
    if argv[1] == "drive":
        drive(argv[2], _SCALE.value)
    else:
        {"isic": isic_pairs, "usgra": usgra}[argv[1]](argv[2])
    print(f"wrote {argv[2]}")


if __name__ == "__main__":
    app.run(main)
