"""Binary segmentation metrics (foreground class = 1) on foreground probabilities.

Inputs. `probs` is the foreground probability of each pixel, any shape (usually
[B, H, W]). `labels` has the same shape; a value > 0.5 is foreground, so {0, 1} masks
of any dtype work. `weights` (optional, broadcastable to `probs`, >= 0) multiplies
each pixel's count: a {0, 1} field-of-view mask excludes the pixels where it is 0.
A pixel is predicted foreground iff `prob > threshold` (strict: a probability equal
to the threshold is background).

Scores, from the weighted confusion counts TP, FP, FN, TN:

    accuracy    = (TP + TN) / (TP + FP + FN + TN)
    sensitivity = TP / (TP + FN)              (recall)
    specificity = TN / (TN + FP)
    precision   = TP / (TP + FP)
    f1 = dice   = 2 TP / (2 TP + FP + FN)     (equal for binary masks; both kept)
    jaccard     = TP / (TP + FP + FN)         (the real IoU; J = D / (2 - D))

Edge cases. Every metric (AUC included) is a ratio num / den with 0 <= num <= den.
When den == 0 there is nothing to get wrong and the metric is 1: empty ground truth
gives sensitivity 1 (nothing to find), an empty prediction gives precision 1 (no false
claims), both empty give f1 = dice = jaccard = 1, no negatives give specificity 1, no
counted pixels give accuracy 1, and AUC is 1 when there are no positives or no
negatives (no pair can be misordered). Every other case follows the formulas, e.g.
empty ground truth with a non-empty prediction gives precision = dice = jaccard = 0.
No metric is ever NaN. Caveat: per-image means over images without foreground are
optimistic for sensitivity and AUC.

AUC. ROC AUC is the Mann-Whitney statistic: the probability that a random positive
pixel scores above a random negative one, ties counting 1/2. It is computed from
histograms of positive and negative pixels over `bins` equal bins of [0, 1] (bin k is
[k / bins, (k + 1) / bins), probability 1 is in the last bin), so it streams; pairs
that share a bin count 1/2. The error is at most half the fraction of (positive,
negative) pairs that share a bin, about 1 / (2 bins) for spread-out probabilities.

Pooled vs per-image. "Pooled" scores count all pixels of a set together
(`StreamingMetrics`, or `confusion` on one batch). "Per-image mean" scores are the
mean over images of each image's scores (`per_image_scores` per batch, then
`summarize`). They differ; report which one is used.

Precision. A DRIVE test set has ~4.5M field-of-view pixels, more than float32 counts
exactly (2^24 = 16.8M is the limit for +1 steps, and sums lose ulps far earlier), so
counts and histograms are summed in float64 (exact integers up to 2^53, and fractional
weights still work, unlike int64). Results are float32. float64 works under XLA on
CPU and GPU (not on TPU).
"""

from typing import Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

SCORE_NAMES = ("accuracy", "sensitivity", "specificity", "precision", "f1", "jaccard",
               "dice")
METRIC_NAMES = SCORE_NAMES + ("auc",)
COUNT_NAMES = ("tp", "fp", "fn", "tn")
DEFAULT_BINS = 4096

_Threshold = Union[float, tf.Tensor]


def confusion(probs: tf.Tensor, labels: tf.Tensor, weights: Optional[tf.Tensor] = None,
              threshold: _Threshold = 0.5) -> dict[str, tf.Tensor]:
    """Weighted confusion counts over all pixels.

    Args:
      probs: foreground probabilities, any shape.
      labels: {0, 1} ground truth, same shape as `probs`.
      weights: optional pixel weights (FOV mask) broadcastable to `probs`.
      threshold: a pixel is predicted foreground iff `prob > threshold`.

    Returns:
      {"tp", "fp", "fn", "tn"}: float32 scalars.
    """
    _check_threshold(threshold)
    probs, positive, weights = _flatten(probs, labels, weights, per_image=False)
    counts = _counts(probs, positive, weights, threshold)[0]
    return _count_dict(tf.cast(counts, tf.float32))


