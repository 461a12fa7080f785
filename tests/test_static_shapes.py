"""Static shapes for compiled GPU training: data.pad_to gives the same loss and metrics as dynamic padding,
a tiny run with it (and device batches, and torch.compile with the "eager" backend) the same curve,
the compiled forward the same logits, and a GPU preset on a machine without CUDA fails at start in one line."""

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from biolab.data.biographies import IGNORE_INDEX
from biolab.errors import ConfigError
from biolab.io import read_csv
from biolab.lit_module import BioLitModule
from biolab.model import TransformerConfig
from biolab.train import train

from conftest import make_cfg, small_dm

REPO = Path(__file__).resolve().parents[1]


def tiny_module(dm, positional="rope", **kwargs) -> BioLitModule:
    torch.manual_seed(0)
    model = TransformerConfig(vocab_size=dm.vocab_size, n_layers=2, n_heads=4, d_model=32, d_mlp=64,
                              max_seq_len=128, positional=positional)
    return BioLitModule(model=asdict(model), attributes=list(dm.attributes), **kwargs)


def test_pad_to_options_give_static_lengths():
    dynamic, fixed, buckets = small_dm(), small_dm(pad_to="max"), small_dm(pad_to=[60, 70, "max"])
    longest = dynamic.max_input_length
    assert fixed.pad_lengths == (longest,) and buckets.pad_lengths == (60, 70, longest)
    for step in range(6):
        natural = dynamic.train_batch(step)["input_ids"].shape[1]
        assert fixed.train_batch(step)["input_ids"].shape[1] == longest
        assert buckets.train_batch(step)["input_ids"].shape[1] == min(b for b in buckets.pad_lengths if b >= natural)
    for batches in fixed.eval_batches.values():
        assert {b["input_ids"].shape[1] for b in batches} == {longest}
    assert 0 < fixed.padding["train_dynamic_pad_fraction"] < fixed.padding["train_pad_fraction"] < 1


def test_padding_only_adds_masked_positions():
    dynamic, fixed = small_dm(), small_dm(pad_to="max")
    for step in range(4):
        a, b = dynamic.train_batch(step), fixed.train_batch(step)
        n = a["input_ids"].shape[1]
        for key in a:
            assert torch.equal(a[key], b[key][:, :n]), key
        assert (b["targets"][:, n:] == IGNORE_INDEX).all() and (b["value_attr"][:, n:] == -1).all()
        assert (b["input_ids"][:, n:] == fixed.tokenizer.pad_id).all()


@pytest.mark.parametrize("positional", ["rope", "learned"])
def test_static_padding_gives_the_loss_and_metrics_of_dynamic_padding(positional):
    dynamic, fixed = small_dm(), small_dm(pad_to="max")
    module = tiny_module(dynamic, positional)
    for step in range(3):
        a, b = dynamic.train_batch(step), fixed.train_batch(step)
        assert b["input_ids"].shape[1] > a["input_ids"].shape[1]  # the comparison is between different shapes
        with torch.no_grad():
            logits_a, logits_b = module(a["input_ids"]), module(b["input_ids"])
            torch.testing.assert_close(logits_b[:, :a["input_ids"].shape[1]], logits_a, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(module.training_step(b, 0), module.training_step(a, 0), rtol=1e-6, atol=1e-6)
    metrics_a = module.evaluate(dynamic.eval_batches["val"], "val")
    metrics_b = module.evaluate(fixed.eval_batches["val"], "val")
    assert metrics_a.keys() == metrics_b.keys()
    for key in metrics_a:
        assert metrics_b[key] == pytest.approx(metrics_a[key], rel=1e-5, abs=1e-6), key


def test_bad_pad_to_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="shorter than the longest biography"):
        small_dm(pad_to=40)
    for bad in ("longest", 0, [50, "x"], []):
        with pytest.raises(ConfigError, match="data.pad_to"):
            small_dm(pad_to=bad)


def test_tiny_run_with_static_padding_device_batches_and_compile_matches_the_default(tmp_path):
    from torch._dynamo.utils import counters
    plain = train(make_cfg(tmp_path / "plain", "experiment=tiny"))
    counters.clear()
    static = train(make_cfg(tmp_path / "static", "experiment=tiny", "data.pad_to=max", "data.device_batches=true",
                            "module.compile=true", "module.compile_options={backend: eager, dynamic: false}"))
    rows = {name: read_csv(tmp_path / name / "metrics.csv") for name in ("plain", "static")}
    assert [r["step"] for r in rows["plain"]] == [r["step"] for r in rows["static"]]
    for a, b in zip(rows["plain"], rows["static"]):
        for key in (k for k in a if k.startswith(("val/", "unseen/", "train_templates/", "train/loss"))):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
    assert static["attr_loss"] == pytest.approx(plain["attr_loss"], rel=1e-4)
    assert 0 < static["train_pad_fraction"] < 1 and "train_pad_fraction" not in plain
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled forward was used


def test_compiled_forward_with_the_eager_backend_matches():
    dm = small_dm(pad_to="max")
    module = tiny_module(dm, compile=True, compile_options={"backend": "eager", "dynamic": False})
    module.configure_model()
    assert module._compiled is not None
    batch = dm.train_batch(0)
    with torch.no_grad():
        compiled = module(batch["input_ids"])
        torch.testing.assert_close(compiled, module.model(batch["input_ids"]))
    with pytest.raises(ValueError, match="module.compile_options"):
        tiny_module(dm, compile_options=["eager"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_preset_without_cuda_fails_at_start(tmp_path):
    cfg = make_cfg(tmp_path / "run", "experiment=tiny", "trainer=gpu")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        train(cfg)
    assert not (tmp_path / "run").exists()
    result = subprocess.run([sys.executable, "-m", "biolab.train", "experiment=paper",
                             f"hydra.run.dir={tmp_path / 'paper'}"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "trainer.accelerator=gpu needs a CUDA GPU" in result.stderr
    assert not (tmp_path / "paper").exists()
