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
import re
from typing import Dict, Iterator, Optional, Tuple, Union

import tensorflow as tf
from absl import logging

from r2u import errors
from r2u.data import fingerprint as fingerprint_lib
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

    def examples(self, split: str, with_mask2: bool = False) -> Iterator[Dict]:
        """The examples of `split` as numpy, in file order, unpreprocessed:
        {"id": str, "image": uint8 [H, W, C], "mask", "fov" (and "mask2" if asked):
        uint8 [H, W]}.

        Raises:
          DataError: naming a shard that is missing, of the wrong size (a shard cut
            at a record boundary reads without error, one image short) or unreadable.
        """
        self.verify(splits=[split])
        for file in self.shard_paths(split):
            records = tf.data.TFRecordDataset(file).map(
                lambda s: tfrecord.parse(s, with_mask2=with_mask2))
            try:
                for example in records.as_numpy_iterator():
                    out = {"id": example["id"].decode("utf-8"),
                           "image": example["image"]}
                    for key in ("mask", "fov", "mask2"):
                        if key in example:
                            out[key] = example[key][..., 0]
                    yield out
            except tf.errors.OpError as e:
                # Drop TF's "{{function_node ...}}" and "[Op:...]" wrapping.
                reason = " ".join(re.sub(r"\{\{.*?\}\}|\[Op:.*", "",
                                         e.message).split())
                raise errors.DataError(f"{file}: corrupt shard ({reason[:300]}); "
                                       "re-run bin/prepare") from e

    def fingerprint(self) -> Dict:
        """The training split's fingerprint (`r2u.data.fingerprint`): written at
        preparation; measured now (and saved) for folders prepared before it was."""
        path = os.path.join(self.path, fingerprint_lib.FILENAME)
        if os.path.isfile(path):
            return fingerprint_lib.load(path)
        logging.info("%s: measuring the training split's fingerprint", self.path)
        measured = fingerprint_lib.compute(self.examples("train"), self.classes)
        try:
            fingerprint_lib.write(path, measured)
        except OSError:  # a read-only prepared folder: measure again next time
            pass
        return measured

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
