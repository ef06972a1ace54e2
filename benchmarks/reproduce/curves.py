#!/usr/bin/env python3
"""Training curves of one or more runs as a small PNG, read from their TensorBoard logs.

    .venv/bin/python benchmarks/reproduce/curves.py --runs=runs/drive-r2unet,runs/drive-unet \
        --out=docs/results/drive-curves.png

Panels: training loss, validation Dice and validation AUC against the step. Pillow draws
it, so the README's figure needs no plotting library. A resumed run logs some steps twice;
the last value written for a step wins.
"""

import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

import r2u  # noqa: E402,F401  (before TensorFlow: its oneDNN default)
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from PIL import Image  # noqa: E402
from PIL import ImageDraw  # noqa: E402
import tensorflow as tf  # noqa: E402

_RUNS = flags.DEFINE_list("runs", None, "Training folders (model_dir).", required=True)
_OUT = flags.DEFINE_string("out", None, "PNG to write.", required=True)
PANELS = (("train", "loss", "training loss"), ("validation", "dice", "validation Dice"),
          ("validation", "auc", "validation AUC"))
COLOURS = ((200, 40, 40), (40, 90, 200), (30, 150, 60), (160, 60, 170))
PANEL_W, PANEL_H, MARGIN = 300, 220, 36


def scalars(run_dir: str, split: str, tag: str) -> list:
    """[(step, value)] sorted by step; the last value written for a step wins."""
    by_step = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "tb", split, "events.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    by_step[event.step] = float(tf.make_ndarray(value.tensor))
    return sorted(by_step.items())


def draw_panel(draw, left, top, title, series):
    x0, y0 = left + MARGIN, top + 20
    x1, y1 = left + PANEL_W - 8, top + PANEL_H - 24
    points = [p for _, _, pts in series for p in pts]
    draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    draw.text((x0, top + 4), title, fill=(0, 0, 0))
    if not points:
        return
    smax = max(s for s, _ in points) or 1
    vmin, vmax = min(v for _, v in points), max(v for _, v in points)
    vmax = vmax if vmax > vmin else vmin + 1e-6
    for colour, _, pts in series:
        xy = [(x0 + (x1 - x0) * s / smax, y1 - (y1 - y0) * (v - vmin) / (vmax - vmin))
              for s, v in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        elif xy:
            draw.ellipse([xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2], fill=colour)
    draw.text((left + 2, y0), f"{vmax:.3g}", fill=(0, 0, 0))
    draw.text((left + 2, y1 - 10), f"{vmin:.3g}", fill=(0, 0, 0))
    draw.text((x1 - 40, y1 + 4), f"step {smax}", fill=(0, 0, 0))


def main(argv):
    del argv
    image = Image.new("RGB", (PANEL_W * len(PANELS), PANEL_H + 16), "white")
    draw = ImageDraw.Draw(image)
    for i, (split, tag, title) in enumerate(PANELS):
        series = [(COLOURS[j % len(COLOURS)], run, scalars(run, split, tag))
                  for j, run in enumerate(_RUNS.value)]
        draw_panel(draw, i * PANEL_W, 0, title, series)
    for j, run in enumerate(_RUNS.value):  # legend
        draw.text((MARGIN + 160 * j, PANEL_H), os.path.basename(os.path.normpath(run)),
                  fill=COLOURS[j % len(COLOURS)])
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    tmp = _OUT.value + ".tmp.png"
    image.save(tmp, optimize=True)
    os.replace(tmp, _OUT.value)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
