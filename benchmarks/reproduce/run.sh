#!/usr/bin/env bash
# Train and evaluate one dataset/architecture with the CPU recipe, then write
# benchmarks/results/<dataset>-<arch>.json. Re-running resumes an interrupted training.
#
#   benchmarks/reproduce/run.sh drive r2unet   # DRIVE: 48x48 patches; test = official 20
#   benchmarks/reproduce/run.sh isic unet      # ISIC 2017 at 96x96; test = official
#                                              # Validation pairs at original resolution
#   benchmarks/reproduce/run.sh isic r2unet per_step_bn --recurrent_bn=per_step
#                                              # an ablation: a name, then bin/train flags
#
# The threshold is chosen on the validation split during training and stored with the
# model; evaluation on test uses it (and reports t=0.5 beside it). Nothing is chosen on
# test images. RUNS (default ./runs) holds model directories; R2U_DATA_DIR the raw data.
# TF_NUM_INTRAOP_THREADS=1 lets runs share a 2-core machine without oversubscribing.
set -euo pipefail
export TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-1}  # 1.8x on this CPU (NOTES.md)
cd "$(dirname "$0")/../.."
dataset=${1:?dataset: drive or isic}; arch=${2:-r2unet}; variant=${3:-}
lever=("${@:4}")  # bin/train flags of an ablation, after its name
name="$dataset-$arch${variant:+-$variant}"
runs=${RUNS:-runs}; model_dir="$runs/$name"; py=${PYTHON:-.venv/bin/python}
# Equal wall-clock budget per dataset: U-Net steps are ~2.5x cheaper than R2U-Net's.
case "$dataset-$arch" in
  drive-unet|drive-resunet) steps=6500; every=650 ;;
  drive-*) steps=2700; every=300 ;;
  isic-unet|isic-resunet) steps=1250; every=250 ;;
  isic-*) steps=500; every=100 ;;
esac
case "$dataset" in
  drive) recipe=(--patch_size=48 --batch_size=32 --contrast --loss=ce)
         extra=(--second_observer) ;;
  isic)  recipe=(--image_size=96 --batch_size=16 --loss=ce+dice)
         extra=() ;;
  *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
# --recurrent_bn=shared: the committed baseline runs predate the presets' per_step (the
# ablation that chose it passes --recurrent_bn=per_step after this).
recipe+=(--steps="$steps" --steps_per_epoch="$every" --lr_schedule=cosine
         --warmup_steps=100 --recurrent_bn=shared --max_minutes="${MAX_MINUTES:-62}")
resume=(); [ -d "$model_dir/ckpt" ] && resume=(--resume)
start=$(date +%s)
"$py" bin/train --dataset="$dataset" --arch="$arch" --model_dir="$model_dir" \
  "${recipe[@]}" "${lever[@]}" "${resume[@]}"
# Each (resumed) training appends its wall time; the result reports their sum.
echo $(( $(date +%s) - start )) >> "$model_dir/train_seconds.log"
train_s=$(awk '{s += $1} END {print s}' "$model_dir/train_seconds.log")
"$py" bin/evaluate --model_dir="$model_dir" --split=test "${extra[@]}" \
  --out="$model_dir/eval-test.json" --figures=4 --figures_dir="$model_dir/figures"
"$py" benchmarks/reproduce/collect.py --model_dir="$model_dir" \
  --eval="$model_dir/eval-test.json" --train_seconds="$train_s" \
  --out="benchmarks/results/$name.json"
