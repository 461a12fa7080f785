"""Toy associative memory (SPEC section 8): learns, collapses under fine-tuning, replay helps, pure, CLI.

A tiny setting (512 keys of dimension 16, 64 hidden units, 10 classes) runs in about a second.
The margins were checked on seeds 0-3: no replay ends at 0.57-0.63 old-key accuracy, replay at
w = 0.5 at 0.95-0.97.
"""

import csv

import pytest
import torch

from biolab.io import read_csv
from biolab.toy.__main__ import main, study_info
from biolab.toy.associative_memory import ToyConfig, finetune, make_keys, pretrain, run_study

TINY = ToyConfig(n_keys=512, dim=16, hidden=64, n_classes=10, finetune_steps=300, batch_size=64, seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as the command line uses: 2 threads on a busy 2-core machine are ~40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def study(one_thread):
    with torch.random.fork_rng():
        return run_study(TINY, new_counts=(64,), replay_weights=(0.0, 0.5), replay_new=64, log=lambda line: None)


def final(rows, weight):
    return [r for r in rows if r["replay_weight"] == weight][-1]


def test_pretraining_learns_every_key(study):
    _, info = study
    assert info["learned"] and info["pretrain_acc"] == 1.0 and info["pretrain_loss"] < TINY.pretrain_target_loss


def test_finetuning_without_replay_drops_old_keys_and_learns_new_ones(study):
    rows, _ = study
    run = [r for r in rows if r["replay_weight"] == 0.0]
    assert run[0]["step"] == 0 and run[0]["old_acc"] == 1.0  # starts from the learned memory
    assert run[0]["new_acc"] < 0.3  # new keys unknown: about chance (1/10)
    assert run[-1]["old_acc"] < 0.8  # collapse of the old memories
    assert run[-1]["new_acc"] > 0.4
    assert run[-1]["old_loss"] > 5 * run[0]["old_loss"]


def test_replay_reduces_the_final_drop(study):
    rows, _ = study
    assert final(rows, 0.5)["old_acc"] > final(rows, 0.0)["old_acc"] + 0.2
    assert final(rows, 0.5)["old_loss"] < final(rows, 0.0)["old_loss"]


def test_a_pure_function_of_the_seed(study):
    rows, _ = study
    again, _ = run_study(TINY, new_counts=(64,), replay_weights=(0.0, 0.5), replay_new=64, log=lambda line: None)
    assert again == rows
    other = ToyConfig(**{**TINY.__dict__, "seed": 1})
    model, _ = pretrain(other, *make_keys(other, other.n_keys, 0))
    other_rows = finetune(other, model, make_keys(other, other.n_keys, 0), make_keys(other, 64, 1))
    assert [r["old_acc"] for r in other_rows] != [r["old_acc"] for r in rows if r["replay_weight"] == 0.0]


def test_new_key_sets_are_nested_and_unit_norm():
    small, large = make_keys(TINY, 8, stream=1), make_keys(TINY, 32, stream=1)
    assert torch.equal(small[0], large[0][:8]) and torch.equal(small[1], large[1][:8])
    assert torch.allclose(large[0].norm(dim=1), torch.ones(32))
    assert not torch.equal(make_keys(TINY, 8, stream=0)[0], small[0])  # old and new keys differ


@pytest.mark.parametrize("kwargs, key", [
    (dict(hidden=0), "toy.hidden"), (dict(finetune_lr=-1.0), "toy.finetune_lr"),
    (dict(n_classes=1), "toy.n_classes"), (dict(n_keys=2.5), "toy.n_keys"),
])
def test_bad_config_names_the_option(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        ToyConfig(**kwargs)


def test_command_line_writes_csv_and_figure(tmp_path, capsys):
    main(["--out", str(tmp_path), "--n-keys", "256", "--dim", "16", "--hidden", "32", "--n-classes", "10",
          "--finetune-steps", "60", "--batch-size", "32", "--new-keys", "16", "32",
          "--replay-weights", "0", "1", "--replay-new-keys", "32"])
    out = capsys.readouterr().out
    assert "pre-training" in out and "fine-tune M=   32 w=1" in out
    with open(tmp_path / "toy_memory.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    runs = {(int(r["n_new"]), float(r["replay_weight"])) for r in rows}
    assert runs == {(16, 0.0), (32, 0.0), (32, 1.0)}  # (32, 0) is shared by both sweeps
    assert set(rows[0]) == {"n_new", "replay_weight", "step", "old_loss", "old_acc", "new_loss", "new_acc"}
    assert (tmp_path / "toy_memory.png").stat().st_size > 10_000
    # --replot redraws the figure from the CSV alone (no training); the runs are read back from it
    (tmp_path / "toy_memory.png").unlink()
    main(["--out", str(tmp_path), "--replot", "--n-classes", "10"])
    assert (tmp_path / "toy_memory.png").stat().st_size > 10_000
    assert study_info(read_csv(tmp_path / "toy_memory.csv")) == {
        "new_counts": [16, 32], "replay_new": 32, "replay_weights": [0.0, 1.0]}


def test_replot_without_a_csv_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--replot"])
    assert exit_info.value.code == 2 and "toy_memory.csv" in capsys.readouterr().err
    assert not (tmp_path / "toy_memory.png").exists()
