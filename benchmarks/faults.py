"""Hostile trials on tiny runs, as a new user would meet them: how many reliability promises held.

    python benchmarks/faults.py                  # every trial once, 3 random kills (~15-25 min on 2 busy cores)
    python benchmarks/faults.py --kills 20       # more kill -9 trials at random moments
    python benchmarks/faults.py --only kill,disk # some trials: kill, write, disk, readonly, two, bad, ckpt,
                                                 #   nan, sweep, figures

Every trial starts real ``python -m biolab.train`` processes (tiny config, 60 steps, a checkpoint every
5 steps) in a scratch directory and checks one promise of the README's "Durability" section:

  kill     kill -9 at a random moment, re-run the command: the metrics equal an uninterrupted run's,
           no temp file is left in the run directory or in TMPDIR
  write    kill -9 while last.ckpt is being written (the save is slowed down by this script): the
           previous checkpoint loads, the re-run removes the temp file and ends like an uninterrupted run
  disk     a full disk (a 12 MB tmpfs when run as root, else a simulated ENOSPC) while saving: exit code
           2 with one error line, last.ckpt is the previous good one, no temp file, no summary.json
  readonly a read-only run directory (a read-only tmpfs as root, else chmod): exit code 2, one line,
           nothing changed
  two      a second process on a running run's directory (another seed, then the same command):
           refused with one line; the first ends like an uninterrupted run
  bad      malformed overrides on an existing unfinished run and on a new directory: exit code 2, one
           line, the run's files (.hydra/ included) untouched, no new directory left behind
  ckpt     a tensor, a foreign dict, a missing file and another run's checkpoint as ckpt_path: refused
  nan      a loss that becomes NaN (injected by this script): exit code 2, no summary.json
  sweep    kill -9 of a local sweep's driver (hydra/launcher=local): its workers die too
  figures  a finished run whose figures were deleted: re-running the command redraws them

Prints one line per trial and "N/M held"; exit code 1 unless every trial held. tests/test_reliability.py
checks the same promises in-process (fast, in CI); this script checks them on real processes.
"""

from __future__ import annotations

import argparse
import csv
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["experiment=tiny", "trainer.max_steps=60", "checkpoint_every=5", "callbacks.evaluator.dense_every=10",
        "callbacks.evaluator.dense_until=60"]
TRIALS = ("kill", "write", "disk", "readonly", "two", "bad", "ckpt", "nan", "sweep", "figures")


# ---- fault injection inside a training process: python benchmarks/faults.py --child MODE ARGS ------------

def child(mode: str, args: list[str]) -> None:
    """Run `python -m biolab.train ARGS` with a fault injected into this process: slow-save[:seconds] (each
    256 KiB of a checkpoint written that long after the previous), enospc (the second save fails half-way
    with a full disk), nan (the loss becomes NaN at step 17)."""
    sys.path.insert(0, str(REPO))
    from biolab.checkpointing import AtomicCheckpointIO

    real_write, writes = AtomicCheckpointIO.write, []

    pause = float(mode.split(":")[1]) if mode.startswith("slow-save:") else 0.05

    def slow_write(path, data):  # the checkpoint reaches the disk in small pieces, `pause` seconds apart
        with open(path, "wb") as f:
            for i in range(0, len(data), 256 * 1024):
                f.write(data[i:i + 256 * 1024])
                f.flush()
                time.sleep(pause)

    def full_disk(path, data):
        writes.append(path)
        if len(writes) < 2:
            return real_write(path, data)
        Path(path).write_bytes(bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if mode.startswith("slow-save"):
        AtomicCheckpointIO.write = staticmethod(slow_write)
    elif mode == "enospc":
        AtomicCheckpointIO.write = staticmethod(full_disk)
    elif mode == "nan":
        from biolab.lit_module import BioLitModule
        step = BioLitModule.training_step
        BioLitModule.training_step = lambda self, batch, i: step(self, batch, i) * (
            float("nan") if self.trainer.global_step >= 17 else 1.0)
    sys.argv = ["biolab.train", *args]
    from biolab.train import main
    main()


# ---- helpers -----------------------------------------------------------------------------------------------

class Trial(Exception):
    """A promise that did not hold (the message says which)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Trial(message)


def train_command(run_dir: Path, *overrides: str, mode: str | None = None) -> list[str]:
    head = [sys.executable, __file__, "--child", mode] if mode else [sys.executable, "-m", "biolab.train"]
    return [*head, *TINY, *overrides, f"hydra.run.dir={run_dir}"]


def run(command: list[str], env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def start(command: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def metrics(run_dir: Path) -> list[dict]:
    """metrics.csv without the timing columns (they differ between any two runs)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k == "step" or k.startswith(("val/", "unseen/", "train/loss"))}
                for row in csv.DictReader(f)]


