"""Pictures of a segmentation, in one colour code everywhere.

True positives are green, false positives red, false negatives blue and pixels outside
the field of view dark gray; without ground truth, predicted pixels are green. The
prediction overlays of `bin/predict` and TensorBoard and the error map of
`bin/evaluate`'s figures all come from `overlay`.
"""

import numpy as np
import tensorflow as tf

TRUE_POSITIVE = (0, 255, 0)  # green; also any predicted pixel without ground truth
FALSE_POSITIVE = (255, 0, 0)  # red
FALSE_NEGATIVE = (0, 0, 255)  # blue
OUTSIDE_FOV = (48, 48, 48)  # dark gray
MAX_SIDE = 512


def to_rgb(image: np.ndarray) -> np.ndarray:
    """[H, W, 1 | 3 | 4] -> [H, W, 3]: gray repeated, alpha dropped."""
    image = np.asarray(image)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]


def gray(values: np.ndarray) -> np.ndarray:
    """[H, W] values in [0, 1] (or bool) -> uint8 gray RGB [H, W, 3]."""
    shade = (np.clip(np.asarray(values, np.float32), 0.0, 1.0) * 255.0).round()
    return np.repeat(shade.astype(np.uint8)[..., None], 3, axis=-1)


def overlay(image: np.ndarray, predicted: np.ndarray, truth=None, fov=None,
            opacity: float = 0.5, dim: float = 1.0) -> np.ndarray:
    """`image` (uint8 [H, W, 1 | 3]) painted in the colour code, as uint8 RGB [H, W, 3].

    Args:
      image: the picture underneath.
      predicted: bool [H, W], the predicted foreground.
      truth: bool [H, W] ground truth, or None (predicted pixels are then green).
      fov: bool [H, W] field of view, or None (every pixel is inside).
      opacity: a painted pixel is (1 - opacity) * image + opacity * colour.
      dim: an unpainted pixel is dim * image.
    """
    rgb = to_rgb(image).astype(np.float32)
    predicted = np.asarray(predicted, bool)
    if truth is None:
        paint = [(predicted, TRUE_POSITIVE)]
    else:
        truth = np.asarray(truth, bool)
        paint = [(predicted & truth, TRUE_POSITIVE),
                 (predicted & ~truth, FALSE_POSITIVE),
                 (~predicted & truth, FALSE_NEGATIVE)]
    if fov is not None:
        outside = ~np.asarray(fov, bool)
        paint = [(where & ~outside, colour) for where, colour in paint]
        paint.append((outside, OUTSIDE_FOV))
    out = rgb * dim
    for where, colour in paint:
        out[where] = (1.0 - opacity) * rgb[where] + opacity * np.float32(colour)
    return np.round(out).clip(0, 255).astype(np.uint8)


def figure(image: np.ndarray, mask: np.ndarray, probs: np.ndarray, fov: np.ndarray,
           threshold: float = 0.5, max_side: int = MAX_SIDE) -> np.ndarray:
    """input | ground truth | prediction | error map, side by side, as uint8 RGB.

    The prediction panel shows the probability in gray; the error map is `overlay` on
    black at full opacity. Panels are downscaled so that their longer side is <=
    `max_side`.
    """
    truth = mask > 0
    errors = overlay(np.zeros(truth.shape + (1,), np.uint8), probs > threshold, truth,
                     fov > 0, opacity=1.0)
    panels = [to_rgb(image), gray(truth), gray(probs), errors]
    height, width = truth.shape
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        panels = [tf.cast(tf.round(tf.image.resize(p, size, antialias=True)),
                          tf.uint8).numpy() for p in panels]
    gap = np.full((panels[0].shape[0], 4, 3), 128, np.uint8)  # visible on white
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2], gap, panels[3]],
                          axis=1)
