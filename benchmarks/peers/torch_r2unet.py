"""R2U-Net (Alom et al., 2018) in plain PyTorch, built like r2u's build("r2unet").

Run in its own venv (benchmarks/peers/setup.sh torch):

    benchmarks/peers/.venv-torch/bin/python benchmarks/peers/torch_r2unet.py \
        --image_size 128 --channels 1 --batch_size 8 --steps 10 --dtype bfloat16

Mirrors r2u layer for layer so the parameter counts agree: encoder 16-32-64-128 with 2x2
max-pool, bottleneck 256; each block is RRCNN (1x1 conv with bias to the width, two
recurrent units with t=2 whose conv3x3(no bias)-BN-ReLU is shared across steps, `x1 =
f(x); repeat t: x1 = f(x + x1)`, then `x + x1`); the decoder upsamples with a 3x3
stride-2 transposed conv (no bias) + BN + ReLU, concatenates [skip, up] and applies an
RRCNN block; dropout 0.1 after every block; 1x1 conv head with bias. BN uses r2u's
(Keras-style) momentum 0.99 / epsilon 1e-3. Prints one JSON record on stdout (see
_torch_harness.run).
"""

import _torch_harness as harness  # first: it sets OMP_WAIT_POLICY before torch loads

import torch
from torch import nn


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """r2u's BatchNorm: moving = 0.99 * moving + 0.01 * batch, epsilon 1e-3."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class RecurrentUnit(nn.Module):
    """conv3x3-BN-ReLU applied t + 1 times with shared weights."""

    def __init__(self, channels: int, t: int = 2):
        super().__init__()
        self.t = t
        self.f = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                               batch_norm(channels), nn.ReLU(inplace=True))

    def forward(self, x):
        h = self.f(x)
        for _ in range(self.t):
            h = self.f(x + h)
        return h


class RRCNN(nn.Module):
    """R2U-Net block: 1x1 projection, two recurrent units, residual add."""

    def __init__(self, in_channels: int, out_channels: int, t: int = 2):
        super().__init__()
        self.project = nn.Conv2d(in_channels, out_channels, 1)
        self.units = nn.Sequential(RecurrentUnit(out_channels, t),
                                   RecurrentUnit(out_channels, t))

    def forward(self, x):
        x = self.project(x)
        return x + self.units(x)


class UpConv(nn.Sequential):
    """3x3 stride-2 transposed conv (exactly doubles H, W), BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1,
                               output_padding=1, bias=False),
            batch_norm(out_channels), nn.ReLU(inplace=True))


class R2UNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2, filters: int = 16,
                 depth: int = 4, t: int = 2, dropout: float = 0.1):
        super().__init__()
        widths = [filters * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.enc = nn.ModuleList(
            RRCNN(in_channels if i == 0 else widths[i - 1], widths[i], t)
            for i in range(depth))
        self.bottleneck = RRCNN(widths[-2], widths[-1], t)
        self.up = nn.ModuleList(UpConv(widths[i + 1], widths[i]) for i in range(depth))
        self.dec = nn.ModuleList(RRCNN(2 * widths[i], widths[i], t)
                                 for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for i in range(self.depth):
            x = self.dropout(self.enc[i](x))
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for i in reversed(range(self.depth)):
            # [B, 2 * widths[i], H_i, W_i]
            x = torch.cat([skips[i], self.up[i](x)], dim=1)
            x = self.dropout(self.dec[i](x))
        return self.head(x)


def build(args) -> nn.Module:
    return R2UNet(in_channels=args.channels, num_classes=args.num_classes)


def main():
    args = harness.parse_args(__doc__.splitlines()[0])
    harness.run("torch", "r2unet", build, args)


if __name__ == "__main__":
    main()
