"""One U-Net skeleton with the block injected: U-Net, ResU-Net, RU-Net, R2U-Net, Att-R2U-Net.

    x -> enc_0 -> pool -> enc_1 -> ... -> bottleneck -> up_{d-1} ++ skip -> dec_{d-1} -> ...
      -> dec_0 -> head (1x1 conv, float32 logits)

Widths double per level from `filters` (16-32-64-128 | 256 | 128-64-32-16 at the defaults),
upsampling is a 3x3 stride-2 transposed conv with BN and ReLU, skips are concatenated
(SAME padding means no crop-and-copy), and dropout follows every block.
"""

import dataclasses
from typing import Union

import numpy as np
import tensorflow as tf

from r2u.nn import blocks
from r2u import config as config_lib
from r2u.nn import layers

BLOCKS = {
    "unet": blocks.ConvBlock,
    "resunet": blocks.ResidualBlock,
    "runet": blocks.RecurrentBlock,
    "r2unet": blocks.RecurrentResidualBlock,
    "attr2unet": blocks.RecurrentResidualBlock,
}


class UpConv(tf.Module):
    """3x3 stride-2 transposed conv, BN, ReLU: doubles H and W."""

    def __init__(self, in_channels: int, out_channels: int, *, rng: np.random.Generator,
                 name: str):
        super().__init__(name=name)
        with self.name_scope:
            self.conv = layers.ConvTranspose2D(in_channels, out_channels, use_bias=False,
                                               rng=rng, name="conv")
            self.bn = layers.BatchNorm(out_channels, name="bn")

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor, *, training: bool) -> tf.Tensor:
        return tf.nn.relu(self.bn(self.conv(x), training=training))


class UNet(tf.Module):
    """The family's skeleton; `cfg.arch` picks the block. Call as `model(x, training=...)`.

    Input: NHWC images (any float dtype) with H and W multiples of 2**depth. Output: float32
    logits [B, H, W, num_classes]. Compute runs in `cfg.compute_dtype`; variables,
    batch-norm statistics and logits stay float32.
    """

    def __init__(self, cfg: config_lib.ModelConfig, name: str = "unet"):
        super().__init__(name=name)
        validate(cfg)
        self.cfg = cfg
        self.compute_dtype = tf.as_dtype(cfg.compute_dtype)
        rng = np.random.default_rng(cfg.seed)
        block = BLOCKS[cfg.arch]
        opts = dict(t=cfg.t, recurrence=cfg.recurrence, recurrent_bn=cfg.recurrent_bn,
                    rng=rng)
        widths = [cfg.filters * 2**i for i in range(cfg.depth + 1)]
        with self.name_scope:
            self.generator = tf.random.Generator.from_seed(cfg.seed)
            self.dropout = layers.Dropout(cfg.dropout, self.generator, name="dropout")
            for i in range(cfg.depth):
                c_in = cfg.in_channels if i == 0 else widths[i - 1]
                setattr(self, f"enc_{i}", block(c_in, widths[i], name=f"enc_{i}", **opts))
            self.bottleneck = block(widths[-2], widths[-1], name="bottleneck", **opts)
            for i in reversed(range(cfg.depth)):
                setattr(self, f"up_{i}", UpConv(widths[i + 1], widths[i], rng=rng,
                                                name=f"up_{i}"))
                if cfg.arch == "attr2unet":
                    setattr(self, f"gate_{i}", blocks.AttentionGate(
                        widths[i], widths[i], max(1, widths[i] // 2), rng=rng,
                        name=f"gate_{i}"))
                setattr(self, f"dec_{i}", block(2 * widths[i], widths[i], name=f"dec_{i}",
                                                **opts))
            self.head = layers.Conv2D(widths[0], cfg.num_classes, 1, rng=rng, name="head")

    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor, *, training: bool) -> tf.Tensor:
        x = tf.cast(self._check_input(x), self.compute_dtype)
        skips = []
        for i in range(self.cfg.depth):
            x = self.dropout(getattr(self, f"enc_{i}")(x, training=training),
                             training=training)
            skips.append(x)
            x = layers.max_pool(x)
        x = self.dropout(self.bottleneck(x, training=training), training=training)
        for i in reversed(range(self.cfg.depth)):
            x = getattr(self, f"up_{i}")(x, training=training)
            skip = skips[i]
            if self.cfg.arch == "attr2unet":
                skip = getattr(self, f"gate_{i}")(x, skip, training=training)
            x = tf.concat([skip, x], axis=-1)  # [B, H_i, W_i, 2 * widths[i]]
            x = self.dropout(getattr(self, f"dec_{i}")(x, training=training),
                             training=training)
        return self.head(tf.cast(x, tf.float32))  # logits stay float32

    def _check_input(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        if x.shape.rank != 4:
            raise ValueError(f"expected NHWC input of rank 4, got shape {x.shape}")
        if x.shape[-1] is not None and x.shape[-1] != self.cfg.in_channels:
            raise ValueError(f"expected {self.cfg.in_channels} input channels, got shape "
                             f"{x.shape}")
        multiple = 2**self.cfg.depth
        for axis, size in (("height", x.shape[1]), ("width", x.shape[2])):
            if size is not None and size % multiple:
                raise ValueError(f"input {axis} {size} is not a multiple of 2**depth = "
                                 f"{multiple}; pad the image (r2u.data.patches) or crop it")
        if x.shape[1] is None or x.shape[2] is None:
            shape = tf.shape(x)
            tf.debugging.assert_equal(
                shape[1:3] % multiple, 0,
                message=f"input height and width must be multiples of 2**depth={multiple}")
        return x


def validate(cfg: config_lib.ModelConfig) -> None:
    """Raise ValueError naming the first bad field of a model config."""
    def positive_int(key):
        value = getattr(cfg, key)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if cfg.arch not in BLOCKS:
        raise ValueError(f"unknown arch {cfg.arch!r}; expected one of {sorted(BLOCKS)}")
    for key in ("in_channels", "num_classes", "filters", "depth"):
        positive_int(key)
    if not isinstance(cfg.t, (int, np.integer)) or cfg.t < 0:
        raise ValueError(f"t (recurrent steps) must be an integer >= 0, got {cfg.t!r}")
    if cfg.recurrence not in config_lib.RECURRENCES:
        raise ValueError(f"recurrence must be one of {config_lib.RECURRENCES}, "
                         f"got {cfg.recurrence!r}")
    if cfg.recurrent_bn not in config_lib.RECURRENT_BN:
        raise ValueError(f"recurrent_bn must be one of {config_lib.RECURRENT_BN}, "
                         f"got {cfg.recurrent_bn!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout!r}")
    if cfg.compute_dtype not in config_lib.DTYPES:
        raise ValueError(f"compute_dtype must be one of {config_lib.DTYPES}, "
                         f"got {cfg.compute_dtype!r}")


def build(arch: Union[str, config_lib.ModelConfig] = "r2unet", **config) -> UNet:
    """`build("r2unet", in_channels=3, filters=16, depth=4, t=2, dropout=0.1)`.

    Also accepts a `ModelConfig` (keywords then override its fields).
    """
    if isinstance(arch, config_lib.ModelConfig):
        cfg = dataclasses.replace(arch, **config)
    else:
        cfg = config_lib.ModelConfig(arch=arch, **config)
    return UNet(cfg, name=cfg.arch)


def parameter_count(module: tf.Module) -> int:
    """Number of trainable scalars (moving statistics and RNG state excluded)."""
    return int(sum(v.shape.num_elements() for v in module.trainable_variables))
