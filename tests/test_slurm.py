"""Real scheduler: tiny sweeps through hydra/launcher=slurm_cpu on a private single-node SLURM.

    python -m pytest -m slurm      # needs root and Debian's slurmctld slurmd slurm-client munge; a few minutes

The module's fixture brings up SLURM 22.05 from Debian's packages on this machine (tests/slurm/start_slurm.sh:
munged, slurmctld and slurmd started directly as daemons, a slurm.conf for this machine's CPUs and memory, no
accounting) and stops it by PID afterwards (tests/slurm/stop_slurm.sh), checking that no daemon is left.
Skipped when the packages or root are missing (failed instead with BIOLAB_SLURM_REQUIRED=1, as .ci/run runs
it where it could install them; where it cannot, .ci/run says so).

- a two-job sweep runs as a job array and writes both runs; the same command again skips the finished runs;
- a job signalled with USR2 mid-run is requeued by submitit, resumes from last.ckpt, and ends with the metrics
  of an uninterrupted local run;
- a job that train() refuses (slurm_cpu_ddp's 2 tasks with trainer.devices=1) fails the sweep at once with
  train()'s one-line message; the same profile with trainer.devices=2 trains one run with two gloo ranks;
- a request that the partition can never satisfy is reported by the launching command instead of waited on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from biolab.io import read_csv
from biolab.train import train
from conftest import make_cfg
from test_train import metric_columns

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "slurm"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")
# the CPU profile, fitted to a 2-core test node: one CPU and 1 GB per task; the launcher polls squeue every 2 s
CPU = ["hydra/launcher=slurm_cpu", "hydra.launcher.partition=cpu", "hydra.launcher.cpus_per_task=1",
       "hydra.launcher.mem_gb=1", "hydra.callbacks.slurm_watch.poll_s=2"]
# tiny, long enough to be signalled mid-run
LONG_TINY = ["experiment=tiny", "seed=2", "trainer.max_steps=120", "checkpoint_every=10",
             "callbacks.evaluator.dense_every=10", "callbacks.evaluator.dense_until=60",
             "callbacks.evaluator.sparse_every=30"]


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """Environment of commands that use the private cluster (SLURM_CONF); the worktree's biolab first on
    PYTHONPATH, which sbatch passes on to the jobs (--export=ALL)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [tool for tool in TOOLS if not shutil.which(tool, path=path)]
    unable = (f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurmctld slurmd "
              "slurm-client munge" if missing else
              "the private SLURM cluster runs slurmd as root: run as root" if os.geteuid() != 0 else None)
    if unable:  # .ci/run sets BIOLAB_SLURM_REQUIRED where it installed the packages: no silent skip there
        (pytest.fail if os.environ.get("BIOLAB_SLURM_REQUIRED") else pytest.skip)(unable)
    state = tmp_path_factory.mktemp("slurm")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SLURMD_", "SBATCH_", "SUBMITIT_"))}
    env.update(PATH=path, SLURM_CRED_EXPIRE="10")  # a requeued job may restart after 10 s (a real cluster: 120)
    pids = []
    try:
        started = subprocess.run([SCRIPTS / "start_slurm.sh", state], env=env, capture_output=True, text=True,
                                 timeout=120)
        pids = [int(p.read_text()) for p in (state / "slurmctld.pid", state / "slurmd.pid",
                                             state / "munge" / "munged.pid") if p.exists()]
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((state / "log").glob("*")))
        assert started.returncode == 0, f"start_slurm.sh failed:\n{started.stderr}\n{logs}"
        env.update(SLURM_CONF=str(state / "slurm.conf"), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        yield env
    finally:
        stopped = subprocess.run([SCRIPTS / "stop_slurm.sh", state], env=env, capture_output=True, text=True,
                                 timeout=180)
        alive = [pid for pid in pids if _alive(pid)]
        assert not alive, f"SLURM/munge daemons still running: {alive}"
        assert stopped.returncode == 0, stopped.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def sweep_command(*overrides) -> list[str]:
    return [sys.executable, "-m", "biolab.train", "-m", *overrides]


def launch(env, *overrides, timeout=300) -> tuple[int, str, float]:
    """Run a sweep to its end: (exit code, its output (stdout and stderr), seconds)."""
    start = time.time()
    done = subprocess.run(sweep_command(*overrides), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return done.returncode, done.stdout, time.time() - start


def job_dirs(sweep: Path) -> list[str]:
    return sorted(p.name for p in (sweep / ".submitit").iterdir() if p.is_dir())


def test_two_job_sweep_runs_then_rerun_skips_finished_jobs(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    rc, out, _ = launch(slurm_env, "experiment=tiny", "seed=0,1", *CPU, f"hydra.sweep.dir={sweep}")
    assert rc == 0, out[-4000:]
    runs = [sweep / "seed=0", sweep / "seed=1"]
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    assert [s["completed"] for s in summaries] == [True, True] and summaries[0] != summaries[1]
    (array,) = {name.split("_")[0] for name in job_dirs(sweep)}
    assert job_dirs(sweep) == [array, f"{array}_0", f"{array}_1"]  # one array, its sbatch script in .submitit/<id>
    # no accounting: submitit calls sacct at every poll and warns of its failure once, not each time (sacct's
    # own "Slurm accounting storage is disabled" goes to the terminal at every call)
    assert "Call #1 - Bypassing sacct error" in out and "this warning is not repeated" in out, out[-4000:]
    assert out.count("Slurm accounting storage is disabled") > 1 and "Call #2 - Bypassing" not in out

    written = [(run / "summary.json").stat().st_mtime_ns for run in runs]
    rc, out, _ = launch(slurm_env, "experiment=tiny", "seed=0,1", *CPU, f"hydra.sweep.dir={sweep}")
    assert rc == 0, out[-4000:]
    assert [(run / "summary.json").stat().st_mtime_ns for run in runs] == written
    (rerun,) = {name.split("_")[0] for name in job_dirs(sweep)} - {array}
    for index in (0, 1):
        log = (sweep / ".submitit" / f"{rerun}_{index}" / f"{rerun}_{index}_0_log.out").read_text()
        assert "already finished (summary.json); nothing to do" in log, log[-2000:]


def test_requeued_job_resumes_and_ends_with_the_metrics_of_an_uninterrupted_run(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    run_dir = sweep / "run"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    launcher = subprocess.Popen(sweep_command(*LONG_TINY, *CPU, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=run"),
                                cwd=REPO, env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        step = _wait_for_checkpoint(ckpt, min_step=20, timeout=240)
        assert step is not None and not (run_dir / "summary.json").exists(), "no checkpoint to requeue from"
        (job,) = job_dirs(sweep)  # a one-point sweep is a plain job, not an array
        subprocess.run(["scancel", "--signal=USR2", job], env=slurm_env, check=True)
        reference = make_cfg(tmp_path / "reference", *LONG_TINY)  # meanwhile: the same run, uninterrupted, here
        train(reference)
        out = launcher.communicate(timeout=300)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0, out[-4000:]
    err = (sweep / ".submitit" / job / f"{job}_0_log.err").read_text()
    log = (sweep / ".submitit" / job / f"{job}_0_log.out").read_text()
    assert "Caught signal SIGUSR2" in err and "DUE TO JOB REQUEUE" in err, err[-3000:]
    assert f"Requeued job {job}" in log and f"resuming from {ckpt}" in log, log[-3000:]
    got = metric_columns(read_csv(run_dir / "metrics.csv"))
    want = metric_columns(read_csv(tmp_path / "reference" / "metrics.csv"))
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert got == want
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 120


def _wait_for_checkpoint(ckpt: Path, min_step: int, timeout: float) -> int | None:
    """The step of `ckpt` once it holds global_step >= min_step; None after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            step = torch.load(ckpt, weights_only=True)["global_step"]
            if step >= min_step:
                return step
        except Exception:  # not there yet, or caught while being written
            pass
        time.sleep(0.2)
    return None


def test_refused_job_fails_the_sweep_at_once_with_its_message(slurm_env, tmp_path):
    """slurm_cpu_ddp starts 2 tasks; left at trainer.devices=1, train() refuses the run in each of them."""
    sweep = tmp_path / "sweep"
    rc, out, seconds = launch(slurm_env, "experiment=tiny", *CPU, "hydra/launcher=slurm_cpu_ddp",
                              f"hydra.sweep.dir={sweep}", timeout=240)
    assert rc == 1, out[-4000:]
    assert "ConfigError: this SLURM job has 2 tasks but trainer.devices=1" in out, out[-4000:]
    assert not list(sweep.glob("*/summary.json"))
    print(f"refused job: the sweep failed after {seconds:.0f} s")


def test_cpu_ddp_profile_trains_one_run_with_two_gloo_ranks(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    rc, out, _ = launch(slurm_env, "experiment=tiny", *CPU, "hydra/launcher=slurm_cpu_ddp", "trainer.accelerator=cpu",
                        "trainer.devices=2", "+trainer.strategy=ddp", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=run")
    assert rc == 0, out[-4000:]
    (job,) = job_dirs(sweep)
    rank0, rank1 = [(sweep / ".submitit" / job / f"{job}_{rank}_log.err").read_text() for rank in (0, 1)]
    assert "distributed_backend=gloo" in rank0 and "Starting with 2 processes" in rank0, rank0[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in rank1, rank1[-3000:]
    assert json.loads((sweep / "run" / "summary.json").read_text())["completed"]


def test_request_the_partition_can_never_satisfy_is_reported_not_waited_on(slurm_env, tmp_path):
    cpus = int(subprocess.run(["sinfo", "--noheader", "--format=%c"], env=slurm_env, capture_output=True,
                              text=True, check=True).stdout.split()[0])
    rc, out, seconds = launch(slurm_env, "experiment=tiny", *CPU, f"hydra.launcher.cpus_per_task={4 * cpus}",
                              f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=120)
    assert rc == 1, out[-4000:]
    assert "can never start: it is pending with reason PartitionConfig" in out, out[-4000:]
    assert f"it asks for --cpus-per-task={4 * cpus}" in out
    assert "SlurmJobError" in out and seconds < 60
