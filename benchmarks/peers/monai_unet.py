"""MONAI's BasicUNet (2D, features 16-32-64-128-256 | 16), timed like torch_r2unet.

Run in its own venv (benchmarks/peers/setup.sh monai):

    benchmarks/peers/.venv-monai/bin/python benchmarks/peers/monai_unet.py \
        --image_size 128 --channels 1 --batch_size 8 --steps 10 --dtype bfloat16

BasicUNet keeps MONAI's defaults other than the widths: two
conv3x3-InstanceNorm-LeakyReLU per level, transposed-conv upsampling, no dropout. It is
a plain U-Net (no recurrence): at 128x128x1 it has 1.95M parameters and does 1.6 GFLOP
per image forward against R2U-Net's 2.45M and 4.3 GFLOP (torch.utils.flop_counter), so
it is a reference point for a well-known library, not a like-for-like model. Prints one
JSON record (see _torch_harness).
"""

import _torch_harness as harness  # first: it sets OMP_WAIT_POLICY before torch loads

import monai
from monai.networks import nets

FEATURES = (16, 32, 64, 128, 256, 16)


def build(args):
    return nets.BasicUNet(spatial_dims=2, in_channels=args.channels,
                          out_channels=args.num_classes, features=FEATURES)


def main():
    args = harness.parse_args(__doc__.splitlines()[0])
    harness.run("monai", "basicunet", build, args,
                extra={"monai_version": monai.__version__, "features": list(FEATURES)})


if __name__ == "__main__":
    main()
