#!/usr/bin/env bash
# The paper-scale evidence pack on one GPU machine (issue 15; docs/paper_gpu/README.md), in priority order:
#   a  the throughput benchmark of the paper preset (compiled, static shapes, device batches) and, on the same
#      GPU, of the preset without those levers: benchmarks/results/<gpu>_paper_{static,baseline}.json
#   b  the paper model at N = 4k, 8k, 16k, 32k, 64k, each stopped at its plateau end
#      (callbacks.phases.stop_after=plateau_end_step), then the population figures (biolab.analysis population)
#   c  the full paper preset (N 64k, 16k steps) with attention metrics and trajectory checkpoints
#   d  attention patching: one run patched from step 0 with the attention of c's step-16k weights, stopped at
#      its baseline crossing, then the patching figure (biolab.analysis.patching; c is the unpatched reference)
#   e  N = 128k and 256k, as in b
#   f  (last) the patched run of d trained to 16k steps, for the final-loss comparison (paper 0.0079 vs 0.014)
# Runs train in runs/paper_gpu/ (checkpoints stay out of git); each finished run's config.yaml, metrics.csv and
# summary.json are copied to docs/paper_gpu/<run>/. A step whose files are in docs/paper_gpu is skipped, so
# running the script again continues where it stopped. One seed (seed 0, population seed 0) throughout.
#
# Time: every command runs under the time left of BUDGET_S (default 540 s: one 10-minute command with a margin);
# when it is spent the script stops (exit 3) and the next launch continues: an unfinished run resumes from
# its last.ckpt if the machine still holds it, else starts again. With OUT set (a folder that is copied back),
# docs/paper_gpu and the benchmark JSON files are copied there after every step.
#   bash sweeps/paper_gpu.sh                      # everything not done yet, 540 s at most
#   BUDGET_S=300 STEPS=ab bash sweeps/paper_gpu.sh
#   DRY_RUN=1 bash sweeps/paper_gpu.sh            # print the commands, run nothing (works without a GPU)
#   REDO=c bash sweeps/paper_gpu.sh               # run step c again even though its files exist
# Environment: PYTHON (default python), BUDGET_S, STEPS (default abcdef), REDO, DRY_RUN, OUT, RUNS.
# Exit codes: 0 all requested steps done, 3 stopped by the time budget, 2 a step's inputs are missing,
# anything else: the failing command's.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
BUDGET_S=${BUDGET_S:-540}
STEPS=${STEPS:-abcdef}
REDO=${REDO:-}
DRY_RUN=${DRY_RUN:-}
RUNS=${RUNS:-runs/paper_gpu}
DOCS=docs/paper_gpu
MIN_START_S=45       # a command is not started with less time than this left
START=$SECONDS
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr '[:upper:]' '[:lower:]' \
      | sed -E 's/nvidia //; s/[^a-z0-9]+/_/g; s/_+$//' || true)
GPU=${GPU:-gpu}
REFERENCE=$RUNS/paper/trajectory/step_16000.safetensors
missing_inputs=0
PAPER_RUN=(experiment=paper callbacks=trajectory seed=0 data.seed=0)  # step c; its step-16k weights: d's reference

say() { echo "[paper_gpu $(date +%H:%M:%S)] $*"; }

save_out() {  # copy the results to $OUT (the folder a GPU session gets back)
  [ -n "${OUT:-}" ] && [ -z "$DRY_RUN" ] || return 0
  mkdir -p "$OUT"
  [ -d "$DOCS" ] && cp -r "$DOCS" "$OUT/"
  cp benchmarks/results/"${GPU}"_paper_*.json "$OUT/" 2>/dev/null || true
}

run() {  # run a command within the time left; stop the script (exit 3) when the budget is spent
  if [ -n "$DRY_RUN" ]; then
    printf '+'; printf ' %q' "$@"; echo
    return 0
  fi
  local left=$((BUDGET_S - (SECONDS - START))) rc=0
  if ((left < MIN_START_S)); then
    say "time budget used ($BUDGET_S s); run the script again to continue"
    save_out
    exit 3
  fi
  say "($left s left) $*"
  timeout --kill-after=30 "$left" "$@" || rc=$?
  if ((rc == 124 || rc == 137)); then
    say "stopped by the time budget; run the script again: the run resumes from its last checkpoint"
    save_out
    exit 3
  fi
  if ((rc != 0)); then
    say "failed (exit $rc): $*"
    save_out
    exit "$rc"
  fi
}

wanted() { [[ $STEPS == *$1* ]]; }
redo() { [[ $REDO == *$1* ]]; }
finished() { [ -f "$1/summary.json" ] && grep -q '"completed": true' "$1/summary.json"; }

