"""Analysis of the curricula / imbalance study (biolab.analysis.curricula) on a fake study directory:
best setting per N and study, curricula.json, table, figures, unfinished jobs and clear errors."""

import csv
import json

import pytest

from biolab.analysis.__main__ import main as analysis_main
from biolab.analysis.curricula import _spread, analyse_curricula, main, middle_size, setting_label
from biolab.analysis.collect import parse_value
from biolab.io import write_csv, write_json

BASELINE = 6.785
# (study, {key: value}, N) -> (final attr loss, final attr acc, plateau end or None); "finished" False
# for a job still running (no summary.json)
JOBS = {
    ("power_law", (("alpha", 0),), 1024): (4.0, 0.20, 500.0),
    ("power_law", (("alpha", 0.5),), 1024): (3.0, 0.40, 420.0),
    ("power_law", (("alpha", 1.0),), 1024): (3.5, 0.30, 610.0),
    ("power_law", (("alpha", 0),), 2048): (5.0, 0.10, 900.0),    # uniform lowest: not a "power law" best
    ("power_law", (("alpha", 0.5),), 2048): (5.5, 0.05, 880.0),
    ("power_law", (("alpha", 1.0),), 2048): (5.2, 0.08, None),   # never crossed the baseline
    ("celebrities", (("n", 64), ("weight", 4)), 1024): (3.9, 0.22, 480.0),
    ("celebrities", (("n", 64), ("weight", 8)), 1024): (3.6, 0.26, 470.0),
    ("celebrities", (("n", 128), ("weight", 4)), 1024): (3.8, 0.24, 490.0),
    ("celebrities", (("n", 128), ("weight", 8)), 1024): (4.4, 0.18, 520.0),
    ("celebrities", (("n", 64), ("weight", 4)), 2048): (5.4, 0.06, 950.0),
    ("celebrities", (("n", 64), ("weight", 8)), 2048): (5.6, 0.05, 990.0),
    ("celebrities", (("n", 128), ("weight", 4)), 2048): (4.9, 0.12, 870.0),
    ("celebrities", (("n", 128), ("weight", 8)), 2048): (5.3, 0.07, 905.0),
    ("warmup", (("k", 64), ("epochs", 1)), 1024): (3.7, 0.25, 450.0),
    ("warmup", (("k", 64), ("epochs", 2)), 1024): (1.0, 0.90, 300.0),   # unfinished: excluded from best
    ("warmup", (("k", 64), ("epochs", 1)), 2048): (5.1, 0.09, 915.0),
    ("warmup", (("k", 64), ("epochs", 2)), 2048): (4.7, 0.15, 860.0),
}
UNFINISHED = ("warmup", (("k", 64), ("epochs", 2)), 1024)


def fake_job(study_dir, study, setting, size, loss, acc, plateau_end, finished=True):
    """A job directory as Hydra writes it: overrides, config, a few metrics rows ending at the final values."""
    overrides = [f"data.distribution.{key}={value}" for key, value in setting] + [f"data.population_size={size}"]
    job = study_dir / study / ",".join(sorted(overrides))
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in overrides) + f"- sweep=curricula_{study}_cpu\n")
    (job / "config.yaml").write_text("{}\n")
    rows = [{"step": step, "val/attr_loss": value, "val/attr_acc": a, "val/baseline": BASELINE}
            for step, value, a in ((0, 17.0, 0.0), (500, 7.0, 0.01), (1000, (7.0 + loss) / 2, acc / 2),
                                   (1500, loss, acc))]
    write_csv(job / "metrics.csv", rows if finished else rows[:-1] + [{**rows[-1], "step": 1200}])
    if finished:
        write_json(job / "summary.json", {
            "completed": True, "steps": 1500, "attr_loss": loss, "attr_acc": acc, "no_knowledge_baseline": BASELINE,
            "plateau_end_interpolated": plateau_end, "fall_end_step": 200, "acc_50pct_step": None,
            "population_size": size, "per_attribute": {"attr_loss": loss}})


