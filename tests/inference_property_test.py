"""Seeded-random properties of r2u.inference.network: padding, cropping and tiling (issue #8).

tests/export_test.py checks a few hand-picked sizes; here random sizes (always with 1x1,
thin, odd and smaller-than-the-tile ones) must satisfy the same contracts. Tiles are
averaged without trimming their borders, so tiled and whole-image probabilities agree
only for a model without spatial context: the tiny model here works per pixel.
"""

import types

import numpy as np
import tensorflow as tf

from r2u.inference import network

SEED = 20240608
EDGE_SIZES = [(1, 1), (1, 2), (2, 1), (1, 9), (9, 1), (3, 5), (7, 7), (15, 17)]
# float32 averaging of up to a few dozen equal values, and the same per-pixel maths
# on differently shaped tensors: a few ulps of numbers in [0, 1] (2.4e-7 seen).
TOLERANCE = 1e-6


def random_sizes(rng, count, largest=40):
    return EDGE_SIZES + [tuple(int(v) for v in rng.integers(1, largest + 1, 2))
                         for _ in range(count)]


def mirror(length, padded_length):
    """Reference symmetric reflection of indices 0..padded_length-1 into 0..length-1."""
    period = np.arange(padded_length) % (2 * length)
    return np.where(period < length, period, 2 * length - 1 - period)


class PerPixelModel(tf.Module):
    """Two 1x1 layers (no spatial context) with the `cfg.depth` that padding reads."""

    def __init__(self, channels, depth, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.cfg = types.SimpleNamespace(depth=depth)
        self.hidden = tf.constant(rng.normal(size=(channels, 6)), tf.float32)
        self.out = tf.constant(rng.normal(size=(6, 2)), tf.float32)

    def __call__(self, images, training=False):
        del training
        hidden = tf.nn.relu(tf.einsum("bhwc,cd->bhwd", images, self.hidden))
        return tf.einsum("bhwd,dk->bhwk", hidden, self.out)


class PaddingPropertyTest(tf.test.TestCase):

    def test_pad_then_crop_gives_back_the_input_exactly(self):
        rng = np.random.default_rng(SEED)
        for height, width in random_sizes(rng, 40):
            batch, channels = int(rng.integers(1, 3)), int(rng.integers(1, 4))
            multiple = int(rng.choice([1, 2, 4, 8, 16]))
            shape = (batch, height, width, channels)
            images = rng.normal(size=shape).astype(np.float32)
            padded, size = network.pad_to_multiple(tf.constant(images), multiple)
            padded = padded.numpy()
            case = f"{height}x{width}, multiple {multiple}"
            self.assertAllEqual(size, [height, width], msg=case)
            self.assertEqual(padded.shape[1] % multiple, 0, case)
            self.assertEqual(padded.shape[2] % multiple, 0, case)
            self.assertLess(padded.shape[1] - height, multiple, case)
            self.assertLess(padded.shape[2] - width, multiple, case)
            self.assertAllEqual(padded[:, :height, :width], images, msg=case)
            # The padding is the image mirrored, never zeros or another image's pixels.
            rows = mirror(height, padded.shape[1])
            cols = mirror(width, padded.shape[2])
            want = images[:, rows][:, :, cols]
            self.assertAllEqual(padded, want, msg=case)

    def test_probabilities_are_cropped_back_in_place(self):
        rng = np.random.default_rng(SEED + 1)
        model = PerPixelModel(channels=3, depth=3, seed=SEED)
        for height, width in random_sizes(rng, 20):
            images = rng.normal(size=(1, height, width, 3)).astype(np.float32)
            got = network.probabilities(model, tf.constant(images)).numpy()
            want = tf.nn.softmax(model(tf.constant(images))).numpy()  # no padding
            self.assertEqual(got.shape, (1, height, width, 2))
            self.assertAllClose(got, want, atol=TOLERANCE, msg=f"{height}x{width}")


class TilingPropertyTest(tf.test.TestCase):

    def test_tiles_start_at_zero_end_at_the_edge_and_leave_no_gap(self):
        rng = np.random.default_rng(SEED + 2)
        for _ in range(200):
            length, tile = int(rng.integers(1, 60)), int(rng.integers(1, 24))
            stride = int(rng.integers(1, tile + 1))
            starts = network.tile_starts(length, tile, stride)
            case = f"length {length}, tile {tile}, stride {stride}"
            self.assertEqual(starts[0], 0, case)
            self.assertEqual(starts[-1], max(0, length - tile), case)
            self.assertTrue(np.all(np.diff(starts) > 0), case)
            self.assertTrue(np.all(np.diff(starts) <= stride), case)

    def test_tiled_equals_whole_image_for_a_per_pixel_model(self):
        rng = np.random.default_rng(SEED + 3)
        model = PerPixelModel(channels=3, depth=2, seed=SEED)
        # As Predictor.network: every tile (odd ones too) is padded and cropped back.
        run = lambda tiles: network.probabilities(model, tf.constant(tiles))
        for height, width in random_sizes(rng, 30):
            tile = int(rng.integers(1, 20))  # often larger than the image
            stride = int(rng.integers(1, tile + 1))
            image = rng.normal(size=(height, width, 3)).astype(np.float32)
            whole = run(image[None])[0].numpy()
            tiled = network.tiled_probabilities(run, image, tile, stride,
                                                  batch_size=int(rng.integers(1, 5)))
            self.assertEqual(tiled.shape, (height, width, 2))
            self.assertAllClose(tiled, whole, atol=TOLERANCE,
                                msg=f"{height}x{width}, tile {tile}, stride {stride}")

    def test_a_stride_longer_than_the_tile_is_refused_not_left_uncovered(self):
        image = np.ones((10, 10, 1), np.float32)
        for tile, stride in ((4, 6), (4, 0), (1, 2)):
            with self.assertRaisesRegex(ValueError, "1 <= stride <= tile"):
                network.tiled_probabilities(lambda t: t, image, tile, stride)


if __name__ == "__main__":
    tf.test.main()
