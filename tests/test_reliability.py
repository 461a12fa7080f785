"""Reliability (README, "Durability"): atomic checkpoints, failed saves are errors, one process per run
directory, nothing written before every check passed, resume only of the same run, finite values and
losses, summary.json last, one-line start-up errors, no leftovers. benchmarks/faults.py repeats the
hostile trials (kill -9, full disks, read-only directories) on real processes."""

import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from biolab.errors import ConfigError, RunError
from biolab.train import train

from conftest import CONF_DIR, make_cfg

REPO = Path(CONF_DIR).parent


def cli(*args) -> tuple[int, str]:
    """`python -m biolab.train ARGS` in this process (imports once: seconds instead of a subprocess's ten):
    (exit code, stderr)."""
    from biolab.train import main

    argv, err, code = sys.argv, io.StringIO(), 0
    sys.argv = ["biolab.train", *map(str, args)]
    try:
        with contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
    return code, err.getvalue()


def snapshot(directory: Path) -> dict:
    """Every file under directory with its size and modification time (to see that nothing changed)."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def temp_files(*directories: Path) -> list[Path]:
    return [p for d in directories if d.is_dir() for p in d.rglob("*.tmp")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run, written through the command line (so with .hydra/); copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert cli("experiment=tiny", f"hydra.run.dir={run_dir}")[0] == 0
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def tiny(run_dir, *overrides):
    return make_cfg(run_dir, "experiment=tiny", *overrides)


# ---- 1, 2: atomic checkpoints; a failed save is an error ------------------------------------------------

def test_checkpoints_are_staged_beside_their_target_whatever_tmpdir(tmp_path, monkeypatch):
    """Each save is renamed from a temp file in checkpoints/ over last.ckpt; a TMPDIR that does not exist (or is
    another filesystem) plays no part."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmpdir"))
    renames, real_replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))),
                                                         real_replace(src, dst))[1])
    cfg = tiny(tmp_path / "run")
    assert train(cfg)["completed"]
    last = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
    staged = [src for src, dst in renames if dst == last]
    assert len(staged) == 4 and all(src.parent == last.parent and src.name.startswith(".last.ckpt.")
                                    for src in staged), renames  # steps 5, 10, 15, 20
    assert not temp_files(Path(cfg.run_dir))


