#!/usr/bin/env bash
# Attention patching at the paper's size (SPEC section 7; docs/patching.md) on a SLURM cluster, one GPU
# per job. Needs `pip install -e ".[slurm]"` on the login node. In order:
#   1. the reference run (experiment=patching_paper: 16k steps, weights kept at 0, 0.5k ... 16k);
#   2. sweep=patching_paper: one run per reference step, patched from step 0 (7 jobs);
#   3. sweep=patching_freeze_paper (5 jobs), or with FULL_GRID=1 sweep=patching_grid_paper (42 jobs);
#   4. the figure: <study>/patching.png and patching.json.
# Each step waits for its jobs. Re-run the same command after a preemption or a crash: finished
# jobs are skipped, the others resume from their last.ckpt. Launcher settings go as arguments:
#   bash sweeps/patching_paper.sh hydra.launcher.partition=gpu
#   bash sweeps/patching_paper.sh hydra/launcher=local hydra.launcher.n_jobs=1   # one GPU machine, no SLURM
set -euo pipefail
cd "$(dirname "$0")/.."

STUDY=${STUDY:-multiruns/patching_paper}

python -m biolab.train -m experiment=patching_paper hydra/launcher=slurm \
  hydra.sweep.dir="$STUDY" hydra.sweep.subdir=reference "$@"
sweeps=(patching_paper patching_freeze_paper)
[[ -n "${FULL_GRID:-}" ]] && sweeps=(patching_grid_paper)
for sweep in "${sweeps[@]}"; do
  python -m biolab.train -m "sweep=$sweep" "study.dir=$STUDY" "$@"
done
python -m biolab.analysis.patching "$STUDY"
