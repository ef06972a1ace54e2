"""Tests for r2u.training.losses: each loss vs a NumPy float64 reference (binary, as
before K classes, and K = 2, 3, 5); FOV and ignore label; gradients."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from r2u.training import losses

_SMOOTH = 1.0  # the documented smoothing term, restated here on purpose
_WEIGHTS = {"none": None, "explicit": (0.3, 2.5)}
_K_WEIGHTS = (0.3, 2.5, 1.7, 0.6, 4.0)  # the first K are the class weights
_IGNORE = 255  # an ignore label outside [0, K), as nnU-Net's datasets use


def _inputs(seed=0, shape=(3, 5, 6)):
    """Random logits/labels and a FOV that drops about a third of the pixels."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, shape + (2,)).astype(np.float32)
    labels = (rng.random(shape) < 0.4).astype(np.int32)
    fov = (rng.random(shape) < 0.65).astype(np.float32)
    return logits, labels, fov


def _reference(name, logits, labels, fov, class_weights):
    """float64 NumPy value of loss `name`; fov None counts every pixel."""
    x = logits.astype(np.float64)
    fov = np.ones(labels.shape) if fov is None else fov.astype(np.float64)
    log_p = x - x.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    nll = -np.where(labels == 1, log_p[..., 1], log_p[..., 0])
    p, y = np.exp(log_p[..., 1]), labels.astype(np.float64)

    def xent(cw):
        w = np.ones(labels.shape) if cw is None else np.where(labels == 1, cw[1], cw[0])
        return (nll * w * fov).sum() / max(fov.sum(), 1.0)

    return _sum_terms(name, xent, class_weights, p, y, fov, whole=None)


def _sum_terms(name, xent, class_weights, p, y, f, whole):
    """The sum of the terms of loss `name`: `xent(weights)`, and 1 - the soft Dice or
    Jaccard of probabilities `p` against targets `y` over the pixels weighed by `f`,
    over axes `whole` for the batch, (1, 2) per image (averaged)."""

    def sums(axis):
        return (p * y * f).sum(axis), (p * f).sum(axis), (y * f).sum(axis)

    def dice(axis):
        i, sp, sy = sums(axis)
        return np.mean(1.0 - (2 * i + _SMOOTH) / (sp + sy + _SMOOTH))

    def jaccard(axis):
        i, sp, sy = sums(axis)
        return np.mean(1.0 - (i + _SMOOTH) / (sp + sy - i + _SMOOTH))

    terms = {"wce": lambda: xent(class_weights), "ce": lambda: xent(None),
             "dice": lambda: dice(whole), "image_dice": lambda: dice((1, 2)),
             "image_jaccard": lambda: jaccard((1, 2))}
    return sum(terms[part]() for part in name.split("+"))