def test_a_failed_save_stops_the_run_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Disk full in the middle of the second save (step 10): an error, last.ckpt still the step-5 one,
    no temp file anywhere, no summary.json."""
    from biolab.checkpointing import AtomicCheckpointIO
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    writes, real_write = [], AtomicCheckpointIO.write

    def full_disk(path, data):
        writes.append(path)
        if len(writes) < 2:
            return real_write(path, data)
        Path(path).write_bytes(bytes(data[:len(data) // 2]))  # half of it made it to disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(AtomicCheckpointIO, "write", staticmethod(full_disk))
    run_dir = stopped_after_step_5(tmp_path, "could not write checkpoint .*No space left on device.*keeps the previous")
    assert not temp_files(run_dir, system_tmp) and not list(system_tmp.iterdir())


def stopped_after_step_5(tmp_path, error: str) -> Path:
    """Train the tiny run (a checkpoint every 5 steps) into a RunError matching `error`: last.ckpt is the
    step-5 one, and the run is not marked completed (no summary.json). Returns its directory."""
    cfg = tiny(tmp_path / "run")
    with pytest.raises(RunError, match=error):
        train(cfg)
    run_dir = Path(cfg.run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert not (run_dir / "summary.json").exists()
    return run_dir


def test_a_failed_save_on_the_command_line_is_one_line_and_exit_2(tmp_path, monkeypatch):
    from biolab.checkpointing import AtomicCheckpointIO

    def read_only(path, data):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(AtomicCheckpointIO, "write", staticmethod(read_only))
    code, err = cli("experiment=tiny", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: could not write checkpoint")
    assert "Permission denied" in err and not temp_files(tmp_path)


# ---- 3: one process per run directory ---------------------------------------------------------------------

HOLD_LOCK = "import sys, time; from biolab.runlock import RunLock\nwith RunLock(sys.argv[1]):\n" \
            "    print('locked', flush=True); time.sleep(600)"


def test_a_second_process_on_a_run_directory_is_refused_and_a_killed_holder_leaves_no_lock(run_copy):
    (run_copy / "summary.json").unlink()  # an unfinished run
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_copy)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run_copy)
        with pytest.raises(ConfigError, match=f"in use by pid {holder.pid} on .*one process per run directory"):
            train(tiny(run_copy))
        with pytest.raises(ConfigError, match="in use by pid"):  # another seed: refused too, nothing mixed in
            train(tiny(run_copy, "seed=1"))
        assert snapshot(run_copy) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    from biolab.runlock import RunLock
    with RunLock(run_copy):  # the kernel released the killed holder's lock: no stale lock
        pass


def test_distributed_ranks_other_than_zero_do_not_lock(monkeypatch):
    from biolab.runlock import is_launching_process
    for name in ("SLURM_NTASKS", "SLURM_PROCID", "RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert is_launching_process()
    monkeypatch.setenv("LOCAL_RANK", "1")  # started by Lightning's DDP launcher
    assert not is_launching_process()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "2")  # srun task 2 of a slurm_ddp job
    assert not is_launching_process()
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert is_launching_process()


# ---- 4, 6: nothing written before every check passed; values ----------------------------------------------

BAD_STARTS = [
    ("module.betas=[0.9,1.5]", "module.betas"),
    ("model.max_seq_len=40", "model.max_seq_len=40 is shorter than the longest biography"),
    ("trainer.precision=17", "trainer: .*Precision 17 is invalid"),
    ("module.lr=inf", "module.lr must be a finite number"),
    ("module.lr=nan", "module.lr must be a number >= 0, got nan"),
    ("data.population_size=true", "data.population_size must be an integer, got True"),
    ("checkpoint_every=true", "checkpoint_every must be a positive integer"),
    ("data.batch_size=8.0", "data.batch_size must be an integer"),
    ("seed=-1", r"seed must be an integer in 0\.\.4294967295"),
    ("data.seed=4294967296", r"data.seed must be an integer in 0\.\.4294967295"),
    ("data.shuffle_sentences=3", "data.shuffle_sentences must be true or false"),
    ("data.replay_weight=inf", "data.replay_weight must be a finite number"),
]


@pytest.mark.parametrize("override, message", BAD_STARTS)
def test_a_refused_first_start_writes_nothing(tmp_path, override, message):
    cfg = tiny(tmp_path / "run", override)
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not Path(cfg.run_dir).exists()


def test_a_population_too_large_for_memory_is_refused_before_it_is_drawn(tmp_path, monkeypatch):
    import biolab.checks
    monkeypatch.setattr(biolab.checks, "available_memory", lambda: 2 ** 30)  # 1 GiB
    with pytest.raises(ConfigError, match=r"data.population_size=10000000: this run needs about 3.7 GiB "
                                          r"\(10,000,016 people 3.7 GiB, model and optimiser 0.0 GiB\), "
                                          r"1.0 GiB of memory are available"):
        train(tiny(tmp_path / "run", "data.population_size=10000000"))
    assert not (tmp_path / "run").exists()


def test_a_refused_start_leaves_an_existing_run_untouched_hydra_files_included(run_copy):
    (run_copy / "summary.json").unlink()  # unfinished: the corrected command must still resume it
    before = snapshot(run_copy)
    assert (run_copy / ".hydra" / "overrides.yaml").is_file() and not (run_copy / "train.log").exists()
    for override in ("module.betas=[0.9,1.5]", "trainer.precision=17", "model.max_seq_len=40", "seed=1"):
        code, err = cli("experiment=tiny", override, f"hydra.run.dir={run_copy}")
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert snapshot(run_copy) == before, override


def test_a_nan_loss_stops_the_run_before_it_is_checkpointed(tmp_path, monkeypatch):
    from biolab.lit_module import BioLitModule
    real_step = BioLitModule.training_step

    def diverging(self, batch, batch_idx):
        loss = real_step(self, batch, batch_idx)
        return loss * float("nan") if self.trainer.global_step >= 7 else loss

    monkeypatch.setattr(BioLitModule, "training_step", diverging)
    stopped_after_step_5(tmp_path, "loss became NaN or infinite between steps 5 and 10")


# ---- 5, 8: resume only the same run; one-line start-up errors ------------------------------------------

def test_ckpt_path_of_another_run_is_refused(finished, tmp_path):
    ckpt = finished / "checkpoints" / "last.ckpt"
    for override, key in (("seed=1", "seed"), ("data.seed=3", "data.seed"), ("module.lr=0.01", "module.lr"),
                          ("data.population_size=48", "data.population_size")):
        with pytest.raises(ConfigError, match=f"ckpt_path: .*belongs to another run .*differs in: {key}"):
            train(tiny(tmp_path / "new", override, f"ckpt_path={ckpt}"))
    assert not (tmp_path / "new").exists()
    # a checkpoint from before the config record, away from its run directory: hyper-parameters and data settings
    legacy = torch.load(ckpt, weights_only=True)
    del legacy["biolab_config"]
    torch.save(legacy, tmp_path / "legacy.ckpt")
    with pytest.raises(ConfigError, match="belongs to another run .*differs in: data.seed"):
        train(tiny(tmp_path / "new", "data.seed=3", f"ckpt_path={tmp_path / 'legacy.ckpt'}"))
    legacy["BioDataModule"]["fingerprint"] = "0" * 16
    torch.save(legacy, tmp_path / "other_people.ckpt")
    with pytest.raises(ConfigError, match="trained on other people"):
        train(tiny(tmp_path / "new", f"ckpt_path={tmp_path / 'other_people.ckpt'}"))
    # the same run's checkpoint is accepted
    assert train(tiny(tmp_path / "same", f"ckpt_path={ckpt}"))["steps"] == 20


@pytest.mark.parametrize("case", ["tensor", "foreign dict", "missing", "existing file as run dir",
                                  "run dir below a file", "unknown precision"])
def test_start_up_errors_are_one_line_with_exit_code_2(tmp_path, case):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"weights": torch.zeros(3), "step": 3}, tmp_path / "foreign.ckpt")
    (tmp_path / "file").write_text("not a directory")
    run_dir = tmp_path / "run"
    args, message = {
        "tensor": ([f"ckpt_path={tmp_path / 'tensor.pt'}"], "holds a Tensor, not a biolab checkpoint"),
        "foreign dict": ([f"ckpt_path={tmp_path / 'foreign.ckpt'}"], "not a checkpoint written by biolab.train"),
        "missing": (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path: checkpoint not found: /nonexistent/last.ckpt$"),
        "existing file as run dir": ([], "is an existing file, not a directory"),
        "run dir below a file": ([], "cannot be created: .*file is a file"),
        "unknown precision": (["trainer.precision=bf17"], "Precision 'bf17' is invalid"),
    }[case]
    target = {"existing file as run dir": tmp_path / "file", "run dir below a file": tmp_path / "file" / "run"}
    code, err = cli("experiment=tiny", *args, f"hydra.run.dir={target.get(case, run_dir)}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert "delete it" not in lines[0]
    assert not (run_dir.exists() and any(run_dir.iterdir()))  # Hydra's empty directory goes when the process ends
    assert (tmp_path / "file").read_text() == "not a directory"


# ---- 7: summary.json last; missing figures redrawn ---------------------------------------------------------

def test_a_kill_before_the_summary_resumes_and_a_finished_run_redraws_missing_figures(run_copy, monkeypatch):
    summary = json.loads((run_copy / "summary.json").read_text())
    # figures drawn, then killed before summary.json: the re-run finishes the run (from its step-20 checkpoint)
    (run_copy / "summary.json").unlink()
    (run_copy / "learning_curves.png").unlink()
    again = train(tiny(run_copy))
    assert again["completed"] and again["attr_loss"] == summary["attr_loss"]
    assert (run_copy / "learning_curves.png").is_file()
    # a finished run that lost its figures gets them back, and nothing else changes
    for name in ("learning_curves.png", "attention.png"):
        (run_copy / name).unlink()
    before = snapshot(run_copy)
    assert train(tiny(run_copy)) == again
    assert (run_copy / "learning_curves.png").is_file() and (run_copy / "attention.png").is_file()
    assert {k: v for k, v in snapshot(run_copy).items() if not k.endswith(".png") and k != ".lock"} == \
        {k: v for k, v in before.items() if k != ".lock"}


def test_summary_is_written_after_the_figures(tmp_path, monkeypatch):
    import biolab.train
    order = []
    real_write_json, real_plot = biolab.train.write_json, biolab.train.plot_learning_curves
    monkeypatch.setattr(biolab.train, "write_json", lambda path, data: (order.append(Path(path).name),
                                                                        real_write_json(path, data)))
    monkeypatch.setattr(biolab.train, "plot_learning_curves", lambda *a, **k: (order.append("figure"),
                                                                               real_plot(*a, **k)))
    train(tiny(tmp_path / "run"))
    assert order == ["figure", "summary.json"]


def test_per_attribute_holds_only_per_attribute_metrics(finished):
    per_attribute = json.loads((finished / "summary.json").read_text())["per_attribute"]
    assert "attr_loss" not in per_attribute and "attr_acc" not in per_attribute
    assert "attr_loss/birth_date" in per_attribute and "attr_acc/employer" in per_attribute


# ---- 9: leftovers -------------------------------------------------------------------------------------------

def test_temp_files_of_a_killed_write_are_removed_by_the_next_start(run_copy):
    (run_copy / "summary.json").unlink()
    orphans = [run_copy / "checkpoints" / ".last.ckpt.k1ll3d.tmp", run_copy / ".metrics.csv.x8a2.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half a file")
    assert train(tiny(run_copy))["completed"]
    assert not any(o.exists() for o in orphans) and not temp_files(run_copy)


WORKER = """
import os, subprocess, sys, time
if sys.argv[1] == "driver":  # starts a worker, prints its pid, waits to be killed
    worker = subprocess.Popen([sys.executable, __file__, "worker", str(os.getpid())])
    print(worker.pid, flush=True)
    time.sleep(600)
