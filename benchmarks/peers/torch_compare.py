"""Interleaved rounds: the torch peer harness against the plain loop, medians and ratios.

Each block is a fresh subprocess in the torch peer venv (train step only, 128x128x1,
batch 8, float32, channels_last, OMP_WAIT_POLICY=PASSIVE, one thread by default); the
order of the variants alternates from round to round. Ratios are medians of per-round
ratios against the plain loop (`plain`), both by the wall clock and per second of the
block's own CPU time; on a machine shared with other jobs the CPU-time figure is the one
that does not depend on the share of the cores the scheduler gave each block.

    nice -n 5 python3 benchmarks/peers/torch_compare.py --rounds 4 \
        --variants harness,plain,plain_to_cl [--before_dir DIR] [--json out.json]

Variants: `harness` (torch_r2unet.py), `plain` (torch_plain_loop.py, NHWC batch),
`plain_to_cl` (plain loop, batch made by .to(channels_last)), `plain_nchw`,
`plain_compile` (torch.compile), `harness_before` (torch_r2unet.py from --before_dir, e.g.
a `git show` copy of an older harness).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def commands(args):
    py = os.path.join(HERE, ".venv-torch", "bin", "python")
    common = [f"--threads={args.threads}", f"--steps={args.steps}",
              f"--warmup={args.warmup}", "--repeats=1",
              f"--image_size={args.image_size}", f"--batch_size={args.batch_size}"]
    harness = ["--channels_last=1", "--mode=train", "--dtype=float32"]
    plain = os.path.join(HERE, "torch_plain_loop.py")
    cmds = {
        "harness": [py, os.path.join(HERE, "torch_r2unet.py")] + common + harness,
        "plain": [py, plain, "--layout=nhwc"] + common,
        "plain_to_cl": [py, plain, "--layout=to_channels_last"] + common,
        "plain_nchw": [py, plain, "--layout=nchw"] + common,
        "plain_compile": [py, plain, "--layout=nhwc", "--compile=1"] + common,
    }
    if args.before_dir:
        cmds["harness_before"] = ([py, os.path.join(args.before_dir, "torch_r2unet.py")]
                                  + common + harness)
    return cmds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="harness,plain")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--before_dir", default="")
    p.add_argument("--json", default="")
    args = p.parse_args()
    cmds = commands(args)
    names = args.variants.split(",")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    rates = {n: [] for n in names}
    cpu_rates = {n: [] for n in names}
    start = time.time()
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            proc = subprocess.run(cmds[n], capture_output=True, text=True, env=env, cwd=HERE)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
            if proc.returncode or not lines:
                sys.exit(f"{n} failed ({proc.returncode}): {proc.stderr[-1500:]}")
            rec = json.loads(lines[-1])
            rates[n].append(rec["train_img_s"])
            cpu_rates[n].append(rec["train_img_per_cpu_s"])
            print(f"round {r} {n:15} {rates[n][-1]:.3f} img/s wall, "
                  f"{cpu_rates[n][-1]:.3f} img per CPU s", file=sys.stderr, flush=True)
    ref = "plain" if "plain" in names else names[0]
    summary = {}
    for n in names:
        summary[n] = {}
        for kind, table in (("wall", rates), ("cpu", cpu_rates)):
            ratio = [a / b for a, b in zip(table[n], table[ref])]
            summary[n][kind] = {"median": statistics.median(table[n]), "all": table[n],
                                f"median_ratio_to_{ref}": statistics.median(ratio),
                                "ratios": ratio}
            print(f"{n:15} {kind:4} median {statistics.median(table[n]):.3f} "
                  f"[{min(table[n]):.3f}-{max(table[n]):.3f}] "
                  f"{'img/s' if kind == 'wall' else 'img/CPU s'}; /{ref}: median "
                  f"{statistics.median(ratio):.3f} ({', '.join(f'{x:.2f}' for x in ratio)})")
    record = {"args": vars(args), "wall_s": time.time() - start,
              "load_at_end": os.getloadavg(), "variants": summary}
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
