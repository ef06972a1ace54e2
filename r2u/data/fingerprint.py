"""Dataset fingerprint: the facts a training plan is derived from.

As nnU-Net's `DatasetFingerprintExtractor` (shapes, spacings, intensity statistics
per channel), adapted to 2D images of unknown spacing: besides image sizes and
intensities, it measures how big each class's structures are in pixels, since a
plan for vessels a few pixels wide differs from one for lesions hundreds wide.

Counted pixels are those with `fov != 0`; every statistic is over them only.

- Intensities: at most `SAMPLES_PER_CASE` counted pixels per case, drawn with a
  fixed seed as nnU-Net does, so each case weighs the same, big images cost no
  more than small ones, and the result does not depend on the order of cases.
- Width: `distance.medial_widths`, the exact Euclidean distance from each pixel
  of a class to the nearest pixel not of it, read at its ridges (the medial
  axis) and refined between pixels; axis-aligned bands measure their exact pixel
  width. Pixels outside the field of view and beyond the image border count as
  *of* the class: an edge nobody can see must not cut a structure, so a vessel
  leaving the frame keeps its width (a class with no pixel outside it at all
  reads about twice H + W). `median`, `p10` and `p90` are over the medial pixels
  of all cases (long structures weigh more than short ones); `per_case` holds
  the median of each case (None where the class is absent).
- Components: 8-connected, over counted pixels of the class.
- Field of view: where a case has uncounted pixels (an ignore label), whether they
  are the dark surround of a field of view that inference can find from the image
  alone (`retina.derive_fov`, as for fundus photographs), or pixels left
  unannotated, which only the label map knows. `fov_from_image` is the share of
  such cases of the first kind (None without any).
- Images whose long side exceeds `MAX_SIDE` are measured (width, components) on
  a copy downscaled to `MAX_SIDE` by nearest neighbour; widths are scaled back by
  the linear factor and areas by its square, so structures under about
  side / `MAX_SIDE` pixels wide may vanish or be measured coarsely.
"""

import json
import math
from collections.abc import Iterable, Sequence

import numpy as np

from r2u import errors
from r2u import files
from r2u.data import components
from r2u.data import distance
from r2u.data import retina

FILENAME = "fingerprint.json"  # beside manifest.json in a prepared folder
MAX_SIDE = 1024
SAMPLES_PER_CASE = 10_000
SEED = 1234
SIZE_SPREAD = 1.1  # sides must vary more than this ratio for a slope
FOV_AGREEMENT = 0.95  # IoU of the field of view found from the image and the labels'
_PERCENTILES = {"p00_5": 0.5, "p50": 50.0, "p99_5": 99.5}


