"""Tests for r2u.evaluation.classes: hand-counted confusion and scores, the NaN
convention, pooled vs per-image means, K = 2 against the binary metrics, and
StreamingConfusion eagerly, under XLA and (in a child process) on 2 replicas.

The 2-replica test needs 2 logical CPUs configured before TensorFlow initialises its
devices, so it runs this file again in a fresh process with `_CHILD_ENV` set, where
only `MirroredConfusionTest` is defined (as tests/metrics_distributed_test.py does).
"""

import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tests import child

_CHILD_ENV = "R2U_CLASSES_DISTRIBUTED_CHILD"
_IN_CHILD = os.environ.get(_CHILD_ENV) == "1"
if _IN_CHILD:  # before anything touches the TF runtime; fails loudly if too late
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2)

from r2u.evaluation import classes  # pylint: disable=g-import-not-at-top
from r2u.evaluation import metrics  # pylint: disable=g-import-not-at-top

_IGNORE = 255
# A 3-class image; (3, 3) carries the ignore label. Counted by hand below.
_TRUTH = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, _IGNORE]])
_PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [2, 0, 0, 0], [2, 2, 2, 1]])
_MATRIX = [[5, 1, 1],  # truth 0 (7 px): (0,1) -> 1, (3,2) -> 2, the rest right
           [1, 3, 0],  # truth 1 (4 px): (1,3) -> 0
           [1, 0, 3]]  # truth 2 (4 px): (2,1) -> 0


def _one_hot(labels, k):
    """Probabilities whose argmax is `labels`, never tied."""
    return (0.1 + 0.8 * np.eye(k)[np.clip(labels, 0, k - 1)]).astype(np.float32)


def _stream_data(k, seed, images=8, size=8):
    """Random probs [N, H, W, K], labels with ~10% ignore label, weights = FOV."""
    rng = np.random.default_rng(seed)
    probs = rng.random([images, size, size, k]).astype(np.float32)
    labels = rng.integers(0, k, [images, size, size])
    labels = np.where(rng.random(labels.shape) < 0.1, _IGNORE, labels).astype(np.int32)
    fov = (rng.random(labels.shape) < 0.8).astype(np.float32)
    return probs, labels, fov


def _numpy_matrix(probs, labels, fov):
    valid = (fov > 0) & (labels != _IGNORE)
    return classes.confusion(probs.argmax(-1), labels, valid, probs.shape[-1])


