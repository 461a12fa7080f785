#!/usr/bin/env bash
# Attention patching on CPU (SPEC section 7; docs/patching.md): is the plateau the time it takes to
# build the attention circuit? The exact commands of the study:
#   1. the reference run: experiment=patching_cpu (quick-start model, N 2,048, 1,600 steps), which
#      keeps its weights at steps 0 50 100 200 400 800 1600 (the paper's 0..16k scaled by 1/10);
#   2. for every reference step, a run patched from step 0 with that checkpoint's attention patterns
#      (same seed and data as the reference: same initial weights and batches);
#   3. freeze runs: start = reference step (attention frozen where the reference run had it);
#      FULL_GRID=1 runs every (reference step, start) pair of the heat map instead;
#   4. the figure: <study>/patching.png (loss curves by reference step, heat map) + patching.json.
# Steps 2-3 run JOBS jobs at a time (default 2), one torch thread each (2 cores).
#
#   bash sweeps/patching_cpu.sh                       # 13 runs, ~2-3 h on 2 free cores (estimate; not yet run)
#   FULL_GRID=1 bash sweeps/patching_cpu.sh           # 43 runs, ~7 h (estimate)
#   STUDY=multiruns/my_study JOBS=1 bash sweeps/patching_cpu.sh
#
# Interrupt it at any time and run it again: a finished run returns at once (summary.json), an
# interrupted one resumes from its last.ckpt.
set -euo pipefail
cd "$(dirname "$0")/.."

STUDY=${STUDY:-multiruns/patching_cpu}
REFERENCE_STEPS=(0 50 100 200 400 800 1600)
GRID_STARTS=(0 50 100 200 400 800)            # heat-map columns (patching must start before step 1600)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

python -m biolab.train experiment=patching_cpu hydra.run.dir="$STUDY/reference"

for ref in "${REFERENCE_STEPS[@]}"; do
  if [[ -n "${FULL_GRID:-}" ]]; then
    starts=("${GRID_STARTS[@]}")
  elif (( ref > 0 && ref < 1600 )); then
    starts=(0 "$ref")                            # patched throughout, and frozen at the reference step
  else
    starts=(0)
  fi
  for start in "${starts[@]}"; do
    echo experiment=patching_cpu callbacks=patching \
      "callbacks.patching.reference=$STUDY/reference/trajectory/step_$ref.safetensors" \
      "callbacks.patching.start_step=$start" "hydra.run.dir=$STUDY/ref${ref}_start${start}"
  done
done | xargs -L 1 -P "${JOBS:-2}" python -m biolab.train

python -m biolab.analysis.patching "$STUDY"
