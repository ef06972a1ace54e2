#!/usr/bin/env bash
# Creates one venv per peer under benchmarks/peers/.venv-<peer> with pinned versions.
#
#   benchmarks/peers/setup.sh [torch|keras|monai|all]   (default: all)
#
# Idempotent: a venv whose stamp file matches the pinned requirements and whose
# imports work is skipped. The peers never touch the library's own .venv.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

# Pins. torch==2.13.0 resolves to the local CPU wheel (2.13.0+cpu); never install
# an unpinned torch, which would pull the multi-GB CUDA build.
TORCH_PIN="torch==2.13.0"
NUMPY_PIN="numpy==2.4.6"
MONAI_PIN="monai==1.6.1"
TF_PIN="tensorflow==2.21.0"
TF_KERAS_PIN="tf-keras==2.21.0"
KUC_PIN="keras-unet-collection==0.1.13"
PILLOW_PIN="pillow==13.0.0"

reqs_for() {
  case "$1" in
    torch) echo "$TORCH_PIN $NUMPY_PIN" ;;
    monai) echo "$TORCH_PIN $MONAI_PIN $NUMPY_PIN" ;;
    keras) echo "$TF_PIN $TF_KERAS_PIN $KUC_PIN $PILLOW_PIN $NUMPY_PIN" ;;
    *) echo "unknown peer: $1" >&2; return 1 ;;
  esac
}

check_for() {
  case "$1" in
    torch) echo "import torch, numpy; print('torch', torch.__version__)" ;;
    monai) echo "import torch, monai, numpy; print('torch', torch.__version__, 'monai', monai.__version__)" ;;
    keras) echo "import tensorflow as tf, tf_keras, keras_unet_collection, PIL; print('tf', tf.__version__, 'tf_keras', tf_keras.__version__)" ;;
  esac
}

setup_peer() {
  local peer="$1"
  local venv="$HERE/.venv-$peer"
  local reqs
  reqs="$(reqs_for "$peer")"
  local stamp="$venv/.r2u-peer-complete"
  local env_prefix=()
  [[ "$peer" == keras ]] && env_prefix=(env TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2)

  if [[ -f "$stamp" && "$(cat "$stamp")" == "$reqs" ]] \
      && "${env_prefix[@]}" "$venv/bin/python" -c "$(check_for "$peer")" >/dev/null 2>&1; then
    echo "[$peer] complete, skipping ($venv: $reqs)"
    return 0
  fi

  rm -f "$stamp"
  if [[ -x "$venv/bin/python" ]]; then
    echo "[$peer] completing venv $venv"
  else
    echo "[$peer] creating venv $venv"
    "$PYTHON" -m venv "$venv"
  fi
  echo "[$peer] pip install $reqs"
  # shellcheck disable=SC2086  # word splitting of the pin list is intended.
  "$venv/bin/python" -m pip install --quiet $reqs
  echo "[$peer] checking imports"
  "${env_prefix[@]}" "$venv/bin/python" -c "$(check_for "$peer")"
  echo "$reqs" > "$stamp"
  echo "[$peer] done"
}

main() {
  local which="${1:-all}"
  case "$which" in
    all) for p in torch monai keras; do setup_peer "$p"; done ;;
    torch|monai|keras) setup_peer "$which" ;;
    *) echo "usage: $0 [torch|keras|monai|all]" >&2; exit 2 ;;
  esac
}

main "$@"
