"""Patches: random training crops, padding and sliding-window tiling.

* `random_patches` cuts seeded random square patches whose centres lie inside
  the field of view (the retina recipe: 48x48 patches sampled on the fly).
* `pad_to_multiple` / `crop` make any image fit a network whose sides must
  divide 2**depth, and undo it.
* `extract_tiles` / `stitch_tiles` cover an image with overlapping tiles
  (the last tile in each direction is snapped to the border) and average
  per-tile predictions back into one map.

Everything is pure TF (gathers and segment sums), usable in tf.data and in
compiled functions.
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


def pad_to_multiple(
    image: tf.Tensor, multiple: int, mode: str = "CONSTANT"
) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
    """Pads H and W at the bottom/right up to multiples of `multiple`.

    Args:
        image: [H, W, C] or [B, H, W, C].
        multiple: e.g. 2**depth of the network.
        mode: `tf.pad` mode; "CONSTANT" pads with zeros, which is the mean of
            a standardised image.

    Returns:
        (padded image, (H, W)), the original size for `crop`.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    image = tf.convert_to_tensor(image)
    axis = image.shape.rank - 3
    shape = tf.shape(image)
    height, width = shape[axis], shape[axis + 1]
    pads = [[0, 0]] * (axis + 3)
    pads[axis] = [0, -height % multiple]
    pads[axis + 1] = [0, -width % multiple]
    return tf.pad(image, pads, mode=mode), (height, width)


def crop(image: tf.Tensor, size) -> tf.Tensor:
    """Undoes `pad_to_multiple`: keeps the top-left `size` = (H, W)."""
    height, width = size
    if image.shape.rank == 3:
        return image[:height, :width]
    return image[:, :height, :width]


def extract_tiles(image: tf.Tensor, tile: int, stride: int) -> tf.Tensor:
    """Covers [H, W, C] with `tile`^2 tiles every `stride` px, row-major.

    Tiles start at 0, stride, 2 * stride, ... and the last one in each
    direction is snapped to the border, so every pixel is covered even when
    `stride` does not divide H - tile. H and W must be >= `tile`, and
    1 <= `stride` <= `tile`.

    Returns:
        [N, tile, tile, C] with N = rows * cols of the tile grid.
    """
    _check_tiling(tile, stride)
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    tops, lefts = _starts(height, tile, stride), _starts(width, tile, stride)
    grid_tops, grid_lefts = tf.meshgrid(tops, lefts, indexing="ij")
    index = _window_index(tf.reshape(grid_tops, [-1]), tf.reshape(grid_lefts, [-1]),
                          tile, tile, width)
    return _gather_windows(image, index, height, width)


def stitch_tiles(tiles: tf.Tensor, image_shape, stride: int) -> tf.Tensor:
    """Averages tiles from `extract_tiles` back into one image.

    Args:
        tiles: [N, T, T, C] (e.g. per-tile probabilities), in the order of
            `extract_tiles(image, T, stride)`.
        image_shape: (H, W) of the image the tiles were cut from.
        stride: the stride used to cut them.

    Returns:
        float [H, W, C]: each pixel is the mean over the tiles covering it.
    """
    tiles = tf.convert_to_tensor(tiles)
    tile = tiles.shape[1] if tiles.shape[1] is not None else tf.shape(tiles)[1]
    if isinstance(tile, int):
        _check_tiling(tile, stride)
    height, width = image_shape[0], image_shape[1]
    tops, lefts = _starts(height, tile, stride), _starts(width, tile, stride)
    grid_tops, grid_lefts = tf.meshgrid(tops, lefts, indexing="ij")
    index = _window_index(tf.reshape(grid_tops, [-1]), tf.reshape(grid_lefts, [-1]),
                          tile, tile, width)
    index = tf.reshape(index, [-1])
    values = tf.reshape(tiles, [tf.size(index), -1])
    size = height * width
    total = tf.math.unsorted_segment_sum(values, index, size)
    count = tf.math.unsorted_segment_sum(tf.ones_like(values[:, :1]), index, size)
    return tf.reshape(total / count, [height, width, -1])


def _check_tiling(tile: int, stride: int) -> None:
    if not 1 <= stride <= tile:
        raise ValueError(f"need 1 <= stride <= tile, got tile {tile}, stride {stride}")


def _starts(size, tile, stride) -> tf.Tensor:
    """Tile offsets 0, stride, ... with the last one snapped to size - tile."""
    last = size - tile
    tf.debugging.assert_non_negative(last, message="image smaller than the tile")
    count = (last + stride - 1) // stride + 1
    return tf.minimum(tf.range(count) * stride, last)


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
