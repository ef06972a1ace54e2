"""Tests for r2u.evaluation.operating_point: hand counts, curves vs a NumPy loop, the choice."""

import unittest

from absl.testing import absltest
import numpy as np

from r2u.evaluation import metrics
from r2u.evaluation import operating_point as op

# The thresholds built independently of r2u: k / 100 is the double nearest k/100.
_THRESHOLDS = [k / 100 for k in range(1, 100)]


def _np_curve(images, headline, thresholds=_THRESHOLDS):
    """The headline at each threshold by a plain loop: [(probs, mask, fov)] images."""
    values = []
    for t in thresholds:
        per_image = []
        for probs, mask, fov in images:
            inside = np.asarray(fov) > 0
            pred = np.asarray(probs, np.float64)[inside] > t
            truth = np.asarray(mask)[inside] > 0
            per_image.append((np.sum(pred & truth), np.sum(pred & ~truth),
                              np.sum(~pred & truth)))
        if headline == "pooled_f1":
            tp, fp, fn = np.sum(per_image, axis=0)
            den = 2 * tp + fp + fn
            values.append(2 * tp / den if den else 1.0)
        else:
            values.append(np.mean([tp / (tp + fp + fn) if tp + fp + fn else 1.0
                                   for tp, fp, fn in per_image]))
    return np.array(values)


