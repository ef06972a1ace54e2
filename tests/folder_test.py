"""Tests for r2u.data.folder (nnU-Net v2 raw, plain pairs) prepared with K classes."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from r2u import errors
from r2u.data import folder
from r2u.data import labels as labels_lib
from r2u.data import manifest as manifest_lib
from r2u.data import nnunet
from r2u.data import prepare
from r2u.data import prepared
from r2u.data import sources
from r2u.data import tfrecord

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tmpdir(test):
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _save(path, pixels, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def _values(rng, shape, values):
    """A label map drawing from `values`, each of them present."""
    out = rng.choice(np.asarray(values), shape)
    out.flat[:len(values)] = values
    return out


def _nnunet(root, k=3, cases=5, channels=1, ending=".png", sizes=None, ignore=None,
            test=0, seed=0):
    """An nnU-Net v2 raw dataset: case_000.. with `channels` gray files (one RGB
    file when channels == 3), labels 0..k-1 (+ `ignore`), `test` cases in
    imagesTs/labelsTs. Returns {id: (image [H, W, C] uint8, label values [H, W])}."""
    rng = np.random.default_rng(seed)
    labels = {"background": 0, **{f"organ{i}": i for i in range(1, k)}}
    if ignore is not None:
        labels["ignore"] = ignore
    meta = {"channel_names": {str(c): f"ch{c}" for c in range(channels)},
            "labels": labels, "numTraining": cases, "file_ending": ending}
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump(meta, f)
    truth = {}
    for n in range(cases + test):
        images, labels_dir = ("imagesTr", "labelsTr") if n < cases else (
            "imagesTs", "labelsTs")
        case = f"case_{n:03d}"
        h, w = sizes[n] if sizes else (12, 16)
        image = rng.integers(0, 256, (h, w, channels), np.uint8)
        values = _values(rng, (h, w), list(range(k)) + ([ignore] if ignore else []))
        if channels == 3:
            _save(os.path.join(root, images, f"{case}_0000{ending}"), image)
        else:
            for c in range(channels):
                _save(os.path.join(root, images, f"{case}_{c:04d}{ending}"),
                      image[..., c])
        _save(os.path.join(root, labels_dir, case + ending), values.astype(np.uint8))
        truth[case] = (image, values)
    return truth


def _pairs(root, values=(0, 255), cases=5, gray=False, sizes=None, seed=0,
           labels=None):
    """Plain pairs train/images/<id>.jpg|png + train/masks/<id>.png."""
    rng = np.random.default_rng(seed)
    truth = {}
    for n in range(cases):
        h, w = sizes[n] if sizes else (12, 16)
        image = rng.integers(0, 256, (h, w) if gray else (h, w, 3), np.uint8)
        mask = _values(rng, (h, w), list(values)).astype(np.uint8)
        # PNG images stay exact; the extension may differ from the mask's.
        _save(os.path.join(root, "train", "images", f"p{n}.png"), image)
        _save(os.path.join(root, "train", "masks", f"p{n}.png"), mask)
        truth[f"p{n}"] = (image if not gray else image[..., None], mask)
    if labels is not None:
        with open(os.path.join(root, "labels.json"), "w") as f:
            json.dump(labels, f)
    return truth


def _parse(out, split):
    ds = tf.data.TFRecordDataset(tfrecord.shard_paths(out, split)).map(tfrecord.parse)
    return {p["id"].numpy().decode(): {k: v.numpy() for k, v in p.items()} for p in ds}


def _snapshot(out):
    return {name: open(os.path.join(out, name), "rb").read()
            for name in sorted(os.listdir(out))}


def _counts(truth, ids, lookup, k):
    """Class pixel counts of `ids` outside ignored pixels (float64 reference)."""
    counts = np.zeros(k, np.float64)
    for i in ids:
        values = truth[i][1]
        for index, value in enumerate(lookup):
            counts[index] += np.sum(values == value)
    return counts


class NnunetTest(tf.test.TestCase):

    def test_multi_channel_cases_are_stacked_with_native_sizes(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        sizes = [(12, 16), (10, 14), (12, 16), (9, 11), (16, 12)]
        truth = _nnunet(raw, k=3, channels=2, sizes=sizes)
        result = prepare.prepare("folder", raw, out)
        self.assertEqual(result["classes"], ["background", "organ1", "organ2"])
        self.assertEqual((result["num_classes"], result["label_values"],
                          result["ignore_value"]), (3, [0, 1, 2], None))
        self.assertEqual((result["channels"], result["image_shape"]), (2, None))
        self.assertEqual({s: v["num_examples"] for s, v in result["splits"].items()},
                         {"train": 4, "validation": 1})
        for split in ("train", "validation"):
            for case, got in _parse(out, split).items():
                image, values = truth[case]
                self.assertAllEqual(got["image"], image)  # [H, W, 2], native size
                self.assertAllEqual(got["mask"][..., 0], values)
                self.assertAllEqual(got["fov"], np.ones_like(got["fov"]))
        counts = _counts(truth, result["splits"]["train"]["ids"], [0, 1, 2], 3)
        self.assertAllEqual(result["class_counts"], counts)
        self.assertAllClose(result["class_weights"], counts.sum() / (3 * counts))

    def test_rgb_natural_images_and_a_test_split(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        truth = _nnunet(raw, k=2, channels=3, cases=4, test=2)
        result = prepare.prepare("folder", raw, out)
        self.assertEqual(result["channels"], 3)
        test = _parse(out, "test")
        self.assertEqual(sorted(test), ["case_004", "case_005"])
        self.assertEqual(result["splits"]["test"]["ids"], ["case_004", "case_005"])
        for case, got in test.items():
            self.assertAllEqual(got["image"], truth[case][0])
            self.assertAllEqual(got["mask"][..., 0], truth[case][1])
        self.assertIn("imagesTs/labelsTs (2 cases)", result["preprocessing"])

    def test_test_images_without_labels_make_no_test_split(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        _nnunet(raw, k=2, cases=3, test=1)
        shutil.rmtree(os.path.join(raw, "labelsTs"))
        with self.assertLogs("absl", "INFO") as logs:
            result = prepare.prepare("folder", raw, out)
        self.assertNotIn("test", result["splits"])
        self.assertTrue(any("without labelsTs/, no test split" in line
                            for line in logs.output), logs.output)

    def test_16_bit_image_and_16_bit_label(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        _nnunet(raw, k=3, cases=2)
        rng = np.random.default_rng(5)
        image = rng.integers(100, 4000, (12, 16), np.uint16)  # 12-bit data
        values = _values(rng, (12, 16), [0, 1, 2]).astype(np.uint16)
        _save(os.path.join(raw, "imagesTr", "case_000_0000.png"), image)
        _save(os.path.join(raw, "labelsTr", "case_000.png"), values)
        self.assertEqual(Image.open(os.path.join(raw, "labelsTr", "case_000.png")).mode,
                         "I;16")
        prepare.prepare("folder", raw, out, validation_count=1)
        got = {**_parse(out, "train"), **_parse(out, "validation")}["case_000"]
        low, high = np.percentile(image.astype(np.float64), (0.1, 99.9))
        want = np.clip(np.round((image - low) * 255 / (high - low)), 0, 255)
        self.assertAllEqual(got["image"][..., 0], want)
        self.assertAllEqual(got["mask"][..., 0], values)

    def test_ignore_label_gets_fov_0_and_mask_0(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        truth = _nnunet(raw, k=3, ignore=3, ending=".tif")
        result = prepare.prepare("folder", raw, out)
        self.assertEqual(result["classes"], ["background", "organ1", "organ2"])
        self.assertEqual(result["ignore_value"], 3)
        for case, got in _parse(out, "train").items():
            values = truth[case][1]
            self.assertAllEqual(got["fov"][..., 0], values != 3)
            self.assertAllEqual(got["mask"][..., 0], np.where(values == 3, 0, values))
        counts = _counts(truth, result["splits"]["train"]["ids"], [0, 1, 2], 3)
        self.assertAllEqual(result["class_counts"], counts)  # ignored not counted


class PairsTest(tf.test.TestCase):

    def test_binary_0_255_masks_are_read_as_0_1(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        truth = _pairs(raw, values=(0, 255))
        images = os.path.join(raw, "train", "images")
        os.remove(os.path.join(images, "p0.png"))  # p0.jpg pairs with masks/p0.png
        _save(os.path.join(images, "p0.jpg"), truth["p0"][0])
        result = prepare.prepare("folder", raw, out)
        self.assertEqual(result["classes"], ["background", "class_1"])
        self.assertEqual(result["label_values"], [0, 255])
        for case, got in {**_parse(out, "train"), **_parse(out, "validation")}.items():
            self.assertAllEqual(got["mask"][..., 0], truth[case][1] // 255)

    def test_labels_json_names_the_classes_and_the_ignore_value(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        truth = _pairs(raw, values=(0, 1, 2, 255), labels={
            "background": 0, "nerve": 1, "vessel": 2, "ignore": 255})
        result = prepare.prepare("folder", raw, out)
        self.assertEqual(result["classes"], ["background", "nerve", "vessel"])
        self.assertEqual((result["label_values"], result["ignore_value"]),
                         ([0, 1, 2], 255))
        for case, got in _parse(out, "train").items():
            values = truth[case][1]
            self.assertAllEqual(got["fov"][..., 0], values != 255)
            self.assertAllEqual(got["mask"][..., 0], np.where(values == 255, 0, values))
        self.assertIn("labels.json", result["source_files"])

    def test_undeclared_values_become_classes_in_increasing_order(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        truth = _pairs(raw, values=(0, 50, 200), gray=True)
        result = prepare.prepare("folder", raw, out)
        self.assertEqual(result["classes"], ["background", "class_1", "class_2"])
        self.assertEqual((result["label_values"], result["channels"]),
                         ([0, 50, 200], 1))
        for case, got in _parse(out, "train").items():
            self.assertAllEqual(got["mask"][..., 0],
                                np.searchsorted([0, 50, 200], truth[case][1]))

    def test_palette_labels_are_their_indices(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        truth = _pairs(raw, values=(0, 1, 2))
        for case, (_, indices) in truth.items():
            img = Image.fromarray(indices, mode="P")
            # Index 1 painted grey 2, index 2 grey 1: through the palette the classes
            # would swap.
            img.putpalette([0, 0, 0, 2, 2, 2, 1, 1, 1] + [0] * 759)
            img.save(os.path.join(raw, "train", "masks", f"{case}.png"))
        result = prepare.prepare("folder", raw, out)
        self.assertEqual(result["label_values"], [0, 1, 2])
        for case, got in _parse(out, "train").items():
            self.assertAllEqual(got["mask"][..., 0], truth[case][1])

    def test_varying_sizes_gray_images_and_a_test_split(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        sizes = [(12, 16), (20, 8), (7, 9), (16, 16), (11, 13)]
        truth = _pairs(raw, values=(0, 1), gray=True, sizes=sizes)
        shutil.copytree(os.path.join(raw, "train"), os.path.join(raw, "test"))
        for name in ("images", "masks"):  # test ids must differ from train ids
            for f in os.listdir(os.path.join(raw, "test", name)):
                os.rename(os.path.join(raw, "test", name, f),
                          os.path.join(raw, "test", name, "t" + f))
        result = prepare.prepare("folder", raw, out)
        self.assertIsNone(result["image_shape"])
        test = _parse(out, "test")
        self.assertEqual(sorted(test), [f"tp{n}" for n in range(5)])
        for case, got in test.items():
            image, mask = truth[case[1:]]
            self.assertAllEqual(got["image"], image)
            self.assertAllEqual(got["mask"][..., 0], mask)


class KClassesTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(2, 3, 5)
    def test_k_classes_read_back_through_the_pipeline(self, k):
        raw, out = _tmpdir(self), _tmpdir(self)
        truth = _nnunet(raw, k=k, cases=6, seed=k)
        result = prepare.prepare("folder", raw, out, validation_count=2)
        data = prepared.load(out)
        self.assertEqual(data.num_classes, k)
        self.assertEqual(data.classes, ("background",) + tuple(
            f"organ{i}" for i in range(1, k)))
        self.assertLen(data.class_weights, k)
        seen = []
        for element in data.dataset("validation", batch_size=1, training=False):
            case = element["id"].numpy()[0].decode()
            seen.append(case)
            self.assertAllEqual(element["mask"][0], truth[case][1])
            self.assertEqual(element["mask"].dtype, tf.int32)
        self.assertEqual(seen, result["splits"]["validation"]["ids"])
        self.assertLen(seen, 2)
        counts = _counts(truth, result["splits"]["train"]["ids"], range(k), k)
        self.assertAllClose(data.class_weights, counts.sum() / (k * counts))


class SplitTest(tf.test.TestCase):

    def test_validation_is_seeded_random_disjoint_and_fixed(self):
        raw = _tmpdir(self)
        _pairs(raw, values=(0, 1), cases=10)
        first = prepare.prepare("folder", raw, _tmpdir(self))
        again = prepare.prepare("folder", raw, _tmpdir(self))
        other = prepare.prepare("folder", raw, _tmpdir(self), seed=1)
        ids = lambda m, s: m["splits"][s]["ids"]  # noqa: E731
        self.assertEqual(ids(first, "validation"), ids(again, "validation"))
        self.assertLen(ids(first, "validation"), 2)  # 20% of 10
        # The draw: ids sorted by sha256("<seed>/<id>"), the first ones held out.
        for result, seed in ((first, 0), (other, 1)):
            drawn = sorted((f"p{n}" for n in range(10)), key=lambda i: hashlib.sha256(
                f"{seed}/{i}".encode()).hexdigest())[:2]
            self.assertEqual(ids(result, "validation"), sorted(drawn))
            self.assertEmpty(set(ids(result, "train")) & set(drawn))
            self.assertLen(ids(result, "train"), 8)
        self.assertNotEqual(ids(first, "validation"), ids(other, "validation"))
        three = prepare.prepare("folder", raw, _tmpdir(self), validation_count=3)
        self.assertLen(ids(three, "validation"), 3)
        self.assertLen(ids(three, "train"), 7)

    def test_hold_out_bounds(self):
        raw = _tmpdir(self)
        _pairs(raw, values=(0, 1), cases=3)
        with self.assertRaisesRegex(errors.DataError, "cannot hold out 3 of 3"):
            prepare.prepare("folder", raw, _tmpdir(self), validation_count=3)
        with self.assertRaisesRegex(errors.DataError, "1 training case"):
            folder.hold_out([{"id": "a"}], None, 0, raw)
        train, validation = folder.hold_out([{"id": "a"}, {"id": "b"}], None, 0, raw)
        self.assertEqual((len(train), len(validation)), (1, 1))  # at least one each

    def test_reader_code_and_labels_json_are_fingerprinted(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        _pairs(raw, values=(0, 1), labels={"background": 0, "lesion": 1})
        plan = sources.find("folder", raw, None, None, None, 0, None)
        for module in (folder, nnunet, labels_lib):
            self.assertIn(module.__file__, plan["code"])
        first = prepare.prepare("folder", raw, out)
        before = _snapshot(out)
        self.assertEqual(prepare.prepare("folder", raw, out), first)
        self.assertEqual(_snapshot(out), before)  # up to date: nothing written
        with open(os.path.join(raw, "labels.json"), "w") as f:
            json.dump({"background": 0, "tumour": 1}, f)
        second = prepare.prepare("folder", raw, out)
        self.assertNotEqual(second["fingerprint"], first["fingerprint"])
        self.assertEqual(second["classes"], ["background", "tumour"])

    def test_fold_0_of_splits_final_is_the_validation_split_and_fingerprinted(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        _nnunet(raw, k=2, cases=5)
        folds = os.path.join(raw, folder.SPLITS_FILE)
        for held in (["case_001", "case_003"], ["case_004"]):
            with open(folds, "w") as f:
                json.dump([{"train": [], "val": held}], f)
            prepare.prepare("folder", raw, out)
            data = prepared.load(out)
            self.assertEqual(list(data.split("validation").ids), held)
            self.assertEqual(len(data.split("train").ids), 5 - len(held))
        with open(folds, "w") as f:
            json.dump([{"train": [], "val": ["case_009"]}], f)
        with self.assertRaisesRegex(errors.DataError,
                                    "validation case 'case_009' is not a training"):
            prepare.prepare("folder", raw, out)


def _nn(root):
    _nnunet(root, k=3, cases=4)
    return os.path.join(root, "imagesTr"), os.path.join(root, "labelsTr")


def _edit_json(root, **changes):
    path = os.path.join(root, "dataset.json")
    with open(path) as f:
        meta = json.load(f)
    meta.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del meta[key]
    with open(path, "w") as f:
        json.dump(meta, f)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _bad_cases():
    """(name, make(root) -> None, message regex with {root})."""
    rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8)
    im, lb = "{root}/imagesTr/", "{root}/labelsTr/"
    return [
        ("image_without_label", lambda r: os.remove(_nn(r)[1] + "/case_001.png"),
         im + r"case_001_0000.png: image without label \(expected " + lb
         + r"case_001.png\)"),
        ("label_without_image", lambda r: shutil.copy(
            _nn(r)[1] + "/case_001.png", r + "/labelsTr/extra.png"),
         lb + r"extra.png: label without image"),
        ("sizes_differ", lambda r: _save(_nn(r)[1] + "/case_002.png",
                                         np.zeros((8, 9), np.uint8)),
         lb + r"case_002.png: label map is 9x8 but image " + im
         + r"case_002_0000.png is 16x12"),
        ("value_not_in_dataset_json", lambda r: _save(
            _nn(r)[1] + "/case_003.png", np.full((12, 16), 5, np.uint8)),
         lb + r"case_003.png: label value 5 is not in dataset.json"),
        ("colour_coded_label", lambda r: _save(_nn(r)[1] + "/case_000.png", rgb),
         lb + r"case_000.png: label map is colour-coded"),
        ("rgb_image_for_one_channel", lambda r: _save(
            _nn(r)[0] + "/case_001_0000.png", rgb),
         im + r"case_001_0000.png: 3 channel\(s\), 3 for the case, but dataset.json "
         r"channel_names has 1"),
        ("missing_second_channel", lambda r: (_nn(r), _edit_json(
            r, channel_names={"0": "T2", "1": "ADC"})),
         im + r"case_00\d_0001.png: missing channel file \(dataset.json channel_names "
         r"has 2, the case's files hold 1\)"),
        ("dataset_json_not_json", lambda r: (_nn(r), _write(
            r + "/dataset.json", b"{'labels': ")),
         r"{root}/dataset.json: not valid JSON"),
        ("dataset_json_missing_keys", lambda r: (_nn(r), _edit_json(
            r, numTraining=None, file_ending=None)),
         r"{root}/dataset.json: missing key\(s\) numTraining, file_ending"),
        ("region_labels", lambda r: (_nn(r), _edit_json(r, labels={
            "background": 0, "whole": [1, 2], "core": 2})),
         r"{root}/dataset.json: label 'whole' is a region \[1, 2\]"),
        ("labels_not_consecutive", lambda r: (_nn(r), _edit_json(r, labels={
            "background": 0, "a": 1, "b": 3})),
         r"{root}/dataset.json: label values must be consecutive 0..2, got 0, 1, 3"),
        ("ignore_not_highest", lambda r: (_nn(r), _edit_json(r, labels={
            "background": 0, "a": 1, "b": 2, "ignore": 7})),
         r"{root}/dataset.json: the ignore label must be the highest value, 3"),
        ("no_background", lambda r: (_nn(r), _edit_json(r, labels={"a": 0, "b": 1})),
         r"{root}/dataset.json: labels need \"background\": 0"),
        ("num_training_differs", lambda r: (_nn(r), _edit_json(r, numTraining=9)),
         r"{root}/dataset.json: numTraining is 9 but imagesTr holds 4 training cases"),
        ("empty_image_file", lambda r: _write(_nn(r)[0] + "/case_002_0000.png", b""),
         im + r"case_002_0000.png: cannot decode image"),
        ("garbage_label_file", lambda r: _write(_nn(r)[1] + "/case_001.png",
                                                b"\x89PNG\r\n\x1a\nnot really"),
         lb + r"case_001.png: cannot decode image"),
        ("no_cases", lambda r: [os.remove(os.path.join(d, f)) for d in _nn(r)
                                for f in os.listdir(d)],
         im.rstrip("/") + r": no training cases"),
        ("neither_layout", lambda r: os.makedirs(r + "/images"),
         r"{root}: neither an nnU-Net v2 raw dataset"),
        ("pairs_without_cases", lambda r: [os.makedirs(r + f"/train/{d}")
                                          for d in ("images", "masks")],
         r"{root}/train/images: no training images"),
        ("pairs_value_not_in_labels_json", lambda r: _pairs(
            r, values=(0, 1, 9), labels={"background": 0, "lesion": 1}),
         r"{root}/train/masks/p\d.png: label value 9 is not in labels.json"),
        ("pairs_label_without_image", lambda r: (_pairs(r), os.remove(
            r + "/train/images/p3.png")),
         r"{root}/train/masks/p3.png: label without image"),
    ]


class BadFolderTest(tf.test.TestCase, parameterized.TestCase):
    """Each bad folder: one line naming the file; the earlier preparation stays."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.out = tempfile.mkdtemp()
        cls.good = tempfile.mkdtemp()
        _nnunet(cls.good, k=2, cases=3)
        prepare.prepare("folder", cls.good, cls.out)
        cls.before = _snapshot(cls.out)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.out, ignore_errors=True)
        shutil.rmtree(cls.good, ignore_errors=True)
        super().tearDownClass()

    @parameterized.named_parameters(*_bad_cases())
    def test_bad_folder(self, make, message):
        root = _tmpdir(self)
        make(root)
        with self.assertRaises(errors.DataError) as caught:
            prepare.prepare("folder", root, self.out)
        text = str(caught.exception)
        self.assertRegex(text, "^" + message.format(root=re.escape(root)))
        self.assertNotIn("\n", text)
        self.assertEqual(_snapshot(self.out), self.before)

    def test_folder_needs_a_data_dir(self):
        with self.assertRaisesRegex(ValueError, "dataset 'folder' needs data_dir"):
            prepare.prepare("folder", None, self.out)
        self.assertIsNone(prepare.default_data_dir("folder"))
        self.assertIn("folder", prepare.DATASETS)