copy_run() {  # copy_run RUN_DIR DOCS_DIR: the three files of a finished run
  [ -z "$DRY_RUN" ] || return 0
  finished "$1" || { say "$1 has no completed summary.json"; exit 1; }
  mkdir -p "$2"
  cp "$1/config.yaml" "$1/metrics.csv" "$1/summary.json" "$2/"
}

train_run() {  # train_run STEP NAME OVERRIDES...: train runs/paper_gpu/NAME unless docs/paper_gpu/NAME is done
  local step=$1 name=$2
  shift 2
  if finished "$DOCS/$name" && ! redo "$step"; then
    say "step $step: $name done ($DOCS/$name/summary.json)"
    return 0
  fi
  run "$PY" -m biolab.train "$@" hydra.run.dir="$RUNS/$name"
  copy_run "$RUNS/$name" "$DOCS/$name"
  save_out
}

population() {  # population STEP N...: the paper model at these N, each stopped at its plateau end, then figures
  local step=$1 n
  shift
  for n in "$@"; do
    train_run "$step" "population/N$n" experiment=paper seed=0 data.seed=0 data.population_size="$n" \
      callbacks.phases.stop_after=plateau_end_step
  done
  run "$PY" -m biolab.analysis population "$DOCS/population"
  save_out
}

benchmark() {  # benchmark NAME OVERRIDES...: benchmarks/results/<gpu>_paper_NAME.json unless it exists
  local name=$1 out
  shift
  out=benchmarks/results/${GPU}_paper_$name.json
  if [ -f "$out" ] && ! redo a; then
    say "step a: $out done"
    return 0
  fi
  run "$PY" benchmarks/throughput.py --experiment paper --device cuda --steps 100 --rounds 1 --out "$out" "$@"
  save_out
}

patched() {  # patched NAME OVERRIDES...: a run patched from step 0 with the attention of c's step-16k weights
  local name=$1
  shift
  if finished "$DOCS/$name" && ! redo d; then
    say "$name done ($DOCS/$name/summary.json)"
    return 0
  fi
  if [ ! -f "$REFERENCE" ] && [ -z "$DRY_RUN" ]; then
    say "$name needs the reference weights $REFERENCE (written by step c on this machine, not kept in git):" \
        "missing, so step c's run is trained again first (into $RUNS/paper; $DOCS/paper is kept)"
    run "$PY" -m biolab.train "${PAPER_RUN[@]}" hydra.run.dir="$RUNS/paper"
  fi
  if [ ! -f "$REFERENCE" ] && [ -z "$DRY_RUN" ]; then
    say "$name: input missing: $REFERENCE"
    missing_inputs=1
    return 0
  fi
  train_run d "$name" experiment=patching_paper callbacks=patching seed=0 data.seed=0 \
    callbacks.patching.reference="$REFERENCE" callbacks.patching.start_step=0 "$@"
}

say "GPU: $GPU; steps $STEPS; budget $BUDGET_S s${DRY_RUN:+ (dry run: commands only)}"
if [ -z "$DRY_RUN" ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  say "this machine has no CUDA GPU (torch.cuda.is_available() is false); DRY_RUN=1 prints the commands"
  exit 2
fi

if wanted a; then
  benchmark static
  benchmark baseline module.compile=false data.pad_to=null data.device_batches=false data.num_workers=2
fi
if wanted b; then
  population b 4000 8000 16000 32000 64000
fi
if wanted c; then
  train_run c paper "${PAPER_RUN[@]}"
  if [ -z "$DRY_RUN" ] && finished "$RUNS/paper"; then cp "$RUNS"/paper/*.png "$DOCS/paper/"; fi  # its figures
fi
if wanted d; then
  patched patching/ref16000_start0 callbacks.phases.stop_after=plateau_end_step
  # the unpatched run whose weights were the reference (the run of step c, or its regeneration)
  if [ -z "$DRY_RUN" ] && finished "$RUNS/paper" && [ -f "$REFERENCE" ] \
     && { redo d || [ ! -f "$DOCS/patching/reference/summary.json" ]; }; then
    copy_run "$RUNS/paper" "$DOCS/patching/reference"
  fi
  if [ -n "$DRY_RUN" ] || [ -f "$DOCS/patching/reference/summary.json" ]; then
    run "$PY" -m biolab.analysis.patching "$DOCS/patching"
    save_out
  fi
fi
if wanted e; then
  population e 128000 256000
fi
if wanted f; then
  patched patched_full
fi
save_out
if ((missing_inputs)); then exit 2; fi
say "done: steps $STEPS"
