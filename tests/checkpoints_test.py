"""Loading a model for inference: best/ before ckpt/, SavedModel alone, clear errors."""

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from r2u.inference import loading
from r2u import config
from r2u.inference import export
from r2u.inference import network
from r2u.nn import models
from r2u.data import preprocess


def _experiment(in_channels=3):
    return config.Experiment(model=config.ModelConfig(
        arch="unet", in_channels=in_channels, filters=4, depth=2, dropout=0.0))


def _model(exp, head_bias=None):
    model = models.build(exp.model)
    # A training-mode call moves the batch-norm statistics off their initial values.
    model(tf.random.normal([2, 16, 16, exp.model.in_channels]), training=True)
    if head_bias is not None:
        model.head.b.assign(head_bias)
    return model


def _save(model, folder, step):
    step_var = tf.Variable(step, dtype=tf.int64)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, step=step_var), folder, max_to_keep=3)
    return manager.save(checkpoint_number=step)


def _training_dir(exp, best=None, latest=()):
    """A folder laid out like train.train's: config.json, best/ and ckpt/."""
    model_dir = tempfile.mkdtemp()
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        f.write(exp.to_json())
    for step, model in latest:
        _save(model, os.path.join(model_dir, "ckpt"), step)
    if best is not None:
        _save(best[1], os.path.join(model_dir, "best"), best[0])
    return model_dir


def _want(model, images):
    return network.probabilities(model, preprocess.preprocess(images, 3)).numpy()


class LoadTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.exp = _experiment()
        cls.model = _model(cls.exp)
        cls.export_dir = export.save(cls.model,
                                     os.path.join(tempfile.mkdtemp(), "export"))
        cls.images = np.random.default_rng(0).uniform(size=(2, 20, 28, 3)).astype(
            np.float32)

    def test_best_checkpoint_wins_over_the_latest(self):
        other = _model(self.exp, head_bias=[3.0, -3.0])
        model_dir = _training_dir(self.exp, best=(4, self.model), latest=[(6, other)])
        predictor = loading.load(model_dir)
        self.assertEqual(predictor.source, "checkpoint")
        self.assertEqual(predictor.step, 4)
        self.assertEqual(predictor.path, os.path.join(model_dir, "best", "ckpt-4"))
        self.assertEqual(predictor.experiment, self.exp)
        self.assertAllClose(predictor.predict(self.images),
                            _want(self.model, self.images), atol=1e-6)

    def test_latest_checkpoint_without_best(self):
        other = _model(self.exp, head_bias=[3.0, -3.0])
        model_dir = _training_dir(self.exp, latest=[(2, other), (5, self.model)])
        predictor = loading.load(model_dir)
        self.assertEqual(predictor.step, 5)
        self.assertAllClose(predictor.predict(self.images),
                            _want(self.model, self.images), atol=1e-6)

    def test_saved_model_alone_given_directly_or_as_export(self):
        parent = tempfile.mkdtemp()
        shutil.copytree(self.export_dir, os.path.join(parent, "export"))
        for path in (self.export_dir, parent):
            predictor = loading.load(path)
            self.assertEqual(predictor.source, "saved_model")
            self.assertIsNone(predictor.experiment)
            self.assertEqual(predictor.model_cfg, self.model.cfg)
            self.assertAllClose(predictor.predict(self.images),
                                _want(self.model, self.images), atol=1e-5)

    def test_source_flag_forces_the_saved_model_next_to_a_checkpoint(self):
        model_dir = _training_dir(self.exp, best=(1, _model(self.exp, [3.0, -3.0])))
        shutil.copytree(self.export_dir, os.path.join(model_dir, "export"))
        self.assertEqual(loading.load(model_dir).source, "checkpoint")
        predictor = loading.load(model_dir, source="saved_model")
        self.assertEqual(predictor.source, "saved_model")
        self.assertEqual(predictor.experiment, self.exp)  # config.json still read
        self.assertAllClose(predictor.predict(self.images),
                            _want(self.model, self.images), atol=1e-5)

    def test_tiles_covering_the_image_equal_the_whole_image_prediction(self):
        trained = _training_dir(self.exp, best=(1, self.model))
        from_checkpoint = loading.load(trained)
        for predictor in (loading.load(self.export_dir), from_checkpoint):
            image = self.images[0]
            whole = predictor.predict_image(image)
            self.assertEqual(whole.shape, (20, 28, 2))
            self.assertAllClose(predictor.predict_image(image, tile=32), whole,
                                atol=1e-6)
            overlapping = predictor.predict_image(image, tile=16, stride=4)
            self.assertEqual(overlapping.shape, whole.shape)
            # NumPy reference: the model's probabilities of every 16x16 window of the
            # image preprocessed whole (rows from 0 and 4, columns from 0, 4, 8 and
            # 12), summed where they cover a pixel and divided by how many do.
            pre = preprocess.preprocess(self.images[:1], 3).numpy()[0]
            total, count = np.zeros([20, 28, 2]), np.zeros([20, 28, 1])
            for y in (0, 4):
                for x in (0, 4, 8, 12):
                    total[y:y + 16, x:x + 16] += network.probabilities(
                        self.model, pre[None, y:y + 16, x:x + 16]).numpy()[0]
                    count[y:y + 16, x:x + 16] += 1
            self.assertAllClose(overlapping, total / count, atol=1e-5)
            self.assertNotAllClose(overlapping, whole, atol=1e-3)  # Tiles do differ.

    def test_gray_and_rgb_inputs_are_converted_to_the_model_channels(self):
        predictor = loading.load(self.export_dir)
        gray = self.images[0, ..., :1]
        self.assertAllClose(predictor.predict_image(gray),
                            predictor.predict_image(np.repeat(gray, 3, axis=-1)),
                            atol=1e-6)
        gray_exp = _experiment(in_channels=1)
        gray_model = _model(gray_exp)
        gray_predictor = loading.load(_training_dir(gray_exp, best=(1, gray_model)))
        rgb = self.images[0]
        want = network.probabilities(
            gray_model, preprocess.preprocess(tf.image.rgb_to_grayscale(rgb[None]), 1))
        self.assertAllClose(gray_predictor.predict_image(rgb), want[0], atol=1e-6)

    def test_uint8_images_match_floats_in_unit_range_and_tiny_images_work(self):
        predictor = loading.load(self.export_dir)
        pixels = (self.images[0] * 255).round().astype(np.uint8)
        self.assertAllClose(predictor.predict_image(pixels),
                            predictor.predict_image(pixels / np.float32(255)),
                            atol=1e-6)
        for shape in ((1, 1, 3), (1, 7, 3), (3, 2, 1)):
            probs = predictor.predict_image(pixels[:shape[0], :shape[1], :shape[2]])
            self.assertEqual(probs.shape, shape[:2] + (2,))
            self.assertTrue(np.all(np.isfinite(probs)))

    def test_bad_tile_is_rejected(self):
        predictor = loading.load(self.export_dir)
        with self.assertRaisesRegex(ValueError, "multiple of 2\\*\\*depth = 4"):
            predictor.predict_image(self.images[0], tile=10)

    def test_errors_name_the_folder(self):
        empty = tempfile.mkdtemp()
        with self.assertRaisesRegex(FileNotFoundError, f"{empty}: no model found"):
            loading.load(empty)
        missing = os.path.join(empty, "nope")
        with self.assertRaisesRegex(FileNotFoundError, f"{missing}: model folder not"):
            loading.load(missing)
        with self.assertRaisesRegex(FileNotFoundError, "expected a checkpoint"):
            loading.load(self.export_dir, source="checkpoint")
        no_config = _training_dir(self.exp, best=(1, self.model))
        os.remove(os.path.join(no_config, "config.json"))
        with self.assertRaisesRegex(FileNotFoundError, "no config.json"):
            loading.load(no_config)
        foreign = tempfile.mkdtemp()
        shutil.copytree(self.export_dir, foreign, dirs_exist_ok=True)
        os.remove(os.path.join(foreign, "r2u_model.json"))
        with self.assertRaisesRegex(ValueError, "not written by r2u.inference.export"):
            loading.load(foreign)

    def test_checkpoint_of_another_architecture_is_refused(self):
        wrong = dataclasses.replace(self.exp, model=dataclasses.replace(
            self.exp.model, filters=8))
        model_dir = _training_dir(self.exp, best=(1, self.model))
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            f.write(wrong.to_json())
        with self.assertRaisesRegex(ValueError, "ckpt-1: does not match the model"):
            loading.load(model_dir)
        deeper = dataclasses.replace(self.exp, model=dataclasses.replace(
            self.exp.model, depth=3, filters=2))  # more variables than the file holds
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            f.write(deeper.to_json())
        with self.assertRaisesRegex(ValueError, "ckpt-1: does not match the model"):
            loading.load(model_dir)


