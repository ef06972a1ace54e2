"""Tests for r2u.evaluation.metrics: hand counts, AUC vs pairwise reference, streaming, XLA."""

import functools

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from r2u.evaluation import metrics

# Shared by several cases: pixels 0..7 are predicted [1, 1, 0, 0, 1, 0, 1, 0] at 0.5.
_P = [0.9, 0.8, 0.3, 0.1, 0.6, 0.2, 0.7, 0.4]
_Y = [1, 1, 1, 0, 0, 0, 0, 0]

# (name, probs, labels, weights, threshold, (tp, fp, fn, tn), expected scores in order
#  accuracy, sensitivity, specificity, precision, f1 = dice, jaccard).
_HAND_CASES = (
    # tp: 0,1  fp: 4,6  fn: 2  tn: 3,5,7. Accuracy 0.625 != jaccard 0.4.
    ("mixed", _P, _Y, None, 0.5, (2, 2, 1, 3),
     (5 / 8, 2 / 3, 3 / 5, 1 / 2, 4 / 7, 2 / 5)),
    ("mixed_2d", np.reshape(_P, [2, 4]), np.reshape(_Y, [2, 4]), None, 0.5,
     (2, 2, 1, 3), (5 / 8, 2 / 3, 3 / 5, 1 / 2, 4 / 7, 2 / 5)),
    ("bool_labels", _P, np.array(_Y, bool), None, 0.5, (2, 2, 1, 3),
     (5 / 8, 2 / 3, 3 / 5, 1 / 2, 4 / 7, 2 / 5)),
    # FOV excludes pixel 2 (the fn) and pixel 4 (an fp).
    ("fov_weights", _P, _Y, [1, 1, 0, 1, 0, 1, 1, 1], 0.5, (2, 1, 0, 3),
     (5 / 6, 1, 3 / 4, 2 / 3, 4 / 5, 2 / 3)),
    # Fractional weights multiply counts: tp 2+1, fp 1+1, fn 1, tn 1+1+0.5.
    ("fractional_weights", _P, _Y, [2, 1, 1, 1, 1, 1, 1, 0.5], 0.5, (3, 2, 1, 2.5),
     (5.5 / 8.5, 3 / 4, 2.5 / 4.5, 3 / 5, 6 / 9, 3 / 6)),
    ("all_excluded", _P, _Y, [0] * 8, 0.5, (0, 0, 0, 0), (1, 1, 1, 1, 1, 1)),
    ("empty_truth_and_prediction", [0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0], None, 0.5,
     (0, 0, 0, 4), (1, 1, 1, 1, 1, 1)),
    ("empty_truth", [0.9, 0.2, 0.3, 0.4], [0, 0, 0, 0], None, 0.5, (0, 1, 0, 3),
     (3 / 4, 1, 3 / 4, 0, 0, 0)),
    ("empty_prediction", [0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], None, 0.5, (0, 0, 2, 2),
     (1 / 2, 0, 1, 1, 0, 0)),
    ("all_positive_prediction", [0.9, 0.8, 0.7, 0.6], [1, 0, 0, 0], None, 0.5,
     (1, 3, 0, 0), (1 / 4, 1, 0, 1 / 4, 2 / 5, 1 / 4)),
    ("all_foreground_perfect", [0.9] * 4, [1] * 4, None, 0.5, (4, 0, 0, 0),
     (1, 1, 1, 1, 1, 1)),
    # A probability equal to the threshold is background.
    ("at_threshold", [0.5, 0.5, 0.51, 0.49], [1, 0, 1, 0], None, 0.5, (1, 0, 1, 2),
     (3 / 4, 1 / 2, 1, 1, 2 / 3, 1 / 2)),
    ("custom_threshold", [0.3, 0.26, 0.25, 0.1], [1, 0, 1, 0], None, 0.25,
     (1, 1, 1, 1), (1 / 2, 1 / 2, 1 / 2, 1 / 2, 1 / 2, 1 / 3)),
)


def _np_counts(p, y, w, threshold=0.5):
    pred, pos = p > np.float32(threshold), y > 0.5
    return {"tp": w[pred & pos].sum(), "fp": w[pred & ~pos].sum(),
            "fn": w[~pred & pos].sum(), "tn": w[~pred & ~pos].sum()}


def _np_ratio(num, den):
    return num / den if den > 0 else 1.0


