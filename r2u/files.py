"""Output files written safely: a temporary name renamed into place, and safe names.

Every file r2u writes (JSON records, manifests, shards, PNGs, probability maps) goes
through `replacing`: readers never see a half-written file, a failed write leaves the
old file as it was, and no temporary file stays behind.
"""

import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
import unicodedata
from typing import Iterator

import numpy as np

_KEEP = " -_.+"  # besides letters, marks and digits of any script
_MAX_NAME_BYTES = 180  # leaves room for suffixes within the usual 255-byte limit


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
    """Yields a new temporary name next to `path`, renamed to `path` on success.

    On any error the temporary file is removed and `path` is left untouched. A
    symbolic link at `path` is replaced itself rather than written through.
    """
    folder = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(folder, f".tmp-{os.getpid()}-{secrets.token_hex(6)}")
    try:
        yield temp
        os.replace(temp, path)
    finally:
        if os.path.lexists(temp):
            os.remove(temp)


def write_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `path` through `replacing`.

    Raises:
      OSError: naming `path` (not the temporary file) and the problem.
    """
    try:
        with replacing(path) as temp:
            with open(temp, "xb") as f:  # exclusive: never an existing file or link
                f.write(data)
    except OSError as e:
        raise OSError(f"{path}: cannot write ({e.strerror or e})") from e


def write_json(path: str, value, *, indent: int = 2, sort_keys: bool = True,
               allow_nan: bool = True, newline: bool = False) -> None:
    """Writes `value` as JSON to `path` atomically, formatted as `json.dumps` options
    say, with a trailing newline if `newline`. Nothing is written if `value` cannot be
    serialised."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan)
    write_atomic(path, (text + "\n" if newline else text).encode("utf-8"))


def write_png(path: str, pixels: np.ndarray) -> None:
    """Writes uint8 [H, W] or [H, W, C] pixels as a PNG file, atomically."""
    import tensorflow as tf  # here: the JSON writers (manifests) need no TensorFlow
    pixels = np.asarray(pixels, np.uint8)
    write_atomic(path, tf.io.encode_png(pixels[..., None] if pixels.ndim == 2
                                        else pixels).numpy())


def write_palette_png(path: str, labels: np.ndarray, palette) -> None:
    """Writes uint8 [H, W] class indices as a palette PNG, atomically: any tool reads the
    indices back as the classes, and viewers show `palette` ([(r, g, b)] per index)."""
    import io
    from PIL import Image  # Pillow: TensorFlow writes no palette PNG
    image = Image.fromarray(np.asarray(labels, np.uint8), mode="P")
    flat = [channel for colour in palette for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def ensure_writable_folder(folder: str) -> None:
    """Creates `folder` if needed and checks a file can be created in it.

    Lets a tool fail at once, in one line, rather than after its work (os.access would
    not do: it says yes to root, and knows nothing of immutable folders).

    Raises:
      OSError: naming `folder` and the problem.
    """
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSError(f"{folder}: output folder is not writable ({e.strerror or e})") \
            from e


def safe_name(text: str) -> str:
    """A file name made only of letters, digits, marks and ' -_.+', never '.' or '..'.

    Path separators, control and other odd characters become '_', runs of dots
    collapse, leading dots and trailing dots/spaces go; letters of any script stay.
    """
    text = unicodedata.normalize("NFC", text)
    out = "".join(c if c in _KEEP or unicodedata.category(c)[0] in "LMN" else "_"
                  for c in text)
    out = re.sub(r"\.{2,}", "_", out).lstrip(". ").rstrip(". ")
    while len(out.encode("utf-8")) > _MAX_NAME_BYTES:
        out = out[:-1]
    return out or "image"


def sha256(path: str) -> str:
    """Hex sha256 of a file's content (an in-place edit of the same size changes it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
