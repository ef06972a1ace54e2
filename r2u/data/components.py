"""Connected components of a binary mask, by horizontal runs (NumPy only).

A mask is read as runs of True per row. Two runs of neighbouring rows touch when
they overlap (4-connectivity) or also meet at a corner (8-connectivity,
`diagonal=True`). The touching pairs of all rows are found at once with
`searchsorted`, and merged by pointer jumping: each component ends up labelled by
its first run in raster order, so labels are deterministic. Work grows with the
number of runs, not pixels, and no Python loop visits a run.
"""

import numpy as np


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in a bool [H, W] mask, in raster order.

    Returns:
      (rows, starts, ends): int64 [N] each; `ends` are exclusive.
    """
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def _touching(rows, starts, ends, diagonal: bool) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) run indices of every touching pair in neighbouring rows."""
    slack = int(diagonal)
    # Keys that order runs by (row, column) in one sorted line; the stride keeps
    # the columns of a row (and the slack around them) clear of the next row.
    stride = int(ends.max(initial=0)) + 4
    above = (rows - 1) * stride
    # Runs i of row r - 1 touching run j of row r: ends[i] + slack > starts[j]
    # and starts[i] < ends[j] + slack; they are consecutive in raster order.
    first = np.searchsorted(rows * stride + ends, above + starts - slack, "right")
    last = np.searchsorted(rows * stride + starts, above + ends + slack, "left")
    counts = np.maximum(last - first, 0)
    lower = np.repeat(np.arange(rows.size), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(first, counts) + offsets, lower


def run_labels(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray,
               diagonal: bool) -> np.ndarray:
    """Component of each run: the index of the component's first run (int64 [N]).

    Args:
      rows, starts, ends: runs in raster order, as `runs` returns them.
      diagonal: whether runs meeting only at a corner connect (8-connectivity).
    """
    parent = np.arange(rows.size)
    upper, lower = _touching(rows, starts, ends, diagonal)
    while upper.size:
        a, b = parent[upper], parent[lower]
        apart = a != b
        upper, lower, a, b = upper[apart], lower[apart], a[apart], b[apart]
        if not upper.size:
            break
        # Hook roots onto the smallest root they touch: pointers only go down,
        # so no cycle forms and the first run of a component ends as its root.
        np.minimum.at(parent, np.maximum(a, b), np.minimum(a, b))
        while True:  # Jump pointers until every run points at its root.
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def paint(shape: tuple[int, int], rows: np.ndarray, starts: np.ndarray,
          ends: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """Paints runs onto an [H, W] plane: bool, or int64 `values` per run."""
    edges = np.zeros((shape[0], shape[1] + 1), np.int64)
    fill = np.ones(rows.size, np.int64) if values is None else values
    # Runs of a row are disjoint and separated, so no two edges share a cell.
    edges[rows, starts] = fill
    edges[rows, ends] = -fill
    out = np.cumsum(edges, axis=1)[:, :-1]
    return out > 0 if values is None else out


def label(mask: np.ndarray, diagonal: bool) -> tuple[np.ndarray, int]:
    """Labels the connected components of a bool [H, W] mask.

    Args:
      mask: bool [H, W].
      diagonal: True for 8-connectivity, False for 4-connectivity.

    Returns:
      (labels, count): int32 [H, W] with 0 for background and 1..count for the
      components, numbered in raster order of their first pixel.
    """
    mask = np.asarray(mask, bool)
    rows, starts, ends = runs(mask)
    roots = run_labels(rows, starts, ends, diagonal)
    # Roots are first runs, so sorted roots number components in raster order.
    unique, numbers = np.unique(roots, return_inverse=True)
    labels = paint(mask.shape, rows, starts, ends, numbers.astype(np.int64) + 1)
    return labels.astype(np.int32), int(unique.size)


def areas(mask: np.ndarray, diagonal: bool) -> np.ndarray:
    """Pixel counts of the components of a bool [H, W] mask (int64, raster order)."""
    rows, starts, ends = runs(np.asarray(mask, bool))
    roots = run_labels(rows, starts, ends, diagonal)
    _, numbers = np.unique(roots, return_inverse=True)
    return np.bincount(numbers, weights=ends - starts).astype(np.int64)
