"""The training and evaluation tf.data pipelines over prepared TFRecords.

Order: list shards -> shard files per input pipeline -> parallel
interleave -> parse (+ optional resize) -> cache (decoded uint8, before any
random op) -> shuffle -> repeat -> augment / preprocess / patches (seeded)
-> batch(drop_remainder) -> prefetch.

Training elements are
`{"image": float32 [B, h, w, C], "mask": int32 [B, h, w], "fov": float32
[B, h, w]}` with fully static shapes. Randomness is keyed by (seed, position
in the repeated stream) through stateless ops, and shuffles are seeded, so
the stream is the same on every run. With `patch_size`, each image gets its
colour jitter and per-image standardisation whole, then `patches_per_image`
random patches centred in the FOV are cut from it, each with its own random
geometric transform, and shuffled with those of other images.

Evaluation yields one whole image at a time (batch 1, no augmentation) with
`"id"` and, when the split has it, `"mask2"` (a second annotator).
"""

import dataclasses

import tensorflow as tf

from r2u import config
from r2u.data import augment as augment_lib
from r2u.data import patches
from r2u.data import preprocess as preprocess_lib
from r2u.data import tfrecord

AUTOTUNE = tf.data.AUTOTUNE


def make_dataset(
    data,
    split: str,
    *,
    batch_size: int,
    training: bool,
    patch_size: int | None = None,
    patches_per_image: int = 8,
    image_size: int | tuple[int, int] | None = None,
    scale: float | None = None,
    preprocessing: config.Preprocessing | None = None,
    augment: bool = True,
    mirror: bool = True,
    seed: int = 0,
    cache: bool = True,
    shuffle_buffer: int = 256,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Builds the input pipeline of one split of a prepared dataset.

    Args:
        data: the prepared dataset (`r2u.data.prepared.PreparedData`, whose
            `dataset` method calls this).
        split: e.g. "train", "validation", "test".
        batch_size: examples (or patches) per batch of this pipeline; with
            several input pipelines, the per-replica batch size. Ignored when
            `training` is False (batches of one image).
        training: training stream (shuffled, repeated, augmented, batched)
            or evaluation stream (one image at a time, in file order).
        patch_size: train on random square patches of this side (retina);
            None trains on whole images. Ignored for evaluation.
        patches_per_image: patches cut from each augmented image.
        image_size: resize images (bilinear) and masks (nearest) to this
            int or (height, width) before caching, in both modes.
        scale: resample images (bilinear, antialiased) and masks (nearest) by
            this factor before caching, in both modes (the plan's training
            scale); sizes may then vary, so whole-image training needs
            `image_size` instead.
        preprocessing: the model's preprocessing spec (`preprocess.apply`);
            None: as stored, no contrast. Channels None: as stored.
        augment: random geometric + photometric augmentation in training.
        mirror: flips among the geometric augmentations (off for sided classes).
        seed: seeds shuffling, augmentation and patch sampling.
        cache: cache decoded examples in memory.
        shuffle_buffer: examples (and, with patches, patches) in the shuffle
            buffers.
        input_context: from `tf.distribute`; shards are split between input
            pipelines at the file level.

    Returns:
        A `tf.data.Dataset` of dicts (see the module docstring).

    Raises:
        ValueError: fewer shards than input pipelines, whole-image training
            on images of varying size without `image_size`, or patches larger
            than the images.
        DataError: unknown split.
    """
    stored = data.channels
    spec = preprocessing or config.Preprocessing()
    if spec.channels is None:
        spec = dataclasses.replace(spec, channels=stored)
    channels = spec.channels
    files = _files_for_pipeline(data.shard_paths(split), input_context)
    if image_size is not None and scale is not None:
        raise ValueError("give image_size or scale, not both")
    size = _size(image_size, None if scale else data.image_shape)
    if training and patch_size is None and size is None:
        raise ValueError(
            f"{data.path}: images vary in size; whole-image training needs "
            "image_size (or patch_size)")
    if training and patch_size is not None and size and min(size) < patch_size:
        raise ValueError(f"patch_size {patch_size} exceeds the image size {size}")
    with_mask2 = not training and data.has_mask2(split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.map(_no_autograph(lambda s: _decode(s, with_mask2, stored, size, scale)),
                num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()

    def prepare(image, fov):
        return preprocess_lib.apply(spec, image, fov)

    if not training:
        eval_fn = _no_autograph(lambda ex: _eval_example(ex, prepare))
        ds = ds.map(eval_fn, num_parallel_calls=AUTOTUNE)
        return ds.batch(1).prefetch(AUTOTUNE)
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().enumerate()
    train_fn = _train_fn(prepare, channels, augment, patch_size, patches_per_image,
                         seed, spec.standardize_in_fov, mirror)
    ds = ds.map(_no_autograph(train_fn), num_parallel_calls=AUTOTUNE)
    if patch_size is not None:
        ds = ds.unbatch().shuffle(shuffle_buffer, seed=seed + 1)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def _no_autograph(fn):
    # The map functions have no tensor-dependent Python control flow, and
    # autograph conversion costs seconds per pipeline.
    return tf.autograph.experimental.do_not_convert(fn)


def _files_for_pipeline(files: list[str], input_context) -> list[str]:
    """Keeps this input pipeline's share of the shard files."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return files
    num = input_context.num_input_pipelines
    if len(files) < num:
        raise ValueError(
            f"{len(files)} shard file(s) cannot feed {num} input pipelines; "
            f"prepare the dataset with at least {num} shards per split")
    return files[input_context.input_pipeline_id::num]


def _size(image_size, image_shape) -> tuple[int, int] | None:
    """The static (height, width) of decoded images, or None if it varies."""
    if image_size is not None:
        if isinstance(image_size, int):
            return (image_size, image_size)
        return tuple(int(s) for s in image_size)
    if image_shape:
        return (int(image_shape[0]), int(image_shape[1]))
    return None


def _decode(serialized, with_mask2: bool, channels: int, size, scale=None) -> dict:
    """Parses one record; resizes it to `size` (or by `scale`) or pins its static
    shape."""
    example = tfrecord.parse(serialized, with_mask2=with_mask2, channels=channels)
    planes = ["mask", "fov"] + (["mask2"] if with_mask2 else [])
    if scale is not None and scale != 1:
        shape = tf.cast(tf.shape(example["image"])[:2], tf.float32)
        size = tf.cast(tf.maximum(tf.round(shape * scale), 1.0), tf.int32)
        resized = tf.image.resize(example["image"], size, antialias=True)
        example["image"] = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
        for key in planes:
            example[key] = tf.image.resize(example[key], size, method="nearest")
        return example
    if size is None:
        return example
    image = example["image"]

    def resize():
        resized = tf.image.resize(image, size, antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    # Skipping the no-op resize keeps prepared images bit-exact.
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
    example["image"] = tf.ensure_shape(
        tf.cond(same, lambda: image, resize), size + (channels,))
    for key in planes:
        plane = tf.image.resize(example[key], size, method="nearest")
        example[key] = tf.ensure_shape(plane, size + (1,))
    return example


def _outputs(image, mask, fov) -> dict:
    return {
        "image": image,
        "mask": tf.cast(mask[..., 0], tf.int32),
        "fov": tf.cast(fov[..., 0], tf.float32),
    }


def _eval_example(example: dict, prepare) -> dict:
    out = _outputs(prepare(example["image"], example["fov"]), example["mask"],
                   example["fov"])
    out["id"] = example["id"]
    if "mask2" in example:
        out["mask2"] = tf.cast(example["mask2"][..., 0], tf.int32)
    return out


def _train_fn(prepare, channels: int, augment: bool, patch_size,
              patches_per_image: int, seed: int, standardize_in_fov: bool,
              mirror: bool = True):
    """Returns the map fn (index, example) -> augmented, standardised output."""

    def fn(index, example):
        base = tf.constant(seed, tf.int64)
        # Indices are >= 0, so the two keys never collide.
        aug_seed, patch_seed = tf.stack([base, index]), tf.stack([base, -1 - index])
        image, mask, fov = example["image"], example["mask"], example["fov"]
        if channels == 1 and image.shape[-1] == 3:
            # Augmenting one channel instead of three is ~3x cheaper.
            image = preprocess_lib.to_channels(tf.cast(image, tf.float32) / 255, 1)
        if augment and patch_size is not None:
            # Colours change on the whole image; geometry per patch, below.
            image = augment_lib.jitter(image, aug_seed)
        elif augment:
            image, mask, fov = augment_lib.augment(image, mask, fov, aug_seed,
                                                   mirror=mirror)
        image = prepare(image, fov)  # On the full image, before patching.
        if patch_size is not None:
            image, mask, fov = patches.random_patches(
                image, mask, fov, patch_size, patches_per_image, patch_seed,
                geometric=augment, mirror=mirror)
            if standardize_in_fov:  # Bilinear sampling blurs the FOV border.
                image *= tf.cast(fov != 0, image.dtype)
        return _outputs(image, mask, fov)

    return fn
