"""r2u.data.fingerprint, distance and components: sizes, intensities and structure
widths checked against hand-drawn shapes and NumPy references."""

import contextlib
import io
import json
import math
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u import errors
from r2u.data import components
from r2u.data import distance
from r2u.data import fingerprint
from r2u.data import prepare
from r2u.data import retina

NAMES = ["background", "lesion"]


def _grid(size):
    """Pixel-centre coordinates (y, x) of a [size, size] image."""
    return np.mgrid[:size, :size] + 0.5


def _disk(size, diameter, centre=None):
    y, x = _grid(size)
    cy, cx = (size / 2, size / 2) if centre is None else centre
    return (y - cy) ** 2 + (x - cx) ** 2 <= (diameter / 2) ** 2


def _line(size, width, diagonal):
    """A band `width` px wide across the image, through a pixel centre if odd."""
    y, x = _grid(size)
    centre = size // 2 + 0.5 * (width % 2)
    across = (y - x) / math.sqrt(2) if diagonal else y - centre
    return np.abs(across) < width / 2


def _example(mask, fov=None, image=None, name="case"):
    mask = np.asarray(mask, np.uint8)
    if image is None:
        image = np.full(mask.shape + (1,), 100, np.uint8)
    return {"id": name, "image": image, "mask": mask,
            "fov": np.ones(mask.shape, np.uint8) if fov is None else fov}


def _result(examples, names=NAMES):
    return fingerprint.compute(examples, names)


class StructureSizeTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters((11, None), (20, None), (41, None), (40, (50.5, 49.5)))
    def test_disk_width_is_its_diameter_and_area_its_area(self, diameter, centre):
        mask = _disk(100, diameter, centre)
        lesion = _result([_example(mask)])["classes"]["lesion"]
        self.assertAllClose(lesion["width"]["median"], diameter, atol=2.0)
        # Digitising moves the area by up to about one pixel per unit of perimeter.
        self.assertAllClose(lesion["component_area"]["median"],
                            math.pi * diameter ** 2 / 4, atol=diameter)
        self.assertEqual(lesion["components_per_image"], 1.0)

    @parameterized.product(width=[1, 3, 8], diagonal=[False, True])
    def test_line_width(self, width, diagonal):
        mask = _line(64, width, diagonal)
        lesion = _result([_example(mask)])["classes"]["lesion"]
        self.assertAllClose(lesion["width"]["median"], width, atol=1.0)
        self.assertAllClose(lesion["width"]["p10"], width, atol=1.0)
        self.assertAllClose(lesion["width"]["p90"], width, atol=1.0)

    def test_axis_lines_measure_their_exact_pixel_width(self):
        for width in range(1, 9):
            widths = distance.medial_widths(_line(40, width, False),
                                               np.ones((40, 40), bool))
            self.assertAllClose(widths, np.full(widths.shape, width), atol=1e-9)

    def test_widths_do_not_depend_on_empty_surroundings(self):
        own = _disk(50, 21, (20.5, 30.5)) | _line(50, 3, True)
        own[:5] = own[-5:] = own[:, :5] = own[:, -5:] = False  # clear of the border
        counted = np.ones(own.shape, bool)
        widths = distance.medial_widths(own, counted)
        counted[-1, 0] = False  # far from all: the measured area is now whole
        self.assertAllEqual(distance.medial_widths(own, counted), widths)
        canvas = np.zeros((90, 70), bool)
        canvas[20:70, 10:60] = own
        self.assertAllEqual(distance.medial_widths(canvas, np.ones((90, 70), bool)),
                            widths)

    def test_the_image_border_does_not_cut_a_structure(self):
        half = _disk(60, 31, centre=(0.5, 30.5))  # centre on the first row
        self.assertLess(half.sum(), math.pi * 31 ** 2 / 4 * 0.6)
        lesion = _result([_example(half)])["classes"]["lesion"]
        self.assertAllClose(lesion["width"]["median"], 31, atol=2.0)

    def test_two_classes_are_reported_separately(self):
        mask = np.zeros((80, 80), np.uint8)
        mask[_disk(80, 30, (25, 25))] = 1
        mask[_line(80, 3, False) & (_grid(80)[1] > 45)] = 2
        result = _result([_example(mask)], ["background", "disk", "vessel"])
        disk, vessel = result["classes"]["disk"], result["classes"]["vessel"]
        self.assertAllClose(disk["width"]["median"], 30, atol=2.0)
        self.assertAllClose(vessel["width"]["median"], 3, atol=1e-6)
        self.assertEqual(vessel["component_area"]["median"], 3 * 35)
        for k, name in enumerate(result["class_names"]):
            self.assertAllClose(result["classes"][name]["pixel_fraction"],
                                np.mean(mask == k))
        self.assertNotIn("width", result["classes"]["background"])

    def test_components_and_presence_over_images(self):
        two = np.zeros((30, 30), np.uint8)
        two[2:5, 2:5] = 1
        two[10:20, 10:12] = 1
        two[5, 5] = 1  # touches the square at a corner: one component, 8-connected
        empty = np.zeros((30, 30), np.uint8)
        lesion = _result([_example(two), _example(empty)])["classes"]["lesion"]
        self.assertEqual(lesion["images_present"], 1)
        self.assertEqual(lesion["components_per_image"], 2.0)
        self.assertEqual(lesion["component_area"]["median"], (10 + 20) / 2)
        self.assertEqual(lesion["width"]["per_case"][1], None)


