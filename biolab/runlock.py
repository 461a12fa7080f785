"""One process per run directory: an exclusive lock on ``<run_dir>/.lock``, held for the whole run.

``train()`` takes the lock once every check has passed and before it writes anything; a second
process on the same directory (another seed, the same command twice, a sweep run twice at once)
refuses with one line naming the holder. The lock is ``flock(2)``: the kernel releases it when
its process ends in any way, kill -9 included, so there is never a stale lock to delete; the
``.lock`` file itself stays (deleting a lock file races with the next taker).

Distributed runs: only the launching process locks, i.e. the process with global rank 0 as
announced by its launcher (``SLURM_PROCID`` in a SLURM job with several tasks, ``RANK`` /
``LOCAL_RANK`` / ``NODE_RANK`` for torchrun and for the ranks that Lightning's DDP launcher starts
itself). The other ranks of the same run share the directory legitimately and write nothing but
what Lightning asks of them.

Filesystems without flock (Lustre mounted without ``-o flock``, some NFS set-ups) get a warning
and no lock. With the lock held, ``remove_orphans`` deletes the temp files that a kill -9 left
in the middle of an atomic write (biolab.io): no other process can be writing them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from biolab.errors import ConfigError
from biolab.io import TEMP_GLOB

LOCK_NAME = ".lock"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")
WAIT_SECONDS = 2.0  # a concurrent check (refuse_if_locked) holds a shared lock for microseconds


def is_launching_process() -> bool:
    """True unless a launcher announced this process as a rank > 0 of a distributed run."""
    env = os.environ
    tasks = env.get("SLURM_NTASKS", "")
    if tasks.isdigit() and int(tasks) > 1 and env.get("SLURM_PROCID", "0") != "0":
        return False
    return all(env.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


def _refusal(run_dir: Path, lock_path: Path) -> ConfigError:
    return ConfigError(f"{run_dir} is in use by {_holder(lock_path)}: one process per run directory; wait for "
                       "it to end or choose another hydra.run.dir")


def refuse_if_locked(run_dir: str | Path) -> None:
    """Refuse at once if a process holds the lock of run_dir; writes nothing (checks run before the lock)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody has ever locked this directory (or it is unreadable: RunLock will say)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refusal(Path(run_dir), path) from None
    except OSError:
        pass  # no locks on this filesystem: RunLock warns
    finally:
        os.close(fd)  # also releases the shared lock


class RunLock:
    """``with RunLock(run_dir):`` creates run_dir, holds its exclusive lock, then releases it."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        fd = self._open()
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise _refusal(self.run_dir, self.path) from None
                time.sleep(0.05)
            except OSError as err:  # ENOLCK, EOPNOTSUPP, ENOSYS, EBADF: no flock on this filesystem
                print(f"warning: cannot lock {self.path} ({err.strerror}): this filesystem does not support "
                      "flock, so nothing stops a second process from using this run directory", flush=True)
                break
        try:  # who holds it, for the refusal message of the next process
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError:
            pass
        self._fd = fd
        return self

    def _open(self) -> int:
        for attempt in range(2):  # a refused start may remove the empty directory it found (biolab.hydra_hooks)
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                if attempt:
                    raise
            except OSError as err:
                raise ConfigError(f"cannot write to the run directory {self.run_dir}: {err.strerror or err}") \
                    from None
        raise AssertionError("unreachable")

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


def remove_orphans(run_dir: str | Path) -> list[Path]:
    """Delete the temp files of interrupted atomic writes in run_dir and its direct sub-directories
    (checkpoints/, trajectory/, .hydra/); call it holding the lock."""
    run_dir, removed = Path(run_dir), []
    directories = [run_dir, *(d for d in run_dir.iterdir() if d.is_dir())] if run_dir.is_dir() else []
    for path in (p for d in directories for p in d.glob(TEMP_GLOB)):
        if path.is_file():
            try:
                path.unlink()
                removed.append(path)
            except OSError as err:
                if err.errno != errno.ENOENT:
                    raise
    return removed
