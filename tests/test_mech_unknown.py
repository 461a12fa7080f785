"""The "unknown" answer under steering and direction ablation (biolab.mech.unknown_answer, unknown_study)."""

import json

import pytest
import torch

from biolab.mech.__main__ import main as mech_main
from biolab.mech.entities import resid_hook
from biolab.mech.unknown_answer import residual_writers, without_direction
from biolab.train import train

from conftest import make_cfg, small_model


def test_an_ablated_direction_is_absent_from_the_residual_stream_everywhere():
    model = small_model(50)
    direction = torch.randn(32)
    ablated = without_direction(model, direction)
    tokens = torch.randint(0, 50, (3, 12))
    names = [resid_hook(len(model.blocks), layer) for layer in range(len(model.blocks) + 1)]
    unit = direction / direction.norm()
    _, cache = ablated.run_with_cache(tokens, names_filter=names)
    _, before = model.run_with_cache(tokens, names_filter=names)
    for name in names:
        assert (cache[name] @ unit).abs().max() < 1e-4                      # [3, 12]: nothing along d
        assert (before[name] @ unit).abs().max() > 1e-2                     # and there was before
    assert not torch.equal(ablated(tokens), model(tokens))
    for (name, original), (_, changed) in zip(residual_writers(model), residual_writers(ablated)):
        assert not torch.equal(original, changed), name                     # the copy changed, not the model


def test_ablation_refuses_tied_embeddings():
    model = small_model(50)
    model.cfg.tie_embeddings = True
    with pytest.raises(ValueError, match="untied"):
        without_direction(model, torch.randn(32))


@pytest.fixture(scope="module")
def unknown_run(tmp_path_factory, tiny_run):
    run_dir = tmp_path_factory.mktemp("unknown") / "run"
    train(make_cfg(run_dir, "experiment=tiny", f"init_from={tiny_run / 'checkpoints' / 'last.ckpt'}",
                   "module.schedule=constant", "module.lr=3e-3", "data.n_new_people=16", "data.replay_weight=1.0",
                   "data.unknown_answer=true", "trainer.max_steps=20"))
    return run_dir


OPTIONS = ["n_people=48", "min_right=0", "min_known=5", "sae_train_steps=20", "biographies=16",
           "heldout_biographies=8", "random_controls=2", "alphas=[1,2]", "headline_alpha=2", "n_boot=10",
           "steer_people=6", "unknown=unseen"]


def test_the_unknown_command_writes_its_summary_and_figure(unknown_run, tiny_run):
    assert mech_main(["unknown", str(unknown_run), *OPTIONS]) == 0
    out = unknown_run / "mech" / "unknown"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["base_run_dir"] == str(tiny_run) and summary["base_step"] == 20
    for key in ("unknown_answer_rate_change", "unknown_answer_rate_change_random_latents",
                "known_latent_unseen_unknown_rate_change", "ablation_unseen_unknown_rate_change"):
        assert summary[key] is not None, key
    assert 0 <= summary["unknown_rate_unseen"] <= 1
    assert set(summary["ablation_unseen_unknown_rate_change"]) == {"unknown_latent", "difference_of_means",
                                                                   "random_directions"}
    assert summary["ablation_unseen_unknown_rate_change"]["random_directions"]["sd"] is not None
    for name in ("steering.csv", "ablation.csv", "sae.csv", "unknown.png"):
        assert (out / name).stat().st_size > 0


def test_bad_input_is_one_line_and_exit_2(tiny_run, unknown_run, capsys):
    assert mech_main(["unknown", str(tiny_run), *OPTIONS]) == 2  # not an unknown-answer run
    assert "data.unknown_answer=true" in capsys.readouterr().err
    assert mech_main(["unknown", str(unknown_run), "alpha=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown option 'alpha'") and err.count("\n") == 1
