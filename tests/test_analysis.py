"""Sweeps and their analysis: a killed sweep resumes without retraining finished jobs; the table, the
power-law fit and the figures of a population sweep."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from biolab.analysis.__main__ import main as analysis_main
from biolab.analysis.collect import collect_sweep, parse_value
from biolab.analysis.population import analyse_population_sweep, fit_power_law
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


def fake_job(sweep, size, seed, plateau_end, finished=True):
    """A job directory as a sweep writes it, with a curve that crosses the baseline at plateau_end."""
    job = sweep / f"data.population_size={size},seed={seed}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        f"- data.population_size={size}\n- seed={seed}\n- sweep=population_cpu\n")
    (job / "config.yaml").write_text("data:\n  batch_size: 64\n")
    steps = list(range(0, 2001, 50))
    rows = [{"step": s, "val/attr_loss": 17 * math.exp(-s / plateau_end * 0.93), "val/attr_acc": min(1, s / 4000),
             "val/baseline": 6.785} for s in steps]
    write_csv(job / "metrics.csv", rows)
    if finished:
        write_json(job / "summary.json", {"completed": True, "population_size": size, "plateau_end_interpolated":
                                          plateau_end, "acc_50pct_step": 2 * plateau_end, "stopped_after": None})


def test_population_analysis_writes_table_fit_and_figures(tmp_path, capsys):
    sweep = tmp_path / "population_cpu"
    for size in (128, 256, 512, 1024):
        for seed in (0, 1):
            fake_job(sweep, size, seed, plateau_end=2.0 * size ** 0.6 * (1.1 if seed else 0.9))
    fake_job(sweep, 2048, 0, plateau_end=1.0, finished=False)  # a job still running: listed, not fitted
    fits = analyse_population_sweep(sweep)
    fit = fits["plateau_end_interpolated"]["fit"]
    assert fit["exponent"] == pytest.approx(0.6, abs=1e-6) and fit["r2"] == pytest.approx(1.0)
    assert fits["acc_50pct_step"]["fit"]["exponent"] == pytest.approx(0.6, abs=1e-6)
    per_size = fits["plateau_end_interpolated"]["per_population_size"]
    assert sorted(per_size, key=int) == ["128", "256", "512", "1024"]
    assert per_size["128"]["biographies_per_person"] == pytest.approx(per_size["128"]["mean"] * 64 / 128)
    assert fits["jobs"] == {"total": 9, "finished": 8, "unfinished": 1}
    table = (sweep / "table.csv").read_text().splitlines()
    assert len(table) == 10 and "data.population_size" in table[0] and "unfinished" in table[-1]
    assert json.loads((sweep / "scaling_fit.json").read_text())["plateau_end_interpolated"]["fit"] == fit
    for figure in ("population_curves.png", "plateau_scaling.png"):
        assert (sweep / figure).stat().st_size > 20_000
    assert analysis_main(["population", str(sweep)]) == 0
    assert "N^0.600" in capsys.readouterr().out


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
