"""Tests for r2u.data.isic on tiny fixtures and (if present) the real data."""

import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from r2u.data import imageio
from r2u.data import isic
from r2u.data import tfrecord


def _tmpdir(test):
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _data_root():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("R2U_DATA_DIR") or os.path.join(
        os.path.dirname(repo), "shared", "data")


def make_isic(root, splits=("Training", "Validation"), count=3):
    """Images of varying size; masks at twice the image size, as our copy.

    Ids differ between splits (ISIC_00000ki for split k), as in the real data."""
    for k, tag in enumerate(splits):
        data = os.path.join(root, f"ISIC-2017_{tag}_Data")
        truth = os.path.join(root, f"ISIC-2017_{tag}_Part1_GroundTruth")
        os.makedirs(data)
        os.makedirs(truth)
        for i in range(count):
            name = f"ISIC_{100 * k + i:07d}"
            height, width = 12 + 2 * i, 16
            Image.fromarray(np.full((height, width, 3), 90 + i, np.uint8)).save(
                os.path.join(data, f"{name}.jpg"))
            mask = np.zeros((2 * height, 2 * width), np.uint8)
            mask[:, width:] = 255  # Right half is lesion.
            Image.fromarray(mask).save(os.path.join(truth, f"{name}_segmentation.png"))
            Image.fromarray(mask).save(os.path.join(truth, f"{name}_superpixels.png"))
        with open(os.path.join(data, "ISIC-2017_metadata.csv"), "w") as f:
            f.write("image_id\n")


class IsicTest(tf.test.TestCase):

    def test_lists_and_pairs_by_id(self):
        root = _tmpdir(self)
        make_isic(root)
        splits = isic.list_splits(root)
        self.assertEqual(sorted(splits), ["train", "validation"])
        self.assertEqual([e["id"] for e in splits["train"]],
                         ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"])
        self.assertTrue(splits["train"][1]["mask"].endswith(
            "ISIC-2017_Training_Part1_GroundTruth/ISIC_0000001_segmentation.png"))

    def test_examples_resized(self):
        root = _tmpdir(self)
        make_isic(root)
        examples = list(isic.examples(root, "train", image_size=(8, 10)))
        self.assertLen(examples, 3)
        for i, example in enumerate(examples):
            self.assertEqual(example["image"].shape, (8, 10, 3))
            self.assertAllClose(example["image"], np.full((8, 10, 3), 90 + i), atol=4)
            expected = np.zeros((8, 10), np.uint8)
            expected[:, 5:] = 1
            self.assertAllEqual(example["mask"], expected)
            self.assertAllEqual(example["fov"], np.ones((8, 10)))

    def test_ids_and_limit(self):
        root = _tmpdir(self)
        make_isic(root)
        got = isic.examples(root, "validation", image_size=(4, 4),
                            ids=["ISIC_0000102", "ISIC_0000100"], limit=1)
        self.assertEqual([e["id"] for e in got], ["ISIC_0000102"])
        with self.assertRaisesRegex(imageio.DataError, "has no image 'ISIC_0000009'"):
            list(isic.examples(root, "train", ids=["ISIC_0000009"]))
        with self.assertRaisesRegex(
                imageio.DataError,
                r"no test split \(expected folder 'ISIC-2017_Test_v2_Data'"):
            list(isic.examples(root, "test"))

    def test_missing_mask_names_image(self):
        root = _tmpdir(self)
        make_isic(root)
        os.remove(os.path.join(root, "ISIC-2017_Training_Part1_GroundTruth",
                               "ISIC_0000001_segmentation.png"))
        with self.assertRaisesRegex(imageio.DataError,
                                    "ISIC_0000001.jpg: missing mask, expected .*"
                                    "ISIC_0000001_segmentation.png"):
            isic.list_splits(root)

    def test_wrong_layout_and_empty(self):
        root = _tmpdir(self)
        with self.assertRaisesRegex(
                imageio.DataError, "expected folder 'ISIC-2017_Training_Data'"):
            isic.list_splits(root)
        os.makedirs(os.path.join(root, "ISIC-2017_Training_Data"))
        with self.assertRaisesRegex(
                imageio.DataError,
                "expected folder 'ISIC-2017_Training_Part1_GroundTruth'"):
            isic.list_splits(root)
        os.makedirs(os.path.join(root, "ISIC-2017_Training_Part1_GroundTruth"))
        with self.assertRaisesRegex(
                imageio.DataError,
                "ISIC-2017_Training_Data: no ISIC_NNNNNNN.jpg images"):
            isic.list_splits(root)
        with self.assertRaisesRegex(imageio.DataError, "ISIC 2017 folder not found"):
            isic.list_splits(os.path.join(root, "nope"))

    def test_non_binary_mask(self):
        root = _tmpdir(self)
        make_isic(root, splits=("Training",))
        noise = np.random.default_rng(0).integers(0, 256, (12, 16), dtype=np.uint8)
        path = os.path.join(root, "ISIC-2017_Training_Part1_GroundTruth",
                            "ISIC_0000000_segmentation.png")
        Image.fromarray(noise).save(path)
        with self.assertRaisesRegex(
                imageio.DataError, "ISIC_0000000_segmentation.png: mask is not binary"):
            next(isic.examples(root, "train"))

    def test_truncated_image(self):
        root = _tmpdir(self)
        make_isic(root, splits=("Training",))
        path = os.path.join(root, "ISIC-2017_Training_Data", "ISIC_0000000.jpg")
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:40])
        with self.assertRaisesRegex(
                imageio.DataError, "ISIC_0000000.jpg: cannot decode"):
            next(isic.examples(root, "train"))