class BinPrepareFolderTest(tf.test.TestCase):

    def _run(self, *flags):
        return subprocess.run([sys.executable, os.path.join(REPO, "bin", "prepare"),
                               *flags], cwd=_tmpdir(self), capture_output=True,
                              text=True, timeout=300)

    def test_prepares_a_folder_and_names_its_classes(self):
        raw, out = _tmpdir(self), _tmpdir(self)
        _pairs(raw, values=(0, 1, 2), labels={"background": 0, "nerve": 1, "vessel": 2})
        proc = self._run("--dataset=folder", f"--data_dir={raw}", f"--out_dir={out}",
                         "--seed=3")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("train 4, validation 1; classes [background, nerve, vessel]",
                      proc.stdout)
        self.assertEqual(manifest_lib.load(out)["options"]["seed"], 3)

    def test_bad_folders_are_one_error_line(self):
        cases = {name: (make, message) for name, make, message in _bad_cases()}
        for name in ("image_without_label", "colour_coded_label", "region_labels"):
            with self.subTest(name):
                root, out = _tmpdir(self), _tmpdir(self)
                make, message = cases[name]
                make(root)
                proc = self._run("--dataset=folder", f"--data_dir={root}",
                                 f"--out_dir={out}")
                self.assertEqual(proc.returncode, 1)
                self.assertNotIn("Traceback", proc.stderr)
                self.assertRegex(proc.stderr.strip().splitlines()[-1],
                                 "^prepare: error: " + message.format(
                                     root=re.escape(root)))
                self.assertEqual(os.listdir(out), [])  # nothing half-written

    def test_missing_data_dir(self):
        proc = self._run("--dataset=folder", f"--out_dir={_tmpdir(self)}")
        self.assertEqual(proc.returncode, 1)
        self.assertRegex(proc.stderr.strip().splitlines()[-1],
                         r"^prepare: error: dataset 'folder' needs data_dir "
                         r"\(--data_dir=DIR\)")


class RealDataTest(tf.test.TestCase):

    def test_usgra_seg_prepares_with_three_classes(self):
        raw = os.path.join(prepare.data_root(), "USGRA_SEG")
        if not os.path.isdir(raw):
            self.skipTest(f"data not found at {raw}")
        out = _tmpdir(self)
        result = prepare.prepare("folder", raw, out, limit=3)
        self.assertEqual(result["classes"], ["background", "class_1", "class_2"])
        self.assertEqual((result["num_classes"], result["label_values"]),
                         (3, [0, 1, 2]))
        self.assertEqual({s: v["num_examples"] for s, v in result["splits"].items()},
                         {"train": 3, "validation": 3, "test": 3})
        self.assertEqual(result["channels"], 1)
        train = _parse(out, "train")
        masks = np.concatenate([p["mask"].ravel() for p in train.values()])
        self.assertAllEqual(np.bincount(masks, minlength=3), result["class_counts"])
        self.assertAllGreater(np.asarray(result["class_counts"]), 0)


if __name__ == "__main__":
    tf.test.main()
