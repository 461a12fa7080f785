#!/usr/bin/env bash
# Fine-tuning study on CPU (SPEC section 8; docs/finetuning.md): does fine-tuning on new people
# erase the knowledge of the old ones, faster with more new people, and does replay help?
#   1. the pre-training run: the quick-start (N 1,536, 1,200 steps, ~8 min on 2 free cores) in
#      runs/quickstart, skipped if it already finished there;
#   2. the fine-tuning sweep (conf/sweep/finetune_cpu.yaml): M = 96, 384, 1536 new people x replay
#      weight w = 0, 1/8, 1/2, 2; 400 steps each, 2 jobs at a time, one torch thread each;
#      12 jobs, ~5-6 min each on 2 free cores (estimate; not yet run) -> multiruns/finetune_cpu;
#   3. the figures and table: multiruns/finetune_cpu/finetune_trajectories.png (pre-training loss
#      against fine-tuning loss, per M and per w), finetune_curves.png (old / new loss and accuracy
#      against steps), finetune_table.csv; and runs/quickstart/hallucination.png (unseen people
#      against seen people during pre-training).
# Interrupt it at any time and run it again: finished runs are skipped, the others resume from
# their own last.ckpt (a fine-tuning run never re-reads init_from once it has a checkpoint).
#   bash sweeps/finetune_cpu.sh                       # extra arguments go to the sweep, e.g.
#   bash sweeps/finetune_cpu.sh hydra.launcher.n_jobs=1
set -euo pipefail
cd "$(dirname "$0")/.."
PRETRAIN_THREADS=${OMP_NUM_THREADS:-2}            # one run: both cores
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}       # sweep: 2 jobs x 1 thread

PRETRAIN=runs/quickstart
OMP_NUM_THREADS=$PRETRAIN_THREADS python -m biolab.train experiment=quickstart hydra.run.dir="$PRETRAIN"
python -m biolab.train -m sweep=finetune_cpu init_from="$PRETRAIN/checkpoints/last.ckpt" "$@"
python -m biolab.analysis.finetune multiruns/finetune_cpu
python -m biolab.analysis.hallucination "$PRETRAIN"
