"""The operating point: the threshold chosen on validation images, never on test images.

A class-weighted loss (or any loss) leaves the network's probabilities calibrated to
something other than 0.5, so the threshold that turns them into a mask is a choice.
It is made on the validation split, for the dataset's headline metric:

    pooled_f1           2 TP / (2 TP + FP + FN) over all FOV pixels of all images
                        (retina: DRIVE, STARE, CHASE_DB1)
    per_image_jaccard   mean over images of TP / (TP + FP + FN) (ISIC's official
                        score; 1 for an image whose mask and prediction are empty)

`Sweep` collects exact confusion counts of each image at every candidate threshold
(a pixel is foreground iff probability > threshold, as in `r2u.evaluation.metrics`).
"""

from typing import Dict, Sequence

import numpy as np

HEADLINES = ("pooled_f1", "per_image_jaccard")
THRESHOLDS = tuple(np.round(np.arange(1, 100) / 100.0, 2).tolist())  # 0.01 .. 0.99


def counts(probs: np.ndarray, mask: np.ndarray, fov: np.ndarray,
           thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """int64 [T, 3] (TP, FP, FN) of one image at each threshold, FOV pixels only."""
    inside = np.asarray(fov) > 0
    # float32 on both sides, as r2u.evaluation.metrics compares: float32(0.3) > 0.3 in float64.
    probs = np.asarray(probs, np.float32)[inside]
    if np.isnan(probs).any():
        raise ValueError("probabilities contain NaN")
    truth = np.asarray(mask)[inside] > 0
    pos, neg = np.sort(probs[truth]), np.sort(probs[~truth])
    t = np.asarray(thresholds, np.float32)
    tp = pos.size - np.searchsorted(pos, t, side="right")  # p > t
    fp = neg.size - np.searchsorted(neg, t, side="right")
    return np.stack([tp, fp, pos.size - tp], axis=-1).astype(np.int64)


def curve(per_image: np.ndarray, headline: str) -> np.ndarray:
    """The headline metric at each threshold from [N, T, 3] per-image counts."""
    if headline == "pooled_f1":
        tp, fp, fn = np.moveaxis(per_image.sum(axis=0).astype(np.float64), -1, 0)
        return _ratio(2 * tp, 2 * tp + fp + fn)
    if headline == "per_image_jaccard":
        tp, fp, fn = np.moveaxis(per_image.astype(np.float64), -1, 0)
        return _ratio(tp, tp + fp + fn).mean(axis=0)
    raise ValueError(f"headline must be one of {HEADLINES}, got {headline!r}")


def choose(values: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> float:
    """The threshold of the best value; among ties, the one nearest 0.5."""
    values = np.asarray(values)
    best = np.flatnonzero(values >= values.max() - 1e-12)
    return float(np.asarray(thresholds)[best[np.argmin(
        np.abs(np.asarray(thresholds)[best] - 0.5))]])


class Sweep:
    """Per-image counts at every threshold, accumulated image by image."""

    def __init__(self, headline: str, thresholds: Sequence[float] = THRESHOLDS):
        if headline not in HEADLINES:
            raise ValueError(f"headline must be one of {HEADLINES}, got {headline!r}")
        self.headline, self.thresholds, self.images = headline, tuple(thresholds), []

    def add(self, probs, mask, fov) -> None:
        self.images.append(counts(probs, mask, fov, self.thresholds))

    def result(self) -> Dict[str, float]:
        """The headline at 0.5 and at its best threshold, and that threshold."""
        values = curve(np.stack(self.images), self.headline)
        threshold = choose(values, self.thresholds)
        at = {t: v for t, v in zip(self.thresholds, values)}
        return {"headline": self.headline, "threshold": threshold,
                "best": float(at[threshold]), "at_0.5": float(at.get(0.5, np.nan))}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and 1 where den == 0 (nothing to get wrong), as r2u.evaluation.metrics."""
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
