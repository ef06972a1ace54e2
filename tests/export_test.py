"""SavedModel export: plain tf.saved_model.load gives the same probabilities."""

import dataclasses
import json
import os
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u.inference import loading
from r2u import config
from r2u.inference import export
from r2u.training import loop
from r2u.inference import network
from r2u.nn import models
from r2u.data import preprocess


class ExportTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters("unet", "r2unet", "attr2unet")
    def test_saved_model_round_trip_with_unknown_dims(self, arch):
        model = models.build(arch, in_channels=3, filters=4, depth=2)
        model(tf.random.normal([2, 16, 16, 3]), training=True)  # non-trivial BN stats
        path = export.save(model, os.path.join(tempfile.mkdtemp(), "export"))
        loaded = tf.saved_model.load(path)
        for shape in ((1, 16, 16, 3), (2, 13, 21, 3)):  # 13x21 needs padding
            images = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
            want = network.probabilities(model, preprocess.preprocess(images, 3))
            got = loaded.serve(images)
            self.assertEqual(got["probabilities"].shape, shape[:3] + (2,))
            self.assertAllClose(got["probabilities"], want, atol=1e-5)
            self.assertAllEqual(got["mask"], tf.cast(want[..., 1] > 0.5, tf.uint8))
            # A TF Serving client sees named outputs.
            served = loaded.signatures["serving_default"](images=tf.constant(images))
            self.assertEqual(set(served), {"probabilities", "labels", "mask"})
            self.assertAllEqual(served["labels"], tf.cast(served["mask"], tf.int32))
            self.assertAllClose(served["probabilities"], want, atol=1e-5)

    def test_the_export_resizes_to_the_training_size_and_back_and_thresholds(self):
        model = models.build("unet", in_channels=3, filters=4, depth=2)
        model(tf.random.normal([2, 16, 16, 3]), training=True)
        spec = export.InputSpec(input_size=(16, 16), threshold=0.3)
        path = export.save(model, os.path.join(tempfile.mkdtemp(), "export"),
                           dataclasses.replace(
                               config.synthetic(),
                               data=dataclasses.replace(config.synthetic().data,
                                                        image_size=16),
                               inference=config.InferenceConfig(threshold=0.3)))
        images = np.random.default_rng(0).uniform(0, 255, (1, 40, 24, 3)).astype(np.float32)
        small = tf.image.resize(images, (16, 16), antialias=True)
        want = tf.image.resize(network.probabilities(
            model, preprocess.preprocess(small, 3)), (40, 24))
        loaded = tf.saved_model.load(path)  # keep it: its functions need its variables
        got = loaded.serve(images)
        self.assertAllClose(got["probabilities"], want, atol=1e-5)
        self.assertAllEqual(got["mask"], tf.cast(want[..., 1] > 0.3, tf.uint8))
        with open(os.path.join(path, "r2u_model.json")) as f:
            info = json.load(f)
        self.assertEqual((info["threshold"], info["input_size"]), (0.3, [16, 16]))
        self.assertEqual(export.InputSpec.from_info(info), spec.for_model(model.cfg))
        self.assertEqual(info["preprocessing"], {"channels": 3, "contrast": False,
                                                 "standardize_in_fov": False})
        self.assertFalse(info["contrast"])  # for readers of the layout before the spec

    def test_export_replaces_an_existing_export_whole(self):
        model = models.build("unet", in_channels=1, filters=2, depth=1)
        path = os.path.join(tempfile.mkdtemp(), "export")
        export.save(model, path)
        model.head.b.assign([5.0, -5.0])
        export.save(model, path)
        loaded = tf.saved_model.load(path)
        probs = loaded.serve(tf.zeros([1, 4, 4, 1]))["probabilities"]
        self.assertAllGreater(probs[..., 0], 0.99)
        self.assertEqual([n for n in os.listdir(os.path.dirname(path))], ["export"])


