"""Prepares a dataset: raw files (or synthetic) -> TFRecord shards + manifest.

`prepare` lists the sources, computes a fingerprint of the options, the
source files (relative path and sha256 of the content) and the reader code,
and does nothing when the existing manifest has the same fingerprint and its
shards are in place. Otherwise everything is written into a staging folder inside
`out_dir`, and moved into place only once every split succeeded, so bad
input never damages an earlier preparation.
"""

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from absl import logging

from r2u import config
from r2u import errors
from r2u import files
from r2u.data import imageio
from r2u.data import isic
from r2u.data import manifest as manifest_lib
from r2u.data import retina
from r2u.data import tfrecord

DATASETS = tuple(config.PRESETS)  # every dataset with a training preset
FOLDERS = {"isic": "ISIC2017", "drive": "DRIVE", "stare": "STARE",
           "chase": "CHASE_DB1", "retina": ""}
# kind, default size, examples per split.
SYNTHETIC = {
    "synthetic": ("lesion", 64, {"train": 400, "validation": 50, "test": 50}),
    "synthetic_vessels": ("vessels", 96,
                          {"train": 60, "validation": 10, "test": 10}),
}
EXAMPLES_PER_SHARD = 256
MAX_DEFAULT_SHARDS = 16
_SHARD = re.compile(r"(train|validation|test)-\d{5}-of-\d{5}\.tfrecord")

Progress = Callable[[str, int, int], None]


