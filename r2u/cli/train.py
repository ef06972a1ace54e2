"""Train a U-Net family model: `r2u-train --dataset=isic --arch=r2unet` (or bin/train).

The dataset preset (the source report's setup) gives every default; flags override it.
`--data_dir` may be a raw dataset folder (prepared into MODEL_DIR/data on the fly) or a
prepared TFRecord folder; the built-in `synthetic` datasets need none.
"""

import dataclasses
import os
import sys

from r2u import cli

cli.setup()  # before TensorFlow is imported

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from r2u import config  # noqa: E402
from r2u import devices  # noqa: E402
from r2u.training import distribute  # noqa: E402
from r2u.training import losses  # noqa: E402
from r2u.training import loop  # noqa: E402
from r2u.data import prepare  # noqa: E402
from r2u.data import prepared  # noqa: E402

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
    "model": dict(filters=flags.DEFINE_integer("filters", None, "Width of level 0."),
                  depth=flags.DEFINE_integer("depth", None, "Number of poolings."),
                  t=flags.DEFINE_integer("t", None, "Recurrent steps."),
                  recurrence=flags.DEFINE_enum("recurrence", None, config.RECURRENCES,
                                               "Recurrent unit form."),
                  dropout=flags.DEFINE_float("dropout", None, "Dropout after each block."),
                  recurrent_bn=flags.DEFINE_enum("recurrent_bn", None, config.RECURRENT_BN,
                                                 "Batch-norm statistics of recurrent units: "
                                                 "shared by the steps or per step.")),
    "data": dict(image_size=flags.DEFINE_integer("image_size", None, "Resize at prepare."),
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
                                                    "auto | none | w0,w1"),
                  dtype=flags.DEFINE_enum("dtype", None, ["auto", *config.DTYPES],
                                          "Compute dtype."),
                  xla=flags.DEFINE_enum("xla", None, ["auto", "on", "off"], "XLA."),
                  steps_per_call=flags.DEFINE_integer("steps_per_call", None,
                                                      "Steps fused per host call."),
                  early_stopping=flags.DEFINE_integer("early_stopping", None,
                                                      "Patience in epochs (0: off)."),
                  log_every=flags.DEFINE_integer("log_every", None, "Steps between logs."),
                  max_minutes=flags.DEFINE_float("max_minutes", None, "Stop after the epoch "
                                                 "that exceeds this much training time."),
                  seed=flags.DEFINE_integer("seed", None, "Seed of everything random.")),
}


def experiment() -> config.Experiment:
    exp = config.preset(_DATASET.value)
    parts = {}
    for part, holders in _OVERRIDES.items():
        changes = {k: h.value for k, h in holders.items() if h.value is not None}
        parts[part] = dataclasses.replace(getattr(exp, part), **changes)
    model = dataclasses.replace(parts["model"], arch=_ARCH.value,
                                seed=parts["train"].seed,
                                compute_dtype=devices.resolve_dtype(parts["train"].dtype))
    data = dataclasses.replace(parts["data"], data_dir=_DATA_DIR.value)
    return config.Experiment(model=model, data=data, train=parts["train"],
                             preprocessing=dataclasses.replace(
                                 parts["preprocessing"], channels=model.in_channels))


def main(argv):
    del argv
    exp = experiment()
    model_dir = _MODEL_DIR.value or os.path.join("runs", f"{exp.data.dataset}-{exp.model.arch}")
    strategy = distribute.make_strategy(_STRATEGY.value)
    try:
        data_dir = prepare.ensure_prepared(exp.data.dataset, exp.data.data_dir,
                                           os.path.join(model_dir, "data"),
                                           exp.data.image_size,
                                           exp.data.validation_count)
        data = prepared.load(data_dir)
        data.verify(full=_VERIFY.value)
        summary = loop.train(exp, model_dir, data, resume=_RESUME.value,
                              resume_overrides=_ALLOW_CHANGED.value,
                              strategy=strategy)
    except (ValueError, FileExistsError, FloatingPointError, OSError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"best validation {summary['headline']} {summary['best_validation_score']:.4f} "
          f"at threshold {summary['threshold']:.2f} after {summary['steps']} steps; "
          f"SavedModel in {os.path.join(model_dir, 'export')}")
    return 0


run = cli.entry_point(main)  # `r2u-train` and `bin/train`


if __name__ == "__main__":
    run()
