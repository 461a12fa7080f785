"""Origin test of the hallucination neurons (biolab.mech.neuron_origin): the weight drift is 0 for identical weights
and ranks a planted changed neuron first; the fine-tuned probe applied to the base equals its own AUROC when the two
models are the same; the neurons command's finetuned= option writes the origin fields and refuses bad runs."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from biolab.mech.__main__ import main as mech_main
from biolab.mech.neuron_origin import neuron_drift, origin_test, set_drift
from biolab.mech.neurons_labelled import analyse_labelled, build_items
from biolab.mech.neurons_study import check_options

from conftest import make_cfg, small_dm, small_model

pytest.importorskip("sklearn")


def alternating(model, prompts, n_samples=10, seed=0, **kwargs):
    """Planted labels (an untrained model knows nobody): every other item hallucinated, the rest faithful."""
    return torch.tensor([n_samples * (i % 2) for i in range(len(prompts))])


def test_drift_is_zero_for_identical_weights_and_ranks_a_planted_changed_neuron_first():
    dm = small_dm()
    base = small_model(dm.vocab_size)
    same = neuron_drift(base, copy.deepcopy(base))
    assert np.allclose(same.delta_up, 0, atol=1e-12) and np.allclose(same.delta_down, 0, atol=1e-12)
    assert (same.z == 0).all()
    tuned = small_model(dm.vocab_size)
    d_mlp = tuned.blocks[0].mlp.up.weight.shape[0]
    planted = 1 * d_mlp + 5
    with torch.no_grad():
        for block in tuned.blocks:      # every neuron changes a little ...
            block.mlp.up.weight.add_(0.01 * torch.randn_like(block.mlp.up.weight))
            block.mlp.down.weight.add_(0.01 * torch.randn_like(block.mlp.down.weight))
        tuned.blocks[1].mlp.up.weight[5] = torch.randn(tuned.blocks[1].mlp.up.weight.shape[1])   # ... one a lot
        tuned.blocks[1].mlp.down.weight[:, 5] = torch.randn(tuned.blocks[1].mlp.down.weight.shape[0])
    drift = neuron_drift(base, tuned)
    assert int(np.argmax(drift.z)) == planted and drift.rank[planted] == 0.0 and drift.rank.max() == 1.0
    assert abs(drift.z.mean()) < 1e-9
    planted_set = set_drift(drift, [planted], n_random=200)
    assert planted_set["mean_rank"] == 0.0 and planted_set["p_rank_at_least"] == 1.0
    assert 0.4 < planted_set["random_mean_rank"] < 0.6
    assert set_drift(drift, [int(np.argmin(drift.z))], n_random=200)["p_rank_at_least"] < 0.05


def test_transfer_auroc_equals_the_probes_own_auroc_when_base_is_the_finetuned_model(monkeypatch):
    import biolab.mech.neurons_labelled as labelled

    monkeypatch.setattr(labelled, "label_items", alternating)
    dm = small_dm()
    model = small_model(dm.vocab_size)
    options = check_options({"unseen_people": 8, "random_sets": 3, "bootstrap": 5, "min_per_class": 2,
                             "intervention_items": 8, "n_grid": 3, "alphas": [0, 1]})
    items = build_items(dm, None, 8, options["other_attributes"], 0)
    base_result = analyse_labelled(model, items, options, required=True)
    result = origin_test(model, model, items, base_result, options)
    own, transfer = result["finetuned_tests"]["heldout_people"], result["transfer_tests"]["heldout_people"]
    assert own["auroc"] is not None and transfer["auroc"] == pytest.approx(own["auroc"])
    assert result["finetuned_balanced_items"] == base_result["balanced_items"]
    assert result["h_neuron_drift"]["mean_z"] in (None, 0.0)
    assert result["random_sets_transfer_auroc"]["n"] in (0, 3)


@pytest.fixture(scope="module")
def tiny_finetune(tiny_run):
    """A 20-step fine-tuning of the tiny run on 8 new people."""
    from biolab.train import train

    run_dir = tiny_run.parent / "tiny_finetune"
    if not (run_dir / "checkpoints" / "last.ckpt").exists():
        train(make_cfg(run_dir, "experiment=tiny", f"init_from={tiny_run}/checkpoints/last.ckpt",
                       "data.n_new_people=8", "data.replay_weight=0.5", "module.schedule=constant"))
    return run_dir


def test_neurons_command_with_finetuned_writes_the_origin_fields(tiny_run, tiny_finetune, monkeypatch):
    import biolab.mech.neurons_labelled as labelled

    monkeypatch.setattr(labelled, "label_items", alternating)
    out = tiny_run.parent / "neurons_origin_out"
    args = ["neurons", str(tiny_run), "main_step=10", "steps=[10]", "unseen_people=8", "random_sets=2", "bootstrap=5",
            "min_per_class=2", "intervention_items=8", "n_grid=3", "alphas=[0,1]", f"finetuned={tiny_finetune}",
            f"out={out}"]
    assert mech_main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("origin_transfer_auroc", "origin_base_auroc", "h_neuron_drift_z", "h_neuron_drift_rank_percentile",
                "random_sets_drift_rank_percentile", "origin_random_sets_transfer_auroc"):
        assert key in summary
    assert summary["origin_skipped"] is None and summary["origin_transfer_auroc"] is not None
    assert (out / "origin" / "steps" / "step_20.json").exists()


def test_bad_finetuned_runs_are_one_line_and_exit_code_2(tiny_run, tiny_finetune, tmp_path, capsys):
    edited = tmp_path / "edited"
    shutil.copytree(tiny_finetune, edited, ignore=shutil.ignore_patterns("mech"))
    config = edited / "config.yaml"
    config.write_text(config.read_text().replace(f"init_from: {tiny_run}/checkpoints/last.ckpt",
                                                 f"init_from: {edited}/checkpoints/last.ckpt"))
    from biolab.train import train

    wider = tmp_path / "wider"      # another model shape, its config edited to name the tiny run as its start
    train(make_cfg(wider, "experiment=tiny", "model.d_mlp=128", "trainer.max_steps=2"))
    config = wider / "config.yaml"
    config.write_text(config.read_text().replace("init_from: null", f"init_from: {tiny_run}/checkpoints/last.ckpt"))
    cases = [(tmp_path / "missing", "run directory not found"), (tiny_run, "is not a fine-tuning run"),
             (edited, "started from"), (wider, "finetuned: blocks.0.mlp.up.weight has shape")]
    for finetuned, message in cases:
        args = ["neurons", str(tiny_run), "main_step=10", f"finetuned={finetuned}", f"out={tmp_path / 'out'}"]
        assert mech_main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert mech_main(["neurons", str(tiny_run), "main_step=10", "label_final=false", f"finetuned={tiny_finetune}",
                      f"out={tmp_path / 'out'}"]) == 2
    assert "label_final=true" in capsys.readouterr().err
