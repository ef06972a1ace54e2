"""bin/predict and r2u.inference.predict: outputs, bad files, channels, odd names, no escapes."""

import dataclasses
import gzip
import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from r2u.inference import loading
from r2u import config
from r2u import files
from r2u.nn import models
from r2u.inference import predict
from r2u.training import loop
from r2u.data import imageio
from r2u.data import prepare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_experiment():
    exp = config.synthetic()  # RGB input
    return dataclasses.replace(
        exp, model=dataclasses.replace(exp.model, arch="unet", filters=4, depth=2),
        train=dataclasses.replace(exp.train, steps=2, steps_per_epoch=2, batch_size=4,
                                  log_every=1, xla="off"))


def gray_model_dir():
    """A 1-channel model as a training folder (config.json + best/), untrained."""
    exp = config.Experiment(model=config.ModelConfig(arch="unet", in_channels=1,
                                                     filters=4, depth=2, dropout=0.0))
    model_dir = tempfile.mkdtemp()
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        f.write(exp.to_json())
    ckpt = tf.train.Checkpoint(model=models.build(exp.model),
                               step=tf.Variable(1, dtype=tf.int64))
    tf.train.CheckpointManager(ckpt, os.path.join(model_dir, "best"), 1).save()
    return model_dir


def pixels(height, width, channels, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def png(array):
    return tf.io.encode_png(array).numpy()


def read_png(path):
    with open(path, "rb") as f:
        return tf.io.decode_png(f.read()).numpy()


class PredictCliTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        root = tempfile.mkdtemp()
        data_dir = os.path.join(root, "data")
        prepare.prepare("synthetic", None, data_dir, image_size=32, limit=8)
        cls.model_dir = os.path.join(root, "model")
        loop.train(tiny_experiment(), cls.model_dir, data_dir)
        cls.rgb = loading.load(cls.model_dir)
        cls.gray = loading.load(gray_model_dir())

    def test_cli_writes_three_pngs_and_skips_bad_files(self):
        top = tempfile.mkdtemp()
        inputs, out_dir = os.path.join(top, "in"), os.path.join(top, "out")
        os.makedirs(os.path.join(inputs, "sub"))
        good = {"plain.png": png(pixels(20, 24, 3)),
                "..evil.png": png(pixels(8, 8, 3)),
                "läsion ü 病变 1.png": png(pixels(9, 13, 1)),
                "sub/deep.jpg": tf.io.encode_jpeg(pixels(16, 16, 3)).numpy(),
                "one.pgm.gz": gzip.compress(b"P5 1 1 255\n\x80")}
        bad = {"empty.png": b"", "text.png": b"not a png at all\n",
               "cut.jpg": tf.io.encode_jpeg(pixels(64, 64, 3)).numpy()[:400]}
        for name, data in {**good, **bad}.items():
            write(os.path.join(inputs, name), data)
        write(os.path.join(inputs, "notes.txt"), b"ignored: not an image name")
        os.symlink("..", os.path.join(inputs, "sub", "loop"))  # a folder link loop
        run = subprocess.run(
            [sys.executable, os.path.join(REPO, "bin", "predict"),
             f"--model_dir={self.model_dir}", f"--input={inputs}",
             f"--out_dir={out_dir}"],
            capture_output=True, text=True, timeout=600, cwd=REPO)
        self.assertEqual(run.returncode, 1, run.stderr[-3000:])
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        self.assertLen(errors, 3)
        for line, name in zip(sorted(errors), sorted(bad)):  # "cut", "empty", "text"
            self.assertIn(os.path.join(inputs, name), line)
        self.assertIn("5 of 8 images written", run.stdout)
        stems = ["plain", "_evil", "läsion ü 病变 1", "sub__deep", "one"]
        want = {stem + suffix for stem in stems for suffix in predict.SUFFIXES}
        self.assertEqual(set(os.listdir(out_dir)), want)
        self.assertEqual(sorted(os.listdir(top)), ["in", "out"])  # nothing beside
        prob = read_png(os.path.join(out_dir, "läsion ü 病变 1_prob.png"))
        mask = read_png(os.path.join(out_dir, "läsion ü 病变 1_mask.png"))
        over = read_png(os.path.join(out_dir, "läsion ü 病变 1_overlay.png"))
        self.assertEqual((prob.shape, mask.shape, over.shape),
                         ((9, 13, 1), (9, 13, 1), (9, 13, 3)))
        self.assertContainsSubset(set(np.unique(mask)), {0, 255})
        self.assertEqual(read_png(os.path.join(out_dir, "one_prob.png")).shape,
                         (1, 1, 1))

    def test_cli_threshold_flag_sets_the_mask(self):
        top = tempfile.mkdtemp()
        path = os.path.join(top, "x.png")
        write(path, png(pixels(20, 24, 3, seed=4)))
        probs = {}
        for threshold, want in (("0.0", 255), ("1.0", 0)):
            out_dir = os.path.join(top, "out" + threshold)
            run = subprocess.run(
                [sys.executable, os.path.join(REPO, "bin", "predict"),
                 f"--model_dir={self.model_dir}", f"--input={path}",
                 f"--out_dir={out_dir}", f"--threshold={threshold}"],
                capture_output=True, text=True, timeout=600, cwd=REPO)
            self.assertEqual(run.returncode, 0, run.stderr[-3000:])
            mask = read_png(os.path.join(out_dir, "x_mask.png"))
            self.assertEqual(mask.shape, (20, 24, 1))
            # > 0.0: every pixel foreground; > 1.0: none.
            self.assertAllEqual(mask, np.full((20, 24, 1), want, np.uint8))
            probs[threshold] = read_png(os.path.join(out_dir, "x_prob.png"))
        self.assertAllEqual(probs["0.0"], probs["1.0"])  # Only the mask moves.

    def test_outputs_are_the_probabilities_threshold_and_overlay(self):
        out_dir = tempfile.mkdtemp()
        image = pixels(20, 28, 3, seed=3)
        path = os.path.join(tempfile.mkdtemp(), "x.png")
        write(path, png(image))
        probs = self.rgb.predict_image(image)[..., 1]
        threshold = float(np.median(probs))
        options = predict.Options(threshold=threshold)
        self.assertEqual(predict.predict_all(self.rgb, [path], out_dir, options), [])
        prob = read_png(os.path.join(out_dir, "x_prob.png"))[..., 0]
        self.assertAllClose(prob, np.round(probs * 255), atol=1)
        mask = read_png(os.path.join(out_dir, "x_mask.png"))[..., 0]
        self.assertAllEqual(mask, np.where(probs > threshold, 255, 0))
        self.assertGreater(np.mean(mask == 255), 0.3)
        over = read_png(os.path.join(out_dir, "x_overlay.png"))
        self.assertAllEqual(over[mask == 0], image[mask == 0])
        tinted = np.round(0.5 * image[mask == 255] + [0, 127.5, 0]).astype(np.uint8)
        self.assertAllClose(over[mask == 255], tinted, atol=1)

    def test_gray_and_rgba_inputs_for_an_rgb_model_and_rgb_for_a_gray_model(self):
        folder, out_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
        rgb = pixels(16, 20, 3, seed=1)
        gray = pixels(16, 20, 1, seed=2)
        rgba = np.concatenate([rgb, np.full((16, 20, 1), 7, np.uint8)], axis=-1)
        for name, array in (("rgb", rgb), ("gray", gray), ("rgba", rgba)):
            write(os.path.join(folder, f"{name}.png"), png(array))
        paths = predict.list_inputs(folder)
        for predictor, out in ((self.rgb, "rgb_model"), (self.gray, "gray_model")):
            target = os.path.join(out_dir, out)
            self.assertEqual(predict.predict_all(predictor, paths, target,
                                                 predict.Options()), [])
            probs = {n: read_png(os.path.join(target, f"{n}_prob.png"))
                     for n in ("rgb", "gray", "rgba")}
            self.assertAllEqual(probs["rgba"], probs["rgb"])  # alpha is dropped
        gray_as_rgb = self.rgb.predict_image(np.repeat(gray, 3, axis=-1))[..., 1]
        got = read_png(os.path.join(out_dir, "rgb_model", "gray_prob.png"))[..., 0]
        self.assertAllClose(got, np.round(gray_as_rgb * 255), atol=1)
        rgb_as_gray = self.gray.predict(
            tf.image.rgb_to_grayscale(rgb[None].astype(np.float32) / 255))[0]
        got = read_png(os.path.join(out_dir, "gray_model", "rgb_prob.png"))[..., 0]
        self.assertAllClose(got, np.round(rgb_as_gray[..., 1] * 255), atol=1)

    def test_large_images_are_predicted_in_tiles(self):
        image = pixels(40, 36, 3, seed=4)
        path = os.path.join(tempfile.mkdtemp(), "big.png")
        write(path, png(image))
        out_dir = tempfile.mkdtemp()
        options = predict.Options(max_pixels=1000, auto_tile=15)  # rounded up to 16
        self.assertEqual(predict.choose_tile(40, 36, options), 15)
        self.assertEqual(predict.choose_tile(30, 30, options), 0)
        self.assertEqual(predict.choose_tile(10, 50, predict.Options(max_side=40)), 512)
        self.assertEqual(predict.predict_all(self.rgb, [path], out_dir, options), [])
        tiled = self.rgb.predict_image(image, tile=16)[..., 1]
        whole = self.rgb.predict_image(image)[..., 1]
        got = read_png(os.path.join(out_dir, "big_prob.png"))[..., 0]
        self.assertAllClose(got, np.round(tiled * 255), atol=1)
        self.assertGreater(np.abs(np.round(whole * 255) - got).max(), 1)  # really tiled

    def test_never_writes_through_a_link_or_outside_out_dir(self):
        top = tempfile.mkdtemp()
        outside = os.path.join(top, "precious.png")
        write(outside, b"keep me")
        out_dir = os.path.join(top, "out")
        os.makedirs(out_dir)
        os.symlink(outside, os.path.join(out_dir, "x_prob.png"))
        source = os.path.join(top, "x.png")
        write(source, png(pixels(8, 8, 3)))
        self.assertEqual(predict.predict_all(self.rgb, [source], out_dir,
                                             predict.Options()), [])
        with open(outside, "rb") as f:
            self.assertEqual(f.read(), b"keep me")
        self.assertFalse(os.path.islink(os.path.join(out_dir, "x_prob.png")))
        self.assertEqual(sorted(os.listdir(top)), ["out", "precious.png", "x.png"])


class NamesTest(tf.test.TestCase):

    def test_safe_names_stay_in_the_folder_and_keep_letters(self):
        cases = {"../../etc/passwd": "____etc_passwd", "..evil": "_evil",
                 ".hidden": "hidden", "a b é 病": "a b é 病", "x\x00y\nz": "x_y_z",
                 "": "image", "..": "_",
                 "C:\\win\\x": "C__win_x", "trailing. ": "trailing", "a/b": "a_b"}
        for text, want in cases.items():
            got = files.safe_name(text)
            self.assertEqual(got, want, repr(text))
            self.assertNotIn(os.sep, got)
            self.assertNotIn(got, ("", ".", ".."))
        self.assertLessEqual(len(files.safe_name("é" * 500).encode("utf-8")), 180)
        self.assertEqual(files.safe_name("e\u0301"), "é")  # NFC

    def test_output_stems(self):
        self.assertEqual(predict.output_stem("/x/y/photo.JPG"), "photo")
        self.assertEqual(predict.output_stem("/x/im0001.ppm.gz"), "im0001")
        self.assertEqual(predict.output_stem("/in/a/b/c.tif", "/in"), "a__b__c")
        self.assertEqual(predict.output_stem("/in/notes.v2", "/in"), "notes.v2")

    def test_list_inputs_filters_names_skips_link_loops_and_the_output_folder(self):
        top = tempfile.mkdtemp()
        for name in ("a.png", "b.JPEG", "c.ppm.gz", "d.txt", "out/a_prob.png",
                     "sub/e.tif", "f.bmp"):
            os.makedirs(os.path.dirname(os.path.join(top, name)), exist_ok=True)
            write(os.path.join(top, name), b"")
        os.symlink(top, os.path.join(top, "sub", "loop"))
        os.symlink("self.png", os.path.join(top, "self.png"))  # a file link loop
        found = predict.list_inputs(top, exclude=os.path.join(top, "out"))
        self.assertEqual([os.path.relpath(p, top) for p in found],
                         ["a.png", "b.JPEG", "c.ppm.gz", "f.bmp", "self.png",
                          "sub/e.tif"])
        with self.assertRaisesRegex(imageio.DataError, "self.png: file not found"):
            imageio.read_image(os.path.join(top, "self.png"))
        self.assertEqual(predict.list_inputs(os.path.join(top, "a.png")),
                         [os.path.join(top, "a.png")])

    def test_a_pairs_folder_without_test_images_is_named(self):
        top = tempfile.mkdtemp()
        os.makedirs(os.path.join(top, "train", "images"))
        with self.assertRaisesRegex(imageio.DataError,
                                    f"^{top}/test/images: no such folder"):
            predict.dataset_inputs(top)


if __name__ == "__main__":
    tf.test.main()
