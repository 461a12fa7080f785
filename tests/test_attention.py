"""Attention metrics: token roles, the vectorised metrics against a brute-force loop, the callback in a run."""

import json
import math
from pathlib import Path

import pytest
import torch

from biolab.attention import METRICS, accumulate_attention, attention_stats, finalize_attention
from biolab.data.biographies import IGNORE_INDEX, ROLE_NAME, ROLE_OTHER, ROLE_TEXT, ROLE_VALUE
from biolab.data.datamodule import BioDataModule
from biolab.io import read_csv
from biolab.train import train


@pytest.fixture(scope="module")
def dm():
    dm = BioDataModule(population_size=32, n_unseen=8, eval_size=8, train_template_eval_size=4,
                       unseen_eval_size=4, batch_size=4, eval_batch_size=6)
    dm.setup()
    return dm


def test_roles_mark_names_values_and_sentences(dm):
    batch = dm.fixed_batches("attention", 6, with_roles=True)[0]
    tok = dm.tokenizer
    for b in range(6):
        real = batch["targets"][b] != IGNORE_INDEX
        ids, role, sentence = batch["input_ids"][b][real], batch["role"][b][real], batch["sentence"][b][real]
        assert role[0] == ROLE_OTHER and sentence[0] == -1            # <bos>
        assert sorted(set(sentence[1:].tolist())) == list(range(6))    # six sentences, every token in one
        names = ids[role == ROLE_NAME].view(6, 3)                       # the same 3-token name, 6 times
        assert (names == names[0]).all()
        assert all(tok.itos[i][0].isupper() for i in names[0])
        # value tokens are exactly the inputs whose previous target position is marked as a value
        value_in = torch.zeros_like(real)
        value_in[1:] = batch["value_attr"][b][:-1] >= 0
        assert torch.equal(role == ROLE_VALUE, value_in[real])
        assert set(role.tolist()) == {ROLE_OTHER, ROLE_TEXT, ROLE_NAME, ROLE_VALUE}
    # the plain (training) batch has no roles and the same tokens
    plain = dm.fixed_batches("attention", 6)[0]
    assert "role" not in plain and torch.equal(plain["input_ids"], batch["input_ids"])


def brute_force(pattern, batch, scope):
    """Loop over every sequence, head and query; the definitions of biolab.attention written plainly."""
    n_batch, n_heads, n_pos, _ = pattern.shape
    values = {m: [] for m in METRICS}
    for b in range(n_batch):
        role, sent = batch["role"][b].tolist(), batch["sentence"][b].tolist()
        va, real = batch["value_attr"][b].tolist(), (batch["targets"][b] != IGNORE_INDEX).tolist()
        for q in range(n_pos):
            if not real[q]:
                continue
            keys = [k for k in range(q + 1) if scope == "prefix" or (sent[k] == sent[q] and sent[q] >= 0)]
            name_last = role[q] == ROLE_NAME and (q + 1 == n_pos or role[q + 1] != ROLE_NAME)
            starts_value = va[q] >= 0 and (q == 0 or va[q - 1] < 0)
            per_head = {m: [] for m in METRICS}
            for h in range(n_heads):
                p = pattern[b, h, q].double()
                total = sum(p[k] for k in keys) if keys else 1.0  # no keys: <bos>/<eos> in sentence scope
                names = sum(p[k] for k in keys if role[k] == ROLE_NAME and k != q) / total
                attr_names = sum(p[k] for k in keys if role[k] == ROLE_NAME) / total
                attr_text = sum(p[k] for k in keys if role[k] == ROLE_TEXT) / total
                entropy = -sum(float(p[k]) * math.log(float(p[k])) for k in range(q + 1) if p[k] > 0)
                per_head["name_to_name"].append(float(names))
                per_head["attr_to_name"].append(float(attr_names))
                per_head["attr_to_text"].append(float(attr_text))
                per_head["entropy"].append(entropy / math.log(q + 1) if q >= 1 else None)
            mean = {m: sum(v) / n_heads for m, v in per_head.items() if None not in v}
            if name_last:
                values["name_to_name"].append(mean["name_to_name"])
            if starts_value:
                values["attr_to_name"].append(mean["attr_to_name"])
                values["attr_to_text"].append(mean["attr_to_text"])
            if "entropy" in mean:
                values["entropy"].append(mean["entropy"])
    return {m: sum(v) / len(v) for m, v in values.items()}


