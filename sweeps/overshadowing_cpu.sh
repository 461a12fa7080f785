#!/usr/bin/env bash
# Knowledge overshadowing against N and width on CPU (overshadowing issue; SPEC section 9.1;
# docs/overshadowing.md): 2 sizes x 2 widths x 2 seeds of the overshadowing_cpu preset, one job at a
# time; then the per-snapshot analysis of every run (RO per P, bootstrap over pairs, circuit view) and
# the comparison across runs. Interrupt it and run it again: finished jobs and analysed snapshots are
# skipped.
#   bash sweeps/overshadowing_cpu.sh                       # extra arguments go to the sweep
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python -m biolab.train -m sweep=overshadowing_cpu "$@"
for run in multiruns/overshadowing_sweep_cpu/*/; do
  python -m biolab.mech overshadowing "$run"
done
python -m biolab.analysis overshadowing multiruns/overshadowing_sweep_cpu
