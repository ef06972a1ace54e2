"""Segmentation losses on float32 logits of K >= 2 classes: cross-entropy, soft Dice
and soft Jaccard.

Classes. `logits` are [B, H, W, K] and `labels` [B, H, W] ints in [0, K); class 0 is
the background. The Dice and Jaccard losses are the mean over the foreground classes
1..K-1 of each class's 1 - soft Dice (or Jaccard) between the softmax probabilities
and the one-hot labels, as MONAI's `DiceLoss(include_background=False, softmax=True)`
(`dice` pools the batch like its `batch=True`; `image_*` average images like
`batch=False`). For K = 2 this is the soft Dice of class 1, as before K classes.
A class absent from an image scores ~1 (loss ~0) when it is not predicted there,
thanks to `SMOOTH`, and is penalised when it is.

`weights` is a per-pixel mask (the retina field of view, an ignore label): pixels with
weight 0 do not count, whatever their label (even one outside [0, K), such as 255) or
logits. The cross-entropy losses are a mean over the counted pixels, so once train.py
weighs each replica's loss by its share of the global batch's counted pixels they do not
depend on how the batch is split across replicas. The Dice and Jaccard losses are ratios
over one replica's images: with several replicas they are weighted the same way but are
not the global-batch value.
"""

from typing import Callable, Optional, Sequence

import tensorflow as tf

LOSSES = ("wce", "ce", "dice", "image_dice", "image_jaccard", "wce+dice", "ce+dice")

# Added to numerator and denominator of every Dice/Jaccard ratio: an image with an
# empty mask and an empty prediction scores 1 (loss 0) instead of 0/0, and gradients
# stay bounded. One pixel's worth: negligible on images with real foreground.
SMOOTH = 1.0


def weighted_cross_entropy(logits: tf.Tensor, labels: tf.Tensor,
                           class_weights: Optional[Sequence[float]] = None,
                           weights: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Mean over counted pixels of w[label] * -log softmax(logits)[label].

    Args:
      logits: float32 [B, H, W, K]. labels: int [B, H, W] in [0, K).
      class_weights: K weights (e.g. inverse class frequency) or None for all ones.
      weights: optional [B, H, W] pixel mask (FOV, ignore label).
    """
    num_classes = _num_classes(logits)
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(
            f"{len(class_weights)} class weights for {num_classes} classes")
    pixel_w = _pixel_weights(labels, weights)
    labels = _counted_labels(labels, pixel_w)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(logits, tf.float32))
    if class_weights is not None:
        ce *= tf.gather(tf.constant(class_weights, tf.float32), labels)
    return tf.reduce_sum(ce * pixel_w) / tf.maximum(tf.reduce_sum(pixel_w), 1.0)


def soft_dice(logits: tf.Tensor, labels: tf.Tensor,
              weights: Optional[tf.Tensor] = None, smooth: float = SMOOTH) -> tf.Tensor:
    """Mean over foreground classes of 1 - soft Dice over the whole batch."""
    inter, sum_p, sum_y = _overlap(logits, labels, weights, axis=[0, 1, 2])
    return tf.reduce_mean(1.0 - (2.0 * inter + smooth) / (sum_p + sum_y + smooth))


def image_dice(logits: tf.Tensor, labels: tf.Tensor,
               weights: Optional[tf.Tensor] = None,
               smooth: float = SMOOTH) -> tf.Tensor:
    """Mean over images and foreground classes of 1 - soft Dice: small lesions count
    as much as large ones."""
    inter, sum_p, sum_y = _overlap(logits, labels, weights, axis=[1, 2])
    return tf.reduce_mean(1.0 - (2.0 * inter + smooth) / (sum_p + sum_y + smooth))


def image_jaccard(logits: tf.Tensor, labels: tf.Tensor,
                  weights: Optional[tf.Tensor] = None,
                  smooth: float = SMOOTH) -> tf.Tensor:
    """Mean over images and foreground classes of 1 - soft Jaccard (IoU), as ISIC 2018
    scores per image."""
    inter, sum_p, sum_y = _overlap(logits, labels, weights, axis=[1, 2])
    return tf.reduce_mean(1.0 - (inter + smooth) / (sum_p + sum_y - inter + smooth))


def loss_fn(name: str, class_weights: Optional[Sequence[float]] = None) -> Callable:
    """The training loss `loss(logits, labels, weights=None)` named in `LOSSES`.

    `ce` ignores `class_weights`; a `+` sums the named terms (`ce+dice` is MONAI's
    `DiceCELoss` without the background class, with batch-level Dice).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
    terms = {
        "wce": lambda x, y, w: weighted_cross_entropy(x, y, class_weights, w),
        "ce": lambda x, y, w: weighted_cross_entropy(x, y, None, w),
        "dice": soft_dice,
        "image_dice": image_dice,
        "image_jaccard": image_jaccard,
    }
    parts = [terms[part] for part in name.split("+")]

    def loss(logits, labels, weights=None):
        return tf.add_n([part(logits, labels, weights) for part in parts])
    return loss


def _overlap(logits, labels, weights, axis):
    """Counted sums of p*y, p and y per foreground class over `axis`: [..., K - 1]."""
    num_classes = _num_classes(logits)
    pixel_w = _pixel_weights(labels, weights)
    labels = _counted_labels(labels, pixel_w)
    p = tf.nn.softmax(tf.cast(logits, tf.float32))[..., 1:]  # [B, H, W, K - 1]
    y = tf.one_hot(labels, num_classes, dtype=tf.float32)[..., 1:]
    w = pixel_w[..., None]
    return (tf.reduce_sum(p * y * w, axis), tf.reduce_sum(p * w, axis),
            tf.reduce_sum(y * w, axis))


def _num_classes(logits: tf.Tensor) -> int:
    num_classes = logits.shape[-1]
    if num_classes is None or num_classes < 2:
        raise ValueError(
            f"logits need a static class axis of K >= 2, got {logits.shape}")
    return num_classes


def _counted_labels(labels: tf.Tensor, pixel_w: tf.Tensor) -> tf.Tensor:
    """int32 labels with uncounted pixels set to class 0.

    An ignore label outside [0, K) would make the cross-entropy raise on CPU and NaN
    on GPU (and NaN * 0 is NaN), so the value of an uncounted label must not matter.
    """
    labels = tf.cast(labels, tf.int32)
    return tf.where(pixel_w > 0, labels, tf.zeros_like(labels))


def _pixel_weights(labels: tf.Tensor, weights: Optional[tf.Tensor]) -> tf.Tensor:
    if weights is None:
        return tf.ones(tf.shape(labels), tf.float32)
    return tf.cast(weights, tf.float32)
