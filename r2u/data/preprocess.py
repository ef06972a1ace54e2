"""Image preprocessing shared by training, evaluation and the exported model.

`preprocess` turns a uint8 (or float in [0, 1]) image into the float32 input
of the networks, in pure TF ops that work on [H, W, C] and [B, H, W, C], in
graphs, in tf.data and under XLA:

1. Convert to `channels` (RGB -> gray with `tf.image.rgb_to_grayscale`, gray
   -> RGB by tiling).
2. Optionally enhance the contrast (`contrast=True`), a CLAHE-like step:
   * standardise the image globally;
   * local contrast normalisation: subtract the local mean and divide by
     sqrt(local variance + `limit`). As in CLAHE, local statistics come from
     a grid of `tile` x `tile` tiles, bilinearly interpolated between tile
     centres, and like CLAHE's clip limit, `limit` caps the gain in flat
     regions (at most 1 / sqrt(limit)) so noise is not amplified unboundedly;
   * squash to (0, 1) with a sigmoid, which plays the role of CLAHE's
     equalised output range, and apply the gamma curve y = x ** `gamma`.
   With a FOV the local statistics use only FOV pixels, so the black border of
   fundus images does not darken the rim.
3. Per-image standardisation with `tf.image.per_image_standardization`
   semantics, (x - mean) / max(std, 1 / sqrt(N)); with a FOV, mean and std
   come from FOV pixels only and pixels outside the FOV are set to 0.

uint8 images are divided by 255, so they give the same result as the same
images as floats in [0, 1].

`apply` runs a `config.Preprocessing` spec: training, validation, evaluation,
prediction and the SavedModel all call it, so they feed the network alike.
"""

import tensorflow as tf

from r2u import config

_EPS = 1e-6


def preprocess(
    image: tf.Tensor,
    channels: int,
    contrast: bool = False,
    *,
    fov: tf.Tensor | None = None,
    tile: int = 64,
    limit: float = 0.1,
    gamma: float = 1.2,
) -> tf.Tensor:
    """Converts, optionally contrast-enhances and standardises images.

    Args:
        image: uint8 or float [H, W, C] or [B, H, W, C] with a static C in
            {1, 3}; floats are expected in [0, 1].
        channels: number of output channels, 1 or 3.
        contrast: apply the CLAHE-like contrast enhancement and gamma.
        fov: optional field of view, [H, W], [H, W, 1], [B, H, W] or
            [B, H, W, 1] (any dtype, nonzero = inside); statistics use only
            pixels inside it and pixels outside it become 0.
        tile: side in pixels of the contrast tiles (DRIVE: about a ninth of
            the image, like CLAHE's usual 8 x 8 grid).
        limit: variance added before the local division (see module doc).
        gamma: exponent of the gamma curve after the contrast step.

    Returns:
        float32 tensor of the input's rank with `channels` channels.

    Raises:
        ValueError: on unsupported ranks or channel conversions.
    """
    image = tf.convert_to_tensor(image)
    if image.shape.rank not in (3, 4):
        raise ValueError(f"image must be [H, W, C] or [B, H, W, C], got {image.shape}")
    batched = image.shape.rank == 4
    x = image if batched else image[None]
    x = to_channels(_to_float(x), channels)
    mask = _fov_mask(fov, x, batched)
    if contrast:
        x = _standardize(x, mask)
        x = _local_normalize(x, mask, tile, limit)
        x = tf.math.sigmoid(x) ** gamma
    x = _standardize(x, mask)
    return x if batched else x[0]


