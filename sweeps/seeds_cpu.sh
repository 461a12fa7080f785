#!/usr/bin/env bash
# The CPU quick-start over 5 seeds (training and population seed together), 2 jobs at a time:
# how much the phase milestones vary from seed to seed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m biolab.train -m sweep=seeds_cpu "$@"
python -m biolab.analysis table multiruns/seeds_cpu
