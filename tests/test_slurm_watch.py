"""biolab.slurm without a scheduler: refused runs inside submitit jobs.

Inside a submitit job a ConfigError is raised (submitit pickles it, the launcher raises it with its message);
elsewhere `python -m biolab.train` still prints `error: ...` and exits 2 (tests/test_train.py). End to end with
hydra-submitit-launcher's local executor, which runs jobs through the same submitit entry point as SLURM.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from biolab.slurm import in_submitit_job

REPO = Path(__file__).resolve().parents[1]


def test_in_submitit_job_needs_submitits_job_runner(monkeypatch):
    import submitit.core.submission  # noqa: F401  (imported by submitit's job entry point)
    monkeypatch.delenv("SUBMITIT_FOLDER", raising=False)
    assert not in_submitit_job()
    monkeypatch.setenv("SUBMITIT_FOLDER", "/somewhere/.submitit/12")
    assert in_submitit_job()
    monkeypatch.delitem(sys.modules, "submitit.core.submission")  # a plain process that inherited the variable
    assert not in_submitit_job()


def test_refused_run_in_a_submitit_job_fails_the_sweep_with_its_message(tmp_path):
    """hydra/launcher=submitit_local: the job runs `python -m submitit.core._submit` like a SLURM job."""
    command = [sys.executable, "-m", "biolab.train", "-m", "experiment=tiny", "trainer.max_steps=0",
               "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "ConfigError: trainer.max_steps must be a positive integer, got 0" in done.stderr.splitlines()[-1]
    (job_log,) = tmp_path.glob(".submitit/*/*_0_log.err")
    assert "error: trainer.max_steps must be a positive integer, got 0" in job_log.read_text()