class ImageTest(tf.test.TestCase):

    def _tiny_set(self):
        rng = np.random.default_rng(3)
        examples = []
        for i, (h, w) in enumerate(((7, 9), (12, 5), (6, 6))):
            fov = (rng.random((h, w)) < 0.7).astype(np.uint8)
            fov[0, 0] = 1
            examples.append({"id": f"c{i}", "fov": fov,
                             "image": rng.integers(0, 256, (h, w, 2), np.uint8),
                             "mask": rng.integers(0, 2, (h, w)).astype(np.uint8)})
        return examples

    def test_intensity_statistics_equal_numpy_on_a_tiny_set(self):
        examples = self._tiny_set()
        result = _result(examples)
        for c in range(2):
            pixels = np.concatenate([e["image"][..., c][e["fov"] > 0]
                                     for e in examples]).astype(np.float64)
            stats = result["intensity"][c]
            self.assertAllClose(stats["mean"], pixels.mean())
            self.assertAllClose(stats["std"], pixels.std())
            for key, p in (("p00_5", 0.5), ("p50", 50), ("p99_5", 99.5)):
                self.assertAllClose(stats[key], np.percentile(pixels, p))
            self.assertEqual((stats["min"], stats["max"]), (pixels.min(), pixels.max()))
            self.assertAllClose(stats["per_image_std"], np.median(
                [e["image"][..., c][e["fov"] > 0].std() for e in examples]))

    def test_sizes(self):
        result = _result(self._tiny_set())
        self.assertEqual((result["cases"], result["channels"]), (3, 2))
        self.assertEqual(result["sizes"], [[7, 9], [12, 5], [6, 6]])
        self.assertEqual(result["median_size"], [7.0, 6.0])
        self.assertEqual(result["min_size"], [6, 5])
        self.assertEqual(result["max_size"], [12, 9])

    def test_pixels_outside_the_field_of_view_are_not_counted(self):
        mask = np.zeros((20, 20), np.uint8)
        mask[:, :8] = 1  # class 1 fills the uncounted left part, and two more columns
        fov = np.ones((20, 20), np.uint8)
        fov[:, :6] = 0
        image = np.full((20, 20, 1), 40, np.uint8)
        image[:, :6] = 255
        image[:, 15:] = 60
        result = _result([_example(mask, fov, image)])
        self.assertAllClose(result["fov_fraction"], 14 / 20)
        self.assertAllClose(result["classes"]["lesion"]["pixel_fraction"], 2 / 14)
        self.assertAllClose(result["classes"]["background"]["pixel_fraction"],
                            12 / 14)
        stats = result["intensity"][0]
        self.assertEqual(stats["max"], 60.0)
        self.assertAllClose(stats["mean"], (9 * 40 + 5 * 60) / 14)
        self.assertEqual(result["classes"]["lesion"]["component_area"]["median"], 40)

    def test_big_images_are_subsampled_with_a_fixed_seed(self):
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (150, 150, 1), np.uint8)
        example = _example(np.zeros((150, 150)), image=image)
        first, again = _result([example]), _result([example])
        self.assertEqual(first["intensity"], again["intensity"])
        exact = image.astype(np.float64)
        self.assertNotEqual(first["intensity"][0]["mean"], exact.mean())
        self.assertAllClose(first["intensity"][0]["mean"], exact.mean(), atol=2.0)

    def test_a_big_image_is_measured_downscaled_close_to_full_size(self):
        size = 2048
        mask = np.zeros((size, size), np.uint8)
        mask[_disk(size, 301, (700.5, 700.5))] = 1
        mask[_line(size, 24, False) & (_grid(size)[1] > 1200)] = 2
        counted = np.ones((size, size), bool)
        small, small_fov, scale = fingerprint._downscaled(mask, counted)
        self.assertEqual((small.shape, small_fov.shape, scale),
                         ((1024, 1024), (1024, 1024), 2.0))
        self.assertAllEqual(small, mask[1::2, 1::2])  # nearest: centres of 2x2 cells
        names = ["background", "disk", "band"]
        result = _result([_example(mask)], names)
        for k, name in ((1, "disk"), (2, "band")):
            full = np.median(distance.medial_widths(mask == k, counted))
            # Two full-size pixels per pixel of error at half size.
            self.assertAllClose(result["classes"][name]["width"]["median"], full,
                                atol=4.0)
            self.assertAllClose(result["classes"][name]["component_area"]["median"],
                                np.sum(mask == k), rtol=0.01)

    def test_bad_examples_are_refused_by_name(self):
        wanted = re.escape("odd: mask values 2..2 are not all classes 0..1")
        with self.assertRaisesRegex(errors.DataError, f"^{wanted}$"):
            _result([_example(np.full((4, 4), 2), name="odd")])
        bad = _example(np.zeros((4, 4)), name="small")
        bad["fov"] = np.ones((4, 5), np.uint8)
        with self.assertRaisesRegex(errors.DataError, "^small: image is"):
            _result([bad])


