"""The end of a training epoch: validation, the best checkpoint and the run's record."""

import os
from typing import Dict

import numpy as np

from absl import logging

from r2u import config as config_lib
from r2u import files
from r2u.data import prepared
from r2u.evaluation import validation
from r2u.inference import network
from r2u.training import distribute
from r2u.training import faults
from r2u.training import run_record
from r2u.training import summaries


class Epochs:
    """Ends epochs: validation, the best checkpoint, and the record of both.

    `ckpt/validation.json` (the history, the best record, the last validated step and
    whether training stopped early) is written last, in one rename, after the latest
    checkpoint, the validation and the best checkpoint of the epoch. A run killed
    anywhere in between resumes from the record of the previous epoch, and the host
    loop validates the restored checkpoint again (`r2u.training.loop`).
    """

    def __init__(self, exp, state, plain, data, model_dir, out_dir, best, strategy):
        self.exp, self.state, self.plain, self.data = exp, state, plain, data
        self.out_dir, self.best, self.strategy = out_dir, best, strategy
        self.predict = network.network_fn(plain)  # probabilities [1, H, W, K]
        self.writers = summaries.Writers(out_dir)
        self.done = run_record.read_validation(model_dir, int(state.step.numpy()))
        if not self.done["step"]:  # a fresh run: its record exists from the start
            os.makedirs(os.path.dirname(run_record.validation_path(out_dir)), exist_ok=True)
            files.write_json(run_record.validation_path(out_dir), self.done)
        # Saving is collective: every worker must take the chief's decisions.
        self.best_score = float(distribute.from_chief(
            strategy, [self.done["best"].get("score", -1.0)])[0])

    def end(self, done: int, epoch: int, progress: summaries.Progress) -> None:
        distribute.copy_variables(self.state.model, self.plain)
        record = validate(self.exp, self.state, self.data, self.writers, epoch,
                          self.predict)
        record["score"] = float(distribute.from_chief(self.strategy, [record["score"]])[0])
        faults.point("after_validation")
        history, best = self.done["history"] + [record], self.done["best"]
        if record["score"] > self.best_score:
            self.best_score, best = record["score"], record
            self.best.save(checkpoint_number=done)
            files.write_json(os.path.join(self.out_dir, "best.json"), record)
            faults.point("after_best_save")
        cfg = self.exp.train
        stopped = False
        if cfg.early_stopping and stale(history, cfg.early_stopping):
            logging.info("early stopping after epoch %d", epoch + 1)
            stopped = True
        elif cfg.max_minutes and progress.training_seconds() > 60 * cfg.max_minutes:
            logging.warning("time budget of %g minutes of training spent: stopping after "
                            "epoch %d at step %d", cfg.max_minutes, epoch + 1, done)
            stopped = True
        self.done = {"step": done, "history": history, "best": best, "stopped": stopped}
        files.write_json(run_record.validation_path(self.out_dir), self.done)
        faults.point("after_validation_save")


def validate(exp: config_lib.Experiment, state, data: prepared.PreparedData,
             writers: summaries.Writers, epoch: int, predict) -> Dict:
    """Validates the model at the end of `epoch`; logs, writes summaries, returns the
    epoch's record."""
    step = int(state.step.numpy())
    names = data.classes
    train_scores = train_dice(state, names)
    writers.scalars("train", step, **train_scores)
    val = validation.score(predict, data.dataset(
        "validation", batch_size=1, training=False, preprocessing=exp.preprocessing,
        cache=False, **evaluation_resampling(exp)),
        exp.data.headline, names)
    point = val["operating_point"]
    scalars = {k: v for k, v in val["pooled"].items() if isinstance(v, float)}
    scalars.update({f"dice/{name}": scores["dice"] for name, scores in
                    val["pooled"].get("per_class", {}).items() if name != names[0]})
    if point["threshold"] is not None:
        scalars.update({f"{point['headline']}_best": point["best"],
                        f"{point['headline']}_at_0.5": point["at_0.5"],
                        "threshold": point["threshold"]})
    writers.scalars("validation", step, **scalars)
    writers.images("validation", step, val["examples"], names)
    score = point["best"] if np.isfinite(point["best"]) else -1.0
    record = {"epoch": epoch + 1, "step": step, "score": score,
              "threshold": point["threshold"], "operating_point": point,
              "validation": val["pooled"], "validation_per_image": val["per_image_mean"],
              "train_dice": train_scores["dice"]}
    train_classes = {k[5:]: v for k, v in train_scores.items() if k.startswith("dice/")}
    logging.info("epoch %d step %d: train dice %s | validation %s %s (%d images)",
                 epoch + 1, step, dice_text(train_scores["dice"], train_classes),
                 point["headline"], _validation_text(point, val, names),
                 val["num_images"])
    return record


def train_dice(state, names) -> Dict[str, float]:
    """The training metrics of the epoch so far, K-class Dice named by class."""
    scores = {k: float(v) for k, v in state.train_metrics.result().items()}
    return {(f"dice/{names[int(k[5:])]}" if k.startswith("dice/") else k): v
            for k, v in scores.items()}


def dice_text(mean: float, per_class: Dict[str, float]) -> str:
    """"0.7123", or with per-class values "0.7123 (nerve 0.65, vessel 0.77)"."""
    parts = ", ".join(f"{name} {value:.2f}" for name, value in per_class.items())
    return f"{mean:.4f}" + (f" ({parts})" if parts else "")


def _validation_text(point: Dict, val: Dict, names) -> str:
    if point["threshold"] is None:  # K classes: argmax, Dice per foreground class
        return dice_text(point["best"], {name: val["pooled"]["per_class"][name]["dice"]
                                         for name in names[1:]})
    return (f"{point['best']:.4f} at threshold {point['threshold']:.2f} "
            f"({point['at_0.5']:.4f} at 0.5), auc {val['pooled']['auc']:.4f}")


def evaluation_resampling(exp: config_lib.Experiment) -> Dict:
    """The pipeline arguments that resample evaluation images as training saw them."""
    return {"image_size": exp.data.image_size, "scale": exp.data.scale}


def stale(history, patience: int) -> bool:
    """No better score in the last `patience` epochs: early stopping."""
    scores = [r["score"] for r in history]
    return len(scores) > patience and max(scores[-patience:]) <= max(scores[:-patience])