def data_root() -> str:
    """`$R2U_DATA_DIR`, else `<repo>/../shared/data`."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    return os.environ.get("R2U_DATA_DIR") or os.path.join(
        os.path.dirname(repo), "shared", "data")


def default_data_dir(dataset: str) -> str | None:
    """Raw data folder of `dataset` under `data_root()` (None if synthetic)."""
    if dataset not in FOLDERS:
        return None
    return os.path.join(data_root(), FOLDERS[dataset]) if FOLDERS[dataset] \
        else data_root()


def _size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(
        image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, "
                         f"width), got {image_size!r}")
    return size


def _reader_plan(dataset, data_dir, size, limit, validation_count) -> dict:
    if dataset == "isic":
        size = size or isic.DEFAULT_SIZE
        listing = isic.protocol_splits(data_dir, validation_count)
        read = lambda e, size, split: isic.read_example(  # noqa: E731
            e, None if split == "test" else size)
        text = (f"ISIC 2017 Part 1. Validation = {len(listing['validation'])} "
                "official training pairs held out (evenly spaced by id); test = "
                "official Test_v2 if present, else official Validation, at its "
                f"original resolution. Train and validation resized to {size[0]}x"
                f"{size[1]} (bilinear, antialiased), masks nearest; masks thresholded at "
                "128 (values within 32 of 0 or 255, e.g. JPEG-compressed; under "
                "1% anti-aliased values tolerated); fov all ones.")
    else:
        listing = retina.SPLITS[dataset](data_dir, validation_count)
        read = lambda e, size, split: retina.read_example(e, size)  # noqa: E731
        text = (f"{retina.DESCRIPTIONS[dataset]} Validation = the last "
                f"{len(listing['validation'])} training images, held out of train. "
                + ("" if dataset == "drive" else "STARE/CHASE_DB1 FOV derived: "
                   f"red > {retina.FOV_THRESHOLD}, largest 8-connected "
                   "component, holes filled. ")
                + (f"Resized to {size[0]}x{size[1]} (image bilinear, masks "
                   "nearest)." if size else "Native image sizes."))
    check_disjoint(listing, data_dir)
    entries = {split: items[:limit] for split, items in listing.items()}
    paths = sorted({os.path.relpath(e[k], data_dir) for items in entries.values()
                    for e in items for k in ("image", "mask", "fov", "mask2")
                    if e.get(k)})
    sources = [(p, files.sha256(os.path.join(data_dir, p))) for p in paths]
    return {
        "size": size, "preprocessing": text, "sources": sources,
        "splits": {s: (len(items), lambda items=items, s=s: (
            read(e, size, s) for e in items)) for s, items in entries.items()},
        "code": [isic.__file__ if dataset == "isic" else retina.__file__]}


def check_disjoint(listing: dict[str, list[dict]], where: str) -> None:
    """Refuses an id listed in two splits: validation or test would leak into train."""
    seen = {}
    for split, entries in listing.items():
        for entry in entries:
            if entry["id"] in seen and seen[entry["id"]] != split:
                raise errors.DataError(
                    f"{where}: id {entry['id']!r} is in both the {seen[entry['id']]} "
                    f"and the {split} split")
            seen[entry["id"]] = split


def _synthetic_plan(dataset, size, limit, seed) -> dict:
    from r2u.data import synthetic  # Lazy: owned by the pipeline module.
    kind, default, counts = SYNTHETIC[dataset]
    size = size or (default, default)
    if size[0] != size[1]:
        raise ValueError(f"synthetic images are square, got image_size {size}")
    splits = {}
    for split, count in counts.items():
        count = count if limit is None else min(count, limit)
        splits[split] = (count, lambda s=split, n=count: synthetic.examples(
            kind, s, n, size[0], seed))
    counts = {split: count for split, (count, _) in splits.items()}
    return {"size": size, "sources": [], "splits": splits,
            "code": [synthetic.__file__],
            "preprocessing": f"synthetic.examples(kind={kind!r}, size={size[0]},"
                             f" seed={seed}); examples per split {counts}."}


def _fingerprint(dataset, plan, num_shards, limit, seed, validation_count) -> str:
    code = hashlib.sha256()
    for path in sorted(plan["code"] + [imageio.__file__, tfrecord.__file__]):
        with open(path, "rb") as f:
            code.update(f.read())
    blob = json.dumps({
        "format_version": manifest_lib.FORMAT_VERSION, "dataset": dataset,
        "size": plan["size"], "num_shards": num_shards, "limit": limit,
        "seed": seed, "validation_count": validation_count,
        "sources": plan["sources"], "code": code.hexdigest()},
        sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _up_to_date(out_dir: str, fingerprint: str) -> dict | None:
    try:
        manifest = manifest_lib.load(out_dir)
    except errors.DataError:
        return None
    if manifest.get("fingerprint") != fingerprint:
        return None
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            path = os.path.join(out_dir, shard["file"])
            if not os.path.isfile(path) or os.path.getsize(path) != shard["bytes"]:
                return None
    return manifest


class _Stats:
    """Accumulates shapes, mask2 presence and FOV class counts."""

    def __init__(self):
        self.shapes = set()
        self.counts = np.zeros(2, np.int64)
        self.mask2 = True

    def watch(self, examples: Iterable[dict], count_classes: bool,
              report: Callable[[int], None]) -> Iterator[dict]:
        for done, example in enumerate(examples, 1):
            self.shapes.add(tuple(np.shape(example["image"])))
            self.mask2 &= "mask2" in example
            if count_classes:
                inside = example["mask"][example["fov"] > 0]
                positives = int(np.count_nonzero(inside))
                self.counts += (inside.size - positives, positives)
            yield example
            report(done)

    def class_weights(self, where: str) -> list[float]:
        if self.counts.min() == 0:
            raise errors.DataError(
                f"{where}: training masks inside the FOV have a class with no "
                f"pixel (background, foreground = {self.counts.tolist()})")
        return (self.counts.sum() / (2.0 * self.counts)).tolist()


def _log_progress(split: str, done: int, total: int) -> None:
    if done == total or done % max(1, total // 10) == 0:
        logging.info("prepare %s: %d/%d examples", split, done, total)


def _shards(num_shards: int | None, count: int) -> int:
    if num_shards is None:
        return max(1, min(MAX_DEFAULT_SHARDS, math.ceil(count / EXAMPLES_PER_SHARD)))
    return max(1, min(num_shards, count))


def _write_all(staging, dataset, plan, num_shards, progress) -> dict:
    """Writes every split into `staging`; returns the manifest body."""
    splits, stats, mask2_splits = {}, _Stats(), []
    for split, (count, make) in plan["splits"].items():
        if count == 0:
            continue
        split_stats = _Stats()
        stream = split_stats.watch(make(), split == "train",
                                   lambda done, s=split: progress(s, done, count))
        splits[split] = tfrecord.write_split(staging, split, stream,
                                             _shards(num_shards, count))
        if split != "test":  # test may keep original sizes (ISIC)
            stats.shapes |= split_stats.shapes
        if split == "train":
            stats.counts = split_stats.counts
        if split_stats.mask2:
            mask2_splits.append(split)
    if "train" not in splits:
        raise errors.DataError(f"{dataset}: no training examples found")
    channels = {shape[-1] for shape in stats.shapes}  # train and validation
    if len(channels) != 1:
        raise errors.DataError(f"{dataset}: images mix channel counts {channels}")
    shape = list(stats.shapes)[0] if len(stats.shapes) == 1 else None
    return {"dataset": dataset, "splits": splits,
            "image_shape": shape and [int(d) for d in shape],
            "channels": int(channels.pop()),
            "class_weights": stats.class_weights(dataset),
            "class_counts": stats.counts.tolist(),
            "mask2_splits": mask2_splits,
            "source_files": [p for p, _ in plan["sources"]],
            "preprocessing": plan["preprocessing"],
            "format_version": manifest_lib.FORMAT_VERSION}


def _commit(staging: str, out_dir: str, manifest: dict) -> None:
    old = manifest_lib.path(out_dir)
    if os.path.exists(old):
        os.remove(old)  # A half-replaced directory must not look complete.
    keep = set()
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            keep.add(shard["file"])
            os.replace(os.path.join(staging, shard["file"]),
                       os.path.join(out_dir, shard["file"]))
    manifest_lib.write(out_dir, manifest)
    for name in os.listdir(out_dir):
        if _SHARD.fullmatch(name) and name not in keep:
            os.remove(os.path.join(out_dir, name))


def _plan(dataset, data_dir, image_size, num_shards, limit, seed,
          validation_count) -> dict:
    """Checks the options and lists what `dataset` will be prepared from."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of "
                         f"{', '.join(DATASETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if num_shards is not None and num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    size = _size(image_size)
    if dataset in SYNTHETIC:
        return _synthetic_plan(dataset, size, limit, seed)
    data_dir = data_dir or default_data_dir(dataset)
    if not os.path.isdir(data_dir):
        raise errors.DataError(f"{data_dir}: {dataset} data folder not found")
    return _reader_plan(dataset, data_dir, size, limit, validation_count)


