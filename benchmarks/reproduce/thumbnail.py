#!/usr/bin/env python3
"""Shrinks a `bin/evaluate` figure for the README: `--scale`d, 64 colours, and with
`--detail` a 200x200 crop at full resolution from each of its four panels.

    python benchmarks/reproduce/thumbnail.py runs/drive-r2unet/figures/01_test.png \
        docs/results/drive-r2unet-01_test.png --detail=200,150
"""

import argparse
import os

from PIL import Image


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure")
    parser.add_argument("out")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--detail", help="X,Y of the crop inside each panel")
    args = parser.parse_args()
    image = Image.open(args.figure).convert("RGB")
    width, height = image.size
    small = image.resize((round(width * args.scale), round(height * args.scale)),
                         Image.LANCZOS)
    small.quantize(64).save(args.out, optimize=True)
    if args.detail:
        x, y = (int(v) for v in args.detail.split(","))
        panel = width // 4
        detail = Image.new("RGB", (800, 200))
        for i in range(4):
            detail.paste(image.crop((i * panel + x, y, i * panel + x + 200, y + 200)),
                         (200 * i, 0))
        stem, ext = os.path.splitext(args.out)
        detail.quantize(64).save(f"{stem}-detail{ext}", optimize=True)


if __name__ == "__main__":
    main()
