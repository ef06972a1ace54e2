"""Tests for r2u.data.retina on tiny fixtures in the official layouts."""

import gzip
import io
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from r2u.data import imageio
from r2u.data import retina
from r2u.data import tfrecord

STARE_IDS = (1, 2, 3, 4, 5, 44, 77, 81, 82, 139, 162, 163, 235, 236, 239, 240,
             255, 291, 319, 324)
CHASE_IDS = tuple(f"Image_{n:02d}{eye}" for n in range(1, 15) for eye in "LR")


def _tmpdir(test):
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _fundus(seed, height=14, width=16):
    """A bright noisy disc on a near-black surround, with a dark 'vessel'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2 + 0.5) ** 2 + (xx - width / 2 + 0.5) ** 2 < (
        min(height, width) / 2 - 1) ** 2
    image = rng.integers(0, 8, (height, width, 3)).astype(np.uint8)
    image[disc] = rng.integers(120, 220, (disc.sum(), 3))
    vessel = (height // 2, slice(width // 4, width - width // 4))
    image[vessel] = (15, 5, 5)  # Darker than the FOV threshold, inside the disc.
    vessels = np.zeros((height, width), np.uint8)
    vessels[vessel] = 1
    return image, vessels, disc.astype(np.uint8)


def _save(img, path, gz=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not gz:
        img.save(path)
        return
    buf = io.BytesIO()
    img.save(buf, format="PPM")
    with gzip.open(path, "wb") as f:
        f.write(buf.getvalue())


def make_drive(root, train=(21, 22, 23), test=(1, 2)):
    for folder, numbers in (("training", train), ("test", test)):
        for n in numbers:
            image, vessels, disc = _fundus(n)
            d = os.path.join(root, folder)
            _save(Image.fromarray(image), f"{d}/images/{n:02d}_{folder}.tif")
            _save(Image.fromarray(vessels * 255), f"{d}/1st_manual/{n:02d}_manual1.gif")
            _save(Image.fromarray(disc * 255), f"{d}/mask/{n:02d}_{folder}_mask.gif")
            if folder == "test":  # Palette GIF with indices 0/1, as DRIVE.
                second = Image.fromarray(1 - vessels, mode="P")
                second.putpalette([3, 3, 3, 253, 253, 253] + [0] * 762)
                _save(second, f"{d}/2nd_manual/{n:02d}_manual2.gif")


def make_stare(root, ids=STARE_IDS, vk=False):
    for n in ids + (10,):  # im0010 has no labels: not part of the dataset.
        image, vessels, _ = _fundus(n)
        _save(Image.fromarray(image), f"{root}/stare-images/im{n:04d}.ppm.gz", gz=True)
        if n != 10:
            rgb = np.repeat(vessels[:, :, None] * 255, 3, axis=2)
            _save(Image.fromarray(rgb), f"{root}/labels-ah/im{n:04d}.ah.ppm.gz",
                  gz=True)
        if n != 10 and vk:  # Second observer as a binary PGM.
            _save(Image.fromarray((1 - vessels) * 255),
                  f"{root}/labels-vk/im{n:04d}.vk.ppm.gz", gz=True)


def make_chase(root, ids=CHASE_IDS):
    for i, name in enumerate(ids):
        image, vessels, _ = _fundus(100 + i)
        _save(Image.fromarray(image), f"{root}/{name}.jpg")
        _save(Image.fromarray(vessels.astype(bool)).convert("1"),
              f"{root}/{name}_1stHO.png")
        _save(Image.fromarray((1 - vessels).astype(bool)).convert("1"),
              f"{root}/{name}_2ndHO.png")


class DeriveFovTest(tf.test.TestCase):

    def test_disc_with_holes_and_speck(self):
        image, _, disc = _fundus(0, 40, 44)
        image[18:22, 18:24] = 0  # A dark lesion inside: a hole to fill.
        image[1, 1] = 255  # A bright speck outside: not the largest component.
        self.assertAllEqual(retina.derive_fov(image), disc)

    def test_dark_image_is_an_error(self):
        with self.assertRaisesRegex(imageio.DataError, "x.jpg: cannot derive"):
            retina.derive_fov(np.zeros((5, 5, 3), np.uint8), name="x.jpg")

    def test_matches_official_drive_masks(self):
        root = os.path.join(retina_data_root(), "DRIVE")
        if not os.path.isdir(root):
            self.skipTest(f"real DRIVE data not found at {root}")
        for name in ("training/images/21_training.tif", "test/images/01_test.tif",
                     "test/images/10_test.tif"):
            path = os.path.join(root, name)
            official = imageio.read_mask(
                path.replace("images", "mask").replace(".tif", "_mask.gif"))
            derived = retina.derive_fov(imageio.read_image(path))
            iou = (derived & official).sum() / (derived | official).sum()
            self.assertGreater(iou, 0.98, name)


def retina_data_root():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("R2U_DATA_DIR") or os.path.join(
        os.path.dirname(repo), "shared", "data")


class ReadersTest(tf.test.TestCase, parameterized.TestCase):

    def _round_trip(self, examples, with_mask2):
        out = _tmpdir(self)
        result = tfrecord.write_split(out, "x", examples, 2)
        paths = [os.path.join(out, s["file"]) for s in result["shards"]]
        got = {}
        for p in tf.data.TFRecordDataset(paths).map(
                lambda s: tfrecord.parse(s, with_mask2=with_mask2)):
            got[p["id"].numpy().decode()] = p
        self.assertLen(got, len(examples))
        for example in examples:
            p = got[example["id"]]
            self.assertAllEqual(p["image"], example["image"])
            for key in ("mask", "fov") + (("mask2",) if with_mask2 else ()):
                self.assertAllEqual(p[key][:, :, 0], example[key])

    def test_drive(self):
        root = _tmpdir(self)
        make_drive(root)
        splits = retina.drive_splits(root)
        # 20% of 3 rounds to 1: the last training image is held out, not copied.
        self.assertEqual([e["id"] for e in splits["train"]],
                         ["21_training", "22_training"])
        self.assertEqual([e["id"] for e in splits["validation"]], ["23_training"])
        two = retina.drive_splits(root, validation_count=2)
        self.assertEqual([e["id"] for e in two["validation"]],
                         ["22_training", "23_training"])
        with self.assertRaisesRegex(imageio.DataError,
                                    "cannot hold out 3 of 3 training images"):
            retina.drive_splits(root, validation_count=3)
        self.assertEqual([e["id"] for e in splits["test"]], ["01_test", "02_test"])
        test = list(retina.examples("drive", root, "test"))
        _, vessels, disc = _fundus(1)
        self.assertAllEqual(test[0]["mask"], vessels)
        self.assertAllEqual(test[0]["mask2"], 1 - vessels)  # Indices, not colours.
        self.assertAllEqual(test[0]["fov"], disc)
        self.assertNotIn("mask2", next(retina.examples("drive", root, "train")))
        self._round_trip(test, with_mask2=True)

    def test_stare(self):
        root = _tmpdir(self)
        make_stare(root)
        splits = retina.stare_splits(root)
        self.assertEqual([e["id"] for e in splits["train"]],
                         [f"im{n:04d}" for n in STARE_IDS[:8]])
        self.assertEqual([e["id"] for e in splits["validation"]],
                         [f"im{n:04d}" for n in STARE_IDS[8:10]])
        self.assertEqual([e["id"] for e in splits["test"]],
                         [f"im{n:04d}" for n in STARE_IDS[10:]])
        examples = list(retina.examples("stare", root, "test", limit=3))
        image, vessels, disc = _fundus(STARE_IDS[10])
        self.assertAllEqual(examples[0]["image"], image)
        self.assertAllEqual(examples[0]["mask"], vessels)
        self.assertAllEqual(examples[0]["fov"], disc)  # Derived, vessel filled.
        self._round_trip(examples, with_mask2=False)

    def test_stare_second_observer(self):
        root = _tmpdir(self)
        make_stare(root, vk=True)
        splits = retina.stare_splits(root)
        self.assertNotIn("mask2", splits["train"][0])
        example = retina.read_example(splits["test"][0])
        self.assertAllEqual(example["mask2"], 1 - _fundus(STARE_IDS[10])[1])

    def test_chase(self):
        root = _tmpdir(self)
        make_chase(root)
        splits = retina.chase_splits(root)
        self.assertEqual([e["id"] for e in splits["train"]], list(CHASE_IDS[:16]))
        # Children 09 and 10, both eyes: no child in both train and validation.
        self.assertEqual([e["id"] for e in splits["validation"]], list(CHASE_IDS[16:20]))
        self.assertEqual([e["id"] for e in splits["test"]], list(CHASE_IDS[20:]))
        self.assertNotIn("mask2", splits["train"][0])
        examples = list(retina.examples("chase", root, "test", limit=2))
        _, vessels, disc = _fundus(120)
        self.assertAllEqual(examples[0]["mask"], vessels)
        self.assertAllEqual(examples[0]["mask2"], 1 - vessels)
        fov = examples[0]["fov"]  # JPEG ringing may move a border pixel.
        self.assertGreater((fov & disc).sum() / (fov | disc).sum(), 0.95)
        self._round_trip(examples, with_mask2=True)

    def test_pooled_and_resized(self):
        root = _tmpdir(self)
        make_drive(os.path.join(root, "DRIVE"))
        make_chase(os.path.join(root, "CHASE_DB1"))
        splits = retina.retina_splits(root)
        self.assertLen(splits["train"], 2 + 16)
        self.assertLen(splits["validation"], 1 + 4)
        train_ids = {e["id"] for e in splits["train"]}
        self.assertFalse(train_ids & {e["id"] for e in splits["validation"]})
        self.assertEqual(splits["test"][0]["id"], "drive-01_test")
        self.assertEqual(splits["test"][-1]["id"], "chase-Image_14R")
        self.assertIn("mask2", splits["test"][0])
        example = retina.read_example(splits["test"][-1], image_size=(8, 6))
        self.assertEqual(example["image"].shape, (8, 6, 3))
        for key in ("mask", "fov", "mask2"):
            self.assertEqual(example[key].shape, (8, 6))
            self.assertAllInSet(example[key], [0, 1])

    def test_real_drive(self):
        root = os.path.join(retina_data_root(), "DRIVE")
        if not os.path.isdir(root):
            self.skipTest(f"real DRIVE data not found at {root}")
        splits = retina.drive_splits(root)
        self.assertEqual({k: len(v) for k, v in splits.items()},
                         {"train": 16, "validation": 4, "test": 20})
        example = retina.read_example(splits["test"][0])
        self.assertEqual(example["image"].shape, (584, 565, 3))
        for key in ("mask", "fov", "mask2"):
            self.assertAllInSet(example[key], [0, 1])
        # Observers agree on most vessel pixels; a 3/253 colour slip would not.
        agree = (example["mask"] & example["mask2"]).sum() / example["mask"].sum()
        self.assertGreater(agree, 0.6)
        self._round_trip([example], with_mask2=True)


class ErrorsTest(tf.test.TestCase):

    def test_drive_missing_mask(self):
        root = _tmpdir(self)
        make_drive(root)
        os.remove(os.path.join(root, "training/1st_manual/22_manual1.gif"))
        with self.assertRaisesRegex(
                imageio.DataError,
                "22_training.tif: missing mask, expected .*22_manual1.gif"):
            retina.drive_splits(root)

    def test_drive_wrong_layout(self):
        root = _tmpdir(self)
        make_drive(root)
        shutil.rmtree(os.path.join(root, "test/2nd_manual"))
        with self.assertRaisesRegex(
                imageio.DataError,
                "wrong directory layout, expected folder 'test/2nd_manual'"):
            retina.drive_splits(root)

    def test_mask_size_mismatch(self):
        root = _tmpdir(self)
        make_drive(root)
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(
            os.path.join(root, "training/mask/21_training_mask.gif"))
        entry = retina.drive_splits(root)["train"][0]
        with self.assertRaisesRegex(
                imageio.DataError,
                "21_training_mask.gif: fov is 5x5 but image .* is 16x14"):
            retina.read_example(entry)

    def test_non_binary_mask(self):
        root = _tmpdir(self)
        make_chase(root)
        Image.fromarray(np.arange(14 * 16, dtype=np.uint8).reshape(14, 16)).save(
            os.path.join(root, "Image_01L_1stHO.png"))
        entry = retina.chase_splits(root)["train"][0]
        with self.assertRaisesRegex(
                imageio.DataError, "Image_01L_1stHO.png: mask is not binary"):
            retina.read_example(entry)

    def test_truncated_gz_image(self):
        root = _tmpdir(self)
        make_stare(root)
        path = os.path.join(root, "stare-images/im0001.ppm.gz")
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])
        entry = retina.stare_splits(root)["train"][0]
        with self.assertRaisesRegex(imageio.DataError, "im0001.ppm.gz: cannot decode"):
            retina.read_example(entry)

    def test_stare_incomplete_and_unpaired(self):
        root = _tmpdir(self)
        make_stare(root, ids=STARE_IDS[:19])
        with self.assertRaisesRegex(
                imageio.DataError, "expected the 20 official .* found 19"):
            retina.stare_splits(root)
        os.remove(os.path.join(root, "stare-images/im0044.ppm.gz"))
        with self.assertRaisesRegex(
                imageio.DataError,
                "im0044.ah.ppm.gz: missing image, expected .*im0044.ppm.gz"):
            retina.stare_splits(root)

    def test_empty_directories(self):
        root = _tmpdir(self)
        with self.assertRaisesRegex(imageio.DataError, "no files named like"):
            retina.chase_splits(root)
        with self.assertRaisesRegex(
                imageio.DataError, "expected folder 'stare-images'"):
            retina.stare_splits(root)
        with self.assertRaisesRegex(
                imageio.DataError, "at least one of the folders DRIVE"):
            retina.retina_splits(root)


if __name__ == "__main__":
    tf.test.main()
