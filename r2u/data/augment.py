"""Seeded data augmentation for segmentation examples, in pure TF ops.

`augment` draws one geometric transform (flips, quarter turns, a small
rotation and scale, composed into a single affine map about the image centre)
and applies it to the image (bilinear), the mask and the FOV (nearest), so
they stay aligned. Then it jitters brightness, contrast and gamma, plus
saturation and hue on RGB images. The pieces (`random_affines`, `sample`,
`jitter`) are public so that `patches.random_patches` can give every patch
its own transform.

All randomness comes from stateless ops keyed by a [2] integer `seed`: the
same seed gives the same output, eagerly, in tf.data and under XLA. Two
details make that hold: uniform floats are built from stateless *integer*
bits (TF's CPU kernel and XLA turn the same bits into different floats), and
sampling is written with gathers (`ImageProjectiveTransformV3` has no XLA
kernel). Out-of-image samples are mirror-reflected, consistently for image,
mask and FOV.
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


def augment(image, mask, fov, seed, *, geometric: bool = True,
            photometric: bool = True, max_rotation: float = 15.0,
            scale_range: tuple[float, float] = (0.9, 1.1), mirror: bool = True,
            **jitter_args):
    """Randomly transforms one whole example.

    Quarter turns are drawn only for square images; other images get flips
    (which include the half turn), so the shape never changes.

    Args:
        image: uint8 or float in [0, 1], [H, W, C] with C in {1, 3}.
        mask: [H, W] or [H, W, 1], any dtype; resampled with nearest.
        fov: like `mask`.
        seed: int32/int64 [2], e.g. (base seed, example index).
        geometric: apply flips, quarter turns, rotation and scale.
        photometric: apply `jitter`.
        max_rotation: largest small rotation, in degrees.
        scale_range: (min, max) zoom factor, drawn log-uniformly.
        mirror: allow flips (see `random_affines`).
        **jitter_args: ranges passed to `jitter`.

    Returns:
        (image float32 [H, W, C] in [0, 1], mask, fov), mask and fov with
        their input dtypes and shapes.
    """
    image = to_unit_float(image)
    if geometric:
        square = tf.equal(tf.shape(image)[0], tf.shape(image)[1])
        matrix = random_affines(seed, [], max_rotation, scale_range, square, mirror)
        image = warp(image, matrix, bilinear=True)
        mask, fov = _warp_pair(mask, fov, matrix)
    if photometric:
        image = jitter(image, fold_in(seed, 1), **jitter_args)
    return image, mask, fov


def random_affines(seed, shape, max_rotation: float = 15.0,
                   scale_range: tuple[float, float] = (0.9, 1.1),
                   quarter_turns=True, mirror: bool = True) -> tf.Tensor:
    """Draws output-to-input 2x2 maps acting on (x, y) = (column, row) offsets.

    Args:
        seed: int [2] stateless seed.
        shape: leading shape, e.g. [] for one map or [num] for `num` maps.
        max_rotation: largest small rotation, in degrees.
        scale_range: (min, max) zoom factor, drawn log-uniformly.
        quarter_turns: (bool or bool tensor) whether quarter turns may be drawn.
        mirror: whether flips may be drawn. Off for classes with a side (left and
            right lung): a mirror image swaps them. Turns keep the sides.

    Returns:
        float32 shape + [2, 2]: rotation @ quarter turn @ flips / scale. The
        entries are exact integers when the rotation is 0 and the scale 1.
    """
    draws = tf.unstack(uniform(list(shape) + [5], seed), axis=-1)
    if mirror:
        flips_x = tf.where(draws[0] < 0.5, -1.0, 1.0)
        flips_y = tf.where(draws[1] < 0.5, -1.0, 1.0)
        # Without quarter turns the half turn is already covered by the flips.
        choices, stride = tf.where(quarter_turns, 4.0, 1.0), 1
    else:
        flips_x = flips_y = tf.ones_like(draws[0])
        # No flips: the half turn comes from the turns (0 or 2 of non-square images).
        choices = tf.where(quarter_turns, 4.0, 2.0)
        stride = tf.where(quarter_turns, 1, 2)
    turns = tf.minimum(tf.cast(draws[2] * choices, tf.int32) * stride, 3)
    cos_k, sin_k = tf.gather(_QUARTER_COS, turns), tf.gather(_QUARTER_SIN, turns)
    limit = math.radians(max_rotation)
    angle = _between(draws[3], -limit, limit)
    scale = tf.exp(_between(draws[4], *(math.log(s) for s in scale_range)))
    cos_a, sin_a = tf.cos(angle) / scale, tf.sin(angle) / scale
    # rotation(angle) @ quarter(k), then the flips scale its columns.
    a, b = cos_a * cos_k - sin_a * sin_k, -(cos_a * sin_k + sin_a * cos_k)
    rows = [tf.stack([a * flips_x, b * flips_y], -1),
            tf.stack([-b * flips_x, a * flips_y], -1)]
    return tf.stack(rows, axis=-2)


def warp(x: tf.Tensor, matrix: tf.Tensor, bilinear: bool) -> tf.Tensor:
    """Resamples x [H, W, ...] at centre + matrix @ (p - centre).

    Args:
        x: [H, W] or [H, W, C]; bilinear sampling needs a float dtype.
        matrix: float32 [2, 2] acting on (x, y) = (column, row) offsets.
        bilinear: bilinear interpolation if True, else nearest neighbour.

    Returns:
        A tensor like `x`.
    """
    x = tf.convert_to_tensor(x)
    h, w = (tf.cast(s, tf.float32) for s in tf.unstack(tf.shape(x)[:2]))
    rows, cols = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dx, dy = cols - cx, rows - cy
    src_x = cx + matrix[0, 0] * dx + matrix[0, 1] * dy
    src_y = cy + matrix[1, 0] * dx + matrix[1, 1] * dy
    return sample(x, src_y, src_x, bilinear)


def sample(x: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor, bilinear: bool
           ) -> tf.Tensor:
    """Samples x [H, W, ...] at float pixel coordinates, mirroring outside.

    Args:
        x: [H, W] or [H, W, C]; bilinear sampling needs a float dtype.
        rows, cols: float32 coordinates of any common shape S; pixel centres
            are at integers.
        bilinear: bilinear interpolation if True, else nearest neighbour.

    Returns:
        S + x.shape[2:].
    """
    x = tf.convert_to_tensor(x)
    height, width = tf.shape(x)[0], tf.shape(x)[1]
    trailing = x.shape[2:]
    if trailing.is_fully_defined():  # Keeps the channel dimension static.
        flat = tf.reshape(x, [height * width] + trailing.as_list())
    else:
        flat = tf.reshape(x, tf.concat([[height * width], tf.shape(x)[2:]], 0))
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    rows, cols = _reflect(rows, h), _reflect(cols, w)

    def at(r, c):
        r = tf.cast(tf.clip_by_value(r, 0.0, h - 1), tf.int32)
        c = tf.cast(tf.clip_by_value(c, 0.0, w - 1), tf.int32)
        return tf.gather(flat, r * width + c)

    if not bilinear:
        return at(tf.round(rows), tf.round(cols))
    r0, c0 = tf.floor(rows), tf.floor(cols)
    wr, wc = rows - r0, cols - c0
    for _ in range(len(trailing)):
        wr, wc = wr[..., None], wc[..., None]
    top = at(r0, c0) * (1 - wc) + at(r0, c0 + 1) * wc
    bottom = at(r0 + 1, c0) * (1 - wc) + at(r0 + 1, c0 + 1) * wc
    return top * (1 - wr) + bottom * wr


def jitter(image, seed, *, brightness: float = 0.1,
           contrast_range: tuple[float, float] = (0.8, 1.2),
           gamma_range: tuple[float, float] = (0.8, 1.25),
           saturation_range: tuple[float, float] = (0.8, 1.2),
           max_hue: float = 0.03) -> tf.Tensor:
    """Random brightness, contrast, gamma and (RGB) saturation/hue.

    Args:
        image: uint8 or float in [0, 1], [..., H, W, C] with C in {1, 3}.
        seed: int [2] stateless seed.
        brightness: largest additive brightness change.
        contrast_range: (min, max) contrast factor.
        gamma_range: (min, max) exponent of a gamma curve, log-uniform. Unlike
            brightness and contrast, which per-image standardisation mostly
            undoes, this non-linear change survives it.
        saturation_range: (min, max) saturation factor (RGB only).
        max_hue: largest hue shift, as a fraction of the colour wheel (RGB).

    Returns:
        float32 image in [0, 1].
    """
    image = to_unit_float(image)
    draws = tf.unstack(uniform([5], seed))
    image = image + _between(draws[0], -brightness, brightness)
    image = tf.image.adjust_contrast(image, _between(draws[1], *contrast_range))
    image = tf.clip_by_value(image, 0.0, 1.0)
    image = image ** tf.exp(_between(draws[2], *(math.log(g) for g in gamma_range)))
    if image.shape[-1] == 3:
        saturation = _between(draws[3], *saturation_range)
        image = _colour(image, saturation, _between(draws[4], -max_hue, max_hue))
    return tf.clip_by_value(image, 0.0, 1.0)


def uniform(shape, seed: tf.Tensor) -> tf.Tensor:
    """Stateless float32 uniforms in [0, 1), identical eagerly and under XLA."""
    bits = tf.random.stateless_uniform(
        shape, seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox"
    )
    # The top 24 bits give an exact float32 in [0, 1).
    return tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (1.0 / (1 << 24))


def fold_in(seed: tf.Tensor, salt: int) -> tf.Tensor:
    """A new [2] seed for purpose `salt`, cheaper than a stateless split.

    One draw per purpose (rather than a split and a call per parameter) keeps
    graph building fast. (s0, s1) becomes (s0 ^ k, s1) with k a 30-bit hash of
    `salt` whose high bits are set, so small base seeds never collide.
    """
    seed = tf.convert_to_tensor(seed)
    key = (salt * 0x9E3779B1) & 0x3FFFFFFF | 0x20000000
    return tf.bitwise.bitwise_xor(seed, tf.constant([key, 0], seed.dtype))


def to_unit_float(image) -> tf.Tensor:
    """uint8 -> float32 / 255; other dtypes are cast to float32."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def _between(unit: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """Maps [0, 1) to [low, high); exactly `low` when low == high."""
    return low + (high - low) * unit


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
