"""The JSON manifest describing a prepared dataset directory.

`manifest.json` sits next to the TFRecord shards and records, at least:
`dataset`, `splits` ({split: `tfrecord.write_split` result}), `image_shape`
([H, W, C] or None when sizes vary), `channels`, `class_weights` (one per
class), `source_files`, `preprocessing` and `format_version`.

Since K-class datasets it also records `classes` (names in index order, index 0
the background), `num_classes`, `label_values` (the integer of each class in the
source label maps), `ignore_value` (or null) and `class_counts`. Manifests
written before have none of these keys and binary masks: `classes` reads them as
`LEGACY_CLASSES`.
"""

import json
import os

from r2u import errors
from r2u import files

FILENAME = "manifest.json"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("dataset", "splits", "image_shape", "channels",
                 "class_weights", "source_files", "preprocessing",
                 "format_version")
LEGACY_CLASSES = ("background", "foreground")  # manifests without "classes"


def classes(manifest: dict) -> tuple[str, ...]:
    """The class names of a loaded manifest, index order (older ones: binary)."""
    return tuple(manifest.get("classes") or LEGACY_CLASSES)


def path(data_dir: str) -> str:
    """Returns the manifest path inside `data_dir`."""
    return os.path.join(data_dir, FILENAME)


def write(out_dir: str, manifest: dict) -> str:
    """Writes `manifest` atomically (`r2u.files`).

    Returns:
      The manifest path.
    """
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"manifest lacks keys: {', '.join(missing)}")
    target = path(out_dir)
    files.write_json(target, manifest, indent=1, newline=True)
    return target


def load(data_dir: str) -> dict:
    """Reads and checks the manifest of a prepared dataset directory.

    Raises:
      DataError: naming the file when it is missing, not JSON, lacks keys or
        has an unsupported format version.
    """
    target = path(data_dir)
    if not os.path.isfile(target):
        raise errors.DataError(
            f"{target}: manifest not found (run bin/prepare first?)")
    try:
        with open(target, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise errors.DataError(f"{target}: corrupt manifest ({e})") from e
    if not isinstance(manifest, dict):
        raise errors.DataError(f"{target}: corrupt manifest (not an object)")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise errors.DataError(
            f"{target}: corrupt manifest, missing keys: {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise errors.DataError(
            f"{target}: unsupported format_version "
            f"{manifest['format_version']!r} (expected {FORMAT_VERSION})")
    names, weights = classes(manifest), manifest["class_weights"]
    if not isinstance(weights, list) or len(weights) != len(names) or manifest.get(
            "num_classes", len(names)) != len(names):
        raise errors.DataError(
            f"{target}: corrupt manifest, {len(names)} classes but "
            f"class weights {weights!r}")
    return manifest


def verify(data_dir: str, full: bool = False, splits=None,
           manifest: dict | None = None) -> None:
    """Checks every shard the manifest lists (of `splits` only, if given): present and
    of the recorded size; with `full`, also its sha256 (reads every byte). `manifest`,
    if given, is the one already read from `data_dir` (not read again).

    Raises:
      DataError: naming the first shard that is missing, truncated, grown or changed.
    """
    manifest = manifest if manifest is not None else load(data_dir)
    for split, info in manifest["splits"].items():
        if splits is not None and split not in splits:
            continue
        for shard in info["shards"]:
            file = os.path.join(data_dir, shard["file"])
            if not os.path.isfile(file):
                raise errors.DataError(f"{file}: shard of split {split!r} is missing")
            size = os.path.getsize(file)
            if size != shard["bytes"]:
                raise errors.DataError(
                    f"{file}: shard has {size} bytes, the manifest says {shard['bytes']} "
                    "(truncated or modified; re-run bin/prepare)")
            if full and files.sha256(file) != shard["sha256"]:
                raise errors.DataError(
                    f"{file}: sha256 differs from the manifest (corrupt or modified; "
                    "re-run bin/prepare)")