class SlopeTest(tf.test.TestCase):

    def _slope(self, diameter_of):
        examples = [_example(_disk(side, diameter_of(side))) for side in
                    (64, 96, 128, 192, 256)]
        return _result(examples)["slope_width_vs_size"]

    def test_structures_scaling_with_the_frame_give_slope_one(self):
        self.assertAllClose(self._slope(lambda side: side / 4), 1.0, atol=0.1)

    def test_fixed_pixel_spacing_gives_slope_zero(self):
        self.assertAllClose(self._slope(lambda side: 21), 0.0, atol=0.1)

    def test_no_slope_when_sizes_barely_vary(self):
        examples = [_example(_disk(side, d)) for side, d in ((100, 10), (104, 30))]
        self.assertIsNone(_result(examples)["slope_width_vs_size"])

    def test_the_thinnest_class_decides(self):
        examples = []
        for side in (64, 128, 256):
            mask = _disk(side, side / 2).astype(np.uint8)  # thick, scales
            mask[_line(side, 3, False) & ~_disk(side, side / 2 + 4)] = 2  # fixed
            examples.append(_example(mask))
        result = _result(examples, ["background", "blob", "thread"])
        self.assertAllClose(result["slope_width_vs_size"], 0.0, atol=0.05)


class FileTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def test_json_round_trip(self):
        result = _result([_example(_disk(40, 11)), _example(np.zeros((30, 20)))])
        path = os.path.join(self.dir, "fingerprint.json")
        fingerprint.write(path, result)
        self.assertEqual(fingerprint.load(path), result)
        with open(path, encoding="utf-8") as f:
            self.assertEqual(json.loads(f.read()), result)
        self.assertEqual(os.listdir(self.dir), ["fingerprint.json"])

    def test_load_refuses_other_files_by_name(self):
        path = os.path.join(self.dir, "other.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write("[1, 2]")
        with self.assertRaisesRegex(errors.DataError, f"^{path}: not a fingerprint"):
            fingerprint.load(path)
        with self.assertRaisesRegex(errors.DataError, "cannot read fingerprint"):
            fingerprint.load(os.path.join(self.dir, "missing.json"))


class ComponentsTest(tf.test.TestCase):

    DRAWING = ("##..#.",
               "#..#..",
               "...#.#",
               "##...#",
               ".#.#..")

    def test_labels_of_a_hand_drawn_mask(self):
        mask = np.array([[c == "#" for c in row] for row in self.DRAWING])
        expected8 = [[1, 1, 0, 0, 2, 0],
                     [1, 0, 0, 2, 0, 0],
                     [0, 0, 0, 2, 0, 3],
                     [4, 4, 0, 0, 0, 3],
                     [0, 4, 0, 5, 0, 0]]
        labels, count = components.label(mask, diagonal=True)
        self.assertEqual((labels.dtype, count), (np.int32, 5))
        self.assertAllEqual(labels, expected8)
        expected4 = [[1, 1, 0, 0, 2, 0],
                     [1, 0, 0, 3, 0, 0],
                     [0, 0, 0, 3, 0, 4],
                     [5, 5, 0, 0, 0, 4],
                     [0, 5, 0, 6, 0, 0]]
        labels, count = components.label(mask, diagonal=False)
        self.assertEqual(count, 6)
        self.assertAllEqual(labels, expected4)
        self.assertAllEqual(components.areas(mask, diagonal=False), [3, 1, 2, 2, 3, 1])

    def test_a_spiral_is_one_component(self):
        spiral = np.zeros((21, 21), bool)
        y = x = 10
        dy, dx, step = 0, 1, 1
        while 0 <= y < 21 and 0 <= x < 21:
            for _ in range(2):
                for _ in range(step):
                    if 0 <= y < 21 and 0 <= x < 21:
                        spiral[y, x] = True
                    y, x = y + dy, x + dx
                dy, dx = dx, -dy
            step += 2
        labels, count = components.label(spiral, diagonal=False)
        self.assertEqual(count, 1)
        self.assertAllEqual(labels > 0, spiral)

    def test_random_masks_against_a_flood_fill(self):
        rng = np.random.default_rng(7)
        for _ in range(40):
            mask = rng.random(tuple(rng.integers(1, 16, 2))) < rng.random()
            for diagonal in (False, True):
                labels, count = components.label(mask, diagonal)
                expected = _flood_fill(mask, diagonal)
                self.assertAllEqual(labels, expected)
                self.assertEqual(count, expected.max(initial=0))


def _flood_fill(mask, diagonal):
    """Reference labelling: breadth-first search from pixels in raster order."""
    labels = np.zeros(mask.shape, np.int32)
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)] if diagonal else []
    count = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        queue = [start]
        while queue:
            y, x = queue.pop()
            for dy, dx in steps:
                q = (y + dy, x + dx)
                if (0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1]
                        and mask[q] and not labels[q]):
                    labels[q] = count
                    queue.append(q)
    return labels


