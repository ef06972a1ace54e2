"""Train a U-Net family model: `r2u-train --dataset=isic --arch=r2unet` (or bin/train).

  r2u-train --dataset=folder --data_dir=my_images --max_minutes=30

A folder dataset (`--dataset=folder`: an nnU-Net raw dataset or train/images +
train/masks pairs) is trained by the plan derived from its fingerprint
(`r2u.data.plan`, printed and written to MODEL_DIR/plan.json); a named dataset by its
preset (the source report's setup), which overrides the plan. Flags override both.
`--max_minutes` without `--steps` measures the step time and sets the steps so the
whole schedule ends within the budget. `--data_dir` may be a raw dataset folder
(prepared into MODEL_DIR/data on the fly) or a prepared TFRecord folder; the built-in
`synthetic` datasets need none.
"""

import dataclasses
import json
import os
import sys
import time

from r2u import cli

cli.setup()  # before TensorFlow is imported

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from r2u import config  # noqa: E402
from r2u import devices  # noqa: E402
from r2u.training import distribute  # noqa: E402
from r2u.training import losses  # noqa: E402
from r2u import files  # noqa: E402
from r2u.data import plan as plan_lib  # noqa: E402
from r2u.data import prepare  # noqa: E402
from r2u.data import prepared  # noqa: E402
from r2u.training import budget  # noqa: E402
from r2u.training import loop  # noqa: E402
from r2u.training import run_record  # noqa: E402

_DATASET = flags.DEFINE_enum("dataset", "synthetic", sorted(config.PRESETS), "Dataset preset.")
_ARCH = flags.DEFINE_enum("arch", "r2unet", config.ARCHS, "Architecture.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Raw dataset folder or prepared TFRecords "
                                "(default: $R2U_DATA_DIR/<dataset>; none for synthetic).")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Output folder (default runs/DATASET-ARCH).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint.")
_ALLOW_CHANGED = flags.DEFINE_bool("allow_changed_config", False, "With --resume, continue "
                                   "with settings that differ from config.json.")
_VERIFY = flags.DEFINE_bool("verify_data", False, "Check every shard's sha256 (slow); "
                            "without it only their sizes are checked.")
_STRATEGY = flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored",
                                                   "multi_worker"], "tf.distribute strategy.")
