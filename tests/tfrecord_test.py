"""Tests for r2u.data.tfrecord and r2u.data.manifest."""

import hashlib
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u.data import imageio
from r2u.data import manifest
from r2u.data import tfrecord


def _tmpdir(test):
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _example(index=0, height=7, width=5, channels=3, mask2=False):
    rng = np.random.default_rng(index)
    example = {
        "id": f"ex-{index}",
        "image": rng.integers(0, 256, (height, width, channels), dtype=np.uint8),
        "mask": rng.integers(0, 2, (height, width), dtype=np.uint8),
        "fov": rng.integers(0, 2, (height, width), dtype=np.uint8),
    }
    if mask2:
        example["mask2"] = rng.integers(0, 2, (height, width), dtype=np.uint8)
    return example


class EncodeParseTest(tf.test.TestCase, parameterized.TestCase):

    def _check(self, parsed, example):
        self.assertEqual(parsed["id"].numpy().decode(), example["id"])
        self.assertEqual(parsed["image"].dtype, tf.uint8)
        self.assertAllEqual(parsed["image"], example["image"])
        for key in ("mask", "fov", "mask2"):
            if key in parsed:
                self.assertEqual(parsed[key].shape, example[key].shape + (1,))
                self.assertAllEqual(parsed[key][:, :, 0], example[key])

    @parameterized.parameters((3, False), (1, False), (3, True))
    def test_round_trip_eager(self, channels, mask2):
        example = _example(channels=channels, mask2=mask2)
        parsed = tfrecord.parse(tf.constant(tfrecord.encode(example)),
                                with_mask2=mask2)
        self.assertEqual(set(parsed), {"id", "image", "mask", "fov"}
                         | ({"mask2"} if mask2 else set()))
        self._check(parsed, example)

    def test_round_trip_in_dataset_map(self):
        examples = [_example(i, height=4 + i, width=6) for i in range(3)]
        ds = tf.data.Dataset.from_tensor_slices(
            [tfrecord.encode(e) for e in examples]).map(
                lambda s: tfrecord.parse(s, channels=3))
        self.assertEqual(ds.element_spec["image"].shape.as_list(),
                         [None, None, 3])
        self.assertEqual(ds.element_spec["mask"].shape.as_list(),
                         [None, None, 1])
        for parsed, example in zip(ds, examples):
            self._check(parsed, example)

    def test_header_fields(self):
        proto = tf.train.Example.FromString(tfrecord.encode(_example()))
        feature = proto.features.feature
        self.assertEqual(feature["image/height"].int64_list.value, [7])
        self.assertEqual(feature["image/width"].int64_list.value, [5])
        self.assertEqual(feature["image/channels"].int64_list.value, [3])
        self.assertNotIn("mask2/png", feature)

    def test_bad_image_dtype(self):
        example = _example()
        example["image"] = example["image"].astype(np.float32)
        with self.assertRaisesRegex(imageio.DataError, "'ex-0': image must be"):
            tfrecord.encode(example)

    def test_mask_shape_mismatch(self):
        example = _example()
        example["mask"] = example["mask"][:-1]
        with self.assertRaisesRegex(imageio.DataError, "'ex-0': mask must be"):
            tfrecord.encode(example)

    def test_mask_values_not_binary(self):
        example = _example()
        example["fov"] = example["fov"] * 255
        with self.assertRaisesRegex(imageio.DataError, "fov values must be 0/1"):
            tfrecord.encode(example)

    def test_masks_hold_class_indices_up_to_254(self):
        example = _example(mask2=True)
        example["mask"] = (np.arange(35, dtype=np.uint8) * 7).reshape(7, 5)  # 0..238
        example["mask"][0, 0] = 254
        example["mask2"] = example["mask"][::-1].copy()
        parsed = tfrecord.parse(tf.constant(tfrecord.encode(example)), with_mask2=True)
        self._check(parsed, example)
        example["mask"][0, 0] = 255
        with self.assertRaisesRegex(imageio.DataError,
                                    r"mask values must be class indices 0..254"):
            tfrecord.encode(example)

    @parameterized.parameters(2, 4)
    def test_two_and_four_channel_images(self, channels):
        example = _example(channels=channels)
        for decode in (None, channels):
            parsed = tfrecord.parse(tf.constant(tfrecord.encode(example)),
                                    channels=decode)
            self._check(parsed, example)
        ds = tf.data.Dataset.from_tensors(tfrecord.encode(example)).map(
            lambda s: tfrecord.parse(s, channels=channels))
        self.assertEqual(ds.element_spec["image"].shape.as_list(),
                         [None, None, channels])

    def test_five_channels_are_refused(self):
        with self.assertRaisesRegex(imageio.DataError,
                                    r"image must be uint8 \[H, W, 1..4\]"):
            tfrecord.encode(_example(channels=5))


