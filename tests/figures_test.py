"""r2u.figures: one colour code for overlays and error maps."""

import numpy as np
import tensorflow as tf

from r2u import figures


class OverlayTest(tf.test.TestCase):

    def test_colour_code_with_truth_and_fov(self):
        predicted = np.array([[1, 1, 0, 0, 1]], bool)
        truth = np.array([[1, 0, 1, 0, 1]], bool)
        fov = np.array([[1, 1, 1, 1, 0]], bool)
        black = np.zeros((1, 5, 1), np.uint8)
        got = figures.overlay(black, predicted, truth, fov, opacity=1.0)
        self.assertAllEqual(got[0], [figures.TRUE_POSITIVE, figures.FALSE_POSITIVE,
                                     figures.FALSE_NEGATIVE, (0, 0, 0),
                                     figures.OUTSIDE_FOV])
        self.assertEqual(figures.TRUE_POSITIVE, (0, 255, 0))

    def test_without_truth_predicted_pixels_are_tinted_green(self):
        image = np.full((1, 2, 3), 100, np.uint8)
        got = figures.overlay(image, np.array([[True, False]]))
        self.assertAllEqual(got[0], [(50, 178, 50), (100, 100, 100)])  # 0.5 green

    def test_opacity_and_dim(self):
        image = np.full((1, 2, 1), 100, np.uint8)  # gray becomes RGB
        got = figures.overlay(image, np.array([[True, False]]),
                              np.array([[False, False]]), opacity=0.6, dim=0.6)
        self.assertAllEqual(got[0], [(193, 40, 40), (60, 60, 60)])  # red, dimmed

    def test_gray_and_to_rgb(self):
        self.assertAllEqual(figures.gray(np.array([[0.0, 1.0, 2.0]]))[0],
                            [(0, 0, 0), (255, 255, 255), (255, 255, 255)])
        self.assertEqual(figures.to_rgb(np.zeros((2, 3, 4))).shape, (2, 3, 3))


if __name__ == "__main__":
    tf.test.main()
