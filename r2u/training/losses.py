"""Segmentation losses on float32 logits: cross-entropy, soft Dice and soft Jaccard.

`weights` is a per-pixel mask (the retina field of view): pixels with weight 0 do not
count. The cross-entropy losses are a mean over the counted pixels, so once train.py
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
      weights: optional [B, H, W] pixel mask (FOV).
    """
    labels = tf.cast(labels, tf.int32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    pixel_w = _pixel_weights(labels, weights)
    if class_weights is not None:
        ce *= tf.gather(tf.constant(class_weights, tf.float32), labels)
    return tf.reduce_sum(ce * pixel_w) / tf.maximum(tf.reduce_sum(pixel_w), 1.0)


def soft_dice(logits: tf.Tensor, labels: tf.Tensor,
              weights: Optional[tf.Tensor] = None, smooth: float = SMOOTH) -> tf.Tensor:
    """1 - soft Dice of the foreground class (class 1) over the whole batch."""
    inter, sum_p, sum_y = _overlap(logits, labels, weights, axis=None)
    return 1.0 - (2.0 * inter + smooth) / (sum_p + sum_y + smooth)


def image_dice(logits: tf.Tensor, labels: tf.Tensor,
               weights: Optional[tf.Tensor] = None,
               smooth: float = SMOOTH) -> tf.Tensor:
    """Mean over images of 1 - soft Dice: small lesions count as much as large ones."""
    inter, sum_p, sum_y = _overlap(logits, labels, weights, axis=[1, 2])
    return tf.reduce_mean(1.0 - (2.0 * inter + smooth) / (sum_p + sum_y + smooth))


def image_jaccard(logits: tf.Tensor, labels: tf.Tensor,
                  weights: Optional[tf.Tensor] = None,
                  smooth: float = SMOOTH) -> tf.Tensor:
    """Mean over images of 1 - soft Jaccard (IoU), as ISIC 2018 scores per image."""
    inter, sum_p, sum_y = _overlap(logits, labels, weights, axis=[1, 2])
    return tf.reduce_mean(1.0 - (inter + smooth) / (sum_p + sum_y - inter + smooth))


def loss_fn(name: str, class_weights: Optional[Sequence[float]] = None) -> Callable:
    """The training loss `loss(logits, labels, weights=None)` named in `LOSSES`.

    `ce` ignores `class_weights`; a `+` sums the named terms.
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
    """Counted sums of p*y, p and y for the foreground probability p, over `axis`."""
    labels = tf.cast(labels, tf.float32)
    p = tf.nn.softmax(logits)[..., 1]
    pixel_w = _pixel_weights(labels, weights)
    return (tf.reduce_sum(p * labels * pixel_w, axis), tf.reduce_sum(p * pixel_w, axis),
            tf.reduce_sum(labels * pixel_w, axis))


def _pixel_weights(labels: tf.Tensor, weights: Optional[tf.Tensor]) -> tf.Tensor:
    if weights is None:
        return tf.ones_like(labels, tf.float32)
    return tf.cast(weights, tf.float32)
