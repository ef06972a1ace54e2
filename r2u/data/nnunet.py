"""The nnU-Net v2 raw dataset layout, read as nnU-Net documents it (2D images).

    Dataset120_Roads/
      dataset.json      channel_names, labels, numTraining, file_ending
      imagesTr/<case>_0000.png [<case>_0001.png ...]   one file per channel
      labelsTr/<case>.png
      imagesTs/, labelsTs/   optional: the test split

`dataset.json` follows nnunetv2's `dataset_format.md`: `channel_names` {"0":
"T2", "1": "ADC"} says how many channels a case has; an RGB file (nnU-Net's
natural-image reader) holds three of them in one `_0000` file. `labels` is
checked by `r2u.data.labels.from_nnunet` (region-based labels are refused).
`numTraining` must be the number of training cases found. Files of other
endings (e.g. the `.json` spacing files of 3D TIFFs) are left alone. A case's
channel files are stacked in channel order by `read_image`.
"""

import json
import os
import re

import numpy as np
from absl import logging

from r2u import errors
from r2u.data import imageio
from r2u.data import labels as labels_lib
from r2u.data import tfrecord

KEYS = ("channel_names", "labels", "numTraining", "file_ending")
# 2D formats imageio reads; nnU-Net itself refuses .jpg (lossy label maps), and so
# does imageio.read_label_map.
ENDINGS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


def visible_files(folder: str, endings, fold_case: bool = True) -> dict[str, str]:
    """{name: path} of the files of `folder` ending in `endings`, hidden ones left out.

    nnU-Net matches `file_ending` case-sensitively (`fold_case=False`)."""
    found = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.startswith(".") and (name.lower() if fold_case else name).endswith(
                endings) and os.path.isfile(path):
            found[name] = path
    return found


def _json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise errors.DataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise errors.DataError(f"{path}: expected a JSON object")
    return value


def read_dataset_json(path: str) -> tuple[int, str, labels_lib.Labels, int]:
    """(channels, file_ending, labels, numTraining) of a `dataset.json`.

    Raises:
      DataError: not JSON, a missing key, or a value nnU-Net would refuse.
    """
    meta = _json(path)
    if "channel_names" not in meta and "modality" in meta:  # nnU-Net v1's name
        meta["channel_names"] = meta["modality"]
    missing = [k for k in KEYS if k not in meta]
    if missing:
        raise errors.DataError(f"{path}: missing key(s) {', '.join(missing)} "
                               f"(nnU-Net v2 needs {', '.join(KEYS)})")
    if "dataset" in meta:
        raise errors.DataError(f"{path}: lists its cases under \"dataset\"; r2u reads "
                               "the imagesTr/labelsTr folders only")
    names = meta["channel_names"]
    if not isinstance(names, dict) or not names or sorted(names, key=str) != [
            str(i) for i in range(len(names))] or len(names) > tfrecord.MAX_CHANNELS:
        raise errors.DataError(
            f"{path}: channel_names must map \"0\", \"1\", ... to names, 1 to "
            f"{tfrecord.MAX_CHANNELS} channels (got {names!r})")
    ending, count = meta["file_ending"], meta["numTraining"]
    if not isinstance(ending, str) or not ending.lower().endswith(ENDINGS):
        raise errors.DataError(f"{path}: file_ending {ending!r} is not a 2D image "
                               f"format r2u reads ({', '.join(ENDINGS)})")
    if isinstance(count, bool) or not isinstance(count, int):
        raise errors.DataError(f"{path}: numTraining must be an integer, got {count!r}")
    return len(names), ending, labels_lib.from_nnunet(meta["labels"], path), count


def _channel_files(images: str, ending: str) -> dict[str, dict[int, str]]:
    """{case: {channel: path}} of the files `<case>_XXXX<ending>` of `images`."""
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(ending))
    cases = {}
    for name, path in visible_files(images, ending, fold_case=False).items():
        match = pattern.fullmatch(name)
        if not match:
            raise errors.DataError(f"{path}: image name lacks the channel suffix "
                                   f"(expected <case>_0000{ending})")
        cases.setdefault(match[1], {})[int(match[2])] = path
    return cases


