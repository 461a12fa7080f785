"""Cluster launch: the hydra/launcher configs compose and are accepted by their plugins; DDP data sharding.

- local (hydra-joblib-launcher), slurm and slurm_ddp (hydra-submitit-launcher) compose in multirun mode
  with the project's config, and the SLURM ones produce the sbatch script they promise (the real
  plugin's launch() runs up to the submission, which is intercepted: no SLURM here).
- A real 2-process DDP run on CPU (gloo), started the way srun starts a slurm_ddp job: two copies of
  `python -m biolab.train` with the SLURM task variables, joined by Lightning's SLURM environment.
  Rank r's batch at step k equals the single-process datamodule's train_batch(k) for rank r of 2.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")
LAUNCHERS = sorted(p.stem for p in (REPO / "conf" / "hydra" / "launcher").glob("*.yaml"))


def compose_multirun(*overrides):
    """The config `python -m biolab.train -m <overrides>` hands to its launcher (hydra node included)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return GlobalHydra.instance().hydra.compose_config(
            "train", overrides=list(overrides), run_mode=RunMode.MULTIRUN, from_shell=False)


def test_launcher_configs_exist():
    assert LAUNCHERS == ["local", "slurm", "slurm_cpu", "slurm_cpu_ddp", "slurm_ddp"]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_composes_in_multirun_mode(launcher):
    cfg = compose_multirun("experiment=paper", f"hydra/launcher={launcher}", "seed=0,1")
    assert "seed=0,1" in cfg.hydra.overrides.task  # a sweep override: accepted in multirun mode only
    assert cfg.hydra.runtime.choices["hydra/launcher"] == launcher
    assert cfg.hydra.sweep.dir == "multiruns/paper"  # stable: re-running the command finds its runs


def test_local_launcher_is_joblib_with_two_jobs():
    launcher = compose_multirun("experiment=tiny", "hydra/launcher=local").hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 2 and launcher.prefer == "processes"


def test_slurm_launchers_values():
    one = compose_multirun("experiment=paper", "hydra/launcher=slurm").hydra
    ddp = compose_multirun("experiment=paper", "hydra/launcher=slurm_ddp").hydra
    cpu = compose_multirun("experiment=paper", "hydra/launcher=slurm_cpu").hydra
    cpu_ddp = compose_multirun("experiment=paper", "hydra/launcher=slurm_cpu_ddp").hydra
    for hydra_cfg in (one, ddp, cpu, cpu_ddp):
        launcher = hydra_cfg.launcher
        assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
        assert launcher.partition is None and launcher.nodes == 1
        assert launcher.max_num_timeout > 0  # timed-out jobs are requeued (the plugin's default 0 never does)
        assert launcher.submitit_folder == "multiruns/paper/.submitit/%j"
        assert launcher.name == "biolab-paper"
        assert hydra_cfg.callbacks.slurm_watch._target_ == "biolab.slurm.SlurmWatch"  # no endless waits
    assert (one.launcher.gpus_per_node, one.launcher.tasks_per_node) == (1, 1)
    assert (ddp.launcher.gpus_per_node, ddp.launcher.tasks_per_node) == (4, 4)  # one DDP process per GPU
    assert (cpu.launcher.gpus_per_node, cpu.launcher.tasks_per_node) == (None, 1)  # no GPU request
    assert (cpu_ddp.launcher.gpus_per_node, cpu_ddp.launcher.tasks_per_node) == (None, 2)
    for key in ("cpus_per_task", "mem_gb", "timeout_min", "setup"):  # the CPU resources: one place, slurm_cpu.yaml
        assert cpu_ddp.launcher[key] == cpu.launcher[key] != one.launcher[key], key
    overridden = compose_multirun("hydra/launcher=slurm_cpu_ddp", "hydra.launcher.cpus_per_task=1").hydra.launcher
    assert overridden.cpus_per_task == 1 and overridden.tasks_per_node == 2
    assert "slurm_watch" not in compose_multirun("hydra/launcher=local").hydra.callbacks  # only the SLURM launchers watch