def checkpoint_step(path: Path) -> int | None:
    import torch
    try:
        return torch.load(path, weights_only=True)["global_step"]
    except Exception:
        return None


def temp_files(*directories: Path) -> list[Path]:
    return [p for d in directories if d.is_dir() for p in d.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def one_error_line(result: subprocess.CompletedProcess, pattern: str, startup: bool = True) -> None:
    """Exit code 2 and one "error: ..." line: all of stderr for a start-up error; the last line of stderr
    for an error of a run that had started (Lightning's own start-up notes come before it)."""
    lines = result.stderr.strip().splitlines() or [""]
    check(result.returncode == 2, f"exit code {result.returncode}, not 2: {result.stderr.strip()[-300:]}")
    check((len(lines) == 1 or not startup) and lines[-1].startswith("error: "),
          f"not one error line: {result.stderr.strip()[-300:]}")
    check(pattern in lines[-1], f"{pattern!r} not in {lines[-1]!r}")


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = 600) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and (proc is None or proc.poll() is None):
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def mount_tmpfs(directory: Path, size: str, options: str = "") -> bool:
    directory.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (f",{options}" if options else "")
    return is_root() and subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(directory)],
                                        capture_output=True).returncode == 0


def umount(directory: Path) -> None:
    subprocess.run(["umount", str(directory)], capture_output=True)


# ---- the trials ----------------------------------------------------------------------------------------------

