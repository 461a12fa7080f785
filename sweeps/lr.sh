#!/usr/bin/env bash
# Learning-rate robustness (SPEC section 6): `bash sweeps/lr.sh cpu` (quick-start, 4 rates, locally)
# or `bash sweeps/lr.sh paper hydra.launcher.partition=gpu` (paper preset, 5 rates, SLURM).
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-cpu}"; shift || true
python -m biolab.train -m "sweep=lr_${scale}" "$@"
python -m biolab.analysis table "multiruns/lr_${scale}"