def _report_threads(cfg):
    """Task function of the joblib test: runs inside a loky worker process."""
    from hydra.core.hydra_config import HydraConfig
    return {"seed": cfg.seed, "threads": torch.get_num_threads(), "pid": os.getpid(),
            "dir": HydraConfig.get().runtime.output_dir}


def test_local_launcher_runs_jobs_in_worker_processes_with_their_share_of_the_threads(tmp_path):
    """The real joblib launcher: each job in a worker process, in multiruns/<name>/<overrides>, and with
    cpu_count // n_jobs torch threads (loky sets OMP_NUM_THREADS and MKL_NUM_THREADS for its workers unless
    they are already set), whatever the caller exported."""
    import joblib
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        cfg = hydra.compose_config("train", overrides=["experiment=tiny", "hydra/launcher=local",
                                                       f"hydra.sweep.dir={tmp_path / 'tiny'}"],
                                   run_mode=RunMode.MULTIRUN, from_shell=False)
        plugin = Plugins.instance().instantiate_launcher(
            hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(cfg)),
            task_function=_report_threads, config=cfg)
        returns = plugin.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    results = [r.return_value for r in returns]
    # loky gives each worker every thread-count variable the parent exports, the share for the others;
    # torch then runs with the smaller of its OpenMP and MKL counts (OMP_NUM_THREADS=2 alone gives 1).
    share = max(joblib.cpu_count() // 2, 1)
    expected = min(int(os.environ.get(var, share)) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    assert [r["seed"] for r in results] == [0, 1]
    assert all(r["pid"] != os.getpid() and r["threads"] == expected for r in results), (results, expected)
    assert [Path(r["dir"]) for r in results] == [tmp_path / "tiny" / "seed=0", tmp_path / "tiny" / "seed=1"]


def test_population_paper_sweep_preset_runs_on_the_slurm_launcher():
    cfg = compose_multirun("sweep=population_paper", "hydra.launcher.partition=gpu")
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "slurm" and cfg.hydra.launcher.partition == "gpu"
    assert (cfg.hydra.launcher.gpus_per_node, cfg.hydra.launcher.tasks_per_node) == (1, 1)
    assert cfg.hydra.sweep.dir == "multiruns/population_paper"


class _FakeJob:
    def results(self):
        return [None]


@pytest.mark.parametrize("launcher,gpus,tasks,cpus", [("slurm", 1, 1, 8), ("slurm_ddp", 4, 4, 8),
                                                      ("slurm_cpu", None, 1, 4), ("slurm_cpu_ddp", None, 2, 4)])
def test_slurm_launcher_builds_the_promised_sbatch_script(tmp_path, monkeypatch, launcher, gpus, tasks, cpus):
    """The real plugin launch(): config -> submitit executor -> sbatch text; only the submission is faked."""
    import submitit
    from submitit.slurm.slurm import SlurmJobEnvironment
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that srun exists
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    submitted = {}

    def fake_map_array(executor, fn, *iterables):
        submitted.update(executor=executor, fn=fn, jobs=list(zip(*iterables)))
        return [_FakeJob() for _ in submitted["jobs"]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    sweep_dir = tmp_path / "multiruns"
    from hydra import initialize_config_dir
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        cfg = hydra.compose_config("train", overrides=["experiment=paper", f"hydra/launcher={launcher}",
                                                       "hydra.launcher.partition=gpu", f"hydra.sweep.dir={sweep_dir}"],
                                   run_mode=RunMode.MULTIRUN, from_shell=False)
        plugin = Plugins.instance().instantiate_launcher(
            hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=None),
            task_function=lambda cfg: None, config=cfg)
        plugin.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    executor = submitted["executor"]._executor
    assert type(executor).__name__ == "SlurmExecutor" and executor.max_num_timeout == 3
    assert [job[0] for job in submitted["jobs"]] == [["seed=0"], ["seed=1"]]
    assert submitted["fn"] is plugin and hasattr(plugin, "checkpoint")  # checkpoint(): requeue the same job
    script = executor._make_submission_file_text("python -u -m submitit.core._submit FOLDER", "uid")
    flags = {line for line in script.splitlines() if line.startswith("#SBATCH")}
    for flag in ("--partition=gpu", f"--ntasks-per-node={tasks}", "--nodes=1", f"--cpus-per-task={cpus}",
                 f"--time={240 if gpus else 60}", "--job-name=biolab-paper",
                 f"--signal={SlurmJobEnvironment.USR_SIG}@120"):  # submitit's requeue signal (USR2 by default)
        assert f"#SBATCH {flag}" in flags, (flag, sorted(flags))
    if gpus:
        assert f"#SBATCH --gpus-per-node={gpus}" in flags
    else:  # a CPU partition: no GPU request at all, and torch uses the CPUs of the job
        assert not [f for f in flags if f.startswith(("#SBATCH --gpu", "#SBATCH --gres"))], sorted(flags)
        assert "# setup\nexport OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK\n" in script
    assert str(sweep_dir / ".submitit") in script
    assert "srun --unbuffered" in script


# ---- DDP on CPU: two processes started like srun starts the tasks of a slurm_ddp job ------------------

class BatchRecorder(L.Callback):
    """Test helper (instantiated inside the training processes): saves every training batch of its rank."""

    def __init__(self, out_dir: str):
        self.out_dir, self.batches = Path(out_dir), {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches[trainer.global_step] = {k: v.detach().cpu().clone() for k, v in batch.items()
                                             if isinstance(v, torch.Tensor)}

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"rank": trainer.global_rank, "world_size": trainer.world_size, "batches": self.batches},
                   self.out_dir / f"rank{trainer.global_rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_each_train_on_their_own_share_of_the_batch(tmp_path):
    from conftest import make_cfg
    from biolab.data.datamodule import BioDataModule
    from hydra.utils import instantiate

    world, run_dir, out = 2, tmp_path / "run", tmp_path / "batches"
    overrides = ["experiment=tiny", "seed=3", "trainer.accelerator=cpu", f"trainer.devices={world}",
                 "+trainer.strategy=ddp",
                 f"+callbacks.recorder={{_target_: test_launchers.BatchRecorder, out_dir: '{out}'}}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "biolab-tiny", "SLURM_NTASKS": str(world),
           "SLURM_NTASKS_PER_NODE": str(world), "SLURM_NNODES": "1", "SLURM_NODEID": "0",
           "SLURM_NODELIST": "127.0.0.1"}
    env.pop("SLURM_ARRAY_JOB_ID", None)
    procs = [subprocess.Popen([sys.executable, "-m", "biolab.train", *overrides, f"hydra.run.dir={run_dir}"],
                              cwd=REPO, env={**env, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(log[-3000:] for log in logs)

    # the single-process reference: the same data config, asked for rank r's share of a 2-way split
    cfg = make_cfg(tmp_path / "ref", *[o for o in overrides if not o.startswith("+callbacks")])
    steps = cfg.trainer.max_steps
    shares = []
    for r in range(world):
        recorded = torch.load(out / f"rank{r}.pt", weights_only=True)
        assert (recorded["rank"], recorded["world_size"]) == (r, world)
        assert sorted(recorded["batches"]) == list(range(steps))
        reference: BioDataModule = instantiate(cfg.data, train_seed=cfg.seed, _convert_="all")
        reference.rank, reference.world_size = r, world
        reference.setup()
        for step, batch in recorded["batches"].items():
            expected = reference.train_batch(step)
            assert batch["input_ids"].shape[0] == cfg.data.batch_size // world
            assert batch.keys() == {k for k, v in expected.items() if isinstance(v, torch.Tensor)}
            for key, value in batch.items():
                assert torch.equal(value, expected[key]), (r, step, key)
        shares.append(recorded["batches"][0]["input_ids"])
    assert not torch.equal(shares[0], shares[1])  # two different halves, not one batch seen twice

    import json
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] and summary["steps"] == steps
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
