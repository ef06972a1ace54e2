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

    def test_16_bit_gray_is_windowed_between_its_percentiles(self):
        path = self._path("deep.png")
        values = np.array([[0, 1000], [40000, 65535]], np.uint16)
        Image.fromarray(values).save(path)
        # By hand: linear interpolation puts the 0.1th percentile at 0.003 of the
        # way from 0 to 1000, the 99.9th at 0.997 of the way from 40000 to 65535.
        low, high = 3.0, 40000 + 0.997 * 25535
        want = np.clip(np.round((values - low) * 255 / (high - low)), 0, 255)
        self.assertAllEqual(want, [[0, 4], [156, 255]])
        for channels in (1, None):
            got = imageio.read_image(path, channels, sixteen_bit=imageio.WINDOW)
            self.assertAllEqual(got[..., 0], want)
        self.assertAllEqual(imageio.read_image(path, 3, sixteen_bit=imageio.WINDOW),
                            np.repeat(want[..., None], 3, axis=2))

    def test_12_bit_image_keeps_its_grey_levels_in_the_window(self):
        # A 12-bit ramp in a 16-bit file: `>> 8` leaves 16 levels, the window 256.
        path = self._path("ramp.tif")
        Image.fromarray(np.arange(4096, dtype=np.uint16).reshape(64, 64)).save(path)
        self.assertLen(np.unique(imageio.read_image(path, channels=1)), 16)
        got = imageio.read_image(path, channels=1, sixteen_bit=imageio.WINDOW)
        self.assertEqual(got.dtype, np.uint8)
        self.assertLen(np.unique(got), 256)
        self.assertEqual((got.min(), got.max()), (0, 255))

    def test_16_bit_rgb_png_is_read_in_full_and_windowed_jointly(self):
        # Pillow cuts each value to its high byte; TensorFlow decodes it in full.
        values = np.random.default_rng(1).integers(0, 4096, (6, 5, 3), np.uint16)
        path = self._path("deep_rgb.png")
        with open(path, "wb") as f:
            f.write(tf.io.encode_png(values).numpy())
        self.assertAllEqual(imageio.read_image(path), values >> 8)
        low, high = np.percentile(values.astype(np.float64), (0.1, 99.9))
        want = np.clip(np.round((values - low) * 255 / (high - low)), 0, 255)
        for channels in (3, None):
            self.assertAllEqual(imageio.read_image(
                path, channels, sixteen_bit=imageio.WINDOW), want)

    def test_constant_16_bit_image_windows_to_zero(self):
        path = self._path("flat.png")
        Image.fromarray(np.full((3, 4), 1234, np.uint16)).save(path)
        self.assertAllEqual(imageio.read_image(path, 1, sixteen_bit=imageio.WINDOW),
                            np.zeros((3, 4, 1)))

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


class ReadLabelMapTest(tf.test.TestCase):

    def _save(self, img, name):
        path = os.path.join(_tmpdir(self), name)
        img.save(path)
        return path

    def test_gray_values_as_stored(self):
        values = np.array([[0, 1, 2], [7, 128, 255]], np.uint8)
        got = imageio.read_label_map(self._save(Image.fromarray(values), "m.png"))
        self.assertEqual(got.dtype, np.int32)
        self.assertAllEqual(got, values)

    def test_palette_indices_not_colours(self):
        # Index 1 is painted grey 2 and index 2 grey 1: through the palette the two
        # classes would swap; index 3 is pure red, which would become grey 76.
        indices = np.array([[0, 1, 2, 3]], np.uint8)
        img = Image.fromarray(indices, mode="P")
        img.putpalette([0, 0, 0, 2, 2, 2, 1, 1, 1, 255, 0, 0] + [0] * 756)
        self.assertAllEqual(np.asarray(img.convert("L")), [[0, 2, 1, 76]])
        for name in ("m.png", "m.gif"):
            self.assertAllEqual(imageio.read_label_map(self._save(img, name)), indices)

    def test_16_bit_values_as_stored(self):
        values = np.array([[0, 1, 300], [1000, 65535, 2]], np.uint16)
        for name in ("m.png", "m.tif"):
            got = imageio.read_label_map(self._save(Image.fromarray(values), name))
            self.assertAllEqual(got, values)

    def test_one_bit_is_zero_one(self):
        mask = np.array([[0, 1, 1], [1, 0, 0]], bool)
        got = imageio.read_label_map(self._save(Image.fromarray(mask), "m.png"))
        self.assertAllEqual(got, mask.astype(int))

    def test_rgb_with_equal_channels_is_gray(self):
        values = np.array([[0, 1], [2, 0]], np.uint8)
        rgb = np.repeat(values[..., None], 3, axis=2)
        self.assertAllEqual(imageio.read_label_map(
            self._save(Image.fromarray(rgb), "m.png")), values)

    def test_colour_coded_map_is_refused(self):
        path = self._save(Image.fromarray(_rgb()), "c.png")
        with self.assertRaisesRegex(
                imageio.DataError, r"c.png: label map is colour-coded .*class index"):
            imageio.read_label_map(path)

    def test_jpeg_is_refused(self):
        path = self._save(Image.fromarray(np.zeros((4, 4), np.uint8)), "m.jpg")
        with self.assertRaisesRegex(imageio.DataError, "m.jpg: label map is a JPEG"):
            imageio.read_label_map(path)

    def test_empty_file_is_named(self):
        path = os.path.join(_tmpdir(self), "empty.png")
        open(path, "wb").close()
        with self.assertRaisesRegex(imageio.DataError, "empty.png: cannot decode"):
            imageio.read_label_map(path)


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
