"""Built-in synthetic segmentation datasets (numpy only, download-free).

Two kinds of images are generated, each paired with its ground truth:

* ``"lesion"``: a dermoscopy-like picture. Skin-toned background with smooth
  texture, vignetting and optional hairs; one darker, browner lesion with an
  irregular fuzzy border and internal texture. The mask is the lesion and the
  field of view (FOV) is the whole image.
* ``"vessels"``: a fundus-like picture. A reddish disc (the FOV) on black, a
  bright optic disc and a vessel tree branching out of it with widths
  tapering from about 4 to 1 px, darker than the background (most in green),
  under an illumination gradient and noise. The mask is the vessels.

Examples follow the data contract of ``r2u.data``: dicts with ``id``,
``image`` (uint8 [H, W, 3]), ``mask`` and ``fov`` (uint8 [H, W] in {0, 1}).
Every example is drawn from its own generator seeded by
(seed, kind, split, index), so a stream is reproducible, independent of how
many examples are requested, and different across splits.
"""

from collections.abc import Iterator
import zlib

import numpy as np

KINDS = ("lesion", "vessels")
_STEP = 0.7  # Spacing in px of the discs that draw a vessel.


def examples(
    kind: str, split: str, num: int, size: int, seed: int = 0
) -> Iterator[dict]:
    """Yields `num` synthetic examples.

    Args:
        kind: "lesion" or "vessels".
        split: split name; it is mixed into the seed so splits differ.
        num: number of examples.
        size: height and width of the square images, at least 16.
        seed: base seed.

    Yields:
        Dicts {"id": str, "image": uint8 [size, size, 3],
        "mask": uint8 [size, size], "fov": uint8 [size, size]}.

    Raises:
        ValueError: on an unknown kind, a negative `num` or a too small `size`.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown synthetic kind {kind!r}; expected one of {KINDS}.")
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}.")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}.")
    make = _lesion if kind == "lesion" else _vessels
    # crc32, unlike hash(), is stable across Python processes.
    base = [seed, zlib.crc32(kind.encode()), zlib.crc32(split.encode())]
    for index in range(num):
        rng = np.random.default_rng(base + [index])
        image, mask, fov = make(rng, size)
        yield {
            "id": f"{kind}-{split}-{index:05d}",
            "image": image,
            "mask": mask,
            "fov": fov,
        }


def _smooth_noise(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Value noise in [-1, 1]: a random grid of `cell`-px cells, bilinear."""
    n = int(np.ceil(size / cell)) + 2
    grid = rng.uniform(-1.0, 1.0, (n, n))
    pos = np.arange(size) / cell + rng.uniform(0.0, 1.0)
    i0 = np.floor(pos).astype(int)
    t = pos - i0
    rows = grid[i0] * (1 - t)[:, None] + grid[i0 + 1] * t[:, None]
    return rows[:, i0] * (1 - t) + rows[:, i0 + 1] * t


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _lesion(rng: np.random.Generator, size: int):
    """One dermoscopy-like image, its lesion mask and an all-ones FOV."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    skin = np.array([222.0, 172.0, 146.0]) + rng.normal(0, 12, 3)
    texture = 0.6 * _smooth_noise(rng, size, size / 4) + 0.4 * _smooth_noise(
        rng, size, size / 16
    )
    image = skin * (1 + 0.06 * texture[..., None])
    # A radius that wobbles with the angle gives an irregular border.
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    aspect = rng.uniform(0.7, 1.3)
    dy, dx = (yy - cy) * aspect, (xx - cx) / aspect
    dist, angle = np.hypot(dy, dx), np.arctan2(dy, dx)
    border = np.ones_like(angle)
    for k in range(2, 7):
        phase = rng.uniform(0, 2 * np.pi)
        border += rng.uniform(0, 0.44 / k) * np.cos(k * angle + phase)
    border *= rng.uniform(0.1, 0.28) * size
    border *= 1 + 0.08 * _smooth_noise(rng, size, size / 8)
    alpha = 1 / (1 + np.exp(-(border - dist) / rng.uniform(0.8, 2.5)))
    mask = (dist <= border).astype(np.uint8)
    brown = np.array([120.0, 72.0, 52.0]) * rng.uniform(0.7, 1.25)
    brown += rng.normal(0, 10, 3)
    inner = _smooth_noise(rng, size, size / 10)
    dots = np.clip(_smooth_noise(rng, size, size / 24), 0.4, 1) - 0.4
    # Darker towards the centre, mottled, with dark dots.
    core = 1 - 0.25 * np.clip(1 - dist / np.maximum(border, 1), 0, 1)
    lesion = brown * (core * (1 + 0.18 * inner) - 0.6 * dots)[..., None]
    image = image * (1 - alpha[..., None]) + lesion * alpha[..., None]
    if rng.uniform() < 0.5:
        image = _hairs(rng, image, size, int(rng.integers(1, 5)))
    radial = np.hypot(yy - size / 2, xx - size / 2) / (0.71 * size)
    image *= (1 - rng.uniform(0.1, 0.35) * radial**2)[..., None]
    image += rng.normal(0, 4, image.shape)
    return _to_uint8(image), mask, np.ones((size, size), np.uint8)


def _hairs(rng: np.random.Generator, image: np.ndarray, size: int, num: int):
    """Darkens `num` thin quadratic Bezier curves, like hairs on the skin."""
    t = np.linspace(0, 1, 4 * size)[:, None]
    for _ in range(num):
        p0, p1, p2 = rng.uniform(-0.1, 1.1, (3, 2)) * size
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        pts = np.rint(pts).astype(int)
        keep = np.all((pts >= 0) & (pts < size), axis=1)
        rows, cols = pts[keep, 0], pts[keep, 1]
        image[rows, cols] *= rng.uniform(0.25, 0.5)
    return image


def _vessels(rng: np.random.Generator, size: int):
    """One fundus-like image, its vessel mask and the circular FOV."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    centre = size / 2 + rng.normal(0, 0.01 * size, 2)
    fov_radius = size * rng.uniform(0.44, 0.48)
    radial = np.hypot(yy - centre[0], xx - centre[1]) / fov_radius
    fov = radial <= 1
    side = rng.choice([-1.0, 1.0])  # Optic disc on the left or the right.
    disc = centre + size * np.array(
        [rng.normal(0, 0.04), side * rng.uniform(0.2, 0.3)]
    )
    light = 1 - 0.35 * radial**2 + rng.uniform(0.1, 0.3) * (
        (yy - centre[0]) * rng.normal() + (xx - centre[1]) * rng.normal()
    ) / size
    light *= 1 + 0.05 * _smooth_noise(rng, size, size / 6)
    image = np.array([170.0, 78.0, 38.0]) * rng.uniform(0.8, 1.2, 3)
    image = image * light[..., None]
    glow = np.hypot(yy - disc[0], xx - disc[1]) ** 2 / (2 * (0.05 * size) ** 2)
    image += np.array([70.0, 80.0, 40.0]) * np.exp(-glow)[..., None]
    temporal = np.pi if side > 0 else 0.0
    stamps = _vessel_tree(rng, size, disc, temporal, centre, fov_radius)
    mask, depth = _rasterise(stamps, size)
    # Green loses most contrast on vessels, as in real fundus photographs.
    image *= 1 - depth[..., None] * np.array([0.28, 0.5, 0.35])
    image += rng.normal(0, 3, image.shape)
    image *= fov[..., None]
    mask &= fov
    return _to_uint8(image), mask.astype(np.uint8), fov.astype(np.uint8)


