"""Per-class scores of K-class label maps (class 0 = background), NumPy and streaming.

Counts. `confusion` counts the valid pixels of an image into a K x K matrix M, rows
the true class, columns the predicted one. Each class k is then scored one-vs-rest:

    TP = M[k, k]   FP = column k - TP   FN = row k - TP   TN = all - TP - FP - FN

    dice        = 2 TP / (2 TP + FP + FN)
    jaccard     = TP / (TP + FP + FN)      (IoU)
    sensitivity = TP / (TP + FN)           (recall)
    precision   = TP / (TP + FP)
    specificity = TN / (TN + FP)
    accuracy    = (TP + TN) / (TP + FP + FN + TN)

Empty classes (nnU-Net's convention). A class absent from both the truth and the
prediction of an image (TP + FP + FN = 0) has nothing to score there: all its scores
are NaN for that image, not 1. A class absent from the truth but predicted scores Dice
= Jaccard = precision = 0, and one present but never predicted scores Dice = Jaccard =
sensitivity = 0. Any other 0 / 0 is NaN too: sensitivity when the class is absent from
the truth, precision when it is not predicted, specificity when every pixel is of the
class. Means skip NaN: an image's foreground score is the mean over the classes
1..K-1 that are not NaN, a class's per-image mean is its mean over the images where it
is not NaN ("images" counts those for Dice: where the class is in the truth or the
prediction), and a mean of nothing is NaN. This differs from the binary metrics of
`r2u.evaluation.metrics` (1 when nothing can be wrong) and from MONAI's
`DiceMetric(ignore_empty=True)` (NaN whenever the truth is empty, even if predicted).

Pooled vs per-image. "pooled" scores sum the confusion matrices of all images before
scoring, so large structures weigh more; "per_image_mean" scores average each image's
scores, so every image counts the same. `Scorer` reports both, `StreamingConfusion`
pools (the training metric of K-class runs).

Precision. `StreamingConfusion` sums in float64 like `metrics.StreamingMetrics`: a
DRIVE test set has more pixels than float32 counts exactly. Results are float32.
"""

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

SCORE_NAMES = ("dice", "jaccard", "sensitivity", "precision", "specificity",
               "accuracy")
COUNT_NAMES = ("tp", "fp", "fn", "tn")


