"""biolab.slurm without a scheduler: refused runs inside submitit jobs, and the launcher's squeue watch.

- Inside a submitit job a ConfigError is raised (submitit pickles it, the launcher raises it with its message);
  elsewhere `python -m biolab.train` still prints `error: ...` and exits 2. End to end with hydra-submitit-
  launcher's local executor, which runs jobs through the same submitit entry point as SLURM.
- SlurmWatch against a fake squeue: it stops the waiting launcher for a job that can never start or that
  ended without a result, and for nothing else. (tests/test_slurm.py: the same on a real SLURM.)
"""

from __future__ import annotations

import logging
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from biolab.slurm import SlurmJobError, SlurmWatch, in_submitit_job, job_verdict

REPO = Path(__file__).resolve().parents[1]
SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


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


def test_job_verdict():
    assert job_verdict("RUNNING", "None") is None
    assert job_verdict("PENDING", "Resources") is None  # busy, not impossible
    assert job_verdict("PENDING", "BeginTime") is None  # a requeued job waiting to restart
    assert job_verdict("PENDING", "PartitionConfig")[1] is True
    assert job_verdict("PENDING", "PartitionTimeLimit")[0].startswith("can never start")
    assert job_verdict("FAILED", "NonZeroExitCode") == ("ended (FAILED) without a result", False)
    assert job_verdict(None, None) == ("left the queue without a result", False)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A fake squeue (prints the file `queue`, or fails like SLURM for unknown jobs) and a submitit folder."""
    bin_dir, folder = tmp_path / "bin", tmp_path / "sweep" / ".submitit"
    bin_dir.mkdir()
    folder.mkdir(parents=True)
    queue = tmp_path / "queue"
    (bin_dir / "squeue").write_text(f"#!/bin/sh\nif [ -s {queue} ]; then cat {queue}; else "
                                    "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1; fi\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    config = OmegaConf.create({"hydra": {"launcher": {"_target_": SLURM_TARGET, "tasks_per_node": 1, "nodes": 1,
                                                      "submitit_folder": f"{folder}/%j"}}})
    watch = SlurmWatch(poll_s=0.05, grace_s=0.3)
    yield watch, config, folder, queue
    watch.close()


def submit(folder: Path, job: str, result: bool = False, log: str = "") -> None:
    job_dir = folder / job
    job_dir.mkdir()
    (job_dir / f"{job}_submitted.pkl").write_bytes(b"")
    if result:
        (job_dir / f"{job}_0_result.pkl").write_bytes(b"")
    if log:
        (job_dir / f"{job}_0_log.err").write_text(log)


def wait_for_the_watch(seconds: float) -> None:
    """Sleep in short steps, as submitit's wait loop does; the watch's error is raised in here."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.02)


def test_watch_stops_the_launcher_for_a_job_that_can_never_start(fake_slurm, capsys):
    watch, config, folder, queue = fake_slurm
    submit(folder, "3_0")  # an earlier launch's job in the same folder: not watched
    handler = signal.getsignal(signal.SIGUSR1)
    watch.on_multirun_start(config)
    submit(folder, "7")
    (folder / "7" / "7_submission.sh").write_text("#SBATCH --cpus-per-task=64\n#SBATCH --error=x\n")
    submit(folder, "7_0")
    queue.write_text("3_0|PENDING|PartitionConfig\n7_0|PENDING|PartitionConfig\n")
    with pytest.raises(SlurmJobError, match=r"SLURM job 7_0 can never start: .* reason PartitionConfig .*"
                                            r"it asks for --cpus-per-task=64; cancel it: scancel 7$"):
        wait_for_the_watch(5)
    assert capsys.readouterr().err.startswith("error: SLURM job 7_0 can never start")
    watch.close()
    assert signal.getsignal(signal.SIGUSR1) == handler


def test_watch_stops_the_launcher_for_a_job_that_ended_without_a_result(fake_slurm):
    watch, config, folder, queue = fake_slurm
    watch.on_multirun_start(config)
    submit(folder, "9", log="srun: error: vm: task 0: Killed\n")
    queue.write_text("9|CANCELLED|None\n")
    start = time.time()
    with pytest.raises(SlurmJobError, match=r"SLURM job 9 ended \(CANCELLED\) without a result; .*log: .*9_0_log.err; "
                                            "its last line: srun: error: vm: task 0: Killed"):
        wait_for_the_watch(5)
    assert time.time() - start >= watch.grace_s  # a result file may still be on its way


def test_watch_stops_the_launcher_for_a_job_that_left_the_queue(fake_slurm):
    watch, config, folder, queue = fake_slurm
    watch.on_multirun_start(config)
    submit(folder, "10")  # squeue: "Invalid job id specified" (purged after MinJobAge)
    with pytest.raises(SlurmJobError, match="SLURM job 10 left the queue without a result"):
        wait_for_the_watch(5)


def test_watch_waits_for_every_task_of_a_multi_task_job(fake_slurm):
    """slurm_ddp / slurm_cpu_ddp: submitit waits for the result of every task, so a rank that died counts."""
    watch, config, folder, queue = fake_slurm
    config.hydra.launcher.tasks_per_node = 2
    watch.on_multirun_start(config)
    submit(folder, "12", result=True)  # rank 0's result only
    queue.write_text("12|FAILED|NonZeroExitCode\n")
    with pytest.raises(SlurmJobError, match=r"SLURM job 12 ended \(FAILED\) without a result"):
        wait_for_the_watch(5)


def test_watch_leaves_running_pending_and_finished_jobs_alone(fake_slurm):
    watch, config, folder, queue = fake_slurm
    watch.on_multirun_start(config)
    for job in ("11_0", "11_1", "11_2"):
        submit(folder, job, result=job == "11_2")
    queue.write_text("11_0|RUNNING|None\n11_1|PENDING|Resources\n11_2|COMPLETED|None\n")
    wait_for_the_watch(1)  # no SlurmJobError
    assert watch.error is None


def test_watch_only_acts_for_the_slurm_launcher_and_stays_behind_when_pickled(fake_slurm):
    watch, config, folder, queue = fake_slurm
    watch.on_multirun_start(OmegaConf.create({"hydra": {"launcher": {"_target_": "hydra._internal.BasicLauncher"}}}))
    assert watch._thread is None
    watch.on_multirun_start(config)
    copy = pickle.loads(pickle.dumps(watch))  # what every submitted job receives with Hydra's context
    assert (copy.poll_s, copy.grace_s, copy._thread) == (0.05, 0.3, None)


def test_submitits_sacct_warning_is_shown_once(fake_slurm):
    watch, config, folder, queue = fake_slurm
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("submitit")
    logger.addHandler(handler)
    try:
        watch.on_multirun_start(config)
        for call in (1, 2, 3):
            logger.warning(f"Call #{call} - Bypassing sacct error Command 'sacct' returned non-zero exit status 1.")
        logger.warning("something else")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage()[:8] for r in records] == ["Call #1 ", "somethin"]
    assert "this warning is not repeated" in records[0].getMessage()
