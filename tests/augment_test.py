"""Tests for r2u.data.augment."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u.data import augment
from r2u.data import preprocess
from r2u.data import synthetic

_NO_ZOOM = dict(max_rotation=0.0, scale_range=(1.0, 1.0))
# Traced once per argument structure: keeps the loops below fast.
_augment = tf.function(augment.augment)


def _lesion(size=32):
    example = next(synthetic.examples("lesion", "train", 1, size, seed=3))
    return example["image"], example["mask"][..., None], example["fov"][..., None]


def _dihedral(x):
    """The 8 flips/quarter turns of a square [H, W, ...] array."""
    out = []
    for k in range(4):
        r = np.rot90(x, k)
        out += [r, r[:, ::-1]]
    return out


class AugmentTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(True, False)
    def test_shapes_dtypes_and_binary_mask(self, photometric):
        image, mask, fov = _lesion()
        out_image, out_mask, out_fov = augment.augment(
            image, mask, fov, tf.constant([1, 2]), photometric=photometric)
        self.assertEqual(out_image.dtype, tf.float32)
        self.assertEqual(out_image.shape, image.shape)
        self.assertEqual(out_mask.dtype, tf.uint8)
        self.assertEqual(out_mask.shape, mask.shape)
        self.assertEqual(out_fov.shape, fov.shape)
        self.assertBetween(float(tf.reduce_min(out_image)), 0.0, 1.0)
        self.assertBetween(float(tf.reduce_max(out_image)), 0.0, 1.0)
        self.assertContainsSubset(np.unique(out_mask), {0, 1})
        self.assertGreater(float(tf.reduce_sum(tf.cast(out_mask, tf.int32))), 0)

    def test_same_seed_same_output_different_seed_differs(self):
        image, mask, fov = _lesion()
        a = augment.augment(image, mask, fov, tf.constant([0, 7]))
        b = augment.augment(image, mask, fov, tf.constant([0, 7]))
        c = augment.augment(image, mask, fov, tf.constant([0, 8]))
        for x, y in zip(a, b):
            self.assertAllEqual(x, y)
        self.assertNotAllClose(a[0], c[0])

    def test_image_equal_to_mask_stays_aligned(self):
        _, mask, _ = _lesion(48)
        for i in range(8):
            image, out_mask, _ = _augment(
                mask.astype(np.float32), mask, mask, tf.constant([i, 1]),
                photometric=False, max_rotation=30.0, scale_range=(0.8, 1.25))
            disagree = np.abs(image.numpy() - out_mask.numpy()) > 0.5
            # Only boundary pixels may round differently.
            self.assertLess(disagree.mean(), 0.02)

    @parameterized.parameters((16, 16), (12, 20))
    def test_flips_and_quarter_turns_are_exact(self, height, width):
        x = np.arange(height * width, dtype=np.float32).reshape(height, width, 1)
        seen = set()
        for i in range(64):
            image, mask, fov = _augment(
                x / x.max(), x.astype(np.int32), x, tf.constant([i, 0]),
                photometric=False, **_NO_ZOOM)
            self.assertAllEqual(mask.numpy().astype(np.float32), fov)
            self.assertAllClose(image * x.max(), fov, atol=1e-3)
            if height == width:
                candidates = _dihedral(x)
            else:
                candidates = [x, x[::-1], x[:, ::-1], x[::-1, ::-1]]
            matches = [j for j, c in enumerate(candidates) if np.array_equal(c, fov)]
            self.assertLen(matches, 1)
            seen.add(matches[0])
        self.assertLen(seen, 8 if height == width else 4)

    def test_rotation_moves_pixels(self):
        x = np.random.default_rng(0).random((24, 24, 1)).astype(np.float32)
        image, _, _ = augment.augment(
            x, x[..., 0], x, tf.constant([3, 3]), photometric=False,
            max_rotation=20.0, scale_range=(1.0, 1.0))
        for candidate in _dihedral(x):
            self.assertGreater(np.abs(image.numpy() - candidate).mean(), 0.05)

    def test_photometric_only_keeps_geometry(self):
        image, mask, fov = _lesion()
        out_image, out_mask, out_fov = augment.augment(
            image, mask, fov, tf.constant([5, 5]), geometric=False)
        self.assertAllEqual(out_mask, mask)
        self.assertAllEqual(out_fov, fov)
        self.assertGreater(
            float(tf.reduce_mean(tf.abs(out_image - image / 255))), 1e-3)

    def test_saturation_and_hue_keep_luma(self):
        rng = np.random.default_rng(1)
        image = rng.uniform(0.3, 0.7, (8, 8, 3)).astype(np.float32)
        mask = np.zeros((8, 8, 1), np.uint8)
        no_tone = dict(geometric=False, brightness=0.0, contrast_range=(1.0, 1.0),
                       gamma_range=(1.0, 1.0))
        luma = image @ np.array([0.299, 0.587, 0.114], np.float32)
        gray, _, _ = augment.augment(image, mask, mask, tf.constant([0, 1]),
                                     saturation_range=(0.0, 0.0), **no_tone)
        self.assertAllClose(gray, np.repeat(luma[..., None], 3, -1), atol=1e-5)
        turned, _, _ = augment.augment(image, mask, mask, tf.constant([0, 1]),
                                       saturation_range=(1.0, 1.0), max_hue=0.1,
                                       **no_tone)
        self.assertNotAllClose(turned, image)
        self.assertAllClose(turned.numpy() @ np.array([0.299, 0.587, 0.114]), luma,
                            atol=1e-4)

    def test_only_gamma_survives_standardisation_on_gray(self):
        rng = np.random.default_rng(2)
        gray = rng.uniform(0.3, 0.7, (16, 16, 1)).astype(np.float32)
        mask = np.zeros((16, 16, 1), np.uint8)
        want = preprocess.preprocess(gray, 1)
        for seed in range(3):
            flat, _, _ = augment.augment(gray, mask, mask, tf.constant([seed, 0]),
                                         geometric=False, gamma_range=(1.0, 1.0))
            self.assertNotAllClose(flat, gray)
            self.assertAllClose(preprocess.preprocess(flat, 1), want, atol=1e-4)
            curved, _, _ = augment.augment(gray, mask, mask, tf.constant([seed, 0]),
                                           geometric=False, gamma_range=(1.5, 1.5))
            self.assertNotAllClose(preprocess.preprocess(curved, 1), want, atol=0.02)

    def test_xla_matches_eager(self):
        image, mask, fov = _lesion()
        seed = tf.constant([4, 2], tf.int64)
        fn = tf.function(lambda *a: augment.augment(*a), jit_compile=True)
        eager = augment.augment(image, mask, fov, seed)
        compiled = fn(image, mask, fov, seed)
        self.assertAllClose(compiled[0], eager[0], atol=1e-4)
        # Nearest sampling may round a boundary pixel differently under XLA.
        self.assertLess(np.mean(compiled[1].numpy() != eager[1].numpy()), 0.01)

    def test_in_tf_data_is_deterministic(self):
        image, mask, fov = _lesion()
        ds = tf.data.Dataset.from_tensors((image, mask, fov)).repeat(3).enumerate()
        ds = ds.map(
            lambda i, x: augment.augment(*x, tf.stack([tf.constant(9, tf.int64), i])),
            num_parallel_calls=tf.data.AUTOTUNE)
        first = [x[0] for x in ds.as_numpy_iterator()]
        second = [x[0] for x in ds.as_numpy_iterator()]
        self.assertAllEqual(np.stack(first), np.stack(second))
        self.assertNotAllClose(first[0], first[1])
        eager = augment.augment(image, mask, fov, tf.constant([9, 1], tf.int64))
        self.assertAllClose(first[1], eager[0])


if __name__ == "__main__":
    tf.test.main()
