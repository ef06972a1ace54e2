"""Evaluating a tiny trained model: sources agree, tiles, FOV, observers, JSON, CLI."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf

from r2u.inference import loading
from r2u import config
from r2u.evaluation import evaluate
from r2u import figures
from r2u.evaluation import metrics
from r2u.evaluation import scoring
from r2u.training import loop
from r2u.data import manifest
from r2u.data import prepare
from r2u.data import tfrecord

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = set(metrics.METRIC_NAMES)


def tiny_experiment():
    """Two steps of a tiny U-Net. (A 2-step R2U-Net saturates to ~1 everywhere in
    inference mode: its batch-norm moving statistics are still the initial ones.)"""
    exp = config.synthetic()
    return dataclasses.replace(
        exp, model=dataclasses.replace(exp.model, arch="unet", filters=4, depth=2),
        train=dataclasses.replace(exp.train, steps=2, steps_per_epoch=2, batch_size=4,
                                  log_every=1, xla="off"))


def fov_dataset(folder, n=3, size=32):
    """A prepared 'drive'-like test split with a round FOV and a second observer."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:size, :size]
    fov = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2.2) ** 2)
    examples = []
    for i in range(n):
        mask = (rng.uniform(size=(size, size)) < 0.3) & fov
        mask2 = mask ^ (rng.uniform(size=(size, size)) < 0.1)  # disagrees, also outside
        # Noise independent of the mask: every confusion count is non-zero.
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        examples.append({"id": f"eye-{i}", "image": image,
                         "mask": mask.astype(np.uint8), "fov": fov.astype(np.uint8),
                         "mask2": mask2.astype(np.uint8)})
    os.makedirs(folder)
    splits = {"test": tfrecord.write_split(folder, "test", examples, 1)}
    manifest.write(folder, {
        "dataset": "drive", "splits": splits, "image_shape": [size, size, 3],
        "channels": 3, "class_weights": [1.0, 1.0], "source_files": [],
        "preprocessing": "test fixture", "format_version": manifest.FORMAT_VERSION,
        "mask2_splits": ["test"]})
    return folder, examples


def numpy_scores(probs, masks, fovs, threshold):
    """Pooled counts and scores, and histogram and exact AUCs, recomputed in NumPy."""
    p = np.concatenate([x[f > 0] for x, f in zip(probs, fovs)]).astype(np.float64)
    y = np.concatenate([m[f > 0] for m, f in zip(masks, fovs)]) > 0
    pred = p > threshold
    tp, fp = np.sum(pred & y), np.sum(pred & ~y)
    fn, tn = np.sum(~pred & y), np.sum(~pred & ~y)
    scores = {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
              "accuracy": (tp + tn) / p.size, "sensitivity": tp / (tp + fn),
              "specificity": tn / (tn + fp), "dice": 2 * tp / (2 * tp + fp + fn),
              "jaccard": tp / (tp + fp + fn)}
    bins = np.minimum(np.floor(np.clip(p, 0, 1) * metrics.DEFAULT_BINS).astype(int),
                      metrics.DEFAULT_BINS - 1)
    neg = np.bincount(bins[~y], minlength=metrics.DEFAULT_BINS).astype(np.float64)
    pos = np.bincount(bins[y], minlength=metrics.DEFAULT_BINS).astype(np.float64)
    below = np.cumsum(neg) - neg
    scores["auc"] = np.sum(pos * (below + 0.5 * neg)) / (pos.sum() * neg.sum())
    _, level = np.unique(p, return_inverse=True)  # exact: one bin per distinct value
    neg, pos = np.bincount(level[~y]), np.bincount(level[y], minlength=len(neg))
    neg = np.pad(neg, (0, len(pos) - len(neg)))
    below = np.cumsum(neg) - neg
    scores["exact_auc"] = np.sum(pos * (below + 0.5 * neg)) / (pos.sum() * neg.sum())
    return scores


