"""Shared test helpers: compose the real Hydra configs from conf/."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def make_cfg(run_dir, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    cfg.run_dir = str(run_dir)
    return cfg


def small_dm(**kwargs):
    """A set-up BioDataModule of 64 people (batch 8); keyword arguments override its settings."""
    from biolab.data.datamodule import BioDataModule

    args = dict(population_size=64, n_unseen=16, eval_size=32, train_template_eval_size=16,
                unseen_eval_size=16, batch_size=8, eval_batch_size=16, seed=1, train_seed=2)
    args.update(kwargs)
    dm = BioDataModule(**args)
    dm.setup()
    return dm


def small_model(vocab_size: int, seed: int = 0):
    """An untrained 2-layer, 2-head, d_model 32 Transformer in eval mode, without gradients (mech tests)."""
    import torch

    from biolab.model import Transformer, TransformerConfig

    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=vocab_size, n_layers=2, n_heads=2, d_model=32, d_mlp=64, max_seq_len=64)
    return Transformer(config).eval().requires_grad_(False)


@pytest.fixture
def tiny_cfg(tmp_path):
    return lambda *overrides: make_cfg(tmp_path / "run", "experiment=tiny", *overrides)


def kill_once_checkpointed(command, ckpt, min_step, timeout=600, env=None):
    """Start `command` (from the repository root) and SIGKILL it as soon as checkpoint `ckpt` holds
    global_step >= min_step, or when it exits or `timeout` seconds pass: an interrupted run."""
    import signal
    import subprocess
    import time

    import torch

    proc = subprocess.Popen(command, cwd=Path(CONF_DIR).parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if Path(ckpt).exists() and torch.load(ckpt, weights_only=True)["global_step"] >= min_step:
                break
        except Exception:  # caught while being written
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny run (20 steps) with trajectory snapshots at steps 0 and 10 (read-only for tests:
    copy it before changing it)."""
    from biolab.train import train

    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    train(make_cfg(run_dir, "experiment=tiny", "callbacks=trajectory", "callbacks.trajectory.steps=[0,10]"))
    return run_dir


@pytest.fixture
def milestone_at_10(monkeypatch):
    """acc_50pct_step is forced to step 10 from the evaluation at step 10 on (a tiny run does not learn that
    far in 20 steps), so that callbacks.phases.stop_after=acc_50pct_step stops it there."""
    import biolab.callbacks.phases as phases_module

    real = phases_module.phase_summary

    def forced(steps, *args, **kwargs):
        out = real(steps, *args, **kwargs)
        out["acc_50pct_step"] = 10 if steps[-1] >= 10 else None
        return out

    monkeypatch.setattr(phases_module, "phase_summary", forced)
