"""Command line of biolab.analysis: one sub-command per study, each reading a sweep or run directory.

    python -m biolab.analysis table multiruns/lr_cpu
    python -m biolab.analysis population multiruns/population_cpu
    python -m biolab.analysis patching multiruns/patching_cpu          # = python -m biolab.analysis.patching
    python -m biolab.analysis finetune multiruns/finetune_cpu          # = python -m biolab.analysis.finetune
    python -m biolab.analysis hallucination runs/quickstart            # = python -m biolab.analysis.hallucination
    python -m biolab.analysis curricula multiruns/curricula_cpu        # = python -m biolab.analysis.curricula
    python -m biolab.analysis overshadowing multiruns/overshadowing_sweep_cpu   # RO per P across runs
    python -m biolab.analysis seeds multiruns/finetune_seeds_cpu --reference ...  # settings over seeds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from biolab.analysis import run_cli
from biolab.analysis.collect import collect_sweep, write_table


def _table(sweep_dir: Path) -> None:
    jobs = collect_sweep(sweep_dir)
    path = write_table(jobs, sweep_dir / "table.csv")
    print(f"{len(jobs)} jobs ({sum(j.finished for j in jobs)} finished) -> {path}")


COMMANDS = {"table": _table}
# studies whose module has its own command line: the remaining arguments are passed on
DELEGATED = ("population", "patching", "finetune", "hallucination", "curricula", "overshadowing", "seeds")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        import importlib

        return importlib.import_module(f"biolab.analysis.{argv[0]}").main(argv[1:]) or 0
    parser = argparse.ArgumentParser(prog="python -m biolab.analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=sorted([*COMMANDS, *DELEGATED]), help="what to compute")
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory, e.g. multiruns/population_cpu")
    args = parser.parse_args(argv)
    return run_cli(lambda: COMMANDS[args.study](args.sweep_dir))


if __name__ == "__main__":
    sys.exit(main())