def _random_images(seed, n=4, size=(9, 7)):
    """Random images with probabilities on the threshold grid, FOVs, one empty image."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        # Rounded to 2 decimals: many probabilities equal a threshold exactly.
        probs = np.round(rng.uniform(size=size), 2)
        mask = (rng.uniform(size=size) < rng.uniform(0.1, 0.6)).astype(np.uint8) * 255
        fov = (rng.uniform(size=size) < 0.8).astype(np.uint8)
        if i == 0:  # empty mask and empty prediction at every threshold: Jaccard 1
            probs, mask = np.where(rng.uniform(size=size) < 0.5, 0.0, 0.01), 0 * mask
        if i == 1:  # empty mask with false positives: Jaccard 0 at low thresholds
            mask = 0 * mask
        images.append((probs, mask, fov))
    return images


class CountsTest(absltest.TestCase):

    def test_hand_counted(self):
        probs = np.array([[0.9, 0.5, 0.3], [0.5, 0.2, 0.7]])
        mask = np.array([[255, 255, 0], [0, 255, 255]], np.uint8)
        fov = np.array([[1, 1, 1], [1, 1, 0]], np.uint8)  # drops the 0.7 foreground
        # In the FOV: foreground 0.9, 0.5, 0.2; background 0.3, 0.5.
        got = op.counts(probs, mask, fov, [0.1, 0.2, 0.3, 0.5, 0.9, 0.95])
        self.assertEqual(got.dtype, np.int64)
        np.testing.assert_array_equal(got, [
            [3, 2, 0],  # 0.1: everything is foreground
            [2, 2, 1],  # 0.2: the 0.2 foreground equals the threshold: background
            [2, 1, 1],  # 0.3: the 0.3 background equals it: background
            [1, 0, 2],  # 0.5: both 0.5 pixels are background
            [0, 0, 3],  # 0.9: so is 0.9
            [0, 0, 3],
        ])

    def test_default_thresholds_and_fov(self):
        probs = np.full((2, 2), 0.42)
        mask = np.array([[1, 0], [1, 0]])
        got = op.counts(probs, mask, np.array([[1, 1], [0, 0]]))
        self.assertEqual(got.shape, (99, 3))
        self.assertEqual(op.THRESHOLDS, tuple(_THRESHOLDS))
        i = op.THRESHOLDS.index(0.42)
        np.testing.assert_array_equal(got[:i], [[1, 1, 0]] * i)  # 0.42 > t
        np.testing.assert_array_equal(got[i:], [[0, 0, 1]] * (99 - i))  # 0.42 <= t
        empty = op.counts(probs, mask, np.zeros((2, 2)))
        np.testing.assert_array_equal(empty, np.zeros((99, 3)))

    def test_nan_probabilities_raise(self):
        probs = np.array([0.2, np.nan, 0.8])
        with self.assertRaisesRegex(ValueError, "NaN"):
            op.counts(probs, np.array([0, 1, 1]), np.ones(3))
        sweep = op.Sweep("pooled_f1")
        with self.assertRaisesRegex(ValueError, "NaN"):
            sweep.add(probs, np.array([0, 1, 1]), np.ones(3))
        self.assertEmpty(sweep.images)

    def test_float32_probabilities_agree_with_metrics_at_every_threshold(self):
        """The operating point must count pixels as `r2u.evaluation.metrics` (and `evaluate`) do.

        Network probabilities are float32. float32(0.3) > 0.3 in float64, so `counts`
        calls a pixel of probability float32(0.3) foreground at threshold 0.3 while
        `metrics.confusion(threshold=0.3)` (float32 comparison) calls it background.
        """
        rng = np.random.default_rng(3)
        probs = np.round(rng.uniform(size=200), 2).astype(np.float32)
        mask = rng.uniform(size=200) < 0.4
        got = op.counts(probs, mask, np.ones(200))
        for i, t in enumerate(op.THRESHOLDS):
            c = metrics.confusion(probs, mask, threshold=t)
            self.assertEqual(tuple(got[i].tolist()),
                             tuple(float(c[k]) for k in ("tp", "fp", "fn")), t)


class CurveTest(absltest.TestCase):

    def test_both_headlines_equal_a_numpy_loop(self):
        for seed in range(3):
            images = _random_images(seed)
            per_image = np.stack([op.counts(*image) for image in images])
            self.assertEqual(per_image.shape, (4, 99, 3))
            for headline in op.HEADLINES:
                np.testing.assert_allclose(op.curve(per_image, headline),
                                           _np_curve(images, headline), atol=1e-12,
                                           err_msg=f"{seed} {headline}")

    def test_empty_mask_and_empty_prediction_score_one(self):
        probs, mask, fov = _random_images(0)[0]
        one = op.counts(probs, mask, fov)[None]
        self.assertEqual(one.sum(), 0)  # no TP, FP or FN at any threshold
        for headline in op.HEADLINES:
            np.testing.assert_array_equal(op.curve(one, headline), np.ones(99))
        # Beside an image with one true positive and one false positive (J = 1/2).
        other = op.counts(np.array([0.9, 0.9]), np.array([1, 0]), np.ones(2))[None]
        both = np.concatenate([one, other])
        np.testing.assert_allclose(op.curve(both, "per_image_jaccard")[:89], 0.75)
        np.testing.assert_allclose(op.curve(both, "pooled_f1")[:89], 2 / 3)

    def test_unknown_headline_raises(self):
        with self.assertRaisesRegex(ValueError, "headline"):
            op.curve(np.zeros((1, 99, 3), np.int64), "dice")
        with self.assertRaisesRegex(ValueError, "headline"):
            op.Sweep("per_image_dice")


class ChooseTest(absltest.TestCase):

    def test_picks_the_maximum(self):
        values = np.linspace(0.2, 0.6, 99)
        values[4] = 0.9
        self.assertEqual(op.choose(values), 0.05)
        self.assertEqual(op.choose([0.1, 0.7, 0.3], [0.2, 0.8, 0.9]), 0.8)

    def test_ties_go_to_the_threshold_nearest_one_half(self):
        values = np.zeros(99)
        for t in (0.1, 0.44, 0.6, 0.9):
            values[_THRESHOLDS.index(t)] = 0.8
        self.assertEqual(op.choose(values), 0.44)
        self.assertEqual(op.choose(np.ones(99)), 0.5)  # a flat curve keeps 0.5
        self.assertEqual(op.choose([1.0, 1.0, 0.0], [0.1, 0.7, 0.5]), 0.7)


class SweepTest(absltest.TestCase):

    def _two_images(self, dtype=np.float64):
        """Foreground mostly 0.3 (one pixel 0.6), background 0.1: best in [0.1, 0.3)."""
        probs = np.array([[0.3, 0.3, 0.1, 0.1], [0.3, 0.6, 0.1, 0.1]], dtype)
        mask = np.array([[1, 1, 0, 0], [1, 1, 0, 0]])
        return [(p, m, np.ones(4)) for p, m in zip(probs, mask)]

    def test_best_threshold_is_not_one_half(self):
        for headline, at_half in (("pooled_f1", 2 / (2 + 3)),  # tp 1, fn 3
                                  ("per_image_jaccard", (0 + 1 / 2) / 2)):
            sweep = op.Sweep(headline)
            for image in self._two_images():
                sweep.add(*image)
            result = sweep.result()
            self.assertEqual(set(result), {"headline", "threshold", "best", "at_0.5"})
            self.assertEqual(result["headline"], headline)
            # Every t in [0.1, 0.3) is perfect; the tie goes to the one nearest 0.5.
            self.assertEqual(result["threshold"], 0.29)
            self.assertEqual(result["best"], 1.0)
            self.assertAlmostEqual(result["at_0.5"], at_half, places=12)
            curve = _np_curve(self._two_images(), headline)
            np.testing.assert_array_equal(curve[9:29], 1.0)  # 0.10 .. 0.29
            self.assertLess(curve.max(initial=0, where=np.arange(99) >= 29), 1.0)
            self.assertAlmostEqual(result["at_0.5"], curve[49], places=12)

    def test_float32_probabilities_choose_the_same_threshold(self):
        # float32(0.3) > 0.3 and float32(0.1) > 0.1: `counts` finds [0.11, 0.3]
        # perfect and picks 0.3, where `evaluate` (float32) predicts no foreground.
        sweep = op.Sweep("pooled_f1")
        for image in self._two_images(np.float32):
            sweep.add(*image)
        self.assertEqual(sweep.result()["threshold"], 0.29)

    def test_custom_thresholds(self):
        sweep = op.Sweep("pooled_f1", thresholds=(0.2, 0.5, 0.8))
        for image in self._two_images():
            sweep.add(*image)
        self.assertEqual(sweep.result()["threshold"], 0.2)
        self.assertEqual(sweep.images[0].shape, (3, 3))


if __name__ == "__main__":
    absltest.main()
