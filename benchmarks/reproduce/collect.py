#!/usr/bin/env python3
"""Merge an evaluation JSON with the run's config, plan, training wall time and machine."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from absl import app
from absl import flags

from r2u import config
from r2u import devices
from r2u import files
from r2u.nn import models

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training folder.", required=True)
_EVAL = flags.DEFINE_string("eval", None, "bin/evaluate JSON.", required=True)
_SECONDS = flags.DEFINE_integer("train_seconds", None, "Training wall time.")
_OUT = flags.DEFINE_string("out", None, "Results JSON.", required=True)
_COMMAND = flags.DEFINE_string("command", None, "The command that made the result.")


def main(argv):
    del argv
    with open(os.path.join(_MODEL_DIR.value, "config.json")) as f:
        exp = config.Experiment.from_dict(json.load(f))
    with open(os.path.join(_MODEL_DIR.value, "summary.json")) as f:
        summary = json.load(f)
    with open(_EVAL.value) as f:
        evaluation = json.load(f)
    result = {"dataset": exp.data.dataset, "arch": exp.model.arch,
              "params": models.parameter_count(models.build(exp.model)),
              "config": json.loads(exp.to_json()), "train_seconds": _SECONDS.value,
              "steps": summary["steps"], "best_step": summary.get("best_step"),
              "skipped_steps": summary.get("skipped_steps"),
              "machine": devices.machine(),
              "validation": {"headline": summary["headline"],
                             "best_score": summary["best_validation_score"],
                             "threshold": summary["threshold"],
                             "history": summary["history"]},
              "evaluation": evaluation}
    plan = os.path.join(_MODEL_DIR.value, "plan.json")
    if os.path.isfile(plan):
        with open(plan) as f:
            result["plan"] = json.load(f)
        result["inference"] = {"mode": summary.get("inference_mode"),
                               "selection": summary.get("selection")}
    if _COMMAND.value:
        result["command"] = _COMMAND.value
    files.write_json(_OUT.value, result, indent=1)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
