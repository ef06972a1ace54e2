"""TFRecord encoding of segmentation examples and sharded split files.

An example (numpy, preparation time) is a dict with `id` (str), `image`
(uint8 [H, W, C], C in 1..4), `mask` (uint8 [H, W], the class index of each
pixel, 0..`MAX_CLASS_INDEX`), `fov` (uint8 [H, W] in {0, 1}) and optionally
`mask2` (as `mask`). Each one becomes a `tf.train.Example` with lossless
PNGs under namespaced keys: `image/id`, `image/png`, `mask/png`, `fov/png`,
`mask2/png`, `image/height`, `image/width`, `image/channels`.

A split is written round-robin to `<split>-00000-of-0000N.tfrecord` shards.
"""

import contextlib
import os
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from r2u import errors
from r2u import files
from r2u.data import manifest as manifest_lib

# zlib level 1 encodes photographs ~6x faster than the default level for
# ~15% more bytes; masks compress well and cheaply at the default level.
IMAGE_PNG_COMPRESSION = 1
# Masks hold class indices; 255 stays free, so at most 255 classes.
MAX_CLASS_INDEX = 254
MAX_CHANNELS = 4  # what a PNG holds (gray, gray + 1, RGB, RGB + 1)


def shard_name(split: str, index: int, num_shards: int) -> str:
    """Returns the file name of shard `index` of `num_shards`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def _check_plane(example: dict, key: str, shape: tuple) -> np.ndarray:
    value = np.asarray(example[key])
    name = example.get("id", "?")
    if value.dtype != np.uint8 or value.shape != shape:
        raise errors.DataError(
            f"example {name!r}: {key} must be uint8 {list(shape)}, got "
            f"{value.dtype} {list(value.shape)}")
    top = 1 if key == "fov" else MAX_CLASS_INDEX
    if value.max(initial=0) > top:
        raise errors.DataError(
            f"example {name!r}: {key} values must be "
            f"{'0/1' if top == 1 else f'class indices 0..{top}'}, found max "
            f"{value.max()}")
    return value


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _png(array: np.ndarray, compression: int) -> bytes:
    return tf.io.encode_png(array, compression=compression).numpy()


def encode(example: dict) -> bytes:
    """Serializes one example to a `tf.train.Example` byte string.

    Raises:
      DataError: when a field has the wrong dtype, shape or values.
    """
    image = np.asarray(example["image"])
    if (image.dtype != np.uint8 or image.ndim != 3
            or not 1 <= image.shape[2] <= MAX_CHANNELS):
        raise errors.DataError(
            f"example {example.get('id', '?')!r}: image must be uint8 "
            f"[H, W, 1..{MAX_CHANNELS}], got {image.dtype} {list(image.shape)}")
    height, width, channels = image.shape
    features = {
        "image/id": _bytes(str(example["id"]).encode("utf-8")),
        "image/png": _bytes(_png(image, IMAGE_PNG_COMPRESSION)),
        "image/height": _int(height),
        "image/width": _int(width),
        "image/channels": _int(channels),
    }
    keys = ["mask", "fov"] + (["mask2"] if "mask2" in example else [])
    for key in keys:
        plane = _check_plane(example, key, (height, width))
        features[f"{key}/png"] = _bytes(_png(plane[:, :, None], -1))
    proto = tf.train.Example(features=tf.train.Features(feature=features))
    return proto.SerializeToString()


def parse(serialized: tf.Tensor, with_mask2: bool = False,
          channels: int | None = None) -> dict:
    """Parses one serialized example with pure TF ops (usable in tf.data).

    Args:
      serialized: scalar tf.string.
      with_mask2: also decode `mask2` (only DRIVE-style test splits have it).
      channels: if given (1 to 4), decode the image to that many channels so
        its last dimension is static (2 must be what is stored: PNG decoding
        makes 1, 3 or 4); otherwise keep the stored channels.

    Returns:
      {"id": tf.string [], "image": tf.uint8 [H, W, C], "mask": tf.uint8
      [H, W, 1], "fov": tf.uint8 [H, W, 1]} plus "mask2" when requested.
    """
    spec = {
        "image/id": tf.io.FixedLenFeature([], tf.string),
        "image/png": tf.io.FixedLenFeature([], tf.string),
        "mask/png": tf.io.FixedLenFeature([], tf.string),
        "fov/png": tf.io.FixedLenFeature([], tf.string),
    }
    if with_mask2:
        spec["mask2/png"] = tf.io.FixedLenFeature([], tf.string)
    features = tf.io.parse_single_example(serialized, spec)
    # decode_png converts to 1, 3 or 4 channels only; 2 are decoded as stored.
    image = tf.io.decode_png(features["image/png"], dtype=tf.uint8,
                             channels=0 if channels in (None, 2) else channels)
    if channels == 2:
        image = tf.ensure_shape(image, [None, None, 2])
    result = {"id": features["image/id"], "image": image}
    for key in ["mask", "fov"] + (["mask2"] if with_mask2 else []):
        result[key] = tf.io.decode_png(features[f"{key}/png"], channels=1,
                                       dtype=tf.uint8)
    return result


def write_split(out_dir: str, split: str, examples: Iterable[dict],
                num_shards: int) -> dict:
    """Writes `examples` round-robin into `num_shards` TFRecord files.

    Each shard is written under a temporary name and renamed only once all
    examples were written, so a failure leaves earlier files untouched.

    Args:
      out_dir: existing output directory.
      split: split name used as the file prefix.
      examples: iterable of example dicts (consumed once).
      num_shards: number of shard files (>= 1).

    Returns:
      {"num_examples": n, "shards": [{"file", "sha256", "bytes",
      "num_examples"}], "ids": [...]}, shard files relative to `out_dir`.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    names = [shard_name(split, i, num_shards) for i in range(num_shards)]
    counts = [0] * num_shards
    ids = []
    with contextlib.ExitStack() as renames:  # renamed together, once all are written
        temps = [renames.enter_context(files.replacing(os.path.join(out_dir, n)))
                 for n in names]
        writers = [tf.io.TFRecordWriter(t) for t in temps]
        try:
            for i, example in enumerate(examples):
                writers[i % num_shards].write(encode(example))
                counts[i % num_shards] += 1
                ids.append(str(example["id"]))
        finally:
            for writer in writers:
                writer.close()
        shards = [{"file": name, "sha256": files.sha256(temp), "bytes": os.path.getsize(temp),
                   "num_examples": count}
                  for name, temp, count in zip(names, temps, counts)]
    return {"num_examples": len(ids), "shards": shards, "ids": ids}


def shard_paths(data_dir: str, split: str, manifest: dict | None = None) -> list[str]:
    """Returns the shard paths of `split`, in order, from the manifest (`manifest`, if
    given, is the one already read from `data_dir`).

    Raises:
      DataError: missing/corrupt manifest or unknown split.
    """
    manifest = manifest if manifest is not None else manifest_lib.load(data_dir)
    splits = manifest["splits"]
    if split not in splits:
        raise errors.DataError(
            f"{manifest_lib.path(data_dir)}: no split {split!r} (available: "
            f"{', '.join(sorted(splits))})")
    return [os.path.join(data_dir, s["file"]) for s in splits[split]["shards"]]