def _np_scores(c):
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    dice = _np_ratio(2 * tp, 2 * tp + fp + fn)
    return {"accuracy": _np_ratio(tp + tn, tp + fp + fn + tn),
            "sensitivity": _np_ratio(tp, tp + fn),
            "specificity": _np_ratio(tn, tn + fp),
            "precision": _np_ratio(tp, tp + fp), "f1": dice, "dice": dice,
            "jaccard": _np_ratio(tp, tp + fp + fn)}


def _np_pairwise_auc(p, y, w):
    """Exact O(P*N) Mann-Whitney AUC with pair weights, ties = 1/2."""
    pos = y > 0.5
    diff = p[pos][:, None] - p[~pos][None, :]
    pairs = w[pos][:, None] * w[~pos][None, :]
    won = (diff > 0) + 0.5 * (diff == 0)
    return _np_ratio((won * pairs).sum(), pairs.sum())


def _np_same_bin_fraction(p, y, w, bins):
    """Fraction of (pos, neg) pair weight sharing a bin: twice the max AUC error."""
    index = np.clip(np.floor(p.astype(np.float32) * np.float32(bins)), 0, bins - 1)
    pos = y > 0.5
    hp = np.bincount(index[pos].astype(int), w[pos], minlength=bins)
    hn = np.bincount(index[~pos].astype(int), w[~pos], minlength=bins)
    return _np_ratio((hp * hn).sum(), hp.sum() * hn.sum())


def _random_case(rng, shape):
    p = rng.uniform(size=shape).astype(np.float32)
    rate = rng.choice([0.0, 0.05, 0.3, 0.7, 1.0])  # includes empty and full masks
    y = (rng.uniform(size=shape) < rate).astype(np.int32)
    if rng.uniform() < 0.3:  # ties and values exactly at the threshold
        p = np.round(p * 2) / 2
    kind = rng.integers(3)
    w = np.ones(shape, np.float32) if kind == 0 else (
        (rng.uniform(size=shape) < 0.8).astype(np.float32) if kind == 1 else
        rng.choice([0.0, 0.5, 1.0, 2.0], size=shape).astype(np.float32))
    return p, y, w


class HandCountedTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.named_parameters(*_HAND_CASES)
    def test_confusion_and_scores(self, probs, labels, weights, threshold, counts,
                                  expected):
        c = metrics.confusion(probs, labels, weights, threshold=threshold)
        for key, value in zip(metrics.COUNT_NAMES, counts):
            self.assertEqual(c[key].dtype, tf.float32)
            self.assertAllEqual(c[key], value, msg=key)
        s = metrics.scores(c)
        self.assertEqual(tuple(s), metrics.SCORE_NAMES)
        names = ("accuracy", "sensitivity", "specificity", "precision", "f1", "jaccard")
        for name, value in zip(names, expected):
            self.assertEqual(s[name].dtype, tf.float32)
            self.assertAllClose(s[name], value, atol=1e-6, msg=name)
        self.assertAllEqual(s["dice"], s["f1"])

    def test_zero_denominators_give_one(self):
        s = metrics.scores({"tp": 0.0, "fp": 0.0, "fn": 0.0, "tn": 0.0})
        self.assertAllEqual([s[k] for k in metrics.SCORE_NAMES], [1.0] * 7)

    def test_scores_of_vector_counts(self):
        s = metrics.scores({"tp": [2.0, 0.0], "fp": [2.0, 0.0], "fn": [1.0, 3.0],
                            "tn": [3.0, 5.0]})
        self.assertAllClose(s["jaccard"], [2 / 5, 0.0])
        self.assertAllClose(s["precision"], [1 / 2, 1.0])


class AucTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.named_parameters(
        ("perfect", [0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0], None, 1.0),
        ("reversed", [0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], None, 0.0),
        ("all_tied", [0.5] * 4, [1, 0, 1, 0], None, 0.5),
        # pairs: 0.8>0.5, 0.8>0.2, 0.5=0.5 (1/2), 0.5>0.2 -> 3.5 / 4.
        ("hand_ties", [0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0], None, 0.875),
        # The excluded pixels would make a misordered pair with everything.
        ("fov", [0.8, 0.5, 0.1, 0.5, 0.2, 0.9], [1, 1, 1, 0, 0, 0],
         [1, 1, 0, 1, 1, 0], 0.875),
        ("probability_one", [1.0, 0.0], [1, 0], None, 1.0),
        ("no_positives", [0.9, 0.1], [0, 0], None, 1.0),
        ("no_negatives", [0.9, 0.1], [1, 1], None, 1.0),
        ("nothing_counted", [0.9, 0.1], [1, 0], [0, 0], 1.0),
    )
    def test_hand_cases(self, probs, labels, weights, expected):
        value = metrics.auc(probs, labels, weights)
        self.assertEqual(value.dtype, tf.float32)
        self.assertAllClose(value, expected, atol=1e-6)

    @parameterized.parameters(16, 1000, metrics.DEFAULT_BINS)
    def test_matches_pairwise_within_bin_error(self, bins):
        rng = np.random.default_rng(bins)
        for _ in range(5):
            p, y, w = _random_case(rng, [300])
            p = np.clip(p + 0.3 * y * rng.uniform(), 0, 1)  # some separation
            bound = 0.5 * _np_same_bin_fraction(p, y, w, bins) + 1e-6
            self.assertAllClose(metrics.auc(p, y, w, bins=bins),
                                _np_pairwise_auc(p, y, w), atol=bound, rtol=0)

    def test_exact_when_values_are_bin_centres(self):
        rng = np.random.default_rng(0)
        p = ((rng.integers(0, 64, 400) + 0.5) / 64).astype(np.float32)
        y = rng.integers(0, 2, 400)
        w = np.ones(400, np.float32)
        self.assertAllClose(metrics.auc(p, y, bins=64), _np_pairwise_auc(p, y, w),
                            atol=1e-6)



class ExactAucTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(0, 1, 2, 3)
    def test_matches_pairwise_with_ties(self, seed):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 400))
        p = np.round(rng.uniform(size=n), 2)  # 2 decimals: many tied pairs
        y = (rng.uniform(size=n) < rng.uniform(0.05, 0.95)).astype(np.int32)
        if seed == 3:
            p = np.round(p * 4) / 4  # only 5 distinct values
        y[0], y[-1] = 1, 0  # both classes present
        value = metrics.exact_auc(p[y > 0], p[y == 0])
        self.assertIsInstance(value, float)
        self.assertAlmostEqual(value, _np_pairwise_auc(p, y, np.ones(n)), places=12)

    def test_any_shape_dtype_and_scale(self):
        rng = np.random.default_rng(5)
        pos = np.round(rng.normal(1.0, 2.0, size=(6, 7)), 1)  # logits: outside [0, 1]
        neg = np.round(rng.normal(0.0, 2.0, size=(5, 9)), 1)
        p = np.concatenate([pos.ravel(), neg.ravel()])
        y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
        want = _np_pairwise_auc(p, y, np.ones(p.size))
        self.assertAlmostEqual(metrics.exact_auc(pos, neg), want, places=12)
        self.assertAlmostEqual(metrics.exact_auc(pos.astype(np.float32).tolist(),
                                                 neg.astype(np.float32)), want,
                               places=12)

    @parameterized.named_parameters(
        ("no_positives", [], [0.1, 0.9], 1.0),
        ("no_negatives", [0.1, 0.9], np.zeros([0]), 1.0),
        ("nothing", np.zeros([0, 3]), [], 1.0),
        ("perfect", [0.6, 0.9, 0.51], [0.5, 0.1, 0.5], 1.0),
        ("reversed", [0.1, 0.2], [0.3, 0.9, 0.4], 0.0),
        ("all_tied", [0.5, 0.5], [0.5], 0.5),
        # pairs: 0.8>0.5, 0.8>0.2, 0.5=0.5 (1/2), 0.5>0.2 -> 3.5 / 4.
        ("hand_ties", [0.8, 0.5], [0.5, 0.2], 0.875),
    )
    def test_hand_cases(self, positives, negatives, expected):
        self.assertEqual(metrics.exact_auc(positives, negatives), expected)

    @parameterized.parameters(64, metrics.DEFAULT_BINS)
    def test_agrees_with_histogram_auc_within_its_error(self, bins):
        rng = np.random.default_rng(bins)
        for _ in range(3):
            y = (rng.uniform(size=2000) < 0.3).astype(np.int32)
            p = np.clip(rng.uniform(size=2000) + 0.2 * y, 0, 1).astype(np.float32)
            exact = metrics.exact_auc(p[y > 0], p[y == 0])
            # The documented bound: half the fraction of pairs sharing a bin, about
            # 1 / (2 bins) on spread-out probabilities (+ float32 rounding).
            shared = _np_same_bin_fraction(p, y, np.ones(p.size), bins)
            self.assertLess(shared, 2.0 / bins)
            self.assertAllClose(metrics.auc(p, y, bins=bins), exact,
                                atol=0.5 * shared + 1e-6, rtol=0)
            self.assertBetween(exact, 0.6, 0.95)  # neither trivial nor perfect

