"""Decodes image and mask files to numpy, with clear errors.

Used at preparation time by the dataset readers and later by `bin/predict`.
Pillow is imported here (and only here) because preparation has to read
formats TensorFlow does not decode: TIFF, palette GIF, PPM/PGM and gzip
compressed PPM (STARE). Every failure raises `DataError` naming the file.

Three kinds of file: images (`read_image`, uint8 pixels), binary masks
(`read_mask`, {0, 1}) and label maps (`read_label_map`, the integer class of
each pixel). A 16-bit image becomes 8 bits by its high byte (the named
datasets, as Pillow reads 16-bit RGB) or, for folder datasets, by a window over
its own values (`window_to_uint8`).
"""

import gzip
import io
import os
import zlib

import numpy as np
from PIL import Image

from r2u import errors

# Masks may carry a few anti-aliased pixels on lesion borders; more than
# this fraction of values far from both 0 and 255 means the file is not a mask.
MAX_INTERMEDIATE_FRACTION = 0.01
# JPEG compression moves mask values a little off 0 and 255 everywhere; values
# within this distance of 0 or 255 count as binary (then thresholded at 128).
NEAR_BINARY = 32

_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# How `read_image` brings 16-bit images to 8 bits.
HIGH_BYTE, WINDOW = "high_byte", "window"
# Percentiles of the linear window that maps a 16-bit image to 8 bits.
WINDOW_PERCENTILES = (0.1, 99.9)

DataError = errors.DataError  # defined in r2u.errors; kept here for older imports


