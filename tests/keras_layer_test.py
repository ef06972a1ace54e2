"""R2UNetLayer: Keras 3 sees, trains, freezes, saves and reloads the r2u module's variables."""

import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import tensorflow as tf

import keras
from r2u import config as config_lib
from r2u.nn import keras_layer
from r2u.nn import models

TINY = dict(in_channels=1, num_classes=2, filters=4, depth=2, t=1, dropout=0.2)


def _data(n=8, size=16):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, size, size, 1)).astype(np.float32)
    masks = (images[..., 0] > 0.3).astype(np.int32)
    return images, masks


def _model(arch="r2unet", **overrides):
    inputs = keras.Input((None, None, 1))
    layer = keras_layer.R2UNetLayer(arch, **{**TINY, **overrides})
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, layer


def _state(module):
    """Every variable the module's checkpoint holds, as numpy: weights, statistics, RNG."""
    return [v.numpy().copy() for v in module.variables] + [module.generator.state.numpy()]


class R2UNetLayerTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.images, cls.masks = _data()
        cls.model, cls.layer = _model()
        cls.module = cls.layer.module
        cls.initial = _state(cls.module)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cls.history = cls.model.fit(cls.images, cls.masks, batch_size=4, epochs=1,
                                        verbose=0)
        cls.fit_warnings = [str(w.message) for w in caught]
        cls.trained = _state(cls.module)

    def test_keras_sees_exactly_the_module_variables(self):
        module = self.module
        self.assertIsInstance(module, models.UNet)
        self.assertLen(self.layer.trainable_weights, len(module.trainable_variables))
        # All tf.Module variables plus the dropout generator's state (one variable).
        self.assertLen(self.layer.weights, len(module.variables) + 1)
        self.assertLen(self.model.trainable_weights, len(module.trainable_variables))
        self.assertLen(self.model.weights, len(module.variables) + 1)
        # Not copies: the Keras weights hold the module's own tf.Variables.
        self.assertEqual([id(w.value) for w in self.layer.trainable_weights],
                         [id(v) for v in module.trainable_variables])
        self.assertEqual([id(w.value) for w in self.layer.non_trainable_weights],
                         [id(v) for v in module.variables if not v.trainable]
                         + [id(module.generator.state)])
        names = [w.name for w in self.layer.non_trainable_weights]
        self.assertTrue(all("moving_" in n for n in names[:-1]), names)
        self.assertEqual(names[-1], "generator.state")

    def test_fit_updates_every_weight_statistic_and_the_dropout_stream(self):
        self.assertNotIn("The model does not have any trainable weights.", self.fit_warnings)
        self.assertTrue(np.isfinite(self.history.history["loss"]).all())
        names = [v.name for v in self.module.variables] + ["generator.state"]
        unchanged = [name for name, before, after in zip(names, self.initial, self.trained)
                     if np.array_equal(before, after)]
        self.assertEqual(unchanged, [])  # every trainable, every moving statistic, the RNG
        self.assertTrue(any("moving_mean" in n for n in names))

    def test_predict_is_inference_mode_and_equals_the_module(self):
        first = self.model.predict(self.images, batch_size=4, verbose=0)
        second = self.model.predict(self.images, batch_size=4, verbose=0)
        self.model.evaluate(self.images, self.masks, batch_size=4, verbose=0)
        self.assertEqual(first.shape, (8, 16, 16, 2))
        self.assertEqual(first.dtype, np.float32)
        self.assertAllEqual(first, second)  # no dropout
        # predict/evaluate ran with training=False: statistics and RNG untouched.
        for before, after in zip(self.trained, _state(self.module)):
            self.assertAllEqual(before, after)
        self.assertAllClose(first, self.module(self.images, training=False), atol=1e-6)
        self.assertAllClose(first, self.layer(self.images), atol=1e-6)  # default: inference

    def test_saved_model_reloads_to_the_same_predictions(self):
        path = os.path.join(tempfile.mkdtemp(), "model.keras")
        self.model.save(path)
        loaded = keras.models.load_model(path)  # registered: no custom_objects needed
        layer = loaded.layers[-1]
        self.assertIsInstance(layer, keras_layer.R2UNetLayer)
        self.assertEqual(layer.cfg, self.layer.cfg)
        self.assertIsNot(layer.module, self.module)
        for want, got in zip(self.trained, _state(layer.module)):
            self.assertAllEqual(want, got)  # weights, statistics and the dropout stream
        self.assertAllClose(loaded.predict(self.images, batch_size=4, verbose=0),
                            self.model.predict(self.images, batch_size=4, verbose=0),
                            atol=1e-6)

    def test_frozen_layer_changes_nothing_in_fit(self):
        model, layer = _model("unet", trainable=False)
        before = _state(layer.module)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "does not have any trainable weights": right
            model.fit(self.images, self.masks, batch_size=8, epochs=1, verbose=0)
        self.assertEqual(model.trainable_weights, [])
        for want, got in zip(before, _state(layer.module)):
            self.assertAllEqual(want, got)  # inference mode: statistics and RNG too
        layer.trainable = True
        self.assertLen(model.trainable_weights, len(layer.module.trainable_variables))

    def test_config_round_trip_and_validation(self):
        config = self.layer.get_config()
        self.assertEqual({k: config[k] for k in TINY}, TINY)
        clone = keras_layer.R2UNetLayer.from_config(config)
        self.assertEqual(clone.cfg, self.layer.cfg)
        self.assertEqual(clone.get_config(), config)
        from_cfg = keras_layer.R2UNetLayer(config_lib.ModelConfig(**TINY), filters=8)
        self.assertEqual(from_cfg.cfg.filters, 8)
        self.assertEqual(from_cfg.cfg.arch, "r2unet")
        with self.assertRaisesRegex(ValueError, "unknown arch"):
            keras_layer.R2UNetLayer("vnet")
        with self.assertRaises(TypeError):
            keras_layer.R2UNetLayer("unet", filter=4)  # typo of a field
        with self.assertRaisesRegex(ValueError, "in_channels=1"):
            keras_layer.R2UNetLayer("unet", in_channels=1).build((None, 16, 16, 3))

    def test_import_r2u_does_not_import_keras(self):
        code = ("import sys, r2u; "
                "sys.exit('keras' in sys.modules or 'r2u.nn.keras_layer' in sys.modules)")
        subprocess.run([sys.executable, "-c", code], check=True)


if __name__ == "__main__":
    tf.test.main()
