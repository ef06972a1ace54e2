"""The blocks that tell the U-Net family apart; each maps `in_channels` to `out_channels`.

    ConvBlock                2 x conv-BN-ReLU                         (U-Net)
    ResidualBlock            ConvBlock(x) + 1x1 conv(x)               (ResU-Net)
    RecurrentBlock           1x1 conv, 2 recurrent units              (RU-Net)
    RecurrentResidualBlock   1x1 conv, 2 recurrent units, + residual  (R2U-Net)

A recurrent unit feeds its output back into the same conv-BN-ReLU `t` times:
`x1 = f(x); repeat t: x1 = f(x + x1)`, so t=2 applies the shared weights three times, as
the source report (and the widely used PyTorch reference) does. `recurrence="paper"` is the
R2U-Net paper's form instead: separate forward and recurrent kernels, each shared across
steps, `h = f(W_f x); repeat t: h = f(W_f x + W_r h)`.

Either form applies one batch norm t+1 times. `recurrent_bn="shared"` keeps one set of
moving statistics for all steps; `"per_step"` keeps t+1 sets under one scale and offset
(Cooijmans et al., 2016), so inference normalises each step with its own statistics.
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from r2u.nn import layers


class ConvBN(tf.Module):
    """conv, then batch norm (float32 statistics), then an optional ReLU.

    `steps` sets of moving statistics, picked by `step` (see `layers.BatchNorm`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 relu: bool = True, steps: int = 1, rng: np.random.Generator,
                 name: Optional[str] = None):
        super().__init__(name=name)
        self.relu = relu
        with self.name_scope:
            # The batch-norm offset makes a conv bias redundant.
            self.conv = layers.Conv2D(in_channels, out_channels, kernel_size,
                                      use_bias=False, rng=rng, name="conv")
            self.bn = layers.BatchNorm(out_channels, steps=steps, name="bn")

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor, *, training: bool, step: int = 0) -> tf.Tensor:
        if training:
            y = self.bn(self.conv(x), training=True, step=step)
        else:  # batch norm folded into the conv (benchmarks/NOTES.md)
            y = self.conv.folded(x, *self.bn.affine(step))
        return tf.nn.relu(y) if self.relu else y


class ConvBlock(tf.Module):
    """Two 3x3 conv-BN-ReLU: the plain U-Net block."""

    def __init__(self, in_channels: int, out_channels: int, *, rng: np.random.Generator,
                 name: Optional[str] = None, **unused):
        super().__init__(name=name)
        with self.name_scope:
            self.conv_0 = ConvBN(in_channels, out_channels, rng=rng, name="conv_0")
            self.conv_1 = ConvBN(out_channels, out_channels, rng=rng, name="conv_1")

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor, *, training: bool) -> tf.Tensor:
        return self.conv_1(self.conv_0(x, training=training), training=training)


class ResidualBlock(tf.Module):
    """ConvBlock plus a shortcut; a 1x1 conv matches channels when they differ."""

    def __init__(self, in_channels: int, out_channels: int, *, rng: np.random.Generator,
                 name: Optional[str] = None, **unused):
        super().__init__(name=name)
        with self.name_scope:
            self.body = ConvBlock(in_channels, out_channels, rng=rng, name="body")
            self.shortcut = (layers.Conv2D(in_channels, out_channels, 1, rng=rng,
                                           name="shortcut")
                             if in_channels != out_channels else None)

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor, *, training: bool) -> tf.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + self.body(x, training=training)


RECURRENT_BN = ("shared", "per_step")


