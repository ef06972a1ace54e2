#!/usr/bin/env python3
"""The plan's scale test: DRIVE served at 1.7x its size, trained with the plan's
defaults and the same budget as native DRIVE, scored at 1.7x, against native DRIVE.

    benchmarks/folders.py drive /tmp/folders/drive
    benchmarks/folders.py drive /tmp/folders/drive17 --scale=1.7
    benchmarks/plan/run.sh drive-r2unet-60 /tmp/folders/drive 60
    benchmarks/plan/run.sh drive17-r2unet-60 /tmp/folders/drive17 60
    benchmarks/plan/scale.py benchmarks/results/drive-r2unet-60.json \
        benchmarks/results/drive17-r2unet-60.json benchmarks/results/plan-scale-drive.json
"""

import json
import sys


def block(path: str) -> dict:
    with open(path) as f:
        run = json.load(f)
    return {"result": path, "command": run.get("command"),
            "train_seconds": run["train_seconds"], "steps": run["steps"],
            "plan": run["plan"]["plan"], "inference": run.get("inference"),
            "evaluation": run["evaluation"]}


def main(argv):
    if len(argv) != 4:
        sys.exit(f"usage: {argv[0]} NATIVE.json SCALED.json OUT.json")
    native, scaled = block(argv[1]), block(argv[2])
    gap = scaled["evaluation"]["pooled"]["f1"] - native["evaluation"]["pooled"]["f1"]
    out = {"native": native, "scaled": scaled, "scaled_minus_native_pooled_f1": gap,
           "target": "scaled within 0.01 of native pooled F1"}
    with open(argv[3], "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    print(f"native {native['evaluation']['pooled']['f1']:.4f}, scaled "
          f"{scaled['evaluation']['pooled']['f1']:.4f} ({gap:+.4f}); wrote {argv[3]}")


if __name__ == "__main__":
    main(sys.argv)
