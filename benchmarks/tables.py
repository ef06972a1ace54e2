#!/usr/bin/env python3
"""Markdown tables for the README from the committed results JSON.

    python benchmarks/tables.py bench benchmarks/results/bench.json
    python benchmarks/tables.py results benchmarks/results/drive-*.json
    python benchmarks/tables.py scaling benchmarks/results/scaling.json
    python benchmarks/tables.py ablation benchmarks/results/isic-r2unet.json \
        benchmarks/results/isic-r2unet-*.json        # the first file is the baseline
    python benchmarks/tables.py modes benchmarks/results/inference-modes-*.json
    python benchmarks/tables.py budget benchmarks/results/{drive,isic,usgra}-*-{15,30,60}.json

Tables are printed, never typed by hand, so the README quotes exactly what was measured.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from r2u import config as config_lib  # noqa: E402  (dataclasses only: no TensorFlow)

METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "jaccard", "auc")


def _f(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def bench_table(path: str) -> str:
    with open(path) as f:
        run = json.load(f)
    rows = ["| arch | dtype | XLA | params | GFLOP/img | train img/s [min-max] | "
            "infer img/s | % of peak |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in run["results"]:
        rows.append(
            f"| {r['arch']} | {r['dtype']} | {r['xla']} | {r['params']:,} | "
            f"{r['gflop_per_image']:.2f} | {r['train_img_s']:.2f} "
            f"[{r['train_img_s_spread'][0]:.2f}-{r['train_img_s_spread'][1]:.2f}] | "
            f"{r['infer_img_s']:.1f} | {100 * r['peak_fraction']:.0f} |")
    peers = ["", "| peer | dtype | params | train img/s | infer img/s | r2u/peer train | "
             "r2u/peer infer |", "|---|---|---:|---:|---:|---:|---:|"]
    for p in run["peers"]:
        if "error" in p:
            peers.append(f"| {p['peer']} | {p['dtype']} | error: {p['error'][:60]} "
                         "| | | | |")
            continue
        ratio = next((v for k, v in run["ratios"].items()
                      if k.endswith(f"/{p['peer']}") and f"-{p['dtype']}-xla_off" in k), {})
        peers.append(f"| {p['peer']} ({p['compare_with']}) | {p['dtype']} | "
                     f"{p.get('params', 0):,} | {_f(p['train_img_s'])} | "
                     f"{_f(p['infer_img_s'], 1)} | {_f(ratio.get('train'))}x | "
                     f"{_f(ratio.get('infer'))}x |")
    return "\n".join(rows + (peers if run["peers"] else []))


_VARIANTS = {"recurrent_bn": {"per_step": "per-step BN"},  # labels of ablation rows
             "compute_dtype": {"float32": "float32"}}


def results_table(paths) -> str:
    rows = ["| dataset | arch | params | train (min) | steps (best) | aggregate | "
            + " | ".join(METRICS) + " |", "|---" * (6 + len(METRICS)) + "|"]
    observer = []  # the same for every model: shown once, last

    def row(r, kind, scores, minutes, steps):
        params = f"{r['params']:,}" if r["params"] else "-"
        model = r.get("config", {}).get("model", {})
        arch = r["arch"] + "".join(f" ({names[model[k]]})" for k, names in _VARIANTS.items()
                                   if model.get(k) in names)
        return (f"| {r['dataset']} | {arch} | {params} | {minutes} | {steps} | {kind} | "
                + " | ".join(_f(scores.get(m), 4) for m in METRICS) + " |")

    for path in paths:
        with open(path) as f:
            r = json.load(f)
        e = r["evaluation"]
        t = e["inference"]["threshold"]  # chosen on validation images
        half = e.get("at_threshold_0.5", {})
        kinds = [(f"pooled, t={t:.2f}", e["pooled"]),
                 (f"per image, t={t:.2f}", e["per_image_mean"])]
        kinds += [(f"{name}, t=0.5", dict(half[key], auc=None))
                  for name, key in (("pooled", "pooled"), ("per image", "per_image_mean"))
                  if key in half]
        minutes = f"{r['train_seconds'] / 60:.0f}"
        steps = f"{r['steps']:,} ({r['best_step']:,})"
        rows += [row(r, kind, scores, minutes, steps) for kind, scores in kinds]
        if "second_observer" in e and not observer:
            human = dict(r, arch="2nd observer", params=0, config={})
            observer = [row(human, f"{kind}", dict(
                e["second_observer"][key], auc=None), "-", "-")
                        for kind, key in (("pooled", "pooled"),
                                          ("per image", "per_image_mean"))]
    return "\n".join(rows + observer)


def scaling_table(path: str) -> str:
    with open(path) as f:
        run = json.load(f)
    rows = ["| sweep | image | batch | train img/s | infer img/s | train GFLOP/s | "
            "% of peak | peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for sweep in ("image_size_sweep", "batch_size_sweep"):
        for r in run[sweep]:
            side = r["image_size"]
            rows.append(f"| {sweep.split('_')[0]} | {side}x{side} | {r['batch_size']} | "
                        f"{r['train_img_s']:.2f} | {r['infer_img_s']:.2f} | "
                        f"{r['gflop_s']:.1f} | {100 * r['peak_fraction']:.0f} | "
                        f"{r['rss_mb']:.0f} |")
    w = run.get("whole_image")
    if w:
        rows += ["", "| one DRIVE-sized image | seconds | GFLOP | peak RSS MB |",
                 "|---|---:|---:|---:|",
                 f"| whole ({w['height']}x{w['width']}, padded to "
                 f"{w['whole_padded'][0]}x{w['whole_padded'][1]}) | {w['whole_s']:.2f} | "
                 f"{w['whole_gflop']:.0f} | {w['whole_rss_mb']:.0f} |",
                 f"| {w['num_tiles']:,} tiles of {w['tile']}x{w['tile']}, stride "
                 f"{w['stride']} | {w['tiled_s']:.1f} | {w['tiled_gflop']:.0f} | "
                 f"{w['tiled_rss_mb']:.0f} |"]
    return "\n".join(rows)


def _flatten(config: dict) -> dict:
    """{"part.field": value} of a config in today's layout (`Experiment.from_dict` reads
    every older one), training's threshold left out."""
    config = json.loads(config_lib.Experiment.from_dict(config).to_json())
    return {f"{part}.{k}": v for part, fields in config.items() if part != "inference"
            for k, v in fields.items()}


