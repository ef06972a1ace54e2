"""Benchmark the U-Net family: `r2u-bench --archs=r2unet --json=bench.json`.

Every (arch, dtype, xla) combination is built and compiled first, then timed in rounds:
each round runs one block of every combination (and of every peer, `--peers`), so
throughput swings of a shared machine hit all of them alike. Prints a table and writes
JSON (atomically) with the machine, the config, the measured dtype peaks, one record per
combination, the peer records and r2u/peer images-per-second ratios. On a GPU the device
is picked automatically; peers always run on the CPU. By default dtype and XLA are what
`bin/train` would pick on this machine (a few minutes for the five architectures);
`--dtypes=float32,bfloat16 --xla=off,on` times the whole grid.
"""

import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import time

from r2u import cli

cli.setup()  # before TensorFlow is imported

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import tensorflow as tf  # noqa: E402

from r2u import bench  # noqa: E402
from r2u import config  # noqa: E402
from r2u import devices  # noqa: E402
from r2u import files  # noqa: E402

_ARCHS = flags.DEFINE_list("archs", list(config.ARCHS), "Architectures to time.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Square image side.")
_CHANNELS = flags.DEFINE_integer("channels", 1, "Input channels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per step.")
_FILTERS = flags.DEFINE_integer("filters", None, "Width of level 0 (None: model's).")
_DEPTH = flags.DEFINE_integer("depth", None, "Number of poolings (None: model's).")
_DTYPES = flags.DEFINE_list("dtypes", ["auto"], "Compute dtypes: float32, bfloat16, "
                            "float16, auto (what bin/train would pick here).")
_XLA = flags.DEFINE_list("xla", ["auto"], "XLA settings: off, on, auto (as bin/train).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps (and inference calls) "
                              "per block.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Rounds: timed blocks per combination.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls before each block.")
_STEPS_PER_CALL = flags.DEFINE_list("steps_per_call", ["1"],
                                    "Train steps fused into one compiled call.")
_INTRA = flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0: TF's).")
_INTER = flags.DEFINE_integer("inter_op_threads", 0, "TF inter-op threads (0: TF's).")
_JSON = flags.DEFINE_string("json", None, "Write the results here.")
_PEERS = flags.DEFINE_list("peers", ["none"], "none, or any of torch,keras,monai.")
_PEER_STEPS = flags.DEFINE_integer("peer_steps", 10, "Timed steps per peer block.")
_PEER_CHANNELS_LAST = flags.DEFINE_integer("peer_channels_last", 1,
                                           "torch/monai: channels_last memory format.")
_PEERS_DIR = flags.DEFINE_string(
    "peers_dir", os.path.join(cli.checkout_root() or "", "benchmarks", "peers"),
    "Folder of the peer scripts and .venv-<peer> venvs.")
# Each peer's script and the r2u arch it is compared with.
PEER_SCRIPTS = {"torch": ("torch_r2unet.py", "r2unet"),
                "keras": ("keras_r2unet.py", "r2unet"),
                "monai": ("monai_unet.py", "unet")}
PEER_DTYPES = ("float32", "bfloat16")
ENV_KEYS = ("TF_ENABLE_ONEDNN_OPTS", "OMP_NUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME",
            "XLA_FLAGS", "TF_XLA_FLAGS", "ONEDNN_DEFAULT_FPMATH_MODE")
# The flags of the JSON's "config" record, in order.
CONFIG_FLAGS = ("archs", "image_size", "channels", "batch_size", "filters", "depth",
                "dtypes", "xla", "steps", "repeats", "warmup", "steps_per_call",
                "intra_op_threads", "inter_op_threads", "peers", "peer_steps",
                "peer_channels_last")


@dataclasses.dataclass(frozen=True)
class Options:
    """The flags that the helpers below need, read once in `main`."""
    image_size: int
    channels: int
    batch_size: int
    model_overrides: dict
    steps: int
    repeats: int
    warmup: int
    intra_op_threads: int
    peer_steps: int
    peer_channels_last: int
    peers_dir: str


def run_peer(opts: Options, peer: str, dtype: str) -> dict:
    """One block of a peer in its own venv; failures come back as {"error": ...}."""
    script, arch = PEER_SCRIPTS[peer]
    record = {"peer": peer, "dtype": dtype, "compare_with": arch}
    python = os.path.join(opts.peers_dir, f".venv-{peer}", "bin", "python")
    if not os.path.exists(python):
        error = (f"peer venv missing: {python} (create it with "
                 f"benchmarks/peers/setup.sh {peer})")
        logging.warning("%s", error)
        return {**record, "error": error}
    threads = opts.intra_op_threads or os.cpu_count()
    cmd = [python, os.path.join(opts.peers_dir, script),
           f"--image_size={opts.image_size}", f"--channels={opts.channels}",
           f"--batch_size={opts.batch_size}",
           f"--steps={opts.peer_steps}", "--warmup=2", "--repeats=1",
           f"--dtype={dtype}", f"--threads={threads}", "--mode=both"]
    if peer != "keras":
        cmd.append(f"--channels_last={opts.peer_channels_last}")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=opts.peers_dir)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        return {**record, "error": f"exit {proc.returncode}: {proc.stderr[-800:]}"}
    # The peer's own record, with our peer key, dtype and compared arch on top.
    return {**json.loads(lines[-1]), **record}