class WriteSplitTest(tf.test.TestCase):

    def test_round_robin_shards(self):
        out = _tmpdir(self)
        examples = [_example(i) for i in range(5)]
        result = tfrecord.write_split(out, "train", iter(examples), 2)
        self.assertEqual(result["num_examples"], 5)
        self.assertEqual(result["ids"], [e["id"] for e in examples])
        names = [s["file"] for s in result["shards"]]
        self.assertEqual(names, ["train-00000-of-00002.tfrecord",
                                 "train-00001-of-00002.tfrecord"])
        self.assertEqual([s["num_examples"] for s in result["shards"]], [3, 2])
        self.assertEqual(sorted(os.listdir(out)), names)  # No temp files left.
        for index, shard in enumerate(result["shards"]):
            path = os.path.join(out, shard["file"])
            with open(path, "rb") as f:
                self.assertEqual(shard["sha256"], hashlib.sha256(f.read()).hexdigest())
            self.assertEqual(shard["bytes"], os.path.getsize(path))
            ids = [tfrecord.parse(s)["id"].numpy().decode()
                   for s in tf.data.TFRecordDataset(path)]
            self.assertEqual(ids, [e["id"] for e in examples[index::2]])

    def test_failure_keeps_existing_shards(self):
        out = _tmpdir(self)
        tfrecord.write_split(out, "train", [_example(0), _example(1)], 1)
        path = os.path.join(out, "train-00000-of-00001.tfrecord")
        with open(path, "rb") as f:
            before = f.read()

        def broken():
            yield _example(2)
            raise imageio.DataError("bad file")

        with self.assertRaisesRegex(imageio.DataError, "bad file"):
            tfrecord.write_split(out, "train", broken(), 1)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.listdir(out), ["train-00000-of-00001.tfrecord"])

    def test_shard_paths_from_manifest(self):
        out = _tmpdir(self)
        split = tfrecord.write_split(out, "test", [_example(i) for i in range(3)], 3)
        manifest.write(out, _manifest({"test": split}))
        paths = tfrecord.shard_paths(out, "test")
        self.assertEqual(paths, [os.path.join(out, f"test-0000{i}-of-00003.tfrecord")
                                 for i in range(3)])
        with self.assertRaisesRegex(
                imageio.DataError, r"no split 'train' \(available: test\)"):
            tfrecord.shard_paths(out, "train")


def _manifest(splits):
    return {"dataset": "toy", "splits": splits, "image_shape": [7, 5, 3],
            "channels": 3, "class_weights": [0.6, 3.0], "source_files": [],
            "preprocessing": "none", "format_version": 1}


class ManifestTest(tf.test.TestCase):

    def test_write_load_round_trip(self):
        out = _tmpdir(self)
        body = _manifest({})
        path = manifest.write(out, body)
        self.assertEqual(path, os.path.join(out, "manifest.json"))
        self.assertEqual(manifest.load(out), body)
        self.assertEqual(os.listdir(out), ["manifest.json"])

    def test_write_requires_keys(self):
        with self.assertRaisesRegex(ValueError, "lacks keys: class_weights"):
            body = _manifest({})
            del body["class_weights"]
            manifest.write(_tmpdir(self), body)

    def test_missing(self):
        out = _tmpdir(self)
        with self.assertRaisesRegex(
                imageio.DataError, "manifest.json: manifest not found"):
            manifest.load(out)

    def test_corrupt_json(self):
        out = _tmpdir(self)
        with open(os.path.join(out, "manifest.json"), "w") as f:
            f.write('{"dataset": ')
        with self.assertRaisesRegex(
                imageio.DataError, "manifest.json: corrupt manifest"):
            manifest.load(out)

    def test_missing_key_and_version(self):
        out = _tmpdir(self)
        body = _manifest({})
        body["format_version"] = 2
        manifest.write(out, body)
        with self.assertRaisesRegex(imageio.DataError, "unsupported format_version 2"):
            manifest.load(out)
        with open(os.path.join(out, "manifest.json"), "w") as f:
            f.write('{"dataset": "x"}')
        with self.assertRaisesRegex(imageio.DataError, "missing keys: splits"):
            manifest.load(out)


if __name__ == "__main__":
    tf.test.main()
