#!/usr/bin/env bash
# Train and evaluate one dataset/architecture with the CPU recipe, then write
# benchmarks/results/<dataset>-<arch>.json. Re-running resumes an interrupted training.
#
#   benchmarks/reproduce/run.sh drive r2unet      # DRIVE, 48x48 patches, test = official 20
#   benchmarks/reproduce/run.sh isic unet         # ISIC 2017 at 128x128, validation = 51 pairs
#
# RUNS (default ./runs) holds model directories; R2U_DATA_DIR the raw datasets.
set -euo pipefail
cd "$(dirname "$0")/../.."
dataset=${1:?dataset: drive or isic}; arch=${2:-r2unet}
runs=${RUNS:-runs}; model_dir="$runs/$dataset-$arch"; py=${PYTHON:-.venv/bin/python}
case "$dataset" in
  drive) recipe=(--steps_per_epoch=200 --epochs=15 --batch_size=32 --patch_size=48)
         split=test; extra=(--second_observer) ;;
  isic)  recipe=(--image_size=128 --batch_size=16 --epochs=10)
         split=validation; extra=() ;;
  *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
resume=(); [ -d "$model_dir/ckpt" ] && resume=(--resume)
start=$(date +%s)
"$py" bin/train --dataset="$dataset" --arch="$arch" --model_dir="$model_dir" \
  "${recipe[@]}" "${resume[@]}"
train_s=$(( $(date +%s) - start ))
"$py" bin/evaluate --model_dir="$model_dir" --split="$split" "${extra[@]}" \
  --out="$model_dir/eval-$split.json" --figures=4 --figures_dir="$model_dir/figures"
"$py" benchmarks/reproduce/collect.py --model_dir="$model_dir" \
  --eval="$model_dir/eval-$split.json" --train_seconds="$train_s" \
  --out="benchmarks/results/$dataset-$arch.json"
