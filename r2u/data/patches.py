"""Random training patches whose centres lie inside the field of view.

The retina recipe: 48x48 patches sampled on the fly from whole, already standardised
images. Pure TF (gathers), usable in tf.data and in compiled functions. Padding and
sliding-window tiling for inference live in `r2u.inference`.
"""

import tensorflow as tf


def random_patches(
    image: tf.Tensor,
    mask: tf.Tensor,
    fov: tf.Tensor,
    patch_size: int,
    num: int,
    seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Cuts `num` random `patch_size`^2 patches centred inside the FOV.

    The centre of a patch is its pixel (patch_size // 2, patch_size // 2).
    Centres are drawn uniformly among FOV pixels whose patch fits in the
    image; if there is none (empty FOV), among all such pixels.

    Args:
        image: [H, W, C], any dtype, H and W >= patch_size.
        mask: [H, W] or [H, W, 1].
        fov: like `mask`; nonzero marks the field of view.
        patch_size: side of the square patches.
        num: number of patches.
        seed: int [2] stateless seed.

    Returns:
        (images [num, P, P, C], masks [num, P, P(, 1)], fovs like masks), with
        the input dtypes.
    """
    image, mask, fov = (tf.convert_to_tensor(x) for x in (image, mask, fov))
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    tf.debugging.assert_greater_equal(
        tf.minimum(height, width), patch_size,
        message=f"image is smaller than the patch size {patch_size}")
    half = patch_size // 2
    fov_2d = tf.reshape(fov, [height, width]) != 0
    fits = tf.pad(
        tf.ones([height - patch_size + 1, width - patch_size + 1], tf.bool),
        [[half, patch_size - 1 - half], [half, patch_size - 1 - half]])
    inside = tf.where(fits & fov_2d)  # [K, 2] (row, col)
    anywhere = tf.where(fits)
    centres = tf.cond(tf.shape(inside)[0] > 0, lambda: inside, lambda: anywhere)
    pick = tf.random.stateless_uniform(
        [num], seed, 0, tf.shape(centres, tf.int64)[0], dtype=tf.int64,
        alg="philox")
    corners = tf.cast(tf.gather(centres, pick), tf.int32) - half  # [num, 2]
    index = _window_index(corners[:, 0], corners[:, 1], patch_size, patch_size,
                          width)
    return tuple(_gather_windows(x, index, height, width)
                 for x in (image, mask, fov))


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