def image_cases(images: str, ending: str, channels: int) -> list[dict]:
    """The cases of `images` (their channel files), sorted by id.

    Raises:
      DataError: a gap in a case's channel files, or more files than channels.
    """
    entries = []
    for case, files in sorted(_channel_files(images, ending).items()):
        stem = os.path.join(images, case)
        count = max(files) + 1
        for i in range(count):  # A case's files are 0000, 0001, ... without a gap.
            if i not in files:
                raise errors.DataError(f"{stem}_{i:04d}{ending}: missing channel file "
                                       f"(the case has {stem}_{count - 1:04d}{ending})")
        if count > channels:
            raise errors.DataError(f"{files[count - 1]}: channel {count - 1}, but "
                                   f"dataset.json channel_names has {channels}")
        entries.append({"id": case, "layout": "nnunet", "channels": channels,
                        "images": [files[i] for i in range(count)],
                        "missing": f"{stem}_{count:04d}{ending}"})
    return entries


def cases(images: str, labels: str, ending: str, channels: int) -> list[dict]:
    """The cases of `images` with their label maps in `labels`, sorted by id.

    Raises:
      DataError: a gap in a case's channel files, more files than channels, an
        image without label or a label without image.
    """
    label_files = visible_files(labels, ending, fold_case=False)
    entries = image_cases(images, ending, channels)
    for entry in entries:
        label = os.path.join(labels, entry["id"] + ending)
        if entry["id"] + ending not in label_files:
            raise errors.DataError(f"{entry['images'][0]}: image without label "
                                   f"(expected {label})")
        entry["mask"] = label
    known = {e["id"] + ending for e in entries}
    for name, path in label_files.items():
        if name not in known:
            raise errors.DataError(
                f"{path}: label without image (expected "
                f"{os.path.join(images, name[:-len(ending)])}_0000{ending})")
    return entries


def find(root: str) -> dict:
    """The training and test cases of the nnU-Net dataset `root`.

    Returns:
      {"train": entries, "test": entries (empty without imagesTs + labelsTs),
      "channels": int, "labels": Labels, "label_files": (dataset.json,)}.
    """
    meta = os.path.join(root, "dataset.json")
    channels, ending, labels, count = read_dataset_json(meta)
    for sub in ("imagesTr", "labelsTr"):
        if not os.path.isdir(os.path.join(root, sub)):
            raise errors.DataError(f"{root}: nnU-Net dataset without folder {sub}/")
    train = cases(os.path.join(root, "imagesTr"), os.path.join(root, "labelsTr"),
                  ending, channels)
    if not train:
        raise errors.DataError(f"{os.path.join(root, 'imagesTr')}: no training cases "
                               f"(no files named <case>_0000{ending})")
    if len(train) != count:
        raise errors.DataError(f"{meta}: numTraining is {count} but imagesTr holds "
                               f"{len(train)} training cases")
    test = []
    images, labels_dir = os.path.join(root, "imagesTs"), os.path.join(root, "labelsTs")
    if os.path.isdir(images) and not os.path.isdir(labels_dir):
        logging.info("%s: test images without labelsTs/, no test split", images)
    elif os.path.isdir(images):
        test = cases(images, labels_dir, ending, channels)
    return {"train": train, "test": test, "channels": channels, "labels": labels,
            "label_files": (meta,)}


def read_image(entry: dict) -> np.ndarray:
    """A case's channel files stacked: uint8 [H, W, channels of channel_names].

    A file gives 1 channel (gray) or 3 (colour); with one file per channel, a
    colour file whose three channels are equal counts as gray.

    Raises:
      DataError: a file of another size, or channels that do not add up to
        `channel_names` (a colour file where one channel is expected, a missing
        `_0001` file), naming the file.
    """
    want, files = entry["channels"], entry["images"]
    planes, total = [], 0
    for path in files:
        image = imageio.read_image(path, channels=None,
                                   sixteen_bit=imageio.WINDOW)
        if image.shape[2] == 3 and len(files) == want and imageio.is_gray(image):
            image = image[..., :1]
        total += image.shape[2]
        if total > want:
            raise errors.DataError(
                f"{path}: {image.shape[2]} channel(s), {total} for the case, but "
                f"dataset.json channel_names has {want}")
        if planes and image.shape[:2] != planes[0].shape[:2]:
            (h, w), (h0, w0) = image.shape[:2], planes[0].shape[:2]
            raise errors.DataError(f"{path}: image is {w}x{h} but {files[0]} is "
                                   f"{w0}x{h0} (width x height)")
        planes.append(image)
    if total < want:
        raise errors.DataError(
            f"{entry['missing']}: missing channel file (dataset.json channel_names "
            f"has {want}, the case's files hold {total})")
    return np.concatenate(planes, axis=2)  # [H, W, channels]
