#!/usr/bin/env bash
# Curricula over 3 new seeds, chosen on one set and reported on another (the reliability issue's rule for
# comparisons a conclusion rests on). Selection: the committed seed-0 grid (docs/curricula_cpu/curricula.json:
# per N, the uniform run and the setting of each study with the lowest final val/attr_loss). Report: those
# settings re-trained with training seeds 1, 2, 3 (same people: data.seed stays 0) and evaluated on a held-out
# test set (data.test_eval_size: seen people outside the val sample), then per N the mean with a 95% interval
# and the difference to uniform paired by seed (python -m biolab.analysis seeds).
# 3 N x 4 settings x 3 seeds = 36 jobs of 1,500 steps: ~13 h on one CPU core (an estimate from the grid's
# ~1.3 s per step), minutes on a GPU machine with PARALLEL=1 JOBS=12.
#   bash sweeps/curricula_seeds_cpu.sh [SELECTION_JSON]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
selection=${1:-docs/curricula_cpu/curricula.json}
out=multiruns/curricula_seeds_cpu
# one line per (N, name, study, overrides): the uniform run and each study's best, from the selection file
plan=$(python - "$selection" <<'PY'
import json, sys
chosen = json.load(open(sys.argv[1]))["per_population_size"]
for size, entry in sorted(chosen.items(), key=lambda kv: int(kv[0])):
    runs = {"uniform": entry["uniform"], **entry["best"]}
    for name, run in runs.items():
        if run is None:
            continue
        study, overrides = run["job"].split("/", 1)
        print(size, name, study, overrides.replace(",", " "))
PY
)
pids=()
while read -r size name study overrides; do
  # shellcheck disable=SC2086  # the overrides are separate words
  cmd=(python -m biolab.train -m "sweep=curricula_${study}_cpu" $overrides "seed=1,2,3" "data.test_eval_size=256"
       "hydra.sweep.dir=$out/N$size/$name" "hydra.launcher.n_jobs=${JOBS:-1}")
  if [[ -n "${PARALLEL:-}" ]]; then
    mkdir -p "$out/N$size"
    "${cmd[@]}" > "$out/N$size/$name.log" 2>&1 &
    pids+=($!)
  else
    "${cmd[@]}"
  fi
done <<< "$plan"
for pid in "${pids[@]}"; do wait "$pid"; done
for dir in "$out"/N*/; do
  python -m biolab.analysis seeds "$dir" --metric test/attr_loss --metric test/attr_acc --reference uniform
done
