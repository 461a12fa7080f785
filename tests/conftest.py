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


@pytest.fixture
def tiny_cfg(tmp_path):
    return lambda *overrides: make_cfg(tmp_path / "run", "experiment=tiny", *overrides)
