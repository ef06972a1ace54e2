"""Shard verification: a truncated, grown or altered shard is refused by name, also when
training meets it without --verify_data."""

import os
import tempfile
from unittest import mock

import tensorflow as tf

from r2u import config
from r2u.training import loop
from r2u.data import imageio
from r2u.data import manifest
from r2u.data import prepare
from r2u.data import prepared
from r2u.data import tfrecord


class VerifyTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        prepare.prepare("synthetic", None, self.dir, image_size=16, limit=4, num_shards=2)
        self.shard = os.path.join(self.dir, manifest.load(self.dir)["splits"]["train"]
                                  ["shards"][1]["file"])

    def _flip_a_byte(self):
        """Corrupts the shard in place, keeping its size."""
        with open(self.shard, "r+b") as f:
            f.seek(40)
            byte = f.read(1)
            f.seek(40)
            f.write(bytes([byte[0] ^ 0xFF]))

    def test_intact_data_passes_both_checks(self):
        manifest.verify(self.dir)
        manifest.verify(self.dir, full=True)

    def test_truncated_shard_is_named(self):
        with open(self.shard, "r+b") as f:
            f.truncate(os.path.getsize(self.shard) - 7)
        with self.assertRaisesRegex(imageio.DataError, "train-00001-of-00002.*truncated"):
            manifest.verify(self.dir)

    def test_same_size_corruption_needs_the_full_check(self):
        self._flip_a_byte()
        manifest.verify(self.dir)  # sizes still match: the fast path cannot see it
        with self.assertRaisesRegex(imageio.DataError, "train-00001-of-00002.*sha256"):
            manifest.verify(self.dir, full=True)

    def test_training_on_a_same_size_corrupt_shard_names_it(self):
        self._flip_a_byte()
        exp = config.preset("synthetic")
        exp = config.Experiment(
            model=config.ModelConfig(arch="unet", filters=2, depth=1, in_channels=3),
            data=exp.data, train=config.TrainConfig(steps=4, batch_size=2, log_every=1))
        with self.assertRaisesRegex(imageio.DataError, "train-00001-of-00002.*sha256"):
            loop.train(exp, tempfile.mkdtemp(), self.dir)

    def test_missing_shard_is_named(self):
        os.remove(self.shard)
        with self.assertRaisesRegex(imageio.DataError, "train-00001-of-00002.*missing"):
            manifest.verify(self.dir)


class PreparedDataTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        prepare.prepare("synthetic", None, cls.dir, image_size=16, limit=4, num_shards=2)

    def test_everything_comes_from_one_read_of_the_manifest(self):
        body = manifest.load(self.dir)
        with mock.patch.object(manifest, "load", side_effect=[body]) as load:
            data = prepared.load(self.dir)
            data.verify(full=True)
            train_split = data.split("train")
            self.assertEqual(list(train_split.shards), tfrecord.shard_paths(
                self.dir, "train", body))
            ds = data.dataset("validation", batch_size=1, training=False)
        load.assert_called_once_with(self.dir)
        self.assertEqual(data.name, "synthetic")
        self.assertEqual(train_split.num_examples, body["splits"]["train"]["num_examples"])
        self.assertEqual(list(train_split.ids), body["splits"]["train"]["ids"])
        self.assertLen(train_split.shards, 2)
        self.assertEqual(list(data.class_weights), body["class_weights"])
        self.assertEqual(data.channels, 3)
        self.assertEqual(data.image_shape, (16, 16, 3))
        self.assertEqual(len(list(ds)), data.split("validation").num_examples)
        self.assertIs(prepared.of(data), data)

    def test_classes(self):
        data = prepared.load(self.dir)
        self.assertEqual((data.classes, data.num_classes), (("background", "lesion"), 2))
        body = manifest.load(self.dir)
        self.assertEqual((body["label_values"], body["ignore_value"]), ([0, 1], None))

    def test_a_manifest_from_before_classes_loads_as_binary(self):
        root = tempfile.mkdtemp()
        body = manifest.load(self.dir)
        for key in ("classes", "num_classes", "label_values", "ignore_value",
                    "class_counts"):
            del body[key]
        manifest.write(root, body)
        data = prepared.load(root)
        self.assertEqual(data.classes, ("background", "foreground"))
        self.assertEqual(data.num_classes, 2)

    def test_classes_and_weights_must_agree(self):
        root = tempfile.mkdtemp()
        body = manifest.load(self.dir)
        body["classes"] = ["background", "a", "b"]
        manifest.write(root, body)
        with self.assertRaisesRegex(imageio.DataError,
                                    "corrupt manifest, 3 classes but class weights"):
            prepared.load(root)

    def test_unknown_split_is_named(self):
        with self.assertRaisesRegex(imageio.DataError, r"manifest.json: no split 'dev'"):
            prepared.load(self.dir).split("dev")

    def test_a_missing_manifest_is_named(self):
        with self.assertRaisesRegex(imageio.DataError, "manifest not found"):
            prepared.of(tempfile.mkdtemp())

    def test_verify_names_a_truncated_shard_without_reading_the_manifest_again(self):
        root = tempfile.mkdtemp()
        prepare.prepare("synthetic", None, root, image_size=16, limit=4, num_shards=2)
        data = prepared.load(root)
        shard = data.split("train").shards[1]
        with open(shard, "r+b") as f:
            f.truncate(os.path.getsize(shard) - 7)
        with mock.patch.object(manifest, "load", side_effect=AssertionError("re-read")):
            with self.assertRaisesRegex(imageio.DataError,
                                        "train-00001-of-00002.*truncated"):
                data.verify()


if __name__ == "__main__":
    tf.test.main()