class ClassesTest(tf.test.TestCase, parameterized.TestCase):

    def test_hand_counted_confusion_counts_and_scores(self):
        matrix = classes.confusion(_PRED, _TRUTH, _TRUTH != _IGNORE, 3)
        self.assertEqual(matrix.dtype, np.int64)
        self.assertAllEqual(matrix, _MATRIX)
        got = classes.counts(matrix)
        for name, want in {"tp": [5, 3, 3], "fp": [2, 1, 1], "fn": [2, 1, 1],
                           "tn": [6, 10, 10]}.items():
            self.assertAllEqual(got[name], want, msg=name)
        got = classes.scores(got)
        want = {"dice": [10 / 14, 6 / 8, 6 / 8], "jaccard": [5 / 9, 3 / 5, 3 / 5],
                "sensitivity": [5 / 7, 3 / 4, 3 / 4],
                "precision": [5 / 7, 3 / 4, 3 / 4],
                "specificity": [6 / 8, 10 / 11, 10 / 11],
                "accuracy": [11 / 15, 13 / 15, 13 / 15]}
        self.assertCountEqual(got, classes.SCORE_NAMES)
        for name in classes.SCORE_NAMES:
            self.assertEqual(got[name].dtype, np.float64)
            self.assertAllClose(got[name], want[name], rtol=1e-12, msg=name)

    def test_confusion_rejects_bad_input(self):
        with self.assertRaisesRegex(ValueError, "truth label 255 .* outside"):
            classes.confusion(_PRED, _TRUTH, None, 3)
        with self.assertRaisesRegex(ValueError, "shape"):
            classes.confusion(_PRED[:3], _TRUTH, None, 3)

    def test_empty_class_convention(self):
        truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
        # Class 2 absent from both, class 3 predicted but absent, class 1 missed.
        pred = np.array([[0, 3, 0, 0], [0, 0, 0, 0]])
        s = classes.scores(classes.counts(classes.confusion(pred, truth, None, 4)))
        for name in classes.SCORE_NAMES:
            self.assertTrue(np.isnan(s[name][2]), name)  # even specificity, accuracy
        nan = np.nan
        self.assertAllClose([s[n][3] for n in classes.SCORE_NAMES],
                            [0.0, 0.0, nan, 0.0, 7 / 8, 7 / 8])
        self.assertAllClose([s[n][1] for n in classes.SCORE_NAMES],
                            [0.0, 0.0, 0.0, nan, 1.0, 4 / 8])
        scorer = classes.Scorer(["bg", "a", "b", "c"])
        image = scorer.add("x", _one_hot(pred, 4), truth)
        self.assertEqual(image["dice"], 0.0)  # mean of classes 1 and 3; 2 is skipped
        self.assertAllClose(image["specificity"], (1.0 + 7 / 8) / 2)
        self.assertTrue(np.isnan(image["per_class"]["b"]["dice"]))
        self.assertTrue(np.isnan(image["per_class"]["c"]["sensitivity"]))
        self.assertEqual(image["sensitivity"], 0.0)  # class 1 only: 3 has no truth

    def test_per_image_mean_skips_images_without_the_class(self):
        scorer = classes.Scorer(["bg", "a", "b"])
        truth = np.zeros([4, 4], np.int64)
        truth[:2, :2] = 1
        scorer.add("no_b", _one_hot(truth, 3), truth)  # b absent: NaN, skipped
        truth_b = truth.copy()
        truth_b[3, 3] = 2
        pred_b = truth.copy()
        pred_b[3, 2:] = 2  # b: TP 1, FP 1 -> Dice 2/3
        scorer.add("with_b", _one_hot(pred_b, 3), truth_b)
        result = scorer.result()
        b = result["per_image_mean"]["per_class"]["b"]
        self.assertEqual(b["images"], 1)
        self.assertAllClose(b["dice"], 2 / 3)  # not (NaN or 1 + 2/3) / 2
        self.assertEqual(result["per_image_mean"]["per_class"]["a"]["images"], 2)
        self.assertAllClose(result["per_image_mean"]["dice"], (1.0 + 2 / 3) / 2)
        self.assertEqual(result["pooled"]["per_class"]["b"]["pixels"], 1)
        self.assertEqual(result["pooled"]["per_class"]["a"]["pixels"], 8)

    def test_pooled_and_per_image_mean_differ(self):
        scorer = classes.Scorer(["bg", "fg"])
        large = np.zeros([4, 4], np.int64)
        large[:3, :4] = 1  # 12 px, predicted exactly: Dice 1
        scorer.add("large", _one_hot(large, 2), large)
        small, missed = np.zeros([4, 4], np.int64), np.zeros([4, 4], np.int64)
        small[0, 0], missed[1, 1] = 1, 1  # TP 0, FP 1, FN 1: Dice 0
        scorer.add("small", _one_hot(missed, 2), small)
        result = scorer.result()
        self.assertEqual([r["id"] for r in result["per_image"]], ["large", "small"])
        self.assertAllClose([r["dice"] for r in result["per_image"]], [1.0, 0.0])
        self.assertAllClose(result["per_image_mean"]["dice"], 0.5)
        self.assertAllClose(result["pooled"]["dice"], 24 / 26)  # TP 12, FP 1, FN 1
        self.assertAllClose(result["pooled"]["jaccard"], 12 / 14)
        self.assertEqual(result["pooled"]["matrix"], [[18, 1], [1, 12]])
        self.assertEqual(result["class_names"], ["bg", "fg"])

    def test_two_classes_match_the_binary_metrics(self):
        rng = np.random.default_rng(0)
        p1 = rng.random([6, 16, 16]).astype(np.float32)
        p1 = np.where(np.abs(p1 - 0.5) < 1e-3, 0.25, p1)  # argmax = p1 > 0.5: no ties
        truth = (rng.random(p1.shape) < 0.3).astype(np.int64)
        fov = rng.random(p1.shape) < 0.8
        probs = np.stack([1.0 - p1, p1], -1)
        scorer = classes.Scorer(["bg", "fg"])
        for i in range(len(p1)):
            image = scorer.add(str(i), probs[i], truth[i], fov[i])
            want = metrics.scores(metrics.confusion(p1[i], truth[i], fov[i], 0.5))
            for name in classes.SCORE_NAMES:
                self.assertAllClose(image[name], want[name], rtol=1e-6, msg=name)
        binary = metrics.confusion(p1, truth, fov, 0.5)
        pooled = classes.counts(scorer.result()["pooled"]["matrix"])
        for name in classes.COUNT_NAMES:
            self.assertEqual(pooled[name][1], binary[name].numpy(), msg=name)
        want = metrics.scores(binary)
        for name in classes.SCORE_NAMES:
            self.assertAllClose(scorer.result()["pooled"][name], want[name], rtol=1e-6)

    def test_scorer_rejects_bad_input(self):
        with self.assertRaisesRegex(ValueError, "distinct class names"):
            classes.Scorer(["bg"])
        with self.assertRaisesRegex(ValueError, "img: probs shape"):
            classes.Scorer(["bg", "fg"]).add("img", np.zeros([4, 4, 3]),
                                             np.zeros([4, 4], np.int64))
        with self.assertRaisesRegex(ValueError, "at least one image"):
            classes.Scorer(["bg", "fg"]).result()


