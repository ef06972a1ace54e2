"""Random training patches whose centres lie inside the field of view.

The retina recipe: 48x48 patches sampled on the fly from whole, already standardised
images, optionally each with its own random geometric transform. Pure TF (gathers),
usable in tf.data and in compiled functions. Padding and sliding-window tiling for
inference live in `r2u.inference.network`.
"""

import tensorflow as tf

from r2u.data import augment


def random_patches(
    image: tf.Tensor,
    mask: tf.Tensor,
    fov: tf.Tensor,
    patch_size: int,
    num: int,
    seed: tf.Tensor,
    *,
    geometric: bool = False,
    max_rotation: float = 15.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    mirror: bool = True,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Cuts `num` random `patch_size`^2 patches centred inside the FOV.

    The centre of a patch is its pixel (patch_size // 2, patch_size // 2).
    Centres are drawn uniformly among FOV pixels whose patch fits in the
    image; if there is none (empty FOV), among all such pixels. With
    `geometric`, every patch gets its own random flips, quarter turn,
    rotation and scale about its centre pixel, sampled from the whole image
    (bilinear for the image, nearest for mask and FOV, mirrored outside):
    more varied than one transform per image, and cheaper than warping the
    whole image whenever the patches cover less of it.

    Args:
        image: [H, W, C], any dtype (float if `geometric`), H, W >= patch_size.
        mask: [H, W] or [H, W, 1].
        fov: like `mask`; nonzero marks the field of view.
        patch_size: side of the square patches.
        num: number of patches.
        seed: int [2] stateless seed.
        geometric: randomly transform each patch (`augment.random_affines`).
        max_rotation: largest small rotation in degrees, if `geometric`.
        scale_range: (min, max) zoom factor, if `geometric`.
        mirror: allow flips, if `geometric` (`augment.random_affines`).

    Returns:
        (images [num, P, P, C], masks [num, P, P(, 1)], fovs like masks), with
        the input dtypes.
    """
    image, mask, fov = (tf.convert_to_tensor(x) for x in (image, mask, fov))
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    centres = _random_centres(fov, patch_size, num, seed, height, width)
    half = patch_size // 2
    if not geometric:
        corners = centres - half  # [num, 2]
        index = _window_index(corners[:, 0], corners[:, 1], patch_size,
                              patch_size, width)
        return tuple(_gather_windows(x, index, height, width)
                     for x in (image, mask, fov))
    matrices = augment.random_affines(augment.fold_in(seed, 2), [num],
                                      max_rotation, scale_range, mirror=mirror)
    m = matrices[:, :, :, None, None]  # [num, 2, 2, 1, 1]
    offsets = tf.range(patch_size, dtype=tf.float32) - half
    dy, dx = offsets[:, None], offsets[None, :]  # [P, 1], [1, P]
    centres = tf.cast(centres, tf.float32)[:, :, None, None]  # [num, 2, 1, 1]
    src_x = centres[:, 1] + m[:, 0, 0] * dx + m[:, 0, 1] * dy  # [num, P, P]
    src_y = centres[:, 0] + m[:, 1, 0] * dx + m[:, 1, 1] * dy
    return (augment.sample(image, src_y, src_x, bilinear=True),
            augment.sample(mask, src_y, src_x, bilinear=False),
            augment.sample(fov, src_y, src_x, bilinear=False))


def _random_centres(fov, patch_size, num, seed, height, width) -> tf.Tensor:
    """int32 [num, 2] (row, col) centres, uniform over the valid FOV pixels."""
    tf.debugging.assert_greater_equal(
        tf.minimum(height, width), patch_size,
        message=f"image is smaller than the patch size {patch_size}")
    half = patch_size // 2
    fov_2d = tf.reshape(fov, [height, width]) != 0
    fits = tf.pad(
        tf.ones([height - patch_size + 1, width - patch_size + 1], tf.bool),
        [[half, patch_size - 1 - half], [half, patch_size - 1 - half]])
    inside = tf.where(fits & fov_2d)  # [K, 2] (row, col)
    centres = tf.cond(tf.shape(inside)[0] > 0, lambda: inside,
                      lambda: tf.where(fits))
    count = tf.shape(centres)[0]
    # One float draw per patch (24-bit resolution is plenty for any image).
    pick = tf.cast(augment.uniform([num], seed) * tf.cast(count, tf.float32),
                   tf.int32)
    return tf.cast(tf.gather(centres, tf.minimum(pick, count - 1)), tf.int32)


def _window_index(tops, lefts, height, width, row_length) -> tf.Tensor:
    """Flat pixel indices [N, height, width] of windows with these corners."""
    rows = tops[:, None] + tf.range(height)[None, :]  # [N, height]
    cols = lefts[:, None] + tf.range(width)[None, :]  # [N, width]
    return rows[:, :, None] * row_length + cols[:, None, :]


def _gather_windows(x, index, height, width) -> tf.Tensor:
    """Gathers windows of x [H, W, ...] at flat indices [N, h, w]."""
    trailing = x.shape[2:]
    if trailing.is_fully_defined():  # Keeps the channel dimension static.
        flat = tf.reshape(x, [height * width] + trailing.as_list())
    else:
        flat = tf.reshape(x, tf.concat([[height * width], tf.shape(x)[2:]], 0))
    return tf.gather(flat, index)