def build_all(opts: Options, combos):
    benches = []
    for arch, dtype, xla, steps_per_call in combos:
        logging.info("building and compiling %s %s xla=%s steps_per_call=%d", arch, dtype,
                     xla, steps_per_call)
        b = bench.ArchBench(arch, dtype, devices.resolve_xla(xla), opts.image_size,
                            opts.channels, opts.batch_size, steps_per_call,
                            model_overrides=opts.model_overrides)
        b.compile()
        benches.append(b)
    return benches


def run_rounds(opts: Options, benches, peers):
    """Interleaved rounds; the order alternates so no combination always runs first."""
    peer_runs = []
    for r in range(opts.repeats):
        order = benches if r % 2 == 0 else benches[::-1]
        for b in order:
            b.run(opts.steps, repeats=1, warmup=opts.warmup)
            logging.info("round %d %s: %.2f img/s train", r, b.info,
                         b.images_per_call / b.train_s[-1])
        for peer, dtype in peers:
            peer_runs.append(run_peer(opts, peer, dtype))
            logging.info("round %d peer %s %s: %s", r, peer, dtype,
                         peer_runs[-1].get("train_img_s", peer_runs[-1].get("error")))
    return peer_runs


def summarize_peers(peer_runs):
    """One record per (peer, dtype): medians over rounds, or the error.

    `*_img_s_all` keeps one entry per round (None where that round failed), so rates
    pair with r2u's round by round.
    """
    out = []
    for key in dict.fromkeys((p["peer"], p["dtype"]) for p in peer_runs):
        runs = [p for p in peer_runs if (p["peer"], p["dtype"]) == key]
        good = [p for p in runs if "error" not in p]
        if not good:
            out.append(runs[0])
            continue
        record = dict(good[-1])
        for mode in ("train", "infer"):
            rates = [p.get(f"{mode}_img_s") for p in runs]
            known = [r for r in rates if r]
            record[f"{mode}_img_s"] = statistics.median(known) if known else None
            record[f"{mode}_img_s_all"] = rates
        record["rounds"] = len(good)
        out.append(record)
    return out


def ratios(results, peers):
    """r2u img/s over peer img/s for the compared arch, per dtype and XLA setting.

    "train"/"infer": median over rounds of the same round's ratio (both ran minutes
    apart, so a load swing hits both); "*_of_medians": ratio of the two medians.
    """
    out = {}
    for p in peers:
        if "error" in p:
            continue
        for r in results:
            if r["arch"] != p["compare_with"] or r["dtype"] != p["dtype"]:
                continue
            entry = {}
            for mode in ("train", "infer"):
                pairs = [a / b for a, b in zip(r[f"{mode}_img_s_all"],
                                               p[f"{mode}_img_s_all"]) if b]
                entry[mode] = statistics.median(pairs) if pairs else None
                entry[f"{mode}_of_medians"] = (r[f"{mode}_img_s"] / p[f"{mode}_img_s"]
                                               if p[f"{mode}_img_s"] else None)
            fused = f"-spc_{r['steps_per_call']}" if r["steps_per_call"] > 1 else ""
            out[f"{r['arch']}-{r['dtype']}-xla_{r['xla']}{fused}/{p['peer']}"] = entry
    return out


