"""Experiment configs: every config.json layout ever written loads, and round-trips."""

import dataclasses
import glob
import json
import os

import tensorflow as tf

from r2u import config

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A config.json of the layout before the preprocessing spec (a DRIVE run of the one-hour recipe).
_OLD = {"data": {"augment": True, "cache": True, "contrast": True, "data_dir": None,
                 "dataset": "drive", "headline": "pooled_f1", "image_size": None,
                 "patch_size": 48, "patches_per_image": 64, "validation_count": None},
        "inference": {"threshold": 0.41},
        "model": {"arch": "unet", "compute_dtype": "bfloat16", "depth": 4,
                  "dropout": 0.1, "filters": 16, "in_channels": 1, "num_classes": 2,
                  "recurrence": "shared", "recurrent_bn": "shared", "seed": 0, "t": 2},
        "train": {"batch_size": 32, "class_weights": "auto", "clip_norm": 1.0,
                  "dtype": "auto", "early_stopping": 0, "epochs": 50,
                  "learning_rate": 0.001, "log_every": 20, "loss": "ce",
                  "lr_schedule": "cosine", "max_minutes": 62.0, "seed": 0,
                  "steps": 6500, "steps_per_call": 1, "steps_per_epoch": 650,
                  "warmup_steps": 100, "xla": "auto"}}


class ExperimentTest(tf.test.TestCase):

    def test_the_layout_before_the_preprocessing_spec_loads(self):
        exp = config.Experiment.from_dict(_OLD)
        self.assertEqual(exp.preprocessing, config.Preprocessing(
            channels=1, contrast=True, standardize_in_fov=False))
        self.assertEqual(exp.inference.threshold, 0.41)
        written = json.loads(exp.to_json())
        self.assertNotIn("contrast", written["data"])
        self.assertEqual(written["preprocessing"], {"channels": 1, "contrast": True,
                                                    "standardize_in_fov": False})
        self.assertEqual(config.Experiment.from_dict(written), exp)

    def test_every_committed_result_config_loads(self):
        paths = glob.glob(os.path.join(_ROOT, "benchmarks", "results", "*.json"))
        loaded = 0
        for path in sorted(paths):
            with open(path) as f:
                cfg = json.load(f).get("config")
            if not isinstance(cfg, dict) or "model" not in cfg or "data" not in cfg:
                continue  # a benchmark's own settings, not an Experiment
            exp = config.Experiment.from_dict(cfg)
            # Written before the preprocessing spec (data.contrast) or after it.
            contrast = cfg.get("preprocessing", cfg["data"])["contrast"]
            self.assertEqual(exp.preprocessing.contrast, contrast, path)
            self.assertEqual(exp.preprocessing.channels, cfg["model"]["in_channels"])
            self.assertEqual(config.Experiment.from_dict(json.loads(exp.to_json())), exp)
            loaded += 1
        self.assertGreaterEqual(loaded, 7)

    def test_the_layout_with_an_inference_mode_loads(self):
        # Written before tile/stride left InferenceConfig: whole images (tile 0).
        exp = config.Experiment.from_dict({**_OLD, "inference": {
            "threshold": 0.5, "tile": 0, "stride": 0}})
        self.assertEqual(exp.inference, config.InferenceConfig(threshold=0.5))

    def test_presets_round_trip_and_carry_their_preprocessing(self):
        for name in config.PRESETS:
            exp = config.preset(name)
            self.assertEqual(exp.preprocessing.channels, exp.model.in_channels, name)
            self.assertEqual(config.Experiment.from_dict(json.loads(exp.to_json())), exp)
        self.assertTrue(config.preset("drive").preprocessing.contrast)
        self.assertFalse(config.preset("isic").preprocessing.contrast)

    def test_channels_that_contradict_the_model_are_refused(self):
        with self.assertRaisesRegex(ValueError, "preprocessing.channels 3 != model"):
            config.Experiment(model=config.ModelConfig(in_channels=1),
                              preprocessing=config.Preprocessing(channels=3))
        exp = dataclasses.replace(config.synthetic(), preprocessing=config.Preprocessing(
            standardize_in_fov=True))
        self.assertEqual(exp.preprocessing.channels, 3)


if __name__ == "__main__":
    tf.test.main()
