"""The inference mode and operating point, chosen on validation images after training.

Which mode predicts better depends on the data: on DRIVE whole images and 48-px tiles
agree, on another fundus set tiles won by 0.12 F1. So each candidate the plan names
(whole images; sliding windows of the training patch, Gaussian-weighted) predicts the
validation split as the export will (raw images, resampled and back, scored at their
own resolution), binary models get their threshold for that mode by the headline
metric, and the best mode wins. Sliding windows cost several whole-image passes, so
they must win by `MARGIN`, more than the noise of a few validation images. Test
images play no part.
"""

import dataclasses
from typing import Dict, List

import numpy as np
import tensorflow as tf
from absl import logging

from r2u import config as config_lib
from r2u.evaluation import classes as classes_lib
from r2u.evaluation import operating_point
from r2u.data import preprocess
from r2u.inference import export

MARGIN = 0.005  # a dearer mode must beat whole images by this much


def candidates(inference: config_lib.InferenceConfig) -> List[Dict]:
    """The modes to try: whole images, and sliding windows when a window is planned."""
    modes = [{"mode": "whole", "window": None}]
    if inference.window:
        modes.append({"mode": "sliding_window", "window": inference.window})
    return modes


def choose(model, exp: config_lib.Experiment, examples: List[Dict],
           classes) -> Dict:
    """The best candidate on `examples` (raw validation images as
    `evaluate.raw_examples` yields them): {"mode", "window", "threshold", "score",
    "tried": [...]} with `threshold` None for K classes."""
    tried = []
    for candidate in candidates(exp.inference):
        spec = export.InputSpec.of(dataclasses.replace(exp, inference=dataclasses.replace(
            exp.inference, **candidate))).for_model(model.cfg)
        score, threshold = _score(model, spec, examples, classes, exp.data.headline)
        tried.append({**candidate, "score": score, "threshold": threshold})
        logging.info("validation, %s%s: %s %.4f%s", candidate["mode"],
                     f" {candidate['window']} px" if candidate["window"] else "",
                     exp.data.headline, score,
                     "" if threshold is None else f" at threshold {threshold:.2f}")
    best = tried[0]  # whole images
    for other in tried[1:]:
        if other["score"] > best["score"] + MARGIN:
            best = other
    return {**best, "tried": tried}


def _score(model, spec: export.InputSpec, examples, classes, headline: str):
    """(headline score, threshold or None) of one mode on the examples."""
    binary = len(classes) == 2
    sweep = operating_point.Sweep(headline) if binary else None
    scorer = None if binary else classes_lib.Scorer(classes)
    for ex in examples:
        image = np.asarray(ex["image"], np.float32)[None] / 255.0
        fov = np.asarray(ex["fov"], np.float32)[None] if spec.needs_fov else None
        image = preprocess.to_channels(tf.constant(image), model.cfg.in_channels)
        probs = export.probabilities(model, image, spec, fov)
        probs = probs.numpy()[0]
        if binary:
            sweep.add(probs[..., 1], ex["mask"], ex["fov"])
        else:
            scorer.add(ex["id"], probs, ex["mask"], ex["fov"])
    if binary:
        point = sweep.result()
        return point["best"], point["threshold"]
    score = scorer.result()["pooled"]["dice"]
    return (score if np.isfinite(score) else -1.0), None



def settle(model, exp: config_lib.Experiment, data):
    """(exp, choice): after training, `exp` with the mode, window and threshold chosen
    on `data`'s validation split, or as it is (choice None) when there is nothing to
    choose: one mode and images seen at their own size by the epochs' validations."""
    resampled = bool(exp.data.scale and exp.data.scale != 1) or (
        exp.data.dataset == "folder" and exp.data.image_size is not None)
    if len(candidates(exp.inference)) == 1 and not resampled:
        return exp, None
    chosen = choose(model, exp, list(data.examples("validation")), data.classes)
    return dataclasses.replace(exp, inference=dataclasses.replace(
        exp.inference, mode=chosen["mode"], window=chosen["window"],
        threshold=chosen["threshold"])), chosen
