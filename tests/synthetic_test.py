"""Tests for r2u.data.synthetic."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u.data import synthetic


def _luma(image):
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


class SyntheticTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(("lesion", 64), ("vessels", 96), ("vessels", 40))
    def test_contract(self, kind, size):
        items = list(synthetic.examples(kind, "train", 4, size, seed=0))
        self.assertLen(items, 4)
        self.assertLen({e["id"] for e in items}, 4)
        for e in items:
            self.assertEqual(set(e), {"id", "image", "mask", "fov"})
            self.assertEqual(e["image"].dtype, np.uint8)
            self.assertEqual(e["image"].shape, (size, size, 3))
            for key in ("mask", "fov"):
                self.assertEqual(e[key].dtype, np.uint8)
                self.assertEqual(e[key].shape, (size, size))
                self.assertContainsSubset(np.unique(e[key]), {0, 1})
            self.assertTrue(np.all(e["mask"] <= e["fov"]))

    @parameterized.parameters("lesion", "vessels")
    def test_deterministic_per_kind_split_seed(self, kind):
        def images(split="train", seed=0, num=3):
            return [e["image"] for e in synthetic.examples(kind, split, num, 32, seed)]

        self.assertAllEqual(images(), images())
        self.assertAllEqual(images(num=5)[:3], images())  # Independent of num.
        self.assertNotAllClose(images()[0], images(split="validation")[0])
        self.assertNotAllClose(images()[0], images(seed=1)[0])
        self.assertNotAllClose(images()[0], images()[1])

    def test_lesion_is_a_darker_blob(self):
        for e in synthetic.examples("lesion", "test", 20, 64, seed=0):
            self.assertAllEqual(e["fov"], np.ones((64, 64), np.uint8))
            inside = e["mask"] == 1
            self.assertBetween(inside.mean(), 0.005, 0.5)
            luma = _luma(e["image"])
            self.assertGreater(luma[~inside].mean() - luma[inside].mean(), 30)

    def test_vessels_are_dark_lines_inside_a_disc(self):
        for e in synthetic.examples("vessels", "test", 10, 96, seed=0):
            fov, mask, image = e["fov"] == 1, e["mask"] == 1, e["image"]
            self.assertFalse(fov[0, 0] or fov[-1, -1])
            self.assertTrue(fov[48, 48])
            self.assertAllEqual(image[~fov], np.zeros_like(image[~fov]))
            self.assertBetween(mask[fov].mean(), 0.05, 0.25)
            green = image[..., 1].astype(np.float64)
            self.assertGreater(green[fov & ~mask].mean() - green[mask].mean(), 10)
            # A tree of thin lines: few vessel pixels have all 8 neighbours set.
            padded = np.pad(mask, 1)
            neighbours = sum(np.roll(np.roll(padded, dy, 0), dx, 1)
                             for dy in (-1, 0, 1) for dx in (-1, 0, 1))[1:-1, 1:-1]
            self.assertLess((neighbours[mask] == 9).mean(), 0.5)

    def test_a_long_run_is_numbered_and_never_repeats(self):
        # (Speed belongs in benchmarks, not here.)
        items = list(synthetic.examples("lesion", "train", 200, 64, seed=0))
        self.assertEqual([e["id"] for e in items],
                         [f"lesion-train-{i:05d}" for i in range(200)])
        self.assertLen({e["image"].tobytes() for e in items}, 200)
        self.assertLen({e["mask"].tobytes() for e in items}, 200)

    @parameterized.parameters(
        dict(kind="stars", num=1, size=32, match="kind"),
        dict(kind="lesion", num=-1, size=32, match="num"),
        dict(kind="vessels", num=1, size=8, match="size"),
    )
    def test_bad_arguments_raise(self, kind, num, size, match):
        with self.assertRaisesRegex(ValueError, match):
            list(synthetic.examples(kind, "train", num, size))


if __name__ == "__main__":
    tf.test.main()
