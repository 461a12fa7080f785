"""Sweeps and their analysis: a killed sweep resumes without retraining finished jobs; the table, the
power-law fit and the figures of a population sweep."""

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from biolab.analysis.__main__ import main as analysis_main
from biolab.analysis.collect import collect_sweep, parse_value
from biolab.analysis.population import analyse_population_sweep, fit_power_law, predict
from biolab.io import read_csv, write_csv, write_json

from conftest import kill_once_checkpointed

REPO = Path(__file__).resolve().parents[1]


def test_power_law_fit_recovers_known_exponent():
    sizes = [128, 256, 512, 1024, 2048]
    fit = fit_power_law(sizes, [0.43 * n ** 0.81 for n in sizes])
    assert fit["exponent"] == pytest.approx(0.81) and fit["prefactor"] == pytest.approx(0.43)
    assert fit["r2"] == pytest.approx(1.0)
    noisy = fit_power_law(sizes, [0.43 * n ** 0.81 * f for n, f in zip(sizes, (1.3, 0.7, 1.2, 0.8, 1.1))])
    assert 0.5 < noisy["exponent"] < 1.1 and noisy["r2"] < 0.99


def test_parse_value():
    assert parse_value("512") == 512 and parse_value("3e-3") == 0.003 and parse_value("true") is True
    assert parse_value("acc_50pct_step") == "acc_50pct_step"


def fake_job(sweep, size, seed, plateau_end, finished=True, plateau=True):
    """A job directory as a sweep writes it: a fall to just above the baseline (ending at step 90), a
    plateau, and a fall below the baseline from plateau_end; accuracy 50% at 1.5 x plateau_end.
    plateau=False: the fall goes straight through the baseline (no plateau)."""
    job = sweep / f"data.population_size={size},seed={seed}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        f"- data.population_size={size}\n- seed={seed}\n- sweep=population_cpu\n")
    (job / "config.yaml").write_text("data:\n  batch_size: 64\nmodule:\n  lr: 0.003\n  min_lr: 1.0e-07\n"
                                     "trainer:\n  max_steps: 20000\n")
    baseline = 6.785

    def loss(s):
        if not plateau:
            return 17 * math.exp(-s / 40)
        return 6.9 + 10 * math.exp(-s / 30) if s <= plateau_end else 6.9 * math.exp(-(s - plateau_end) / 200)

    rows = [{"step": s, "val/attr_loss": loss(s), "val/attr_acc": min(1.0, max(0.0, (s - plateau_end) / plateau_end)),
             "val/baseline": baseline} for s in range(0, int(3 * plateau_end) + 6, 5)]
    write_csv(job / "metrics.csv", rows)
    if finished:
        write_json(job / "summary.json", {"completed": True, "population_size": size, "stopped_after": "acc_50pct_step"})


