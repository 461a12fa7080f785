"""Experiment tracking with wandb (logger=wandb, offline): tiny runs launched as a user launches them,
then read back from wandb's offline transaction logs (<run_dir>/wandb/offline-run-*/run-<id>.wandb).

- a two-job sweep: each job is its own wandb run with the flattened config, grouped by the study,
  named by the job directory, with the experiment as job type; one history row per evaluation at
  its training step, the summary.json values in the summary, the figures as images; a quiet console;
- a run killed (SIGKILL) and relaunched: one wandb run (one id, a log per launch) in which no step
  is logged twice and no evaluation is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from biolab.data.datamodule import ConfigError
from biolab.io import read_csv
from biolab.tracking import ID_FILE, history_step, logged_steps, make_loggers, run_logs, wandb_records

from conftest import make_cfg

needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                 reason="wandb is not installed (pip install -e \".[wandb]\" or \".[dev]\")")
REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = ("completed", "steps", "attr_loss", "attr_acc", "fall_end_step", "plateau_end_step",
                "acc_50pct_step", "train_tokens_per_s", "population_size", "seed")


def wandb_env(tmp_path: Path) -> dict:
    """Offline whatever the user's environment says; wandb's caches and settings in tmp_path."""
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
            "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"), "WANDB_DATA_DIR": str(tmp_path / "wandb_data"),
            "OMP_NUM_THREADS": "1"}


def _values(items) -> dict:
    """{key: value} of wandb Config/Summary/History items (key, or nested_key path as a nested dict)."""
    out: dict = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


def read_wandb_run(run_dir: Path) -> dict:
    """The wandb run of a run directory, from the transaction logs of all its launches (oldest first):
    id, the run records (group, name, job type per launch), config, summary, history as
    [(step, row)] in log order, and the files directory of each launch."""
    run_id = (run_dir / ID_FILE).read_text().strip()
    run = {"id": run_id, "logs": run_logs(run_dir, run_id), "runs": [], "config": {}, "summary": {}, "history": []}
    for log in run["logs"]:
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["runs"].append(record.run)
                run["config"].update(_values(record.run.config.update))
            elif kind == "config":
                run["config"].update(_values(record.config.update))
            elif kind == "summary":
                run["summary"].update(_values(record.summary.update))
            elif kind == "history":
                run["history"].append((history_step(record.history), _values(record.history.item)))
    run["config"].pop("_wandb", None)
    return run


def images(run: dict) -> dict:
    return {key: value for _, row in run["history"] for key, value in row.items()
            if isinstance(value, dict) and value.get("_type") == "image-file"}


@needs_wandb
def test_sweep_jobs_are_wandb_runs_with_config_group_name_summary_and_figures(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "biolab.train", "-m", "experiment=tiny", "logger=wandb", "seed=0,1",
                             f"hydra.sweep.dir={sweep_dir}"], cwd=REPO, env=wandb_env(tmp_path),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [job.name for job in jobs] == ["logger=wandb,seed=0", "logger=wandb,seed=1"]
    ids = set()
    for seed, job in enumerate(jobs):
        run = read_wandb_run(job)
        ids.add(run["id"])
        assert len(run["logs"]) == 1 and run["logs"][0].parent.name.startswith("offline-run-")
        (record,) = run["runs"]
        assert record.run_id == run["id"]
        # grouped by the study, named by the override string (= the job directory), experiment as job type
        assert (record.run_group, record.display_name, record.job_type) == ("tiny", job.name, "tiny")
        # the resolved config, flattened
        config = run["config"]
        assert config["seed"] == seed and config["data.population_size"] == 64
        assert config["module.lr"] == 0.003 and config["trainer.max_steps"] == 20 and config["name"] == "tiny"
        assert config["model.d_model"] == 64 and config["run_dir"] == str(job)
        assert not any(isinstance(v, dict) for v in config.values())
        # one history row per evaluation, at its training step, with the evaluation's values
        rows = read_csv(job / "metrics.csv")
        assert [step for step, _ in run["history"]] == [int(r["step"]) for r in rows] == [0, 5, 10, 20]
        for (step, logged), row in zip(run["history"], rows):
            assert logged["_step"] == logged["trainer/global_step"] == step
            assert logged["val/attr_loss"] == pytest.approx(row["val/attr_loss"])
            assert logged["attn/L1/attr_to_name"] == pytest.approx(row["attn/L1/attr_to_name"])
        # summary.json in the summary: final metrics, milestones, throughput
        summary = json.loads((job / "summary.json").read_text())
        assert {key: run["summary"][key] for key in SUMMARY_KEYS} == {key: summary[key] for key in SUMMARY_KEYS}
        assert run["summary"]["per_attribute"] == summary["per_attribute"]
        # the run directory's figures as images, their files in the offline run
        logged_images = images(run)
        assert sorted(logged_images) == ["figures/attention", "figures/learning_curves"]
        for image in logged_images.values():
            assert (run["logs"][0].parent / "files" / image["path"]).stat().st_size > 1000
    assert len(ids) == 2
    assert_reader_agrees_with_wandb(read_wandb_run(jobs[0])["logs"][0], wandb_env(tmp_path))
    # a quiet console that keeps the progress lines
    console = result.stdout + result.stderr
    assert re.search(r"step +10/20 \| train loss [\d.]+ \| [\d,]+ tok/s \| eta [\d.]+ min", console)
    assert "wandb sync" in console and "offline run logger=wandb,seed=0" in console
    for noise in ("Tip:", "litlogger", "litmodels", "TPU available", "GPU available: False", "anonymous",
                  "wandb leet", "Tracking run with wandb"):
        assert noise not in console, noise


def assert_reader_agrees_with_wandb(log: Path, env: dict) -> None:
    """wandb_records reads the records that wandb's own reader reads (wandb leet inspect, wandb >= 0.31)."""
    leet = _leet_inspect()
    if leet is None:
        return
    dump = subprocess.run([*leet, "--json", str(log)], capture_output=True, text=True, env=env, timeout=120,
                          check=True).stdout
    records = [json.loads(line) for line in dump.splitlines()]
    ours = list(wandb_records(log))
    assert [r["num"] for r in records] == [r.num for r in ours]
    assert [r["type"] for r in records] == [r.WhichOneof("record_type") for r in ours]


