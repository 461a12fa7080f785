"""branch_from: a study of a later milestone continues the runs of a study stopped at an earlier one.

The branched run must equal a run trained in one go (same metrics at every evaluation), start from the
step where the first run stopped (saved there by SaveAtStop), and refuse a checkpoint of a run that
computes something else, naming the key.
"""

import json

import pytest
import torch

from biolab.errors import ConfigError
from biolab.io import read_csv
from biolab.train import train
from conftest import make_cfg
from test_train import metric_columns

# checkpoints every 15 steps, evaluations at 0, 5, 10, 20: the stop at step 10 falls between two saves
TINY = ["experiment=tiny", "checkpoint_every=15"]


def test_a_branched_run_continues_from_the_stop_and_equals_a_run_in_one_go(tmp_path, milestone_at_10, capsys):
    early = tmp_path / "early"
    train(make_cfg(early, *TINY, "name=early", "callbacks.phases.stop_after=acc_50pct_step"))
    assert torch.load(early / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10  # SaveAtStop

    later = tmp_path / "later"
    summary = train(make_cfg(later, *TINY, "name=later", f"branch_from={early}/checkpoints/last.ckpt"))
    assert "branching from" in capsys.readouterr().out
    whole = tmp_path / "whole"
    reference = train(make_cfg(whole, *TINY, "name=later"))
    got, want = metric_columns(read_csv(later / "metrics.csv")), metric_columns(read_csv(whole / "metrics.csv"))
    assert [r["step"] for r in got] == [0, 5, 10, 20] and got == want
    assert summary["steps"] == 20 and summary["attr_loss"] == reference["attr_loss"]
    assert json.loads((early / "summary.json").read_text())["steps"] == 10  # the first run is left as it was


def test_a_run_with_its_own_checkpoint_resumes_it_and_does_not_read_branch_from(tmp_path, milestone_at_10, capsys):
    early = tmp_path / "early"
    train(make_cfg(early, *TINY, "callbacks.phases.stop_after=acc_50pct_step"))
    later = tmp_path / "later"
    train(make_cfg(later, *TINY, f"branch_from={early}/checkpoints/last.ckpt"))
    (later / "summary.json").unlink()  # as if killed after its last checkpoint
    (early / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")  # would be refused if it were read
    capsys.readouterr()
    train(make_cfg(later, *TINY, f"branch_from={early}/checkpoints/last.ckpt"))
    assert f"resuming from {later}/checkpoints/last.ckpt" in capsys.readouterr().out


@pytest.mark.parametrize("override, key", [("module.lr=0.01", "module.lr"), ("data.seed=7", "data.seed"),
                                           ("trainer.max_steps=30", "trainer.max_steps")])
def test_branch_from_another_computation_is_refused_naming_the_key(tmp_path, milestone_at_10, override, key):
    early = tmp_path / "early"
    train(make_cfg(early, *TINY, "callbacks.phases.stop_after=acc_50pct_step"))
    later = tmp_path / "later"
    with pytest.raises(ConfigError, match=f"branch_from: .*belongs to another run .*{key}"):
        train(make_cfg(later, *TINY, override, f"branch_from={early}/checkpoints/last.ckpt"))
    assert not later.exists()  # refused before anything was written


def test_a_missing_branch_from_is_refused_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="branch_from: .*not found .*branch_from=null"):
        train(make_cfg(run, *TINY, f"branch_from={tmp_path}/none/last.ckpt"))
    assert not run.exists()


def test_the_half_study_branches_from_the_plateau_study_run_of_the_same_size_and_seed():
    """population_half_cpu continues population_scaling_cpu's runs: its branch_from is that study's run of the
    same overrides, and the two configs differ only where a branch may differ."""
    from omegaconf import OmegaConf

    from biolab.resume import BRANCH_FREE_KEYS, config_differences
    from test_launchers import compose_multirun

    def compose(sweep):
        cfg = compose_multirun(f"sweep={sweep}", "data.population_size=8192", "seed=1")
        raw = OmegaConf.to_container(cfg, resolve=False)
        sweep_dir = f"multiruns/{cfg.name}/{raw['hydra']['sweep']['subdir']}"
        branch_from = raw.pop("branch_from")
        raw.pop("hydra")
        return OmegaConf.to_container(OmegaConf.create(raw), resolve=True), sweep_dir, branch_from

    plateau, plateau_dir, none = compose("population_scaling_cpu")
    half, _, branch_from = compose("population_half_cpu")
    assert none is None and branch_from == f"{plateau_dir}/checkpoints/last.ckpt"
    assert plateau_dir == "multiruns/population_scaling_cpu/${hydra:job.override_dirname}"
    assert set(config_differences(plateau, half)) == set(BRANCH_FREE_KEYS)
