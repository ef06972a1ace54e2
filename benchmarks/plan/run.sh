#!/usr/bin/env bash
# Train a folder dataset with the plan's defaults in a wall-time budget, evaluate it on
# its test split and write benchmarks/results/<name>.json (evaluation, config, plan,
# budget measurements, wall time and the command).
#
#   benchmarks/folders.py usgra /tmp/folders/usgra
#   benchmarks/plan/run.sh usgra-r2unet-60 /tmp/folders/usgra 60
#   benchmarks/plan/run.sh usgra-unet-60 /tmp/folders/usgra 60 --arch=unet
#
# Everything after the minutes goes to bin/train. RUNS (default ./runs) holds the model
# folders; TF_NUM_INTRAOP_THREADS=1 lets two runs share a 2-core machine.
set -euo pipefail
export TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-1}
cd "$(dirname "$0")/../.."
name=${1:?name}; data_dir=${2:?folder dataset}; minutes=${3:?minutes}
flags=("${@:4}")
runs=${RUNS:-runs}; model_dir="$runs/$name"; py=${PYTHON:-.venv/bin/python}
command="benchmarks/plan/run.sh $*"
start=$(date +%s)
"$py" bin/train --dataset=folder --data_dir="$data_dir" --model_dir="$model_dir" \
  --max_minutes="$minutes" "${flags[@]}"
train_s=$(( $(date +%s) - start ))
"$py" bin/evaluate --model_dir="$model_dir" --split=test \
  --out="$model_dir/eval-test.json" --figures=4 --figures_dir="$model_dir/figures"
"$py" benchmarks/reproduce/collect.py --model_dir="$model_dir" \
  --eval="$model_dir/eval-test.json" --train_seconds="$train_s" \
  --command="$command" --out="benchmarks/results/$name.json"
