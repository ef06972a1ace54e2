"""A prepared dataset as one object: its manifest read once, its splits and datasets.

Training, evaluation and the benchmarks receive a `PreparedData` instead of a folder
path, as `tfds` hands out a `DatasetInfo`: the manifest (`r2u.data.manifest`) is read
and checked once, and everything derived from it (shard paths, counts, class weights,
channels, image shape) is an attribute, not another read.

    data = prepared.load("runs/drive-r2unet/data")
    data.split("train").num_examples
    ds = data.dataset("validation", batch_size=1, training=False)
"""

import dataclasses
import os
from typing import Dict, Optional, Tuple, Union

import tensorflow as tf

from r2u import errors
from r2u.data import manifest as manifest_lib
from r2u.data import pipeline
from r2u.data import tfrecord


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: its example ids, count and shard files (absolute paths, in order)."""
    name: str
    ids: Tuple[str, ...]
    num_examples: int
    shards: Tuple[str, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedData:
    """A prepared TFRecord folder, described by its manifest (read once, checked).

    Attributes:
      path: the folder holding `manifest.json` and the shards.
      name: the dataset's name ("drive", "isic", "synthetic", ...).
      splits: {split name: `Split`}.
      class_weights: one weight per class, computed at preparation.
      channels: the stored image channels (1 to 4).
      image_shape: [H, W, C] when every image has it, else None.
      mask2_splits: splits with a second observer's masks.
      manifest: the manifest itself.
      classes: class names in index order (masks hold the index), index 0 the
        background; ("background", "foreground") for manifests written before
        K classes.
      num_classes: len(classes).
    """
    path: str
    name: str
    splits: Dict[str, Split]
    class_weights: Tuple[float, ...]
    channels: int
    image_shape: Optional[Tuple[int, int, int]]
    mask2_splits: Tuple[str, ...]
    manifest: dict = dataclasses.field(repr=False)
    classes: Tuple[str, ...] = manifest_lib.LEGACY_CLASSES

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        """The split `name`; DataError naming the manifest if there is none."""
        if name not in self.splits:
            raise errors.DataError(
                f"{manifest_lib.path(self.path)}: no split {name!r} (available: "
                f"{', '.join(sorted(self.splits))})")
        return self.splits[name]

    def shard_paths(self, split: str) -> list:
        return list(self.split(split).shards)

    def has_mask2(self, split: str) -> bool:
        """True if `split` has a second observer's masks ("mask2")."""
        return split in self.mask2_splits

    def verify(self, full: bool = False, splits=None) -> None:
        """Checks the shards against the manifest (`manifest.verify`); no re-read."""
        manifest_lib.verify(self.path, full=full, splits=splits, manifest=self.manifest)

    def dataset(self, split: str, **kwargs) -> tf.data.Dataset:
        """The tf.data pipeline of `split`: `pipeline.make_dataset`'s keyword args."""
        return pipeline.make_dataset(self, split, **kwargs)


def load(path: str) -> PreparedData:
    """Reads and checks the manifest of `path` (DataError if missing or corrupt)."""
    manifest = manifest_lib.load(path)
    splits = {}
    for name, info in manifest["splits"].items():
        splits[name] = Split(
            name=name, ids=tuple(info.get("ids", ())),
            num_examples=int(info["num_examples"]),
            shards=tuple(tfrecord.shard_paths(path, name, manifest)))
    shape = manifest.get("image_shape")
    return PreparedData(
        path=path, name=manifest["dataset"], splits=splits,
        class_weights=tuple(float(w) for w in manifest["class_weights"]),
        channels=int(manifest["channels"]),
        image_shape=tuple(int(s) for s in shape) if shape else None,
        mask2_splits=tuple(manifest.get("mask2_splits", ())), manifest=manifest,
        classes=manifest_lib.classes(manifest))


def of(data: Union[PreparedData, str]) -> PreparedData:
    """`data` itself, or the prepared folder at path `data` loaded."""
    if isinstance(data, PreparedData):
        return data
    return load(os.fspath(data))
