#!/usr/bin/env bash
# Attention patching on CPU (SPEC section 7; docs/patching.md): is the plateau the time it takes to
# build the attention circuit? The whole study, in order:
#   1. the reference run: experiment=patching_cpu (quick-start model, N 2,048, 1,600 steps), which
#      keeps its weights at steps 0 50 100 200 400 800 1600 (the paper's 0..16k scaled by 1/10);
#   2. sweep=patching_cpu: for every reference step, a run patched from step 0 with that
#      checkpoint's attention patterns (same seed and data as the reference: same initial weights
#      and batches);
#   3. sweep=patching_freeze_cpu: attention frozen at step k (start = reference = k), or, with
#      FULL_GRID=1, sweep=patching_grid_cpu: every (reference step, start) pair of the heat map;
#   4. the figure: <study>/patching.png (loss curves by reference step, freeze curves, heat map)
#      and patching.json.
# Steps 2-3 run JOBS jobs at a time (default 2; one torch thread each on 2 cores).
#
#   bash sweeps/patching_cpu.sh                       # 13 runs, ~2-3 h on 2 free cores
#   FULL_GRID=1 bash sweeps/patching_cpu.sh           # 43 runs, ~7 h (estimate)
#   STUDY=multiruns/n8192 bash sweeps/patching_cpu.sh data.population_size=8192   # any override, every run
#
# Interrupt it at any time and run it again: a finished run returns at once (summary.json), an
# interrupted one resumes from its last.ckpt.
set -euo pipefail
cd "$(dirname "$0")/.."

STUDY=${STUDY:-multiruns/patching_cpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

python -m biolab.train experiment=patching_cpu hydra.run.dir="$STUDY/reference" "$@"
sweeps=(patching_cpu patching_freeze_cpu)
[[ -n "${FULL_GRID:-}" ]] && sweeps=(patching_grid_cpu)
for sweep in "${sweeps[@]}"; do
  python -m biolab.train -m "sweep=$sweep" "study.dir=$STUDY" "hydra.launcher.n_jobs=${JOBS:-2}" "$@"
done
python -m biolab.analysis.patching "$STUDY"