def confusion(pred: np.ndarray, truth: np.ndarray, valid: Optional[np.ndarray],
              num_classes: int) -> np.ndarray:
    """int64 [K, K] pixel counts, rows the true class, columns the predicted one.

    Args:
      pred, truth: int label maps of the same shape.
      valid: pixels that count (e.g. truth != ignore label, the FOV), same shape, or
        None for all. Labels of other pixels are not looked at.
      num_classes: K; every counted label must be in [0, K).
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    if valid is not None:
        valid = np.asarray(valid) > 0
        if valid.shape != truth.shape:
            raise ValueError(f"valid shape {valid.shape} != truth shape {truth.shape}")
        pred, truth = pred[valid], truth[valid]
    pred, truth = pred.astype(np.int64).ravel(), truth.astype(np.int64).ravel()
    for what, labels in (("truth", truth), ("prediction", pred)):
        outside = (labels < 0) | (labels >= num_classes)
        if outside.any():
            raise ValueError(f"{what} label {labels[outside][0]} of a valid pixel is "
                             f"outside [0, {num_classes})")
    flat = np.bincount(truth * num_classes + pred, minlength=num_classes**2)
    return flat.astype(np.int64).reshape(num_classes, num_classes)


def counts(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest {"tp", "fp", "fn", "tn"} of each class: arrays of length K."""
    matrix = np.asarray(matrix)
    tp = np.diagonal(matrix, axis1=-2, axis2=-1)
    fp = matrix.sum(axis=-2) - tp
    fn = matrix.sum(axis=-1) - tp
    tn = matrix.sum(axis=(-2, -1))[..., None] - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def scores(class_counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{name: float64 [K]} for `SCORE_NAMES`, NaN as the module docstring says."""
    tp, fp, fn, tn = (np.asarray(class_counts[k], np.float64) for k in COUNT_NAMES)
    result = {
        "dice": _ratio(2.0 * tp, 2.0 * tp + fp + fn),
        "jaccard": _ratio(tp, tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }
    absent = (tp + fp + fn) == 0  # nothing to score, even where TN makes a ratio
    return {name: np.where(absent, np.nan, value) for name, value in result.items()}


class Scorer:
    """Per-class scores of argmax predictions: per image, pooled and per-image mean."""

    def __init__(self, class_names: Sequence[str]):
        """Args: class_names: the K >= 2 class names, background (class 0) first."""
        names = tuple(class_names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"need K >= 2 distinct class names, got {names}")
        self.class_names = names
        self.matrix = np.zeros([len(names)] * 2, np.int64)
        self.per_image = []
        self._image_scores = []  # {name: [K]} of each image, for the means

    def add(self, image_id: str, probs: np.ndarray, truth: np.ndarray,
            valid: Optional[np.ndarray] = None) -> dict:
        """Scores one image; the prediction is the argmax of `probs`.

        Args:
          image_id: the image's id, reported as "id".
          probs: float [H, W, K] class probabilities (or logits).
          truth: int [H, W] labels. valid: [H, W] pixels that count, or None for all.

        Returns:
          {"id", <foreground mean of each score>, "per_class": {name: {<scores>,
          "pixels": valid truth pixels of the class}}}.
        """
        probs = np.asarray(probs)
        k = len(self.class_names)
        if probs.ndim != 3 or probs.shape[-1] != k:
            raise ValueError(f"{image_id}: probs shape {probs.shape}, expected "
                             f"[H, W, {k}]")
        matrix = confusion(np.argmax(probs, axis=-1), truth, valid, k)
        self.matrix += matrix
        image = scores(counts(matrix))
        self._image_scores.append(image)
        entry = {"id": image_id, **_foreground(image),
                 "per_class": self._per_class(image, "pixels", matrix.sum(axis=1))}
        self.per_image.append(entry)
        return entry

    def result(self) -> dict:
        """{"class_names", "per_image", "pooled", "per_image_mean"}.

        "pooled" scores the summed confusion matrix ("matrix", rows truth, as lists);
        its "per_class" entries add "pixels". "per_image_mean" averages each class
        over images, skipping NaN; its "per_class" entries add "images" (Dice's count).
        """
        if not self._image_scores:
            raise ValueError("Scorer.result needs at least one image")
        pooled = scores(counts(self.matrix))
        stacked = {name: np.stack([s[name] for s in self._image_scores])
                   for name in SCORE_NAMES}  # [N, K]
        means = {name: _nanmean(values, axis=0) for name, values in stacked.items()}
        images = (~np.isnan(stacked["dice"])).sum(axis=0)
        return {
            "class_names": list(self.class_names),
            "per_image": self.per_image,
            "pooled": {**_foreground(pooled),
                       "per_class": self._per_class(pooled, "pixels",
                                                    self.matrix.sum(axis=1)),
                       "matrix": self.matrix.tolist()},
            "per_image_mean": {**_foreground(means),
                               "per_class": self._per_class(means, "images", images)},
        }

    def _per_class(self, class_scores, count_name, count) -> dict:
        return {name: {**{s: float(class_scores[s][k]) for s in SCORE_NAMES},
                       count_name: int(count[k])}
                for k, name in enumerate(self.class_names)}


class StreamingConfusion(tf.Module):
    """Pooled [K, K] confusion of argmax predictions over many batches, in float64.

    The accumulator is an ON_READ / SUM variable, like `metrics.StreamingMetrics`:
    under `tf.distribute` each replica adds to its own copy in `update` (call it in
    `strategy.run`) and reading in cross-replica context sums the copies. Create the
    module inside `strategy.scope()`. With XLA, build `tf.function(update,
    jit_compile=True)` inside the replica function (one jit function shared by all
    replicas captures one replica's copy). Labels outside [0, K), such as an ignore
    label, are not counted whatever their weight.
    """

    def __init__(self, num_classes: int, name: Optional[str] = None):
        """Creates the zeroed accumulator.

        Args:
          num_classes: K >= 2, background (class 0) included.
          name: module name.
        """
        super().__init__(name=name)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) \
                or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        with self.name_scope:
            self.confusion = tf.Variable(
                tf.zeros([num_classes, num_classes], tf.float64), trainable=False,
                name="confusion", synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM)

    def update(self, probs: tf.Tensor, labels: tf.Tensor,
               weights: Optional[tf.Tensor] = None) -> None:
        """Adds a batch. Graph-, XLA- and replica-safe.

        Args:
          probs: float [B, H, W, K] probabilities (or logits); prediction = argmax.
          labels: int [B, H, W] true classes.
          weights: optional [B, H, W] pixel weights (FOV, ignore mask), >= 0.
        """
        k = self.num_classes
        probs = tf.convert_to_tensor(probs)
        labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
        # Elementwise ops would silently broadcast a mismatched mask.
        if probs.shape[-1] != k or not probs.shape[:-1].is_compatible_with(
                labels.shape):
            raise ValueError(f"probs shape {probs.shape} and labels shape "
                             f"{labels.shape}: expected [..., {k}] and [...]")
        pred = tf.argmax(probs, axis=-1, output_type=tf.int32)
        if weights is None:
            weights = tf.ones(tf.shape(labels), tf.float64)
        else:
            weights = tf.broadcast_to(tf.cast(weights, tf.float64), tf.shape(labels))
        inside = (labels >= 0) & (labels < k)
        weights = tf.where(inside, weights, tf.zeros_like(weights))
        cell = tf.where(inside, labels, tf.zeros_like(labels)) * k + pred
        total = tf.math.unsorted_segment_sum(tf.reshape(weights, [-1]),
                                             tf.reshape(cell, [-1]), k * k)
        self.confusion.assign_add(tf.reshape(total, [k, k]))

    def matrix(self) -> tf.Tensor:
        """The pooled float64 [K, K] counts (rows truth, columns prediction)."""
        return self.confusion.read_value()

    def result(self) -> dict[str, tf.Tensor]:
        """{"dice": mean foreground Dice, "dice/<k>": Dice of class k >= 1}: float32.

        A class absent from everything added has Dice NaN and the mean skips it.
        """
        matrix = self.matrix()
        tp = tf.linalg.diag_part(matrix)
        den = tf.reduce_sum(matrix, axis=0) + tf.reduce_sum(matrix, axis=1)  # 2TP+FP+FN
        nan = tf.fill(tf.shape(tp), tf.constant(np.nan, tf.float64))
        dice = tf.where(den > 0, 2.0 * tp / tf.where(den > 0, den, 1.0), nan)[1:]
        defined = ~tf.math.is_nan(dice)
        count = tf.reduce_sum(tf.cast(defined, tf.float64))
        total = tf.reduce_sum(tf.where(defined, dice, tf.zeros_like(dice)))
        mean = tf.where(count > 0, total / tf.maximum(count, 1.0), nan[0])
        result = {"dice": tf.cast(mean, tf.float32)}
        for k in range(1, self.num_classes):
            result[f"dice/{k}"] = tf.cast(dice[k - 1], tf.float32)
        return result

    def reset(self) -> None:
        """Zeroes the accumulator (on every replica)."""
        self.confusion.assign(tf.zeros(self.confusion.shape, tf.float64))


def _foreground(class_scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of each score over the foreground classes 1..K-1, skipping NaN."""
    return {name: float(_nanmean(class_scores[name][1:])) for name in SCORE_NAMES}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0."""
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _nanmean(values: np.ndarray, axis=None) -> np.ndarray:
    """Mean over the non-NaN values (NaN if none), without NumPy's empty warning."""
    values = np.asarray(values, np.float64)
    defined = ~np.isnan(values)
    count = defined.sum(axis=axis)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
