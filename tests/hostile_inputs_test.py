"""Hostile inputs to bin/prepare, bin/evaluate and bin/predict (issue #8).

Every hostile input must be handled correctly or stop the tool with ONE error line that
names the file and the problem, a non-zero exit status, and nothing written earlier
damaged. Fake datasets are generated here; no real dataset file is read.
"""

import fcntl
import gzip
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

from r2u.inference import loading
from r2u.evaluation import evaluate
from r2u.nn import models
from r2u.data import imageio
from r2u.data import manifest as manifest_lib
from r2u.data import prepare
from r2u.data import retina
from r2u.data import tfrecord
from tests import isic_test
from tests import predict_test
from tests import retina_test

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_DATA = "ISIC-2017_Training_Data"
TRAIN_TRUTH = "ISIC-2017_Training_Part1_GroundTruth"
# chattr +i through ioctl(2), from <linux/fs.h>.
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


def _tmpdir(test):
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def run_cli(test, tool, *flags):
    """Runs bin/<tool> from an unrelated folder, as a user would."""
    return subprocess.run([sys.executable, os.path.join(REPO, "bin", tool), *flags],
                          cwd=_tmpdir(test), capture_output=True, text=True,
                          timeout=600)


def assert_one_error_line(test, proc, status, *needles):
    """Exit `status`, no traceback, and one "<tool>: error:" line holding `needles`.

    Per-file lines of bin/predict start with "error:"; TensorFlow's own log lines
    (e.g. "E0000 ... CUDA error: ...") are not the tool's and are ignored.
    """
    test.assertEqual(proc.returncode, status, proc.stderr[-3000:])
    test.assertNotIn("Traceback", proc.stderr)
    errors = [line for line in proc.stderr.splitlines()
              if re.match(r"(\w+: )?error: ", line)]
    test.assertLen(errors, 1, proc.stderr[-3000:])
    for needle in needles:
        test.assertIn(needle, errors[0])


def snapshot(root):
    """Relative path -> bytes of every file (None for folders) under `root`."""
    result = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            result[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                result[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return result


def _set_immutable(folder, on):
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        packed = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0))
        flags = struct.unpack("i", packed)[0]
        flags = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags))
    finally:
        os.close(fd)


def block_writes(test, folder, earlier_file):
    """Makes new files under `folder` (which holds earlier outputs) impossible.

    Returns the output path to give the tool instead of `folder`. chmod does not stop
    root, so root makes the folder immutable (chattr +i), which does; where that is not
    allowed either, the output goes below `earlier_file`, a regular file, so creating it
    fails with NotADirectoryError. In every case a probe write must really fail.
    """
    target = folder
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        test.addCleanup(os.chmod, folder, 0o755)
    else:
        try:
            _set_immutable(folder, True)
            test.addCleanup(_set_immutable, folder, False)
        except OSError:  # no CAP_LINUX_IMMUTABLE, or a file system without the flag
            target = os.path.join(earlier_file, "out")
    with test.assertRaises(OSError):
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, "probe"), "xb"):
            pass
    return target


def make_isic_pair(root, image_id, image, mask, tag="Training"):
    """Writes one ISIC pair: `image` as JPEG, `mask` as (lossless) PNG."""
    data = os.path.join(root, f"ISIC-2017_{tag}_Data")
    truth = os.path.join(root, f"ISIC-2017_{tag}_Part1_GroundTruth")
    os.makedirs(data, exist_ok=True)
    os.makedirs(truth, exist_ok=True)
    Image.fromarray(image).save(os.path.join(data, f"{image_id}.jpg"), quality=95)
    Image.fromarray(mask).save(os.path.join(truth, f"{image_id}_segmentation.png"))


def disc_mask(size):
    yy, xx = np.mgrid[:size, :size]
    return ((yy - 0.45 * size) ** 2 + (xx - 0.55 * size) ** 2 < (0.3 * size) ** 2
            ).astype(np.uint8) * 255


def jpeg_round_trip(pixels, quality):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def parsed(out_dir, split):
    paths = tfrecord.shard_paths(out_dir, split)
    return {p["id"].decode(): p for p in tf.data.TFRecordDataset(paths).map(
        tfrecord.parse).as_numpy_iterator()}


def tiny_model_dir(parent):
    """An untrained tiny RGB U-Net as a training folder: config.json + best/ checkpoint
    (as predict_test.gray_model_dir; error paths need no training)."""
    exp = predict_test.tiny_experiment()
    folder = os.path.join(parent, "model")
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(exp.to_json())
    ckpt = tf.train.Checkpoint(model=models.build(exp.model),
                               step=tf.Variable(1, dtype=tf.int64))
    tf.train.CheckpointManager(ckpt, os.path.join(folder, "best"), 1).save()
    return folder