def ensure_prepared(dataset: str, data_dir: str | None, out_dir: str,
                    image_size: int | tuple[int, int] | None = None,
                    validation_count: int | None = None) -> str:
    """`data_dir` if it is a prepared folder (has a manifest), else `dataset` prepared
    from it (raw, or None for the default location) into `out_dir`; returns the folder."""
    if data_dir and os.path.isfile(manifest_lib.path(data_dir)):
        return data_dir
    prepare(dataset, data_dir, out_dir, image_size=image_size,
            validation_count=validation_count)
    return out_dir


def prepare(dataset: str, data_dir: str | None, out_dir: str,
            image_size: int | tuple[int, int] | None = None,
            num_shards: int | None = None, limit: int | None = None,
            seed: int = 0, force: bool = False,
            progress: Progress | None = None,
            validation_count: int | None = None) -> dict:
    """Prepares `dataset` into `out_dir` (shards + manifest.json).

    Args:
      dataset: one of `DATASETS`.
      data_dir: raw data folder (None: `default_data_dir(dataset)`); ignored
        for the synthetic datasets.
      out_dir: output folder (created if needed).
      image_size: int or (height, width); default 256 for ISIC, native for
        retina datasets, 64/96 for synthetic/synthetic_vessels.
      num_shards: shards per split (capped by the split size); default one per
        256 examples, at most 16.
      limit: keep at most this many examples per split (quick runs, tests).
      seed: base seed of the synthetic datasets.
      force: rewrite even when the existing preparation is up to date.
      progress: called as progress(split, done, total) after each example;
        default logs every 10%.
      validation_count: training images held out as the validation split
        (default 20% for retina datasets, 10% for ISIC; see their readers).

    Returns:
      The manifest dict.

    Raises:
      DataError: bad or missing input, naming the file and the problem.
      ValueError: unknown dataset or bad option.
      OSError: `out_dir` cannot be created or written (naming it).
    """
    plan = _plan(dataset, data_dir, image_size, num_shards, limit, seed,
                 validation_count)
    fingerprint = _fingerprint(dataset, plan, num_shards, limit, seed,
                               validation_count)
    try:
        os.makedirs(out_dir, exist_ok=True)
        existing = None if force else _up_to_date(out_dir, fingerprint)
        if existing is not None:
            logging.info("%s is up to date (fingerprint %s)", out_dir,
                         fingerprint[:12])
            return existing
        staging = tempfile.mkdtemp(prefix=".staging-", dir=out_dir)
    except OSError as e:  # Name the folder, not a staging or parent path.
        raise OSError(f"{out_dir}: output folder is not writable "
                      f"({e.strerror or e})") from e
    try:
        manifest = _write_all(staging, dataset, plan, num_shards,
                              progress or _log_progress)
        manifest.update(fingerprint=fingerprint, options={
            "image_size": plan["size"], "num_shards": num_shards,
            "limit": limit, "seed": seed, "validation_count": validation_count})
        _commit(staging, out_dir, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logging.info("prepared %s into %s", dataset, out_dir)
    return manifest_lib.load(out_dir)  # As JSON, like later reads.
