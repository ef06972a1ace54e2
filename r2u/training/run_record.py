"""What a training folder records about its run, and the checks before starting or
resuming it.

`ckpt/validation.json` holds the validated epochs (history, best record, last
validated step, whether training stopped early), `best.json` the best epoch's record
and `config.json` the experiment. Resuming reads them so a run killed at any point
continues to the same history, best checkpoint and export (`r2u.training.loop`).
"""

import json
import os
from typing import Dict

import tensorflow as tf
from absl import logging

from r2u import config as config_lib
from r2u.data import prepared


def validation_path(out_dir: str) -> str:
    return os.path.join(out_dir, "ckpt", "validation.json")


def read_validation(model_dir: str, step: int) -> Dict:
    """The chief's record of the epochs validated up to checkpoint `step`.

    For a model_dir written before there was a record: an empty history and best.json,
    as if `step` was validated.
    """
    path = validation_path(model_dir)
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
        if record["step"] <= step:
            return record
        logging.warning("%s is of step %d, after checkpoint step %d: not used", path,
                        record["step"], step)
    return {"step": step, "history": [], "best": best_record(model_dir), "stopped": False}


def best_record(model_dir: str) -> Dict:
    """The chief's best validation record so far ({} before any)."""
    path = os.path.join(model_dir, "best.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def check_resume(exp: config_lib.Experiment, model_dir: str, resume: bool,
                 resume_overrides: bool) -> None:
    """Refuses to overwrite a run without `resume`, or to change its config silently."""
    if not tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt")):
        return
    if not resume:
        raise FileExistsError(f"{model_dir} already holds checkpoints; pass resume=True "
                              "(--resume) to continue or use another model_dir")
    path = os.path.join(model_dir, "config.json")
    if resume_overrides or not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f)
    try:  # compared in today's layout: an older config.json holds the same run
        old = json.loads(config_lib.Experiment.from_dict(old).to_json())
    except (TypeError, ValueError, KeyError):
        pass  # not readable as an Experiment: every field that differs is named
    old, new = flatten(old), flatten(json.loads(exp.to_json()))
    changed = sorted(k for k in old.keys() | new.keys()
                     if old.get(k, "<absent>") != new.get(k, "<absent>")
                     and not k.startswith("inference."))  # training writes it at the end
    if changed:
        diffs = ", ".join(f"{k} {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
                          for k in changed)
        raise ValueError(f"{model_dir}: resuming with a configuration that differs from "
                         f"its config.json in {diffs}; resume with the same settings, or "
                         "pass resume_overrides=True (bin/train --allow_changed_config) "
                         "to continue with the new ones")


def flatten(tree: Dict, prefix: str = "") -> Dict:
    """{"train": {"steps": 3}} -> {"train.steps": 3}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def check_matches(exp: config_lib.Experiment, data: prepared.PreparedData) -> None:
    """Refuses a network whose head, or a headline whose kind, does not fit the data."""
    if exp.model.num_classes != data.num_classes:
        raise ValueError(f"{data.path}: the data has {data.num_classes} classes "
                         f"({', '.join(data.classes)}) but the model's head has "
                         f"num_classes={exp.model.num_classes}")
    if (exp.data.headline == "mean_dice") != (data.num_classes > 2):
        raise ValueError(f"headline {exp.data.headline!r} does not suit "
                         f"{data.num_classes} classes: binary datasets use pooled_f1 or "
                         "per_image_jaccard, K-class ones mean_dice")
