"""Seeded data augmentation for segmentation examples, in pure TF ops.

`augment` draws one geometric transform (flips, quarter turns, a small
rotation and scale, composed into a single affine map about the image centre)
and applies it to the image (bilinear), the mask and the FOV (nearest), so
they stay aligned. Then it jitters brightness, contrast and gamma, plus
saturation and hue on RGB images.

All randomness comes from stateless ops keyed by a [2] integer `seed`: the
same seed gives the same output, eagerly, in tf.data and under XLA. Two
details make that hold: uniform floats are built from stateless *integer*
bits (TF's CPU kernel and XLA turn the same bits into different floats), and
the warp is written with gathers (`ImageProjectiveTransformV3` has no XLA
kernel). Out-of-image samples are filled by mirror reflection,
consistently for image, mask and FOV.
"""

import math

import numpy as np
import tensorflow as tf

_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
    np.float32,
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
# cos and sin of k quarter turns, exact (tf.cos(pi / 2) is not exactly 0).
_QUARTER_COS = (1.0, 0.0, -1.0, 0.0)
_QUARTER_SIN = (0.0, 1.0, 0.0, -1.0)


def augment(
    image: tf.Tensor,
    mask: tf.Tensor,
    fov: tf.Tensor,
    seed: tf.Tensor,
    *,
    geometric: bool = True,
    photometric: bool = True,
    max_rotation: float = 15.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    brightness: float = 0.1,
    contrast_range: tuple[float, float] = (0.8, 1.2),
    gamma_range: tuple[float, float] = (0.8, 1.25),
    saturation_range: tuple[float, float] = (0.8, 1.2),
    max_hue: float = 0.03,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Randomly transforms one example.

    Quarter turns are drawn only for square images; other images get flips
    (which include the half turn), so the shape never changes.

    Args:
        image: uint8 or float in [0, 1], [H, W, C] with C in {1, 3}.
        mask: [H, W] or [H, W, 1], any dtype; resampled with nearest.
        fov: like `mask`.
        seed: int32/int64 [2], e.g. (base seed, example index).
        geometric: apply flips, quarter turns, rotation and scale.
        photometric: apply brightness/contrast/gamma (and for RGB
            saturation/hue) jitter.
        max_rotation: largest small rotation, in degrees.
        scale_range: (min, max) zoom factor, drawn log-uniformly.
        brightness: largest additive brightness change.
        contrast_range: (min, max) contrast factor.
        gamma_range: (min, max) exponent of a gamma curve, log-uniform. Unlike
            brightness and contrast, which per-image standardisation mostly
            undoes, this non-linear change survives it.
        saturation_range: (min, max) saturation factor (RGB only).
        max_hue: largest hue shift, as a fraction of the colour wheel (RGB).

    Returns:
        (image float32 [H, W, C] in [0, 1], mask, fov), mask and fov with
        their input dtypes and shapes.
    """
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    image = tf.cast(image, tf.float32)
    # One stateless draw serves every random choice: building the graph is
    # much faster than with a split and a call per parameter.
    draws = uniform([10], seed)
    if geometric:
        square = tf.equal(tf.shape(image)[0], tf.shape(image)[1])
        matrix = _affine(draws[:5], max_rotation, scale_range, square)
        image = warp(image, matrix, bilinear=True)
        mask, fov = _warp_pair(mask, fov, matrix)
    if photometric:
        image = _jitter(image, draws[5:], brightness, contrast_range, gamma_range,
                        saturation_range, max_hue)
    return image, mask, fov


def _affine(draws, max_rotation, scale_range, quarter_turns) -> tf.Tensor:
    """Maps 5 uniforms to a 2x2 output-to-input map on (x, y) offsets.

    Returns:
        float32 [2, 2]: rotation(small) @ quarter turn @ flips / scale. The
        entries are exact integers when the rotation is 0 and the scale 1.
    """
    flips = tf.where(draws[:2] < 0.5, -1.0, 1.0)
    # Without quarter turns the half turn is already covered by the flips.
    choices = tf.where(quarter_turns, 4.0, 1.0)
    turns = tf.minimum(tf.cast(draws[2] * choices, tf.int32), 3)
    cos_k = tf.gather(_QUARTER_COS, turns)
    sin_k = tf.gather(_QUARTER_SIN, turns)
    limit = math.radians(max_rotation)
    angle = _between(draws[3], -limit, limit)
    scale = tf.exp(_between(draws[4], *(math.log(s) for s in scale_range)))
    rotation = tf.stack(
        [tf.stack([tf.cos(angle), -tf.sin(angle)]),
         tf.stack([tf.sin(angle), tf.cos(angle)])]
    )
    quarter = tf.stack([tf.stack([cos_k, -sin_k]), tf.stack([sin_k, cos_k])])
    return rotation @ quarter @ tf.linalg.diag(flips) / scale


def warp(x: tf.Tensor, matrix: tf.Tensor, bilinear: bool) -> tf.Tensor:
    """Resamples x [H, W, ...] at centre + matrix @ (p - centre), reflecting.

    Args:
        x: [H, W] or [H, W, C]; bilinear sampling needs a float dtype.
        matrix: float32 [2, 2] acting on (x, y) = (column, row) offsets.
        bilinear: bilinear interpolation if True, else nearest neighbour.

    Returns:
        A tensor like `x`.
    """
    shape = tf.shape(x)
    height, width = shape[0], shape[1]
    flat = tf.reshape(x, [height * width, -1])
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    rows, cols = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dx, dy = cols - cx, rows - cy
    src_x = _reflect(cx + matrix[0, 0] * dx + matrix[0, 1] * dy, w)
    src_y = _reflect(cy + matrix[1, 0] * dx + matrix[1, 1] * dy, h)

    def sample(yi, xi):
        yi = tf.clip_by_value(yi, 0.0, h - 1)
        xi = tf.clip_by_value(xi, 0.0, w - 1)
        index = tf.cast(yi, tf.int32) * width + tf.cast(xi, tf.int32)
        return tf.gather(flat, index)  # [H, W, C]

    if not bilinear:
        out = sample(tf.round(src_y), tf.round(src_x))
    else:
        y0, x0 = tf.floor(src_y), tf.floor(src_x)
        wy, wx = (src_y - y0)[..., None], (src_x - x0)[..., None]
        top = sample(y0, x0) * (1 - wx) + sample(y0, x0 + 1) * wx
        bottom = sample(y0 + 1, x0) * (1 - wx) + sample(y0 + 1, x0 + 1) * wx
        out = top * (1 - wy) + bottom * wy
    return tf.reshape(out, shape)


def _warp_pair(mask, fov, matrix):
    """Nearest-warps mask and fov, in one gather when they are alike."""
    mask, fov = tf.convert_to_tensor(mask), tf.convert_to_tensor(fov)
    if mask.dtype != fov.dtype or mask.shape.rank != fov.shape.rank:
        return warp(mask, matrix, False), warp(fov, matrix, False)
    both = warp(tf.stack([mask, fov], axis=-1), matrix, bilinear=False)
    return both[..., 0], both[..., 1]


def _reflect(coord: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Mirrors pixel coordinates into [-0.5, size - 0.5] (edge-symmetric)."""
    period = 2 * size
    v = tf.math.floormod(coord + 0.5, period)
    return tf.where(v > size, period - v, v) - 0.5


def _jitter(image, draws, brightness, contrast_range, gamma_range,
            saturation_range, max_hue):
    """Brightness, contrast, gamma and (RGB) saturation/hue jitter in [0, 1]."""
    image = image + _between(draws[0], -brightness, brightness)
    image = tf.image.adjust_contrast(image, _between(draws[1], *contrast_range))
    image = tf.clip_by_value(image, 0.0, 1.0)
    gamma = tf.exp(_between(draws[2], *(math.log(g) for g in gamma_range)))
    image = image**gamma
    if image.shape[-1] == 3:
        saturation = _between(draws[3], *saturation_range)
        hue = _between(draws[4], -max_hue, max_hue)
        image = _colour(image, saturation, hue)
    return tf.clip_by_value(image, 0.0, 1.0)


def _colour(image: tf.Tensor, saturation: tf.Tensor, hue: tf.Tensor) -> tf.Tensor:
    """Scales the chroma by `saturation` and turns the hue by `hue` turns.

    Works in YIQ space, where both are linear: the chroma plane (I, Q) is
    scaled and rotated while the luma Y is kept. (`tf.image.adjust_hue`
    and `adjust_saturation` miscompile under XLA after the warp's gathers.)
    """
    angle = 2 * math.pi * hue
    cos, sin = saturation * tf.cos(angle), saturation * tf.sin(angle)
    one, zero = tf.ones([]), tf.zeros([])
    chroma = tf.stack(
        [tf.stack([one, zero, zero]), tf.stack([zero, cos, -sin]),
         tf.stack([zero, sin, cos])]
    )
    matrix = tf.constant(_YIQ_TO_RGB) @ chroma @ tf.constant(_RGB_TO_YIQ)
    # A plain matmul: einsum over a trailing axis of 3 is ~20x slower on CPU.
    pixels = tf.reshape(image, [-1, 3]) @ tf.transpose(matrix)
    return tf.reshape(pixels, tf.shape(image))


def uniform(shape, seed: tf.Tensor) -> tf.Tensor:
    """Stateless float32 uniforms in [0, 1), identical eagerly and under XLA."""
    bits = tf.random.stateless_uniform(
        shape, seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox"
    )
    # The top 24 bits give an exact float32 in [0, 1).
    return tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (1.0 / (1 << 24))


def _between(unit: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """Maps [0, 1) to [low, high); exactly `low` when low == high."""
    return low + (high - low) * unit