class Faults:
    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.tmpdir = scratch / "system-tmp"  # TMPDIR of every training process: no file may appear there
        self.tmpdir.mkdir()
        self.env = {**os.environ, "TMPDIR": str(self.tmpdir), "OMP_NUM_THREADS": "1"}
        self._reference: list[dict] | None = None
        self.count = 0

    def tmp_files(self) -> list[Path]:
        """Files in the training processes' TMPDIR (torch creates an empty torchinductor_<user> cache directory)."""
        return [p for p in self.tmpdir.rglob("*") if p.is_file()]

    def new_dir(self, name: str) -> Path:
        self.count += 1
        return self.scratch / f"{self.count:02d}_{name}"

    def reference(self) -> list[dict]:
        """The metrics of an uninterrupted run (computed once)."""
        if self._reference is None:
            run_dir = self.new_dir("reference")
            began = time.time()
            result = run(train_command(run_dir), self.env)
            check(result.returncode == 0, f"the reference run failed: {result.stderr[-500:]}")
            self._reference, self.reference_dir = metrics(run_dir), run_dir
            self.reference_seconds = time.time() - began  # start-up (imports) included
        return self._reference

    def finish_and_compare(self, run_dir: Path, *overrides: str) -> None:
        result = run(train_command(run_dir, *overrides), self.env)
        check(result.returncode == 0, f"the re-run failed: {result.stderr.strip()[-300:]}")
        check(metrics(run_dir) == self.reference(), "the resumed metrics differ from an uninterrupted run's")
        check(not temp_files(run_dir), f"temp files left: {temp_files(run_dir)}")
        check(not self.tmp_files(), f"files left in TMPDIR: {self.tmp_files()}")

    def kill(self, fraction: float) -> str:
        """kill -9 after `fraction` of an uninterrupted run's wall time (start-up included)."""
        self.reference()
        run_dir = self.new_dir("kill")
        seconds = fraction * self.reference_seconds
        proc = start(train_command(run_dir), self.env)
        time.sleep(seconds)
        kill(proc)
        step = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
        last = run_dir / "checkpoints" / "last.ckpt"
        check(step is not None or not last.exists(), "last.ckpt is unreadable after the kill")
        self.finish_and_compare(run_dir)
        return f"killed after {seconds:.1f} s (checkpoint at step {step}); resumed = uninterrupted"

    def write(self) -> str:
        self.reference()
        run_dir = self.new_dir("write")
        proc = start(train_command(run_dir, mode="slow-save"), self.env)
        checkpoints = run_dir / "checkpoints"
        caught = wait_for(lambda: (checkpoints / "last.ckpt").exists() and temp_files(checkpoints), proc)
        kill(proc)
        check(caught, "the run ended before a second save could be interrupted")
        check(checkpoint_step(checkpoints / "last.ckpt") is not None, "last.ckpt is unreadable after the kill")
        orphan = temp_files(checkpoints)
        check(bool(orphan), "no temp file: the kill came after the write")
        self.finish_and_compare(run_dir)
        return f"killed while writing {orphan[0].name}: last.ckpt intact, temp file removed, resumed = uninterrupted"

    def disk(self) -> str:
        mount = self.scratch / "full-disk"
        real = mount_tmpfs(mount, "12m")
        run_dir = (mount if real else self.new_dir("disk")) / "run"
        try:
            result = run(train_command(run_dir, mode=None if real else "enospc"), self.env)
            one_error_line(result, "could not write checkpoint", startup=False)
            check("No space left on device" in result.stderr, result.stderr.strip()[-300:])
            step = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
            check(step is not None and step > 0, f"last.ckpt is not a good checkpoint (step {step})")
            check(not temp_files(run_dir), f"temp files left: {temp_files(run_dir)}")
            check(not (run_dir / "summary.json").exists(), "summary.json written by a failed run")
            check(not self.tmp_files(), f"files left in TMPDIR: {self.tmp_files()}")
        finally:
            if real:
                umount(mount)
        return f"{'a 12 MB tmpfs' if real else 'simulated ENOSPC'}: exit 2, last.ckpt at step {step}, no temp file"

    def readonly(self) -> str:
        mount = self.scratch / "read-only"
        real = mount_tmpfs(mount, "64m")
        base = mount if real else self.new_dir("readonly")
        run_dir = base / "run"
        try:
            proc = start(train_command(run_dir), self.env)
            wait_for(lambda: checkpoint_step(run_dir / "checkpoints" / "last.ckpt") is not None, proc)
            kill(proc)
            before = snapshot(run_dir)
            if real:
                subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            else:
                for d in (run_dir, *(p for p in run_dir.rglob("*") if p.is_dir())):
                    d.chmod(0o555)
            result = run(train_command(run_dir), self.env)
            if not real and is_root():
                return "skipped: root ignores directory permissions and no tmpfs could be mounted"
            one_error_line(result, "is not writable")
            check(snapshot(run_dir) == before, "the read-only run directory changed")
            fresh = run(train_command(base / "new"), self.env)
            one_error_line(fresh, "cannot be created")
        finally:
            if real:
                umount(mount)
            elif run_dir.exists():
                for d in (run_dir, *(p for p in run_dir.rglob("*") if p.is_dir())):
                    d.chmod(0o755)
        return f"{'read-only tmpfs' if real else 'chmod 555'}: resume and new run refused with one line, nothing changed"

    def two(self) -> str:
        self.reference()
        run_dir = self.new_dir("two")
        # slowed down (~8 s per save) so that it is still running when the two others have started
        first = start(train_command(run_dir, mode="slow-save:0.3"), self.env)
        try:
            check(wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), first), "the first run ended")
            for overrides in (["seed=1"], []):
                second = run(train_command(run_dir, *overrides), self.env)
                one_error_line(second, "is in use by pid")
            check(first.wait(timeout=900) == 0, "the first run failed")
        finally:
            kill(first)
        check(metrics(run_dir) == self.reference(), "the first run's metrics differ from an uninterrupted run's")
        return "another seed and the same command refused while the first ran; the first = uninterrupted"

    def bad(self) -> str:
        run_dir = self.new_dir("bad")
        proc = start(train_command(run_dir), self.env)
        wait_for(lambda: checkpoint_step(run_dir / "checkpoints" / "last.ckpt") is not None, proc)
        kill(proc)
        before = snapshot(run_dir)
        check(".hydra/overrides.yaml" in before, "no .hydra/overrides.yaml in a started run")
        bad = {"module.betas=[0.9,1.5]": "module.betas", "model.max_seq_len=40": "model.max_seq_len",
               "trainer.precision=17": "different config", "module.lr=inf": "module.lr",
               "data.population_size=true": "data.population_size", "seed=-1": "seed",
               "data.shuffle_sentences=maybe": "data.shuffle_sentences", "checkpoint_every=0": "checkpoint_every"}
        for override, pattern in bad.items():
            one_error_line(run(train_command(run_dir, override), self.env), pattern)
            check(snapshot(run_dir) == before, f"{override} changed the run directory")
        fresh = self.new_dir("bad_new")
        one_error_line(run(train_command(fresh, "module.betas=[0.9,1.5]"), self.env), "module.betas")
        check(not fresh.exists(), "a refused first start left its directory")
        return f"{len(bad)} bad overrides on a started run and one on a new directory: one line each, nothing written"

    def ckpt(self) -> str:
        import torch
        self.reference()
        tensor, foreign = self.scratch / "tensor.pt", self.scratch / "foreign.ckpt"
        torch.save(torch.zeros(3), tensor)
        torch.save({"model": {"w": torch.zeros(3)}, "epoch": 3}, foreign)
        other = self.reference_dir / "checkpoints" / "last.ckpt"
        cases = {tensor: "holds a Tensor", foreign: "not a checkpoint written by biolab.train",
                 self.scratch / "missing.ckpt": "checkpoint not found", other: "belongs to another run"}
        for path, pattern in cases.items():
            run_dir = self.new_dir("ckpt")
            seed = ["seed=1"] if path == other else []
            one_error_line(run(train_command(run_dir, *seed, f"ckpt_path={path}"), self.env), pattern)
            check(not run_dir.exists(), f"ckpt_path={path.name} left a directory")
        return "tensor, foreign dict, missing file, other run's checkpoint: refused with one line"

    def nan(self) -> str:
        run_dir = self.new_dir("nan")
        result = run(train_command(run_dir, mode="nan"), self.env)
        one_error_line(result, "became NaN or infinite", startup=False)
        check(not (run_dir / "summary.json").exists(), "a diverged run was marked finished")
        step = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
        check(step is not None and step < 17, f"a checkpoint after the divergence was written (step {step})")
        return f"stopped with exit 2, last checkpoint at step {step} (before the NaN), no summary.json"

    def sweep(self) -> str:
        sweep_dir = self.new_dir("sweep")
        command = [sys.executable, "-m", "biolab.train", "-m", "experiment=tiny", "trainer.max_steps=100000",
                   "checkpoint_every=5", "seed=0,1", "hydra/launcher=local", "hydra.launcher.n_jobs=2",
                   f"hydra.sweep.dir={sweep_dir}"]
        driver = start(command, self.env)
        workers: set[int] = set()
        try:
            started = wait_for(lambda: len(list(sweep_dir.glob("*/checkpoints/last.ckpt"))) == 2, driver, 900)
            workers = children(driver.pid)
            check(started and workers, "the sweep's workers did not start")
        finally:
            kill(driver)
        survivors = workers
        deadline = time.time() + 30
        while survivors and time.time() < deadline:
            time.sleep(0.2)
            survivors = {pid for pid in survivors if alive(pid)}
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        check(not survivors, f"{len(survivors)} of {len(workers)} workers outlived their driver")
        return f"driver killed: its {len(workers)} workers died with it"

    def figures(self) -> str:
        self.reference()
        run_dir = self.reference_dir
        for name in ("learning_curves.png", "attention.png"):
            (run_dir / name).unlink()
        result = run(train_command(run_dir), self.env)
        check(result.returncode == 0 and "already finished" in result.stdout, result.stderr[-300:])
        check((run_dir / "learning_curves.png").is_file() and (run_dir / "attention.png").is_file(),
              "the missing figures were not redrawn")
        return "deleted figures of a finished run redrawn by the same command"


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3, help="kill -9 trials at random moments")
    parser.add_argument("--only", default=",".join(TRIALS), help=f"comma-separated, of {','.join(TRIALS)}")
    parser.add_argument("--seed", type=int, default=0, help="random moments of the kills")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    only = args.only.split(",")
    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="biolab-faults-"))
    faults = Faults(scratch)
    trials = []
    for name in TRIALS:
        if name not in only:
            continue
        if name == "kill":
            trials += [(f"kill #{i + 1}", lambda f=rng.uniform(0.02, 1.0): faults.kill(f)) for i in range(args.kills)]
        else:
            trials.append((name, getattr(faults, name)))
    held = 0
    try:
        for name, trial in trials:
            began = time.time()
            try:
                note = trial()
                held += 1
                print(f"held    {name:<9} {note} ({time.time() - began:.0f} s)", flush=True)
            except Trial as err:
                print(f"FAILED  {name:<9} {err} ({time.time() - began:.0f} s)", flush=True)
    finally:
        if args.keep:
            print(f"scratch directory: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{held}/{len(trials)} held")
    return 0 if held == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
