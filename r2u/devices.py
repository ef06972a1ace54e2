"""What the machine is, and the dtype and XLA choices that are fastest on it.

`auto` choices come from measurements (`bin/bench`, benchmarks/results/): on CPUs with
native bfloat16 (AVX-512 BF16 / AMX) bfloat16 convolutions ran ~2x float32 and XLA ran
1.5-3x slower than TensorFlow's default oneDNN kernels, so a CPU gets bfloat16 (where
native) without XLA; a GPU gets bfloat16 (compute capability >= 8) or float16, with XLA.
"""

import functools
import os
import platform
from typing import Dict, Optional

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


def onednn_enabled() -> Optional[bool]:
    """Whether TF's oneDNN CPU kernels are on: TF_ENABLE_ONEDNN_OPTS, else TF's default
    (on for x86 CPUs with AVX-512 VNNI/BF16 or AMX, off e.g. on AVX2-only ones); None if
    TF cannot tell."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, hence guarded
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


@functools.cache
def log_onednn_hint() -> None:
    """Logs once per process if oneDNN is off on an x86-64 machine without GPU, unless
    TF_ENABLE_ONEDNN_OPTS=0 chose that: on an AMD EPYC where TF left them off, its
    kernels trained R2U-Net 1.8x faster in float32 (benchmarks/NOTES.md). The r2u-*
    commands turn oneDNN on; `import r2u` does not."""
    opted_out = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("0",
                                                                             "false")
    if (opted_out or platform.machine().lower() not in ("x86_64", "amd64")
            or onednn_enabled() is not False or gpus()):
        return
    logging.warning("TensorFlow's oneDNN CPU kernels are off on this CPU (%s); R2U-Net "
                    "trained 1.8x faster with them on an x86 CPU where TensorFlow left "
                    "them off. To use them, set TF_ENABLE_ONEDNN_OPTS=1 in the environment "
                    "before TensorFlow is imported (TF_ENABLE_ONEDNN_OPTS=0: no hint).",
                    cpu_model())


def resolve_dtype(requested: str) -> str:
    """`auto` -> the fastest compute dtype that needs no care here."""
    log_onednn_hint()
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
    log_onednn_hint()
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
