"""Tests for r2u.data.pipeline on tiny synthetic TFRecord sets."""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u.data import manifest as manifest_lib
from r2u import config
from r2u.data import prepared
from r2u.data import preprocess
from r2u.data import synthetic
from r2u.data import tfrecord


def _write_dataset(out_dir, kind, size, counts, mask2_splits=(), image_shape=True):
    """Writes synthetic splits {split: (num, shards)} and a manifest."""
    os.makedirs(out_dir, exist_ok=True)
    splits, examples = {}, {}
    for split, (num, shards) in counts.items():
        items = list(synthetic.examples(kind, split, num, size, seed=0))
        for item in items:
            if split in mask2_splits:
                item["mask2"] = 1 - item["mask"]
            examples[item["id"]] = item
        splits[split] = tfrecord.write_split(out_dir, split, items, shards)
    manifest_lib.write(out_dir, {
        "dataset": f"test_{kind}", "splits": splits,
        "image_shape": [size, size, 3] if image_shape else None, "channels": 3,
        "class_weights": [0.6, 2.5], "mask2_splits": list(mask2_splits),
        "source_files": [], "preprocessing": "test", "format_version": 1})
    return examples


def _take(ds, n):
    return [tf.nest.map_structure(lambda x: x.numpy(), b) for b in ds.take(n)]


