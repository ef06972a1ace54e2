"""Tests for r2u.data.preprocess."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u.data import preprocess


def _image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _disc(size):
    yy, xx = np.mgrid[0:size, 0:size]
    return (np.hypot(yy - size / 2, xx - size / 2) < size / 3).astype(np.uint8)


class PreprocessTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(
        ((8, 9, 3), 3), ((8, 9, 3), 1), ((8, 9, 1), 3), ((8, 9, 1), 1),
        ((2, 8, 9, 3), 1), ((2, 8, 9, 1), 3),
    )
    def test_shape_and_dtype(self, shape, channels):
        out = preprocess.preprocess(_image(shape), channels)
        self.assertEqual(out.dtype, tf.float32)
        self.assertEqual(out.shape, shape[:-1] + (channels,))

    def test_matches_per_image_standardization(self):
        image = _image((2, 10, 12, 3))
        want = tf.image.per_image_standardization(tf.cast(image, tf.float32))
        self.assertAllClose(preprocess.preprocess(image, 3), want, atol=1e-5)

    def test_grayscale_uses_rgb_to_grayscale(self):
        image = _image((10, 12, 3)).astype(np.float32) / 255
        gray = tf.image.rgb_to_grayscale(image)
        want = tf.image.per_image_standardization(gray)
        self.assertAllClose(preprocess.preprocess(image, 1), want, atol=1e-5)

    def test_gray_to_rgb_tiles(self):
        out = preprocess.preprocess(_image((10, 12, 1)), 3)
        self.assertAllEqual(out[..., 0], out[..., 1])
        self.assertAllEqual(out[..., 0], out[..., 2])

    @parameterized.parameters((4, 1), (2, 1), (3, 2))
    def test_unsupported_channels_raise(self, have, want):
        with self.assertRaisesRegex(ValueError, "channels"):
            preprocess.preprocess(_image((8, 8, have)), want)

    @parameterized.parameters(False, True)
    def test_uint8_equals_unit_float(self, contrast):
        image = _image((16, 16, 3))
        a = preprocess.preprocess(image, 3, contrast, tile=8)
        b = preprocess.preprocess(image.astype(np.float32) / 255, 3, contrast, tile=8)
        self.assertAllClose(a, b, atol=1e-5)

    @parameterized.parameters(False, True)
    def test_fov_statistics_and_outside(self, contrast):
        image, fov = _image((24, 24, 3)), _disc(24)
        out = preprocess.preprocess(image, 1, contrast, fov=fov, tile=8).numpy()
        inside = out[fov == 1]
        self.assertAllEqual(out[fov == 0], np.zeros_like(out[fov == 0]))
        self.assertNear(inside.mean(), 0.0, 1e-4)
        self.assertNear(inside.std(), 1.0, 1e-3)

    @parameterized.parameters(False, True)
    def test_pixels_outside_fov_do_not_matter(self, contrast):
        image, fov = _image((24, 24, 1)), _disc(24)
        other = np.where(fov[..., None] == 1, image, 255 - image).astype(np.uint8)
        a = preprocess.preprocess(image, 1, contrast, fov=fov[..., None], tile=8)
        b = preprocess.preprocess(other, 1, contrast, fov=fov[..., None], tile=8)
        self.assertAllClose(a, b, atol=1e-5)

    def test_fov_without_fov_matches_full_fov(self):
        image = _image((12, 12, 3))
        ones = np.ones((12, 12), np.uint8)
        self.assertAllClose(preprocess.preprocess(image, 3, True, tile=4),
                            preprocess.preprocess(image, 3, True, fov=ones, tile=4),
                            atol=1e-5)

    def test_contrast_boosts_local_detail_under_illumination_gradient(self):
        yy, xx = np.mgrid[0:64, 0:64]
        ramp = 0.1 + 0.8 * xx / 63
        checker = 0.03 * ((yy + xx) % 2)
        image = (ramp + checker)[..., None].astype(np.float32)

        def detail(x):
            x = x.numpy()[..., 0]
            return np.abs(np.diff(x, axis=1)).mean() / x.std()

        plain = preprocess.preprocess(image, 1)
        enhanced = preprocess.preprocess(image, 1, contrast=True, tile=16)
        self.assertGreater(detail(enhanced), 5 * detail(plain))
        # The detail is equalised between the dark and the bright side.
        diffs = np.abs(np.diff(enhanced.numpy()[..., 0], axis=1))
        self.assertAllClose(diffs[:, 8:24].mean(), diffs[:, 40:56].mean(), rtol=0.3)

    def test_tile_statistics_interpolate_between_tile_centres(self):
        # Tile means of a linear ramp sit on the ramp at the tile centres, and
        # bilinear interpolation between centres reproduces the ramp.
        yy, xx = np.mgrid[0:32, 0:40].astype(np.float32)
        ramp = (2 * yy - xx)[None, ..., None]
        out = preprocess._tile_means(ramp, 8).numpy()
        self.assertEqual(out.shape, ramp.shape)
        # Tile centres are at 3.5, 11.5, ...: compare between the outer ones.
        self.assertAllClose(out[0, 4:28, 4:36], ramp[0, 4:28, 4:36], atol=1e-4)

    @parameterized.parameters(False, True)
    def test_constant_image_is_finite_zero(self, contrast):
        out = preprocess.preprocess(np.full((8, 8, 3), 7, np.uint8), 3, contrast)
        self.assertAllEqual(out, np.zeros((8, 8, 3), np.float32))

    def test_batch_elements_are_independent(self):
        batch, fov = _image((3, 16, 16, 3)), np.stack([_disc(16)] * 3)
        out = preprocess.preprocess(batch, 1, True, fov=fov, tile=4)
        for i in range(3):
            one = preprocess.preprocess(batch[i], 1, True, fov=fov[i], tile=4)
            self.assertAllClose(out[i], one, atol=1e-5)

    def test_bad_fov_shape_raises(self):
        with self.assertRaisesRegex(ValueError, "fov"):
            preprocess.preprocess(_image((8, 8, 3)), 3, fov=np.ones((8, 8, 3)))

    def test_xla_matches_eager_with_unknown_sizes(self):
        image = _image((2, 20, 18, 3))
        fov = np.stack([_disc(20)[:, :18]] * 2)[..., None]
        compiled = tf.function(
            lambda x, f: preprocess.preprocess(x, 1, True, fov=f, tile=8),
            jit_compile=True,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                             tf.TensorSpec([None, None, None, 1], tf.uint8)])
        want = preprocess.preprocess(image, 1, True, fov=fov, tile=8)
        self.assertAllClose(compiled(image, fov), want, atol=1e-4)

    def test_in_tf_data(self):
        images = _image((3, 10, 10, 3))
        ds = tf.data.Dataset.from_tensor_slices(images).map(
            lambda x: preprocess.preprocess(x, 1, True, tile=4))
        got = np.stack(list(ds.as_numpy_iterator()))
        self.assertAllClose(got, preprocess.preprocess(images, 1, True, tile=4),
                            atol=1e-5)


if __name__ == "__main__":
    tf.test.main()