def _inputs_k(k, seed=0, shape=(3, 6, 5)):
    """Random K-class logits/labels (every class present) and a FOV of ~2/3."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, shape + (k,)).astype(np.float32)
    labels = rng.integers(0, k, shape).astype(np.int32)
    fov = (rng.random(shape) < 0.65).astype(np.float32)
    return logits, labels, fov


def _reference_k(name, logits, labels, fov, class_weights):
    """float64 NumPy value of loss `name` for K classes, written from the definition:
    mean over foreground classes 1..K-1 of 1 - soft Dice/Jaccard, FOV pixels only."""
    k = logits.shape[-1]
    x = logits.astype(np.float64)
    fov = np.ones(labels.shape) if fov is None else fov.astype(np.float64)
    labels = np.where(fov > 0, labels, 0)  # any label outside the FOV, even 255
    log_p = x - x.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]

    def xent(cw):
        w = np.ones(k) if cw is None else np.asarray(cw, np.float64)
        return (nll * w[labels] * fov).sum() / max(fov.sum(), 1.0)

    p = np.exp(log_p)[..., 1:]
    y = (labels[..., None] == np.arange(1, k)).astype(np.float64)
    f = fov[..., None]

    # Per foreground class: sums over (0, 1, 2) are [K - 1], over (1, 2) [B, K - 1].
    return _sum_terms(name, xent, class_weights, p, y, f, whole=(0, 1, 2))


def _loss(name, logits, labels, fov=None, class_weights=None):
    fov = None if fov is None else tf.constant(fov)
    loss = losses.loss_fn(name, class_weights)
    return loss(tf.constant(logits), tf.constant(labels), fov).numpy()


class LossesTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.product(name=losses.LOSSES, weights=tuple(_WEIGHTS),
                           use_fov=(True, False))
    def test_matches_numpy_reference(self, name, weights, use_fov):
        logits, labels, fov = _inputs()
        fov = fov if use_fov else None
        got = _loss(name, logits, labels, fov, _WEIGHTS[weights])
        self.assertEqual(got.dtype, np.float32)
        self.assertEqual(got.shape, ())
        want = _reference(name, logits, labels, fov, _WEIGHTS[weights])
        self.assertAllClose(got, want, rtol=1e-5, atol=1e-6)

    @parameterized.parameters(*losses.LOSSES)
    def test_pixels_outside_fov_do_not_count(self, name):
        logits, labels, fov = _inputs(seed=1)
        outside = fov == 0
        self.assertTrue(outside.any() and (~outside).any())
        noisy = logits + np.where(outside[..., None], [-30.0, 30.0], 0.0)
        noisy = noisy.astype(np.float32)
        flipped = np.where(outside, 1 - labels, labels)
        base = _loss(name, logits, labels, fov, (0.3, 2.5))
        self.assertAllClose(_loss(name, noisy, flipped, fov, (0.3, 2.5)), base,
                            rtol=1e-6, atol=0.0)
        # ... while the same change inside the FOV does count.
        self.assertNotAllClose(_loss(name, noisy, flipped, None, (0.3, 2.5)),
                               _loss(name, logits, labels, None, (0.3, 2.5)))

    def test_ce_is_wce_with_unit_weights_and_ignores_class_weights(self):
        logits, labels, fov = _inputs(seed=2)
        unit = _loss("wce", logits, labels, fov, (1.0, 1.0))
        self.assertAllClose(_loss("ce", logits, labels, fov, (0.3, 2.5)), unit,
                            rtol=1e-6)
        self.assertAllClose(_loss("ce", logits, labels, fov, None), unit, rtol=1e-6)
        self.assertNotAllClose(_loss("wce", logits, labels, fov, (0.3, 2.5)), unit)

    @parameterized.parameters("wce", "ce")
    def test_sum_losses_add_their_terms(self, xent):
        logits, labels, fov = _inputs(seed=3)
        args = (logits, labels, fov, (0.3, 2.5))
        self.assertAllClose(_loss(xent + "+dice", *args),
                            _loss(xent, *args) + _loss("dice", *args), rtol=1e-6)

    def test_per_image_losses_weigh_small_lesions_like_large_ones(self):
        # Image 0: large lesion, well predicted. Image 1: a 2-pixel lesion, missed.
        labels = np.zeros((2, 8, 8), np.int32)
        labels[0, :6, :6] = 1
        labels[1, 0, :2] = 1
        logits = np.zeros((2, 8, 8, 2), np.float32)
        logits[0, ..., 1] = np.where(labels[0] == 1, 4.0, -4.0)
        logits[1, ..., 1] = -4.0
        batch = _loss("dice", logits, labels)
        for name in ("image_dice", "image_jaccard"):
            per_image = _loss(name, logits, labels)
            self.assertGreater(per_image, batch + 0.2, name)
            self.assertAllClose(per_image, _reference(name, logits, labels, None, None),
                                rtol=1e-5)

    @parameterized.parameters("dice", "image_dice", "image_jaccard")
    def test_perfect_prediction_scores_zero_even_with_an_empty_mask(self, name):
        labels = np.zeros((2, 8, 8), np.int32)
        labels[0, 2:5, 3:7] = 1  # image 1 has no foreground at all
        logits = np.stack([np.zeros(labels.shape), 40.0 * (2 * labels - 1)], -1)
        logits = logits.astype(np.float32)
        fov = np.ones(labels.shape, np.float32)
        self.assertLess(abs(_loss(name, logits, labels, fov)), 1e-5)
        # A missed lesion is not ~0: the check above can fail.
        self.assertGreater(_loss(name, -logits, labels, fov), 0.5)

    @parameterized.parameters(*losses.LOSSES)
    def test_gradients_finite_and_zero_outside_fov(self, name):
        logits, labels, fov = _inputs(seed=4)
        fov[0] = 0.0  # one image entirely outside the FOV
        x = tf.constant(logits)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = losses.loss_fn(name, (0.3, 2.5))(x, tf.constant(labels),
                                                   tf.constant(fov))
        grad = tape.gradient(loss, x).numpy()
        self.assertTrue(np.isfinite(grad).all())
        self.assertAllEqual(grad[fov == 0], np.zeros_like(grad[fov == 0]))
        self.assertGreater(np.abs(grad[fov == 1]).max(), 0.0)

    @parameterized.product(name=losses.LOSSES, k=(2, 3, 5), use_fov=(True, False))
    def test_k_classes_match_numpy_reference(self, name, k, use_fov):
        logits, labels, fov = _inputs_k(k, seed=k)
        fov = fov if use_fov else None
        got = _loss(name, logits, labels, fov, _K_WEIGHTS[:k])
        self.assertEqual(got.shape, ())
        want = _reference_k(name, logits, labels, fov, _K_WEIGHTS[:k])
        self.assertAllClose(got, want, rtol=1e-5, atol=1e-6)

    def test_k_class_reference_for_two_classes_is_the_binary_one(self):
        logits, labels, fov = _inputs(seed=5)
        for name in losses.LOSSES:
            self.assertAllClose(_reference_k(name, logits, labels, fov, (0.3, 2.5)),
                                _reference(name, logits, labels, fov, (0.3, 2.5)),
                                rtol=1e-12, msg=name)

    @parameterized.parameters(*losses.LOSSES)
    def test_ignore_label_pixels_do_not_count(self, name):
        logits, labels, fov = _inputs_k(3, seed=6)
        ignored = fov == 0
        rng = np.random.default_rng(7)
        noise = rng.normal(0.0, 30.0, logits.shape)
        noisy = np.where(ignored[..., None], noise, logits)
        marked = np.where(ignored, _IGNORE, labels).astype(np.int32)
        x = tf.constant(noisy.astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = losses.loss_fn(name, _K_WEIGHTS[:3])(x, tf.constant(marked),
                                                      tf.constant(fov))
        # The clean reference: fails if the ignored pixels' logits or labels count.
        want = _reference_k(name, logits, labels, fov, _K_WEIGHTS[:3])
        self.assertAllClose(loss, want, rtol=1e-5, atol=1e-6)
        grad = tape.gradient(loss, x).numpy()
        self.assertTrue(np.isfinite(grad).all())
        self.assertAllEqual(grad[ignored], np.zeros_like(grad[ignored]))
        self.assertGreater(np.abs(grad[~ignored]).max(), 0.0)

    def test_class_absent_from_an_image(self):
        labels = np.zeros((2, 8, 8), np.int32)
        labels[0, :3, :4] = 1  # image 0: 12 px of class 1, 52 background, no class 2
        labels[1, :4, :] = 1  # image 1: 32 px of class 1, 8 of class 2, 24 background
        labels[1, 4:, :2] = 2
        perfect = (40.0 * np.eye(3)[labels]).astype(np.float32)
        for name in ("dice", "image_dice", "image_jaccard"):
            self.assertLess(_loss(name, perfect, labels), 1e-5, name)  # absent: ~1
        # Image 0 predicts the absent class 2 on its 52 background pixels.
        wrong = perfect.copy()
        wrong[0][labels[0] == 0] = 40.0 * np.eye(3)[2]
        # Class 2's terms by hand: image 0 1 - (0 + 1) / (52 + 0 + 1), image 1 ~0;
        # pooled 1 - (2 * 8 + 1) / (60 + 8 + 1). Class 1 is right everywhere.
        hand = {"image_dice": (52 / 53) / 4, "image_jaccard": (52 / 53) / 4,
                "dice": (52 / 69) / 2}
        for name, value in hand.items():
            got = _loss(name, wrong, labels)
            self.assertAllClose(got, value, atol=1e-5, msg=name)
            self.assertAllClose(got, _reference_k(name, wrong, labels, None, None),
                                rtol=1e-5, msg=name)

    @parameterized.product(name=losses.LOSSES, k=(3, 5))
    def test_k_class_gradients_finite(self, name, k):
        logits, labels, fov = _inputs_k(k, seed=8)
        x = tf.constant(logits)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = losses.loss_fn(name, _K_WEIGHTS[:k])(x, tf.constant(labels),
                                                      tf.constant(fov))
        grad = tape.gradient(loss, x).numpy()
        self.assertTrue(np.isfinite(grad).all())
        self.assertGreater(np.abs(grad).max(), 0.0)

    @parameterized.parameters(*losses.LOSSES)
    def test_xla_matches_eager_with_an_ignore_label(self, name):
        logits, labels, fov = _inputs_k(3, seed=9)
        labels = np.where(fov == 0, _IGNORE, labels).astype(np.int32)
        loss = losses.loss_fn(name, _K_WEIGHTS[:3])
        args = (tf.constant(logits), tf.constant(labels), tf.constant(fov))
        self.assertAllClose(tf.function(loss, jit_compile=True)(*args), loss(*args),
                            rtol=1e-5)

    def test_class_weights_must_match_the_classes(self):
        logits, labels, fov = _inputs_k(3)
        with self.assertRaisesRegex(ValueError, "2 class weights for 3 classes"):
            _loss("wce", logits, labels, fov, (0.3, 2.5))

    @parameterized.parameters("bce", "dice+wce", "jaccard", "", "wce+")
    def test_unknown_name_raises(self, name):
        with self.assertRaisesRegex(ValueError, "unknown loss"):
            losses.loss_fn(name)


if __name__ == "__main__":
    tf.test.main()
