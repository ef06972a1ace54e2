"""Whole-image and tiled inference: pad to a multiple of 2**depth, predict, crop back.

The networks are fully convolutional, so any image runs whole once padded; images too large
for memory run as overlapping tiles whose probabilities are averaged (tiles cover the
borders: the last row and column of tiles are snapped to the image edge).
"""

from typing import Callable, Tuple

import numpy as np
import tensorflow as tf


def pad_to_multiple(images: tf.Tensor, multiple: int) -> Tuple[tf.Tensor, tf.Tensor]:
    """Mirror-pad [B, H, W, C] at the bottom/right; returns (padded, [H, W]).

    Symmetric reflection by index works for any amount of padding, even a 1x1 image.
    """
    size = tf.shape(images)[1:3]
    padded_size = size + (-size) % multiple

    def mirror(length, padded_length):
        i = tf.range(padded_length) % (2 * length)
        return tf.where(i < length, i, 2 * length - 1 - i)
    images = tf.gather(images, mirror(size[0], padded_size[0]), axis=1)
    return tf.gather(images, mirror(size[1], padded_size[1]), axis=2), size


def probabilities(model: tf.Module, images: tf.Tensor) -> tf.Tensor:
    """Class probabilities [B, H, W, K] (float32) of preprocessed images of any size."""
    padded, size = pad_to_multiple(images, 2**model.cfg.depth)
    probs = tf.nn.softmax(model(padded, training=False))
    return probs[:, :size[0], :size[1]]


def network_fn(model: tf.Module) -> Callable:
    """`probabilities` of `model` compiled once for float32 [B, H, W, C] of any size."""
    spec = tf.TensorSpec([None, None, None, model.cfg.in_channels], tf.float32)
    return tf.function(lambda x: probabilities(model, x), input_signature=[spec],
                       autograph=False)  # plain TF ops; see export.Exported


def tile_starts(length: int, tile: int, stride: int) -> np.ndarray:
    """Tile offsets along one axis: every `stride`, the last snapped to the edge."""
    if length <= tile:
        return np.array([0])
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return np.array(starts)


def tiled_probabilities(predict, image: np.ndarray, tile: int, stride: int,
                        batch_size: int = 4) -> np.ndarray:
    """Average `predict` over overlapping `tile` x `tile` windows of one [H, W, C] image.

    `predict` maps a float32 [N, tile, tile, C] batch to [N, tile, tile, K] probabilities;
    an image smaller than a tile is predicted whole.

    Raises:
      ValueError: unless 1 <= stride <= tile (a larger stride leaves pixels between
        tiles that no tile covers).
    """
    if not 1 <= stride <= tile:
        raise ValueError(f"tiles need 1 <= stride <= tile, got stride {stride} and "
                         f"tile {tile}")
    h, w = image.shape[:2]
    windows = [(y, x) for y in tile_starts(h, tile, stride)
               for x in tile_starts(w, tile, stride)]
    th, tw = min(tile, h), min(tile, w)
    total = None
    count = np.zeros((h, w, 1), np.float32)
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        crops = np.stack([image[y:y + th, x:x + tw] for y, x in chunk])
        probs = np.asarray(predict(crops))
        if total is None:
            total = np.zeros((h, w, probs.shape[-1]), np.float32)
        for (y, x), p in zip(chunk, probs):
            total[y:y + th, x:x + tw] += p
            count[y:y + th, x:x + tw] += 1.0
    return total / count
