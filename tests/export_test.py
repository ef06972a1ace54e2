"""SavedModel export: plain tf.saved_model.load gives the same probabilities."""

import os
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u import export
from r2u import inference
from r2u import models
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
            want = inference.probabilities(model, preprocess.preprocess(images, 3))
            got = loaded.serve(images)
            self.assertEqual(got.shape, shape[:3] + (2,))
            self.assertAllClose(got, want, atol=1e-5)
            self.assertAllClose(loaded.signatures["serving_default"](
                images=tf.constant(images))["output_0"], want, atol=1e-5)

    def test_export_replaces_an_existing_export_whole(self):
        model = models.build("unet", in_channels=1, filters=2, depth=1)
        path = os.path.join(tempfile.mkdtemp(), "export")
        export.save(model, path)
        model.head.b.assign([5.0, -5.0])
        export.save(model, path)
        loaded = tf.saved_model.load(path)
        probs = loaded.serve(tf.zeros([1, 4, 4, 1]))
        self.assertAllGreater(probs[..., 0], 0.99)
        self.assertEqual([n for n in os.listdir(os.path.dirname(path))], ["export"])


class InferenceTest(tf.test.TestCase):

    def test_padding_does_not_change_fully_convolutional_interior_shape(self):
        x = tf.reshape(tf.range(2 * 5 * 7, dtype=tf.float32), [1, 5, 7, 2])
        padded, size = inference.pad_to_multiple(x, 4)
        self.assertEqual(padded.shape, (1, 8, 8, 2))
        self.assertAllEqual(size, [5, 7])
        self.assertAllEqual(padded[:, :5, :7], x)

    def test_padding_works_for_images_smaller_than_the_padding(self):
        x = tf.constant([[1.0, 2.0]])[None, ..., None]  # 1x2
        padded, _ = inference.pad_to_multiple(x, 4)
        self.assertAllEqual(padded[0, ..., 0], [[1, 2, 2, 1]] * 4)

    def test_tiles_cover_the_borders_and_stitch_back(self):
        image = np.random.default_rng(0).uniform(size=(37, 50, 1)).astype(np.float32)
        # An identity "model": stitching must reproduce the image exactly.
        probs = inference.tiled_probabilities(lambda t: t, image, tile=16, stride=10)
        self.assertAllClose(probs, image)
        self.assertEqual(list(inference.tile_starts(37, 16, 10)), [0, 10, 20, 21])

    def test_tiled_equals_whole_image_for_a_pointwise_model(self):
        model = models.build("unet", in_channels=1, filters=2, depth=1)
        x = np.random.default_rng(1).normal(size=(24, 30, 1)).astype(np.float32)
        # A receptive field larger than the overlap makes tiled != whole in general; with
        # a 1x1 head only (no context) they must agree: use the head alone.
        head = lambda t: tf.nn.softmax(model.head(tf.tile(t, [1, 1, 1, 2])))
        whole = head(x[None])[0]
        tiled = inference.tiled_probabilities(head, x, tile=8, stride=5)
        self.assertAllClose(tiled, whole, atol=1e-6)


if __name__ == "__main__":
    tf.test.main()
