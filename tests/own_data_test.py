"""Your own data, end to end: a folder of PNGs with K classes -> plan -> train ->
export (labels and probabilities) -> evaluate (per class) -> predict (palette PNGs)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from r2u import config
from r2u.data import plan as plan_lib
from r2u.data import prepare
from r2u.data import prepared
from r2u.evaluation import evaluate
from r2u.inference import loading
from r2u.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shapes_folder(root, k, cases=8, test=3, seed=0, sizes=((48, 48), (48, 64))):
    """The plain layout: gray images of squares whose brightness names their class
    (class c is c * 200 / (k - 1) + 30 bright on a dark background)."""
    rng = np.random.default_rng(seed)
    names = {"background": 0, **{f"class{c}": c for c in range(1, k)}}
    for split, count in (("train", cases), ("test", test)):
        for n in range(count):
            h, w = sizes[n % len(sizes)]
            label = np.zeros((h, w), np.uint8)
            for c in range(1, k):
                y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
                label[y:y + 12, x:x + 12] = c
            image = 20 + label * (200 // (k - 1)) + rng.integers(0, 10, (h, w))
            for kind, pixels in (("images", image.astype(np.uint8)), ("masks", label)):
                os.makedirs(os.path.join(root, split, kind), exist_ok=True)
                Image.fromarray(pixels).save(os.path.join(root, split, kind,
                                                          f"{split}{n:03d}.png"))
    with open(os.path.join(root, "labels.json"), "w") as f:
        json.dump(names, f)


def tiny(exp, steps=6):
    """The planned experiment, shrunk to seconds."""
    import dataclasses
    return dataclasses.replace(
        exp, model=dataclasses.replace(exp.model, filters=4, depth=2),
        train=dataclasses.replace(exp.train, steps=steps, steps_per_epoch=3,
                                  warmup_steps=1, batch_size=4, log_every=3))


class OwnDataTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)

    def _prepared(self, k):
        shapes_folder(os.path.join(self.root, "raw"), k)
        out = os.path.join(self.root, "data")
        prepare.prepare("folder", os.path.join(self.root, "raw"), out,
                        validation_count=2)
        return prepared.load(out)

    @parameterized.parameters(2, 3, 5)
    def test_k_classes_train_export_and_evaluate(self, k):
        data = self._prepared(k)
        planned = plan_lib.make(data.fingerprint(), data.classes, data.channels)
        exp = tiny(plan_lib.apply(planned, config.preset("folder")))
        self.assertEqual(exp.model.num_classes, k)
        model_dir = os.path.join(self.root, "run")
        summary = loop.train(exp, model_dir, data)
        self.assertEqual(summary["steps"], 6)
        predictor = loading.load(os.path.join(model_dir, "export"))
        self.assertEqual(predictor.spec.classes, data.classes)
        # The export's labels are its probabilities' argmax (binary: thresholded),
        # at the size of an image never seen in training.
        saved = tf.saved_model.load(os.path.join(model_dir, "export"))
        image = np.random.default_rng(1).random((1, 37, 53, 1)).astype(np.float32)
        out = saved.serve(tf.constant(image))
        probs = out["probabilities"].numpy()
        self.assertEqual(probs.shape, (1, 37, 53, k))
        self.assertAllClose(probs.sum(-1), np.ones((1, 37, 53)), atol=1e-5)
        want = (probs.argmax(-1) if k > 2 else
                (probs[..., 1] > predictor.threshold).astype(np.int32))
        self.assertAllEqual(out["labels"].numpy(), want)
        self.assertEqual("mask" in out, k == 2)
        result = evaluate.evaluate(predictor, data, "test")
        for kind in ("pooled", "per_image_mean"):
            self.assertEqual(sorted(result[kind]["per_class"]), sorted(data.classes))
        self.assertEqual(result["data"]["classes"], list(data.classes))
        self.assertEqual(result["num_images"], 3)

    def test_ignore_pixels_change_neither_training_nor_scores(self):
        # Ignored pixels (field of view 0) get random labels: the same losses
        # and the same validation scores as with background there.
        data = self._prepared(3)
        planned = plan_lib.make(data.fingerprint(), data.classes, data.channels)
        exp = tiny(plan_lib.apply(planned, config.preset("folder")), steps=3)
        batch = next(iter(data.dataset("validation", batch_size=1, training=False,
                                       preprocessing=exp.preprocessing)))
        from r2u.training import losses
        logits = tf.random.stateless_normal(batch["mask"].shape + (3,), [1, 2])
        fov = tf.cast(tf.random.stateless_uniform(batch["mask"].shape, [3, 4]) > 0.3,
                      tf.float32)
        noisy = tf.where(fov > 0, batch["mask"], tf.random.stateless_uniform(
            batch["mask"].shape, [5, 6], 0, 3, tf.int32))
        loss = losses.loss_fn("ce+dice")
        self.assertAllClose(loss(logits, batch["mask"], fov), loss(logits, noisy, fov))
        self.assertNotAllClose(loss(logits, batch["mask"]), loss(logits, noisy))

    def test_the_programs_from_a_folder_of_pngs_to_palette_predictions(self):
        shapes_folder(os.path.join(self.root, "raw"), 3)
        model_dir = os.path.join(self.root, "run")
        env = {**os.environ, "PYTHONPATH": REPO}

        def run(*args):
            done = subprocess.run([sys.executable, *args], capture_output=True,
                                  text=True, env=env, cwd=self.root, timeout=900)
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
            return done.stdout + done.stderr

        out = run(os.path.join(REPO, "bin", "train"), "--dataset=folder",
                  f"--data_dir={os.path.join(self.root, 'raw')}",
                  f"--model_dir={model_dir}", "--steps=4", "--steps_per_epoch=2",
                  "--filters=4", "--depth=2", "--batch_size=4", "--validation_count=2")
        self.assertIn("train.batch_size = 4  (overridden", out)
        # The progress line and the epoch line name each class's Dice.
        self.assertRegex(out, r"step \d+/4 .* loss \S+ dice \S+ \(class1 \S+, class2")
        self.assertRegex(out, r"validation mean_dice \S+ \(class1 \S+, class2 \S+\)")
        with open(os.path.join(model_dir, "plan.json")) as f:
            written = json.load(f)
        self.assertEqual(written["overridden"]["train.batch_size"], 4)
        self.assertEqual(written["plan"]["model.num_classes"]["value"], 3)
        report = os.path.join(self.root, "test.json")
        run(os.path.join(REPO, "bin", "evaluate"), f"--model_dir={model_dir}",
            f"--out={report}")
        with open(report) as f:
            result = json.load(f)
        self.assertIn("class2", result["pooled"]["per_class"])
        self.assertIsNone(result["inference"]["threshold"])
        predictions = os.path.join(self.root, "predictions")
        run(os.path.join(REPO, "bin", "predict"), f"--model_dir={model_dir}",
            f"--input={os.path.join(self.root, 'raw', 'test', 'images')}",
            f"--out_dir={predictions}")
        labels = Image.open(os.path.join(predictions, "test000_labels.png"))
        self.assertEqual(labels.mode, "P")  # indices, shown in fixed colours
        self.assertEqual(labels.size, (48, 48))
        self.assertLessEqual(int(np.asarray(labels).max()), 2)
        self.assertTrue(os.path.isfile(os.path.join(predictions,
                                                    "test000_overlay.png")))


if __name__ == "__main__":
    tf.test.main()


class NnunetPredictTest(tf.test.TestCase):

    def test_an_nnunet_folder_of_two_channels_trains_and_predicts_by_case(self):
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        raw = os.path.join(root, "raw")
        rng = np.random.default_rng(0)
        os.makedirs(raw)
        with open(os.path.join(raw, "dataset.json"), "w") as f:
            json.dump({"channel_names": {"0": "T2", "1": "ADC"}, "numTraining": 4,
                       "labels": {"background": 0, "lesion": 1, "organ": 2},
                       "file_ending": ".png"}, f)
        for n in range(6):
            images, labels = ("imagesTr", "labelsTr") if n < 4 else ("imagesTs", None)
            size = (32, 48) if n < 5 else (40, 24)  # the last: a size never trained on
            for c in range(2):
                path = os.path.join(raw, images, f"case_{n}_{c:04d}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(rng.integers(0, 255, size, np.uint8)).save(path)
            if labels:
                label = np.zeros(size, np.uint8)
                label[2:10, 2:10], label[12:20, 20:30] = 1, 2
                path = os.path.join(raw, labels, f"case_{n}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(label).save(path)
        prepare.prepare("folder", raw, os.path.join(root, "data"), validation_count=1)
        data = prepared.load(os.path.join(root, "data"))
        self.assertEqual((data.channels, data.num_classes), (2, 3))
        planned = plan_lib.make(data.fingerprint(), data.classes, data.channels)
        exp = tiny(plan_lib.apply(planned, config.preset("folder")), steps=2)
        loop.train(exp, os.path.join(root, "run"), data)
        predictor = loading.load(os.path.join(root, "run"))
        from r2u.inference import predict
        inputs = predict.dataset_inputs(raw)
        self.assertEqual([c["id"] for c in inputs], ["case_4", "case_5"])
        out = os.path.join(root, "predictions")
        failures = predict.predict_all(predictor, inputs, out,
                                       predict.Options(threshold=0.5))
        self.assertEqual(failures, [])
        labels = np.asarray(Image.open(os.path.join(out, "case_5_labels.png")))
        self.assertEqual(labels.shape, (40, 24))
        self.assertEqual(predict.dataset_inputs(os.path.join(raw, "imagesTs"))[1]["id"],
                         "case_5")


class DriveAsFolderTest(tf.test.TestCase):
    """DRIVE written as an nnU-Net folder (field of view as the ignore label) trains
    as the dedicated reader does: the same examples, the same scores."""

    def test_the_folder_matches_the_dedicated_reader(self):
        raw = os.path.join(prepare.data_root(), "DRIVE")
        if not os.path.isdir(raw):
            self.skipTest(f"DRIVE data not found at {raw}")
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            "folders", os.path.join(REPO, "benchmarks", "folders.py"))
        folders = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(folders)
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        folders.drive(os.path.join(root, "raw"))
        both = {}
        for name, dataset, source in (("drive", "drive", raw),
                                      ("folder", "folder", os.path.join(root, "raw"))):
            prepare.prepare(dataset, source, os.path.join(root, name))
            both[name] = prepared.load(os.path.join(root, name))
        drive, folder = both["drive"], both["folder"]
        for split in ("train", "validation", "test"):
            self.assertEqual([f"drive_{i}" for i in drive.split(split).ids],
                             list(folder.split(split).ids))
            for a, b in zip(drive.examples(split), folder.examples(split)):
                self.assertAllEqual(a["image"], b["image"])
                self.assertAllEqual(a["fov"], b["fov"])
                self.assertAllEqual(a["mask"] * a["fov"], b["mask"])
        exp = tiny(config.preset("drive"), steps=4)
        scores = {}
        for name, data in both.items():
            loop.train(exp, os.path.join(root, f"run-{name}"), data)
            predictor = loading.load(os.path.join(root, f"run-{name}"))
            result = evaluate.evaluate(predictor, data, "test",
                                       evaluate.Options(max_images=2))
            scores[name] = result["pooled"]["f1"]
        self.assertAllClose(scores["drive"], scores["folder"], atol=0.005)