def test_population_analysis_writes_table_fit_and_figures(tmp_path, capsys):
    sweep = tmp_path / "population_cpu"
    for size in (128, 256, 512, 1024, 2048, 4096):
        for seed in (0, 1, 2):
            fake_job(sweep, size, seed, plateau_end=20.0 * size ** 0.6 * (0.9, 1.0, 1.1)[seed])
    fake_job(sweep, 64, 0, plateau_end=300.0, plateau=False)  # no plateau: counted, left out of the plateau fit
    fake_job(sweep, 8192, 0, plateau_end=1.0, finished=False)  # a job still running: listed, not fitted
    fits = analyse_population_sweep(sweep)
    fit = fits["plateau_end_interpolated"]["fit"]
    # the crossing is found between evaluations 5 steps apart: the exponent within 0.01 of the planted 0.6
    assert fit["exponent"] == pytest.approx(0.6, abs=0.01) and fit["sizes"] == [128, 256, 512, 1024, 2048, 4096]
    assert fit["bootstrap"]["exponent_95"][0] < 0.6 < fit["bootstrap"]["exponent_95"][1]
    assert len(fit["per_seed"]["fits"]) == 3 and fit["per_seed"]["exponent_sd"] < 0.02
    assert fits["plateau_end_interpolated"]["fit_from_2048"]["sizes"] == [2048, 4096]
    assert fits["acc_50pct_step"]["fit"]["sizes"][0] == 64  # the no-plateau run still has its 50% step
    assert fits["acc_50pct_step"]["fit"]["exponent"] > 0.5
    local = fits["plateau_end_interpolated"]["local_exponents"]
    assert [r["from"] for r in local] == [128, 256, 512, 1024, 2048] and all(abs(r["exponent"] - 0.6) < 0.05 for r in local)
    per_size = fits["plateau_end_interpolated"]["per_population_size"]
    assert per_size["64"] == {"n_runs": 1, "n_seeds": 0, "no_plateau": 1}
    assert per_size["128"]["biographies_per_person"] == pytest.approx(per_size["128"]["mean"] * 64 / 128)
    assert per_size["128"]["lr_fraction_at_mean"] > 0.99
    lengths = fits["plateau_length"]["per_population_size"]
    assert lengths["4096"]["mean"] == pytest.approx(per_size["4096"]["mean"] - 90)  # fall end at step 90
    assert fits["jobs"] == {"total": 20, "finished": 19, "unfinished": 1, "with_plateau": 18, "no_plateau": 1}
    table = (sweep / "table.csv").read_text().splitlines()
    assert len(table) == 21 and "data.population_size" in table[0]
    assert json.loads((sweep / "scaling_fit.json").read_text())["plateau_end_interpolated"]["fit"] == fit
    for figure in ("population_curves.png", "plateau_scaling.png"):
        assert (sweep / figure).stat().st_size > 20_000
    assert analysis_main(["population", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"N\^0\.(59|60)\d", out) and "1 without" in out


def test_prediction_is_written_once_before_the_sizes_run_and_checked_after(tmp_path, capsys):
    sweep = tmp_path / "population_scaling_cpu"
    for size in (1024, 2048, 4096):
        for seed in (0, 1):
            fake_job(sweep, size, seed, plateau_end=20.0 * size ** 0.6 * (0.95, 1.05)[seed])
    assert analysis_main(["population", str(sweep), "--predict", "16384"]) == 0
    predicted = json.loads((sweep / "predictions.json").read_text())["milestones"]["plateau_end_interpolated"]
    assert predicted["fit"]["sizes"] == [2048, 4096]  # default: fitted on N >= 2048
    assert predicted["predicted"]["16384"]["step"] == pytest.approx(20.0 * 16384 ** 0.6, rel=0.05)
    assert analysis_main(["population", str(sweep), "--predict", "16384"]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    (sweep / "predictions.json").rename(tmp_path / "kept.json")
    assert analysis_main(["population", str(sweep), "--predict", "4096"]) == 2  # already ran
    assert "already ran" in capsys.readouterr().err
    (tmp_path / "kept.json").rename(sweep / "predictions.json")
    for seed in (0, 1):  # the large size runs, 30% later than the law
        fake_job(sweep, 16384, seed, plateau_end=1.3 * 20.0 * 16384 ** 0.6)
    result = analyse_population_sweep(sweep)["prediction_check"]
    check = result["milestones"]["plateau_end_interpolated"]["16384"]
    assert check["measured_over_predicted"] == pytest.approx(1.3, abs=0.06) and check["measured_seeds"] == 2
    assert result["written_before_the_runs"] is True
    old = sweep / "data.population_size=16384,seed=0" / "config.yaml"
    os.utime(old, (1_000_000_000, 1_000_000_000))  # a run that started in 2001, before the prediction
    assert analyse_population_sweep(sweep)["prediction_check"]["written_before_the_runs"] is False


def test_prediction_skips_a_milestone_the_sweep_never_reaches(tmp_path):
    """Runs stopped at their plateau end have no 50%-accuracy step: only the plateau end is predicted."""
    sweep = tmp_path / "population_scaling_cpu"
    for size in (1024, 2048, 4096):
        for seed in (0, 1):
            fake_job(sweep, size, seed, plateau_end=20.0 * size ** 0.6 * (0.95, 1.05)[seed])
            metrics = sweep / f"data.population_size={size},seed={seed}" / "metrics.csv"
            rows = [r for r in csv.DictReader(open(metrics)) if float(r["val/attr_acc"]) < 0.01]
            write_csv(metrics, rows)  # stopped at the plateau end, before any accuracy
    predictions = predict(sweep, [8192, 16384])
    assert list(predictions["milestones"]) == ["plateau_end_interpolated"]
    assert "acc_50pct_step" in predictions["not_predicted"]
    assert json.loads((sweep / "predictions.json").read_text())["milestones"].keys() == {"plateau_end_interpolated"}


def test_analysis_of_a_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert analysis_main(["table", str(tmp_path / "nowhere")]) == 2
    assert "sweep directory not found" in capsys.readouterr().err


def test_killed_sweep_resumes_without_training_a_finished_job_twice(tmp_path):
    """Kill a 2-job sweep during its second job, re-run the same command: the first job is skipped,
    the second resumes from its checkpoint and ends with the metrics of an uninterrupted run."""
    sweep = tmp_path / "sweep"
    settings = ["experiment=tiny", "trainer.max_steps=60", "checkpoint_every=10", "callbacks.evaluator.sparse_every=20"]
    command = [sys.executable, "-m", "biolab.train", "-m", *settings, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    # job directories are named by all overrides: "callbacks...,seed=1,trainer.max_steps=60"
    job = lambda seed: sweep / f"callbacks.evaluator.sparse_every=20,checkpoint_every=10,seed={seed},trainer.max_steps=60"  # noqa: E731
    first, second = job(0), job(1)
    kill_once_checkpointed(command, second / "checkpoints" / "last.ckpt", min_step=20)
    assert (first / "summary.json").exists() and not (second / "summary.json").exists()
    finished_at = (first / "summary.json").stat().st_mtime_ns

    out = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True).stdout
    assert "already finished" in out and "resuming from" in out
    assert (first / "summary.json").stat().st_mtime_ns == finished_at  # not trained twice
    jobs = collect_sweep(sweep)
    assert [j.overrides["seed"] for j in jobs] == [0, 1] and all(j.finished for j in jobs)

    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "biolab.train", *settings, "seed=1", f"hydra.run.dir={reference}"],
                   cwd=REPO, check=True, capture_output=True)
    got, want = read_csv(second / "metrics.csv"), read_csv(reference / "metrics.csv")
    keys = [k for k in want[0] if k.startswith(("val/", "unseen/", "attn/"))]
    assert np.array_equal([[r[k] for k in keys] for r in got], [[r[k] for k in keys] for r in want])