def _checked(example: dict, num_classes: int
             ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(id, image [H, W, C] uint8, mask [H, W], counted bool [H, W])."""
    name = str(example.get("id", "?"))
    image = np.asarray(example["image"])
    image = image[:, :, None] if image.ndim == 2 else image
    mask = np.asarray(example["mask"])
    fov = example.get("fov")
    fov = np.ones(mask.shape, bool) if fov is None else np.asarray(fov) != 0
    if image.ndim != 3 or image.dtype != np.uint8:
        raise errors.DataError(f"{name}: image must be uint8 [H, W, C], got "
                               f"{image.dtype} {list(image.shape)}")
    if mask.shape != image.shape[:2] or fov.shape != image.shape[:2]:
        raise errors.DataError(
            f"{name}: image is {list(image.shape[:2])} but mask "
            f"{list(mask.shape)} and fov {list(fov.shape)}")
    if mask.dtype.kind not in "biu":
        raise errors.DataError(f"{name}: mask must hold class indices, got "
                               f"{mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() >= num_classes):
        raise errors.DataError(f"{name}: mask values {int(mask.min())}.."
                               f"{int(mask.max())} are not all classes 0.."
                               f"{num_classes - 1}")
    if not fov.any():
        raise errors.DataError(f"{name}: field of view is empty, no pixel to count")
    return name, image, mask.astype(np.int64), fov


def _downscaled(mask: np.ndarray, fov: np.ndarray):
    """(mask, fov, linear scale back) at most MAX_SIDE long, nearest neighbour."""
    height, width = mask.shape
    if max(height, width) <= MAX_SIDE:
        return mask, fov, 1.0
    factor = MAX_SIDE / max(height, width)
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    rows = ((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64)
    scale = math.sqrt(height * width / (size[0] * size[1]))
    return mask[np.ix_(rows, cols)], fov[np.ix_(rows, cols)], scale


def _fov_from_image(image: np.ndarray, counted: np.ndarray) -> bool:
    """Whether the counted pixels are the field of view the image shows."""
    try:
        found = retina.derive_fov(image) != 0
    except errors.DataError:  # no bright region at all
        return False
    union = np.count_nonzero(found | counted)
    return bool(np.count_nonzero(found & counted) >= FOV_AGREEMENT * union)


def _summary(values) -> dict:
    """{median, p10, p90} of `values` (None each when there is none)."""
    values = np.asarray(values, np.float64)
    if not values.size:
        return {"median": None, "p10": None, "p90": None}
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {"median": float(median), "p10": float(p10), "p90": float(p90)}


def _histogram_stats(counts: np.ndarray) -> dict:
    """mean, std, percentiles (NumPy's linear rule), min, max of a uint8 histogram."""
    total = int(counts.sum())
    values = np.arange(counts.size, dtype=np.float64)
    mean = float((counts * values).sum() / total)
    std = math.sqrt(float((counts * (values - mean) ** 2).sum() / total))
    cumulative = np.cumsum(counts)

    def nth(i):  # the i-th smallest sample (0-based)
        return float(np.searchsorted(cumulative, i, side="right"))

    out = {"mean": mean, "std": std}
    for key, percent in _PERCENTILES.items():
        position = percent / 100.0 * (total - 1)
        low = math.floor(position)
        out[key] = nth(low) + (nth(min(low + 1, total - 1)) - nth(low)) * (
            position - low)
    present = np.flatnonzero(counts)
    out["min"], out["max"] = float(present[0]), float(present[-1])
    return out


class Fingerprinter:
    """Accumulates a fingerprint over examples, one at a time.

    Examples are dicts `{"id": str, "image": uint8 [H, W, C], "mask": uint8 [H, W]
    class indices, "fov": uint8 [H, W] (0 = not counted; absent = all counted)}`.
    Memory grows with the medial pixels and components kept, not with pixels.
    """

    def __init__(self, class_names: Sequence[str]):
        """Args: class_names: K names, index 0 the background."""
        if len(class_names) < 2 or len(set(class_names)) != len(class_names):
            raise ValueError(f"need 2 or more distinct class names, got "
                             f"{list(class_names)}")
        self._names = [str(n) for n in class_names]
        self._sizes, self._fov_fractions, self._image_stds = [], [], []
        self._fov_found = []  # per case with uncounted pixels
        self._channels = None
        self._histogram = None  # int64 [C, 256]: sampled counted pixels
        self._pixels = np.zeros(len(class_names), np.int64)  # counted, per class
        self._present = np.zeros(len(class_names), np.int64)
        foreground = range(1, len(class_names))
        self._widths = {k: [] for k in foreground}  # per case: array or None
        self._areas = {k: [] for k in foreground}  # per case: array or None

    def add(self, example: dict) -> None:
        """Measures one example.

        Raises:
          errors.DataError: naming the example when its arrays do not fit.
        """
        name, image, mask, counted = _checked(example, len(self._names))
        if self._channels is None:
            self._channels = image.shape[2]
            self._histogram = np.zeros((self._channels, 256), np.int64)
        elif image.shape[2] != self._channels:
            raise errors.DataError(f"{name}: {image.shape[2]} channels, earlier "
                                   f"examples {self._channels}")
        self._sizes.append(list(mask.shape))
        self._fov_fractions.append(float(counted.mean()))
        if not counted.all():
            self._fov_found.append(_fov_from_image(image, counted))
        self._add_intensities(image, counted)
        per_class = np.bincount(mask[counted].ravel(), minlength=len(self._names))
        self._pixels += per_class
        self._present += per_class > 0
        small_mask, small_fov, scale = _downscaled(mask, counted)
        for k in self._widths:
            own = (small_mask == k) & small_fov
            if not per_class[k] or not own.any():
                self._widths[k].append(None)
                self._areas[k].append(None)
                continue
            self._widths[k].append(
                (distance.medial_widths(own, small_fov) * scale).astype(np.float32))
            self._areas[k].append(components.areas(own, diagonal=True) * scale ** 2)

    def _add_intensities(self, image: np.ndarray, counted: np.ndarray) -> None:
        where = np.flatnonzero(counted)
        if where.size > SAMPLES_PER_CASE:
            rng = np.random.default_rng(SEED)  # per case: independent of order
            where = np.sort(rng.choice(where, SAMPLES_PER_CASE, replace=False))
        pixels = image.reshape(-1, image.shape[2])[where]  # [N, C]
        for c in range(self._channels):
            self._histogram[c] += np.bincount(pixels[:, c], minlength=256)
        self._image_stds.append(pixels.std(axis=0, dtype=np.float64))

    def result(self) -> dict:
        """The fingerprint: a JSON-friendly dict (see the module docstring).

        Returns:
          {"cases", "channels", "class_names", "sizes": [[H, W], ...],
          "median_size", "min_size", "max_size": [H, W] each, "fov_fraction",
          "fov_from_image",
          "intensity": per channel {mean, std, p00_5, p50, p99_5, min, max on the
          uint8 scale, per_image_std: median over cases of each case's std},
          "classes": {name: {index, pixel_fraction, images_present, and for
          foreground classes width {median, p10, p90, per_case}, component_area
          {median, p10, p90}, components_per_image (median over the images
          showing the class)}}, "slope_width_vs_size": float or None,
          "measured_max_side"}.

        Raises:
          ValueError: if no example was added.
        """
        if not self._sizes:
            raise ValueError("fingerprint of no examples")
        sizes = np.array(self._sizes)
        intensity = []
        for c in range(self._channels):
            stats = _histogram_stats(self._histogram[c])
            stats["per_image_std"] = float(np.median(
                [s[c] for s in self._image_stds]))
            intensity.append(stats)
        classes = {name: self._class(k) for k, name in enumerate(self._names)}
        return {
            "cases": len(self._sizes), "channels": self._channels,
            "class_names": list(self._names), "sizes": sizes.tolist(),
            "median_size": np.median(sizes, axis=0).tolist(),
            "min_size": sizes.min(axis=0).tolist(),
            "max_size": sizes.max(axis=0).tolist(),
            "fov_fraction": float(np.mean(self._fov_fractions)),
            "fov_from_image": (float(np.mean(self._fov_found)) if self._fov_found
                               else None),
            "intensity": intensity, "classes": classes,
            "slope_width_vs_size": self._slope(classes),
            "measured_max_side": MAX_SIDE,
        }

    def _class(self, k: int) -> dict:
        entry = {"index": k,
                 "pixel_fraction": float(self._pixels[k] / self._pixels.sum()),
                 "images_present": int(self._present[k])}
        if k == 0:
            return entry
        widths = [w for w in self._widths[k] if w is not None]
        areas = [a for a in self._areas[k] if a is not None]
        entry["width"] = _summary(np.concatenate(widths) if widths else [])
        entry["width"]["per_case"] = [None if w is None else float(np.median(w))
                                      for w in self._widths[k]]
        entry["component_area"] = _summary(np.concatenate(areas) if areas else [])
        # Over the images showing the class: how many pieces one image holds.
        entry["components_per_image"] = (float(np.median([a.size for a in areas]))
                                         if areas else None)
        return entry

    def _slope(self, classes: dict) -> float | None:
        """d log(width) / d log(side) of the thinnest foreground class, or None."""
        measured = [c for c in list(classes.values())[1:]
                    if c["width"]["median"] is not None]
        if not measured:
            return None
        thinnest = min(measured, key=lambda c: c["width"]["median"])
        points = [(math.sqrt(h * w), width) for (h, w), width
                  in zip(self._sizes, thinnest["width"]["per_case"])
                  if width is not None and width > 0]
        sides = [side for side, _ in points]
        if len(points) < 2 or max(sides) <= SIZE_SPREAD * min(sides):
            return None
        x, y = np.log(np.array(points)).T
        return float(np.polyfit(x, y, 1)[0])


def compute(examples: Iterable[dict], class_names: Sequence[str]) -> dict:
    """The fingerprint of `examples` (see `Fingerprinter`)."""
    fingerprinter = Fingerprinter(class_names)
    for example in examples:
        fingerprinter.add(example)
    return fingerprinter.result()


def write(path: str, fingerprint: dict) -> None:
    """Writes `fingerprint` as JSON to `path`, atomically."""
    files.write_json(path, fingerprint, allow_nan=False, newline=True)


def load(path: str) -> dict:
    """Reads a fingerprint written by `write`.

    Raises:
      errors.DataError: naming `path` if it is unreadable or not a fingerprint.
    """
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise errors.DataError(f"{path}: cannot read fingerprint ({e})") from e
    if not isinstance(value, dict) or not {"cases", "classes"} <= value.keys():
        raise errors.DataError(f"{path}: not a fingerprint (no cases or classes)")
    return value
