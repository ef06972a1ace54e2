"""Primitive layers as `tf.Module`s that own their variables from `__init__`.

Variables are float32 and cast to the input's dtype at use, so one set of weights serves
float32, bfloat16 and float16 compute without a global policy. Every variable carries a
`tf.distribute` aggregation so the same modules train under `MirroredStrategy`: weights are
updated identically on every replica (`ONLY_FIRST_REPLICA`), batch-norm moving statistics are
replica-local and averaged when read (`ON_READ` + `MEAN`).
"""

from typing import Optional

import numpy as np
import tensorflow as tf

_REPLICATED = tf.VariableAggregation.ONLY_FIRST_REPLICA


def weight(value: np.ndarray, name: str, trainable: bool = True) -> tf.Variable:
    """A float32 variable that all replicas update in lockstep."""
    return tf.Variable(value.astype(np.float32), name=name, trainable=trainable,
                       aggregation=_REPLICATED)


def he_normal(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """He et al. (2015) initialisation, the usual choice in front of ReLU."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)


class Conv2D(tf.Module):
    """k x k convolution, stride 1, SAME padding (3x3 keeps H and W as the report pads 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 use_bias: bool = True, rng: np.random.Generator,
                 name: Optional[str] = None):
        super().__init__(name=name)
        _check_positive(in_channels=in_channels, out_channels=out_channels,
                        kernel_size=kernel_size)
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        fan_in = kernel_size * kernel_size * in_channels
        with self.name_scope:
            self.w = weight(he_normal(rng, shape, fan_in), "w")
            self.b = weight(np.zeros(out_channels), "b") if use_bias else None

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.conv2d(x, tf.cast(self.w, x.dtype), strides=1, padding="SAME")
        if self.b is not None:
            y = tf.nn.bias_add(y, tf.cast(self.b, x.dtype))
        return y

    @tf.Module.with_name_scope
    def folded(self, x: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
        """`self(x) * scale + shift` (per output channel) as one conv and a bias add:
        inference batch norm folded into the weights saves a pass over the output."""
        w = self.w * scale
        b = shift if self.b is None else self.b * scale + shift
        y = tf.nn.conv2d(x, tf.cast(w, x.dtype), strides=1, padding="SAME")
        return tf.nn.bias_add(y, tf.cast(b, x.dtype))


class ConvTranspose2D(tf.Module):
    """3x3 stride-2 transposed convolution: exactly doubles H and W (the report's upsampler)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 use_bias: bool = True, rng: np.random.Generator,
                 name: Optional[str] = None):
        super().__init__(name=name)
        _check_positive(in_channels=in_channels, out_channels=out_channels,
                        kernel_size=kernel_size)
        self.out_channels = out_channels
        shape = (kernel_size, kernel_size, out_channels, in_channels)
        # Each output pixel sees about k*k*in/4 inputs at stride 2.
        fan_in = max(1, kernel_size * kernel_size * in_channels // 4)
        with self.name_scope:
            self.w = weight(he_normal(rng, shape, fan_in), "w")
            self.b = weight(np.zeros(out_channels), "b") if use_bias else None

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(x)
        out_shape = tf.stack([shape[0], 2 * shape[1], 2 * shape[2], self.out_channels])
        y = tf.nn.conv2d_transpose(x, tf.cast(self.w, x.dtype), out_shape, strides=2,
                                   padding="SAME")
        static = x.shape
        y = tf.ensure_shape(y, [static[0],
                                None if static[1] is None else 2 * static[1],
                                None if static[2] is None else 2 * static[2],
                                self.out_channels])
        if self.b is not None:
            y = tf.nn.bias_add(y, tf.cast(self.b, x.dtype))
        return y


class BatchNorm(tf.Module):
    """Batch normalisation over N, H, W with float32 statistics whatever the compute dtype.

    Training uses the fused kernel (float32 moments internally, also for bfloat16/float16
    inputs); inference folds the statistics into one float32 scale and shift.
    `training=True` normalises with the batch moments and updates the moving statistics;
    `training=False` uses the moving statistics and changes nothing.

    `steps > 1` is for a batch norm applied at every step of a recurrence: it keeps one set
    of moving statistics per step (`moving_mean_0`, `moving_var_0`, ...), selected by
    `step`, under one shared scale and offset (Cooijmans et al., 2016, "Recurrent Batch
    Normalization"). A single set would average the steps' different distributions and
    normalise every step at inference with statistics that belong to none of them.
    `steps=1` is the plain layer, with variables `moving_mean` and `moving_var`.
    """

    def __init__(self, channels: int, *, steps: int = 1, momentum: float = 0.99,
                 epsilon: float = 1e-3, name: Optional[str] = None):
        super().__init__(name=name)
        _check_positive(channels=channels, steps=steps)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.steps = int(steps)
        self.momentum = momentum
        self.epsilon = epsilon
        with self.name_scope:
            self.scale = weight(np.ones(channels), "scale")
            self.offset = weight(np.zeros(channels), "offset")
            local = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                         aggregation=tf.VariableAggregation.MEAN)
            # Attribute, variable and checkpoint key share one name per statistic.
            for suffix in self._suffixes():
                for stat, init in (("moving_mean", tf.zeros), ("moving_var", tf.ones)):
                    setattr(self, stat + suffix,
                            tf.Variable(init([channels]), name=stat + suffix, **local))

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor, *, training: bool, step: int = 0) -> tf.Tensor:
        moving_mean, moving_var = self.moving_stats(step)
        if not training:
            # A plain affine map, not fused_batch_norm: with oneDNN, grappler fuses
            # conv + inference batch norm + ReLU into a kernel 13x slower on one whole
            # 576x576 image (benchmarks/NOTES.md).
            scale, shift = self.affine(step)
            return x * tf.cast(scale, x.dtype) + tf.cast(shift, x.dtype)
        y, mean, var = tf.compat.v1.nn.fused_batch_norm(
            x, self.scale, self.offset, epsilon=self.epsilon, is_training=True)
        decay = 1.0 - self.momentum
        moving_mean.assign_sub((moving_mean - mean) * decay)
        moving_var.assign_sub((moving_var - var) * decay)  # var is unbiased
        return y

    def affine(self, step: int = 0) -> tuple:
        """Inference batch norm of `step` as float32 (scale, shift): y = x * scale + shift."""
        moving_mean, moving_var = self.moving_stats(step)
        scale = tf.math.rsqrt(moving_var + self.epsilon) * self.scale
        return scale, self.offset - moving_mean * scale

    def moving_stats(self, step: int = 0) -> tuple:
        """The (moving_mean, moving_var) variables of recurrent step `step`."""
        if (not isinstance(step, (int, np.integer)) or isinstance(step, bool)
                or not 0 <= step < self.steps):
            raise ValueError(f"step must be an integer in [0, {self.steps}), got {step!r}")
        suffix = self._suffixes()[step]
        return getattr(self, "moving_mean" + suffix), getattr(self, "moving_var" + suffix)

    def _suffixes(self) -> list:
        return [""] if self.steps == 1 else [f"_{k}" for k in range(self.steps)]


class Dropout(tf.Module):
    """Inverted dropout drawing its masks from a checkpointed `tf.random.Generator`.

    A generator (not a stateful op seed) keeps the stream reproducible under XLA and after a
    restore; inference is the identity.
    """

    def __init__(self, rate: float, generator: tf.random.Generator,
                 name: Optional[str] = None):
        super().__init__(name=name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.generator = generator

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor, *, training: bool) -> tf.Tensor:
        if not training or self.rate == 0.0:
            return x
        seed = self.generator.make_seeds(1)[:, 0]
        return tf.nn.experimental.stateless_dropout(x, self.rate, seed=seed)


def max_pool(x: tf.Tensor) -> tf.Tensor:
    """2x2 max-pool, stride 2: halves H and W."""
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
