"""What the machine is, and the dtype and XLA choices that are fastest on it.

`auto` choices come from measurements (`bin/bench`, benchmarks/results/): on CPUs with
native bfloat16 (AVX-512 BF16 / AMX) bfloat16 convolutions ran ~2x float32 and XLA ran
1.5-3x slower than TensorFlow's default oneDNN kernels, so a CPU gets bfloat16 (where
native) without XLA; a GPU gets bfloat16 (compute capability >= 8) or float16, with XLA.
"""

import os
import platform
from typing import Dict

import tensorflow as tf
from absl import logging


def gpus():
    return tf.config.list_physical_devices("GPU")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bfloat16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l for l in f if l.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(requested: str) -> str:
    """`auto` -> the fastest compute dtype that needs no care here."""
    if requested != "auto":
        return requested
    devices = gpus()
    if devices:
        capability = tf.config.experimental.get_device_details(devices[0]).get(
            "compute_capability", (0, 0))
        choice = "bfloat16" if capability >= (8, 0) else "float16"
    else:
        choice = "bfloat16" if cpu_has_native_bfloat16() else "float32"
    logging.info("dtype=auto -> %s", choice)
    return choice


def resolve_xla(requested: str) -> bool:
    """`auto` -> XLA on GPUs, off on CPUs (measured slower there: see module doc)."""
    if requested not in ("auto", "on", "off"):
        raise ValueError(f"xla must be auto, on or off, got {requested!r}")
    if requested != "auto":
        return requested == "on"
    choice = bool(gpus())
    logging.info("xla=auto -> %s (%s)", "on" if choice else "off",
                 "GPU" if choice else "CPU: XLA measured slower than oneDNN kernels")
    return choice


def machine() -> Dict:
    """A description of the machine for results files."""
    devices = gpus()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "device": (tf.config.experimental.get_device_details(devices[0]).get(
                "device_name", "GPU") if devices else "CPU"),
            "native_bfloat16": cpu_has_native_bfloat16()}
