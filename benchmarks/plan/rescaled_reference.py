#!/usr/bin/env python3
"""What resampling alone costs in the scale test: the native DRIVE model's test
probabilities, resized to the 1.7x images' size (bilinear), scored against the 1.7x
labels (nearest-resized) at the native model's own threshold, pooled over the field of
view. The scaled run cannot be expected to beat this reference.

    benchmarks/plan/rescaled_reference.py --native=runs/drive-r2unet-60 \
        --scaled_data=runs/drive17-r2unet-60/data --out=benchmarks/results/plan-scale-reference.json
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from r2u import files  # noqa: E402
from r2u.data import prepared  # noqa: E402
from r2u.evaluation import scoring  # noqa: E402
from r2u.inference import loading  # noqa: E402

_NATIVE = flags.DEFINE_string("native", None, "The native run's folder.", required=True)
_SCALED = flags.DEFINE_string("scaled_data", None, "The prepared 1.7x data.",
                              required=True)
_OUT = flags.DEFINE_string("out", None, "Output JSON.", required=True)


def main(argv):
    del argv
    predictor = loading.load(_NATIVE.value)
    native = prepared.load(os.path.join(_NATIVE.value, "data"))
    scaled = prepared.load(_SCALED.value)
    scorer = scoring.Scorer(predictor.threshold)
    for small, large in zip(native.examples("test"), scaled.examples("test")):
        probs = predictor.predict_image(small["image"], fov=small["fov"])[..., 1:]
        probs = tf.image.resize(probs, large["mask"].shape).numpy()[..., 0]
        scorer.add(large["id"], probs, large["mask"], large["fov"])
    result = scorer.result()
    out = {"command": " ".join(sys.argv), "threshold": predictor.threshold,
           "pooled": {k: v for k, v in result["pooled"].items() if k != "counts"},
           "what": "native model, probabilities resized to the 1.7x test images, "
                   "scored on their labels and field of view"}
    files.write_json(_OUT.value, out, indent=1)
    print(f"native model scored at 1.7x: pooled F1 {out['pooled']['f1']:.4f}")


if __name__ == "__main__":
    app.run(main)