class DistanceTest(tf.test.TestCase):

    def test_random_masks_against_brute_force(self):
        rng = np.random.default_rng(11)
        for _ in range(60):
            inside = rng.random(tuple(rng.integers(1, 20, 2))) < rng.random()
            height, width = inside.shape
            outside = np.argwhere(~inside).astype(np.float64)  # [N, 2]
            pixels = np.argwhere(np.ones(inside.shape)).astype(np.float64)
            if outside.size:
                squared = ((pixels[:, None] - outside[None]) ** 2).sum(-1).min(1)
                expected = squared.reshape(inside.shape)
            else:
                expected = np.full(inside.shape, float(height + width) ** 2)
            self.assertAllClose(distance.squared(inside), expected, atol=1e-9)
            self.assertAllClose(distance.euclidean(inside), np.sqrt(expected))

    def test_wide_and_tall_masks_agree(self):
        inside = np.random.default_rng(2).random((9, 31)) < 0.8
        self.assertAllClose(distance.squared(inside), distance.squared(inside.T).T)


class DriveTest(tf.test.TestCase):

    def test_vessels_are_a_few_pixels_wide(self):
        root = os.path.join(prepare.data_root(), "DRIVE")
        if not os.path.isdir(root):
            self.skipTest(f"data not found at {root}")
        entries = retina.SPLITS["drive"](root, None)["train"][:3]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = fingerprint.compute(map(retina.read_example, entries),
                                         ["background", "vessel"])
        self.assertEqual((out.getvalue(), err.getvalue()), ("", ""))
        vessel = result["classes"]["vessel"]
        # DRIVE's 1-px capillaries hold about half the medial pixels (median
        # 1.83 px on these cases); the trunks are several pixels wide.
        self.assertBetween(vessel["width"]["median"], 1.0, 6.0)
        self.assertBetween(vessel["width"]["p90"], 3.0, 12.0)
        self.assertBetween(vessel["pixel_fraction"], 0.05, 0.2)
        self.assertEqual(result["sizes"], [[584, 565]] * 3)


if __name__ == "__main__":
    tf.test.main()
