"""Settings over seeds (biolab.analysis.seeds): the t quantile, means with intervals, the paired difference."""

import json
import math

import pytest

from biolab.analysis.seeds import compare_seeds, main as seeds_main, mean_interval, t_quantile


def test_t_quantiles_match_the_table():
    for df, value in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert t_quantile(0.975, df) == pytest.approx(value, abs=2e-3)


def test_mean_interval_of_three_values():
    out = mean_interval([1.0, 2.0, 3.0])
    half = 4.303 * 1.0 / math.sqrt(3)
    assert out["n"] == 3 and out["mean"] == 2.0 and out["sd"] == pytest.approx(1.0)
    assert out["ci"] == pytest.approx([2.0 - half, 2.0 + half], abs=1e-3)
    assert mean_interval([5.0])["ci"] is None


def write_job(sweep, weight, seed, acc, finished=True):
    job = sweep / f"data.replay_weight={weight},seed={seed}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- data.replay_weight={weight}\n- seed={seed}\n")
    (job / "config.yaml").write_text(f"seed: {seed}\n")
    (job / "metrics.csv").write_text(f"step,val/attr_acc\n0,0.1\n400,{acc}\n")
    if finished:
        (job / "summary.json").write_text(json.dumps({"completed": True}))


def test_settings_are_grouped_over_seeds_and_paired_with_the_reference(tmp_path):
    for seed, (base, replay) in enumerate(((0.10, 0.50), (0.20, 0.70), (0.15, 0.60))):
        write_job(tmp_path, 0, seed, base)
        write_job(tmp_path, 0.5, seed, replay)
    write_job(tmp_path, 2, 0, 0.99, finished=False)  # unfinished: listed, left out
    result = compare_seeds(tmp_path, ("val/attr_acc",), reference="data.replay_weight=0")
    assert set(result["settings"]) == {"data.replay_weight=0", "data.replay_weight=0.5"}
    replay = result["settings"]["data.replay_weight=0.5"]["val/attr_acc"]
    assert replay["n"] == 3 and replay["mean"] == pytest.approx(0.6)
    diff = replay["minus_reference"]
    assert diff["mean"] == pytest.approx(0.45) and diff["sd"] == pytest.approx(0.05)
    assert diff["ci"][0] > 0  # a consistent gain: the paired interval excludes 0
    assert "minus_reference" not in result["settings"]["data.replay_weight=0"]["val/attr_acc"]
    assert len(result["unfinished"]) == 1


def test_the_command_writes_its_files_and_refuses_an_unknown_reference(tmp_path, capsys):
    for seed in range(2):
        write_job(tmp_path, 0, seed, 0.1 + seed / 10)
        write_job(tmp_path, 1, seed, 0.5)
    assert seeds_main([str(tmp_path), "--metric", "val/attr_acc", "--reference", "data.replay_weight=0"]) == 0
    for name in ("seeds.csv", "seeds.json", "seeds.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert seeds_main([str(tmp_path), "--metric", "val/attr_acc", "--reference", "data.replay_weight=7"]) == 2
    assert "names 0 settings" in capsys.readouterr().err
    assert seeds_main([str(tmp_path / "missing")]) == 2