class RecurrentUnit(tf.Module):
    """A recurrent convolutional layer unrolled `t` steps with weights shared across steps.

    `recurrent_bn="per_step"` gives its batch norm t+1 sets of moving statistics, one per
    application; "shared" keeps the single set (and the variable names) of before.
    """

    def __init__(self, channels: int, t: int = 2, recurrence: str = "shared", *,
                 recurrent_bn: str = "per_step", rng: np.random.Generator,
                 name: Optional[str] = None):
        super().__init__(name=name)
        if not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"t (recurrent steps) must be an integer >= 0, got {t!r}")
        if recurrence not in ("shared", "paper"):
            raise ValueError(f"recurrence must be 'shared' or 'paper', got {recurrence!r}")
        if recurrent_bn not in RECURRENT_BN:
            raise ValueError(f"recurrent_bn must be one of {RECURRENT_BN}, "
                             f"got {recurrent_bn!r}")
        self.t = t
        self.recurrence = recurrence
        self.per_step = recurrent_bn == "per_step"
        steps = t + 1 if self.per_step else 1
        with self.name_scope:
            if recurrence == "shared":
                self.f = ConvBN(channels, channels, steps=steps, rng=rng, name="f")
            else:
                self.forward = layers.Conv2D(channels, channels, use_bias=False, rng=rng,
                                             name="forward")
                self.recurrent = layers.Conv2D(channels, channels, use_bias=False, rng=rng,
                                               name="recurrent")
                self.bn = layers.BatchNorm(channels, steps=steps, name="bn")

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor, *, training: bool) -> tf.Tensor:
        if self.recurrence == "shared":
            h = self.f(x, training=training, step=0)
            for k in range(1, self.t + 1):
                h = self.f(x + h, training=training, step=self._step(k))
            return h
        fx = self.forward(x)  # W_f x is the same at every step: compute it once
        h = tf.nn.relu(self.bn(fx, training=training, step=0))
        for k in range(1, self.t + 1):
            h = tf.nn.relu(self.bn(fx + self.recurrent(h), training=training,
                                   step=self._step(k)))
        return h

    def _step(self, k: int) -> int:
        """Which set of moving statistics application `k` (0..t) uses."""
        return k if self.per_step else 0


class RecurrentBlock(tf.Module):
    """1x1 conv to the block width, then two recurrent units (RU-Net; R2U-Net adds x)."""

    def __init__(self, in_channels: int, out_channels: int, *, t: int = 2,
                 recurrence: str = "shared", recurrent_bn: str = "per_step",
                 residual: bool = False, rng: np.random.Generator,
                 name: Optional[str] = None, **unused):
        super().__init__(name=name)
        self.residual = residual
        unit = dict(recurrent_bn=recurrent_bn, rng=rng)
        with self.name_scope:
            self.project = layers.Conv2D(in_channels, out_channels, 1, rng=rng,
                                         name="project")
            self.unit_0 = RecurrentUnit(out_channels, t, recurrence, name="unit_0", **unit)
            self.unit_1 = RecurrentUnit(out_channels, t, recurrence, name="unit_1", **unit)

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor, *, training: bool) -> tf.Tensor:
        x = self.project(x)
        y = self.unit_1(self.unit_0(x, training=training), training=training)
        return x + y if self.residual else y


def RecurrentResidualBlock(in_channels: int, out_channels: int, **kwargs) -> RecurrentBlock:
    """R2U-Net's RRCNN block: a RecurrentBlock with the residual add."""
    return RecurrentBlock(in_channels, out_channels, residual=True, **kwargs)


class AttentionGate(tf.Module):
    """Additive attention on a skip connection (Oktay et al., 2018).

    The decoder signal `g` and the skip `x` (same H, W) each pass a 1x1 conv-BN to
    `inter_channels`; ReLU of their sum goes through a 1x1 conv-BN and a sigmoid to give one
    coefficient per pixel, which scales the skip.
    """

    def __init__(self, g_channels: int, x_channels: int, inter_channels: int, *,
                 rng: np.random.Generator, name: Optional[str] = None):
        super().__init__(name=name)
        with self.name_scope:
            self.w_g = ConvBN(g_channels, inter_channels, 1, relu=False, rng=rng, name="w_g")
            self.w_x = ConvBN(x_channels, inter_channels, 1, relu=False, rng=rng, name="w_x")
            self.psi = ConvBN(inter_channels, 1, 1, relu=False, rng=rng, name="psi")

    @tf.Module.with_name_scope
    def __call__(self, g: tf.Tensor, x: tf.Tensor, *, training: bool) -> tf.Tensor:
        a = tf.nn.relu(self.w_g(g, training=training) + self.w_x(x, training=training))
        return x * tf.sigmoid(self.psi(a, training=training))
