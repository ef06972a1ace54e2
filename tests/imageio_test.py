"""Tests for r2u.data.imageio."""

import gzip
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from r2u.data import imageio


def _tmpdir(test):
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _rgb(height=6, width=5, seed=0):
    return np.random.default_rng(seed).integers(
        0, 256, (height, width, 3), dtype=np.uint8)


class ReadImageTest(tf.test.TestCase, parameterized.TestCase):

    def _path(self, name):
        return os.path.join(_tmpdir(self), name)

    @parameterized.parameters("png", "tif", "ppm", "bmp")
    def test_lossless_rgb_formats(self, ext):
        pixels = _rgb()
        path = self._path(f"x.{ext}")
        Image.fromarray(pixels).save(path)
        got = imageio.read_image(path)
        self.assertEqual(got.dtype, np.uint8)
        self.assertAllEqual(got, pixels)

    def test_gzipped_ppm(self):
        pixels = _rgb()
        raw = self._path("x.ppm")
        Image.fromarray(pixels).save(raw)
        with open(raw, "rb") as f, gzip.open(raw + ".gz", "wb") as g:
            g.write(f.read())
        self.assertAllEqual(imageio.read_image(raw + ".gz"), pixels)

    def test_jpeg_is_close(self):
        pixels = np.full((16, 16, 3), (200, 40, 90), np.uint8)
        path = self._path("x.jpg")
        Image.fromarray(pixels).save(path, quality=95)
        got = imageio.read_image(path)
        self.assertEqual(got.shape, (16, 16, 3))
        self.assertLess(np.abs(got.astype(int) - pixels).max(), 8)

    def test_palette_gif_expands_through_palette(self):
        indices = np.array([[0, 1], [1, 2]], np.uint8)
        img = Image.fromarray(indices, mode="P")
        img.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 255] + [0] * 759)
        path = self._path("x.gif")
        img.save(path)
        got = imageio.read_image(path)
        self.assertAllEqual(got[0, 0], [10, 20, 30])
        self.assertAllEqual(got[1, 1], [0, 0, 255])

    @parameterized.parameters((None, 1), (1, 1), (3, 3))
    def test_gray_pgm_channels(self, channels, expected):
        pixels = _rgb()[:, :, 0]
        path = self._path("x.pgm")
        Image.fromarray(pixels).save(path)
        got = imageio.read_image(path, channels=channels)
        self.assertEqual(got.shape, pixels.shape + (expected,))
        self.assertAllEqual(got[:, :, -1], pixels)

    def test_rgba_drops_alpha(self):
        pixels = np.concatenate([_rgb(), np.full((6, 5, 1), 7, np.uint8)], -1)
        path = self._path("x.png")
        Image.fromarray(pixels, mode="RGBA").save(path)
        self.assertAllEqual(imageio.read_image(path), pixels[:, :, :3])

    def test_missing_file(self):
        path = self._path("nope.png")
        with self.assertRaisesRegex(imageio.DataError, "nope.png: file not found"):
            imageio.read_image(path)

    def test_truncated_png_names_file(self):
        path = self._path("cut.png")
        Image.fromarray(_rgb(64, 64)).save(path)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])
        with self.assertRaisesRegex(imageio.DataError, "cut.png: cannot decode"):
            imageio.read_image(path)

    def test_not_an_image(self):
        path = self._path("text.jpg")
        with open(path, "w") as f:
            f.write("hello")
        with self.assertRaisesRegex(imageio.DataError, "text.jpg: cannot decode"):
            imageio.read_image(path)

    def test_corrupt_gzip(self):
        path = self._path("bad.ppm.gz")
        with open(path, "wb") as f:
            f.write(b"\x1f\x8b\x08\x00garbage")
        with self.assertRaisesRegex(imageio.DataError, "bad.ppm.gz"):
            imageio.read_image(path)

    def test_16_bit_gray_is_read_as_its_high_byte(self):
        path = self._path("deep.png")
        Image.fromarray(np.array([[0, 1000], [40000, 65535]], np.uint16)).save(path)
        self.assertAllEqual(imageio.read_image(path, channels=1)[..., 0],
                            [[0, 3], [156, 255]])

    def test_float_and_32_bit_images_are_rejected(self):
        for name, values in (("float.tif", np.full((4, 4), 0.5, np.float32)),
                             ("wide.tif", np.full((4, 4), 70000, np.int32))):
            path = self._path(name)
            Image.fromarray(values).save(path)
            with self.assertRaisesRegex(imageio.DataError, f"{name}: unsupported"):
                imageio.read_image(path)


