#!/usr/bin/env bash
# The plateau scaling law at CPU size (scaling issue; SPEC sections 6 and 10), as a prediction test:
#   1. N = 1k, 2k, 4k x 3 seeds, each run stopped at its plateau end;
#   2. the law fitted on them predicts N = 8k and 16k: predictions.json, written once (commit it now);
#   3. N = 8k, 16k x 3 seeds; 4. the fits, the prediction against the measurement, the figures.
# With the argument "half" the same for the 50%-accuracy step (sweep population_half_cpu, runs ~3x longer;
# each continues the plateau study's run of its N and seed from where that stopped: run the plateau study first).
# One job at a time with one thread each by default (the study then leaves a core free); interrupt it at
# any time and run it again: finished jobs are skipped, the others resume, the predictions are kept.
#   bash sweeps/population_scaling_cpu.sh                  # plateau end
#   bash sweeps/population_scaling_cpu.sh half             # 50%-accuracy step
#   bash sweeps/population_scaling_cpu.sh "" hydra.launcher.n_jobs=2   # extra arguments go to the sweep
set -euo pipefail
cd "$(dirname "$0")/.."
sweep=population_scaling_cpu
[ "${1:-}" = half ] && sweep=population_half_cpu
shift || true
if [ $sweep = population_half_cpu ] && [ ! -d multiruns/population_scaling_cpu ]; then
  echo "error: the half study continues the plateau study's runs: run 'bash $0' first" >&2; exit 2
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
small=1024,2048,4096
large=8192,16384
python -m biolab.train -m sweep=$sweep data.population_size=$small "$@"
if [ ! -e multiruns/$sweep/predictions.json ]; then
  python -m biolab.analysis population multiruns/$sweep --predict $large
fi
python -m biolab.train -m sweep=$sweep data.population_size=$large "$@"
python -m biolab.analysis population multiruns/$sweep