def apply(spec: config.Preprocessing, image: tf.Tensor,
          fov: tf.Tensor | None = None) -> tf.Tensor:
    """`preprocess` as `spec` says (its `channels` must be set).

    Args:
        spec: the model's preprocessing.
        image: as `preprocess`.
        fov: the field of view (as `preprocess`); used only, and then required,
            when `spec.standardize_in_fov`.

    Raises:
        ValueError: `spec.standardize_in_fov` without a `fov`, or no channels.
    """
    if spec.channels is None:
        raise ValueError("the preprocessing spec names no channels")
    if spec.standardize_in_fov and fov is None:
        raise ValueError("this model standardises images over their field of view: "
                         "give the field of view (fov)")
    return preprocess(image, spec.channels, spec.contrast,
                      fov=fov if spec.standardize_in_fov else None)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Converts float [..., C] images to `channels` channels.

    Raises:
        ValueError: if C is not static or the conversion is unsupported.
    """
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    if have == 1 and channels == 3:
        return tf.tile(image, [1] * (image.shape.rank - 1) + [3])
    raise ValueError(f"cannot convert images with {have} channels to {channels}")


def _to_float(image: tf.Tensor) -> tf.Tensor:
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def _fov_mask(fov, x: tf.Tensor, batched: bool) -> tf.Tensor | None:
    """Returns the FOV as float32 [B, H, W, 1] in {0, 1}, or None."""
    if fov is None:
        return None
    fov = tf.convert_to_tensor(fov)
    rank = x.shape.rank if batched else x.shape.rank - 1
    if fov.shape.rank == rank - 1:
        fov = fov[..., None]
    elif fov.shape.rank != rank or fov.shape[-1] != 1:
        raise ValueError(f"fov shape {fov.shape} does not match image {x.shape}")
    if not batched:
        fov = fov[None]
    return tf.cast(tf.not_equal(fov, 0), tf.float32)


def _standardize(x: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """Per-image (x - mean) / max(std, 1/sqrt(N)) over the FOV, 0 outside."""
    axes = [1, 2, 3]
    channels = tf.cast(tf.shape(x)[-1], tf.float32)
    if mask is None:
        count = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        mean = tf.reduce_mean(x, axes, keepdims=True)
        var = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
    else:
        count = tf.reduce_sum(mask, axes, keepdims=True) * channels
        safe = tf.maximum(count, 1.0)
        mean = tf.reduce_sum(x * mask, axes, keepdims=True) / safe
        var = tf.reduce_sum(tf.square(x - mean) * mask, axes, keepdims=True) / safe
    floor = tf.math.rsqrt(tf.maximum(count, 1.0))
    out = (x - mean) / tf.maximum(tf.sqrt(var), floor)
    return out if mask is None else out * mask


def _tile_means(maps: tf.Tensor, tile: int) -> tf.Tensor:
    """Means over `tile` x `tile` tiles, interpolated between tile centres.

    Like CLAHE, statistics come from a grid of tiles (centred on the image,
    the outer ones partly outside it) and are bilinearly interpolated
    between tile centres, which costs O(H * W) whatever the tile size.

    Args:
        maps: [B, H, W, K].
        tile: tile side in pixels.

    Returns:
        [B, H, W, K]. Padding is excluded from the means; callers only use
        ratios of these maps, in which any padding convention cancels.
    """
    shape = tf.shape(maps)
    pooled = tf.nn.avg_pool2d(maps, tile, tile, "SAME")  # [B, rows, cols, K]
    grid = tf.shape(pooled)[1:3]
    # An integer upscaling puts grid centre j at pixel (j + 0.5) * tile - 0.5,
    # the centre of tile j; SAME pooling put half the padding (floored) first.
    full = tf.image.resize(pooled, grid * tile, method="bilinear")
    top = (grid[0] * tile - shape[1]) // 2
    left = (grid[1] * tile - shape[2]) // 2
    return full[:, top:top + shape[1], left:left + shape[2]]


def _local_normalize(x, mask, tile: int, limit: float) -> tf.Tensor:
    """(x - local mean) / sqrt(local variance + limit), FOV-weighted."""
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    weight = tf.ones_like(x[..., :1]) if mask is None else mask
    channels = x.shape[-1]
    maps = tf.concat([x * weight, tf.square(x) * weight, weight], axis=-1)
    means = _tile_means(maps, tile)
    # Ratios of interpolated sums are weighted means over the nearby tiles.
    norm = tf.maximum(means[..., -1:], _EPS)
    mean = means[..., :channels] / norm
    var = means[..., channels:2 * channels] / norm - tf.square(mean)
    return (x - mean) * tf.math.rsqrt(tf.maximum(var, 0.0) + limit)