# Overrides of the preset; None keeps the preset's value.
_OVERRIDES = {
    "model": dict(in_channels=flags.DEFINE_integer(
                      "in_channels", None, "Network input channels (RGB images are "
                      "converted to gray for 1).", lower_bound=1),
                  filters=flags.DEFINE_integer("filters", None, "Width of level 0."),
                  depth=flags.DEFINE_integer("depth", None, "Number of poolings."),
                  t=flags.DEFINE_integer("t", None, "Recurrent steps."),
                  recurrence=flags.DEFINE_enum("recurrence", None, config.RECURRENCES,
                                               "Recurrent unit form."),
                  dropout=flags.DEFINE_float("dropout", None, "Dropout after each block."),
                  recurrent_bn=flags.DEFINE_enum("recurrent_bn", None, config.RECURRENT_BN,
                                                 "Batch-norm statistics of recurrent units: "
                                                 "shared by the steps or per step.")),
    "data": dict(image_size=flags.DEFINE_integer("image_size", None, "Resize at prepare "
                                                 "(folder datasets: in the pipeline)."),
                 scale=flags.DEFINE_float("scale", None, "Resample every image by this "
                                          "factor (folder datasets).", lower_bound=0.01),
                 flip_left_right=flags.DEFINE_bool("flip_left_right", None, "Mirror "
                                                   "images in augmentation."),
                 patch_size=flags.DEFINE_integer("patch_size", None, "Training patch size."),
                 patches_per_image=flags.DEFINE_integer("patches_per_image", None,
                                                        "Patches per image per epoch."),
                 augment=flags.DEFINE_bool("augment", None, "Augmentation."),
                 validation_count=flags.DEFINE_integer(
                     "validation_count", None, "Training images held out for validation "
                     "(default: the dataset's, see README)."),
                 headline=flags.DEFINE_enum("headline", None, config.HEADLINES,
                                            "Validation metric that picks the checkpoint "
                                            "and the threshold.")),
    "preprocessing": dict(
        contrast=flags.DEFINE_bool("contrast", None, "CLAHE-like contrast."),
        standardize_in_fov=flags.DEFINE_bool(
            "standardize_in_fov", None, "Per-image standardisation statistics from "
            "field-of-view pixels only (prediction then derives the FOV of an image)."),
    ),
    "inference": dict(window=flags.DEFINE_integer(
        "window", None, "Sliding window tried against whole images on validation "
        "after training (0: whole images only).", lower_bound=0)),
    "train": dict(epochs=flags.DEFINE_integer("epochs", None, "Epochs."),
                  steps=flags.DEFINE_integer("steps", None, "Total steps (wins over epochs)."),
                  steps_per_epoch=flags.DEFINE_integer("steps_per_epoch", None,
                                                       "Steps between validations."),
                  batch_size=flags.DEFINE_integer("batch_size", None, "Global batch size."),
                  learning_rate=flags.DEFINE_float("learning_rate", None, "Adam step size."),
                  lr_schedule=flags.DEFINE_enum("lr_schedule", None, config.LR_SCHEDULES,
                                                "Learning-rate decay over the run."),
                  warmup_steps=flags.DEFINE_integer("warmup_steps", None,
                                                    "Linear learning-rate warm-up steps."),
                  loss=flags.DEFINE_enum("loss", None, losses.LOSSES, "Loss."),
                  class_weights=flags.DEFINE_string("class_weights", None,
                                                    "auto | none | w0,w1,... (one per class)"),
                  dtype=flags.DEFINE_enum("dtype", None, ["auto", *config.DTYPES],
                                          "Compute dtype."),
                  xla=flags.DEFINE_enum("xla", None, ["auto", "on", "off"], "XLA."),
                  steps_per_call=flags.DEFINE_integer("steps_per_call", None,
                                                      "Steps fused per host call."),
                  early_stopping=flags.DEFINE_integer("early_stopping", None,
                                                      "Patience in epochs (0: off)."),
                  log_every=flags.DEFINE_integer("log_every", None, "Steps between logs."),
                  max_minutes=flags.DEFINE_float("max_minutes", None, "Wall-time budget: without "
                                                 "--steps, the steps that end the run "
                                                 "within it (timed on this machine); "
                                                 "with --steps, stop after the epoch "
                                                 "that exceeds it."),
                  seed=flags.DEFINE_integer("seed", None, "Seed of everything random.")),
}


def experiment(exp: config.Experiment) -> config.Experiment:
    """`exp` (the plan, or the preset) with the flags that were given."""
    parts = {}
    for part, holders in _OVERRIDES.items():
        changes = {k: h.value for k, h in holders.items() if h.value is not None}
        if changes.get("window") == 0:
            changes["window"] = None
        # One way to resize: a size given on the command line replaces a planned
        # factor, and a factor a planned size.
        if "image_size" in changes:
            changes["scale"] = None
        elif "scale" in changes:
            changes["image_size"] = None
        parts[part] = dataclasses.replace(getattr(exp, part), **changes)
    model = dataclasses.replace(parts["model"], arch=_ARCH.value,
                                seed=parts["train"].seed,
                                compute_dtype=devices.resolve_dtype(parts["train"].dtype))
    return dataclasses.replace(exp, model=model, data=parts["data"], train=parts["train"],
                               inference=parts["inference"],
                               preprocessing=dataclasses.replace(
                                   parts["preprocessing"], channels=model.in_channels))


