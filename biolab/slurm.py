"""SLURM sweeps (hydra/launcher=slurm, slurm_ddp): the job side.

Inside a job, :func:`in_submitit_job` tells ``biolab.train`` to raise a refused run's ConfigError rather than
``sys.exit(2)``. A SystemExit passes submitit's exception handling, so the job would leave no result file and
the launching command (which, without SLURM accounting, cannot learn that the job ended) would wait forever;
an exception is pickled into the result and raised by the launcher.
"""

from __future__ import annotations

import os
import sys


def in_submitit_job() -> bool:
    """True in a process that submitit started to run a submitted function (a SLURM job of a sweep, or
    submitit's local executor): submitit sets SUBMITIT_FOLDER there before it unpickles the job."""
    return bool(os.environ.get("SUBMITIT_FOLDER")) and "submitit.core.submission" in sys.modules