def read_table(path):
    """A table.csv's rows, numbers and booleans parsed, empty cells dropped."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: parse_value(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


@pytest.fixture
def study(tmp_path):
    study_dir = tmp_path / "curricula_cpu"
    for key, values in JOBS.items():
        fake_job(study_dir, *key, *values, finished=key != UNFINISHED)
    return study_dir


def test_setting_labels_and_helpers():
    assert setting_label("power_law", (0.6,)) == "alpha 0.6" and setting_label("power_law", (1.0,)) == "alpha 1"
    assert setting_label("celebrities", (256, 8)) == "n 256 w 8"
    assert setting_label("warmup", (256, 4)) == "k 256 e 4"
    assert middle_size([4096, 16384, 8192]) == 8192 and middle_size([512]) == 512 and middle_size([1, 2]) == 1
    assert _spread([0.0, 1.0, 30.0], 10.0) == pytest.approx([-4.5, 5.5, 30.0])  # the far one left alone
    mean = 13 / 3  # a chain: one group, evenly around its mean
    assert _spread([0.0, 1.0, 12.0], 10.0) == pytest.approx([mean - 10, mean, mean + 10])


def test_best_per_size_json_table_and_figures(study):
    result = analyse_curricula(study)
    per_size = result["per_population_size"]
    assert list(per_size) == ["1024", "2048"]
    best = {size: {s: entry["setting"] for s, entry in row["best"].items()} for size, row in per_size.items()}
    assert best == {"1024": {"power_law": "alpha 0.5", "celebrities": "n 64 w 8", "warmup": "k 64 e 1"},
                    "2048": {"power_law": "alpha 1", "celebrities": "n 128 w 4", "warmup": "k 64 e 2"}}

    row = per_size["1024"]
    assert row["no_knowledge_baseline"] == BASELINE
    assert row["uniform"]["setting"] == "alpha 0"
    assert (row["uniform"]["attr_loss"], row["uniform"]["attr_acc"], row["uniform"]["plateau_end"]) == (4.0, 0.2, 500.0)
    power = row["best"]["power_law"]
    assert (power["alpha"], power["attr_loss"], power["attr_acc"], power["plateau_end"]) == (0.5, 3.0, 0.4, 420.0)
    assert power["attr_loss_minus_uniform"] == pytest.approx(-1.0)
    assert row["best"]["celebrities"]["n"] == 64 and row["best"]["celebrities"]["w"] == 8
    assert row["power_law"]["shortest_plateau"] == {"alpha": 0.5, "plateau_end": 420.0}
    assert (row["power_law"]["plateau_end_alpha_0"], row["power_law"]["plateau_end_alpha_1"]) == (500.0, 610.0)

    row = per_size["2048"]
    assert row["best"]["power_law"]["attr_loss"] == 5.2 and row["best"]["power_law"]["plateau_end"] is None
    assert row["best"]["power_law"]["attr_loss_minus_uniform"] == pytest.approx(0.2)  # worse than uniform
    assert row["power_law"]["shortest_plateau"] == {"alpha": 0.5, "plateau_end": 880.0}
    assert row["power_law"]["plateau_end_alpha_1"] is None
    assert row["power_law"]["plateau_end_by_alpha"] == {"0": 900.0, "0.5": 880.0, "1": None}
    assert row["best"]["warmup"]["attr_loss"] == 4.7 and row["best"]["warmup"]["plateau_end"] == 860.0

    assert result["unfinished"] == ["warmup/data.distribution.epochs=2,data.distribution.k=64,"
                                    "data.population_size=1024"]
    assert result["sweeps"]["warmup"] == {"jobs": 4, "finished": 3}
    assert result["best_curves_population_size"] == 1024
    on_disk = json.loads((study / "curricula.json").read_text())
    assert on_disk["per_population_size"] == per_size

    table = read_table(study / "table.csv")
    assert len(table) == len(JOBS)
    running = [r for r in table if r["finished"] is False]
    assert len(running) == 1 and running[0]["setting"] == "k 64 e 2" and running[0]["N"] == 1024
    assert running[0]["attr_loss"] == 1.0  # its last evaluation
    alpha1 = next(r for r in table if r["setting"] == "alpha 1" and r["N"] == 2048)
    assert alpha1["study"] == "power_law" and alpha1["attr_loss"] == 5.2 and "plateau_end_interpolated" not in alpha1
    for sweep in ("power_law", "celebrities", "warmup"):
        assert len(read_table(study / sweep / "table.csv")) == sum(k[0] == sweep for k in JOBS)
    for figure in ("power_law.png", "celebrities.png", "warmup.png", "comparison.png", "best_curves.png"):
        assert (study / figure).stat().st_size > 20_000, figure


def test_command_line_summary_and_unfinished_note(study, capsys):
    assert analysis_main(["curricula", str(study)]) == 0
    out = capsys.readouterr().out
    assert "note: 1 unfinished job(s) left out of the best choice" in out
    assert "best warm-up       k 64 e 1     loss 3.700  acc 0.250  plateau end 450" in out
    assert "power law: shortest plateau at alpha 0.5 (880 steps); alpha 0: 900, alpha 1: none" in out
    assert "comparison.png" in out and "curricula.json" in out


def test_a_missing_sweep_is_skipped(tmp_path):
    study_dir = tmp_path / "only_celebrities"
    for key, values in JOBS.items():
        if key[0] == "celebrities":
            fake_job(study_dir, *key, *values)
    (study_dir / "warmup").mkdir()  # created, no job yet
    result = analyse_curricula(study_dir)
    assert list(result["sweeps"]) == ["celebrities"]
    assert result["per_population_size"]["1024"]["uniform"] is None
    assert result["per_population_size"]["2048"]["best"]["celebrities"]["setting"] == "n 128 w 4"
    assert "power_law" not in result["per_population_size"]["2048"]
    assert (study_dir / "celebrities.png").exists() and not (study_dir / "power_law.png").exists()


def test_missing_or_empty_study_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "error: study directory not found" in capsys.readouterr().err
    (tmp_path / "empty" / "power_law").mkdir(parents=True)
    assert analysis_main(["curricula", str(tmp_path / "empty")]) == 2
    assert "error: no curricula sweep in" in capsys.readouterr().err