def _vessel_tree(rng, size, disc, temporal, centre, fov_radius) -> np.ndarray:
    """Grows a random branching tree rooted at the optic disc.

    Four arcades leave the disc (two arching towards the temporal side, two
    nasal); every segment ends in two thinner children until the width
    reaches 1 px or the walk leaves the FOV.

    Returns:
        Float array [N, 3] of disc stamps (y, x, width in px).
    """
    scale = size / 96.0
    roots = [
        (temporal - 1.1, 0.012), (temporal + 1.1, -0.012),
        (temporal + np.pi - 0.7, 0.0), (temporal + np.pi + 0.7, 0.0),
    ]
    stack = [
        (disc[0], disc[1], angle + rng.normal(0, 0.15), bend, rng.uniform(3.2, 4.2), 0)
        for angle, bend in roots
    ]
    stamps = []
    while stack:
        y, x, angle, bend, width, level = stack.pop()
        n = int(rng.uniform(14, 32) * scale / _STEP)
        turns = (bend / scale + rng.normal(0, 0.004)) * _STEP + rng.normal(
            0, 0.03, n
        ) * np.sqrt(_STEP)
        angles = angle + np.cumsum(turns)
        ys = y + np.cumsum(_STEP * np.sin(angles))
        xs = x + np.cumsum(_STEP * np.cos(angles))
        widths = np.maximum(width * (1 - 0.003 * _STEP / scale) ** np.arange(n), 1.0)
        outside = np.hypot(ys - centre[0], xs - centre[1]) > fov_radius + 2
        end = int(np.argmax(outside)) if outside.any() else n
        stamps.append(np.stack([ys[:end], xs[:end], widths[:end]], axis=1))
        if end == n and level < 4 and widths[-1] > 1.05:
            for sign in (-1.0, 1.0):
                child = max(widths[-1] * rng.uniform(0.6, 0.85), 1.0)
                turn = sign * rng.uniform(0.35, 0.8)
                stack.append(
                    (ys[-1], xs[-1], angles[-1] + turn, bend, child, level + 1)
                )
    return np.concatenate(stamps, axis=0)


def _rasterise(stamps: np.ndarray, size: int):
    """Draws disc stamps into a mask and a soft darkening map.

    Returns:
        (mask bool [size, size], depth float [size, size] in [0, 1]); depth is
        how strongly a pixel is darkened: wide vessels are darker and the
        profile falls off smoothly towards the vessel edge.
    """
    ys, xs, widths = stamps[:, :1], stamps[:, 1:2], stamps[:, 2:]
    radius = np.maximum(widths / 2, 0.6)
    dy, dx = np.mgrid[-3:4, -3:4].reshape(2, 1, -1)  # A 7x7 window per stamp.
    rows, cols = np.rint(ys) + dy, np.rint(xs) + dx  # [N, 49]
    d2 = (rows - ys) ** 2 + (cols - xs) ** 2
    strength = 0.55 + 0.45 * np.minimum(widths / 4.0, 1.0)
    profile = strength * np.exp(-d2 / (2 * (0.75 * radius + 0.25) ** 2))
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    flat = (rows * size + cols).astype(np.int64)
    mask = np.zeros(size * size, bool)
    mask[flat[inside & (d2 <= radius**2)]] = True
    depth = np.zeros(size * size)
    np.maximum.at(depth, flat[inside], profile[inside])
    return mask.reshape(size, size), depth.reshape(size, size)
