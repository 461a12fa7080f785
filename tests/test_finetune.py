"""Fine-tuning (SPEC section 8): new people, replay mixture, loading a checkpoint, constant lr, resume,
and the fine-tuning and hallucination figures, on tiny real runs."""

import csv
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from biolab.analysis.finetune import analyse_finetune, load_runs, main as finetune_main
from biolab.analysis.hallucination import plot_hallucination
from biolab.errors import ConfigError
from biolab.data.new_people import make_new_population
from biolab.data.pools import load_pools
from biolab.data.population import make_populations
from biolab.io import read_csv
from biolab.lit_module import BioLitModule
from biolab.train import train

from conftest import make_cfg, small_dm

FT = ["module.schedule=constant", "module.lr=3e-5", "data.n_new_people=16"]


def name_keys(population):
    return {tuple(n) for n in population.names.tolist()}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A finished tiny pre-training run (20 steps): its run directory."""
    run_dir = tmp_path_factory.mktemp("pre") / "run"
    train(make_cfg(run_dir, "experiment=tiny"))
    return run_dir


def finetune_cfg(run_dir, pretrained, *overrides):
    return make_cfg(run_dir, "experiment=tiny", f"init_from={pretrained / 'checkpoints' / 'last.ckpt'}", *FT,
                    *overrides)


# ---- new people -----------------------------------------------------------------------------------

def test_new_people_are_disjoint_from_seen_and_unseen_and_fixed_by_the_data_seed():
    pools = load_pools()
    seen, unseen = make_populations(pools, 300, 100, seed=3)
    new = make_new_population(pools, seen, unseen, 200, seed=3)
    again = make_new_population(pools, *make_populations(pools, 300, 100, seed=3), 200, seed=3)
    other = make_new_population(pools, *make_populations(pools, 300, 100, seed=4), 200, seed=4)
    assert len(name_keys(new)) == 200
    assert not name_keys(new) & name_keys(seen) and not name_keys(new) & name_keys(unseen)
    for field in ("names", "values", "template_perm"):
        np.testing.assert_array_equal(getattr(new, field), getattr(again, field))
    assert not np.array_equal(new.names, other.names)
    assert (np.sort(new.template_perm, axis=-1) == np.arange(25)).all()


def test_adding_new_people_changes_neither_the_old_people_nor_the_old_evaluation_sets():
    plain, tuned = small_dm(), small_dm(n_new_people=32, replay_weight=0.5)
    for field in ("names", "values", "template_perm"):
        np.testing.assert_array_equal(getattr(plain.seen, field), getattr(tuned.seen, field))
        np.testing.assert_array_equal(getattr(plain.unseen, field), getattr(tuned.unseen, field))
        # the training population is the old people, then the new ones
        np.testing.assert_array_equal(getattr(tuned.train_population, field)[:64], getattr(tuned.seen, field))
        np.testing.assert_array_equal(getattr(tuned.train_population, field)[64:], getattr(tuned.new, field))
    assert list(plain.eval_batches) == ["val", "train_templates", "unseen"]
    assert list(tuned.eval_batches) == ["val", "train_templates", "unseen", "new"]
    for name in plain.eval_batches:
        for a, b in zip(plain.eval_batches[name], tuned.eval_batches[name]):
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(len(b["input_ids"]) for b in tuned.eval_batches["new"]) == 32  # new_eval_size defaults to eval_size
    assert plain.fingerprint == tuned.fingerprint


def people_in_batch(dm, batch) -> list[int]:
    """Index (into dm.train_population) of the person each training biography is about, read from its tokens."""
    builder, population = dm.builder, dm.train_population
    index = {(builder.given_ids[f], builder.given_ids[m], builder.surname_ids[s]): i
             for i, (f, m, s) in enumerate(population.names.tolist())}
    people = []
    for ids in batch["input_ids"].tolist():
        found = Counter(index[t] for t in zip(ids, ids[1:], ids[2:]) if t in index)
        person, count = found.most_common(1)[0]
        assert count == 6  # the full name in each of the six sentences
        people.append(person)
    return people


@pytest.mark.parametrize("weight", [0.0, 0.25, 2.0])
def test_replay_weight_sets_the_share_of_old_people_as_the_mixture_says(weight):
    n_old, n_new, steps = 64, 32, 150
    dm = small_dm(n_new_people=n_new, replay_weight=weight, batch_size=16)
    people = np.array([p for step in range(steps) for p in people_in_batch(dm, dm.train_batch(step))])
    old = people < n_old
    expected = weight * n_old / (weight * n_old + n_new)  # each old person drawn w times as often as a new one
    if weight == 0:
        assert not old.any()  # no replay: only new people
        assert len(set(people)) == n_new  # and all of them
    else:
        sd = math.sqrt(expected * (1 - expected) / len(people))
        assert abs(old.mean() - expected) < 5 * sd, (old.mean(), expected)
    # the stream stays a pure function of (seed, step, rank)
    again = small_dm(n_new_people=n_new, replay_weight=weight, batch_size=16)
    assert torch.equal(dm.train_batch(7)["input_ids"], again.train_batch(7)["input_ids"])


@pytest.mark.parametrize("kwargs, key", [
    (dict(n_new_people=-1), "data.n_new_people"),
    (dict(n_new_people=8, replay_weight=-0.5), "data.replay_weight"),
    (dict(replay_weight=0.5), "data.replay_weight=0.5 needs data.n_new_people"),
    (dict(n_new_people=8, new_eval_size=-1), "data.new_eval_size"),
])
def test_bad_finetuning_data_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        small_dm(**kwargs)


def test_a_non_uniform_training_distribution_is_refused_with_new_people():
    from biolab.data.distributions import PowerLaw
    with pytest.raises(ConfigError, match="data.distribution must be uniform"):
        small_dm(n_new_people=8, distribution=PowerLaw(0.5))


# ---- learning rate ------------------------------------------------------------------------------

def test_constant_schedule_keeps_the_learning_rate_and_cosine_is_unchanged():
    model = dict(vocab_size=50, n_layers=1, n_heads=2, d_model=16, d_mlp=32, max_seq_len=32)
    for schedule, expected_end in (("constant", 3e-5), ("cosine", 1e-7)):
        module = BioLitModule(model, lr=3e-5, min_lr=1e-7, max_steps=100, schedule=schedule)
        config = module.configure_optimizers()
        optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
        lrs = []
        for _ in range(100):
            optimizer.step()
            scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
        assert lrs[-1] == pytest.approx(expected_end)
        if schedule == "constant":
            assert set(lrs) == {3e-5}
    with pytest.raises(ValueError, match="module.schedule"):
        BioLitModule(model, schedule="linear")


# ---- fine-tuning runs ---------------------------------------------------------------------------

SWEEP = [(8, 0), (16, 0), (16, 0.5)]  # (M, w) of the tiny fine-tuning runs, 10 steps each


def sweep_job(m, w):
    return f"data.n_new_people={m},data.replay_weight={w}"


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, pretrained):
    """A directory of tiny fine-tuning runs from `pretrained`, laid out like a sweep: its path."""
    sweep = tmp_path_factory.mktemp("finetune") / "sweep"
    for m, w in SWEEP:
        train(finetune_cfg(sweep / sweep_job(m, w), pretrained, f"data.n_new_people={m}", f"data.replay_weight={w}",
                           "trainer.max_steps=10"))
    return sweep


def test_finetuning_starts_from_the_checkpoint_at_a_constant_lr(pretrained, finetuned):
    run_dir = finetuned / sweep_job(16, 0)
    pre, ft = read_csv(pretrained / "metrics.csv"), read_csv(run_dir / "metrics.csv")
    # step 0 of fine-tuning evaluates the pre-trained weights: the same numbers as the end of pre-training
    old_keys = [k for k in pre[-1] if k.startswith(("val/", "train_templates/", "unseen/", "attn/L"))]
    assert any(k.startswith("attn/L") for k in old_keys)  # attention metrics keep working
    for key in old_keys:
        assert ft[0][key] == pytest.approx(pre[-1][key], rel=1e-5, abs=1e-7), key
    # control: the same seed without init_from would start from pre-training's initialisation (its step 0)
    assert ft[0]["val/attr_loss"] != pytest.approx(pre[0]["val/attr_loss"], rel=1e-3)
    assert "new/attr_loss" in ft[0] and "new/attr_acc" in ft[-1]
    assert ft[0]["new/attr_loss"] > pre[-1]["val/baseline"]  # the new people are unknown
    # the learning rate is constant: every evaluation row, from step 0 to the end
    assert {r["lr"] for r in ft} == {3e-5}
    assert [int(r["step"]) for r in ft] == [0, 5, 10]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] and summary["n_new_people"] == 16 and summary["replay_weight"] == 0.0
    assert summary["replay_fraction"] == 0
    assert summary["old_attr_loss_start"] == pytest.approx(pre[-1]["val/attr_loss"], rel=1e-5)
    assert summary["init_from"].endswith("last.ckpt")
    assert (run_dir / "finetune.png").stat().st_size > 0


def test_missing_init_from_is_a_clear_error_before_training(tmp_path, pretrained):
    cfg = make_cfg(tmp_path / "ft", "experiment=tiny", "init_from=/nonexistent/last.ckpt", *FT)
    with pytest.raises(ConfigError, match="init_from: checkpoint not found: /nonexistent/last.ckpt"):
        train(cfg)
    assert not (tmp_path / "ft").exists()
    # new people need a trained model: the fine-tuning presets require init_from
    for preset in ("finetune_cpu", "finetune_paper"):
        with pytest.raises(ConfigError, match="init_from is required with data.n_new_people > 0"):
            train(make_cfg(tmp_path / "ft2", f"experiment={preset}"))
    assert not (tmp_path / "ft2").exists()


def test_corrupt_or_mismatched_checkpoints_are_refused_naming_the_key(tmp_path, pretrained):
    ckpt_path = pretrained / "checkpoints" / "last.ckpt"
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    cases = [
        ([f"init_from={bad}"], "init_from: .* is corrupt"),
        (["model.d_model=32"], r"model\.d_model=32 here, 64 in"),
        (["data.population_size=48"], r"data\.population_size=48 here but 64"),
        (["data.seed=5"], r"data\.seed=5 here but 0"),
        (["data.n_train_templates=10"], r"data\.n_train_templates"),
    ]
    for i, (overrides, message) in enumerate(cases):
        run_dir = tmp_path / f"run{i}"
        with pytest.raises(ConfigError, match=message):
            train(finetune_cfg(run_dir, pretrained, *overrides))
        assert not run_dir.exists()
    ckpt = torch.load(ckpt_path, weights_only=True)
    # a checkpoint without "state_dict"
    torch.save({"global_step": 3}, tmp_path / "empty.ckpt")
    with pytest.raises(ConfigError, match="no 'state_dict'"):
        train(finetune_cfg(tmp_path / "r5", pretrained, f"init_from={tmp_path / 'empty.ckpt'}"))
    # same settings, other people (e.g. other pool files): the population fingerprint
    ckpt["BioDataModule"] = {**ckpt["BioDataModule"], "fingerprint": "0" * 64}
    torch.save(ckpt, tmp_path / "other_people.ckpt")
    with pytest.raises(ConfigError, match="fingerprint"):
        train(finetune_cfg(tmp_path / "r6", pretrained, f"init_from={tmp_path / 'other_people.ckpt'}"))
    # an older checkpoint without data info: the run's config.yaml beside checkpoints/ is read instead
    old_style = tmp_path / "old_run"
    (old_style / "checkpoints").mkdir(parents=True)
    shutil.copy(pretrained / "config.yaml", old_style / "config.yaml")
    del ckpt["BioDataModule"]
    torch.save(ckpt, old_style / "checkpoints" / "last.ckpt")
    with pytest.raises(ConfigError, match=r"data\.seed=5 here but 0 in the pre-training run \(.*config\.yaml\)"):
        train(finetune_cfg(tmp_path / "r7", old_style, "data.seed=5"))


def test_resume_continues_from_its_own_checkpoint_not_from_init_from(tmp_path, pretrained, finetuned, monkeypatch):
    own = tmp_path / "pre"  # a copy of the pre-training checkpoint, deleted below
    (own / "checkpoints").mkdir(parents=True)
    shutil.copy(pretrained / "checkpoints" / "last.ckpt", own / "checkpoints" / "last.ckpt")
    cfg = finetune_cfg(tmp_path / "interrupted", own, "data.replay_weight=0.5", "trainer.max_steps=10")
    original_step = BioLitModule.training_step

    class SimulatedKill(Exception):
        pass

    def crash_after_step_5(self, batch, batch_idx):
        if self.trainer.global_step == 7:
            raise SimulatedKill
        return original_step(self, batch, batch_idx)

    monkeypatch.setattr(BioLitModule, "training_step", crash_after_step_5)
    with pytest.raises(SimulatedKill):
        train(cfg)
    monkeypatch.undo()
    assert torch.load(tmp_path / "interrupted" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    (own / "checkpoints" / "last.ckpt").unlink()  # init_from is gone: a resume must not need it
    summary = train(cfg)
    assert summary["completed"] and summary["steps"] == 10
    # the same metrics as the uninterrupted run of the same setting
    ref_rows = read_csv(finetuned / sweep_job(16, 0.5) / "metrics.csv")
    rows = read_csv(tmp_path / "interrupted" / "metrics.csv")
    keys = [k for k in ref_rows[-1] if k.startswith(("val/", "new/", "unseen/", "train/loss"))]
    assert [int(r["step"]) for r in rows] == [int(r["step"]) for r in ref_rows] == [0, 5, 10]
    for a, b in zip(ref_rows, rows):
        assert {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}


def test_old_run_configs_without_the_new_keys_still_resume(tiny_cfg):
    """Runs started before the fine-tuning keys existed: their config.yaml lacks them; a resume is no change."""
    from omegaconf import OmegaConf
    from biolab.train import _check_same_run
    cfg = tiny_cfg()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    old = json.loads(json.dumps(resolved))
    for section, key in (("data", "n_new_people"), ("data", "replay_weight"), ("data", "new_eval_size"),
                         ("module", "schedule")):
        del old[section][key]
    del old["init_from"]
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(old)))
    _check_same_run(run_dir, resolved)  # no error
    resolved["module"]["schedule"] = "constant"
    with pytest.raises(ConfigError, match="module.schedule"):
        _check_same_run(run_dir, resolved)


# ---- figures ------------------------------------------------------------------------------------

def test_hallucination_figure_from_a_real_run(pretrained, tmp_path):
    path = plot_hallucination(pretrained)
    assert path == pretrained / "hallucination.png" and path.stat().st_size > 10_000
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        plot_hallucination(tmp_path)


def test_finetuning_figures_from_real_runs(tmp_path, pretrained, finetuned, capsys):
    runs = load_runs([finetuned])  # a sweep directory
    assert [(r.n_new, r.weight) for r in runs] == [(8, 0.0), (16, 0.0), (16, 0.5)]
    written = analyse_finetune([finetuned])
    assert [p.name for p in written] == ["finetune_trajectories.png", "finetune_curves.png", "finetune_table.csv"]
    assert all(p.parent == finetuned and p.stat().st_size > 0 for p in written)
    assert all(p.stat().st_size > 10_000 for p in written[:2])  # figures
    with open(finetuned / "finetune_table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(int(r["n_new_people"]), float(r["replay_weight"])) for r in table] == SWEEP
    assert float(table[2]["replay_fraction"]) == pytest.approx(0.5 * 64 / (0.5 * 64 + 16))
    assert all(float(r["attention_max_change"]) >= 0 for r in table)
    assert float(table[0]["old_loss_start"]) == pytest.approx(read_csv(pretrained / "metrics.csv")[-1]["val/attr_loss"])
    # run directories and the command line
    out = tmp_path / "figures"
    assert finetune_main([str(finetuned / sweep_job(8, 0)), str(finetuned / sweep_job(16, 0)), "--out", str(out)]) == 0
    assert (out / "finetune_trajectories.png").is_file() and (out / "finetune_curves.png").is_file()
    assert finetune_main([str(tmp_path / "nothing")]) == 2
    assert "not a directory" in capsys.readouterr().err