class StreamingConfusionTest(tf.test.TestCase, parameterized.TestCase):

    def _check(self, m, probs, labels, fov):
        want = _numpy_matrix(probs, labels, fov)
        self.assertEqual(m.matrix().dtype, tf.float64)
        self.assertAllEqual(m.matrix(), want)
        dice = classes.scores(classes.counts(want))["dice"]
        result = m.result()
        self.assertCountEqual(result, ["dice"] + [f"dice/{k}" for k in range(1, 4)])
        self.assertEqual(result["dice"].dtype, tf.float32)
        self.assertAllClose(result["dice"], dice[1:].mean(), rtol=1e-6)
        for k in range(1, 4):
            self.assertAllClose(result[f"dice/{k}"], dice[k], rtol=1e-6)

    @parameterized.parameters(False, True)
    def test_matches_numpy_and_resets(self, jit):
        m = classes.StreamingConfusion(4)
        update = tf.function(m.update, jit_compile=True) if jit else m.update
        probs, labels, fov = _stream_data(4, seed=1)
        for batch in (slice(0, 4), slice(4, 8)):  # two batches, pooled
            update(probs[batch], labels[batch], fov[batch])
        self._check(m, probs, labels, fov)
        m.reset()
        self.assertAllEqual(m.matrix(), np.zeros([4, 4]))
        update(probs[:4], labels[:4], fov[:4])
        self._check(m, probs[:4], labels[:4], fov[:4])

    def test_unseen_class_is_nan_and_skipped(self):
        m = classes.StreamingConfusion(3)
        labels = np.array([[[0, 1], [1, _IGNORE]]])  # the ignore label has weight 1
        m.update(_one_hot(labels, 3), labels)
        result = m.result()
        self.assertAllEqual(m.matrix(), [[1, 0, 0], [0, 2, 0], [0, 0, 0]])
        self.assertTrue(np.isnan(result["dice/2"]))
        self.assertEqual(result["dice/1"], 1.0)
        self.assertEqual(result["dice"], 1.0)

    def test_rejects_bad_shapes(self):
        m = classes.StreamingConfusion(3)
        with self.assertRaisesRegex(ValueError, "probs shape"):
            m.update(np.zeros([1, 2, 2, 2], np.float32), np.zeros([1, 2, 2], np.int32))
        with self.assertRaisesRegex(ValueError, "num_classes"):
            classes.StreamingConfusion(1)

    def test_mirrored_strategy_in_fresh_process(self):
        child.run_file_in_child(self, __file__, _CHILD_ENV, "2 passed")


if _IN_CHILD:
    del ClassesTest, StreamingConfusionTest  # run in the parent process

    class MirroredConfusionTest(tf.test.TestCase, parameterized.TestCase):
        """Runs only in the child process with 2 logical CPUs."""

        @parameterized.parameters(False, True)
        def test_replicas_sum_on_read(self, jit):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            self.assertLen(devices, 2)
            strategy = tf.distribute.MirroredStrategy(devices)
            with strategy.scope():
                m = classes.StreamingConfusion(3)
            probs, labels, fov = _stream_data(3, seed=2)

            def update(*batch):  # XLA: one jit function per replica (see metrics.py)
                fn = tf.function(m.update, jit_compile=True) if jit else m.update
                return fn(*batch)

            @tf.function
            def step(batch):
                strategy.run(update, args=batch)

            dataset = tf.data.Dataset.from_tensor_slices((probs, labels, fov)).batch(4)
            for batch in strategy.experimental_distribute_dataset(dataset):
                step(batch)
            want = _numpy_matrix(probs, labels, fov)
            local = strategy.experimental_local_results(m.confusion)
            self.assertLen(local, 2)
            for copy in local:  # each replica saw only part of the data
                self.assertBetween(np.sum(copy), 1, want.sum() - 1)
            self.assertAllEqual(m.matrix(), want)
            dice = classes.scores(classes.counts(want))["dice"]
            self.assertAllClose(m.result()["dice"], dice[1:].mean(), rtol=1e-6)


if __name__ == "__main__":
    tf.test.main()