class ReadMaskTest(tf.test.TestCase):

    def _save(self, img, name):
        path = os.path.join(_tmpdir(self), name)
        img.save(path)
        return path

    def test_gray_0_255(self):
        mask = np.array([[0, 255], [255, 0]], np.uint8)
        got = imageio.read_mask(self._save(Image.fromarray(mask), "m.png"))
        self.assertAllEqual(got, mask // 255)
        self.assertEqual(got.dtype, np.uint8)

    def test_one_bit_png(self):
        mask = np.array([[0, 1, 1], [1, 0, 0]], bool)
        img = Image.fromarray(mask).convert("1")
        self.assertEqual(img.mode, "1")
        self.assertAllEqual(imageio.read_mask(self._save(img, "m.png")), mask)

    def test_palette_indices_not_colours(self):
        # As DRIVE 2nd_manual: indices 0/1 whose colours convert to 3/253.
        indices = np.array([[0, 1], [1, 1]], np.uint8)
        img = Image.fromarray(indices, mode="P")
        img.putpalette([3, 3, 3, 253, 253, 253] + [0] * 762)
        got = imageio.read_mask(self._save(img, "m.gif"))
        self.assertAllEqual(got, indices)

    def test_antialiased_border_is_thresholded(self):
        mask = np.zeros((20, 20), np.uint8)
        mask[:, 10:] = 255
        mask[0, 9] = 200  # 1 of 400 pixels (0.25%) anti-aliased.
        got = imageio.read_mask(self._save(Image.fromarray(mask), "m.png"))
        self.assertEqual(got[0, 9], 1)
        self.assertEqual(got.sum(), 201)

    def test_non_binary_mask_says_values(self):
        mask = np.arange(100, dtype=np.uint8).reshape(10, 10)
        path = self._save(Image.fromarray(mask), "gray.png")
        with self.assertRaisesRegex(imageio.DataError,
                                    r"gray.png: mask is not binary: values \{0, 1"):
            imageio.read_mask(path)

    def test_colour_mask_rejected(self):
        path = self._save(Image.fromarray(_rgb()), "c.png")
        with self.assertRaisesRegex(imageio.DataError, "c.png: mask is a colour"):
            imageio.read_mask(path)


class ResizeTest(tf.test.TestCase):

    def test_resize_image_shape_and_constant(self):
        image = np.full((40, 30, 3), 77, np.uint8)
        got = imageio.resize_image(image, (8, 12))
        self.assertEqual(got.shape, (8, 12, 3))
        self.assertAllEqual(got, np.full((8, 12, 3), 77))

    def test_resize_image_antialiases(self):
        stripes = np.zeros((64, 64, 1), np.uint8)
        stripes[:, ::2] = 255
        got = imageio.resize_image(stripes, (8, 8))
        self.assertAllInRange(got.astype(int), 100, 155)

    def test_resize_mask_nearest_stays_binary(self):
        mask = np.zeros((50, 70), np.uint8)
        mask[10:40, 20:60] = 1
        got = imageio.resize_mask(mask, (5, 7))
        self.assertEqual(got.shape, (5, 7))
        self.assertAllEqual(np.unique(got), [0, 1])
        self.assertEqual(got[2, 3], 1)
        self.assertEqual(got[0, 0], 0)


if __name__ == "__main__":
    tf.test.main()
