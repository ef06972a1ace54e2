#!/usr/bin/env bash
# Train and evaluate one dataset/architecture with the CPU recipe, then write
# benchmarks/results/<dataset>-<arch>.json. Re-running resumes an interrupted training.
#
#   benchmarks/reproduce/run.sh drive r2unet      # DRIVE, 48x48 patches, test = official 20
#   benchmarks/reproduce/run.sh isic unet         # ISIC 2017 at 128x128, validation = 51 pairs
#
# RUNS (default ./runs) holds model directories; R2U_DATA_DIR the raw datasets.
# TF_NUM_INTRAOP_THREADS=1 lets two runs share a 2-core machine without oversubscribing.
set -euo pipefail
export TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-1}  # 1.8x on this CPU (NOTES.md)
cd "$(dirname "$0")/../.."
dataset=${1:?dataset: drive or isic}; arch=${2:-r2unet}
runs=${RUNS:-runs}; model_dir="$runs/$dataset-$arch"; py=${PYTHON:-.venv/bin/python}
case "$dataset" in
  drive) recipe=(--steps_per_epoch=200 --epochs=15 --batch_size=32 --patch_size=48)
         split=test; extra=(--second_observer) ;;
  isic)  recipe=(--image_size=128 --batch_size=16 --epochs=6)
         split=validation; extra=() ;;
  *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
resume=(); [ -d "$model_dir/ckpt" ] && resume=(--resume)
start=$(date +%s)
"$py" bin/train --dataset="$dataset" --arch="$arch" --model_dir="$model_dir" \
  "${recipe[@]}" "${resume[@]}"
# Each (resumed) training appends its wall time; the result reports their sum.
echo $(( $(date +%s) - start )) >> "$model_dir/train_seconds.log"
train_s=$(awk '{s += $1} END {print s}' "$model_dir/train_seconds.log")
"$py" bin/evaluate --model_dir="$model_dir" --split="$split" "${extra[@]}" \
  --out="$model_dir/eval-$split.json" --figures=4 --figures_dir="$model_dir/figures"
# Weighted cross-entropy scores a pixel as if foreground were w1/w0 times likelier; the
# threshold w1/(w0+w1) undoes that (0.5 on the unweighted posterior). Reported beside
# the protocol's 0.5, never instead of it.
prior=$("$py" -c 'import json, sys; w = json.load(open(sys.argv[1]))["class_weights"]
print(round(w[1] / (w[0] + w[1]), 4))' "$model_dir/data/manifest.json")
"$py" bin/evaluate --model_dir="$model_dir" --split="$split" --threshold="$prior" \
  --out="$model_dir/eval-$split-prior.json"
"$py" benchmarks/reproduce/collect.py --model_dir="$model_dir" \
  --eval="$model_dir/eval-$split.json" --eval_prior="$model_dir/eval-$split-prior.json" \
  --train_seconds="$train_s" --out="benchmarks/results/$dataset-$arch.json"