def print_table(results, peers, peaks, peer_ratios):
    print(f"device: {devices.machine()['device']}  oneDNN: {devices.onednn_enabled()}  "
          "peaks (GFLOP/s): " + ", ".join(
        f"{d} matmul {p['matmul']:.0f} conv {p['conv']:.0f}" for d, p in peaks.items()))
    print(f"{'arch':10} {'dtype':8} {'xla':3} {'spc':>3} {'params':>9} {'GF/img':>6} "
          f"{'comp_s':>6} {'ms/step':>8} {'train img/s':>11} {'[min-max]':>13} "
          f"{'infer img/s':>11} {'GF/s':>6} {'peak%':>5} {'RSS MB':>7}")
    for r in results:
        ms = 1000 * r["batch_size"] / r["train_img_s"]
        lo, hi = r["train_img_s_spread"]
        print(f"{r['arch']:10} {r['dtype']:8} {r['xla']:3} {r['steps_per_call']:3d} "
              f"{r['params']:9d} "
              f"{r['gflop_per_image']:6.2f} {r['compile_s']:6.1f} {ms:8.1f} "
              f"{r['train_img_s']:11.2f} {f'[{lo:.1f}-{hi:.1f}]':>13} "
              f"{r['infer_img_s']:11.2f} {r['gflop_s']:6.1f} "
              f"{100 * (r['peak_fraction'] or 0):5.1f} {r['rss_mb']:7.0f}")
    for p in peers:
        if "error" in p:
            print(f"peer {p['peer']} {p['dtype']}: NOT RUN: {p['error']}")
        else:
            print(f"peer {p['peer']:6} {p['dtype']:8} train {p['train_img_s']:.2f} "
                  f"img/s infer {p['infer_img_s']:.2f} img/s ({p['rounds']} rounds)")
    for key, r in peer_ratios.items():
        print(f"r2u/peer {key}: train {_fmt(r['train'])}, infer {_fmt(r['infer'])} "
              "(median of per-round ratios)")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def machine_info(load_start) -> dict:
    """`devices.machine()` plus what moves CPU numbers: load, threads, oneDNN, env."""
    threading = tf.config.threading
    return {**devices.machine(), "load_avg_start": load_start,
            "load_avg_end": os.getloadavg(),
            "intra_op_threads": threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": threading.get_inter_op_parallelism_threads(),
            "onednn_enabled": devices.onednn_enabled(),
            "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def benchmark(opts: Options, archs, dtypes, xlas, fused, peer_names) -> dict:
    """Builds, times and prints every combination; returns the JSON's content."""
    load_start = os.getloadavg()
    dtypes = list(dict.fromkeys(devices.resolve_dtype(d) for d in dtypes))
    xlas = list(dict.fromkeys("on" if devices.resolve_xla(x) else "off" for x in xlas))
    peaks = {d: bench.peak_gflops(d) for d in dtypes}
    benches = build_all(opts, list(itertools.product(archs, dtypes, xlas, fused)))
    peer_plan = [(p, d) for d in dtypes if d in PEER_DTYPES for p in peer_names]
    peer_runs = run_rounds(opts, benches, peer_plan)
    for d in dtypes:  # again at the end: the peak is the best seen in this run
        again = bench.peak_gflops(d)
        peaks[d] = {k: max(v, again[k]) for k, v in peaks[d].items()}
    results = [b.result(peaks[b.info["dtype"]]["peak"]) for b in benches]
    peers = summarize_peers(peer_runs)
    peer_ratios = ratios(results, peers)
    print_table(results, peers, peaks, peer_ratios)
    return {"machine": machine_info(load_start), "peaks": peaks, "results": results,
            "peers": peers, "ratios": peer_ratios}


def main(argv):
    del argv
    unknown = set(_ARCHS.value) - set(config.ARCHS)
    peer_names = [p for p in _PEERS.value if p != "none"]
    if unknown or set(peer_names) - set(PEER_SCRIPTS):
        raise app.UsageError(f"unknown arch or peer in {_ARCHS.value} / {_PEERS.value}")
    fused = list(dict.fromkeys(_STEPS_PER_CALL.value))
    if not all(n.isdigit() and int(n) >= 1 for n in fused):
        raise app.UsageError(f"--steps_per_call must be >= 1, got {fused}")
    if _INTRA.value:
        tf.config.threading.set_intra_op_parallelism_threads(_INTRA.value)
    if _INTER.value:
        tf.config.threading.set_inter_op_parallelism_threads(_INTER.value)
    overrides = {k: h.value for k, h in (("filters", _FILTERS), ("depth", _DEPTH))
                 if h.value is not None}
    opts = Options(image_size=_IMAGE_SIZE.value, channels=_CHANNELS.value,
                   batch_size=_BATCH_SIZE.value, model_overrides=overrides,
                   steps=_STEPS.value, repeats=_REPEATS.value, warmup=_WARMUP.value,
                   intra_op_threads=_INTRA.value, peer_steps=_PEER_STEPS.value,
                   peer_channels_last=_PEER_CHANNELS_LAST.value,
                   peers_dir=_PEERS_DIR.value)
    cfg = {k: flags.FLAGS[k].value for k in CONFIG_FLAGS}
    out = benchmark(opts, _ARCHS.value, _DTYPES.value, _XLA.value, list(map(int, fused)),
                    peer_names)
    if _JSON.value:
        value = {"machine": out.pop("machine"), "config": cfg, **out}
        os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
        files.write_json(_JSON.value, value, sort_keys=False)
    return 0


run = cli.entry_point(main)  # `r2u-bench` and `bin/bench`


if __name__ == "__main__":
    run()