else:
    from biolab.hydra_hooks import die_with_parent
    die_with_parent(int(sys.argv[2]), interval=0.1)
    time.sleep(600)
"""


def test_a_sweep_worker_dies_with_its_driver(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(WORKER)
    driver = subprocess.Popen([sys.executable, str(script), "driver"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    worker = int(driver.stdout.readline())
    time.sleep(1.0)  # the worker has started its watch
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 20
    while time.time() < deadline and _alive(worker):
        time.sleep(0.1)
    alive = _alive(worker)
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the worker outlived its driver"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


# ---- 15: small defects --------------------------------------------------------------------------------------

def test_resume_free_keys_come_from_the_run_directory_naming_rule():
    from biolab.resume import RESUME_FREE_KEYS
    excluded = OmegaConf.load(Path(CONF_DIR) / "train.yaml").hydra.job.config.override_dirname.exclude_keys
    assert RESUME_FREE_KEYS == {"run_dir"} | set(excluded) - {"name", "init_from"}


def test_the_table_of_a_sweep_has_the_milestones_of_a_job_stopped_by_hand(run_copy, tmp_path):
    from biolab.analysis.collect import collect_sweep
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    run_copy.rename(sweep / "seed=0")
    (sweep / "seed=0" / "summary.json").unlink()  # stopped by hand
    job, = collect_sweep(sweep)
    assert not job.finished and job.summary["from_metrics"] and "plateau_end_step" in job.summary
    assert job.summary["steps"] == 20


def test_the_curricula_script_header_counts_the_jobs_of_its_sweeps():
    header = (REPO / "sweeps" / "curricula_cpu.sh").read_text()
    counts = [int(n) for n in re.findall(r"\((\d+) jobs", header)]
    grids = []
    for study in ("power_law", "celebrities", "warmup"):
        params = OmegaConf.load(REPO / "conf" / "sweep" / f"curricula_{study}_cpu.yaml").hydra.sweeper.params
        size = 1
        for values in params.values():
            size *= len(str(values).split(","))
        grids.append(size)
    assert counts == grids and f"{sum(grids)} jobs" in header
