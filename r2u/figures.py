"""Pictures of a segmentation, in one colour code everywhere.

True positives are green, false positives red, false negatives blue and pixels outside
the field of view dark gray; without ground truth, predicted pixels are green. The
prediction overlays of `bin/predict` and TensorBoard and the error map of
`bin/evaluate`'s figures all come from `overlay`.
"""

import numpy as np
import tensorflow as tf
from PIL import Image
from PIL import ImageDraw

TRUE_POSITIVE = (0, 255, 0)  # green; also any predicted pixel without ground truth
FALSE_POSITIVE = (255, 0, 0)  # red
FALSE_NEGATIVE = (0, 0, 255)  # blue
OUTSIDE_FOV = (48, 48, 48)  # dark gray
MAX_SIDE = 512
# Class k > 0 is painted CLASS_COLOURS[(k - 1) % 20], background black: fixed, so a class
# keeps its colour in every image, run and tool (Trubetskoy's 20 distinct colours).
CLASS_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                 (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
                 (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
                 (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
                 (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128))


def to_rgb(image: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [H, W, 3]: RGB as is (alpha or a 4th channel dropped), else the
    first channel as gray (one channel, or two such as T2 and ADC)."""
    image = np.asarray(image)
    return image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, -1)


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


def class_palette(num_classes: int) -> list:
    """[(r, g, b)] of classes 0..K-1: black, then `CLASS_COLOURS` in turn."""
    return [(0, 0, 0)] + [CLASS_COLOURS[(k - 1) % len(CLASS_COLOURS)]
                          for k in range(1, num_classes)]


def label_overlay(image: np.ndarray, labels: np.ndarray, names, fov=None,
                  opacity: float = 0.5) -> np.ndarray:
    """`image` with each foreground class painted in its colour, and a legend strip of
    the class names below it, as uint8 RGB."""
    colours = np.asarray(class_palette(len(names)), np.float32)
    rgb = to_rgb(image).astype(np.float32)
    labels = np.asarray(labels)
    painted = labels > 0
    if fov is not None:
        painted &= np.asarray(fov) > 0
    out = rgb.copy()
    out[painted] = (1.0 - opacity) * rgb[painted] + opacity * colours[labels[painted]]
    out = np.round(out).clip(0, 255).astype(np.uint8)
    return np.concatenate([out, legend(names, out.shape[1])], axis=0)


def legend(names, width: int, row: int = 14) -> np.ndarray:
    """A uint8 RGB strip `width` wide naming the foreground classes beside their colour
    (as many rows as needed)."""
    entries = list(enumerate(names))[1:]
    slot = max(8 * max((len(n) for _, n in entries), default=1) + 24, 60)
    per_row = max(1, width // slot)
    rows = -(-len(entries) // per_row)
    strip = Image.new("RGB", (width, max(1, rows) * row + 4), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    colours = class_palette(len(names))
    for i, (k, name) in enumerate(entries):
        x, y = (i % per_row) * slot + 4, (i // per_row) * row + 3
        draw.rectangle([x, y, x + 10, y + 10], fill=colours[k], outline=(0, 0, 0))
        draw.text((x + 14, y), name, fill=(0, 0, 0))
    return np.asarray(strip, np.uint8)


def class_figure(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray, fov,
                 names) -> np.ndarray:
    """ground truth | prediction, each `label_overlay` on the image, side by side."""
    panels = [label_overlay(image, labels, names, fov) for labels in (truth, predicted)]
    gap = np.full((panels[0].shape[0], 4, 3), 128, np.uint8)
    return np.concatenate([panels[0], gap, panels[1]], axis=1)