class PreprocessingSpecTest(tf.test.TestCase):
    """One preprocessing spec, from config.json or r2u_model.json, on every path."""

    def test_export_metadata_of_the_layout_before_the_spec_loads(self):
        exp = dataclasses.replace(_experiment(), inference=config.InferenceConfig(0.3),
                                  preprocessing=config.Preprocessing(contrast=True))
        model = _model(exp)
        path = export.save(model, os.path.join(tempfile.mkdtemp(), "export"), exp)
        info_path = os.path.join(path, "r2u_model.json")
        with open(info_path) as f:
            info = json.load(f)
        with open(info_path, "w") as f:  # as the previous code wrote it
            json.dump({"model": info["model"], "contrast": True, "input_size": None,
                       "threshold": 0.3}, f)
        loaded = loading.load(path, "saved_model")
        self.assertEqual(loaded.spec, export.InputSpec(
            preprocessing=config.Preprocessing(channels=3, contrast=True),
            threshold=0.3))
        images = np.random.default_rng(0).uniform(size=(1, 16, 16, 3)).astype(np.float32)
        want = network.probabilities(model, preprocess.preprocess(images, 3, True))
        self.assertAllClose(loaded.predict(images), want, atol=1e-5)

    def test_standardising_over_the_fov_reaches_checkpoint_and_saved_model(self):
        exp = dataclasses.replace(_experiment(), preprocessing=config.Preprocessing(
            standardize_in_fov=True))
        model = _model(exp)
        model_dir = _training_dir(exp, best=(1, model))
        export.save(model, os.path.join(model_dir, "export"), exp)
        rng = np.random.default_rng(0)
        images = rng.uniform(size=(2, 16, 24, 3)).astype(np.float32)
        fov = np.zeros((2, 16, 24), np.float32)
        fov[:, 2:14, 3:20] = 1.0
        images[fov == 0] = rng.uniform(size=(int((fov == 0).sum()), 3))  # noise outside
        want = network.probabilities(
            model, preprocess.preprocess(images, 3, fov=fov)).numpy()
        self.assertNotAllClose(want, _want(model, images), atol=1e-3)
        for source in ("checkpoint", "saved_model"):
            predictor = loading.load(model_dir, source)
            self.assertTrue(predictor.spec.needs_fov, source)
            self.assertAllClose(predictor.predict(images, fov), want, atol=1e-5)
            self.assertAllClose(predictor.predict_image(images[0], fov=fov[0]), want[0],
                                atol=1e-5)
            with self.assertRaisesRegex(ValueError, "field of view"):
                predictor.predict(images)


if __name__ == "__main__":
    tf.test.main()
