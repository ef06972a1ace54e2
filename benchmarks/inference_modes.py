#!/usr/bin/env python3
"""Whole-image against tiled inference (and batch-norm statistics) on one split.

A model trained on small patches meets, when it predicts a whole image, contexts it never
trained on: this measures what that costs. For each mode it scores the split with the
dataset's headline metric at the threshold that is best *for that mode on this split*,
at the model's stored threshold, and with AUC (threshold-free):

    python benchmarks/inference_modes.py --model_dir=runs/drive-r2unet --split=validation \
        --tiles=48:24 --json=benchmarks/results/inference-modes-drive-r2unet.json

Run it on the validation split to choose a mode; a test-split run only reports.
`--batch_stats` adds a mode that normalises with the image's own batch-norm statistics
(training-mode batch norm, dropout off): a large gain there points at the moving
statistics, not at the weights.
"""

import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the r2u commands, before TF
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from r2u.inference import loading  # noqa: E402
from r2u.evaluation import evaluate  # noqa: E402
from r2u import files  # noqa: E402
from r2u.inference import network  # noqa: E402
from r2u.evaluation import operating_point  # noqa: E402
from r2u.evaluation import scoring  # noqa: E402

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training folder.", required=True)
_SPLIT = flags.DEFINE_string("split", "validation", "Split of MODEL_DIR/data to score.")
_TILES = flags.DEFINE_list("tiles", ["48:24"], "tile:stride pairs to compare.")
_BATCH_STATS = flags.DEFINE_bool("batch_stats", False, "Also normalise with each image's "
                                 "own batch-norm statistics.")
_JSON = flags.DEFINE_string("json", None, "Write the results here.")


def batch_stats_network(predictor):
    """Preprocessed [1, H, W, C] -> probabilities with training-mode batch norm, no dropout."""
    import tensorflow as tf
    from r2u.nn import models
    cfg = dataclasses.replace(predictor.model_cfg, dropout=0.0)
    net = models.build(cfg)
    tf.train.Checkpoint(model=net).read(predictor.path).expect_partial()

    def run(x):
        padded, size = network.pad_to_multiple(x, 2**cfg.depth)
        logits = net(padded, training=True)[:, :size[0], :size[1]]
        return tf.nn.softmax(logits)
    return run


def score_mode(predictor, examples, headline, predict):
    """The headline at every threshold (the best and the model's) and the pooled exact
    AUC, scored by `scoring.Scorer` as bin/evaluate scores."""
    sweep = operating_point.Sweep(headline)
    scorer = scoring.Scorer(predictor.threshold, exact_auc=True)
    start = time.perf_counter()
    for ex in examples:
        probs = predict(ex["image"])
        sweep.add(probs, ex["mask"], ex["fov"])
        scorer.add(ex["id"], probs, ex["mask"], ex["fov"])
    values = operating_point.curve(np.stack(sweep.images), headline)
    at = dict(zip(operating_point.THRESHOLDS, values))
    best = operating_point.choose(values)
    return {"best_threshold": best, "at_best": float(at[best]),
            "at_model_threshold": float(at[round(predictor.threshold, 2)]),
            "auc": scorer.result()["pooled"]["auc"],
            "seconds": time.perf_counter() - start}


def main(argv):
    del argv
    predictor = loading.load(_MODEL_DIR.value, "checkpoint")
    exp = predictor.experiment
    data_dir = os.path.join(_MODEL_DIR.value, "data")
    examples = list(evaluate.raw_examples(data_dir, _SPLIT.value))
    modes = {"whole": lambda im: predictor.predict_image(im)[..., 1]}
    for pair in _TILES.value:
        tile, stride = (int(v) for v in pair.split(":"))
        modes[f"tiled_{tile}_{stride}"] = (
            lambda im, t=tile, s=stride: predictor.predict_image(im, t, s)[..., 1])
    if _BATCH_STATS.value:
        net = batch_stats_network(predictor)
        modes["whole_batch_stats"] = lambda im: net(
            predictor.preprocess(im[None].astype(np.float32) / 255.0)).numpy()[0, ..., 1]
    results = {}
    for name, predict in modes.items():
        results[name] = score_mode(predictor, examples, exp.data.headline, predict)
        print(f"{name:24s} {exp.data.headline} {results[name]['at_best']:.4f} at "
              f"{results[name]['best_threshold']:.2f} ({results[name]['at_model_threshold']:.4f}"
              f" at the model's {predictor.threshold:.2f}), auc {results[name]['auc']:.4f},"
              f" {results[name]['seconds']:.0f} s", flush=True)
    if _JSON.value:
        out = {"model_dir": _MODEL_DIR.value, "split": _SPLIT.value, "step": predictor.step,
               "headline": exp.data.headline, "model_threshold": predictor.threshold,
               "num_images": len(examples), "modes": results}
        files.write_json(_JSON.value, out, indent=1)


if __name__ == "__main__":
    app.run(main)
