"""Block semantics, pinned against NumPy float64 references."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u.nn import blocks
from r2u.nn import models
from tests import layers_test


def conv_bn_relu_ref(unit, z, relu=True):
    """f(z) of a ConvBN module at inference, in float64."""
    bn = unit.bn
    y = layers_test.conv2d_ref(z, unit.conv.w.numpy().astype(np.float64))
    y = (y - bn.moving_mean.numpy()) / np.sqrt(bn.moving_var.numpy() + bn.epsilon)
    y = y * bn.scale.numpy() + bn.offset.numpy()
    return np.maximum(y, 0) if relu else y


def randomise_bn(module, rng):
    for bn in [m for m in module.submodules if hasattr(m, "moving_var")]:
        c = bn.moving_var.shape[0]
        bn.moving_mean.assign(rng.normal(size=c).astype(np.float32))
        bn.moving_var.assign(rng.uniform(0.5, 2.0, size=c).astype(np.float32))
        bn.scale.assign(rng.uniform(0.5, 1.5, size=c).astype(np.float32))
        bn.offset.assign(rng.normal(0.0, 0.1, size=c).astype(np.float32))


def per_step_unit_ref(unit, x, training):
    """A per_step RecurrentUnit in float64, either recurrence; application k normalises
    with its batch's moments (training) or with moving statistics set k (inference).

    Returns the output and, for training, the (mean, unbiased variance) of each step.
    """
    shared = unit.recurrence == "shared"
    bn = unit.f.bn if shared else unit.bn
    conv = lambda module, z: layers_test.conv2d_ref(z, module.w.numpy().astype(np.float64))
    moments = []

    def norm_relu(z, k):
        if training:
            n = z.size // z.shape[-1]
            mean, var = z.mean((0, 1, 2)), z.var((0, 1, 2))
            moments.append((mean, var * n / (n - 1)))
        else:
            mean, var = (v.numpy().astype(np.float64) for v in bn.moving_stats(k))
        z = (z - mean) / np.sqrt(var + bn.epsilon)
        return np.maximum(z * bn.scale.numpy() + bn.offset.numpy(), 0)
    if shared:
        h = norm_relu(conv(unit.f.conv, x), 0)
        for k in range(1, unit.t + 1):
            h = norm_relu(conv(unit.f.conv, x + h), k)
    else:
        fx = conv(unit.forward, x)
        h = norm_relu(fx, 0)
        for k in range(1, unit.t + 1):
            h = norm_relu(fx + conv(unit.recurrent, h), k)
    return h, moments


def count_convs(module, x, training=False):
    graph = tf.function(lambda x: module(x, training=training)).get_concrete_function(
        tf.TensorSpec(x.shape, x.dtype)).graph
    return sum(op.type == "Conv2D" for op in graph.get_operations())


class BlocksTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)
        self.x = self.rng.normal(size=(2, 5, 5, 3)).astype(np.float32)

    def test_recurrent_unit_feeds_output_back_t_times_with_shared_weights(self):
        unit = blocks.RecurrentUnit(3, t=2, recurrent_bn="shared", rng=self.rng)
        randomise_bn(unit, self.rng)
        x = self.x.astype(np.float64)
        x1 = conv_bn_relu_ref(unit.f, x)          # x1 = f(x)
        for _ in range(2):                        # repeat t: x1 = f(x + x1)
            x1 = conv_bn_relu_ref(unit.f, x + x1)
        self.assertAllClose(unit(self.x, training=False), x1, atol=1e-4)

    def test_paper_recurrence_has_separate_forward_and_recurrent_kernels(self):
        unit = blocks.RecurrentUnit(3, t=2, recurrence="paper", recurrent_bn="shared",
                                    rng=self.rng)
        randomise_bn(unit, self.rng)
        bn = unit.bn
        x = self.x.astype(np.float64)

        def f(z):
            z = (z - bn.moving_mean.numpy()) / np.sqrt(bn.moving_var.numpy() + bn.epsilon)
            return np.maximum(z * bn.scale.numpy() + bn.offset.numpy(), 0)
        wf = layers_test.conv2d_ref(x, unit.forward.w.numpy().astype(np.float64))
        h = f(wf)
        for _ in range(2):
            h = f(wf + layers_test.conv2d_ref(h, unit.recurrent.w.numpy().astype(np.float64)))
        self.assertAllClose(unit(self.x, training=False), h, atol=1e-4)

    @parameterized.product(recurrence=("shared", "paper"),
                           recurrent_bn=("shared", "per_step"))
    def test_t_changes_compute_not_parameters(self, recurrence, recurrent_bn):
        counts, convs = set(), []
        for t in range(4):
            unit = blocks.RecurrentUnit(3, t=t, recurrence=recurrence,
                                        recurrent_bn=recurrent_bn,
                                        rng=np.random.default_rng(0))
            counts.add(models.parameter_count(unit))
            convs.append(count_convs(unit, tf.constant(self.x)))
        self.assertLen(counts, 1)
        self.assertEqual(convs, [1, 2, 3, 4])  # t=2: three applications

    @parameterized.parameters("shared", "paper")
    def test_per_step_unit_matches_float64_reference(self, recurrence):
        unit = blocks.RecurrentUnit(3, t=2, recurrence=recurrence, recurrent_bn="per_step",
                                    rng=self.rng)
        bn = unit.f.bn if recurrence == "shared" else unit.bn
        self.assertEqual(bn.steps, 3)
        bn.scale.assign(self.rng.uniform(0.5, 1.5, size=3).astype(np.float32))
        bn.offset.assign(self.rng.normal(0.0, 0.3, size=3).astype(np.float32))
        bn.momentum = 0.75
        x = self.x.astype(np.float64)

        want, moments = per_step_unit_ref(unit, x, training=True)
        self.assertAllClose(unit(self.x, training=True), want, atol=1e-4)
        self.assertLen(moments, 3)
        for k, (mean, var) in enumerate(moments):  # moving = 0.75 * initial + 0.25 * batch
            moving_mean, moving_var = bn.moving_stats(k)
            self.assertAllClose(moving_mean, 0.25 * mean, atol=1e-5)
            self.assertAllClose(moving_var, 0.75 + 0.25 * var, atol=1e-4)
        # Each step saw a different distribution: its statistics are its own.
        means = [m for m, _ in moments]
        for j in range(3):
            for k in range(j):
                self.assertGreater(np.abs(means[j] - means[k]).max(), 0.05, (j, k))

        want, _ = per_step_unit_ref(unit, x, training=False)
        self.assertAllClose(unit(self.x, training=False), want, atol=1e-4)

    def test_per_step_inference_still_folds_batch_norm_into_the_conv(self):
        unit = blocks.RecurrentUnit(3, t=2, recurrent_bn="per_step", rng=self.rng)
        graph = tf.function(lambda x: unit(x, training=False)).get_concrete_function(
            tf.TensorSpec(self.x.shape, tf.float32)).graph
        # Folded: the conv's output only gets a bias add (then ReLU), never a multiply.
        consumers = [c.type for op in graph.get_operations() if op.type == "Conv2D"
                     for c in op.outputs[0].consumers()]
        self.assertEqual(consumers, ["BiasAdd"] * 3)

    def test_recurrent_residual_block_adds_projected_input(self):
        rrb = blocks.RecurrentResidualBlock(3, 4, t=2, rng=np.random.default_rng(1))
        rb = blocks.RecurrentBlock(3, 4, t=2, rng=np.random.default_rng(1))
        projected = rrb.project(self.x)
        self.assertAllClose(rrb(self.x, training=False),
                            projected + rb(self.x, training=False), atol=1e-5)

    def test_residual_block_uses_1x1_shortcut_only_when_widths_differ(self):
        self.assertIsNotNone(blocks.ResidualBlock(3, 4, rng=self.rng).shortcut)
        same = blocks.ResidualBlock(3, 3, rng=self.rng)
        self.assertIsNone(same.shortcut)
        self.assertAllClose(same(self.x, training=False),
                            self.x + same.body(self.x, training=False))

    def test_conv_block_is_two_conv_bn_relu(self):
        block = blocks.ConvBlock(3, 4, rng=self.rng)
        randomise_bn(block, self.rng)
        want = conv_bn_relu_ref(block.conv_1,
                                conv_bn_relu_ref(block.conv_0, self.x.astype(np.float64)))
        self.assertAllClose(block(self.x, training=False), want, atol=1e-4)

    def test_attention_gate_scales_skip_by_coefficients_in_0_1(self):
        gate = blocks.AttentionGate(3, 3, 2, rng=self.rng)
        g = self.rng.normal(size=self.x.shape).astype(np.float32)
        ratio = gate(g, self.x, training=False) / self.x
        self.assertAllInRange(ratio, 0.0, 1.0)
        # one coefficient per pixel, shared by all channels
        self.assertAllClose(ratio[..., 0], ratio[..., 2], atol=1e-5)

    def test_bad_t_raises(self):
        with self.assertRaisesRegex(ValueError, "t .*>= 0"):
            blocks.RecurrentUnit(3, t=-1, rng=self.rng)

    def test_bad_recurrent_bn_raises(self):
        with self.assertRaisesRegex(ValueError, "recurrent_bn"):
            blocks.RecurrentUnit(3, recurrent_bn="per_layer", rng=self.rng)


if __name__ == "__main__":
    tf.test.main()
