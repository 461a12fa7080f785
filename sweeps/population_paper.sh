#!/usr/bin/env bash
# The paper's population-size study (SPEC section 6, Figure 2) on a SLURM cluster: N = 4k ... 256k x
# 5 seeds on the paper preset, one GPU per job. Needs `pip install -e ".[slurm]"` on the login node.
# Re-run the same command after a preemption or a crash: finished jobs are skipped, the others
# resume from their last.ckpt. Pass the partition (and any other launcher setting) as arguments:
#   bash sweeps/population_paper.sh hydra.launcher.partition=gpu
set -euo pipefail
cd "$(dirname "$0")/.."
python -m biolab.train -m sweep=population_paper "$@"
python -m biolab.analysis population multiruns/population_paper
