"""Smoke test of benchmarks/inference_modes.py: its JSON layout, and its AUC against a
NumPy count of pairs."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from r2u.inference import loading
from r2u import config
from r2u.evaluation import evaluate
from r2u.nn import models
from r2u.data import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODE_KEYS = {"best_threshold", "at_best", "at_model_threshold", "auc", "seconds"}


def untrained_model_dir(parent):
    """A training folder as inference_modes reads it: config.json, best/ and data/."""
    exp = config.synthetic()  # RGB lesions, per-image Jaccard headline
    exp = config.Experiment(
        model=config.ModelConfig(arch="unet", in_channels=3, filters=4, depth=2),
        data=exp.data, train=exp.train)
    with open(os.path.join(parent, "config.json"), "w") as f:
        f.write(exp.to_json())
    ckpt = tf.train.Checkpoint(model=models.build(exp.model),
                               step=tf.Variable(3, dtype=tf.int64))
    tf.train.CheckpointManager(ckpt, os.path.join(parent, "best"), 1).save()
    prepare.prepare("synthetic", None, os.path.join(parent, "data"), image_size=32,
                    limit=6)
    return parent


def pairs_auc(pos, neg):
    """P(positive > negative) + P(equal) / 2 over every pair, in float64."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    return float(np.mean(pos[:, None] > neg[None, :])
                 + 0.5 * np.mean(pos[:, None] == neg[None, :]))


class InferenceModesTest(tf.test.TestCase):

    def test_writes_every_mode_with_its_scores_and_the_exact_auc(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        model_dir = untrained_model_dir(folder)
        out = os.path.join(folder, "modes.json")
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", "inference_modes.py"),
             f"--model_dir={model_dir}", "--split=validation", "--tiles=16:8",
             "--batch_stats", f"--json={out}"],
            capture_output=True, text=True, timeout=600, check=False)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        with open(out) as f:
            result = json.load(f)
        self.assertEqual(set(result), {"model_dir", "split", "step", "headline",
                                       "model_threshold", "num_images", "modes"})
        self.assertEqual(result["step"], 3)
        self.assertEqual(set(result["modes"]), {"whole", "tiled_16_8", "whole_batch_stats"})
        for name, mode in result["modes"].items():
            self.assertEqual(set(mode), MODE_KEYS, name)
            self.assertGreaterEqual(mode["at_best"], mode["at_model_threshold"], name)
        predictor = loading.load(model_dir, "checkpoint")
        pos, neg = [], []
        examples = list(evaluate.raw_examples(os.path.join(model_dir, "data"),
                                                "validation"))
        self.assertLen(examples, result["num_images"])
        for ex in examples:
            probs = predictor.predict_image(ex["image"])[..., 1]
            inside, truth = ex["fov"] > 0, ex["mask"] > 0
            pos.append(probs[inside & truth])
            neg.append(probs[inside & ~truth])
        self.assertAllClose(result["modes"]["whole"]["auc"],
                            pairs_auc(np.concatenate(pos), np.concatenate(neg)),
                            rtol=0, atol=1e-9)


if __name__ == "__main__":
    tf.test.main()
