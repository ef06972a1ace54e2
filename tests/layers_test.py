"""Primitive layers against float64 NumPy references."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u.nn import layers


def conv2d_ref(x, w, b=None):
    """Direct 'SAME' stride-1 convolution in float64 (cross-correlation, as TF)."""
    k = w.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    n, h, wd, _ = x.shape
    out = np.zeros((n, h, wd, w.shape[3]))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nhwc,co->nhwo", xp[:, i:i + h, j:j + wd], w[i, j])
    return out if b is None else out + b


def conv_transpose_ref(x, w):
    """Stride-2 3x3 transposed conv with TF's SAME alignment, by scattering (float64)."""
    n, h, wd, _ = x.shape
    k = w.shape[0]
    out = np.zeros((n, 2 * h + k, 2 * wd + k, w.shape[2]))
    for i in range(h):
        for j in range(wd):
            out[:, 2 * i:2 * i + k, 2 * j:2 * j + k] += np.einsum(
                "nc,abpc->nabp", x[:, i, j], w)
    pad = (k - 2) // 2
    return out[:, pad:pad + 2 * h, pad:pad + 2 * wd]


class LayersTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)

    @parameterized.parameters(1, 3)
    def test_conv_matches_float64_reference(self, k):
        conv = layers.Conv2D(3, 5, k, rng=self.rng)
        conv.b.assign(self.rng.normal(size=5).astype(np.float32))
        x = self.rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
        want = conv2d_ref(x.astype(np.float64), conv.w.numpy().astype(np.float64),
                          conv.b.numpy())
        self.assertAllClose(conv(x), want, atol=1e-5)

    @parameterized.parameters(True, False)
    def test_folded_conv_is_the_scaled_and_shifted_conv(self, use_bias):
        conv = layers.Conv2D(3, 4, rng=self.rng, use_bias=use_bias)
        if use_bias:
            conv.b.assign(self.rng.normal(size=4).astype(np.float32))
        scale = self.rng.uniform(0.2, 3.0, size=4).astype(np.float32)
        shift = self.rng.normal(size=4).astype(np.float32)
        x = self.rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
        b = conv.b.numpy() if use_bias else None
        want = conv2d_ref(x.astype(np.float64), conv.w.numpy().astype(np.float64), b)
        self.assertAllClose(conv.folded(x, scale, shift), want * scale + shift, atol=1e-5)

    def test_conv_transpose_doubles_and_matches_reference(self):
        up = layers.ConvTranspose2D(4, 2, use_bias=False, rng=self.rng)
        x = self.rng.normal(size=(1, 5, 3, 4)).astype(np.float32)
        y = up(x)
        self.assertEqual(y.shape, (1, 10, 6, 2))
        self.assertAllClose(y, conv_transpose_ref(x.astype(np.float64),
                                                  up.w.numpy().astype(np.float64)),
                            atol=1e-5)

    def test_batch_norm_training_normalises_and_updates_moving_stats(self):
        bn = layers.BatchNorm(3, momentum=0.9, epsilon=1e-3)
        x = self.rng.normal(2.0, 3.0, size=(4, 5, 5, 3)).astype(np.float32)
        y = bn(x, training=True)
        flat = x.reshape(-1, 3).astype(np.float64)
        want = (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-3)
        self.assertAllClose(np.reshape(y, (-1, 3)), want, atol=1e-4)
        self.assertAllClose(bn.moving_mean, 0.1 * flat.mean(0), atol=1e-5)
        self.assertAllClose(bn.moving_var, 0.9 + 0.1 * flat.var(0, ddof=1), atol=1e-4)

    def test_batch_norm_inference_uses_moving_stats_and_changes_nothing(self):
        bn = layers.BatchNorm(2, epsilon=1e-3)
        bn.moving_mean.assign([1.0, -1.0])
        bn.moving_var.assign([4.0, 0.25])
        bn.scale.assign([2.0, 0.5])
        bn.offset.assign([0.1, -0.3])
        x = self.rng.normal(size=(2, 3, 3, 2)).astype(np.float32)
        y = bn(x, training=False)
        want = ((x - np.array([1.0, -1.0])) / np.sqrt(np.array([4.0, 0.25]) + 1e-3)
                * np.array([2.0, 0.5]) + np.array([0.1, -0.3]))
        self.assertAllClose(y, want, atol=1e-5)
        self.assertAllClose(bn.moving_mean, [1.0, -1.0])
        self.assertAllClose(bn.moving_var, [4.0, 0.25])

    def test_batch_norm_steps_keep_separate_moving_statistics(self):
        bn = layers.BatchNorm(3, steps=3, momentum=0.0, epsilon=1e-3, name="bn")
        self.assertEqual(sorted(v.name for v in bn.variables),
                         ["bn/moving_mean_0:0", "bn/moving_mean_1:0", "bn/moving_mean_2:0",
                          "bn/moving_var_0:0", "bn/moving_var_1:0", "bn/moving_var_2:0",
                          "bn/offset:0", "bn/scale:0"])
        self.assertLen(bn.trainable_variables, 2)  # scale and offset shared by the steps
        x = self.rng.normal(2.0, 3.0, size=(4, 5, 5, 3)).astype(np.float32)
        y = bn(x, training=True, step=1)
        flat = x.reshape(-1, 3).astype(np.float64)
        mean, var = bn.moving_stats(1)
        self.assertAllClose(mean, flat.mean(0), atol=1e-5)
        self.assertAllClose(var, flat.var(0, ddof=1), atol=1e-4)
        for step in (0, 2):  # untouched
            self.assertAllEqual(bn.moving_stats(step)[0], np.zeros(3))
            self.assertAllEqual(bn.moving_stats(step)[1], np.ones(3))
        # Inference of step 1 with the biased variance reproduces the training output.
        var.assign(var * (flat.shape[0] - 1) / flat.shape[0])
        self.assertAllClose(bn(x, training=False, step=1), y, atol=1e-5)
        self.assertAllClose(bn(x, training=False, step=0),
                            x / np.sqrt(1.0 + 1e-3), atol=1e-5)

    @parameterized.parameters(-1, 3, 1.0)
    def test_batch_norm_bad_step_raises(self, step):
        bn = layers.BatchNorm(2, steps=3)
        with self.assertRaisesRegex(ValueError, "step must be"):
            bn(tf.ones([1, 2, 2, 2]), training=False, step=step)

    def test_batch_norm_bad_steps_raise(self):
        with self.assertRaisesRegex(ValueError, "steps"):
            layers.BatchNorm(2, steps=0)

    def test_batch_norm_inference_graph_has_no_fused_batch_norm(self):
        # grappler would fuse it with the conv and ReLU into a oneDNN kernel that is 13x
        # slower on whole images (benchmarks/NOTES.md).
        conv, bn = layers.Conv2D(1, 4, rng=self.rng), layers.BatchNorm(4)
        fn = tf.function(lambda x: tf.nn.relu(bn(conv(x), training=False)))
        graph = fn.get_concrete_function(tf.TensorSpec([1, 8, 8, 1])).graph
        ops = {op.type for op in graph.get_operations()}
        self.assertIn("Conv2D", ops)
        self.assertFalse({o for o in ops if o.startswith("FusedBatchNorm")}, ops)

    @parameterized.parameters("bfloat16", "float16")
    def test_low_precision_keeps_float32_variables(self, dtype):
        bn = layers.BatchNorm(4)
        conv = layers.Conv2D(2, 4, rng=self.rng)
        x = tf.cast(self.rng.normal(size=(2, 4, 4, 2)), dtype)
        y = bn(conv(x), training=True)
        self.assertEqual(y.dtype, tf.as_dtype(dtype))
        for v in (conv.w, bn.scale, bn.moving_mean, bn.moving_var):
            self.assertEqual(v.dtype, tf.float32)

    def test_dropout_is_identity_at_inference_and_seeded_in_training(self):
        x = tf.ones([2, 8, 8, 3])
        drop = layers.Dropout(0.5, tf.random.Generator.from_seed(1))
        self.assertAllEqual(drop(x, training=False), x)
        y = drop(x, training=True).numpy()
        self.assertTrue(set(np.unique(y)) <= {0.0, 2.0})
        self.assertBetween((y == 0).mean(), 0.3, 0.7)
        again = layers.Dropout(0.5, tf.random.Generator.from_seed(1))(x, training=True)
        self.assertAllEqual(y, again)

    def test_max_pool_halves(self):
        x = tf.reshape(tf.range(16, dtype=tf.float32), [1, 4, 4, 1])
        self.assertAllEqual(layers.max_pool(x)[0, ..., 0], [[5, 7], [13, 15]])

    @parameterized.parameters(dict(in_channels=0), dict(out_channels=-2),
                              dict(kernel_size=0))
    def test_bad_shapes_raise(self, **bad):
        args = dict(in_channels=2, out_channels=2, kernel_size=3)
        args.update(bad)
        with self.assertRaisesRegex(ValueError, list(bad)[0]):
            layers.Conv2D(rng=self.rng, **args)


if __name__ == "__main__":
    tf.test.main()
