"""r2u: R2U-Net and its family (U-Net, ResU-Net, RU-Net, attention R2U-Net) in TensorFlow.

Importing r2u sets no environment variable and imports no TensorFlow. On x86 CPUs
without AVX-512 VNNI/BF16 or AMX, TensorFlow's oneDNN kernels stay off unless
TF_ENABLE_ONEDNN_OPTS=1 is in the environment before TensorFlow is imported; the r2u-*
commands set it (r2u.cli), and `r2u.devices` logs a hint once when it is missed.
"""