class PipelineTest(tf.test.TestCase, parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        cls.lesion = os.path.join(cls.root, "lesion")
        cls.lesion_examples = _write_dataset(
            cls.lesion, "lesion", 32, {"train": (8, 4), "validation": (3, 1)},
            mask2_splits=("validation",))
        cls.vessels = os.path.join(cls.root, "vessels")
        _write_dataset(cls.vessels, "vessels", 40, {"train": (3, 1)})

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root)
        super().tearDownClass()

    def test_training_whole_images(self):
        ds = prepared.load(self.lesion).dataset("train", batch_size=4, training=True)
        spec = ds.element_spec
        self.assertEqual(spec["image"], tf.TensorSpec([4, 32, 32, 3], tf.float32))
        self.assertEqual(spec["mask"], tf.TensorSpec([4, 32, 32], tf.int32))
        self.assertEqual(spec["fov"], tf.TensorSpec([4, 32, 32], tf.float32))
        for batch in _take(ds, 3):  # 12 > 8 examples: crosses an epoch.
            self.assertContainsSubset(np.unique(batch["mask"]), {0, 1})
            self.assertAllEqual(batch["fov"], np.ones((4, 32, 32)))
            self.assertAllClose(batch["image"].mean(axis=(1, 2, 3)), np.zeros(4),
                                atol=1e-4)
            self.assertAllClose(batch["image"].std(axis=(1, 2, 3)), np.ones(4),
                                atol=1e-3)

    def test_same_seed_same_stream(self):
        def stream(seed, cache=True):
            ds = prepared.load(self.lesion).dataset("train", batch_size=3,
                                       training=True, seed=seed, cache=cache)
            return _take(ds, 4)

        first, again = stream(1), stream(1, cache=False)
        other = stream(2)
        for a, b in zip(first, again):
            self.assertAllEqual(a["image"], b["image"])
            self.assertAllEqual(a["mask"], b["mask"])
        self.assertNotAllClose(first[0]["image"], other[0]["image"])

    def test_no_augmentation_gives_preprocessed_originals(self):
        ds = prepared.load(self.lesion).dataset("train", batch_size=8, training=True,
                                   augment=False,
                                   preprocessing=config.Preprocessing(channels=1, contrast=True))
        batch = _take(ds, 1)[0]
        originals = np.stack([e["image"] for k, e in self.lesion_examples.items()
                              if k.startswith("lesion-train")])
        want = preprocess.preprocess(originals, 1, True).numpy()
        # Shuffled: match each output to one original.
        for image in batch["image"]:
            errors = np.abs(want - image).max(axis=(1, 2, 3))
            self.assertLess(errors.min(), 1e-4)

    def test_patches_are_static_and_aligned_with_fov(self):
        ds = prepared.load(self.vessels).dataset("train", batch_size=8, training=True,
                                   patch_size=16, patches_per_image=4,
                                   preprocessing=config.Preprocessing(
                                       channels=1, standardize_in_fov=True))
        self.assertEqual(ds.element_spec["image"].shape, (8, 16, 16, 1))
        self.assertEqual(ds.element_spec["mask"].shape, (8, 16, 16))
        for batch in _take(ds, 3):
            self.assertAllEqual(batch["fov"][:, 8, 8], np.ones(8))  # Centres in FOV.
            outside = batch["fov"] == 0
            self.assertAllEqual(batch["image"][..., 0][outside],
                                np.zeros(outside.sum()))
            self.assertTrue(np.all(batch["mask"] <= batch["fov"]))
            self.assertGreater(batch["mask"].sum(), 0)

    def test_resize(self):
        ds = prepared.load(self.lesion).dataset("train", batch_size=2, training=True,
                                   image_size=16)
        self.assertEqual(ds.element_spec["image"].shape, (2, 16, 16, 3))
        batch = _take(ds, 1)[0]
        self.assertContainsSubset(np.unique(batch["mask"]), {0, 1})

    def test_evaluation_yields_whole_images_once(self):
        ds = prepared.load(self.lesion).dataset("validation", batch_size=5,
                                   training=False)
        batches = _take(ds, 10)
        self.assertLen(batches, 3)
        ids = [b["id"][0].decode() for b in batches]
        self.assertEqual(ids, [f"lesion-validation-{i:05d}" for i in range(3)])
        for b, name in zip(batches, ids):
            original = self.lesion_examples[name]
            self.assertEqual(b["image"].shape, (1, 32, 32, 3))
            self.assertAllEqual(b["mask"][0], original["mask"])
            self.assertAllEqual(b["mask2"][0], 1 - original["mask"])
            self.assertAllClose(b["image"][0],
                                preprocess.preprocess(original["image"], 3), atol=1e-5)

    def test_file_level_sharding_is_disjoint(self):
        seen = []
        for index in range(2):
            context = tf.distribute.InputContext(num_input_pipelines=2,
                                                 input_pipeline_id=index)
            ds = prepared.load(self.lesion).dataset("train", batch_size=1,
                                       training=False, input_context=context)
            seen.append({b["id"][0].decode() for b in _take(ds, 100)})
        self.assertLen(seen[0], 4)
        self.assertLen(seen[1], 4)
        self.assertEmpty(seen[0] & seen[1])
        self.assertLen(seen[0] | seen[1], 8)

    def test_fewer_shards_than_pipelines_raises(self):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0)
        with self.assertRaisesRegex(ValueError, "1 shard file.*2 input pipelines"):
            prepared.load(self.lesion).dataset("validation", batch_size=1,
                                  training=True, input_context=context)

    def test_whole_image_training_needs_a_size_when_sizes_vary(self):
        varying = os.path.join(self.root, "varying")
        _write_dataset(varying, "lesion", 32, {"train": (2, 1)}, image_shape=False)
        with self.assertRaisesRegex(ValueError, "image_size"):
            prepared.load(varying).dataset("train", batch_size=2, training=True)
        ds = prepared.load(varying).dataset("train", batch_size=2, training=True,
                                   patch_size=8, patches_per_image=2)
        self.assertEqual(ds.element_spec["image"].shape, (2, 8, 8, 3))
        self.assertLen(_take(ds, 1), 1)

    def test_patch_larger_than_images_raises(self):
        with self.assertRaisesRegex(ValueError, "patch_size 48"):
            prepared.load(self.lesion).dataset("train", batch_size=2, training=True,
                                  patch_size=48)

    def test_class_weights(self):
        self.assertEqual(list(prepared.load(self.lesion).class_weights), [0.6, 2.5])


if __name__ == "__main__":
    tf.test.main()
