"""The "unknown" answer (data.unknown_answer; docs/unknown_answer.md): the extra token, the new people
answered with it, the unknown-answer rate metric, the vocabulary growth at init_from, on tiny real runs."""

import csv

import numpy as np
import pytest
import torch

from biolab.data.tokenizer import UNKNOWN, WordTokenizer
from biolab.errors import ConfigError
from biolab.finetune import grow_vocabulary
from biolab.metrics import finalize, value_stats
from biolab.train import train

from conftest import make_cfg, small_dm

UNKNOWN_FT = ["module.schedule=constant", "module.lr=3e-3", "data.n_new_people=16", "data.replay_weight=1.0",
              "data.unknown_answer=true"]


def test_an_extra_token_comes_last_and_keeps_every_other_id():
    plain = WordTokenizer(["b", "a", "c"])
    extended = WordTokenizer(["b", "a", "c"], extra=(UNKNOWN,))
    assert extended.itos[:-1] == plain.itos and extended.itos[-1] == UNKNOWN
    assert len(extended) == len(plain) + 1 and extended.extra == (UNKNOWN,)


def test_new_people_are_answered_unknown_and_nothing_else_changes():
    plain, unknown = small_dm(n_new_people=16, replay_weight=1.0), small_dm(n_new_people=16, replay_weight=1.0,
                                                                          unknown_answer=True)
    assert unknown.vocab_size == plain.vocab_size + 1 and unknown.unknown_id == plain.vocab_size
    assert plain.unknown_id is None
    for field in ("names", "values", "template_perm"):  # the old and held-out people are untouched
        np.testing.assert_array_equal(getattr(plain.seen, field), getattr(unknown.seen, field))
        np.testing.assert_array_equal(getattr(plain.unseen, field), getattr(unknown.unseen, field))
    np.testing.assert_array_equal(plain.new.names, unknown.new.names)
    for name in ("val", "unseen", "train_templates"):  # same token ids: the extra id is the last one
        for a, b in zip(plain.eval_batches[name], unknown.eval_batches[name]):
            assert all(torch.equal(a[k], b[k]) for k in a)
    for batch in unknown.eval_batches["new"]:  # every value of a new person is the single <unknown> token
        values = batch["targets"][batch["value_attr"] >= 0]
        assert (values == unknown.unknown_id).all()
        assert int((batch["value_attr"] >= 0).sum()) == len(batch["input_ids"]) * len(unknown.attributes)
    batch = unknown.train_batch(0)  # the training stream holds both kinds
    values = batch["targets"][batch["value_attr"] >= 0]
    assert (values == unknown.unknown_id).any() and (values != unknown.unknown_id).any()


def test_unknown_answer_without_new_people_is_refused():
    with pytest.raises(ConfigError, match="data.unknown_answer=true needs data.n_new_people"):
        small_dm(unknown_answer=True)
    with pytest.raises(ConfigError, match="data.unknown_answer must be true or false"):
        small_dm(n_new_people=4, unknown_answer="yes")


def test_unknown_rate_counts_values_whose_first_token_is_argmax_unknown():
    vocab, unknown = 6, 5
    # one sequence: positions 1-2 are a two-token value (attr 0), position 4 a one-token value (attr 1)
    value_attr = torch.tensor([[-1, 0, 0, -1, 1]])
    targets = torch.tensor([[1, 2, 3, 1, 4]])
    logits = torch.zeros(1, 5, vocab)
    logits[0, 1, unknown] = 5.0   # first token of value 0: says unknown
    logits[0, 2, unknown] = 5.0   # second token: not counted again
    logits[0, 4, 4] = 5.0         # value 1: answered, not unknown
    out = finalize(value_stats(logits, targets, value_attr, 2, unknown_id=unknown), ("a", "b"), "x")
    assert out["x/unknown_rate"] == pytest.approx(0.5)
    assert "x/unknown_rate" not in finalize(value_stats(logits, targets, value_attr, 2), ("a", "b"), "x")


def test_vocabulary_growth_appends_mean_rows_and_keeps_the_trained_ones():
    class Module:  # what grow_vocabulary reads: module.model.cfg.vocab_size
        class model:
            class cfg:
                vocab_size = 5
    state = {"embed.weight": torch.arange(8.0).view(4, 2), "unembed.weight": torch.ones(4, 2),
             "blocks.0.mlp.up.weight": torch.zeros(3, 2)}
    grown, n = grow_vocabulary(state, Module, 1)
    assert n == 1 and grown["embed.weight"].shape == (5, 2)
    assert torch.equal(grown["embed.weight"][:4], state["embed.weight"])
    assert torch.equal(grown["embed.weight"][4], state["embed.weight"].mean(0))
    assert grown["blocks.0.mlp.up.weight"] is state["blocks.0.mlp.up.weight"]
    assert grow_vocabulary(state, Module, 0) == (state, 0)  # no extra tokens: nothing grows
    bigger = {**state, "embed.weight": torch.zeros(3, 2)}  # not exactly the extra tokens: left to the shape check
    assert grow_vocabulary(bigger, Module, 1)[1] == 0


def test_finetuning_with_the_unknown_answer_grows_the_model_and_learns_the_token(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    cfg = make_cfg(tmp_path / "ft", "experiment=tiny", f"init_from={ckpt}", *UNKNOWN_FT, "trainer.max_steps=30")
    train(cfg)
    rows = list(csv.DictReader(open(tmp_path / "ft" / "metrics.csv")))
    for name in ("val", "unseen", "new"):
        assert f"{name}/unknown_rate" in rows[0]
    first, last = rows[0], rows[-1]
    assert float(last["new/attr_loss"]) < float(first["new/attr_loss"]) - 1  # the new people's <unknown> is learnt
    saved = torch.load(tmp_path / "ft" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    base = torch.load(ckpt, weights_only=True)["state_dict"]
    assert saved["model.embed.weight"].shape[0] == base["model.embed.weight"].shape[0] + 1
    # the same fine-tuning without the extra token would not fit the grown checkpoint: a clear error
    with pytest.raises(ConfigError, match="vocab_size"):
        train(make_cfg(tmp_path / "again", "experiment=tiny", f"init_from={tmp_path / 'ft/checkpoints/last.ckpt'}",
                       *UNKNOWN_FT[:4]))