@pytest.mark.parametrize("scope", ["sentence", "prefix"])
def test_vectorised_metrics_equal_brute_force(dm, scope):
    batch = dm.fixed_batches("attention", 3, with_roles=True)[0]
    n_pos = batch["input_ids"].shape[1]
    gen = torch.Generator().manual_seed(0)
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool).tril()
    patterns = []
    for _ in range(2):  # two layers, 3 heads each, random causal softmax patterns
        scores = torch.randn(3, 3, n_pos, n_pos, generator=gen) * 2
        patterns.append(scores.masked_fill(~causal, float("-inf")).softmax(-1))
    got = finalize_attention(accumulate_attention(None, attention_stats(patterns, batch, scope)))
    for layer, pattern in enumerate(patterns, start=1):
        expected = brute_force(pattern, batch, scope)
        for metric in METRICS:
            assert got[f"attn/L{layer}/{metric}"] == pytest.approx(expected[metric], rel=1e-5), (layer, metric)


def test_uniform_attention_values_are_the_token_shares(dm):
    """Uniform causal attention: entropy is exactly 1, and in sentence scope name + text share of the
    value-predicting position is 1 (only names and template words precede a value in its sentence)."""
    batch = dm.fixed_batches("attention", 6, with_roles=True)[0]
    n_pos = batch["input_ids"].shape[1]
    causal = torch.ones(n_pos, n_pos).tril()
    uniform = (causal / causal.sum(-1, keepdim=True)).expand(6, 2, n_pos, n_pos)
    got = finalize_attention(attention_stats([uniform], batch, "sentence"))
    assert got["attn/L1/entropy"] == pytest.approx(1.0)
    assert got["attn/L1/attr_to_name"] + got["attn/L1/attr_to_text"] == pytest.approx(1.0)
    assert 0.2 < got["attn/L1/name_to_name"] < 0.7  # 2 other name tokens among 3-7 in the sentence
    prefix = finalize_attention(attention_stats([uniform], batch, "prefix"))
    assert prefix["attn/L1/attr_to_name"] + prefix["attn/L1/attr_to_text"] < 1.0  # <bos>, values elsewhere


def test_bad_scope_is_refused(tiny_cfg):
    from biolab.errors import ConfigError
    with pytest.raises(ConfigError, match="callbacks.attention.scope"):
        train(tiny_cfg("callbacks.attention.scope=document"))


def test_run_logs_attention_metrics_and_draws_them(tiny_cfg):
    cfg = tiny_cfg("trainer.max_steps=10")
    summary = train(cfg)
    rows = read_csv(Path(cfg.run_dir) / "metrics.csv")
    for row in rows:  # every evaluation row has every layer's metrics, all within [0, 1]
        for layer in (1, 2):
            for metric in METRICS:
                assert 0.0 <= row[f"attn/L{layer}/{metric}"] <= 1.0
    # at initialisation attention is nearly uniform: entropy close to 1
    assert rows[0]["attn/L1/entropy"] > 0.95
    assert (Path(cfg.run_dir) / "attention.png").stat().st_size > 10_000
    assert 0 < summary["attention_seconds"] <= summary["eval_seconds"]
    assert json.loads((Path(cfg.run_dir) / "summary.json").read_text())["attention_cost_vs_training"] > 0


def test_attention_off_writes_no_columns(tiny_cfg):
    cfg = tiny_cfg("trainer.max_steps=5", "callbacks.attention.n_sequences=0")
    train(cfg)
    assert not any(k.startswith("attn/") for k in read_csv(Path(cfg.run_dir) / "metrics.csv")[0])
    assert not (Path(cfg.run_dir) / "attention.png").exists()