def _decode(path: str) -> tuple[Image.Image, bytes | None]:
    """Opens and fully decodes `path` (transparently un-gzipping `.gz`).

    Returns the image as Pillow decodes it and, for a 16-bit colour PNG (which
    Pillow cuts to its high bytes), the file's bytes to decode it again in full.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
            if not data:
                raise DataError(f"{path}: gzip stream is empty")
            img = Image.open(io.BytesIO(data))
        else:
            img = Image.open(path)
        deep_colour = img.format == "PNG" and img.mode in ("RGB", "RGBA") and any(
            ";16" in str(tile.args) for tile in img.tile)
        img.load()  # Decoding happens lazily; force it so truncation shows.
    except DataError:
        raise
    except (OSError, EOFError, SyntaxError, ValueError, zlib.error) as e:
        what = "cannot read file" if isinstance(e, PermissionError) else \
            "cannot decode image"
        raise DataError(f"{path}: {what} ({e})") from e
    if not deep_colour:
        return img, None
    if path.endswith(".gz"):
        return img, data
    with open(path, "rb") as f:
        return img, f.read()


def _open(path: str) -> Image.Image:
    """`_decode`d, with 16-bit gray as its high byte (binary masks only)."""
    return _eight_bit(_decode(path)[0], path)


def _deep_values(img: Image.Image, path: str) -> np.ndarray:
    """The integers of a 16-bit gray image (Pillow's "I;16*", or "I" within
    0..65535); other deep modes (32-bit, float) have no agreed scale."""
    values = np.asarray(img)
    if img.mode == "F" or values.min(initial=0) < 0 or values.max(initial=0) > 65535:
        raise DataError(f"{path}: unsupported pixel mode {img.mode!r} (expected 8- or "
                        "16-bit images)")
    return values.astype(np.int32)


def _eight_bit(img: Image.Image, path: str) -> Image.Image:
    """16-bit gray as its high byte, as Pillow reads 16-bit RGB: a binary mask saved
    at 16 bits (0/65535) stays binary."""
    if not (img.mode.startswith("I") or img.mode == "F"):
        return img
    values = _deep_values(img, path)
    return Image.fromarray((values >> 8).astype(np.uint8), mode="L")


def window_to_uint8(values: np.ndarray) -> np.ndarray:
    """Maps a 16-bit image to uint8 by a linear window over its own values.

    The window runs from the image's 0.1th to its 99.9th percentile (over all
    channels together, so colours keep their balance), clipped outside. r2u
    standardises every image before the network sees it, so a per-image linear
    map loses nothing but quantisation; a fixed `>> 8` would leave a 12-bit
    image (0..4095, common in microscopy and medical scanners) 16 grey levels,
    and a 16-bit image with a narrow range a handful. A constant image maps to 0.
    Folder datasets read 16-bit images this way (`read_image(sixteen_bit=WINDOW)`).

    Args:
      values: integer array, any shape.

    Returns:
      np.uint8 array of the same shape.
    """
    values = np.asarray(values, np.float64)
    low, high = np.percentile(values, WINDOW_PERCENTILES)
    if high <= low:
        return np.where(values > low, 255, 0).astype(np.uint8)
    scaled = np.round((values - low) * (255.0 / (high - low)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _deep_colour(data: bytes, path: str) -> np.ndarray:
    """A 16-bit RGB(A) PNG decoded in full by TensorFlow, alpha dropped, windowed."""
    import tensorflow as tf  # here only: Pillow reads every other file
    try:
        values = tf.io.decode_png(data, dtype=tf.uint16).numpy()
    except (tf.errors.OpError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({getattr(e, 'message', e)})") \
            from e
    return window_to_uint8(values[..., :3])


def _to_uint8_gray(img: Image.Image, path: str) -> np.ndarray:
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * 255
    if img.mode in ("L", "LA"):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    raise DataError(
        f"{path}: unsupported pixel mode {img.mode!r} (expected 8- or 16-bit images)")


def read_image(path: str, channels: int | None = 3,
               sixteen_bit: str = HIGH_BYTE) -> np.ndarray:
    """Reads an image file as uint8 pixels.

    Args:
      path: file to read (PNG, JPEG, TIFF, BMP, GIF, PPM/PGM, optionally `.gz`).
      channels: 3 for RGB, 1 for grayscale, None to keep 1 for gray sources
        and 3 otherwise. Palette images are expanded through their palette;
        alpha is dropped.
      sixteen_bit: how 16-bit images (gray, or RGB PNG) become 8 bits:
        `HIGH_BYTE` (value >> 8) or `WINDOW` (`window_to_uint8`).

    Returns:
      np.uint8 array [H, W, channels].

    Raises:
      DataError: unreadable, truncated, empty or unsupported file.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels}")
    if sixteen_bit not in (HIGH_BYTE, WINDOW):
        raise ValueError(f"sixteen_bit must be {HIGH_BYTE!r} or {WINDOW!r}, got "
                         f"{sixteen_bit!r}")
    img, deep_colour = _decode(path)
    if channels is None:
        channels = 1 if img.mode in _GRAY_MODES else 3
    if sixteen_bit == HIGH_BYTE:
        img = _eight_bit(img, path)  # 16-bit RGB: Pillow kept the high bytes
    elif deep_colour is not None:
        img = Image.fromarray(_deep_colour(deep_colour, path), mode="RGB")
    elif img.mode.startswith("I") or img.mode == "F":
        img = Image.fromarray(window_to_uint8(_deep_values(img, path)), mode="L")
    if channels == 1:
        arr = (_to_uint8_gray(img, path) if img.mode in _GRAY_MODES
               else np.asarray(img.convert("L"), dtype=np.uint8))
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{path}: image has no pixels")
    return np.ascontiguousarray(arr)


def is_gray(image: np.ndarray) -> bool:
    """True for uint8 [H, W, 1], or [H, W, 3] whose three channels are equal."""
    return image.shape[2] == 1 or (np.array_equal(image[..., 0], image[..., 1])
                                   and np.array_equal(image[..., 0], image[..., 2]))


