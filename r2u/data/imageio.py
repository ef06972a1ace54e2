"""Decodes image and mask files to numpy, with clear errors.

Used at preparation time by the dataset readers and later by `bin/predict`.
Pillow is imported here (and only here) because preparation has to read
formats TensorFlow does not decode: TIFF, palette GIF, PPM/PGM and gzip
compressed PPM (STARE). Every failure raises `DataError` naming the file.
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

DataError = errors.DataError  # defined in r2u.errors; kept here for older imports


def _open(path: str) -> Image.Image:
    """Opens and fully decodes `path` (transparently un-gzipping `.gz`)."""
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
        img.load()  # Decoding happens lazily; force it so truncation shows.
    except DataError:
        raise
    except (OSError, EOFError, SyntaxError, ValueError, zlib.error) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from e
    return _eight_bit(img, path)


def _eight_bit(img: Image.Image, path: str) -> Image.Image:
    """16-bit gray (Pillow's "I;16*", or "I" holding 0..65535) as its high byte, like
    Pillow reads 16-bit RGB; other deep modes (32-bit, float) have no agreed scale."""
    if not (img.mode.startswith("I") or img.mode == "F"):
        return img
    values = np.asarray(img)
    if img.mode == "F" or values.min(initial=0) < 0 or values.max(initial=0) > 65535:
        raise DataError(f"{path}: unsupported pixel mode {img.mode!r} (expected 8- or "
                        "16-bit images)")
    return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), mode="L")


def _to_uint8_gray(img: Image.Image, path: str) -> np.ndarray:
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * 255
    if img.mode in ("L", "LA"):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    raise DataError(
        f"{path}: unsupported pixel mode {img.mode!r} (expected 8- or 16-bit images)")


def read_image(path: str, channels: int | None = 3) -> np.ndarray:
    """Reads an image file as uint8 pixels.

    Args:
      path: file to read (PNG, JPEG, TIFF, GIF, PPM/PGM, optionally `.gz`).
      channels: 3 for RGB, 1 for grayscale, None to keep 1 for gray sources
        and 3 otherwise. Palette images are expanded through their palette;
        alpha is dropped.

    Returns:
      np.uint8 array [H, W, channels].

    Raises:
      DataError: unreadable, truncated, empty or unsupported file.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels}")
    img = _open(path)
    if channels is None:
        channels = 1 if img.mode in _GRAY_MODES else 3
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
