"""Sliding-window inference in TensorFlow ops, windows weighted by a centred Gaussian.

A network trained on small patches predicts best on windows of that size, and within a
window best at its centre: a pixel near a window's border sees less real context (the
rest is SAME padding). So the image is cut into overlapping windows, every pixel lies
away from the border of some window, and each window's probabilities are weighted by a
Gaussian centred on it before they are summed and divided by the summed weights
(nnU-Net; MONAI's `sliding_window_inference`, mode="gaussian", sigma_scale=0.125):

    probs = sliding_window.predict(net, images, window=48)  # [B, H, W, K] float32

Everything is TensorFlow ops, so `predict` runs eagerly, in a `tf.function` whose
input signature leaves B, H and W unknown, and in a SavedModel's serving function.
"""

import numbers
from typing import Callable

import tensorflow as tf


def gaussian(window: int, sigma_scale: float = 0.125) -> tf.Tensor:
    """Weights [window, window] (float32): a Gaussian of sigma `sigma_scale * window`
    centred on the window, 1 at the centre.

    The centre is (window - 1) / 2, so the weights are symmetric for even windows too
    (nnU-Net and MONAI put it at window // 2). Weights that underflow to 0 are raised
    to the smallest non-zero weight, as nnU-Net does: a pixel covered only by window
    corners still gets a non-zero total weight to divide by.
    """
    _check_positive_int("window", window)
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale!r}")
    offsets = tf.range(window, dtype=tf.float64) - (window - 1) / 2.0
    line = tf.exp(-0.5 * (offsets / (sigma_scale * window))**2)
    weights = line[:, None] * line[None, :]
    weights = tf.cast(weights / tf.reduce_max(weights), tf.float32)  # even windows too
    smallest = tf.reduce_min(tf.where(weights > 0, weights, 1.0))
    return tf.where(weights > 0, weights, smallest)


def starts(length, window: int, overlap: float) -> tf.Tensor:
    """Window starts [n] (int32) along an axis of `length` (a scalar, maybe a tensor).

    The fewest evenly spaced starts, rounded, from 0 to length - window, whose
    neighbours share at least `overlap` of a window (nnU-Net's
    `compute_steps_for_sliding_window` with tile_step_size = 1 - overlap): overlap lets
    every pixel be seen away from some window's border. A single start 0 when
    length <= window.
    """
    _check_positive_int("window", window)
    _check_overlap(overlap)
    span = tf.cast(length, tf.float64) - window
    step = window * (1.0 - overlap)
    count = tf.where(span > 0, tf.math.ceil(span / step) + 1, 1.0)
    spacing = span / tf.maximum(count - 1, 1.0)
    return tf.cast(tf.round(spacing * tf.range(count)), tf.int32)  # round half to even


def predict(network: Callable[[tf.Tensor], tf.Tensor], images: tf.Tensor, window: int,
            overlap: float = 0.5, batch: int = 4, gaussian: bool = True) -> tf.Tensor:
    """Probabilities [B, H, W, K] (float32) of preprocessed images, window by window.

    Args:
      network: float32 [N, window, window, C] -> probabilities [N, window, window, K];
        called on exactly `batch` windows at a time (the last chunk is padded).
      images: float32 [B, H, W, C]; B, H and W may be unknown until run time. An axis
        shorter than the window is mirror-padded up to it (and cropped back).
      window: window side; a multiple of 2**depth for an r2u model.
      overlap: fraction in [0, 1) of a window that neighbouring windows share at least.
      batch: windows per network call.
      gaussian: weight each window by `gaussian(window)`; False averages uniformly.

    Raises:
      ValueError: for a bad window, overlap or batch, or images not of rank 4.
    """
    _check_positive_int("window", window)
    _check_overlap(overlap)
    _check_positive_int("batch", batch)
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f"expected images [B, H, W, C], got shape {images.shape}")
    size = tf.shape(images)[1:3]
    padded = _mirror_pad_to(images, tf.maximum(size, window))
    shape = tf.shape(padded)
    corners = _corners(shape[0], starts(shape[1], window, overlap),
                       starts(shape[2], window, overlap))
    weights = _weights(window, gaussian)
    total, classes = _accumulate(network, padded, corners, weights, batch)
    probs = total[..., :-1] / total[..., -1:]  # the last channel holds summed weights
    probs = probs[:, :size[0], :size[1]]
    probs.set_shape(images.shape[:3].concatenate([classes]))
    return probs


def _weights(window: int, use_gaussian: bool) -> tf.Tensor:
    return gaussian(window) if use_gaussian else tf.ones([window, window], tf.float32)


def _mirror_pad_to(images: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Mirror-pads [B, H, W, C] at the bottom/right to `target` [2] (>= H, W).

    Reflection by index, as `network.pad_to_multiple`: any amount, even of a 1x1 image.
    """
    size = tf.shape(images)[1:3]

    def mirror(length, padded_length):
        i = tf.range(padded_length) % (2 * length)
        return tf.where(i < length, i, 2 * length - 1 - i)
    images = tf.gather(images, mirror(size[0], target[0]), axis=1)
    return tf.gather(images, mirror(size[1], target[1]), axis=2)


def _corners(num_images: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor) -> tf.Tensor:
    """Every window as (image, top, left) [n, 3], image-major."""
    b, y, x = tf.meshgrid(tf.range(num_images), ys, xs, indexing="ij")
    return tf.reshape(tf.stack([b, y, x], axis=-1), [-1, 3])


def _accumulate(network, images, corners, weights, batch):
    """Weighted probabilities summed per pixel, [B, H, W, K + 1] with the summed weights
    last, and the static K (or None).

    A `tf.while_loop` over chunks of `batch` windows keeps memory at one chunk's
    activations whatever the image size; the last chunk repeats the last window with
    weight 0. K is known only once the network has run, so the sum starts with one
    channel and is broadcast to K + 1 on the first chunk.
    """
    window = weights.shape[0]
    num = tf.shape(corners)[0]
    rows, cols = tf.meshgrid(tf.range(window), tf.range(window), indexing="ij")
    offsets = tf.stack([tf.zeros_like(rows), rows, cols], axis=-1)  # [w, w, 3]
    shape = tf.shape(images)
    classes = []  # the network's static K, seen while the body is traced or run

    def body(i, total):
        k = i * batch + tf.range(batch)
        first = tf.gather(corners, tf.minimum(k, num - 1))  # [batch, 3]
        index = first[:, None, None, :] + offsets  # [batch, w, w, 3]
        probs = tf.cast(network(tf.gather_nd(images, index)), tf.float32)
        classes.append(probs.shape[-1])
        scale = weights[None, :, :, None] * tf.cast(k < num, tf.float32)[:, None, None,
                                                                        None]
        update = tf.concat([probs * scale, scale], axis=-1)  # [batch, w, w, K + 1]
        total = tf.broadcast_to(total, tf.concat([shape[:3], tf.shape(update)[-1:]], 0))
        return i + 1, tf.tensor_scatter_nd_add(total, index, update)

    chunks = (num + batch - 1) // batch
    start = tf.zeros(tf.concat([shape[:3], [1]], 0), tf.float32)
    # One chunk at a time (parallel_iterations=1): the memory bound is the point.
    _, total = tf.while_loop(lambda i, _: i < chunks, body, [tf.constant(0), start],
                             shape_invariants=[tf.TensorShape([]),
                                               tf.TensorShape([None] * 4)],
                             parallel_iterations=1)
    return total, (classes[-1] if classes else None)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_overlap(overlap: float) -> None:
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
