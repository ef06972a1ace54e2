"""Flags, synthetic data, eager train/infer timing and the JSON record for torch peers.

Shared by torch_r2unet.py and monai_unet.py (run inside benchmarks/peers/.venv-torch or
.venv-monai, never the library's venv), which import it before torch. The timing
protocol matches r2u's bench: `warmup` untimed steps, then `repeats` timed runs of
`steps` steps each; images/s per run, the median is the headline number.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

OMP_WAIT_POLICIES = ("passive", "active", "default")


def _set_omp_wait_policy() -> None:
    """Apply --omp_wait_policy before torch loads libgomp, which reads it once at start.

    With libgomp's default spin-waiting, 2 threads on 2 cores shared with other jobs ran
    R2U-Net training 10-20x slower than 1 thread (measured here: 16-21 s/step against
    0.9-1.4 s/step at 4x64x64); PASSIVE made 2 threads 1.1-2.3 s/step. TF's own thread
    pool does not spin like that, so "passive" is the default for a fair comparison on a
    shared machine; "default" leaves the environment alone.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--omp_wait_policy", choices=OMP_WAIT_POLICIES, default="passive")
    policy = pre.parse_known_args()[0].omp_wait_policy
    if policy != "default":
        os.environ["OMP_WAIT_POLICY"] = policy.upper()


_set_omp_wait_policy()

import numpy as np  # noqa: E402
import torch  # noqa: E402  (after OMP_WAIT_POLICY is set)
import torch.nn.functional as F  # noqa: E402

SEED = 0


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--num_classes", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--channels_last", type=int, choices=(0, 1), default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    p.add_argument("--clip_norm", type=float, default=1.0,
                   help="global-norm gradient clipping as r2u's train step; 0 = off")
    p.add_argument("--omp_wait_policy", choices=OMP_WAIT_POLICIES, default="passive",
                   help="OpenMP idle threads sleep (passive) or spin (active); "
                        "default = leave OMP_WAIT_POLICY as the environment has it")
    p.add_argument("--json", default="", help="also write the JSON record here")
    return p.parse_args()


def synthetic_batch(args: argparse.Namespace):
    """Fixed-seed random images [B, C, H, W] and labels [B, H, W] (~25% foreground).

    With --channels_last the images are stored NHWC and passed as a permuted NCHW view, as
    a loader of HWC images would. `x.contiguous(memory_format=torch.channels_last)` is not
    enough: a one-channel [B, 1, H, W] batch already counts as channels_last-contiguous,
    keeps its NCHW strides (which PyTorch reads as NCHW), and PyTorch then runs the first 1x1 conv (whose [16, 1, 1, 1]
    weight is ambiguous too) in NCHW. The whole first level of the network then mixed
    NCHW and channels_last tensors, and batch norm, ReLU and add fell back to slow strided
    kernels in the forward and backward pass (benchmarks/NOTES.md, "PyTorch peer").
    """
    rng = np.random.default_rng(SEED)
    shape = (args.batch_size, args.channels, args.image_size, args.image_size)
    x = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    y = torch.from_numpy((rng.random((shape[0],) + shape[2:]) < 0.25).astype(np.int64))
    if args.channels_last:
        # Same values in NHWC strides (HWC, 1, WC, C), set explicitly: with C = 1 neither
        # .contiguous(channels_last) nor .permute(...).contiguous() moves anything.
        x = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
    return x, y


def not_channels_last(model: torch.nn.Module, x: torch.Tensor) -> List[str]:
    """Modules whose output in one eval forward is a 4-D tensor not in channels_last."""
    found = []

    def hook(module, inputs, out):
        if (isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[1] > 1
                and not out.is_contiguous(memory_format=torch.channels_last)):
            found.append(type(module).__name__)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        model.eval()
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights with mean 1 (as r2u's class_weights=auto)."""
    counts = torch.bincount(y.flatten(), minlength=num_classes).float().clamp(min=1)
    w = counts.sum() / counts
    return w / w.mean()


def autocast(dtype: str):
    if dtype == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_runs(step: Callable[[], torch.Tensor],
              args: argparse.Namespace) -> Tuple[List[float], List[float]]:
    """Images/s of each timed repeat; each run ends by reading the last value back.

    Returns wall-clock rates (the headline) and rates per second of this process's CPU
    time, which on a machine shared with other jobs measures the work apart from the
    share of the cores the scheduler gave us (equal to wall rates x threads when quiet).
    """
    for _ in range(args.warmup):
        out = step()
    if args.warmup:
        float(out)
    rates, cpu_rates = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            out = step()
        float(out)  # host sync (CPU eager is synchronous; kept for symmetry)
        images = args.steps * args.batch_size
        rates.append(images / (time.perf_counter() - start))
        cpu_rates.append(images / (time.process_time() - cpu_start))
    return rates, cpu_rates


def make_train_step(model, x, y, w, args):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast(args.dtype):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, weight=w)  # float32 loss
        loss.backward()
        if args.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
        opt.step()
        return loss.detach()
    return step


def make_infer_step(model, x, args):
    def step():
        model.eval()
        with torch.inference_mode(), autocast(args.dtype):
            probs = torch.softmax(model(x).float(), dim=1)
        return probs[0, 0, 0, 0]
    return step


def run(peer: str, arch: str, build: Callable[[argparse.Namespace], torch.nn.Module],
        args: argparse.Namespace, extra: Optional[Dict] = None) -> Dict:
    """Build, time, print a human summary to stderr and the JSON record to stdout."""
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    model = build(args)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    x, y = synthetic_batch(args)
    w = class_weights(y, args.num_classes)
    log = lambda msg: print(f"[{peer}] {msg}", file=sys.stderr, flush=True)
    if args.channels_last:
        stray = not_channels_last(model, x)
        if stray:
            log(f"WARNING: {len(stray)} module outputs are not channels_last "
                f"(first: {', '.join(stray[:5])}): mixed layouts run slow kernels")
    log(f"{arch}: {params:,} params; torch {torch.__version__}, "
        f"{args.threads} threads, "
        f"{args.dtype}, channels_last={args.channels_last}, "
        f"{args.batch_size}x{args.image_size}x{args.image_size}x{args.channels}")
    record = {
        "peer": peer, "arch": arch, "params": params, "dtype": args.dtype,
        "channels_last": bool(args.channels_last), "image_size": args.image_size,
        "channels": args.channels, "batch_size": args.batch_size,
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
        "clip_norm": args.clip_norm,
        "not_channels_last_outputs": len(stray) if args.channels_last else None,
        "train_img_s": None, "train_img_s_all": [],
        "infer_img_s": None, "infer_img_s_all": [],
        "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default").lower(),
        **(extra or {}),
    }
    for mode, make in (("train", lambda: make_train_step(model, x, y, w, args)),
                       ("infer", lambda: make_infer_step(model, x, args))):
        if args.mode not in (mode, "both"):
            continue
        rates, cpu_rates = time_runs(make(), args)
        record[f"{mode}_img_s"] = statistics.median(rates)
        record[f"{mode}_img_s_all"] = rates
        record[f"{mode}_img_per_cpu_s"] = statistics.median(cpu_rates)
        log(f"{mode}: {statistics.median(rates):.1f} img/s median "
            f"({', '.join(f'{r:.1f}' for r in rates)}); "
            f"{1000 * args.batch_size / statistics.median(rates):.1f} ms/step")
    text = json.dumps(record)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)
    return record
