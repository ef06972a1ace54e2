"""Segmentation losses on float32 logits: class-weighted cross-entropy and soft Dice.

`weights` is a per-pixel mask (the retina field of view): pixels with weight 0 do not count.
Every loss is a mean over the counted pixels of the global batch, so it does not depend on
how the batch is split across replicas (`global_pixels` lets a replica divide by the
global count).
"""

from typing import Optional, Sequence

import tensorflow as tf

LOSSES = ("wce", "ce", "dice", "image_dice", "image_jaccard", "wce+dice", "ce+dice")


def weighted_cross_entropy(logits: tf.Tensor, labels: tf.Tensor,
                           class_weights: Optional[Sequence[float]] = None,
                           weights: Optional[tf.Tensor] = None,
                           global_pixels: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Mean over counted pixels of w[label] * -log softmax(logits)[label].

    Args:
      logits: float32 [B, H, W, K]. labels: int [B, H, W] in [0, K).
      class_weights: K weights (e.g. inverse class frequency) or None for all ones.
      weights: optional [B, H, W] pixel mask (FOV).
      global_pixels: the denominator; defaults to this batch's counted pixels.
    """
    labels = tf.cast(labels, tf.int32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    pixel_w = _pixel_weights(labels, weights)
    if class_weights is not None:
        ce *= tf.gather(tf.constant(class_weights, tf.float32), labels)
    total = tf.reduce_sum(ce * pixel_w)
    count = tf.reduce_sum(pixel_w) if global_pixels is None else global_pixels
    return total / tf.maximum(count, 1.0)


def soft_dice(logits: tf.Tensor, labels: tf.Tensor, weights: Optional[tf.Tensor] = None,
              smooth: float = 1.0) -> tf.Tensor:
    """1 - soft Dice of the foreground class (class 1) over the whole batch."""
    labels = tf.cast(labels, tf.float32)
    p = tf.nn.softmax(logits)[..., 1]
    pixel_w = _pixel_weights(labels, weights)
    inter = tf.reduce_sum(p * labels * pixel_w)
    total = tf.reduce_sum((p + labels) * pixel_w)
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


def loss_fn(name: str, class_weights: Optional[Sequence[float]] = None):
    """The training loss by name: `wce`, `dice` or their sum `wce+dice`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")

    def loss(logits, labels, weights=None):
        terms = []
        if "wce" in name:
            terms.append(weighted_cross_entropy(logits, labels, class_weights, weights))
        if "dice" in name:
            terms.append(soft_dice(logits, labels, weights))
        return tf.add_n(terms)
    return loss


def _pixel_weights(labels: tf.Tensor, weights: Optional[tf.Tensor]) -> tf.Tensor:
    if weights is None:
        return tf.ones_like(labels, tf.float32)
    return tf.cast(weights, tf.float32)
