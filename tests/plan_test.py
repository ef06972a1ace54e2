"""Fingerprint -> plan on small synthetic sets of different kinds (r2u.data.plan)."""

import numpy as np
import tensorflow as tf

from r2u import config
from r2u.data import fingerprint
from r2u.data import plan


def _disks(count, size, diameter, rng, channels=1):
    """Gray images with one bright disk each: a compact class."""
    for i in range(count):
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.integers(diameter // 2, size - diameter // 2 + 1, 2)
        mask = ((yy - cy)**2 + (xx - cx)**2 <= (diameter / 2)**2).astype(np.uint8)
        image = (rng.normal(100, 10, (size, size, channels)) + 80 * mask[..., None])
        yield {"id": str(i), "image": image.clip(0, 255).astype(np.uint8), "mask": mask,
               "fov": np.ones_like(mask)}


def _lines(count, size, width, rng, fov_radius=None, dark_rim=True):
    """RGB images with thin horizontal and vertical lines (an elongated class), in a
    circular field of view like a fundus photograph when `fov_radius` is given (with
    `dark_rim=False`, the pixels outside it are only left unannotated)."""
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        for start in rng.integers(0, size - width, 6):
            mask[start:start + width, :] = 1
            mask[:, start:start + width] = 1
        yy, xx = np.mgrid[:size, :size]
        fov = np.ones_like(mask)
        if fov_radius:
            fov = ((yy - size / 2)**2 + (xx - size / 2)**2 <= fov_radius**2).astype(
                np.uint8)
        image = rng.normal(120, 15, (size, size, 3)) - 60 * mask[..., None]
        if dark_rim:
            image *= fov[..., None]
        yield {"id": str(i), "image": image.clip(0, 255).astype(np.uint8),
               "mask": mask * fov, "fov": fov}


class PlanTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)

    def test_a_large_gray_image_with_a_thin_class_keeps_its_resolution_in_patches(self):
        names = ["background", "fibre"]
        fp = fingerprint.compute(_lines(3, 512, 2, self.rng), names)
        planned = plan.make(fp, names, 3)
        values = {k: v["value"] for k, v in planned.items()}
        self.assertIsNone(values["data.scale"])      # 2-px lines: no downscaling
        self.assertIsNone(values["data.image_size"])  # one size, kept
        self.assertEqual(values["data.patch_size"], plan.MIN_PATCH)
        self.assertEqual(values["inference.window"], plan.MIN_PATCH)
        self.assertEqual(values["train.batch_size"],
                         plan.PIXELS_PER_STEP // plan.MIN_PATCH**2)
        self.assertTrue(values["preprocessing.contrast"])
        self.assertFalse(values["preprocessing.standardize_in_fov"])
        self.assertEqual(values["data.headline"], "pooled_f1")

    def test_large_compact_structures_are_downscaled_to_whole_images(self):
        names = ["background", "lesion"]
        fp = fingerprint.compute(_disks(4, 256, 128, self.rng), names)
        planned = plan.make(fp, names, 1)
        size = planned["data.image_size"]["value"]
        # 128-px disks kept >= COMPACT_WIDTH px: 256 * 32 / ~127 ~ 64.
        self.assertEqual(size, [64, 64])
        self.assertIsNone(planned["data.patch_size"]["value"])
        self.assertNotIn("inference.window", planned)
        self.assertEqual(planned["train.batch_size"]["value"], plan.MIN_BATCH * 2)
        self.assertFalse(planned["preprocessing.contrast"]["value"])

    def test_a_fundus_like_set_standardises_in_its_field_of_view(self):
        names = ["background", "vessel"]
        fp = fingerprint.compute(_lines(3, 128, 2, self.rng, fov_radius=56), names)
        planned = plan.make(fp, names, 3)
        self.assertTrue(planned["preprocessing.standardize_in_fov"]["value"])
        self.assertTrue(planned["data.flip_left_right"]["value"])

    def test_unannotated_pixels_leave_whole_images_standardised(self):
        # The same ignored share, but the image shows no field of view there:
        # inference could not find those pixels, so it must not depend on them.
        names = ["background", "vessel"]
        fp = fingerprint.compute(
            _lines(3, 128, 2, self.rng, fov_radius=56, dark_rim=False), names)
        self.assertEqual(fp["fov_from_image"], 0.0)
        planned = plan.make(fp, names, 3)
        self.assertFalse(planned["preprocessing.standardize_in_fov"]["value"])
        self.assertIn("no labels", planned["preprocessing.standardize_in_fov"]["why"])

    def test_sided_classes_are_not_mirrored(self):
        names = ["background", "left_lung", "right lung"]
        fp = fingerprint.compute(_disks(2, 64, 20, self.rng), ["background", "a"])
        fp["classes"] = {"left_lung": fp["classes"]["a"], "right lung": fp["classes"]["a"]}
        planned = plan.make(fp, names, 1)
        self.assertFalse(planned["data.flip_left_right"]["value"])
        self.assertIn("left_lung", planned["data.flip_left_right"]["why"])
        self.assertEqual(planned["data.headline"]["value"], "mean_dice")
        for name in ("background", "vessel", "Lymph node", "clear"):
            self.assertIsNone(plan.SIDED.search(name), name)

    def test_the_scale_follows_the_structures_not_the_image(self):
        # The same scene at twice the resolution plans (about) the same training scale.
        names = ["background", "vessel"]
        small = plan.make(fingerprint.compute(_lines(3, 256, 4, self.rng), names),
                          names, 3)
        large = plan.make(fingerprint.compute(_lines(3, 512, 8, self.rng), names),
                          names, 3)
        # Lines 4 and 8 px wide both come down to ELONGATED_WIDTH = 2 px.
        self.assertEqual(small["data.image_size"]["value"], [128, 128])
        self.assertEqual(large["data.image_size"]["value"], [128, 128])

    def test_apply_sets_every_field_and_differences_name_the_overrides(self):
        names = ["background", "lesion"]
        planned = plan.make(fingerprint.compute(_disks(3, 64, 20, self.rng), names),
                            names, 1)
        exp = plan.apply(planned, config.preset("folder"))
        self.assertEqual(plan.differences(planned, exp), {})
        self.assertEqual(exp.model.num_classes, 2)
        self.assertEqual(exp.data.classes, ("background", "lesion"))
        self.assertEqual(exp.preprocessing.channels, 1)
        changed = exp.__class__(model=exp.model, data=exp.data, train=exp.train.__class__(
            **{**exp.train.__dict__, "batch_size": 3}), preprocessing=exp.preprocessing)
        self.assertEqual(plan.differences(planned, changed), {"train.batch_size": 3})
        self.assertIn("overridden", plan.describe(planned, {"train.batch_size": 3}))


if __name__ == "__main__":
    tf.test.main()