def numpy_float32_scores(probs, masks, fovs, threshold):
    """Pooled counts and scores, and per-image mean scores, at `threshold` compared in
    float32 (as `r2u.evaluation.metrics`), recomputed in NumPy."""
    def scores(tp, fp, fn, tn):
        def ratio(num, den):
            return num / den if den > 0 else 1.0
        return {"accuracy": ratio(tp + tn, tp + fp + fn + tn),
                "sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
                "precision": ratio(tp, tp + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn),
                "dice": ratio(2 * tp, 2 * tp + fp + fn),
                "jaccard": ratio(tp, tp + fp + fn)}
    counts = []
    for p, m, f in zip(probs, masks, fovs):
        pred = p[f > 0].astype(np.float32) > np.float32(threshold)
        y = m[f > 0] > 0
        counts.append([float(np.sum(pred & y)), float(np.sum(pred & ~y)),
                       float(np.sum(~pred & y)), float(np.sum(~pred & ~y))])
    total = np.sum(counts, axis=0)
    per_image = [scores(*c) for c in counts]
    return {"pooled": {**scores(*total),
                       "counts": dict(zip(("tp", "fp", "fn", "tn"), total.tolist()))},
            "per_image_mean": {n: np.mean([s[n] for s in per_image])
                               for n in per_image[0]}}


def pairwise_auc(positives, negatives):
    """The O(P N) Mann-Whitney AUC: P(positive > negative), ties 1/2."""
    diff = (np.asarray(positives, np.float64)[:, None]
            - np.asarray(negatives, np.float64)[None, :])
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


class EvaluationTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        root = tempfile.mkdtemp()
        cls.data_dir = os.path.join(root, "data")
        prepare.prepare("synthetic", None, cls.data_dir, image_size=32, limit=8)
        cls.model_dir = os.path.join(root, "model")
        loop.train(tiny_experiment(), cls.model_dir, cls.data_dir)
        cls.saved_only = os.path.join(root, "saved_only")  # the SavedModel alone
        shutil.copytree(os.path.join(cls.model_dir, "export"), cls.saved_only)
        cls.fov_dir, cls.fov_examples = fov_dataset(os.path.join(root, "fov"))
        cls.checkpoint = loading.load(cls.model_dir)
        cls.saved = loading.load(cls.saved_only)

    def test_checkpoint_and_saved_model_alone_give_the_same_metrics(self):
        self.assertEqual((self.checkpoint.source, self.saved.source),
                         ("checkpoint", "saved_model"))
        a = evaluate.evaluate(self.checkpoint, self.data_dir, "test")
        b = evaluate.evaluate(self.saved, self.data_dir, "test")
        self.assertEqual(a["num_images"], 8)
        self.assertEqual([s["id"] for s in a["per_image"]],
                         [s["id"] for s in b["per_image"]])
        for x, y in zip(a["per_image"], b["per_image"]):
            for name in METRICS:
                self.assertAllClose(x[name], y[name], atol=1e-6, msg=name)
        for kind in ("pooled", "per_image_mean"):
            for name in METRICS:
                self.assertAllClose(a[kind][name], b[kind][name], atol=1e-6)
        self.assertEqual(a["model"]["step"], 2)
        self.assertEqual(b["model"]["source"], "saved_model")

    def test_pooled_metrics_equal_numpy_on_the_written_probability_maps(self):
        probs_dir = tempfile.mkdtemp()
        result = evaluate.evaluate(self.saved, self.fov_dir, "test",
                                     evaluate.Options(probs_dir=probs_dir))
        probs = [np.load(os.path.join(probs_dir, f"eye-{i}.npy")) for i in range(3)]
        # A threshold inside the probability range makes every count non-trivial.
        threshold = float(np.median(np.concatenate([p.ravel() for p in probs])))
        result = evaluate.evaluate(self.saved, self.fov_dir, "test",
                                     evaluate.Options(threshold=threshold))
        want = numpy_scores(probs, [e["mask"] for e in self.fov_examples],
                            [e["fov"] for e in self.fov_examples], threshold)
        pooled = result["pooled"]
        for name in ("tp", "fp", "fn", "tn"):
            self.assertGreater(want[name], 0, name)
            self.assertEqual(pooled["counts"][name], want[name], name)
        self.assertEqual(sum(pooled["counts"].values()),  # FOV pixels only
                         sum(int(e["fov"].sum()) for e in self.fov_examples))
        for name in ("accuracy", "sensitivity", "specificity", "dice", "jaccard",
                     "auc"):
            self.assertAllClose(pooled[name], want[name], atol=1e-6, msg=name)
        self.assertAllClose(pooled["auc"], want["exact_auc"], atol=0.01)
        self.assertEqual(result["inference"]["threshold"], threshold)
        means = {n: np.mean([s[n] for s in result["per_image"]]) for n in METRICS}
        per_class = result["per_image_mean"].pop("per_class")
        self.assertAllClose(result["per_image_mean"], means, atol=1e-6)
        # The foreground's per-class block: the same pooled Dice, from the same counts.
        foreground = [name for name in per_class if name != "background"]
        self.assertLen(foreground, 1)
        self.assertAllClose(result["pooled"]["per_class"][foreground[0]]["dice"],
                            pooled["dice"], atol=1e-6)

    def test_second_observer_is_scored_against_the_first_in_the_fov(self):
        result = evaluate.evaluate(self.checkpoint, self.fov_dir, "test",
                                     evaluate.Options(second_observer=True))
        human = result["second_observer"]
        want = numpy_scores([e["mask2"].astype(np.float32) for e in self.fov_examples],
                            [e["mask"] for e in self.fov_examples],
                            [e["fov"] for e in self.fov_examples], 0.5)
        for name in ("tp", "fp", "fn", "tn"):
            self.assertEqual(human["pooled"]["counts"][name], want[name], name)
        for name in ("accuracy", "sensitivity", "specificity", "dice"):
            self.assertAllClose(human["pooled"][name], want[name], atol=1e-6)
        self.assertLen(human["per_image"], 3)
        self.assertIn("per_image_mean", human)
        # A binary mask has no ranking: its "AUC" is balanced accuracy, so named.
        for part in [human["pooled"], human["per_image_mean"], *human["per_image"]]:
            self.assertNotIn("auc", part)
            self.assertAllClose(part["balanced_accuracy"],
                                (part["sensitivity"] + part["specificity"]) / 2,
                                atol=1e-6)
        self.assertAllClose(human["pooled"]["balanced_accuracy"],
                            (want["sensitivity"] + want["specificity"]) / 2, atol=1e-6)
        self.assertIn("auc", result["pooled"])  # the model keeps its AUC
        self.assertIn("2nd observer pooled", evaluate.format_table(result))
        with self.assertRaisesRegex(ValueError, "no second observer"):
            evaluate.evaluate(self.checkpoint, self.data_dir, "test",
                                evaluate.Options(second_observer=True))

    def _evaluate_with_probs(self, predictor, options=evaluate.Options()):
        """evaluate() on the FOV split, and the probability maps it scored."""
        folder = tempfile.mkdtemp()
        result = evaluate.evaluate(predictor, self.fov_dir, "test",
                                     dataclasses.replace(options, probs_dir=folder))
        probs = [np.load(os.path.join(folder, f"{e['id']}.npy"))
                 for e in self.fov_examples]
        return result, probs

    def test_default_threshold_is_the_models_and_0_5_is_reported_beside_it(self):
        # Also with a threshold other than the trained one: it must come from spec.
        moved = dataclasses.replace(
            self.saved, spec=dataclasses.replace(self.saved.spec, threshold=0.42))
        for predictor in (self.saved, moved):
            result, probs = self._evaluate_with_probs(predictor)
            threshold = predictor.threshold
            self.assertEqual(result["inference"]["threshold"], threshold)
            masks = [e["mask"] for e in self.fov_examples]
            fovs = [e["fov"] for e in self.fov_examples]
            for t, part in ((threshold, result), (0.5, result["at_threshold_0.5"])):
                want = numpy_float32_scores(probs, masks, fovs, t)
                self.assertEqual(part["pooled"]["counts"], want["pooled"]["counts"])
                for kind in ("pooled", "per_image_mean"):
                    for name in metrics.SCORE_NAMES:
                        self.assertAllClose(part[kind][name], want[kind][name],
                                            atol=1e-6, msg=f"{t} {kind} {name}")
            half = result["at_threshold_0.5"]
            self.assertEqual(set(half), {"pooled", "per_image_mean"})
            self.assertNotIn("auc", half["pooled"])
            self.assertEqual(set(half["per_image_mean"]), set(metrics.SCORE_NAMES))
            table = evaluate.format_table(result)
            self.assertIn(f"model t={threshold:.2f} pooled", table)
            self.assertIn("model t=0.5 per_image_mean", table)
        self.assertEqual(moved.threshold, 0.42)
        # The trained model's counts at its own threshold and at 0.5 differ.
        result, _ = self._evaluate_with_probs(self.saved)
        if self.saved.threshold != 0.5:
            self.assertNotEqual(result["pooled"]["counts"],
                                result["at_threshold_0.5"]["pooled"]["counts"])

    def test_scores_at_0_5_cost_no_second_auc(self):
        with mock.patch.object(metrics, "per_image_scores",
                               wraps=metrics.per_image_scores) as histogram_scores:
            result, _ = self._evaluate_with_probs(self.saved)
        # One histogram pass per image: the model's own threshold only.
        self.assertEqual(histogram_scores.call_count, result["num_images"])

    def test_auc_is_exact_per_image_and_pooled(self):
        result, probs = self._evaluate_with_probs(self.checkpoint)
        positives, negatives = [], []
        for scores, p, e in zip(result["per_image"], probs, self.fov_examples):
            inside, truth = e["fov"] > 0, e["mask"] > 0
            positives.append(p[inside & truth])
            negatives.append(p[inside & ~truth])
            self.assertEqual(scores["id"], e["id"])
            self.assertAlmostEqual(scores["auc"],
                                   pairwise_auc(positives[-1], negatives[-1]),
                                   places=10)
        self.assertAlmostEqual(
            result["pooled"]["auc"],
            pairwise_auc(np.concatenate(positives), np.concatenate(negatives)),
            places=10)
        self.assertAlmostEqual(result["per_image_mean"]["auc"],
                               np.mean([s["auc"] for s in result["per_image"]]),
                               places=10)

    def test_nan_probabilities_are_refused(self):
        def nan_predict(images):  # the real probabilities with one NaN pixel
            probs = self.checkpoint.predict(images).numpy()
            probs[0, 5, 7, :] = np.nan
            return tf.constant(probs)

        def nan_network(images):
            probs = self.checkpoint.network(images).numpy()
            probs[:, 3, 3, :] = np.nan
            return tf.constant(probs)

        folder = tempfile.mkdtemp()
        broken = dataclasses.replace(self.checkpoint, predict=nan_predict)
        with self.assertRaisesRegex(ValueError, "NaN"):
            evaluate.evaluate(broken, self.fov_dir, "test",
                                evaluate.Options(probs_dir=folder))
        self.assertEqual(os.listdir(folder), [])  # nothing of the NaN image written
        broken = dataclasses.replace(self.checkpoint, network=nan_network)
        with self.assertRaisesRegex(ValueError, "NaN"):
            evaluate.evaluate(broken, self.fov_dir, "test",
                                evaluate.Options(tile=16, max_images=1))

    def test_tiled_inference_matches_the_whole_image(self):
        probs = {}
        for name, tile, stride in (("whole", 0, 0), ("one_tile", 32, 0),
                                   ("overlapping", 24, 4)):
            folder = tempfile.mkdtemp()
            result = evaluate.evaluate(
                self.checkpoint, self.data_dir, "test",
                evaluate.Options(tile=tile, stride=stride, probs_dir=folder,
                                   max_images=3))
            probs[name] = np.stack([np.load(os.path.join(folder, f))
                                    for f in sorted(os.listdir(folder))])
            probs[name + "_result"] = result
        self.assertLen(probs["whole"], 3)
        self.assertGreater(probs["whole"].std(), 1e-3)  # not a constant map
        self.assertAllClose(probs["one_tile"], probs["whole"], atol=1e-6)
        # No threshold given: the model's own, chosen on validation images.
        self.assertEqual(probs["overlapping_result"]["inference"],
                         {"threshold": self.checkpoint.threshold, "fov_masked": True,
                          "mode": "tiled", "tile": 24, "stride": 4, "window": None,
                          "overlap": None})
        explicit = evaluate.evaluate(
            self.checkpoint, self.data_dir, "test",
            evaluate.Options(threshold=0.5, tile=24, stride=4, max_images=1))
        self.assertEqual(explicit["inference"]["threshold"], 0.5)
        # Tiles see less context than the whole image (the receptive field is wider
        # than a tile), so they agree only approximately.
        diff = np.abs(probs["overlapping"] - probs["whole"])
        self.assertLess(diff.mean(), 0.05)
        self.assertLess(diff.max(), 0.35)

    def test_cli_writes_json_figures_and_a_table(self):
        out = os.path.join(tempfile.mkdtemp(), "eval", "test.json")
        figures = os.path.join(tempfile.mkdtemp(), "figs")
        run = subprocess.run(
            [sys.executable, os.path.join(REPO, "bin", "evaluate"),
             f"--model_dir={self.saved_only}", f"--data_dir={self.data_dir}",
             "--split=test", f"--out={out}", "--threshold=0.4", "--figures=2",
             f"--figures_dir={figures}"],
            capture_output=True, text=True, timeout=600, cwd=REPO)
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        with open(out) as f:
            result = json.load(f)
        self.assertLen(result["per_image"], 8)
        for scores in result["per_image"]:
            self.assertEqual(set(scores), METRICS | {"id"})
        self.assertContainsSubset(METRICS, result["pooled"])
        self.assertEqual(set(result["per_image_mean"]), METRICS | {"per_class"})
        self.assertContainsSubset({"pooled", "per_image_mean"}, result["definitions"])
        self.assertEqual(result["inference"]["threshold"], 0.4)
        self.assertEqual(result["model"]["source"], "saved_model")
        self.assertEqual(result["data"]["split"], "test")
        self.assertGreater(result["wall_time_seconds"], 0)
        self.assertIn("model t=0.40 pooled", run.stdout)
        self.assertIn("model t=0.5 pooled", run.stdout)
        self.assertIn("model t=0.40 per_image_mean", run.stdout)
        # Written atomically: no temporary file is left behind.
        self.assertEqual(os.listdir(os.path.dirname(out)), ["test.json"])
        self.assertLen(os.listdir(figures), 2)
        picture = tf.io.decode_png(tf.io.read_file(
            os.path.join(figures, sorted(os.listdir(figures))[0])))
        self.assertEqual(picture.shape, (32, 4 * 32 + 3 * 4, 3))

    def test_cli_reports_a_folder_without_a_model(self):
        empty = tempfile.mkdtemp()
        run = subprocess.run(
            [sys.executable, os.path.join(REPO, "bin", "evaluate"),
             f"--model_dir={empty}", f"--out={os.path.join(empty, 'x.json')}"],
            capture_output=True, text=True, timeout=600, cwd=REPO)
        self.assertEqual(run.returncode, 1)
        self.assertIn(f"{empty}: no model found", run.stderr)
        self.assertFalse(os.path.exists(os.path.join(empty, "x.json")))

    def test_resolve_data_uses_a_prepared_folder_or_needs_a_dataset(self):
        work = tempfile.mkdtemp()
        self.assertEqual(evaluate.resolve_data(self.saved, work, None, self.fov_dir),
                         (self.fov_dir, "drive"))
        with self.assertRaisesRegex(ValueError, "no config.json.*--dataset"):
            evaluate.resolve_data(self.saved, work)
        self.assertEqual(os.listdir(work), [])  # nothing prepared

    def test_figure_panels_and_downscaling(self):
        mask = np.array([[1, 1], [0, 0]], np.uint8)
        probs = np.array([[0.9, 0.1], [0.9, 0.1]], np.float32)
        fov = np.array([[1, 1], [1, 0]], np.uint8)
        picture = figures.figure(np.zeros((2, 2, 1), np.uint8), mask, probs, fov)
        errors = picture[:, -2:]
        self.assertAllEqual(errors[0, 0], [0, 255, 0])  # true positive: green
        self.assertAllEqual(errors[0, 1], [0, 0, 255])  # false negative: blue
        self.assertAllEqual(errors[1, 0], [255, 0, 0])  # false positive: red
        self.assertAllEqual(errors[1, 1], [48, 48, 48])  # outside the FOV
        big = figures.figure(np.zeros((1000, 600, 3), np.uint8),
                             np.zeros((1000, 600)), np.zeros((1000, 600)),
                             np.ones((1000, 600)), max_side=100)
        self.assertEqual(big.shape, (100, 4 * 60 + 3 * 4, 3))

    def test_real_drive_second_observer_is_the_known_human_baseline(self):
        raw = prepare.default_data_dir("drive")
        if not os.path.isdir(raw):
            self.skipTest(f"DRIVE not found at {raw} (set R2U_DATA_DIR)")
        data_dir = os.path.join(tempfile.mkdtemp(), "drive")
        prepare.prepare("drive", raw, data_dir, limit=2)
        result = evaluate.evaluate(self.checkpoint, data_dir, "test",
                                     evaluate.Options(second_observer=True))
        human = result["second_observer"]
        self.assertEqual(result["num_images"], 2)
        # Published for all 20 images: accuracy 0.947, sensitivity 0.776 (Staal 2004).
        self.assertBetween(human["pooled"]["accuracy"], 0.93, 0.96)
        self.assertBetween(human["per_image_mean"]["sensitivity"], 0.70, 0.85)
        fov_pixels = sum(human["pooled"]["counts"].values())
        self.assertBetween(fov_pixels, 2 * 0.6 * 584 * 565, 2 * 0.8 * 584 * 565)


class ScorerTest(tf.test.TestCase):

    def test_the_second_threshold_equals_a_scorer_of_its_own_without_auc(self):
        rng = np.random.default_rng(0)
        both, alone = scoring.Scorer(0.3, also_at=0.5), scoring.Scorer(0.5)
        for i in range(3):
            probs = rng.uniform(size=(9, 11)).astype(np.float32)
            probs[0, :3] = 0.5  # exactly at the threshold: background
            mask = (rng.uniform(size=(9, 11)) > 0.6).astype(np.uint8)
            fov = (rng.uniform(size=(9, 11)) > 0.2).astype(np.uint8)
            both.add(str(i), probs, mask, fov)
            alone.add(str(i), probs, mask, fov)
        want = alone.result()
        got = both.result_also()
        self.assertEqual(got["pooled"]["counts"], want["pooled"]["counts"])
        for kind in ("pooled", "per_image_mean"):
            self.assertEqual(got[kind], {k: v for k, v in want[kind].items() if k != "auc"})
        self.assertNotEqual(both.result()["pooled"]["counts"], want["pooled"]["counts"])


if __name__ == "__main__":
    tf.test.main()
