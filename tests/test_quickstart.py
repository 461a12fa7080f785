"""Slow: the CPU quick-start, trained to the end, shows the three phases (python -m pytest -m slow)."""

from pathlib import Path

import pytest

from biolab.train import train

from conftest import make_cfg


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [[], ["seed=3", "data.seed=5"]])
def test_quickstart_shows_fall_plateau_and_acquisition(tmp_path, seeds):
    summary = train(make_cfg(tmp_path / "run", "experiment=quickstart", *seeds))
    baseline = summary["no_knowledge_baseline"]
    # 1. the fall: the loss reaches the baseline region while accuracy is still near zero
    assert summary["fall_end_step"] is not None
    assert summary["acc_at_fall_end"] < 0.05
    # 2. the plateau: the loss stays near the baseline for a while before crossing below it
    assert summary["plateau_end_step"] is not None
    assert summary["plateau_length"] >= 50
    # 3. knowledge acquisition on evaluation templates (unseen wordings)
    assert summary["attr_acc"] >= 0.9
    assert summary["attr_loss"] < 0.1 * baseline
    # unseen people are not known: their loss stays above the baseline
    assert summary["unseen_attr_loss"] > baseline
    assert (Path(tmp_path / "run") / "learning_curves.png").stat().st_size > 10_000
