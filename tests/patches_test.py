"""Tests for r2u.data.patches."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u.data import patches


def _coordinates(height, width):
    """int32 [H, W, 2] whose pixels hold their own (row, col)."""
    return np.stack(np.mgrid[0:height, 0:width], axis=-1).astype(np.int32)


class RandomPatchesTest(tf.test.TestCase, parameterized.TestCase):

    def test_patches_come_from_the_right_place(self):
        image = _coordinates(30, 40)
        mask = ((image[..., 0] * 7 + image[..., 1]) % 3 == 0).astype(np.uint8)
        fov = np.zeros((30, 40, 1), np.uint8)
        fov[5:20, 10:35] = 1
        imgs, masks, fovs = patches.random_patches(
            image, mask, fov, 8, 50, tf.constant([1, 2]))
        self.assertEqual(imgs.shape, (50, 8, 8, 2))
        self.assertEqual(masks.shape, (50, 8, 8))
        self.assertEqual(fovs.shape, (50, 8, 8, 1))
        self.assertEqual(masks.dtype, tf.uint8)
        for img, m, f in zip(imgs.numpy(), masks.numpy(), fovs.numpy()):
            top, left = img[0, 0]
            self.assertAllEqual(img, image[top:top + 8, left:left + 8])
            self.assertAllEqual(m, mask[top:top + 8, left:left + 8])
            self.assertAllEqual(f, fov[top:top + 8, left:left + 8])
            self.assertEqual(f[4, 4, 0], 1)  # The centre lies in the FOV.

    def test_centres_cover_the_fov(self):
        image = _coordinates(20, 20)
        ones = np.ones((20, 20), np.uint8)
        imgs, _, _ = patches.random_patches(image, ones, ones, 5, 400,
                                            tf.constant([3, 3]))
        corners = {tuple(c) for c in imgs.numpy()[:, 0, 0]}
        self.assertEqual(min(c[0] for c in corners), 0)
        self.assertEqual(max(c[0] for c in corners), 15)
        self.assertGreater(len(corners), 150)

    def test_empty_fov_falls_back_to_whole_image(self):
        image = _coordinates(12, 12)
        zeros = np.zeros((12, 12), np.uint8)
        imgs, _, fovs = patches.random_patches(image, zeros, zeros, 4, 10,
                                               tf.constant([0, 0]))
        self.assertEqual(imgs.shape, (10, 4, 4, 2))
        self.assertAllEqual(fovs, np.zeros((10, 4, 4), np.uint8))

    def test_seeded(self):
        image = _coordinates(16, 16)
        ones = np.ones((16, 16), np.uint8)
        a = patches.random_patches(image, ones, ones, 4, 8, tf.constant([5, 6]))[0]
        b = patches.random_patches(image, ones, ones, 4, 8, tf.constant([5, 6]))[0]
        c = patches.random_patches(image, ones, ones, 4, 8, tf.constant([5, 7]))[0]
        self.assertAllEqual(a, b)
        self.assertNotAllClose(a, c)

    def test_geometric_flips_and_turns_are_exact_and_aligned(self):
        coords = _coordinates(40, 40)
        mask = ((coords[..., 0] * 7 + coords[..., 1]) % 3 == 0).astype(np.uint8)
        fov = np.zeros((40, 40), np.uint8)
        fov[10:30, 10:30] = 1  # Keeps flipped windows inside the image.
        imgs, masks, fovs = patches.random_patches(
            coords.astype(np.float32), mask, fov, 6, 64, tf.constant([4, 4]),
            geometric=True, max_rotation=0.0, scale_range=(1.0, 1.0))
        self.assertEqual(imgs.shape, (64, 6, 6, 2))
        offsets = np.stack(np.mgrid[-3:3, -3:3], axis=-1)  # [6, 6, (dy, dx)]
        dihedral = [np.array(m) for m in (
            [[1, 0], [0, 1]], [[-1, 0], [0, 1]], [[1, 0], [0, -1]],
            [[-1, 0], [0, -1]], [[0, 1], [1, 0]], [[0, -1], [1, 0]],
            [[0, 1], [-1, 0]], [[0, -1], [-1, 0]])]
        seen = set()
        for img, m, f in zip(imgs.numpy(), masks.numpy(), fovs.numpy()):
            centre = img[3, 3]
            self.assertEqual(f[3, 3], 1)
            kinds = [k for k, d in enumerate(dihedral)
                     if np.array_equal(img, centre + offsets @ d.T)]
            self.assertLen(kinds, 1)
            seen.add(kinds[0])
            rows, cols = img[..., 0].astype(int), img[..., 1].astype(int)
            self.assertAllEqual(m, mask[rows, cols])
            self.assertAllEqual(f, fov[rows, cols])
        self.assertLen(seen, 8)

    def test_geometric_keeps_image_and_mask_aligned(self):
        yy, xx = np.mgrid[0:48, 0:48]
        mask = (np.hypot(yy - 20, xx - 26) < 12).astype(np.uint8)[..., None]
        imgs, masks, fovs = patches.random_patches(
            mask.astype(np.float32), mask, np.ones_like(mask), 16, 32,
            tf.constant([0, 9]), geometric=True, max_rotation=30.0,
            scale_range=(0.8, 1.25))
        disagree = np.abs(imgs.numpy() - masks.numpy()) > 0.5
        self.assertLess(disagree.mean(), 0.02)
        self.assertGreater(masks.numpy().mean(), 0.05)
        again = patches.random_patches(
            mask.astype(np.float32), mask, np.ones_like(mask), 16, 32,
            tf.constant([0, 9]), geometric=True, max_rotation=30.0,
            scale_range=(0.8, 1.25))[0]
        self.assertAllEqual(imgs, again)

    def test_image_smaller_than_patch_raises(self):
        image = _coordinates(6, 10)
        ones = np.ones((6, 10), np.uint8)
        with self.assertRaises(tf.errors.InvalidArgumentError):
            patches.random_patches(image, ones, ones, 8, 2, tf.constant([0, 0]))

    def test_in_tf_data_with_static_shapes(self):
        image = _coordinates(24, 24).astype(np.float32)
        ones = np.ones((24, 24, 1), np.uint8)
        ds = tf.data.Dataset.from_tensors((image, ones, ones)).map(
            lambda *x: patches.random_patches(*x, 8, 4, tf.constant([0, 1])))
        self.assertEqual(ds.element_spec[0].shape, (4, 8, 8, 2))
        self.assertEqual(ds.element_spec[1].shape, (4, 8, 8, 1))
        got = next(iter(ds))[0]
        self.assertAllEqual(
            got, patches.random_patches(image, ones, ones, 8, 4,
                                        tf.constant([0, 1]))[0])


if __name__ == "__main__":
    tf.test.main()