class PrepareHostileInputsTest(tf.test.TestCase):

    def test_a_16_bit_rgb_png_image_is_read_as_its_high_byte(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        isic_test.make_isic(raw)
        os.remove(os.path.join(raw, TRAIN_DATA, "ISIC_0000000.jpg"))
        deep = np.random.default_rng(0).integers(0, 65536, (12, 16, 3), dtype=np.uint16)
        with open(os.path.join(raw, TRAIN_DATA, "ISIC_0000000.png"), "wb") as f:
            f.write(tf.io.encode_png(deep).numpy())
        prepare.prepare("isic", raw, out, image_size=(12, 16))
        image = parsed(out, "train")["ISIC_0000000"]["image"]
        self.assertEqual(image.dtype, np.uint8)
        self.assertAllEqual(image, deep >> 8)  # 0..65535 scaled to 0..255

    def test_a_16_bit_gray_image_and_mask_are_read_as_their_high_byte(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        isic_test.make_isic(raw)
        image = os.path.join(raw, TRAIN_DATA, "ISIC_0000001.png")
        os.remove(os.path.join(raw, TRAIN_DATA, "ISIC_0000001.jpg"))
        Image.fromarray(np.full((14, 16), 40000, np.uint16)).save(image)
        mask = os.path.join(raw, TRAIN_TRUTH, "ISIC_0000001_segmentation.png")
        deep_mask = np.zeros((14, 16), np.uint16)
        deep_mask[:, 8:] = 65535
        Image.fromarray(deep_mask).save(mask)
        prepare.prepare("isic", raw, out, image_size=(14, 16))
        example = parsed(out, "validation")["ISIC_0000001"]  # the held-out one of 3
        self.assertAllEqual(example["image"], np.full((14, 16, 3), 40000 >> 8))
        self.assertAllEqual(example["mask"][..., 0], deep_mask >> 15)

    def test_a_jpeg_compressed_mask_is_thresholded_at_128(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        truth = disc_mask(64)
        blurred = jpeg_round_trip(truth, quality=75)  # then saved losslessly as PNG
        # Not merely anti-aliased: far more than 1% of the values are not 0 or 255.
        self.assertGreater(np.mean((blurred != 0) & (blurred != 255)), 0.05)
        image = np.full((64, 64, 3), 120, np.uint8)
        for i, tag in enumerate(("Training", "Training", "Training", "Validation")):
            make_isic_pair(raw, f"ISIC_000000{i}", image, blurred, tag)
        prepare.prepare("isic", raw, out, image_size=64)
        mask = parsed(out, "train")["ISIC_0000000"]["mask"][..., 0]
        self.assertAllEqual(mask, truth // 255)

    def test_a_jpeg_compressed_mask_that_is_really_gray_is_rejected(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        yy, xx = np.mgrid[:64, :64]
        ramp = jpeg_round_trip(((xx + yy) * 2).astype(np.uint8), quality=75)
        for i, tag in enumerate(("Training", "Training", "Training", "Validation")):
            make_isic_pair(raw, f"ISIC_000000{i}", np.full((64, 64, 3), 9, np.uint8),
                           ramp, tag)
        mask = os.path.join(raw, TRAIN_TRUTH, "ISIC_0000000_segmentation.png")
        with self.assertRaisesRegex(imageio.DataError,
                                    f"^{re.escape(mask)}: mask is not binary: values"):
            prepare.prepare("isic", raw, out, image_size=8)
        self.assertEqual(os.listdir(out), [])

    def test_two_images_with_one_id_are_one_error_line_naming_both(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        isic_test.make_isic(raw)
        jpg = os.path.join(raw, TRAIN_DATA, "ISIC_0000001.jpg")
        png = os.path.join(raw, TRAIN_DATA, "ISIC_0000001.png")
        Image.open(jpg).save(png)
        proc = run_cli(self, "prepare", "--dataset=isic", f"--data_dir={raw}",
                       f"--out_dir={out}", "--image_size=8")
        assert_one_error_line(self, proc, 1, "prepare: error:", jpg, png,
                              "two images for id 'ISIC_0000001'")
        self.assertEqual(os.listdir(out), [])

    def test_a_stare_label_stored_twice_is_an_error_naming_both(self):
        raw = _tmpdir(self)
        retina_test.make_stare(raw)
        gz = os.path.join(raw, "labels-ah", "im0005.ah.ppm.gz")
        plain = gz[:-3]
        with gzip.open(gz, "rb") as f, open(plain, "wb") as g:
            g.write(f.read())
        with self.assertRaisesRegex(
                imageio.DataError,
                f"^{re.escape(plain)} and {re.escape(gz)}: two files for id 'im0005'"):
            retina.stare_splits(raw)


class TinyModelTestCase(tf.test.TestCase):
    """An untrained tiny model folder and 3 prepared synthetic examples, once per class."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        cls.model_dir = tiny_model_dir(cls.root)
        cls.data_dir = os.path.join(cls.root, "data")
        prepare.prepare("synthetic", None, cls.data_dir, image_size=32, limit=3)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()


class MissingSplitTest(TinyModelTestCase):

    def test_prepare_without_the_isic_training_folder_fails_in_one_line(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        isic_test.make_isic(raw, splits=("Validation",))
        proc = run_cli(self, "prepare", "--dataset=isic", f"--data_dir={raw}",
                       f"--out_dir={out}")
        # Validation is held out of Training, so without it nothing can be prepared.
        assert_one_error_line(self, proc, 1, f"prepare: error: {raw}:",
                              "expected folder 'ISIC-2017_Training_Data'")
        self.assertEqual(os.listdir(out), [])

    def test_prepare_without_the_drive_test_folder_fails_naming_it(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        retina_test.make_drive(raw)
        shutil.rmtree(os.path.join(raw, "test"))
        with self.assertRaisesRegex(
                imageio.DataError,
                f"^{re.escape(raw)}: wrong directory layout, expected folder "
                "'test/images'"):
            prepare.prepare("drive", raw, out)
        self.assertEqual(os.listdir(out), [])

    def test_evaluate_on_a_split_the_prepared_data_lacks_fails_in_one_line(self):
        raw, data = _tmpdir(self), _tmpdir(self)
        isic_test.make_isic(raw, splits=("Training",))
        # No official Validation or Test_v2 folders: prepared without "test".
        manifest = prepare.prepare("isic", raw, data, image_size=8)
        self.assertEqual(set(manifest["splits"]), {"train", "validation"})
        out = os.path.join(_tmpdir(self), "eval.json")
        proc = run_cli(self, "evaluate", f"--model_dir={self.model_dir}",
                       f"--data_dir={data}", "--split=test", f"--out={out}")
        assert_one_error_line(self, proc, 1, "evaluate: error:",
                              manifest_lib.path(data), "no split 'test'")
        self.assertFalse(os.path.exists(out))

    def test_predict_with_a_missing_input_folder_fails_in_one_line(self):
        top = _tmpdir(self)
        missing, out_dir = os.path.join(top, "photos"), os.path.join(top, "out")
        proc = run_cli(self, "predict", f"--model_dir={self.model_dir}",
                       f"--input={missing}", f"--out_dir={out_dir}")
        assert_one_error_line(self, proc, 2, f"predict: error: {missing}:",
                              "no such file or folder")
        self.assertEqual(os.listdir(top), [])


class UnwritableOutputTest(TinyModelTestCase):

    def test_prepare_into_a_read_only_folder_fails_and_keeps_the_old_preparation(self):
        out = os.path.join(_tmpdir(self), "prepared")
        prepare.prepare("synthetic", None, out, image_size=32, limit=2)
        before = snapshot(out)
        target = block_writes(self, out, manifest_lib.path(out))
        proc = run_cli(self, "prepare", "--dataset=synthetic", "--image_size=32",
                       "--limit=3", f"--out_dir={target}")
        assert_one_error_line(self, proc, 1, f"prepare: error: {target}:",
                              "not writable")
        self.assertEqual(snapshot(out), before)

    def test_evaluate_into_a_read_only_folder_fails_and_keeps_the_old_result(self):
        folder = os.path.join(_tmpdir(self), "results")
        os.makedirs(folder)
        old = os.path.join(folder, "eval.json")
        with open(old, "w") as f:
            f.write('{"num_images": 20}\n')
        before = snapshot(folder)
        target = block_writes(self, folder, old)
        out = os.path.join(target, "eval.json")
        proc = run_cli(self, "evaluate", f"--model_dir={self.model_dir}",
                       f"--data_dir={self.data_dir}", "--split=test", f"--out={out}")
        assert_one_error_line(self, proc, 1, f"evaluate: error: {target}:",
                              "not writable")
        self.assertEqual(snapshot(folder), before)

    def test_predict_into_a_read_only_folder_fails_and_keeps_old_predictions(self):
        top = _tmpdir(self)
        image = os.path.join(top, "x.png")
        with open(image, "wb") as f:
            f.write(predict_test.png(predict_test.pixels(8, 8, 3)))
        folder = os.path.join(top, "out")
        os.makedirs(folder)
        for suffix in ("_prob.png", "_mask.png", "_overlay.png"):
            with open(os.path.join(folder, "x" + suffix), "wb") as f:
                f.write(b"earlier prediction " + suffix.encode())
        before = snapshot(folder)
        target = block_writes(self, folder, os.path.join(folder, "x_prob.png"))
        proc = run_cli(self, "predict", f"--model_dir={self.model_dir}",
                       f"--input={image}", f"--out_dir={target}")
        assert_one_error_line(self, proc, 2, f"predict: error: {target}:",
                              "not writable")
        self.assertEqual(snapshot(folder), before)


class EvaluateHostileFilesTest(TinyModelTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.predictor = loading.load(cls.model_dir)

    def _copy_data(self):
        data = os.path.join(_tmpdir(self), "data")
        shutil.copytree(self.data_dir, data)
        return data, tfrecord.shard_paths(data, "test")[0]

    def test_a_truncated_shard_is_one_error_line_naming_it(self):
        data, shard = self._copy_data()
        with open(shard, "r+b") as f:
            f.truncate(os.path.getsize(shard) // 2)
        out = os.path.join(_tmpdir(self), "eval.json")
        proc = run_cli(self, "evaluate", f"--model_dir={self.model_dir}",
                       f"--data_dir={data}", "--split=test", f"--out={out}")
        assert_one_error_line(self, proc, 1, f"evaluate: error: {shard}:", "truncated")
        self.assertFalse(os.path.exists(out))

    def test_a_shard_cut_at_a_record_boundary_is_not_silently_shorter(self):
        data, shard = self._copy_data()
        with open(shard, "rb") as f:
            length = struct.unpack("<Q", f.read(8))[0]
        with open(shard, "r+b") as f:
            f.truncate(8 + 4 + length + 4)  # exactly the first record
        self.assertLen(list(tf.data.TFRecordDataset(shard)), 1)  # TF reads it happily
        with self.assertRaisesRegex(imageio.DataError,
                                    f"^{re.escape(shard)}: shard has"):
            evaluate.evaluate(self.predictor, data, "test")

    def test_a_corrupt_shard_of_the_right_size_is_an_error_naming_it(self):
        data, shard = self._copy_data()
        with open(shard, "r+b") as f:
            f.seek(os.path.getsize(shard) // 2)
            f.write(b"\xff" * 64)
        with self.assertRaisesRegex(imageio.DataError,
                                    f"^{re.escape(shard)}: corrupt shard"):
            evaluate.evaluate(self.predictor, data, "test")

    def test_a_model_dir_without_checkpoint_or_saved_model_is_one_error_line(self):
        # As a training run killed before its first save: config.json, empty folders,
        # and a checkpoint index naming files that were never written.
        model_dir = os.path.join(_tmpdir(self), "model")
        os.makedirs(os.path.join(model_dir, "ckpt"))
        os.makedirs(os.path.join(model_dir, "best"))
        shutil.copy(os.path.join(self.model_dir, "config.json"), model_dir)
        with open(os.path.join(model_dir, "ckpt", "checkpoint"), "w") as f:
            f.write('model_checkpoint_path: "ckpt-1"\n')
        out = os.path.join(model_dir, "eval.json")
        proc = run_cli(self, "evaluate", f"--model_dir={model_dir}",
                       f"--data_dir={self.data_dir}", f"--out={out}")
        assert_one_error_line(self, proc, 1, f"evaluate: error: {model_dir}:",
                              "no model found")
        self.assertFalse(os.path.exists(out))

    def test_a_config_json_that_is_not_json_is_one_error_line(self):
        model_dir = os.path.join(_tmpdir(self), "model")
        shutil.copytree(self.model_dir, model_dir)
        config = os.path.join(model_dir, "config.json")
        with open(config, "r+") as f:
            f.truncate(40)  # as a write cut short
        before = snapshot(model_dir)
        out = os.path.join(_tmpdir(self), "eval.json")
        proc = run_cli(self, "evaluate", f"--model_dir={model_dir}",
                       f"--data_dir={self.data_dir}", f"--out={out}")
        assert_one_error_line(self, proc, 1, f"evaluate: error: {config}:",
                              "not a valid experiment config")
        self.assertFalse(os.path.exists(out))
        self.assertEqual(snapshot(model_dir), before)


if __name__ == "__main__":
    tf.test.main()
