"""Timing helpers: host-synced timing, counted FLOPs, measured peaks, peak memory.

Every number is measured in the run that reports it. A timed block ends by fetching its
last result to the host, so asynchronous devices finish the work being timed. FLOPs are
counted from the static shapes of a traced forward pass, not estimated. Peaks (the
fastest matmul and conv of a dtype) come from the same process, so `peak_fraction` is
what fraction of this machine's reachable throughput the model uses right now.
`bin/bench` interleaves many `ArchBench`es; `bench_arch` measures one.
"""

import resource
import statistics
import time
from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from r2u import config as config_lib
from r2u import devices
from r2u.training import losses
from r2u.nn import models
from r2u.training import loop

FLOP_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul",
            "BatchMatMulV2", "BatchMatMulV3")
TRAIN_FLOP_FACTOR = 3  # forward + input gradient + weight gradient


def sync(value) -> None:
    """Fetch every tensor in `value` to the host: the device has finished this work."""
    for t in tf.nest.flatten(value):
        if isinstance(t, (tf.Tensor, tf.Variable)):
            t.numpy()


def time_fn(fn: Callable[[], object], warmup: int, steps: int, repeats: int) -> Dict:
    """Seconds per call of `fn`: `repeats` blocks of `steps` calls, each host-synced.

    Returns {"median", "spread": [min, max], "all"} in seconds per call.
    """
    if steps < 1 or repeats < 1:
        raise ValueError(f"steps and repeats must be >= 1, got {steps}, {repeats}")
    out = None
    for _ in range(warmup):
        out = fn()
    sync(out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = fn()
        sync(out)
        times.append((time.perf_counter() - start) / steps)
    return {"median": statistics.median(times), "spread": [min(times), max(times)],
            "all": times}


def op_flops(op: tf.Operation) -> int:
    """FLOPs (2 per multiply-add) of a conv, its two gradients (a transposed conv is an
    input gradient) or a matmul op; else 0."""
    if op.type == "Conv2D":
        out = op.outputs[0].shape  # [N, Ho, Wo, Cout] (NHWC)
        kh, kw, cin, cout = op.inputs[1].shape
        return 2 * _spatial(op, out) * kh * kw * cin * cout
    if op.type == "Conv2DBackpropFilter":
        # The forward conv's multiply-adds: every output gradient meets every tap.
        kh, kw, cin, cout = op.outputs[0].shape
        return 2 * _spatial(op, op.inputs[2].shape) * kh * kw * cin * cout
    if op.type == "Conv2DBackpropInput":
        # A transposed conv is the input gradient of the forward conv that maps its
        # output back to its input: same multiply-adds, counted at the small side.
        small = op.inputs[2].shape
        kh, kw, c_big, c_small = op.inputs[1].shape
        return 2 * _spatial(op, small) * kh * kw * c_big * c_small
    if op.type in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a, out = op.inputs[0].shape, op.outputs[0].shape
        transpose = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
        inner = a[-2] if transpose else a[-1]
        return 2 * out.num_elements() * inner
    return 0


def _spatial(op: tf.Operation, shape: tf.TensorShape) -> int:
    """N * H * W of an image tensor in the op's data format."""
    fmt = op.get_attr("data_format").decode()
    n, h, w = (shape[0], shape[1], shape[2]) if fmt == "NHWC" else (shape[0], shape[2],
                                                                    shape[3])
    return n * h * w


def graph_flops(graph: tf.Graph) -> int:
    """Sum of `op_flops` over a graph; shapes must be static."""
    return sum(op_flops(op) for op in graph.get_operations() if op.type in FLOP_OPS)


def op_share_rows(micros: Dict[str, float], calls: Dict[str, int],
                  counted_flops: Dict[str, int], steps: int, top: int) -> list:
    """The op table of benchmarks/op_profile.py: the `top` op types by kernel time
    (`micros` summed over `steps` traced steps) as "type share% ms/step calls
    [GFLOP/s]" lines; a share is of the time of every op type, listed or not."""
    total = sum(micros.values())
    ranked = sorted(micros.items(), key=lambda kv: -kv[1])[:top]
    lines = []
    for op_type, us in ranked:
        flop = counted_flops.get(op_type, 0)
        gflop_s = flop / (us / 1e6) / 1e9 if flop else None
        rate = f"{gflop_s:8.1f}" if gflop_s else f"{'':8}"
        lines.append(f"{op_type:32} {100 * us / total:5.1f}% {us / 1e3 / steps:8.1f} "
                     f"{calls.get(op_type, 0) // steps:6d} {rate}")
    return lines


def forward_gflop(model: tf.Module, image_size: Union[int, Sequence[int]],
                  channels: int) -> float:
    """GFLOP of one image's inference forward pass, counted from the traced graph.

    `image_size` is a side or (height, width).
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    spec = tf.TensorSpec([1, h, w, channels], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        spec).graph
    return graph_flops(graph) / 1e9


def peak_gflops(dtype: str, matmul_size: int = 1024, conv_shape=(8, 32, 32, 128),
                repeats: int = 3) -> Dict:
    """Best GFLOP/s of a large matmul and a large 3x3 conv in `dtype`; "peak": max."""
    dt = tf.as_dtype(dtype)
    rng = tf.random.Generator.from_seed(0)
    a = tf.cast(rng.normal([matmul_size, matmul_size]), dt)
    n, h, w, c = conv_shape
    x = tf.cast(rng.normal([n, h, w, c]), dt)
    k = tf.cast(rng.normal([3, 3, c, c]), dt)
    matmul = tf.function(lambda: tf.matmul(a, a)[0, 0])
    conv = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME")[0, 0, 0, 0])
    result = {}
    for name, fn, flop in (("matmul", matmul, 2 * matmul_size**3),
                           ("conv", conv, 2 * n * h * w * 9 * c * c)):
        seconds = time_fn(fn, warmup=1, steps=1, repeats=repeats)["spread"][0]
        result[name] = flop / seconds / 1e9
    result["peak"] = max(result["matmul"], result["conv"])
    return result


def reset_peak_memory() -> None:
    """Restart the high-water marks (Linux RSS via clear_refs; GPU allocator stats)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: ru_maxrss stays the process-lifetime peak
    for i, _ in enumerate(devices.gpus()):
        tf.config.experimental.reset_memory_stats(f"GPU:{i}")


def peak_memory_mb() -> Dict:
    """Host RSS high-water mark (ru_maxrss) and, on GPUs, the allocator's peak."""
    result = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    gpu = [tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"]
           for i, _ in enumerate(devices.gpus())]
    if gpu:
        result["gpu_mb"] = max(gpu) / 2**20
    return result


def random_batch(batch_size: int, image_size: int, channels: int,
                 seed: int = 0) -> Dict:
    """A fixed random training batch with ~25% foreground, as the peers use."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, image_size, image_size)
    return {"image": rng.standard_normal(shape + (channels,), dtype=np.float32),
            "mask": (rng.random(shape) < 0.25).astype(np.int32),
            "fov": np.ones(shape, np.float32)}


class ArchBench:
    """One (arch, dtype, xla, shape) combination: built once, then timed in blocks.

    Trains with the real `r2u.training.loop` step on a `tf.data` stream of one fixed batch
    (input cost ~0) and infers with `training=False` in a `tf.function`.
    """

    def __init__(self, arch: str, dtype: str, xla: bool, image_size: int, channels: int,
                 batch_size: int, steps_per_call: int = 1, model_overrides=None):
        xla_name = "on" if xla else "off"
        self.info = dict(arch=arch, dtype=dtype, xla=xla_name, image_size=image_size,
                         channels=channels, batch_size=batch_size,
                         steps_per_call=steps_per_call)
        self.images_per_call = batch_size * steps_per_call
        exp = config_lib.Experiment(
            model=config_lib.ModelConfig(arch=arch, in_channels=channels,
                                         compute_dtype=dtype,
                                         **(model_overrides or {})),
            train=config_lib.TrainConfig(batch_size=batch_size, xla=xla_name,
                                         steps_per_call=steps_per_call))
        self.state = loop.make_state(exp)
        model = self.state.model
        batch = random_batch(batch_size, image_size, channels)
        weights = inverse_frequency(batch["mask"])
        step = loop.make_train_step(self.state, losses.loss_fn("wce", weights),
                                     exp.train.clip_norm, xla)
        dataset = tf.data.Dataset.from_tensors(batch).repeat()
        if devices.gpus():
            dataset = dataset.apply(
                tf.data.experimental.prefetch_to_device("/GPU:0", 2))
        else:
            dataset = dataset.prefetch(2)
        iterator = iter(dataset)
        if steps_per_call == 1:
            self.train_call = lambda: step(next(iterator))
        else:
            fused = loop.make_train_loop(step, steps_per_call)
            self.train_call = lambda: fused(iterator)
        infer = tf.function(lambda x: tf.nn.softmax(model(x, training=False)),
                            jit_compile=xla)
        images = tf.constant(batch["image"])
        self.infer_call = lambda: infer(images)[0, 0, 0, 0]
        self.params = models.parameter_count(model)
        self.gflop_per_image = forward_gflop(model, image_size, channels)
        self.train_s, self.infer_s = [], []
        self.compile_s = self.infer_compile_s = None
        self.memory = {}

    def compile(self) -> None:
        """First calls (trace + compile + a step), timed apart; records peak memory."""
        base = _current_rss_mb()
        reset_peak_memory()
        for attr, call in (("compile_s", self.train_call),
                           ("infer_compile_s", self.infer_call)):
            start = time.perf_counter()
            sync(call())
            setattr(self, attr, time.perf_counter() - start)
        sync(self.train_call())  # one more: some allocations happen on the second step
        self.memory = {**peak_memory_mb(), "rss_base_mb": base}

    def run(self, steps: int, repeats: int = 1, warmup: int = 1) -> None:
        """Adds `repeats` timed blocks of about `steps` train steps, then `steps` infer calls."""
        if self.compile_s is None:
            self.compile()
        calls = max(1, steps // self.info["steps_per_call"])
        self.train_s += time_fn(self.train_call, warmup, calls, repeats)["all"]
        self.infer_s += time_fn(self.infer_call, warmup, steps, repeats)["all"]

    def result(self, peak_gflop_s: Optional[float] = None) -> Dict:
        """The documented result record: images/s medians, [min, max] spreads and
        every block's rate in the order run (`*_all`, one per round in bin/bench)."""
        train_rates = [self.images_per_call / s for s in self.train_s]
        infer_rates = [self.info["batch_size"] / s for s in self.infer_s]
        train_img_s = statistics.median(train_rates)
        infer_img_s = statistics.median(infer_rates)
        gflop_s = train_img_s * TRAIN_FLOP_FACTOR * self.gflop_per_image
        return {**self.info, "params": self.params,
                "gflop_per_image": self.gflop_per_image,
                "compile_s": self.compile_s, "infer_compile_s": self.infer_compile_s,
                "train_img_s": train_img_s,
                "train_img_s_spread": [min(train_rates), max(train_rates)],
                "train_img_s_all": train_rates,
                "infer_img_s": infer_img_s,
                "infer_img_s_spread": [min(infer_rates), max(infer_rates)],
                "infer_img_s_all": infer_rates,
                "gflop_s": gflop_s,
                "infer_gflop_s": infer_img_s * self.gflop_per_image,
                "peak_fraction": gflop_s / peak_gflop_s if peak_gflop_s else None,
                **self.memory}


def bench_arch(arch: str, dtype: str, xla: bool, image_size: int = 128,
               channels: int = 1, batch_size: int = 8, steps: int = 10,
               repeats: int = 3, peak: Optional[Dict] = None) -> Dict:
    """Measures one combination; `peak` (`peak_gflops(dtype)`) is measured if None."""
    bench = ArchBench(arch, dtype, xla, image_size, channels, batch_size)
    bench.run(steps, repeats)
    peak = peak or peak_gflops(dtype)
    return bench.result(peak["peak"])


def inverse_frequency(mask: np.ndarray):
    """Inverse class-frequency weights normalised to mean 1 (class_weights=auto)."""
    counts = np.maximum(np.bincount(mask.ravel(), minlength=2), 1).astype(np.float64)
    w = counts.sum() / counts
    return tuple(float(v) for v in w / w.mean())


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            line = next(l for l in f if l.startswith("VmRSS"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return float("nan")