def _leet_inspect() -> list[str] | None:
    """The command of wandb's own .wandb reader (wandb leet inspect, wandb >= 0.31), if there is one."""
    cli = shutil.which("wandb", path=str(Path(sys.executable).parent))
    command = [cli, "leet", "inspect"] if cli else None
    if command and subprocess.run([*command, "--help"], capture_output=True).returncode == 0:
        return command
    return None


def kill_once_logged(command, run_dir: Path, step: int, env: dict, timeout: float = 600) -> None:
    """Start `command` and SIGKILL it as soon as its offline wandb log on disk holds `step`."""
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        id_file = run_dir / ID_FILE
        if id_file.exists() and step in logged_steps(run_dir, id_file.read_text().strip()):
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()


@needs_wandb
def test_killed_and_relaunched_run_is_one_wandb_run_without_repeated_steps(tmp_path):
    """SIGKILL a run with the wandb logger once its offline log holds step 40 (evaluations every 10
    steps, checkpoints every 30: the checkpoint is step 30, and the row of step 50 is computed but not
    yet on disk), re-run the same command. The relaunch resumes at step 30 and evaluates 40 again:
    one wandb run (same id, a second offline log) in which every evaluation step appears once."""
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "biolab.train", "experiment=tiny", "logger=wandb", "trainer.max_steps=100",
               "checkpoint_every=30", "callbacks.evaluator.dense_every=10", "callbacks.evaluator.dense_until=100",
               f"hydra.run.dir={run_dir}"]
    env = wandb_env(tmp_path)
    # wandb >= 0.31 writes its log to disk every 15 s (and when a 32 KiB block fills): here at once
    kill_once_logged(command, run_dir, 40, {**env, "WANDB__TRANSACTION_LOG_FLUSH_INTERVAL": "0.05"})
    assert not (run_dir / "summary.json").exists(), "the run finished before it could be killed"
    first = read_wandb_run(run_dir)
    assert_reader_agrees_with_wandb(first["logs"][0], env)  # a log cut off by the kill
    first_steps = [step for step, _ in first["history"]]
    checkpoint_step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert checkpoint_step < max(first_steps), "no logged step after the checkpoint: nothing that could repeat"

    relaunch = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    assert f"wandb: offline run killed (id {first['id']}, group tiny) continued after step" in relaunch.stdout
    assert "WARNING" not in relaunch.stdout + relaunch.stderr  # e.g. wandb's "Tried to log to step 99 ..."

    run = read_wandb_run(run_dir)
    assert run["id"] == first["id"] and len(run["logs"]) == 2 and run["logs"][0] == first["logs"][0]
    assert sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*")) == [p.parent.name for p in run["logs"]]
    assert [r.run_id for r in run["runs"]] == [run["id"]] * 2
    assert len({(r.run_group, r.display_name, r.job_type) for r in run["runs"]}) == 1
    steps = [step for step, _ in run["history"]]
    assert steps[:len(first_steps)] == first_steps  # the first launch's log is kept as it was
    assert len(steps) == len(set(steps)) and steps == sorted(steps)  # no step twice, in order
    assert steps == [int(r["step"]) for r in read_csv(run_dir / "metrics.csv")] == list(range(0, 101, 10))
    assert run["summary"]["completed"] is True and run["summary"]["steps"] == 100
    assert sorted(images(run)) == ["figures/attention", "figures/learning_curves"]


def test_wandb_logger_without_wandb_installed_is_a_one_line_error(tmp_path, monkeypatch):
    from lightning_utilities.core.imports import RequirementCache
    monkeypatch.setattr("lightning.pytorch.loggers.wandb._WANDB_AVAILABLE", RequirementCache("wandb>=999"))
    cfg = make_cfg(tmp_path, "experiment=tiny", "logger=wandb")
    with pytest.raises(ConfigError, match=r'logger\.wandb: .*pip install -e "\.\[wandb\]" .*wandb>=999') as err:
        make_loggers(cfg.logger, tmp_path)
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / ID_FILE).exists()