def ablation_table(paths) -> str:
    """First file = the baseline; each other row: the settings it changed and the deltas."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    base = runs[0]
    headline = base["validation"]["headline"]
    kind, metric = {"pooled_f1": ("pooled", "f1"),
                    "per_image_jaccard": ("per_image_mean", "jaccard")}[headline]
    rows = [f"| lever | validation {headline} | test {headline} (its threshold) | "
            "delta test | test AUC | train (min) |", "|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        changed = {k: v for k, v in _flatten(r["config"]).items()
                   if _flatten(base["config"]).get(k) != v}
        lever = ", ".join(f"{k.split('.')[1]}={v}" for k, v in sorted(changed.items())
                          if not k.endswith(("seed", "max_minutes"))) or "baseline"
        test = r["evaluation"][kind][metric]
        t = r["evaluation"]["inference"]["threshold"]
        delta = test - base["evaluation"][kind][metric]
        rows.append(f"| {lever} | {r['validation']['best_score']:.4f} | {test:.4f} "
                    f"({t:.2f}) | {delta:+.4f} | {r['evaluation'][kind]['auc']:.4f} | "
                    f"{r['train_seconds'] / 60:.0f} |")
    return "\n".join(rows)


def modes_table(paths) -> str:
    """benchmarks/inference_modes.py results: one row per model, split and mode."""
    rows = ["| model | split | mode | headline at its best threshold | at the model's | "
            "AUC |", "|---|---|---|---:|---:|---:|"]
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        name = r["model_dir"].rstrip("/").split("/")[-1]
        for mode, m in sorted(r["modes"].items(), key=lambda kv: kv[0] != "whole"):
            rows.append(f"| {name} | {r['split']} | {mode} | {m['at_best']:.4f} "
                        f"({m['best_threshold']:.2f}) | {m['at_model_threshold']:.4f} "
                        f"({r['model_threshold']:.2f}) | {m['auc']:.4f} |")
    return "\n".join(rows)


def budget_table(paths) -> str:
    """Folder runs with the plan's defaults against their time budget: test pooled Dice
    (F1; for K classes the mean over foreground classes) and per-image Jaccard."""
    rows = ["| dataset | arch | budget (min) | wall (min) | steps | input | inference | "
            "pooled Dice | per-image Jaccard | per class (pooled Dice) |",
            "|---|---|---:|---:|---:|---|---|---:|---:|---|"]
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        data, ev = r["config"]["data"], r["evaluation"]
        size = data["image_size"] or (f"x{data['scale']}" if data["scale"] else "native")
        size = "x".join(map(str, size)) if isinstance(size, list) else size
        cut = f"patches {data['patch_size']}" if data["patch_size"] else "whole"
        classes = ev["pooled"]["per_class"]
        per_class = ", ".join(f"{c} {s['dice']:.3f}" for c, s in classes.items()
                              if c != "background" and s["dice"] is not None)
        rows.append(f"| {os.path.basename(path).split('-')[0]} | {r['arch']} | "
                    f"{r['config']['train']['max_minutes']:g} | "
                    f"{r['train_seconds'] / 60:.1f} | {r['steps']} | {size}, {cut} | "
                    f"{ev['inference']['mode']} | {ev['pooled']['dice']:.4f} | "
                    f"{ev['per_image_mean']['jaccard']:.4f} | {per_class} |")
    return "\n".join(rows)


TABLES = {"bench": lambda paths: bench_table(paths[0]), "results": results_table,
          "scaling": lambda paths: scaling_table(paths[0]), "ablation": ablation_table,
          "modes": modes_table, "budget": budget_table}


def main(argv):
    if len(argv) < 3 or argv[1] not in TABLES:
        sys.exit(f"usage: {argv[0]} {{{'|'.join(TABLES)}}} RESULTS.json...")
    print(TABLES[argv[1]](argv[2:]))


if __name__ == "__main__":
    main(sys.argv)