def scores(counts: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The seven scores of the module docstring from confusion counts.

    Args:
      counts: {"tp", "fp", "fn", "tn"} tensors of any float dtype and equal shape
        (scalars, or [B] for per-image counts).

    Returns:
      {name: float32 tensor} for `SCORE_NAMES`, shaped like the counts.
    """
    tp, fp, fn, tn = (tf.cast(counts[k], tf.float64) for k in COUNT_NAMES)
    dice = _ratio(2.0 * tp, 2.0 * tp + fp + fn)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "f1": dice,
        "jaccard": _ratio(tp, tp + fp + fn),
        "dice": dice,
    }


def auc(probs: tf.Tensor, labels: tf.Tensor, weights: Optional[tf.Tensor] = None,
        bins: int = DEFAULT_BINS) -> tf.Tensor:
    """Pooled ROC AUC over all pixels from `bins` histogram bins: a float32 scalar.

    Args: as `confusion`; `bins` is the number of equal probability bins in [0, 1].
    """
    _check_bins(bins)
    probs, positive, weights = _flatten(probs, labels, weights, per_image=False)
    return _auc_from_histogram(_histogram(probs, positive, weights, bins))[0]


def exact_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Rank-based ROC AUC (Mann-Whitney, ties count 1/2) with no binning: float64.

    Args:
      positives, negatives: the scores (probabilities or logits) of the foreground
        and background pixels, any shape. 1 when either is empty, like `auc`.
    """
    pos, neg = (np.ravel(np.asarray(v)) for v in (positives, negatives))
    dtype = np.result_type(pos, neg, np.float32)  # float32 scores sort as float32: exact
    pos, neg = pos.astype(dtype, copy=False), np.sort(neg.astype(dtype, copy=False))
    if pos.size == 0 or neg.size == 0:
        return 1.0
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    wins = below.sum(dtype=np.int64) + 0.5 * ties.sum(dtype=np.int64)
    return float(wins / (pos.size * float(neg.size)))


def per_image_scores(probs: tf.Tensor, labels: tf.Tensor,
                     weights: Optional[tf.Tensor] = None, threshold: _Threshold = 0.5,
                     bins: int = DEFAULT_BINS) -> dict[str, tf.Tensor]:
    """Scores of each image of a batch (axis 0), not pooled.

    Args: as `confusion` and `auc`, with a leading batch axis.

    Returns:
      {name: float32 [B]} for `METRIC_NAMES`.
    """
    _check_threshold(threshold)
    _check_bins(bins)
    probs, positive, weights = _flatten(probs, labels, weights, per_image=True)
    counts = _counts(probs, positive, weights, threshold)  # [B, 4]
    result = scores(_count_dict(counts))
    result["auc"] = _auc_from_histogram(_histogram(probs, positive, weights, bins))
    return result


def summarize(per_image: Sequence[Mapping[str, object]]) -> dict[str, float]:
    """Host-side per-image mean: the mean of each metric over all images.

    Args:
      per_image: `per_image_scores` results (tensors or arrays of [B] or scalars),
        e.g. one per batch; all must have the same keys.

    Returns:
      {name: mean over all images} as Python floats.

    Raises:
      ValueError: if there are no images or the keys differ.
    """
    if not per_image:
        raise ValueError("summarize needs at least one batch of per-image scores")
    keys = list(per_image[0])
    for batch in per_image:
        if set(batch) != set(keys):
            raise ValueError(f"keys differ: {sorted(batch)} vs {sorted(keys)}")
    summary = {}
    for key in keys:
        values = np.concatenate(
            [np.ravel(np.asarray(batch[key], np.float64)) for batch in per_image])
        if values.size == 0:
            raise ValueError("summarize needs at least one image")
        summary[key] = float(values.mean())
    return summary


class StreamingMetrics(tf.Module):
    """Pooled metrics over many batches: confusion counts and AUC histograms.

    The float64 accumulators are ON_READ / SUM variables: under `tf.distribute`, each
    replica adds to its own copy in `update` (call it in `strategy.run`) and reading
    in cross-replica context (`result`, `counts`) sums the copies. Create the module
    inside `strategy.scope()` for that; outside, they are plain variables. With XLA,
    build `tf.function(update, jit_compile=True)` inside the replica function: one
    jit function shared by all replicas fails (its single trace captures one
    replica's copy; TF 2.21, true of MirroredVariables too).
    """

    def __init__(self, threshold: float = 0.5, bins: int = DEFAULT_BINS,
                 name: Optional[str] = None):
        """Creates the zeroed accumulators.

        Args:
          threshold: a pixel is predicted foreground iff `prob > threshold`, in [0, 1].
          bins: number of AUC histogram bins in [0, 1].
          name: module name.
        """
        super().__init__(name=name)
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        _check_bins(bins)
        self.threshold = float(threshold)
        self.bins = bins
        with self.name_scope:
            # [tp, fp, fn, tn] and [[negatives], [positives]] per probability bin.
            self.confusion = _accumulator([len(COUNT_NAMES)], "confusion")
            self.histogram = _accumulator([2, bins], "histogram")

    def update(self, probs: tf.Tensor, labels: tf.Tensor,
               weights: Optional[tf.Tensor] = None) -> None:
        """Adds a batch (args as `confusion`). Graph-, XLA- and replica-safe."""
        probs, positive, weights = _flatten(probs, labels, weights, per_image=False)
        self.confusion.assign_add(_counts(probs, positive, weights, self.threshold)[0])
        self.histogram.assign_add(_histogram(probs, positive, weights, self.bins)[0])

    def counts(self) -> dict[str, tf.Tensor]:
        """The pooled {"tp", "fp", "fn", "tn"} as exact float64 scalars."""
        return _count_dict(self.confusion.read_value())

    def result(self) -> dict[str, tf.Tensor]:
        """Pooled {name: float32 scalar} for `METRIC_NAMES`."""
        result = scores(self.counts())
        result["auc"] = _auc_from_histogram(self.histogram.read_value())
        return result

    def reset(self) -> None:
        """Zeroes the accumulators (on every replica)."""
        self.confusion.assign(tf.zeros(self.confusion.shape, tf.float64))
        self.histogram.assign(tf.zeros(self.histogram.shape, tf.float64))


def _accumulator(shape: list[int], name: str) -> tf.Variable:
    return tf.Variable(tf.zeros(shape, tf.float64), trainable=False, name=name,
                       synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.SUM)


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")


def _check_threshold(threshold: _Threshold) -> None:
    if isinstance(threshold, (int, float)) and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")


def _flatten(probs, labels, weights, per_image: bool):
    """Returns float32 probs, bool positives and float64 weights, all [R, N].

    R is the batch size if `per_image`, else 1 (all pixels pooled).
    """
    probs = tf.cast(tf.convert_to_tensor(probs), tf.float32)
    labels = tf.convert_to_tensor(labels)
    # Elementwise ops would silently broadcast e.g. [B, H, W, 1] against [B, H, W].
    if not probs.shape.is_compatible_with(labels.shape):
        raise ValueError(f"labels shape {labels.shape} != probs shape {probs.shape}")
    positive = tf.cast(labels, tf.float32) > 0.5
    if weights is None:
        weights = tf.ones_like(probs, tf.float64)
    else:
        weights = tf.broadcast_to(tf.cast(weights, tf.float64), tf.shape(probs))
    rows = 1
    if per_image:
        # A static batch size keeps segment counts compile-time constants for XLA.
        rows = probs.shape[0] if probs.shape[0] is not None else tf.shape(probs)[0]
    return (tf.reshape(probs, [rows, -1]), tf.reshape(positive, [rows, -1]),
            tf.reshape(weights, [rows, -1]))


def _counts(probs, positive, weights, threshold) -> tf.Tensor:
    """[R, N] inputs -> float64 [R, 4] weighted (tp, fp, fn, tn)."""
    predicted = probs > tf.cast(threshold, tf.float32)
    zero = tf.zeros_like(weights)

    def total(mask):
        return tf.reduce_sum(tf.where(mask, weights, zero), axis=-1)

    return tf.stack([total(predicted & positive), total(predicted & ~positive),
                     total(~predicted & positive), total(~predicted & ~positive)],
                    axis=-1)


def _histogram(probs, positive, weights, bins: int) -> tf.Tensor:
    """[R, N] inputs -> float64 [R, 2, bins]: negative, positive weight per bin."""
    index = tf.cast(tf.floor(tf.clip_by_value(probs, 0.0, 1.0) * bins), tf.int32)
    index = tf.clip_by_value(index, 0, bins - 1)  # probability 1 -> last bin
    rows = probs.shape[0] or tf.shape(probs)[0]  # static if known, for XLA
    row_base = tf.range(rows)[:, None] * 2 + tf.cast(positive, tf.int32)  # [R, N]
    hist = tf.math.unsorted_segment_sum(weights, row_base * bins + index,
                                        rows * 2 * bins)
    return tf.reshape(hist, [rows, 2, bins])


def _auc_from_histogram(hist: tf.Tensor) -> tf.Tensor:
    """[..., 2, bins] histograms -> float32 [...] Mann-Whitney AUC, ties = 1/2."""
    neg, pos = hist[..., 0, :], hist[..., 1, :]
    neg_below = tf.math.cumsum(neg, axis=-1, exclusive=True)
    wins = tf.reduce_sum(pos * (neg_below + 0.5 * neg), axis=-1)
    return _ratio(wins, tf.reduce_sum(pos, axis=-1) * tf.reduce_sum(neg, axis=-1))


def _ratio(num: tf.Tensor, den: tf.Tensor) -> tf.Tensor:
    """float32 num / den, and 1 where den == 0 (nothing to get wrong)."""
    safe = tf.where(den > 0, den, tf.ones_like(den))
    return tf.cast(tf.where(den > 0, num / safe, tf.ones_like(num)), tf.float32)


def _count_dict(counts: tf.Tensor) -> dict[str, tf.Tensor]:
    return dict(zip(COUNT_NAMES, tf.unstack(counts, axis=-1)))