def _raw_mask_values(img: Image.Image, path: str) -> np.ndarray:
    """Returns mask pixel values [H, W] on a 0..255 (or 0..1) scale."""
    if img.mode == "P":
        raw = np.asarray(img, dtype=np.uint8)
        # Palette masks (e.g. DRIVE 2nd_manual) store indices 0/1; their
        # palette colours convert to 3/253, so use the raw indices.
        if raw.max(initial=0) <= 1:
            return raw
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if not (np.array_equal(rgb[..., 0], rgb[..., 1])
                and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(f"{path}: mask is a colour image (R, G, B differ)")
        return rgb[..., 0]
    return _to_uint8_gray(img, path)


def binarize_mask(values: np.ndarray, path: str,
                  max_intermediate: float = MAX_INTERMEDIATE_FRACTION
                  ) -> np.ndarray:
    """Turns mask values into {0, 1}, checking they are binary.

    Values in {0, 1} are kept. Otherwise values must lie within `NEAR_BINARY`
    of 0 or 255 (JPEG-compressed masks do) except for at most
    `max_intermediate` of the pixels (anti-aliasing), and the mask is
    thresholded at 128.

    Args:
      values: uint8 array [H, W].
      path: file name used in error messages.
      max_intermediate: tolerated fraction of values far from 0 and 255.

    Returns:
      np.uint8 array [H, W] with values {0, 1}.

    Raises:
      DataError: when the mask is not binary.
    """
    if values.max(initial=0) <= 1:
        return values.astype(np.uint8)
    intermediate = np.count_nonzero((values > NEAR_BINARY)
                                    & (values < 255 - NEAR_BINARY))
    if intermediate > max_intermediate * values.size:
        found = np.unique(values)
        shown = ", ".join(str(v) for v in found[:12])
        more = f", ... ({found.size} distinct)" if found.size > 12 else ""
        raise DataError(
            f"{path}: mask is not binary: values {{{shown}{more}}}, "
            f"{intermediate / values.size:.1%} of pixels between {NEAR_BINARY} "
            f"and {255 - NEAR_BINARY} (at most {max_intermediate:.1%} tolerated)")
    return (values >= 128).astype(np.uint8)


def read_mask(path: str,
              max_intermediate: float = MAX_INTERMEDIATE_FRACTION
              ) -> np.ndarray:
    """Reads a binary mask file (0/255 gray, 1-bit, or 0/1 palette).

    Args:
      path: file to read (PNG, GIF, PPM/PGM, optionally `.gz`).
      max_intermediate: see `binarize_mask`.

    Returns:
      np.uint8 array [H, W] with values {0, 1}.

    Raises:
      DataError: unreadable file or non-binary values.
    """
    img = _open(path)
    values = _raw_mask_values(img, path)
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise DataError(f"{path}: mask has no pixels")
    return binarize_mask(values, path, max_intermediate)


def read_label_map(path: str) -> np.ndarray:
    """Reads a label map: the integer class value of each pixel, as stored.

    Gray (8 or 16 bit) and 1-bit files give their values; palette files (PNG,
    GIF, as VOC and LabelMe save them) give their palette indices, never the
    colours; RGB files whose three channels are equal give that channel.

    Args:
      path: file to read (PNG, TIFF, GIF, BMP, PPM/PGM, optionally `.gz`).

    Returns:
      np.int32 array [H, W], values in 0..65535.

    Raises:
      DataError: unreadable file, a JPEG (lossy compression changes class
        values), a colour-coded map (channels differ), or a float or 32-bit map.
    """
    img = _decode(path)[0]
    if img.format == "JPEG":
        raise DataError(f"{path}: label map is a JPEG, whose lossy compression changes "
                        "class values; save label maps as PNG")
    if img.mode in ("P", "PA", "1", "L", "LA"):
        values = np.asarray(img.getchannel(0), dtype=np.int32)
    elif img.mode.startswith("I") or img.mode == "F":
        values = _deep_values(img, path)
    elif img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.int32)
        if not (np.array_equal(rgb[..., 0], rgb[..., 1])
                and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(f"{path}: label map is colour-coded (R, G, B differ); save "
                            "the class index of each pixel (grayscale or palette PNG)")
        values = rgb[..., 0]
    else:
        raise DataError(f"{path}: unsupported pixel mode {img.mode!r} for a label map "
                        "(expected gray, palette or 16-bit)")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise DataError(f"{path}: label map has no pixels")
    return values


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes uint8 [H, W, C] pixels to `size` = (height, width), bilinear.

    Pillow's bilinear filter widens its support when shrinking, i.e. it is
    antialiased.
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    planes = [np.asarray(Image.fromarray(image[:, :, c]).resize(
        (width, height), Image.Resampling.BILINEAR)) for c in
        range(image.shape[2])]
    return np.stack(planes, axis=-1).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes a uint8 [H, W] {0, 1} mask to (height, width), nearest."""
    height, width = size
    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask).resize(
        (width, height), Image.Resampling.NEAREST), dtype=np.uint8)
