"""SLURM sweeps (hydra/launcher=slurm, slurm_ddp, slurm_cpu, slurm_cpu_ddp): both sides of a submitit job.

- Inside a job: :func:`in_submitit_job` tells ``biolab.train`` to raise a refused run's ConfigError rather
  than ``sys.exit(2)``. A SystemExit passes submitit's exception handling, so the job would leave no result
  file and the launching command (which, without SLURM accounting, cannot learn that the job ended) would
  wait forever; an exception is pickled into the result and raised by the launcher.
- In the launching command: :class:`SlurmWatch`, a Hydra callback that the SLURM launcher configs enable.
  submitit learns a job's end from its result file or from ``sacct``; without accounting (or for a job that
  can never start) it waits forever. The callback polls ``squeue`` and stops the launcher with a
  SlurmJobError when a job of the sweep is pending for a reason that cannot go away (the partition cannot
  satisfy the request), or ended without leaving a result (killed, cancelled, out of memory, timed out
  without a requeue left).
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# squeue reasons of a pending job that no amount of waiting removes (the request exceeds the partition)
NEVER_STARTS = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints"}
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
_SACCT_WARNING = "Bypassing sacct error"
_RESOURCE_FLAGS = {"--partition", "--nodes", "--ntasks-per-node", "--cpus-per-task", "--mem", "--gpus-per-node",
                   "--gres", "--time", "--constraint", "--qos", "--account"}


class SlurmJobError(RuntimeError):
    """A job of a SLURM sweep that will never deliver a result."""


def in_submitit_job() -> bool:
    """True in a process that submitit started to run a submitted function (a SLURM job of a sweep, or
    submitit's local executor): submitit sets SUBMITIT_FOLDER there before it unpickles the job."""
    return bool(os.environ.get("SUBMITIT_FOLDER")) and "submitit.core.submission" in sys.modules


def job_verdict(state: str | None, reason: str | None) -> tuple[str, bool] | None:
    """Why a job that has no result file yet will never have one, from its squeue state and reason (state
    None: not in the queue any more), and whether that is certain at once (True) or only once the grace
    time has passed without a result file (a result may reach a shared filesystem late); None while the
    job may still deliver."""
    if state == "PENDING" and reason in NEVER_STARTS:
        return (f"can never start: it is pending with reason {reason} (the partition cannot satisfy the "
                "request; see docs/cluster.md, 'CPU partitions')"), True
    if state is None:
        return "left the queue without a result", False
    if state in ENDED:
        return f"ended ({state}) without a result", False
    return None


class SlurmWatch(Callback):
    """Hydra callback: while a submitit SLURM launcher waits for its jobs, poll squeue every ``poll_s``
    seconds; a job without a result for which :func:`job_verdict` gives a reason for ``grace_s`` seconds
    (at once for one that can never start) stops the launcher with a SlurmJobError naming the job, the
    reason and its log. Other launchers: nothing happens."""

    def __init__(self, poll_s: float = 30, grace_s: float = 60):
        self.poll_s, self.grace_s = poll_s, grace_s
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: str | None = None

    def __getstate__(self):  # pickled into every job (with Hydra's context); the thread stays here
        return {"poll_s": self.poll_s, "grace_s": self.grace_s}

    def __setstate__(self, state):
        self.__init__(**state)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        launcher = config.hydra.launcher
        if not str(launcher.get("_target_", "")).endswith(".SlurmLauncher"):
            return
        folder = str(launcher.submitit_folder)
        folder = Path(folder.split("%")[0]) if "%" in folder else Path(folder)  # .../.submitit/%j -> .../.submitit
        tasks = int(launcher.get("tasks_per_node") or 1) * int(launcher.get("nodes") or 1)
        logging.getLogger("submitit").addFilter(self._one_sacct_warning)
        self._previous_handler = signal.signal(signal.SIGUSR1, self._raise_in_main_thread)
        self._stop.clear()
        earlier = set(_submitted(folder))  # jobs of earlier launches into the same folder are not watched
        self._thread = threading.Thread(target=self._watch, args=(folder, tasks, earlier),
                                        name="biolab-slurm-watch", daemon=True)
        self._thread.start()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        logging.getLogger("submitit").removeFilter(self._one_sacct_warning)
        signal.signal(signal.SIGUSR1, self._previous_handler)

    def _one_sacct_warning(self, record: logging.LogRecord) -> bool:
        """submitit warns at every poll when sacct fails (no accounting); say it once."""
        if _SACCT_WARNING not in record.getMessage():
            return True
        if getattr(self, "_sacct_warned", False):
            return False
        self._sacct_warned = True
        record.msg = (f"{record.getMessage()} (sacct fails without SLURM accounting; biolab watches the jobs "
                      "with squeue instead; this warning is not repeated)")
        record.args = ()
        return True

    def _raise_in_main_thread(self, signum, frame):
        raise SlurmJobError(self.error)

    def _watch(self, folder: Path, tasks: int, earlier: set[str]) -> None:
        suspect: dict[str, float] = {}  # job id -> when it was first seen without a future
        while not self._stop.wait(self.poll_s):
            waiting = {job: d for job, d in _submitted(folder).items()
                       if job not in earlier and not _results(job, d, tasks)}
            if not waiting:
                continue
            queue = squeue(sorted(waiting))
            if queue is None:  # squeue failed: no verdict this time
                continue
            now = time.time()
            for job, job_dir in sorted(waiting.items()):
                verdict = job_verdict(*queue.get(job, (None, None)))
                if verdict is None:
                    suspect.pop(job, None)
                    continue
                message, certain = verdict
                if not certain and (now - suspect.setdefault(job, now) < self.grace_s
                                    or _results(job, job_dir, tasks)):  # the results arrived meanwhile
                    continue
                self._fail(job, message, certain, job_dir)
                return

    def _fail(self, job: str, message: str, never_starts: bool, job_dir: Path) -> None:
        if self._stop.is_set():  # the launcher is done (or gone) already
            return
        if never_starts:  # the whole launch asked for the same resources: cancel all of it
            self.error = (f"SLURM job {job} {message}; {_request(job_dir.parent, job)}; "
                          f"cancel it: scancel {job.split('_')[0]}")
        else:
            log = job_dir / f"{job}_0_log.err"
            lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            tail = f"; its last line: {lines[-1]}" if lines else ""
            self.error = f"SLURM job {job} {message}; re-run the same command once fixed; log: {log}{tail}"
        print(f"error: {self.error}", file=sys.stderr, flush=True)
        _thread.interrupt_main(signal.SIGUSR1)


def _request(folder: Path, job: str) -> str:
    """The resource flags of the job's sbatch script (<folder>/<array or job id>/<that id>_submission.sh)."""
    first = job.split("_")[0]
    script = folder / first / f"{first}_submission.sh"
    if not script.exists():
        return "its request is in its sbatch script"
    flags = [line.split()[1] for line in script.read_text().splitlines()
             if line.startswith("#SBATCH --") and line.split()[1].split("=")[0] in _RESOURCE_FLAGS]
    return f"it asks for {' '.join(flags)}"


def _submitted(folder: Path) -> dict[str, Path]:
    """{job id: its folder} of the jobs submitted into submitit's `folder` (submitit writes
    <folder>/<job id>/<job id>_submitted.pkl, or <folder>/<job id>_submitted.pkl without %j)."""
    return {path.name[: -len("_submitted.pkl")]: path.parent for path in folder.glob("**/*_submitted.pkl")}


def _results(job: str, job_dir: Path, tasks: int) -> bool:
    """Whether every task of the job has written its submitit result file (submitit waits for all)."""
    return all((job_dir / f"{job}_{task}_result.pkl").exists() for task in range(tasks))


def squeue(jobs: list[str]) -> dict[str, tuple[str, str]] | None:
    """{job id: (state, reason)} of those of `jobs` that SLURM still knows (one line per array task;
    finished jobs stay listed for MinJobAge, 300 s by default); None when squeue fails."""
    command = ["squeue", "--noheader", "--array", "--states=all", "--jobs", ",".join(jobs),
               "--format=%i|%T|%r"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # every listed job is unknown to SLURM (purged after MinJobAge): squeue says so and exits 1
        return {} if "Invalid job id" in out.stderr else None
    queue = {}
    for line in out.stdout.splitlines():
        job, state, reason = (line.strip().split("|") + ["", ""])[:3]
        queue[job] = (state, reason)
    return queue
