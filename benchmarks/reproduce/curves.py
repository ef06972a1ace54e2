#!/usr/bin/env python3
"""Training curves of one or more runs as a small PNG, read from their TensorBoard logs.

    .venv/bin/python benchmarks/reproduce/curves.py --runs=runs/drive-r2unet,runs/drive-unet \
        --out=docs/results/drive-curves.png

One panel per scalar, against the step: the `--train_tags` (default the training loss)
logged under `<run>/tb/train`, then each of the `--validation_tags` (default dice, jaccard,
f1, auc; shell-style patterns such as `per_image_*` allowed) that `<run>/tb/validation`
holds; a tag no run logged is skipped, with a note. Panels have axis ticks, gridlines and
a legend naming each run, `--columns` to a row, 3x3 inches each at `--dpi` (900x300 px for
three panels at the default 100). A resumed run logs some steps twice; the last value
written for a step wins.

Needs matplotlib (benchmarks only; the library never imports it): `pip install matplotlib`.
"""

import fnmatch
import glob
import math
import os
import sys

try:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter
    from matplotlib.ticker import MaxNLocator
except ImportError:
    matplotlib = None
MISSING_MATPLOTLIB = ("curves.py needs matplotlib, which is not installed: "
                      "pip install 'matplotlib>=3.8' (the r2u[benchmarks] extra)")
if matplotlib is None and __name__ == "__main__":
    sys.exit(MISSING_MATPLOTLIB)  # one line, before the slow TensorFlow import

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # no INFO lines per event file
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the r2u commands, before TF
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import tensorflow as tf  # noqa: E402

from r2u import files  # noqa: E402

_RUNS = flags.DEFINE_list("runs", None, "Training folders (model_dir).", required=True)
_OUT = flags.DEFINE_string("out", None, "PNG to write.", required=True)
_LABELS = flags.DEFINE_list("labels", None, "Legend names of the runs, in --runs order "
                            "(default: each folder's name).")
_TRAIN_TAGS = flags.DEFINE_list("train_tags", ["loss"], "Scalars of tb/train to plot.")
_VALIDATION_TAGS = flags.DEFINE_list(
    "validation_tags", ["dice", "jaccard", "f1", "auc"],
    "Scalars of tb/validation to plot, in this order; fnmatch patterns allowed; tags "
    "no run logged are skipped.")
_COLUMNS = flags.DEFINE_integer("columns", 3, "Panels per row.", lower_bound=1)
_DPI = flags.DEFINE_integer("dpi", 100, "Pixels per inch; a panel is 3x3 inches.",
                            lower_bound=20)

PANEL_INCHES = 3.0
PHASE_TITLES = {"train": "training", "validation": "validation"}


def read_scalars(run_dir: str, phase: str) -> dict:
    """{tag: [(step, value)] sorted by step} of `run_dir/tb/<phase>`; images are skipped.

    The value written last (by the event's wall time) wins when a resumed run logs a step
    again; file names cannot order writers opened in the same second (their counters
    sort as strings).
    """
    by_tag = {}  # tag -> step -> (wall time, value)
    for path in glob.glob(os.path.join(run_dir, "tb", phase, "events.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                scalar = _scalar(value)
                if scalar is None:
                    continue
                steps = by_tag.setdefault(value.tag, {})
                if event.wall_time >= steps.get(event.step, (-1.0, None))[0]:
                    steps[event.step] = (event.wall_time, scalar)
    return {tag: sorted((step, v) for step, (_, v) in steps.items())
            for tag, steps in by_tag.items()}


def _scalar(value):
    """The float of a scalar summary value (TF1 simple_value or TF2 tensor), else None."""
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor"):
        array = tf.make_ndarray(value.tensor)
        if array.ndim == 0 and array.dtype.kind in "fiu":
            return float(array)
    return None


def select_tags(patterns, present) -> list:
    """The present tags matching `patterns`, in pattern order, each once."""
    chosen = []
    for pattern in patterns:
        for tag in sorted(present):
            if fnmatch.fnmatchcase(tag, pattern) and tag not in chosen:
                chosen.append(tag)
    return chosen


def run_labels(runs, labels=None) -> list:
    """Legend names: `labels`, else the folder names, lengthened until they differ."""
    if labels:
        if len(labels) != len(runs):
            raise app.UsageError(f"--labels has {len(labels)} names for {len(runs)} runs")
        return list(labels)
    parts = [os.path.normpath(os.path.abspath(run)).split(os.sep) for run in runs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return names


def plot(panels, labels, out: str, columns: int = 3, dpi: int = 100) -> None:
    """Writes `panels`, [(title, [series per run: [(step, value)]])], as one PNG."""
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows), dpi=dpi,
                    layout="constrained")
    FigureCanvasAgg(figure)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    steps = [s for _, series in panels for points in series for s, _ in points] or [0]
    pad = 0.03 * max(max(steps) - min(steps), 1)
    for ax, (title, series) in zip(axes, panels):
        for i, (label, points) in enumerate(zip(labels, series)):
            colour = colours[i % len(colours)]
            if not points:  # keeps the run's colour and says why it has no line
                ax.plot([], [], color=colour, label=f"{label} (not logged)")
                continue
            ax.plot(*zip(*points), color=colour, label=label, linewidth=1.2,
                    marker="o" if len(points) <= 30 else None, markersize=3)
        ax.set_xlim(min(steps) - pad, max(steps) + pad)  # one step range for all panels
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20000 -> 20k
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", linewidth=0.5, alpha=0.5)
        ax.legend(fontsize=7, loc="best", frameon=True, framealpha=0.8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with files.replacing(out) as temp:
        figure.savefig(temp, format="png", pil_kwargs={"optimize": True})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if matplotlib is None:
        sys.exit(MISSING_MATPLOTLIB)
    runs = _RUNS.value
    labels = run_labels(runs, _LABELS.value)
    logs = {phase: [read_scalars(run, phase) for run in runs] for phase in PHASE_TITLES}
    for run, *phases in zip(runs, *logs.values()):
        if not any(phases):
            sys.exit(f"curves.py: no scalars under {os.path.join(run, 'tb')}")
    panels = []
    for phase, patterns in (("train", _TRAIN_TAGS.value),
                            ("validation", _VALIDATION_TAGS.value)):
        present = set().union(*logs[phase])
        tags = select_tags(patterns, present)
        missing = [p for p in patterns if not select_tags([p], present)]
        if missing:
            print(f"skipped {phase} tags no run logged: {', '.join(missing)} "
                  f"(logged: {', '.join(sorted(present)) or 'none'})")
        panels += [(f"{PHASE_TITLES[phase]} {tag}", [log.get(tag, []) for log in logs[phase]])
                   for tag in tags]
    if not panels:
        sys.exit("curves.py: none of the requested tags is in the logs")
    plot(panels, labels, _OUT.value, _COLUMNS.value, _DPI.value)
    print(f"wrote {_OUT.value} ({len(panels)} panels: "
          f"{', '.join(title for title, _ in panels)})")


if __name__ == "__main__":
    app.run(main)
