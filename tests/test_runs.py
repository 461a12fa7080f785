"""The run loader (biolab.runs): snapshots, models, data and results of a run directory, and its refusals."""

import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from biolab.errors import ConfigError
from biolab.runs import load_checkpoint, load_run



def copy_run(tiny_run, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_run, target)
    return target


def test_snapshots_are_the_trajectory_files_and_last_ckpt_by_step(tiny_run):
    run = load_run(tiny_run)
    assert run.steps == [0, 10, 20]
    assert [s.kind for s in run.snapshots] == ["trajectory", "trajectory", "checkpoint"]
    assert run.cfg.data.population_size == 64


def test_model_at_a_step_holds_that_snapshots_weights(tiny_run):
    run = load_run(tiny_run)
    ckpt = load_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    final = run.model(20)
    assert not final.training and not any(p.requires_grad for p in final.parameters())
    for name, tensor in final.state_dict().items():
        torch.testing.assert_close(tensor, ckpt["state_dict"][f"model.{name}"], rtol=0, atol=0)
    early = run.model(0)
    assert not torch.equal(early.embed.weight, final.embed.weight)  # training changed the weights
    assert torch.equal(run.model().embed.weight, final.embed.weight)  # None: the latest snapshot


def test_datamodule_is_rebuilt_with_the_same_people_and_evaluation_sets(tiny_run):
    dm = load_run(tiny_run).datamodule()
    ckpt = load_checkpoint(tiny_run / "checkpoints" / "last.ckpt")
    assert dm.fingerprint == ckpt["BioDataModule"]["fingerprint"]
    # the model scores the rebuilt evaluation set as the run's last evaluation did
    model = load_run(tiny_run).model()
    from biolab.lit_module import BioLitModule
    module = BioLitModule(model=dict(vars(model.cfg)), attributes=list(dm.attributes))
    module.model = model
    loss = module.evaluate(dm.eval_batches["val"], "val")["val/attr_loss"]
    assert loss == pytest.approx(load_run(tiny_run).metrics()[-1]["val/attr_loss"], rel=1e-5)


def test_a_checkpoint_that_does_not_match_its_config_is_refused(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.model.d_mlp = 128  # the weights were trained with 256
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(ConfigError, match=r"d_mlp=256 in the file, 128 in config.yaml"):
        load_run(run_dir).model(10)
    with pytest.raises(ConfigError, match=r"mlp.up.weight has shape \(256, 64\) .*\(128, 64\) in the configured"):
        load_run(run_dir).model(20)  # last.ckpt: shapes only


def test_bad_run_directories_and_steps_are_one_line_errors(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="run directory not found"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.yaml"):
        load_run(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"no snapshot at step 5; available steps: 0, 10, 20"):
        load_run(tiny_run).model(5)
    run_dir = copy_run(tiny_run, tmp_path)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="corrupt or not a biolab checkpoint"):
        load_run(run_dir).steps
    shutil.rmtree(run_dir / "checkpoints")
    shutil.rmtree(run_dir / "trajectory")
    with pytest.raises(ConfigError, match="has no model snapshot"):
        load_run(run_dir).model()


def test_summary_falls_back_to_milestones_from_metrics(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    saved = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").unlink()
    summary = load_run(run_dir).summary()
    assert summary["from_metrics"] is True
    for key in ("fall_end_step", "plateau_end_step", "acc_1pct_step", "no_knowledge_baseline"):
        assert summary[key] == saved[key]
