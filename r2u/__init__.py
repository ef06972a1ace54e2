"""r2u: R2U-Net and its family (U-Net, ResU-Net, RU-Net, attention R2U-Net) in TensorFlow."""

import os

# TensorFlow leaves its oneDNN kernels off on CPUs it does not recognise (AMD EPYC here),
# where they train R2U-Net 1.8x faster in float32 (benchmarks/NOTES.md). This only takes
# effect when r2u is imported before TensorFlow; TF_ENABLE_ONEDNN_OPTS=0 opts out.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
