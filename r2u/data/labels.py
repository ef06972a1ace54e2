"""The classes of a folder dataset: which integer of a label map is which class.

A `Labels` names K classes in index order (index 0 the background) with the
integer each one has in the label maps, and optionally an ignore value whose
pixels are neither trained on nor scored. It comes from one of three places:

- an nnU-Net v2 `dataset.json` (`from_nnunet`): `labels` maps name -> integer,
  `"background": 0`, the values consecutive 0..K-1 and an optional `"ignore"`
  equal to K (nnU-Net's rules: the ignore label is the highest, and the label
  values including it are consecutive);
- a `labels.json` of a plain folder (`from_file`): the same mapping, but any
  distinct values (e.g. `{"background": 0, "nerve": 128, "vessel": 255}`),
  classes in increasing order of value, `"ignore"` any other value;
- the values found in the training label maps (`discover`): in increasing
  order, named `background`, `class_1`, `class_2`, ... (so a 0/255 mask is 0/1).
"""

import dataclasses
import json
import os
from collections.abc import Iterable

import numpy as np

from r2u import errors
from r2u.data import imageio
from r2u.data import tfrecord

MAX_CLASSES = tfrecord.MAX_CLASS_INDEX + 1
IGNORE = "ignore"
BACKGROUND = "background"


@dataclasses.dataclass(frozen=True)
class Labels:
    """K classes: names and label-map values in index order, and the ignore value.

    Attributes:
      names: class names, index 0 the background.
      values: the integer of each class in the label maps, increasing.
      ignore: the integer of the ignored pixels, or None.
      source: where the classes were declared (error messages).
    """
    names: tuple[str, ...]
    values: tuple[int, ...]
    ignore: int | None = None
    source: str = "labels"

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def indices(self, values: np.ndarray, path: str) -> tuple[np.ndarray, np.ndarray]:
        """Turns label-map values into (mask, fov), both uint8 [H, W].

        `mask` is the class index of each pixel; ignored pixels get mask 0 and
        fov 0, every other pixel fov 1.

        Raises:
          DataError: naming `path` and the first value that is not declared.
        """
        found = np.unique(values)
        known = self.values + (() if self.ignore is None else (self.ignore,))
        unknown = np.setdiff1d(found, known)
        if unknown.size:
            ignore = "" if self.ignore is None else f"; ignore {self.ignore}"
            raise errors.DataError(
                f"{path}: label value {int(unknown[0])} is not in {self.source} "
                f"(values {', '.join(map(str, self.values))}{ignore})")
        mask = np.searchsorted(np.asarray(self.values), values)
        fov = np.ones(values.shape, np.uint8)
        if self.ignore is not None:
            ignored = values == self.ignore
            mask[ignored] = 0
            fov[ignored] = 0
        return mask.astype(np.uint8), fov


def _value(name: str, value, where: str, regions: bool) -> int:
    """The integer of one label; nnU-Net writes a plain label also as `[3]`."""
    if regions and isinstance(value, (list, tuple)):
        if len(value) > 1:
            raise errors.DataError(
                f"{where}: label {name!r} is a region {list(value)}; region-based "
                "labels are not supported, give each class one integer")
        value = value[0] if value else None
    if isinstance(value, bool) or not isinstance(value, int) or not \
            0 <= value <= 65535:
        raise errors.DataError(f"{where}: label {name!r} has value {value!r}, "
                               "expected an integer 0..65535")
    return value


def _parse(mapping, where: str, regions: bool) -> Labels:
    """Checks a name -> integer mapping; classes sorted by value."""
    if not isinstance(mapping, dict) or not mapping:
        raise errors.DataError(f"{where}: labels must be an object of name: integer, "
                               f"got {mapping!r}")
    values = {name: _value(name, v, where, regions) for name, v in mapping.items()}
    if values.get(BACKGROUND) != 0:
        raise errors.DataError(f"{where}: labels need \"background\": 0 (found "
                               f"{values.get(BACKGROUND)!r})")
    ignore = values.pop(IGNORE, None)
    by_value = {}
    for name, value in values.items():
        if value in by_value or value == ignore:
            other = by_value.get(value, IGNORE)
            raise errors.DataError(f"{where}: labels {other!r} and {name!r} share "
                                   f"the value {value}")
        by_value[value] = name
    if len(by_value) < 2:
        raise errors.DataError(f"{where}: labels declare no class besides background")
    if len(by_value) > MAX_CLASSES:
        raise errors.DataError(f"{where}: {len(by_value)} classes, at most "
                               f"{MAX_CLASSES} are supported")
    order = sorted(by_value)
    return Labels(tuple(by_value[v] for v in order), tuple(order), ignore,
                  source=os.path.basename(where))


def from_nnunet(mapping, where: str) -> Labels:
    """The `labels` of an nnU-Net v2 `dataset.json` at `where`, as nnU-Net checks them.

    Raises:
      DataError: a region label, no background 0, values not consecutive, or an
        ignore label that is not the highest value.
    """
    labels = _parse(mapping, where, regions=True)
    if labels.values != tuple(range(labels.num_classes)):
        raise errors.DataError(
            f"{where}: label values must be consecutive 0..{labels.num_classes - 1}, "
            f"got {', '.join(map(str, labels.values))}")
    if labels.ignore is not None and labels.ignore != labels.num_classes:
        raise errors.DataError(
            f"{where}: the ignore label must be the highest value, "
            f"{labels.num_classes} (got {labels.ignore})")
    return labels


def from_file(path: str) -> Labels:
    """Reads a plain folder's `labels.json` (name -> integer).

    Raises:
      DataError: not JSON, or a mapping `_parse` refuses.
    """
    try:
        with open(path, encoding="utf-8") as f:
            mapping = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise errors.DataError(f"{path}: cannot read JSON ({e})") from e
    return _parse(mapping, path, regions=False)


def discover(paths: Iterable[str], where: str) -> Labels:
    """The classes of the values found in the label maps at `paths`.

    Raises:
      DataError: an unreadable label map, one value only, or too many values.
    """
    found = set()
    for path in paths:
        found.update(np.unique(imageio.read_label_map(path)).tolist())
    if len(found) < 2:
        raise errors.DataError(
            f"{where}: the training label maps hold one value only ({found or '{}'}); "
            "nothing to segment")
    if len(found) > MAX_CLASSES:
        raise errors.DataError(
            f"{where}: the training label maps hold {len(found)} distinct values, at "
            f"most {MAX_CLASSES} classes are supported (are they label maps?)")
    order = sorted(found)
    names = (BACKGROUND,) + tuple(f"class_{i}" for i in range(1, len(order)))
    return Labels(names, tuple(order), None,
                  source=f"the values of the training label maps in {where}")
