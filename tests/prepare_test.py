"""Tests for r2u.data.prepare and bin/prepare."""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

from r2u.data import imageio
from r2u.data import manifest as manifest_lib
from r2u.data import prepare
from r2u.data import retina
from r2u.data import tfrecord

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_SYNTHETIC = os.path.exists(os.path.join(REPO, "r2u", "data", "synthetic.py"))


def _tmpdir(test):
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _make_chase(root):
    """28 tiny CHASE_DB1-style pairs: a bright disc with a one-row vessel.

    The last image is one pixel wider than the others.
    """
    for n in range(1, 15):
        for eye in "LR":
            width = 13 if (n, eye) == (14, "R") else 12
            yy, xx = np.mgrid[:12, :width]
            disc = (yy - 5.5) ** 2 + (xx - 5.5) ** 2 < 25
            name = os.path.join(root, f"Image_{n:02d}{eye}")
            image = np.zeros((12, width, 3), np.uint8)
            image[disc] = (180, 90, 40)
            vessels = np.zeros((12, width), bool)
            vessels[6, 3:9] = True
            Image.fromarray(image).save(name + ".jpg", quality=95)
            Image.fromarray(vessels).convert("1").save(name + "_1stHO.png")
            Image.fromarray(vessels).convert("1").save(name + "_2ndHO.png")


def _parse_all(out_dir, split, with_mask2=False):
    paths = tfrecord.shard_paths(out_dir, split)
    ds = tf.data.TFRecordDataset(paths).map(
        lambda s: tfrecord.parse(s, with_mask2=with_mask2))
    return {p["id"].numpy().decode(): p for p in ds}


def _snapshot(out_dir):
    """File name -> (inode, mtime_ns, bytes) for everything in `out_dir`."""
    result = {}
    for name in os.listdir(out_dir):
        stat = os.stat(os.path.join(out_dir, name))
        with open(os.path.join(out_dir, name), "rb") as f:
            result[name] = (stat.st_ino, stat.st_mtime_ns, f.read())
    return result


class SyntheticPrepareTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        if not HAS_SYNTHETIC:
            self.skipTest("r2u/data/synthetic.py does not exist yet")

    def test_manifest_and_class_weights(self):
        out = _tmpdir(self)
        calls = []
        result = prepare.prepare("synthetic", None, out, image_size=32, limit=6,
                                 progress=lambda *a: calls.append(a))
        self.assertEqual(result, manifest_lib.load(out))
        self.assertEqual(result["dataset"], "synthetic")
        self.assertEqual({s: v["num_examples"] for s, v in result["splits"].items()},
                         {"train": 6, "validation": 6, "test": 6})
        self.assertEqual(result["image_shape"], [32, 32, 3])
        self.assertEqual(result["channels"], 3)
        self.assertEqual(result["format_version"], 1)
        self.assertEqual(result["source_files"], [])
        self.assertIn(("train", 6, 6), calls)
        train = _parse_all(out, "train")
        self.assertLen(train, 6)
        inside = np.concatenate([p["mask"].numpy()[p["fov"].numpy() > 0]
                                 for p in train.values()])
        counts = np.array([np.sum(inside == 0), np.sum(inside == 1)])
        self.assertAllClose(result["class_weights"], inside.size / (2.0 * counts))
        self.assertEqual(result["class_counts"], counts.tolist())
        self.assertEqual((result["classes"], result["num_classes"]),
                         (["background", "lesion"], 2))
        self.assertEqual((result["label_values"], result["ignore_value"]), ([0, 1], None))

    def test_idempotent_then_rewrites_on_new_options(self):
        out = _tmpdir(self)
        first = prepare.prepare("synthetic_vessels", None, out, limit=3)
        self.assertEqual(first["classes"], ["background", "vessel"])
        before = _snapshot(out)
        self.assertEqual(prepare.prepare("synthetic_vessels", None, out, limit=3),
                         first)
        self.assertEqual(_snapshot(out), before)  # Nothing rewritten.
        second = prepare.prepare("synthetic_vessels", None, out, limit=3,
                                 num_shards=2)
        self.assertNotEqual(second["fingerprint"], first["fingerprint"])
        self.assertEqual(sorted(os.listdir(out)), sorted(
            ["manifest.json", "fingerprint.json"] + [f"{s}-0000{i}-of-00002.tfrecord"
                                 for s in ("train", "validation", "test")
                                 for i in range(2)]))  # Stale shards removed.
        forced = prepare.prepare("synthetic_vessels", None, out, limit=3,
                                 num_shards=2, force=True)
        self.assertEqual(forced["splits"], second["splits"])  # Deterministic.


