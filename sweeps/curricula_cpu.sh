#!/usr/bin/env bash
# Curricula and imbalance on CPU (SPEC section 8; docs/curricula.md): which training distribution
# learns the most facts in a fixed budget (1,500 steps of the quick-start model) as N grows?
#   1. power law alpha 0, 0.2, ... 1 x N 4,096, 8,192, 16,384   (18 jobs; alpha 0 is the uniform reference)
#   2. celebrities n 256, 1,024 x w 4, 8, 16 x N                 (18 jobs)
#   3. warm-up k 256, 1,024 x e 1, 2, 4 epochs x N               (18 jobs)
#   4. the figures: python -m biolab.analysis curricula multiruns/curricula_cpu
# (the grids are conf/sweep/curricula_{power_law,celebrities,warmup}_cpu.yaml: 54 jobs.)
# JOBS jobs at a time per sweep (default 2: one per core of a 2-core machine; ~10-15 min per job
# there, so ~4.5-7 h in all: an estimate); PARALLEL=1 runs the three sweeps at once (a many-core or GPU machine:
# docs/curricula.md gives the command of the committed run).
# Interrupt it at any time and run it again: finished jobs are skipped, the others resume.
#   bash sweeps/curricula_cpu.sh
#   PARALLEL=1 JOBS=5 bash sweeps/curricula_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
STUDIES=(power_law celebrities warmup)

for study in "${STUDIES[@]}"; do
  cmd=(python -m biolab.train -m "sweep=curricula_${study}_cpu" "hydra.launcher.n_jobs=${JOBS:-2}" "$@")
  if [[ -n "${PARALLEL:-}" ]]; then
    mkdir -p multiruns/curricula_cpu
    "${cmd[@]}" > "multiruns/curricula_cpu/${study}.log" 2>&1 &
  else
    "${cmd[@]}"
  fi
done
wait
python -m biolab.analysis curricula multiruns/curricula_cpu
