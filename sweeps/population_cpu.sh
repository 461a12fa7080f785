#!/usr/bin/env bash
# Population-size study on CPU (dynamics issue; SPEC sections 6 and 10): 5 sizes x 3 seeds on the
# quick-start model, 2 jobs at a time, each stopped once attribute accuracy reaches 50%; then the
# table, the learning curves per N and the power-law fits of the plateau end and the 50% step.
# Interrupt it at any time and run it again: finished jobs are skipped, the others resume.
#   bash sweeps/population_cpu.sh                      # extra arguments go to the sweep, e.g.
#   bash sweeps/population_cpu.sh hydra.launcher.n_jobs=1
set -euo pipefail
cd "$(dirname "$0")/.."
python -m biolab.train -m sweep=population_cpu "$@"
python -m biolab.analysis population multiruns/population_cpu
