"""Sliding-window inference: window starts, Gaussian weights, and probabilities that
match a float64 NumPy loop over windows, and the whole-image ones wherever a window's
receptive field fits; eagerly, under tf.function with unknown dims, in a SavedModel."""

import os
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u.inference import sliding_window
from r2u.nn import models


def _np_starts(length, window, overlap):
    """nnU-Net's compute_steps_for_sliding_window for one axis, in NumPy."""
    if length <= window:
        return [0]
    count = int(np.ceil((length - window) / (window * (1 - overlap)))) + 1
    spacing = (length - window) / (count - 1)
    return [int(np.round(spacing * i)) for i in range(count)]


def _np_gaussian(window, sigma_scale=0.125):
    d = np.arange(window) - (window - 1) / 2
    g = np.exp(-0.5 * (d / (sigma_scale * window))**2)
    g = np.outer(g, g)
    return g / g.max()


def _reference(network, images, window, overlap, gaussian):
    """Weighted average over windows in float64, each window position run on its own
    (all images at once), after NumPy's symmetric padding up to the window."""
    _, h, w, _ = images.shape
    padded = np.pad(images, [(0, 0), (0, max(window - h, 0)), (0, max(window - w, 0)),
                             (0, 0)], mode="symmetric")
    weights = _np_gaussian(window) if gaussian else np.ones((window, window))
    weights = weights[..., None]
    total = norm = 0.0
    for y in _np_starts(padded.shape[1], window, overlap):
        for x in _np_starts(padded.shape[2], window, overlap):
            crop = padded[:, y:y + window, x:x + window].astype(np.float32)
            probs = np.asarray(network(tf.constant(crop)), np.float64)
            place = [(0, 0), (y, padded.shape[1] - y - window),
                     (x, padded.shape[2] - x - window), (0, 0)]
            total = total + np.pad(probs * weights, place)
            norm = norm + np.pad(np.broadcast_to(weights, crop.shape[:3] + (1,)), place)
    return (total / norm)[:, :h, :w]


def _conv_net(channels, classes, kernels, seed=0):
    """Convs of the given kernel sizes (SAME, tanh between), then a softmax; receptive
    radius sum((k - 1) / 2)."""
    rng = np.random.default_rng(seed)
    widths = [channels] + [6] * (len(kernels) - 1) + [classes]
    ws = [tf.constant(rng.normal(0, 1, (k, k, a, b)), tf.float32)
          for k, a, b in zip(kernels, widths[:-1], widths[1:])]

    def net(x):
        for i, w in enumerate(ws):
            x = tf.nn.conv2d(x if i == 0 else tf.tanh(x), w, 1, "SAME")
        return tf.nn.softmax(x)
    return net


def _images(shape, seed=1):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def _trusted(length, window, overlap, radius):
    """[length] bool: pixels at least `radius` from every border, inside the image, of
    every window covering them (a border on the image's border zero-pads the same way
    in the whole image)."""
    ok = np.ones(length, bool)
    for s in _np_starts(length, window, overlap):
        p = np.arange(s, s + window)
        far = (((p - s >= radius) | (s == 0))
               & ((s + window - 1 - p >= radius) | (s + window == length)))
        ok[p] &= far
    return ok


class StartsTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(
        (10, 16, 0.5, [0]),                   # shorter than the window
        (16, 16, 0.5, [0]),                   # exactly one window
        (17, 16, 0.0, [0, 1]),
        (64, 16, 0.0, [0, 16, 32, 48]),       # no overlap: plain tiles
        (65, 16, 0.0, [0, 12, 24, 37, 49]),   # 24.5 rounds half to even, as NumPy
        (37, 16, 0.5, [0, 7, 14, 21]),
        (53, 16, 0.5, [0, 7, 15, 22, 30, 37]),
        (32, 16, 0.75, [0, 4, 8, 12, 16]),
        (21, 16, 0.75, [0, 2, 5]))
    def test_hand_written_cases(self, length, window, overlap, want):
        self.assertAllEqual(sliding_window.starts(length, window, overlap), want)
        traced = tf.function(lambda n: sliding_window.starts(n, window, overlap),
                             input_signature=[tf.TensorSpec([], tf.int32)])
        self.assertAllEqual(traced(tf.constant(length)), want)

    def test_fewest_starts_that_cover_every_pixel_with_the_overlap(self):
        for window in (8, 16):
            for overlap in (0.0, 0.25, 0.5, 0.75):
                step = window * (1 - overlap)
                for length in range(1, 70):
                    s = sliding_window.starts(length, window, overlap).numpy()
                    self.assertEqual(s.dtype, np.int32)
                    self.assertEqual(s[0], 0)
                    self.assertEqual(s[-1], max(length - window, 0))
                    gaps = np.diff(s)
                    self.assertTrue(np.all(gaps > 0) and np.all(gaps <= step + 1), s)
                    covered = np.zeros(max(length, window), bool)
                    for start in s:
                        covered[start:start + window] = True
                    self.assertTrue(covered.all())
                    if len(s) > 2:  # one start fewer could not keep the overlap
                        self.assertGreater((length - window) / (len(s) - 2), step)
                    self.assertEqual(len(s) > 1, length > window)


class GaussianTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(7, 8, 48)
    def test_symmetric_peak_one_at_the_centre(self, window):
        g = sliding_window.gaussian(window).numpy()
        self.assertEqual(g.dtype, np.float32)
        self.assertAllClose(g, _np_gaussian(window), rtol=1e-6, atol=0)
        self.assertAllEqual(g, g.T)
        self.assertAllEqual(g, g[::-1])
        self.assertAllEqual(g, g[:, ::-1])
        centre = slice((window - 1) // 2, window // 2 + 1)
        self.assertAllEqual(g[centre, centre], np.ones_like(g[centre, centre]))
        self.assertEqual(g.max(), 1.0)
        row = g[(window - 1) // 2, window // 2:]
        self.assertTrue(np.all(np.diff(row) < 0))  # falls away from the centre

    def test_zeros_are_raised_to_the_smallest_weight(self):
        raw = _np_gaussian(64, 0.01).astype(np.float32)
        raw[raw < np.finfo(np.float32).tiny] = 0  # TensorFlow flushes subnormals to 0
        self.assertTrue((raw == 0).any())
        g = sliding_window.gaussian(64, 0.01).numpy()
        self.assertAllClose(g[raw > 0], raw[raw > 0], rtol=1e-6, atol=0)
        self.assertAllClose(g[raw == 0], np.full_like(g[raw == 0], raw[raw > 0].min()),
                            rtol=1e-6, atol=0)
        self.assertEqual(g.min(), g[raw > 0].min())


class PredictTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters((0.0, True, 4), (0.5, True, 5), (0.75, False, 3))
    def test_pointwise_network_equals_the_whole_image(self, overlap, gaussian, batch):
        net = _conv_net(3, 4, [1])
        seen = []

        def recorded(windows):
            seen.append(windows.shape)
            return net(windows)
        traced = tf.function(
            lambda x: sliding_window.predict(recorded, x, 16, overlap, batch, gaussian),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        for shape in ((2, 37, 53, 3), (1, 5, 40, 3)):  # 5 < window: mirror-padded
            images = _images(shape)
            self.assertAllClose(traced(images), net(images), atol=1e-6, rtol=0)
        self.assertEqual(seen, [tf.TensorShape([batch, 16, 16, 3])])  # one trace

    @parameterized.parameters(0.5, 0.75)
    def test_receptive_field_inside_the_overlap_matches_the_whole_image(self, overlap):
        net, radius, window = _conv_net(2, 3, [3, 3]), 2, 16
        images = _images((2, 37, 53, 2))
        got = sliding_window.predict(net, images, window, overlap).numpy()
        self.assertAllClose(got, _reference(net, images, window, overlap, True),
                            atol=1e-5, rtol=0)
        trusted = np.outer(_trusted(37, window, overlap, radius),
                           _trusted(53, window, overlap, radius))
        self.assertGreater(trusted.sum(), 300)  # of 1961 pixels
        diff = np.abs(got - net(images).numpy()).max(axis=(0, 3))
        self.assertLess(diff[trusted].max(), 1e-5)
        self.assertGreater(diff[~trusted].max(), 1e-3)  # window borders do differ

    def test_uniform_and_gaussian_weights_differ_and_match_the_reference(self):
        net = _conv_net(1, 2, [3, 3, 3], seed=3)
        images = _images((1, 30, 41, 1))
        uniform = sliding_window.predict(net, images, 16, gaussian=False).numpy()
        weighted = sliding_window.predict(net, images, 16, gaussian=True).numpy()
        self.assertAllClose(uniform, _reference(net, images, 16, 0.5, False), atol=1e-5)
        self.assertAllClose(weighted, _reference(net, images, 16, 0.5, True), atol=1e-5)
        self.assertGreater(np.abs(uniform - weighted).max(), 1e-3)

    def test_small_images_are_mirror_padded_then_cropped(self):
        net = _conv_net(1, 2, [3, 3])
        images = _images((2, 5, 23, 1))  # 11 rows of padding from 5: reflected twice
        got = sliding_window.predict(net, images, 16)
        self.assertEqual(got.shape, (2, 5, 23, 2))
        self.assertAllClose(got, _reference(net, images, 16, 0.5, True), atol=1e-5)

    def test_r2unet_with_odd_sizes_and_unknown_dims(self):
        model = models.build("r2unet", in_channels=2, filters=4, depth=2)
        model(tf.random.normal([2, 16, 16, 2]), training=True)  # non-trivial BN stats

        def net(x):
            return tf.nn.softmax(model(x, training=False))
        traced = tf.function(lambda x: sliding_window.predict(net, x, 16, batch=5),
                             input_signature=[tf.TensorSpec([None, None, None, 2])])
        for shape in ((3, 37, 53, 2), (1, 16, 20, 2)):
            images = _images(shape)
            got = traced(images).numpy()
            self.assertEqual(got.shape, shape[:3] + (2,))
            self.assertAllClose(got.sum(-1), np.ones(shape[:3]), atol=1e-5)
            # Logits reach ~3e3 at initialisation: float32 rounding that varies with the
            # number of windows per conv call moves probabilities by up to ~1e-4 here.
            self.assertAllClose(got, _reference(net, images, 16, 0.5, True), atol=5e-4)
        self.assertEqual(traced.experimental_get_tracing_count(), 1)

    def test_saved_model_round_trip(self):
        model = models.build("r2unet", in_channels=1, filters=4, depth=2)
        model(tf.random.normal([2, 16, 16, 1]), training=True)
        served = _Served(model)
        path = os.path.join(tempfile.mkdtemp(), "served")
        tf.saved_model.save(served, path)
        loaded = tf.saved_model.load(path)
        for shape in ((2, 21, 35, 1), (1, 9, 16, 1)):
            images = _images(shape)
            want = sliding_window.predict(served.network, images, 16)
            self.assertAllClose(loaded.serve(images), want, atol=1e-6)

    @parameterized.parameters(dict(window=0), dict(window=16.0), dict(overlap=1.0),
                              dict(overlap=-0.1), dict(batch=0), dict(batch=True))
    def test_bad_arguments(self, **kwargs):
        args = dict(window=16, overlap=0.5, batch=4) | kwargs
        with self.assertRaisesRegex(ValueError, next(iter(kwargs))):
            sliding_window.predict(tf.nn.softmax, _images((1, 16, 16, 1)), **args)

    def test_images_must_be_rank_4(self):
        with self.assertRaisesRegex(ValueError, r"\[B, H, W, C\]"):
            sliding_window.predict(tf.nn.softmax, _images((16, 16, 1)), 16)


class _Served(tf.Module):
    """A minimal serving wrapper: unknown B, H, W in, probabilities out."""

    def __init__(self, model):
        super().__init__(name="served")
        self.model = model
        self.serve = tf.function(
            lambda x: sliding_window.predict(self.network, x, 16),
            input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])

    def network(self, x):
        return tf.nn.softmax(self.model(x, training=False))


if __name__ == "__main__":
    tf.test.main()
