#!/usr/bin/env bash
# Attention patching on CPU (SPEC section 7; docs/patching.md): is the plateau the time it takes to
# build the attention circuit? The exact commands of the study:
#   1. the reference run: experiment=patching_cpu (quick-start model, N 2,048, 1,600 steps), which
#      keeps its weights at steps 0 50 100 200 400 800 1600 (the paper's 0..16k scaled by 1/10);
#   2. for every reference step, a run patched from step 0 (same seed and data: same initial weights
#      and batches) with that checkpoint's attention patterns;
#   3. freeze runs: start = reference step (attention frozen where the reference run had it);
#      FULL_GRID=1 runs every (reference step, start) pair of the heat map instead;
#   4. the figure: <study>/patching.png (loss curves by reference step, heat map) + patching.json.
#
#   bash sweeps/patching_cpu.sh                       # 13 runs, ~3 h on 2 cores (not yet run)
#   FULL_GRID=1 bash sweeps/patching_cpu.sh           # 43 runs, ~10 h
#   STUDY=runs/my_study bash sweeps/patching_cpu.sh   # another output directory
#
# Re-running resumes: a finished run returns at once (summary.json), an interrupted one resumes from
# its last.ckpt. Estimated times: 1,600 unpatched steps ~10 min, a patched run ~1.5x that.
set -euo pipefail

STUDY=${STUDY:-runs/patching_cpu}
REFERENCE_STEPS=(0 50 100 200 400 800 1600)
GRID_STARTS=(0 50 100 200 400 800)            # heat-map columns (patching must start before step 1600)
TRAIN=(python -m biolab.train experiment=patching_cpu)

"${TRAIN[@]}" hydra.run.dir="$STUDY/reference"

for ref in "${REFERENCE_STEPS[@]}"; do
  if [[ -n "${FULL_GRID:-}" ]]; then
    starts=("${GRID_STARTS[@]}")
  elif (( ref > 0 && ref < 1600 )); then
    starts=(0 "$ref")                            # patched throughout, and frozen at the reference step
  else
    starts=(0)
  fi
  for start in "${starts[@]}"; do
    "${TRAIN[@]}" callbacks=patching \
      callbacks.patching.reference="$STUDY/reference/trajectory/step_$ref.safetensors" \
      callbacks.patching.start_step="$start" \
      hydra.run.dir="$STUDY/ref${ref}_start${start}"
  done
done

python -m biolab.analysis.patching "$STUDY"