def planned(base: config.Experiment, data: prepared.PreparedData):
    """(experiment, plan): the plan applied to a folder dataset; a named dataset's
    preset overrides it (but for the classes, which are the data's)."""
    plan = plan_lib.make(data.fingerprint(), data.classes, data.channels)
    if base.data.dataset == "folder":
        return plan_lib.apply(plan, base), plan
    classes = {k: plan[k] for k in ("model.num_classes", "data.classes")}
    return plan_lib.apply(classes, base), plan


def budgeted(exp: config.Experiment, data: prepared.PreparedData, model_dir: str,
             start: float):
    """(experiment, measurements): steps from --max_minutes when --steps is not given;
    a resumed run keeps the steps it was planned with."""
    cfg = exp.train
    if cfg.steps or not cfg.max_minutes:
        return exp, None
    if _RESUME.value and os.path.isfile(os.path.join(model_dir, "config.json")):
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            written = json.load(f)["train"]
        keep = {k: written[k] for k in ("steps", "steps_per_epoch", "warmup_steps")}
        return dataclasses.replace(exp, train=dataclasses.replace(cfg, **keep)), None
    return budget.fit(exp, data, start + 60 * cfg.max_minutes)


def write_plan(model_dir: str, plan, exp: config.Experiment, measured) -> None:
    """plan.json: the plan, what presets and flags changed, the budget's measurements."""
    changed = plan_lib.differences(plan, exp)
    logging.info("plan:\n%s", plan_lib.describe(plan, changed))
    os.makedirs(model_dir, exist_ok=True)
    files.write_json(os.path.join(model_dir, "plan.json"), {
        "plan": plan, "overridden": changed, "budget": measured,
        "preset": exp.data.dataset if exp.data.dataset != "folder" else None})


def main(argv):
    del argv
    start = time.time()
    base = config.preset(_DATASET.value)
    base = dataclasses.replace(base, data=dataclasses.replace(base.data,
                                                              data_dir=_DATA_DIR.value))
    model_dir = _MODEL_DIR.value or os.path.join(
        "runs", f"{base.data.dataset}-{_ARCH.value}")
    strategy = distribute.make_strategy(_STRATEGY.value)
    try:
        size = None if base.data.dataset == "folder" else (
            _OVERRIDES["data"]["image_size"].value or base.data.image_size)
        count = _OVERRIDES["data"]["validation_count"].value or base.data.validation_count
        data_dir = prepare.ensure_prepared(base.data.dataset, base.data.data_dir,
                                           os.path.join(model_dir, "data"), size, count)
        data = prepared.load(data_dir)
        data.verify(full=_VERIFY.value)
        exp, plan = planned(base, data)
        exp = experiment(exp)
        if not _RESUME.value:  # refuse an existing run before measuring anything
            run_record.check_resume(exp, model_dir, False, False)
        exp, measured = budgeted(exp, data, model_dir, start)
        if not (_RESUME.value and os.path.isfile(os.path.join(model_dir, "plan.json"))):
            write_plan(model_dir, plan, exp, measured)
        deadline = {k: measured[k] for k in ("deadline", "after_validations")
                    } if measured else {}
        summary = loop.train(exp, model_dir, data, resume=_RESUME.value,
                             resume_overrides=_ALLOW_CHANGED.value, strategy=strategy,
                             **deadline)
    except (ValueError, FileExistsError, FloatingPointError, OSError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    threshold = summary["threshold"]
    at = "argmax" if threshold is None else f"threshold {threshold:.2f}"
    print(f"best validation {summary['headline']} {summary['best_validation_score']:.4f} "
          f"({at}, {summary.get('inference_mode', 'whole')} images) after "
          f"{summary['steps']} steps in {(time.time() - start) / 60:.1f} min; SavedModel "
          f"in {os.path.join(model_dir, 'export')}")
    return 0


run = cli.entry_point(main)  # `r2u-train` and `bin/train`


if __name__ == "__main__":
    run()