class TrainedWithContrastTest(tf.test.TestCase):
    """Training-time validation, the checkpoint and the SavedModel see one input."""

    def test_three_paths_give_the_same_probabilities(self):
        from r2u.data import prepare
        from r2u.data import prepared
        root = tempfile.mkdtemp()
        data_dir = os.path.join(root, "data")
        prepare.prepare("synthetic", None, data_dir, image_size=32, limit=8)
        exp = config.synthetic()
        exp = dataclasses.replace(
            exp, model=dataclasses.replace(exp.model, filters=4, depth=2),
            preprocessing=dataclasses.replace(exp.preprocessing, contrast=True),
            train=dataclasses.replace(exp.train, batch_size=4, steps_per_epoch=2,
                                      epochs=1, xla="off"))
        model_dir = os.path.join(root, "run")
        loop.train(exp, model_dir, data_dir)
        ckpt = loading.load(model_dir, "checkpoint")
        saved = loading.load(model_dir, "saved_model")
        self.assertTrue(saved.spec.contrast)
        self.assertEqual(saved.spec, ckpt.spec)
        # As training validated: the tf.data pipeline's preprocessing, then the network.
        validation = prepared.load(data_dir).dataset("validation", batch_size=1,
                                                     training=False,
                                                     preprocessing=exp.preprocessing,
                                           cache=False)
        from r2u.evaluation import evaluate
        raw = evaluate.raw_examples(data_dir, "validation")
        plain = dataclasses.replace(ckpt, spec=dataclasses.replace(
            ckpt.spec, preprocessing=dataclasses.replace(ckpt.spec.preprocessing,
                                                         contrast=False)))
        for example, raw_example in zip(validation.take(3), raw):
            want = ckpt.network(example["image"])[0]
            self.assertAllClose(ckpt.predict_image(raw_example["image"]), want, atol=1e-4)
            self.assertAllClose(saved.predict_image(raw_example["image"]), want,
                                atol=1e-4)
            # The input the network sees is the pipeline's; without contrast it is not,
            # so this test fails if an inference path drops the contrast step.
            image = raw_example["image"][None].astype(np.float32) / 255.0
            self.assertAllClose(ckpt.preprocess(image), example["image"], atol=1e-4)
            self.assertNotAllClose(plain.preprocess(image), example["image"], atol=1e-2)


class InferenceTest(tf.test.TestCase):

    def test_padding_does_not_change_fully_convolutional_interior_shape(self):
        x = tf.reshape(tf.range(2 * 5 * 7, dtype=tf.float32), [1, 5, 7, 2])
        padded, size = network.pad_to_multiple(x, 4)
        self.assertEqual(padded.shape, (1, 8, 8, 2))
        self.assertAllEqual(size, [5, 7])
        self.assertAllEqual(padded[:, :5, :7], x)

    def test_padding_works_for_images_smaller_than_the_padding(self):
        x = tf.constant([[1.0, 2.0]])[None, ..., None]  # 1x2
        padded, _ = network.pad_to_multiple(x, 4)
        self.assertAllEqual(padded[0, ..., 0], [[1, 2, 2, 1]] * 4)

    def test_tiles_cover_the_borders_and_stitch_back(self):
        image = np.random.default_rng(0).uniform(size=(37, 50, 1)).astype(np.float32)
        # An identity "model": stitching must reproduce the image exactly.
        probs = network.tiled_probabilities(lambda t: t, image, tile=16, stride=10)
        self.assertAllClose(probs, image)
        self.assertEqual(list(network.tile_starts(37, 16, 10)), [0, 10, 20, 21])

    def test_tiled_equals_whole_image_for_a_pointwise_model(self):
        model = models.build("unet", in_channels=1, filters=2, depth=1)
        x = np.random.default_rng(1).normal(size=(24, 30, 1)).astype(np.float32)
        # A receptive field larger than the overlap makes tiled != whole in general; with
        # a 1x1 head only (no context) they must agree: use the head alone.
        head = lambda t: tf.nn.softmax(model.head(tf.tile(t, [1, 1, 1, 2])))
        whole = head(x[None])[0]
        tiled = network.tiled_probabilities(head, x, tile=8, stride=5)
        self.assertAllClose(tiled, whole, atol=1e-6)


if __name__ == "__main__":
    tf.test.main()
