"""Prepares a dataset: raw files (or synthetic) -> TFRecord shards + manifest, and the
fingerprint of its training split (`fingerprint.json`, read by `r2u.data.plan`).

`prepare` lists the sources (`r2u.data.sources.find`), computes a fingerprint of the options, the
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

from r2u import errors
from r2u.data import fingerprint as fingerprint_lib
from r2u.data import imageio
from r2u.data import manifest as manifest_lib
from r2u.data import sources
from r2u.data import tfrecord

EXAMPLES_PER_SHARD = 256
MAX_DEFAULT_SHARDS = 16
_SHARD = re.compile(r"(train|validation|test)-\d{5}-of-\d{5}\.tfrecord")

Progress = Callable[[str, int, int], None]

# What a dataset is prepared from lives in `r2u.data.sources`; these names stay here.
DATASETS = sources.DATASETS
data_root = sources.data_root
default_data_dir = sources.default_data_dir
check_disjoint = sources.check_disjoint


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
    """Accumulates shapes, mask2 presence and per-class pixel counts in the FOV."""

    def __init__(self, num_classes: int):
        self.shapes = set()
        self.counts = np.zeros(num_classes, np.int64)
        self.mask2 = True

    def watch(self, examples: Iterable[dict], count_classes: bool,
              report: Callable[[int], None]) -> Iterator[dict]:
        for done, example in enumerate(examples, 1):
            self.shapes.add(tuple(np.shape(example["image"])))
            self.mask2 &= "mask2" in example
            if count_classes:
                inside = np.asarray(example["mask"])[np.asarray(example["fov"]) > 0]
                counts = np.bincount(inside.ravel(), minlength=self.counts.size)
                if counts.size > self.counts.size:
                    raise errors.DataError(
                        f"example {example['id']!r}: mask value {counts.size - 1} "
                        f"but the dataset has {self.counts.size} classes")
                self.counts += counts
            yield example
            report(done)

    def class_weights(self, where: str, names) -> list[float]:
        """`total / (K * count_k)` per class k: 1 for every class when balanced."""
        for name, count in zip(names, self.counts):
            if count == 0:
                raise errors.DataError(
                    f"{where}: class {name!r} has no pixel in the training masks "
                    f"(inside the FOV; pixels per class {self.counts.tolist()})")
        return (self.counts.sum() / (self.counts.size * self.counts)).tolist()


def _log_progress(split: str, done: int, total: int) -> None:
    if done == total or done % max(1, total // 10) == 0:
        logging.info("prepare %s: %d/%d examples", split, done, total)


def _shards(num_shards: int | None, count: int) -> int:
    if num_shards is None:
        return max(1, min(MAX_DEFAULT_SHARDS, math.ceil(count / EXAMPLES_PER_SHARD)))
    return max(1, min(num_shards, count))


def _write_all(staging, dataset, plan, num_shards, progress) -> tuple[dict, dict]:
    """Writes every split into `staging`; returns the manifest body and the
    fingerprint of the training split (`r2u.data.fingerprint`)."""
    labels = plan["labels"]()
    where = plan["where"]
    splits, stats, mask2_splits = {}, _Stats(labels.num_classes), []
    measure = fingerprint_lib.Fingerprinter(labels.names)
    for split, (count, make) in plan["splits"].items():
        if count == 0:
            continue
        split_stats = _Stats(labels.num_classes)
        stream = split_stats.watch(make(), split == "train",
                                   lambda done, s=split: progress(s, done, count))
        if split == "train":  # the plan is derived from training images only
            stream = _measured(stream, measure)
        splits[split] = tfrecord.write_split(staging, split, stream,
                                             _shards(num_shards, count))
        if split != "test":  # test may keep original sizes (ISIC)
            stats.shapes |= split_stats.shapes
        if split == "train":
            stats.counts = split_stats.counts
        if split_stats.mask2:
            mask2_splits.append(split)
    if "train" not in splits:
        raise errors.DataError(f"{where}: no training examples found")
    channels = {shape[-1] for shape in stats.shapes}  # train and validation
    if len(channels) != 1:
        raise errors.DataError(f"{where}: images mix channel counts {channels}")
    shape = list(stats.shapes)[0] if len(stats.shapes) == 1 else None
    return {"dataset": dataset, "splits": splits,
            "image_shape": shape and [int(d) for d in shape],
            "channels": int(channels.pop()),
            "class_weights": stats.class_weights(where, labels.names),
            "class_counts": stats.counts.tolist(),
            "classes": list(labels.names), "num_classes": labels.num_classes,
            "label_values": list(labels.values), "ignore_value": labels.ignore,
            "mask2_splits": mask2_splits,
            "source_files": [p for p, _ in plan["sources"]],
            "preprocessing": plan["preprocessing"],
            "format_version": manifest_lib.FORMAT_VERSION}, measure.result()


def _measured(examples: Iterable[dict], measure) -> Iterator[dict]:
    for example in examples:
        measure.add(example)
        yield example


def _commit(staging: str, out_dir: str, manifest: dict, fingerprint: dict) -> None:
    old = manifest_lib.path(out_dir)
    if os.path.exists(old):
        os.remove(old)  # A half-replaced directory must not look complete.
    fingerprint_lib.write(os.path.join(out_dir, fingerprint_lib.FILENAME), fingerprint)
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
      dataset: one of `DATASETS`; "folder" reads `data_dir` as an nnU-Net v2 raw
        dataset or as image/label pairs (`r2u.data.folder`), K classes.
      data_dir: raw data folder (None: `default_data_dir(dataset)`; required
        for "folder"); ignored for the synthetic datasets.
      out_dir: output folder (created if needed).
      image_size: int or (height, width); default 256 for ISIC, native for
        retina and folder datasets, 64/96 for synthetic/synthetic_vessels.
      num_shards: shards per split (capped by the split size); default one per
        256 examples, at most 16.
      limit: keep at most this many examples per split (quick runs, tests).
      seed: base seed of the synthetic datasets; draws the validation cases
        of a folder dataset.
      force: rewrite even when the existing preparation is up to date.
      progress: called as progress(split, done, total) after each example;
        default logs every 10%.
      validation_count: training images held out as the validation split
        (default 20% for retina and folder datasets, 10% for ISIC; see their
        readers).

    Returns:
      The manifest dict (`r2u.data.manifest`), with the classes.

    Raises:
      DataError: bad or missing input, naming the file and the problem.
      ValueError: unknown dataset or bad option.
      OSError: `out_dir` cannot be created or written (naming it).
    """
    plan = sources.find(dataset, data_dir, image_size, num_shards, limit, seed,
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
        manifest, measured = _write_all(staging, dataset, plan, num_shards,
                                        progress or _log_progress)
        manifest.update(fingerprint=fingerprint, options={
            "image_size": plan["size"], "num_shards": num_shards,
            "limit": limit, "seed": seed, "validation_count": validation_count})
        _commit(staging, out_dir, manifest, measured)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logging.info("prepared %s into %s", dataset, out_dir)
    return manifest_lib.load(out_dir)  # As JSON, like later reads.
