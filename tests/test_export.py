"""TransformerLens export (biolab.mech.export): same logits and same hook-point activations as the
biolab model on real biographies, and a save/load round trip. Skipped without transformer_lens
(the `mech` extra; CI installs it through `dev`)."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformer_lens")

from biolab.data.biographies import IGNORE_INDEX  # noqa: E402
from biolab.mech.export import load_export, save_export, to_hooked_transformer  # noqa: E402
from biolab.model import Transformer, TransformerConfig  # noqa: E402
from conftest import small_dm  # noqa: E402

CONFIGS = {"rope_rmsnorm_gelu": dict(positional="rope", norm="rmsnorm", activation="gelu"),
           "learned_layernorm_relu_tied": dict(positional="learned", norm="layernorm", activation="relu",
                                               tie_embeddings=True)}


@pytest.fixture(scope="module")
def dm():
    return small_dm()


@pytest.fixture(scope="module", params=list(CONFIGS))
def trained(request, dm):
    """A tiny model after a few optimiser steps on biographies (logits far from uniform), val tokens."""
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=dm.vocab_size, n_layers=2, n_heads=4, d_model=64, d_mlp=128,
                                          max_seq_len=128, **CONFIGS[request.param]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(8):
        batch = dm.train_batch(step)
        loss = F.cross_entropy(model(batch["input_ids"]).flatten(0, 1), batch["targets"].flatten(),
                               ignore_index=IGNORE_INDEX)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses
    return model.eval(), dm.fixed_batches("val", 16)[0]["input_ids"]


def test_hooked_transformer_logits_equal_biolabs(trained):
    model, tokens = trained
    hooked = to_hooked_transformer(model)
    with torch.no_grad():
        ours, theirs = model(tokens), hooked(tokens)
    assert ours.std(-1).mean() > 1.0  # far from uniform: a wrong weight would show
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_every_biolab_hook_point_matches_transformer_lens(trained):
    """Same names, shapes and values for every hook point, analysis points switched on in both."""
    model, tokens = trained
    hooked = to_hooked_transformer(model)
    hooked.set_use_split_qkv_input(True)
    hooked.set_use_attn_result(True)
    hooked.set_use_hook_mlp_in(True)
    with torch.no_grad(), model.analysis_hooks():
        _, ours = model.run_with_cache(tokens)
        _, theirs = hooked.run_with_cache(tokens)
    assert set(ours) <= set(theirs), sorted(set(ours) - set(theirs))
    for name, activation in ours.items():
        torch.testing.assert_close(theirs[name], activation, atol=1e-4, rtol=1e-4, msg=name)
    assert {"blocks.1.attn.hook_result", "blocks.1.hook_q_input", "blocks.1.hook_mlp_in"} <= set(ours)


def test_save_and_load_round_trip(trained, tmp_path):
    model, tokens = trained
    hooked = to_hooked_transformer(model)
    out = save_export(hooked, tmp_path / "mech" / "export" / "step_8", meta={"step": 8})
    loaded = load_export(out)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), hooked(tokens), atol=0, rtol=0)
    assert loaded.cfg.positional_embedding_type == hooked.cfg.positional_embedding_type
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_export(tmp_path)
