"""End-to-end training behaviour on tiny configs: outputs, determinism, resume, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from biolab.errors import ConfigError
from biolab.io import read_csv
from biolab.train import train

from conftest import CONF_DIR, kill_once_checkpointed, make_cfg

METRIC_PREFIXES = ("val/", "train_templates/", "unseen/", "train/loss")
REPO = Path(__file__).resolve().parents[1]


def metric_columns(rows):
    return [{k: v for k, v in r.items() if k == "step" or k.startswith(METRIC_PREFIXES)} for r in rows]


def test_tiny_run_writes_all_outputs(tiny_cfg):
    cfg = tiny_cfg()
    summary = train(cfg)
    run_dir = Path(cfg.run_dir)
    for name in ("config.yaml", "metrics.csv", "summary.json", "learning_curves.png", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    for key in ("attr_loss", "attr_acc", "no_knowledge_baseline", "plateau_end_step", "unseen_attr_loss",
                "population_size", "steps", "train_tokens_per_s"):
        assert key in summary, key
    assert summary == json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["completed"] and summary["population_size"] == 64
    rows = read_csv(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 20]
    # at initialisation the attribute loss is far above the no-knowledge baseline, and training lowers it
    assert rows[0]["val/attr_loss"] > 2 * summary["no_knowledge_baseline"]
    assert rows[-1]["val/attr_loss"] < rows[0]["val/attr_loss"]
    assert rows[-1]["train/loss"] < rows[1]["train/loss"]
    # the phase tracker's snapshots (one per evaluation) are part of the checkpoint
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    tracker_state = next(v for k, v in ckpt["callbacks"].items() if "PhaseTracker" in k)
    assert [s["step"] for s in tracker_state["snapshots"]] == [0, 5, 10, 20]
    # re-running a finished run does no work and returns the same summary
    assert train(cfg) == summary


def test_same_seed_same_curve_other_seed_other_curve(tmp_path):
    a = train(make_cfg(tmp_path / "a", "experiment=tiny"))
    b = train(make_cfg(tmp_path / "b", "experiment=tiny"))
    c = train(make_cfg(tmp_path / "c", "experiment=tiny", "seed=1"))
    rows = {k: metric_columns(read_csv(tmp_path / k / "metrics.csv")) for k in "abc"}
    assert rows["a"] == rows["b"]
    assert rows["a"] != rows["c"]
    assert a["attr_loss"] == b["attr_loss"] != c["attr_loss"]


def test_resume_after_kill_gives_the_same_metrics(tmp_path):
    """SIGKILL a run in the middle, re-run the same command: metrics equal an uninterrupted run."""
    overrides = ["experiment=tiny", "trainer.max_steps=400", "checkpoint_every=20",
                 "callbacks.evaluator.dense_every=20", "callbacks.evaluator.dense_until=100",
                 "callbacks.evaluator.sparse_every=50"]
    reference = tmp_path / "reference"
    train(make_cfg(reference, *overrides))

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "biolab.train", *overrides, f"hydra.run.dir={killed}"]
    ckpt = killed / "checkpoints" / "last.ckpt"
    kill_once_checkpointed(command, ckpt, min_step=60)
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    step_at_kill = torch.load(ckpt, weights_only=True)["global_step"]
    assert 0 < step_at_kill < 400

    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    got = metric_columns(read_csv(killed / "metrics.csv"))
    want = metric_columns(read_csv(reference / "metrics.csv"))
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert got == want
    assert json.loads((killed / "summary.json").read_text())["attr_loss"] == \
        json.loads((reference / "summary.json").read_text())["attr_loss"]


def test_corrupt_checkpoint_is_reported_before_training(tiny_cfg):
    cfg = tiny_cfg()
    ckpt = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="corrupt"):
        train(cfg)
    assert ckpt.read_bytes() == b"not a checkpoint"  # nothing is deleted
    assert not (Path(cfg.run_dir) / "metrics.csv").exists()


def test_missing_checkpoint_path_is_reported(tiny_cfg):
    with pytest.raises(ConfigError, match="checkpoint not found"):
        train(tiny_cfg("ckpt_path=/nonexistent/last.ckpt"))


def test_run_dir_with_other_config_is_refused(tiny_cfg, tmp_path):
    train(tiny_cfg())
    with pytest.raises(ConfigError, match="different config.*module.lr"):
        train(tiny_cfg("module.lr=0.01"))


@pytest.mark.parametrize("override, key", [
    ("data.population_size=-3", "data.population_size"),
    ("data.n_train_templates=22", "data.n_train_templates"),
    ("data.population_size=900000000", "data.population_size + data.n_unseen"),
    ("data.attributes=[birth_date,favourite_colour]", "data.attributes"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("module.lr=-1", "module.lr"),
    ("model.norm=batchnorm", "norm"),
    ("model.d_model=100", "d_model"),
    ("callbacks.phases.confirm=0", "callbacks.phases.confirm"),
])
def test_bad_values_fail_before_work_with_the_key_named(tiny_cfg, override, key):
    cfg = tiny_cfg(override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("+", r"\+")):
        train(cfg)
    assert not Path(cfg.run_dir).exists()


def test_unknown_key_is_rejected_by_composition(tmp_path):
    with pytest.raises(ConfigCompositionException, match="populaton_size"):
        make_cfg(tmp_path, "experiment=tiny", "data.populaton_size=5")


def test_command_line_error_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "biolab.train", "experiment=tiny", "data.population_size=-1",
                             f"hydra.run.dir={tmp_path / 'x'}"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "data.population_size" in result.stderr
    assert not (tmp_path / "x").exists()  # the directory Hydra created for the refused start is gone


ALL_OPTIONS = sorted(f"{p.parent.name}={p.stem}" for p in Path(CONF_DIR).glob("*/*.yaml"))


@pytest.mark.parametrize("override", ALL_OPTIONS)
def test_every_config_composes(tmp_path, override):
    cfg = make_cfg(tmp_path, override)
    assert cfg.data._target_ and cfg.model._target_ and cfg.module._target_ and cfg.trainer._target_


def test_paper_preset_matches_spec(tmp_path):
    cfg = make_cfg(tmp_path, "experiment=paper")
    assert cfg.data.population_size == 64_000 and cfg.data.batch_size == 128
    assert cfg.trainer.max_steps == 16_000 and cfg.module.lr == 4e-4
    assert (cfg.model.n_layers, cfg.model.n_heads, cfg.model.d_model, cfg.model.d_mlp) == (8, 8, 512, 2048)
    assert tuple(cfg.module.betas) == (0.9, 0.95) and cfg.module.weight_decay == 0.1 and cfg.module.min_lr == 1e-7
    assert cfg.data.eval_size == 16_000
    assert (cfg.callbacks.evaluator.dense_every, cfg.callbacks.evaluator.dense_until,
            cfg.callbacks.evaluator.sparse_every) == (125, 2000, 500)


def test_cosine_schedule_endpoints():
    from biolab.lit_module import cosine_schedule
    assert cosine_schedule(0, 100, 1e-3, 1e-7) == pytest.approx(1e-3)
    assert cosine_schedule(50, 100, 1e-3, 1e-7) == pytest.approx((1e-3 + 1e-7) / 2)
    assert cosine_schedule(100, 100, 1e-3, 1e-7) == pytest.approx(1e-7)



def test_evaluate_works_outside_a_trainer(tiny_cfg):
    from biolab.train import _build
    datamodule, module, _ = _build(tiny_cfg())
    datamodule.setup()
    metrics = module.evaluate(datamodule.eval_batches["val"], prefix="val")
    assert metrics["val/attr_loss"] > datamodule.baseline  # untrained: far above the baseline
    assert 0.0 <= metrics["val/attr_acc"] <= 1.0


def test_console_script_finds_the_configs_from_any_directory(tmp_path):
    import shutil
    script = shutil.which("biolab-train", path=str(Path(sys.executable).parent))
    assert script, "console script biolab-train is not installed"
    result = subprocess.run([script, "experiment=tiny", "data.population_size=-1",
                             f"hydra.run.dir={tmp_path / 'x'}"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "data.population_size" in result.stderr


def test_slurm_job_with_more_tasks_than_devices_is_refused(tiny_cfg, monkeypatch):
    """hydra/launcher=slurm_ddp starts 4 tasks: without trainer.devices=4 each would train its own copy."""
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_NAME", "biolab-paper")
    with pytest.raises(ConfigError, match="4 tasks but trainer.devices=1"):
        train(tiny_cfg())
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert train(tiny_cfg())["completed"]


def test_the_wide_cpu_preset_composes_with_its_trajectory(tmp_path):
    from conftest import make_cfg

    cfg = make_cfg(tmp_path / "run", "experiment=wide_cpu", "callbacks=trajectory_dense_wide_cpu")
    assert (cfg.model.d_model, cfg.model.d_mlp, cfg.trainer.max_steps) == (256, 1024, 2400)
    assert cfg.data.population_size == 1536 and max(cfg.callbacks.trajectory.steps) == cfg.trainer.max_steps