class RetinaPrepareTest(tf.test.TestCase):

    def test_bad_input_keeps_previous_preparation(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        _make_chase(raw)
        result = prepare.prepare("chase", raw, out)
        self.assertEqual(result["mask2_splits"], ["test"])
        # Train and validation sizes (test sizes, which may vary, are not counted).
        self.assertEqual(result["image_shape"], [12, 12, 3])  # test has a 12x13
        self.assertEqual(result["channels"], 3)
        self.assertLen(result["source_files"], 28 * 2 + 8)  # Test 2ndHO only.
        before = _snapshot(out)
        noise = np.random.default_rng(0).integers(0, 256, (12, 12), np.uint8)
        Image.fromarray(noise).save(os.path.join(raw, "Image_12R_2ndHO.png"))
        with self.assertRaisesRegex(
                imageio.DataError, "Image_12R_2ndHO.png: mask is not binary"):
            prepare.prepare("chase", raw, out)
        self.assertEqual(_snapshot(out), before)  # No staging folder left either.

    def test_same_size_edit_of_a_source_is_re_prepared(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        _make_chase(raw)
        mask_path = os.path.join(raw, "Image_01L_1stHO.png")
        vessels = np.zeros((12, 12), bool)
        vessels[6, 3:9] = True
        # Stored (uncompressed) PNG: its size depends on the shape only.
        Image.fromarray(vessels).convert("1").save(mask_path, compress_level=0)
        first = prepare.prepare("chase", raw, out)
        self.assertAllEqual(
            _parse_all(out, "train")["Image_01L"]["mask"].numpy()[..., 0],
            vessels)
        before = _snapshot(out)
        self.assertEqual(prepare.prepare("chase", raw, out), first)
        self.assertEqual(_snapshot(out), before)  # Unchanged: nothing rewritten.

        stat = os.stat(mask_path)
        moved = np.zeros((12, 12), bool)
        moved[7, 3:9] = True  # Vessel one row down, same file size.
        Image.fromarray(moved).convert("1").save(mask_path, compress_level=0)
        os.utime(mask_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        self.assertEqual(os.path.getsize(mask_path), stat.st_size)
        second = prepare.prepare("chase", raw, out)
        self.assertNotEqual(second["fingerprint"], first["fingerprint"])
        self.assertEqual(second["source_files"], first["source_files"])
        after = _snapshot(out)
        self.assertNotEqual(after["manifest.json"], before["manifest.json"])
        train_shards = [n for n in before if n.startswith("train-")]
        self.assertNotEmpty(train_shards)
        for name in train_shards:  # Every shard replaced (new file).
            self.assertNotEqual(after[name][:2], before[name][:2])
        self.assertAllEqual(
            _parse_all(out, "train")["Image_01L"]["mask"].numpy()[..., 0], moved)

    def test_bad_arguments(self):
        out = _tmpdir(self)
        with self.assertRaisesRegex(ValueError, "unknown dataset 'mnist'"):
            prepare.prepare("mnist", None, out)
        with self.assertRaisesRegex(
                imageio.DataError, "nope: drive data folder not found"):
            prepare.prepare("drive", os.path.join(out, "nope"), out)
        with self.assertRaisesRegex(ValueError, "limit must be >= 1"):
            prepare.prepare("drive", out, out, limit=0)
        with self.assertRaisesRegex(
                imageio.DataError, "expected folder 'training/images'"):
            prepare.prepare("drive", out, out)
        self.assertEqual(os.listdir(out), [])

    def test_real_drive_round_trip(self):
        raw = os.path.join(prepare.data_root(), "DRIVE")
        if not os.path.isdir(raw):
            self.skipTest(f"real DRIVE data not found at {raw}")
        out = _tmpdir(self)
        result = prepare.prepare("drive", raw, out, num_shards=2)
        self.assertEqual({s: v["num_examples"] for s, v in result["splits"].items()},
                         {"train": 16, "validation": 4, "test": 20})
        self.assertEqual(result["image_shape"], [584, 565, 3])
        self.assertEqual(result["mask2_splits"], ["test"])
        self.assertLen(result["source_files"], 140)
        w0, w1 = result["class_weights"]
        self.assertBetween(w1 / w0, 5.0, 9.0)  # ~12% vessel pixels in the FOV.
        entries = retina.drive_splits(raw)
        for split in ("train", "validation", "test"):
            parsed = _parse_all(out, split, with_mask2=split == "test")
            self.assertEqual(sorted(parsed), sorted(e["id"] for e in entries[split]))
            for entry in entries[split][:3] + entries[split][-1:]:
                example = retina.read_example(entry)
                got = parsed[entry["id"]]
                self.assertAllEqual(got["image"], example["image"])
                for key in ("mask", "fov") + (("mask2",) if split == "test" else ()):
                    self.assertAllEqual(got[key][:, :, 0], example[key])


class BinPrepareTest(tf.test.TestCase):

    def _run(self, *flags):
        # Run from elsewhere: the script must find the package by itself.
        return subprocess.run([sys.executable, os.path.join(REPO, "bin", "prepare"),
                               *flags], cwd=_tmpdir(self), capture_output=True,
                              text=True, timeout=300)

    def test_bad_input_is_one_error_line(self):
        missing = os.path.join(_tmpdir(self), "nowhere")
        proc = self._run("--dataset=isic", f"--data_dir={missing}",
                         f"--out_dir={_tmpdir(self)}")
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(proc.stderr.strip().splitlines()[-1],
                         f"prepare: error: {missing}: isic data folder not found")

    def test_prepares_and_reports(self):
        if not HAS_SYNTHETIC:
            self.skipTest("r2u/data/synthetic.py does not exist yet")
        out = _tmpdir(self)
        proc = self._run("--dataset=synthetic_vessels", "--limit=2",
                         "--image_size=32", f"--out_dir={out}")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("train 2, validation 2, test 2", proc.stdout)
        self.assertIn("train: 2/2 examples", proc.stderr)
        self.assertEqual(manifest_lib.load(out)["image_shape"], [32, 32, 3])


if __name__ == "__main__":
    tf.test.main()


class DisjointSplitsTest(tf.test.TestCase):
    """No image is in two splits, for every dataset; a shared id is refused."""

    def _ids(self, out):
        manifest = manifest_lib.load(out)
        return {split: set(_parse_all(out, split)) for split in manifest["splits"]}

    def _assert_disjoint(self, ids):
        splits = sorted(ids)
        self.assertIn("validation", splits)
        for i, a in enumerate(splits):
            self.assertNotEmpty(ids[a])
            for b in splits[i + 1:]:
                self.assertEmpty(ids[a] & ids[b], f"{a} and {b} share images")

    def test_every_dataset_prepares_disjoint_splits(self):
        from tests import isic_test, retina_test
        makers = {"drive": retina_test.make_drive, "stare": retina_test.make_stare,
                  "chase": retina_test.make_chase, "isic": isic_test.make_isic}
        for dataset, make in makers.items():
            with self.subTest(dataset):
                raw, out = _tmpdir(self), _tmpdir(self)
                make(raw)
                self._assert_disjoint(self._ids(prepare.prepare(
                    dataset, raw, out, image_size=8 if dataset == "isic" else None)
                    and out))
        raw, out = _tmpdir(self), _tmpdir(self)
        retina_test.make_drive(os.path.join(raw, "DRIVE"))
        retina_test.make_chase(os.path.join(raw, "CHASE_DB1"))
        prepare.prepare("retina", raw, out)
        self._assert_disjoint(self._ids(out))
        for dataset in ("synthetic", "synthetic_vessels"):
            out = _tmpdir(self)
            prepare.prepare(dataset, None, out, limit=3)
            self._assert_disjoint(self._ids(out))

    def test_isic_validation_is_held_out_of_training_and_test_keeps_its_size(self):
        from tests import isic_test
        raw, out = _tmpdir(self), _tmpdir(self)
        isic_test.make_isic(raw, count=10)
        result = prepare.prepare("isic", raw, out, image_size=8)
        ids = self._ids(out)
        self.assertEqual(ids["validation"], {"ISIC_0000004"})  # 10% of 10, mid-list
        self.assertLen(ids["train"], 9)
        self.assertEqual(ids["test"], {f"ISIC_{100 + i:07d}" for i in range(10)})
        self.assertEqual(result["image_shape"], [8, 8, 3])
        test = _parse_all(out, "test")
        self.assertEqual(test["ISIC_0000103"]["image"].shape, (18, 16, 3))  # original

    def test_an_id_in_two_splits_is_refused_in_one_line(self):
        from tests import isic_test
        raw, out = _tmpdir(self), _tmpdir(self)
        isic_test.make_isic(raw)
        truth = os.path.join(raw, "ISIC-2017_Validation_Part1_GroundTruth")
        os.rename(os.path.join(raw, "ISIC-2017_Validation_Data", "ISIC_0000100.jpg"),
                  os.path.join(raw, "ISIC-2017_Validation_Data", "ISIC_0000000.jpg"))
        os.rename(os.path.join(truth, "ISIC_0000100_segmentation.png"),
                  os.path.join(truth, "ISIC_0000000_segmentation.png"))
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO, "bin", "prepare"), "--dataset=isic",
             f"--data_dir={raw}", f"--out_dir={out}", "--image_size=8"],
            capture_output=True, text=True, check=False)
        self.assertEqual(proc.returncode, 1)
        self.assertRegex(proc.stderr.strip().splitlines()[-1],
                         r"^prepare: error: .*: id 'ISIC_0000000' is in both the "
                         r"train and the test split$")
        self.assertEqual(os.listdir(out), [])