class PropertyTest(tf.test.TestCase):
    """50 seeded random cases (sizes 1..24, padded to 24 with weight 0) in one batch."""

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(1234)
        self.cases = [_random_case(rng, [int(rng.integers(1, 25))]) for _ in range(50)]
        pad = [(0, 24 - len(p)) for p, _, _ in self.cases]
        self.p, self.y, self.w = (
            np.stack([np.pad(case[i], width) for case, width in zip(self.cases, pad)])
            for i in range(3))  # [50, 24]; padding has weight 0

    def test_matches_numpy_reference_and_is_bounded(self):
        s = metrics.per_image_scores(self.p, self.y, self.w, bins=64)
        for name in metrics.METRIC_NAMES:
            self.assertFalse(np.any(np.isnan(s[name])), name)
            self.assertAllInRange(s[name], 0.0, 1.0)
        for i, (p, y, w) in enumerate(self.cases):
            ref = _np_scores(_np_counts(p, y, w))
            for name in metrics.SCORE_NAMES:
                self.assertAllClose(s[name][i], ref[name], atol=1e-6, msg=f"{i} {name}")
            bound = 0.5 * _np_same_bin_fraction(p, y, w, 64) + 1e-6
            self.assertAllClose(s["auc"][i], _np_pairwise_auc(p, y, w), atol=bound,
                                rtol=0, msg=f"{i} auc")

    def test_jaccard_from_dice(self):
        s = metrics.per_image_scores(self.p, self.y, self.w)
        self.assertAllClose(s["jaccard"], s["dice"] / (2 - s["dice"]), atol=1e-6)
        self.assertAllEqual(s["f1"], s["dice"])

    def test_swapping_prediction_and_truth(self):
        """Sensitivity and precision swap; dice, jaccard and accuracy are kept."""
        s = metrics.per_image_scores(self.p, self.y, self.w)
        swapped = metrics.per_image_scores(self.y.astype(np.float32), self.p > 0.5,
                                           self.w)
        self.assertAllClose(swapped["sensitivity"], s["precision"], atol=1e-6)
        self.assertAllClose(swapped["precision"], s["sensitivity"], atol=1e-6)
        for name in ("dice", "jaccard", "f1", "accuracy"):
            self.assertAllClose(swapped[name], s[name], atol=1e-6, msg=name)

    def test_pooled_matches_numpy_reference(self):
        p, y, w = self.p[:10], self.y[:10], self.w[:10]
        s = metrics.scores(metrics.confusion(p, y, w))
        ref = _np_scores(_np_counts(p, y, w))
        for name in metrics.SCORE_NAMES:
            self.assertAllClose(s[name], ref[name], atol=1e-6, msg=name)


class PerImageTest(tf.test.TestCase):

    def test_per_image_and_summarize(self):
        # Image 0 is the "mixed" hand case; image 1 has empty truth and prediction.
        probs = np.array([_P, [0.1] * 8], np.float32)
        labels = np.array([_Y, [0] * 8])
        per_image = metrics.per_image_scores(probs, labels, bins=64)
        self.assertEqual(tuple(per_image), metrics.METRIC_NAMES)
        self.assertAllClose(per_image["jaccard"], [2 / 5, 1.0])
        self.assertAllClose(per_image["auc"], [0.8, 1.0])
        for i in range(2):
            one = metrics.scores(metrics.confusion(probs[i], labels[i]))
            for name in metrics.SCORE_NAMES:
                self.assertAllClose(per_image[name][i], one[name], msg=name)
        summary = metrics.summarize([per_image, per_image])
        self.assertAllClose(summary["jaccard"], 0.7)
        self.assertAllClose(summary["dice"], (4 / 7 + 1) / 2)
        # Pooled is not the per-image mean: image 1 only adds 8 true negatives.
        pooled = metrics.scores(metrics.confusion(probs, labels))
        self.assertAllClose(pooled["jaccard"], 2 / 5)

    def test_summarize_rejects_bad_input(self):
        with self.assertRaises(ValueError):
            metrics.summarize([])
        with self.assertRaises(ValueError):
            metrics.summarize([{"dice": [1.0]}, {"jaccard": [1.0]}])

    def test_argument_validation(self):
        with self.assertRaises(ValueError):
            metrics.auc(_P, _Y, bins=0)
        with self.assertRaises(ValueError):
            metrics.confusion(_P, _Y, threshold=1.5)
        with self.assertRaises(ValueError):  # would broadcast to [2, 4, 4] silently
            metrics.confusion(np.zeros([2, 4, 1]), np.zeros([2, 4]))
        with self.assertRaises(ValueError):
            metrics.StreamingMetrics(threshold=-0.1)


class StreamingMetricsTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(7)
        self.batches = [_random_case(rng, [2, 8, 8]) for _ in range(3)]
        self.all_p, self.all_y, self.all_w = (
            np.concatenate([b[i] for b in self.batches]) for i in range(3))

    def _assert_matches_one_shot(self, result, bins):
        expected = metrics.scores(metrics.confusion(self.all_p, self.all_y, self.all_w))
        expected["auc"] = metrics.auc(self.all_p, self.all_y, self.all_w, bins=bins)
        self.assertEqual(tuple(result), metrics.METRIC_NAMES)
        for name in metrics.METRIC_NAMES:
            self.assertEqual(result[name].dtype, tf.float32)
            self.assertAllClose(result[name], expected[name], atol=1e-6, msg=name)

    def test_variables(self):
        m = metrics.StreamingMetrics(bins=32)
        self.assertEqual(
            [v.name for v in m.variables],
            ["streaming_metrics/confusion:0", "streaming_metrics/histogram:0"])
        self.assertEqual([v.shape for v in m.variables], [[4], [2, 32]])
        self.assertEmpty(m.trainable_variables)
        for v in m.variables:
            self.assertEqual(v.dtype, tf.float64)
            self.assertEqual(v.synchronization, tf.VariableSynchronization.ON_READ)
            self.assertEqual(v.aggregation, tf.VariableAggregation.SUM)

    def test_batches_equal_concatenation_and_reset(self):
        m = metrics.StreamingMetrics(bins=128)
        self.assertAllEqual([m.result()[k] for k in metrics.METRIC_NAMES], [1.0] * 8)
        for p, y, w in self.batches:
            m.update(p, y, w)
        self._assert_matches_one_shot(m.result(), bins=128)
        ref = _np_counts(self.all_p, self.all_y, self.all_w)
        for key, value in m.counts().items():
            self.assertAllEqual(value, ref[key], msg=key)
        m.reset()
        self.assertAllEqual(m.confusion, np.zeros(4))
        self.assertAllEqual(m.histogram, np.zeros([2, 128]))
        m.update(*self.batches[0])
        one = metrics.confusion(*self.batches[0])
        self.assertAllEqual(m.counts()["tp"], one["tp"])

    def test_counts_stay_exact_beyond_float32(self):
        m = metrics.StreamingMetrics()
        m.update([0.1], [0], [2.0**24])  # 2^24 true negatives in one weighted pixel
        for _ in range(3):
            m.update([0.1], [0])  # float32 would round 2^24 + 1 back to 2^24
        self.assertEqual(m.counts()["tn"].dtype, tf.float64)
        self.assertEqual(float(m.counts()["tn"]), 2.0**24 + 3)

    def test_update_under_xla(self):
        m = metrics.StreamingMetrics(bins=128)
        spec = tf.TensorSpec([2, 8, 8], tf.float32)
        update = tf.function(m.update, jit_compile=True, input_signature=[spec] * 3)
        for p, y, w in self.batches:
            update(p, y.astype(np.float32), w)
        self.assertEqual(update.experimental_get_tracing_count(), 1)
        self._assert_matches_one_shot(m.result(), bins=128)

    def test_update_in_graph_with_unknown_shapes(self):
        m = metrics.StreamingMetrics(bins=128)
        spec = tf.TensorSpec([None, None, None], tf.float32)
        update = tf.function(m.update, input_signature=[spec] * 3)
        for p, y, w in self.batches:
            update(p, y.astype(np.float32), w)
        self._assert_matches_one_shot(m.result(), bins=128)


class XlaTest(tf.test.TestCase):

    def test_per_image_scores_match_eager(self):
        # The pooled path is covered by StreamingMetricsTest.test_update_under_xla.
        p, y, w = _random_case(np.random.default_rng(3), [3, 8, 8])
        per_image = functools.partial(metrics.per_image_scores, threshold=0.3, bins=256)
        compiled = tf.function(per_image, jit_compile=True)(p, y, w)
        for name, value in per_image(p, y, w).items():
            self.assertAllClose(compiled[name], value, atol=1e-6, msg=name)
