"""Analysis of sweeps: collect a sweep directory into one table, fits and figures per study.

    python -m biolab.analysis table SWEEP_DIR          # table.csv of every job (overrides + summary)
    python -m biolab.analysis population SWEEP_DIR     # + learning curves per N, plateau scaling law
    python -m biolab.analysis patching|finetune|hallucination ...   # see each module's docstring
"""

import sys
from typing import Callable


def run_cli(action: Callable[[], object]) -> int:
    """Exit code of a study's command line: 0 once `action` (the analysis and its printing) returns;
    a missing input (FileNotFoundError) or a bad value (ValueError) prints ``error: ...`` and gives 2."""
    try:
        action()
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