def write_pair(root, image_hw, mask_hw):
    """One image (gray 90) and mask (right half lesion) of the given (height, width)
    in `root`, as an entry of `isic.list_splits`."""
    image = os.path.join(root, "ISIC_0000000.jpg")
    mask = os.path.join(root, "ISIC_0000000_segmentation.png")
    Image.fromarray(np.full((*image_hw, 3), 90, np.uint8)).save(image)
    pixels = np.zeros(mask_hw, np.uint8)
    pixels[:, mask_hw[1] // 2:] = 255
    Image.fromarray(pixels).save(mask)
    return {"id": "ISIC_0000000", "image": image, "mask": mask}


class MaskSizeTest(tf.test.TestCase):
    """A mask of another size than its image: refused, or resized with a log line."""

    def test_another_aspect_ratio_is_refused_in_one_line_naming_the_mask(self):
        for image_hw, mask_hw in [((12, 16), (20, 20)),  # image not square
                                  ((32, 32), (12, 16))]:  # square, larger than mask
            entry = write_pair(_tmpdir(self), image_hw, mask_hw)
            for size in ((8, 8), None):
                with self.assertRaisesRegex(
                        imageio.DataError,
                        f"^{re.escape(entry['mask'])}: mask {mask_hw[1]}x{mask_hw[0]}, "
                        f"image {re.escape(entry['image'])} {image_hw[1]}x"
                        f"{image_hw[0]} .*another aspect ratio\\)$") as caught:
                    isic.read_example(entry, size)
                self.assertNotIn("\n", str(caught.exception))

    def test_a_pure_rescale_is_resized_with_a_log_line(self):
        entry = write_pair(_tmpdir(self), (12, 16), (24, 32))
        for size in ((6, 8), None):
            with self.assertLogs(logging.get_absl_logger(), "INFO") as logs:
                example = isic.read_example(entry, size)
            self.assertLen(logs.output, 1)
            self.assertRegex(logs.output[0], f"{re.escape(entry['mask'])}: mask 32x24,"
                             f" image .* 16x12 .*a rescale, resized")
            height, width = size or (12, 16)
            expected = np.zeros((height, width), np.uint8)
            expected[:, width // 2:] = 1
            self.assertAllEqual(example["mask"], expected)

    def test_a_mask_of_its_image_size_is_read_without_a_log_line(self):
        entry = write_pair(_tmpdir(self), (12, 16), (12, 16))
        with self.assertNoLogs(logging.get_absl_logger(), "DEBUG"):
            example = isic.read_example(entry, None)
        self.assertEqual(example["mask"].shape, (12, 16))

    def test_an_image_squashed_to_a_square_trains_but_is_no_test_image(self):
        entry = write_pair(_tmpdir(self), (8, 8), (12, 24))
        verbosity = logging.get_verbosity()
        self.addCleanup(logging.set_verbosity, verbosity)
        logging.set_verbosity(1)
        with self.assertLogs(logging.get_absl_logger(), "DEBUG") as logs:
            example = isic.read_example(entry, (4, 4))
        self.assertLen(logs.output, 1)
        self.assertRegex(logs.output[0], f"{re.escape(entry['mask'])}: mask 24x12, "
                         "image .* 8x8 .*squashed to a square, mask resized")
        self.assertAllEqual(example["mask"], [[0, 0, 1, 1]] * 4)
        with self.assertRaisesRegex(imageio.DataError, "another aspect ratio"):
            isic.read_example(entry, None)  # test images keep their resolution


class RealIsicTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.root = os.path.join(_data_root(), "ISIC2017")
        if not os.path.isdir(self.root):
            self.skipTest(f"real ISIC 2017 data not found at {self.root}")

    def test_handful_of_pairs_round_trip(self):
        splits = isic.list_splits(self.root)
        self.assertGreaterEqual(len(splits["train"]), 2000)
        examples = list(isic.examples(self.root, "train", limit=3))
        # A validation pair at original resolution (3008x2000 image and mask).
        examples += list(isic.examples(self.root, "validation", ids=["ISIC_0012099"]))
        for example in examples:
            self.assertEqual(example["image"].shape, (256, 256, 3))
            self.assertAllInSet(example["mask"], [0, 1])
            self.assertBetween(example["mask"].mean(), 0.01, 0.99)  # A lesion.
        out = _tmpdir(self)
        result = tfrecord.write_split(out, "train", examples, 1)
        path = os.path.join(out, result["shards"][0]["file"])
        for parsed, example in zip(
                tf.data.TFRecordDataset(path).map(tfrecord.parse), examples):
            self.assertEqual(parsed["id"].numpy().decode(), example["id"])
            self.assertAllEqual(parsed["image"], example["image"])
            self.assertAllEqual(parsed["mask"][:, :, 0], example["mask"])
            self.assertAllEqual(parsed["fov"][:, :, 0], example["fov"])


if __name__ == "__main__":
    tf.test.main()
