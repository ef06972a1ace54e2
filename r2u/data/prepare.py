"""Prepares a dataset: raw files (or synthetic) -> TFRecord shards + manifest, and the
fingerprint of its training split (`fingerprint.json`, read by `r2u.data.plan`).

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
from r2u.data import folder
from r2u.data import fingerprint as fingerprint_lib
from r2u.data import imageio
from r2u.data import isic
from r2u.data import labels as labels_lib
from r2u.data import manifest as manifest_lib
from r2u.data import nnunet
from r2u.data import retina
from r2u.data import tfrecord

# Every dataset with a training preset, and a user's folder (`r2u.data.folder`).
DATASETS = tuple(config.PRESETS)  # the named datasets and "folder"
FOLDERS = {"isic": "ISIC2017", "drive": "DRIVE", "stare": "STARE",
           "chase": "CHASE_DB1", "retina": ""}
# kind, default size, examples per split.
SYNTHETIC = {
    "synthetic": ("lesion", 64, {"train": 400, "validation": 50, "test": 50}),
    "synthetic_vessels": ("vessels", 96,
                          {"train": 60, "validation": 10, "test": 10}),
}
# The classes of the named datasets (binary masks, values after binarisation).
FOREGROUND = {"isic": "lesion", "synthetic": "lesion"}  # the others: "vessel"
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
    """Raw data folder of `dataset` under `data_root()` (None if synthetic or
    "folder", whose folder the user names)."""
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


def _preset_labels(dataset: str) -> labels_lib.Labels:
    return labels_lib.Labels(("background", FOREGROUND.get(dataset, "vessel")), (0, 1),
                             source=dataset)


def _sizes(size) -> str:
    return (f"Resized to {size[0]}x{size[1]} (image bilinear, masks nearest)." if size
            else "Native image sizes.")


def _listing(dataset, data_dir, size, validation_count, seed) -> dict:
    """The splits of `dataset` in `data_dir`, how to read them, and what they are."""
    if dataset == "folder":
        found = folder.listing(data_dir, validation_count, seed)
        read = lambda e, size, split: folder.read_example(  # noqa: E731
            e, found.labels, size)
        return {"listing": found.splits, "read": read, "labels": lambda: found.labels,
                "code": [folder.__file__, nnunet.__file__, labels_lib.__file__],
                "extra_sources": found.label_files,
                "preprocessing": f"{found.description} {_sizes(size)}"}
    labels = lambda: _preset_labels(dataset)  # noqa: E731
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
        return {"listing": listing, "read": read, "labels": labels, "size": size,
                "code": [isic.__file__], "preprocessing": text}
    listing = retina.SPLITS[dataset](data_dir, validation_count)
    read = lambda e, size, split: retina.read_example(e, size)  # noqa: E731
    text = (f"{retina.DESCRIPTIONS[dataset]} Validation = the last "
            f"{len(listing['validation'])} training images, held out of train. "
            + ("" if dataset == "drive" else "STARE/CHASE_DB1 FOV derived: "
               f"red > {retina.FOV_THRESHOLD}, largest 8-connected "
               "component, holes filled. ") + _sizes(size))
    return {"listing": listing, "read": read, "labels": labels,
            "code": [retina.__file__], "preprocessing": text}


def _sha256(data_dir: str, path: str) -> str:
    try:
        return files.sha256(os.path.join(data_dir, path))
    except OSError as e:  # e.g. no permission: name the file, in one line
        raise errors.DataError(f"{os.path.join(data_dir, path)}: cannot read "
                               f"({e.strerror or e})") from e


def _reader_plan(dataset, data_dir, size, limit, validation_count, seed) -> dict:
    found = _listing(dataset, data_dir, size, validation_count, seed)
    size = found.get("size", size)
    read, listing = found["read"], found["listing"]
    check_disjoint(listing, data_dir)
    entries = {split: items[:limit] for split, items in listing.items()}
    paths = {e[k] for items in entries.values() for e in items
             for k in ("image", "mask", "fov", "mask2") if e.get(k)}
    paths.update(p for items in entries.values() for e in items
                 for p in e.get("images", ()))
    paths = sorted({os.path.relpath(p, data_dir)
                    for p in paths | set(found.get("extra_sources", ()))})
    sources = [(p, _sha256(data_dir, p)) for p in paths]
    return {
        "size": size, "preprocessing": found["preprocessing"], "sources": sources,
        "splits": {s: (len(items), lambda items=items, s=s: (
            read(e, size, s) for e in items)) for s, items in entries.items()},
        "code": found["code"], "labels": found["labels"], "where": data_dir}


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
            "labels": lambda: _preset_labels(dataset), "where": dataset,
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
    if dataset == "folder" and not data_dir:
        raise ValueError(
            "dataset 'folder' needs data_dir (--data_dir=DIR): a folder with "
            "dataset.json, imagesTr/, labelsTr/ (nnU-Net v2) or train/images/, "
            "train/masks/")
    data_dir = data_dir or default_data_dir(dataset)
    if not os.path.isdir(data_dir):
        raise errors.DataError(f"{data_dir}: {dataset} data folder not found")
    return _reader_plan(dataset, data_dir, size, limit, validation_count, seed)


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
