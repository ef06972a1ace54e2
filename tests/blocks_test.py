"""Block semantics, pinned against NumPy float64 references."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u import blocks
from r2u import models
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
        unit = blocks.RecurrentUnit(3, t=2, rng=self.rng)
        randomise_bn(unit, self.rng)
        x = self.x.astype(np.float64)
        x1 = conv_bn_relu_ref(unit.f, x)          # x1 = f(x)
        for _ in range(2):                        # repeat t: x1 = f(x + x1)
            x1 = conv_bn_relu_ref(unit.f, x + x1)
        self.assertAllClose(unit(self.x, training=False), x1, atol=1e-4)

    def test_paper_recurrence_has_separate_forward_and_recurrent_kernels(self):
        unit = blocks.RecurrentUnit(3, t=2, recurrence="paper", rng=self.rng)
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

    @parameterized.parameters("shared", "paper")
    def test_t_changes_compute_not_parameters(self, recurrence):
        counts, convs = set(), []
        for t in range(4):
            unit = blocks.RecurrentUnit(3, t=t, recurrence=recurrence,
                                        rng=np.random.default_rng(0))
            counts.add(models.parameter_count(unit))
            convs.append(count_convs(unit, tf.constant(self.x)))
        self.assertLen(counts, 1)
        self.assertEqual(convs, [1, 2, 3, 4])  # t=2: three applications

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


if __name__ == "__main__":
    tf.test.main()
