"""Provenance: the numbers that README.md and docs/*.md quote in their tables, recomputed from the committed files.

Each test reads a doc's table (found by the first words of a row), reads the committed data the row
comes from (a run's summary.json and metrics.csv, a study's table.csv or JSON), recomputes the value
and checks it against the quoted text within that text's rounding (a quoted "0.195" must be within
0.0005 of the data). Editing a doc without its data, or the data without the doc, fails here. Which
files back which doc, and which quoted numbers have no committed data, is in docs/provenance.md.
Files only: no training, no model; a few seconds.

    python -m pytest tests/test_provenance.py -q
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from biolab.analysis.population import fit_power_law
from biolab.io import read_csv
from biolab.runs import phases_from_metrics

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# a number as the docs write it: thousands separated by commas ("1,536"), an optional decimal part
# ("150-275" is a range: a minus sign counts only where no digit precedes it)
NUMBER = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")


# ---------- reading the docs ----------

def quoted(text: str) -> list[tuple[float, int]]:
    """Every number of a doc's text as (value, decimals written): '7.9 min (425 s' -> [(7.9, 1), (425, 0)]."""
    found = []
    for match in NUMBER.findall(text):
        plain = match.replace(",", "")
        found.append((float(plain), len(plain.split(".")[1]) if "." in plain else 0))
    return found


def agrees(quote: tuple[float, int], value: float, scale: float = 1.0) -> bool:
    """`value * scale` rounds to the quoted number (half a unit of its last written digit)."""
    shown, decimals = quote
    return value is not None and abs(value * scale - shown) <= 0.5 * 10 ** -decimals * (1 + 1e-9) + 1e-12


def check(cell: str, values: list, scale: float = 1.0) -> None:
    """The numbers of `cell`, in order, are `values` (None: not checked) at the cell's rounding."""
    numbers = quoted(cell)
    assert len(numbers) >= len(values), f"{cell!r}: expected {len(values)} numbers"
    for quote, value in zip(numbers, values):
        if value is not None:
            assert agrees(quote, value, scale), f"{cell!r}: quotes {quote[0]}, the data give {value * scale:.6g}"


def table_rows(doc: Path) -> list[list[str]]:
    """Every row of every markdown table of `doc`, as cells (separator rows left out)."""
    rows = []
    for line in doc.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("|") and not re.fullmatch(r"\|[\s\-:|]+\|", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def row(doc: Path, label: str, width: int | None = None, exact: bool = False) -> list[str]:
    """The one table row of `doc` whose first cell starts with `label` (is `label` if `exact`; markdown
    bold ignored), of `width` cells if given (two tables may share a row label)."""
    def first(r: list[str]) -> bool:
        cell = r[0].replace("**", "")
        return (cell == label if exact else cell.startswith(label)) and width in (None, len(r))
    found = [r for r in table_rows(doc) if first(r)]
    assert len(found) == 1, f"{doc.name}: {len(found)} table rows start with {label!r} (the doc changed?)"
    return found[0]


def prose(doc: Path, pattern: str) -> str:
    """The text matched by the regular expression `pattern` in `doc` (whitespace collapsed)."""
    text = re.sub(r"\s+", " ", doc.read_text(encoding="utf-8"))
    match = re.search(pattern, text)
    assert match, f"{doc.name}: no text matching {pattern!r} (the doc changed?)"
    return match.group(0)


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def at_step(rows: list[dict], step: int, key: str) -> float:
    return next(float(r[key]) for r in rows if int(r["step"]) == step)


README = ROOT / "README.md"


# ---------- README: the quick-start table (docs/quickstart_summary.json) ----------

def test_quickstart_table_is_its_summary():
    s = load_json(DOCS / "quickstart_summary.json")
    check(row(README, "1. fall to the marginals ends")[1], [s["fall_end_step"], s["acc_at_fall_end"] * 100])
    check(row(README, "2. plateau")[1], [s["fall_end_step"], s["plateau_end_step"]])
    check(row(README, "plateau end (first evaluation")[1], [s["plateau_end_step"], s["plateau_end_interpolated"]])
    acquisition = row(README, "3. acquisition")[1]
    check(acquisition, [s["acc_1pct_step"], s["acc_50pct_step"]])
    assert (s["acc_99pct_step"] is None) == ("not reached" in acquisition)
    check(row(README, "final attribute loss / accuracy")[1], [s["attr_loss"], s["attr_acc"]])
    check(row(README, "unseen people")[1], [s["unseen_attr_loss"], s["unseen_max_prob"]])
    check(row(README, "no-knowledge baseline")[1], [s["no_knowledge_baseline"]])
    timing = row(README, "wall time")[1]
    check(timing, [s["wall_seconds_this_launch"] / 60, s["train_seconds"], s["eval_seconds"],
                   s["eval_fraction"] * 100, None, s["train_tokens_per_s"] / 1000])


# ---------- README: the earlier population study (docs/population_cpu/) ----------

def population_runs() -> dict[int, list[dict]]:
    by_size: dict[int, list[dict]] = {}
    for r in csv_rows(DOCS / "population_cpu" / "table.csv"):
        by_size.setdefault(int(r["data.population_size"]), []).append(r)
    return dict(sorted(by_size.items()))


POPULATION_ROWS = (("plateau_end_interpolated", "plateau end, interpolated"), ("acc_50pct_step", "50% attribute"))
POPULATION_BATCH = 64  # the sweep's batch (README: "batch 64"; conf/experiment/quickstart.yaml)
@pytest.mark.parametrize("size", [128, 256, 512, 1024, 2048])
def test_population_table_column_recomputes_from_its_runs(size):
    runs = population_runs()
    assert all(len(seeds) == 3 for seeds in runs.values()), "the table quotes 3 seeds per N"
    fits = load_json(DOCS / "population_cpu" / "scaling_fit.json")
    column = 1 + list(runs).index(size)
    for key, label in POPULATION_ROWS:
        values = np.array([float(r[key]) for r in runs[size]])
        assert agrees((values.mean(), 6), fits[key]["per_population_size"][str(size)]["mean"])
        # mean ± sd over the 3 seeds (population sd, as the analysis wrote it); "± 0" is left out
        check(row(README, label)[column], [values.mean(), values.std()] if values.std() >= 0.5 else [values.mean()])
        if key == "plateau_end_interpolated":
            check(row(README, "biographies per person")[column], [values.mean() * POPULATION_BATCH / size])


def test_population_fits_recompute_from_its_runs():
    runs = population_runs()
    fits = load_json(DOCS / "population_cpu" / "scaling_fit.json")
    for key, label in POPULATION_ROWS:
        means = [np.mean([float(r[key]) for r in seeds]) for seeds in runs.values()]
        fit = fit_power_law(list(runs), means)
        check(row(README, label)[-1], [fit["prefactor"], fit["exponent"], 2, fit["r2"]])
        assert agrees((fit["exponent"], 6), fits[key]["fit"]["exponent"])


def test_population_attention_cost_is_its_runs():
    costs = [float(r["attention_cost_vs_training"]) * 100 for seeds in population_runs().values() for r in seeds]
    check(prose(README, r"[0-9.]+-[0-9.]+% of training time in the population sweep"), [min(costs), max(costs)])


def test_population_attention_of_seed_0_is_its_metrics():
    rows = csv_rows(DOCS / "population_cpu" / "metrics_N2048_seed0.csv")
    phases = phases_from_metrics(read_csv(DOCS / "population_cpu" / "metrics_N2048_seed0.csv"), 6.784919644771066)
    text = prose(README, r"seed 0: [0-9.]+ at the fall end, step \d+ -> [0-9.]+ at the plateau end, step \d+ -> "
                         r"[0-9.]+ at step \d+")
    (a, _), (fall, _), (b, _), (end, _), (c, _), (late, _) = quoted(text[len("seed 0"):])
    assert (fall, end) == (phases["fall_end_step"], phases["plateau_end_step"])
    last = "attn/L4/attr_to_name"  # the last of 4 layers
    check(text[len("seed 0"):], [at_step(rows, fall, last), None, at_step(rows, end, last), None,
                                 at_step(rows, int(late), last)])


# ---------- docs/patching.md ----------

PATCHING = DOCS / "patching.md"


def patching_runs(name: str) -> dict:
    return {Path(r["run_dir"]).name: r for r in load_json(DOCS / "patching_cpu" / name)["runs"]}


def test_patching_table_is_its_study_json():
    runs = patching_runs("patching.json")
    for label, ref in (("0 (untrained)", 0), ("50 (during", 50), ("100 (end", 100), ("200 (plateau", 200),
                       ("400 (acq", 400), ("800", 800), ("1600 (end", 1600)):
        cells = row(PATCHING, label)
        patched = runs[f"ref{ref}_start0"]
        check(cells[1], [patched["final_loss"]])
        check(cells[3], [patched["plateau_end_interpolated"]])
        check(cells[4], [patched["acc_50pct_step"]])
        frozen = runs.get(f"ref{ref}_start{ref}")
        if frozen is not None and ref > 0:
            check(cells[5], [frozen["final_loss"]])
        else:
            assert cells[5] == "-"
    unpatched = row(PATCHING, "unpatched", exact=True)
    ref = runs["reference"]
    check(unpatched[1], [ref["final_loss"]])
    check(unpatched[3], [ref["plateau_end_interpolated"], ref["fall_end_step"]])
    check(unpatched[4], [ref["acc_50pct_step"]])
    late = runs["ref1600_start0"]
    ratio = ref["plateau_end_interpolated"] / late["plateau_end_interpolated"]
    check(prose(PATCHING, r"\*\*[0-9.]+x earlier\*\*"), [ratio])
    check(prose(PATCHING, r"is [0-9]+ steps instead of [0-9]+ \(\*\*[0-9.]+x shorter"),
          [late["plateau_end_interpolated"] - late["fall_end_step"], ref["plateau_end_interpolated"] - ref["fall_end_step"],
           (ref["plateau_end_interpolated"] - ref["fall_end_step"])
           / (late["plateau_end_interpolated"] - late["fall_end_step"])])


def test_patching_at_n8192_is_its_json():
    runs = patching_runs("n8192_patching.json")
    ref, patched = runs["reference"], runs["ref1600_start0"]
    check(prose(PATCHING, r"moves the baseline crossing from \d+ to \d+ \(\*\*[0-9.]+x"),
          [ref["plateau_end_interpolated"], patched["plateau_end_interpolated"],
           ref["plateau_end_interpolated"] / patched["plateau_end_interpolated"]])
    check(prose(PATCHING, r"plateau from \d+ to \d+ steps"),
          [ref["plateau_end_interpolated"] - ref["fall_end_step"],
           patched["plateau_end_interpolated"] - patched["fall_end_step"]])
    check(prose(PATCHING, r"final accuracy from [0-9.]+% to [0-9.]+%"), [ref["final_acc"], patched["final_acc"]], 100)


def run_phases(run_dir: Path) -> dict:
    """Milestones of a committed run recomputed from its metrics.csv (the current definitions)."""
    rows = read_csv(run_dir / "metrics.csv")
    return phases_from_metrics(rows, rows[-1]["val/baseline"])


def test_wider_model_rows_recompute_from_their_runs():
    base = DOCS / "patching_cpu"
    studies = (("d 256, lr 3e-3 (the quick-start's)", base / "wide_n2048", ["1200"]),
               ("d 256, lr 3e-3, 2,400 steps", base / "wide2400_n2048", ["1600", "2400"]),
               ("same, seed 1", base / "wide2400_n2048_seed1", ["1600"]))
    for label, study, refs in studies:
        cells = row(PATCHING, label)
        ref = run_phases(study / "reference")
        assert ref["has_plateau"]
        check(cells[1], [ref["fall_end_step"]])
        check(cells[2], [ref["plateau_end_interpolated"]])
        check(cells[3], [ref["plateau_end_interpolated"] / ref["fall_end_step"]])
        ref_rows = csv_rows(study / "reference" / "metrics.csv")
        expected_patched, expected_ratio = [], []
        for k in refs:
            patched = run_phases(study / f"ref{k}_start0")
            assert patched["has_plateau"]
            # the patched crossing, the reference step and the reference's accuracy at that step
            expected_patched += [patched["plateau_end_interpolated"], int(k), at_step(ref_rows, int(k), "val/attr_acc")]
            expected_ratio.append(ref["plateau_end_interpolated"] / patched["plateau_end_interpolated"])
        check(cells[4], expected_patched)
        check(cells[5], expected_ratio)


# ---------- docs/curricula.md (docs/curricula_cpu/table.csv) ----------

CURRICULA = DOCS / "curricula.md"


def curricula_runs() -> list[dict]:
    return [{**r, "N": int(r["N"]), "attr_loss": float(r["attr_loss"]), "attr_acc": float(r["attr_acc"])}
            for r in csv_rows(DOCS / "curricula_cpu" / "table.csv")]


def test_curricula_best_settings_recompute_from_the_table():
    runs = curricula_runs()
    assert len(runs) == 54 and all(r["finished"] == "True" for r in runs)
    for size in (4096, 8192, 16384):
        cells = row(CURRICULA, f"{size:,}", width=5)
        at_n = [r for r in runs if r["N"] == size]
        uniform = next(r for r in at_n if r["setting"] == "alpha 0")
        check(cells[1], [uniform["attr_loss"], uniform["attr_acc"] * 100])
        for cell, study in zip(cells[2:5], ("power_law", "celebrities", "warmup")):
            candidates = [r for r in at_n if r["study"] == study and r["setting"] != "alpha 0"]
            best = min(candidates, key=lambda r: r["attr_loss"])
            setting = cell.replace("**", "").split(":")[0].replace(",", "")
            assert setting == best["setting"], f"N {size} {study}: the doc names {setting}, the table {best['setting']}"
            check(cell.split(":")[1], [best["attr_loss"], best["attr_acc"] * 100])


def test_curricula_plateau_ends_by_alpha_are_the_table():
    runs = curricula_runs()
    header = next(r for r in table_rows(CURRICULA) if r[:2] == ["N", "alpha 0"])
    alphas = [float(h.replace("alpha ", "")) for h in header[1:]]
    for size in (4096, 8192, 16384):
        cells = row(CURRICULA, f"{size:,}", width=len(header))
        for cell, alpha in zip(cells[1:], alphas):
            run = next(r for r in runs if r["N"] == size and r["study"] == "power_law"
                       and float(r["setting"].replace("alpha ", "")) == alpha)
            if cell == "never":
                assert run["plateau_end_interpolated"] == ""
            else:
                check(cell, [float(run["plateau_end_interpolated"])])


# ---------- docs/finetuning.md (docs/finetune_cpu/finetune_table.csv) ----------

FINETUNING = DOCS / "finetuning.md"


def test_finetune_table_is_its_csv():
    runs = [{k: float(v) for k, v in r.items() if k != "run"} for r in csv_rows(DOCS / "finetune_cpu" / "finetune_table.csv")]
    weights = {"0": 0.0, "1/8": 0.125, "1/2": 0.5, "2": 2.0}
    for cells in table_rows(FINETUNING):
        if len(cells) != 6 or not cells[0].isdigit() or "," in cells[1]:
            continue
        m, w = int(cells[0]), weights[cells[1].split(" ")[0]]
        run = next(r for r in runs if r["n_new_people"] == m and r["replay_weight"] == w)
        check(cells[1].split("(")[1], [run["replay_fraction"]], 100)
        check(cells[2], [run["old_loss_step100"]])
        check(cells[3], [run["old_loss_end"], run["old_acc_end"]])
        check(cells[4], [run["new_loss_end"], run["new_acc_end"]])
        check(cells[5], [run["attention_max_change"]])
    group = next(c for c in table_rows(FINETUNING) if c[0] == "1536" and "," in c[1])
    replayed = [next(r for r in runs if r["n_new_people"] == 1536 and r["replay_weight"] == w) for w in (0.125, 0.5, 2.0)]
    check(group[1].split("(")[1], [r["replay_fraction"] for r in replayed], 100)
    check(group[2], [r["old_loss_step100"] for r in replayed])
    check(group[3], [v for r in replayed for v in (r["old_loss_end"], r["old_acc_end"])])
    check(group[5], [r["attention_max_change"] for r in replayed])


# ---------- docs/toy_memory.md (docs/toy_memory.csv) ----------

def test_toy_memory_table_is_its_csv():
    doc = DOCS / "toy_memory.md"
    rows = csv_rows(DOCS / "toy_memory.csv")
    header = row(doc, "run")
    steps = [int(quoted(h)[0][0]) for h in header[2:-1]]
    weights = {"no replay": 0.0, "w = 1/32": 1 / 32, "w = 1/8": 0.125, "w = 1/2": 0.5, "w = 2": 2.0}
    checked = 0
    for cells in table_rows(doc):
        if not cells[0].startswith("M = "):
            continue
        m = int(quoted(cells[0])[0][0])
        w = weights[cells[0].split(", ", 1)[1]]
        run = {int(r["step"]): r for r in rows if int(r["n_new"]) == m and math.isclose(float(r["replay_weight"]), w)}
        for cell, step in zip(cells[2:-1], steps):
            check(cell, [float(run[step]["old_acc"]), float(run[step]["old_loss"])])
        check(cells[-1], [float(run[max(run)]["new_acc"])])
        check(cells[1], [w * 8192 / (w * 8192 + m)])
        checked += 1
    assert checked == 7
    start = rows[0]
    check(prose(doc, r"old-key loss [0-9.]+, accuracy [0-9.]+"), [float(start["old_loss"]), float(start["old_acc"])])


# ---------- docs/mech/circuits/README.md (per-run and per-analysis files) ----------

CIRCUITS = DOCS / "mech" / "circuits"


def circuits(seed: int) -> tuple[dict, dict, dict]:
    run = CIRCUITS / f"quickstart_seed{seed}"
    return load_json(run / "circuits" / "summary.json"), load_json(run / "summary.json"), run_phases(run)


def test_circuits_tables_are_their_summaries():
    doc = CIRCUITS / "README.md"
    for column, seed in ((1, 0), (2, 1)):
        c, s, phases = circuits(seed)
        by = c["exact_by_ablation"]
        check(row(doc, "EAP-IG vs exact patching, Spearman")[column], [c["eap_ig_vs_exact_spearman"]])
        check(row(doc, "same, on absolute values")[column], [by["counterfactual"]["eap_ig_vs_exact_spearman_abs"]])
        check(row(doc, "plain EAP vs exact")[column], [by["counterfactual"]["eap_vs_exact_spearman"]])
        check(row(doc, "EAP-IG vs exact under mean")[column],
              [by["mean"]["eap_ig_vs_exact_spearman"], by["zero"]["eap_ig_vs_exact_spearman"]])
        check(row(doc, "edges needed for faithfulness")[column],
              [c["edges_for_faithfulness_0.7"], c["edges_for_faithfulness_fraction"] * 100])
        check(row(doc, "F of 20 random sets")[column], [c["random_faithfulness_at_that_budget"]])
        check(row(doc, "Hit@10 of the circuit")[column], [c["hit10_circuit"], c["hit10_full"]])
        check(row(doc, "F at 1 / 2 / 5")[column], [p["faithfulness"] for p in c["faithfulness_curve"]])
        curve = {p["fraction"]: p for p in c["faithfulness_curve"]}
        check(row(doc, "random sets at 10 / 20 / 50%")[column],
              [curve[0.1]["random_mean"], curve[0.2]["random_mean"], curve[0.5]["random_mean"], curve[0.5]["random_max"]])
        check(row(doc, "prompt accuracy")[column], [c["prompt_accuracy"], s["attr_acc"]])
        # the timeline: milestones of the training summary, recomputed from metrics.csv too
        milestones = [s["fall_end_step"], s["plateau_end_step"], s["acc_1pct_step"], s["acc_50pct_step"]]
        assert milestones == [phases[k] for k in ("fall_end_step", "plateau_end_step", "acc_1pct_step", "acc_50pct_step")]
        check(row(doc, "fall end / plateau end")[column], milestones)
        for label, key in (("circuit onset", "circuit_onset"), ("first circuit edge", "name_to_last_onset"),
                           ("top edges overlap", "overlap_onset")):
            check(row(doc, label)[column], [c[key]["after"], c[key]["step"]])


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md")) + ["README.md"])
def test_every_figure_a_doc_shows_is_committed(path):
    """Every image a doc embeds exists (a figure without its file is a claim without data)."""
    doc = ROOT / path
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text(encoding="utf-8")):
        assert (doc.parent / target).is_file(), f"{path} shows {target}, which is not committed"


# ---------- speed tables (benchmarks/results/*.json) ----------

RESULTS = ROOT / "benchmarks" / "results"


def test_speed_tables_are_their_benchmark_files():
    cpu = load_json(RESULTS / "cpu_quickstart.json")
    check(row(README, "Lightning training step vs a bare")[1],
          [cpu["lightning_over_bare"], cpu["lightning_tokens_per_s"] / 1000, cpu["bare_tokens_per_s"] / 1000])
    check(row(README, "data generation vs training")[1],
          [cpu["data_over_training"], cpu["data_batches_per_s"], cpu["train_steps_per_s"]])
    training = cpu["evaluations"] * cpu["seconds_per_evaluation"] / cpu["eval_over_training_time"]
    check(row(README, "evaluation time vs the quick-start")[1],
          [cpu["eval_over_training_time"] * 100, cpu["evaluations"], cpu["seconds_per_evaluation"], training])
    for label, name in (("paper model and batch", "h100_paper_throughput"),
                        ("quick-start model, `data.num_workers=0`", "h100_quickstart_throughput"),
                        ("quick-start model, `data.num_workers=2`", "h100_quickstart_throughput_workers2")):
        gpu, cells = load_json(RESULTS / f"{name}.json"), row(README, label)
        check(cells[1], [gpu["lightning_tokens_per_s"] / 1000, gpu["train_steps_per_s"]])
        check(cells[2], [gpu["lightning_over_bare"]])
        check(cells[3], [gpu["data_over_training"]])
        check(cells[4], [gpu["eval_over_training_time"] * 100])


def test_patching_speed_table_is_its_benchmark_files():
    for label, name in (("15 steps x 3 rounds", "cpu_patching"), ("20 steps x 3 rounds", "cpu_patching_first_run"),
                        ("quiet 2-core CPU", "cpu_patching_quiet"), ("NVIDIA H100 80GB", "h100_quickstart_patching")):
        bench, cells = load_json(RESULTS / f"{name}.json"), row(PATCHING, label)
        assert f"`{name}.json`" in cells[0]
        check(cells[1], [bench["step_ms"]["unpatched"]])
        check(cells[2], [bench["step_ms"]["explicit"]])
        check(cells[3], [bench["step_ms"]["patched"]])
        check(cells[4], [bench["patched_over_unpatched"]])
        check(cells[5], [bench["explicit_over_unpatched"]])
        check(cells[6], [bench["patched_over_explicit"]])


# ---------- the studies' numbers repeated in prose (README summaries, comparison rows) ----------

def test_readme_study_summaries_are_their_files():
    runs, n8192 = patching_runs("patching.json"), patching_runs("n8192_patching.json")
    ref, late = runs["reference"], runs["ref1600_start0"]
    check(prose(README, r"lower final loss than the unpatched run \([0-9.]+ against [0-9.]+"),
          [late["final_loss"], ref["final_loss"]])
    check(prose(README, r"shortens the plateau from \d+ to \d+ steps"),
          [ref["plateau_end_interpolated"] - ref["fall_end_step"], late["plateau_end_interpolated"] - late["fall_end_step"]])
    check(prose(README, r"\*\*[0-9.]+x\*\* earlier \(\d+ against \d+ steps\)"),
          [ref["plateau_end_interpolated"] / late["plateau_end_interpolated"], late["plateau_end_interpolated"],
           ref["plateau_end_interpolated"]])
    early = [runs[f"ref{k}_start0"]["final_loss"] for k in (50, 100, 200)]
    check(prose(README, r"end worse than the untrained one \([0-9.]+-[0-9.]+ against [0-9.]+\)"),
          [min(early), max(early), runs["ref0_start0"]["final_loss"]])
    check(prose(README, r"At N = 8,192 the crossing moves only [0-9.]+x"),
          [None, n8192["reference"]["plateau_end_interpolated"] / n8192["ref1600_start0"]["plateau_end_interpolated"]])
    wide = {k: run_phases(DOCS / "patching_cpu" / "wide2400_n2048" / k) for k in ("reference", "ref1600_start0", "ref2400_start0")}
    seed1 = {k: run_phases(DOCS / "patching_cpu" / "wide2400_n2048_seed1" / k) for k in ("reference", "ref1600_start0")}
    cross = lambda p: p["plateau_end_interpolated"]  # noqa: E731
    check(prose(README, r"crossing at \d+-\d+ steps patched against [0-9.]+ unpatched, \*\*[0-9.]+x and [0-9.]+x\*\*"),
          [cross(wide["ref1600_start0"]), cross(wide["ref2400_start0"]), cross(wide["reference"]),
           cross(wide["reference"]) / cross(wide["ref1600_start0"]), cross(wide["reference"]) / cross(wide["ref2400_start0"])])
    check(prose(README, r"\*\*[0-9.]+x\*\* for seed 1 \([0-9.]+ against [0-9.]+\): [0-9.]+x over the two seeds"),
          [cross(seed1["reference"]) / cross(seed1["ref1600_start0"]), None, cross(seed1["ref1600_start0"]),
           cross(seed1["reference"]), (cross(wide["reference"]) + cross(seed1["reference"]))
           / (cross(wide["ref1600_start0"]) + cross(seed1["ref1600_start0"]))])
    curricula = {(r["N"], r["setting"]): r for r in curricula_runs()}
    check(prose(README, r"the best warm-up beats uniform \([0-9.]+% against [0-9.]+% at N 4,096, [0-9.]+% against "
                        r"[0-9.]+% at 8,192\)"),
          [100 * curricula[4096, "k 256 e 4"]["attr_acc"], 100 * curricula[4096, "alpha 0"]["attr_acc"], 4096,
           100 * curricula[8192, "k 1024 e 4"]["attr_acc"], 100 * curricula[8192, "alpha 0"]["attr_acc"], 8192])
    finetune = {(int(float(r["n_new_people"])), float(r["replay_weight"])): float(r["old_acc_end"])
                for r in csv_rows(DOCS / "finetune_cpu" / "finetune_table.csv")}
    check(prose(README, r"\([0-9., ]+ for w = 0, 1/8, 1/2, 2 at M = 384\)"),
          [finetune[384, w] for w in (0.0, 0.125, 0.5, 2.0)])


def test_patching_comparison_rows_are_their_study_jsons():
    for label, name in (("quick-start model (d 128)", "patching.json"), ("same, N = 8,192", "n8192_patching.json")):
        runs, cells = patching_runs(name), row(PATCHING, label)
        ref, late = runs["reference"], runs["ref1600_start0"]
        check(cells[1], [ref["fall_end_step"]])
        check(cells[2], [ref["plateau_end_interpolated"]])
        check(cells[3], [ref["plateau_end_interpolated"] / ref["fall_end_step"]])
        # the patched crossing, and the reference step with the reference's accuracy there (its last step)
        check(cells[4], [late["plateau_end_interpolated"], 1600, ref["final_acc"]])
        check(cells[5], [ref["plateau_end_interpolated"] / late["plateau_end_interpolated"]])


def test_finetune_and_curricula_prose_are_their_tables():
    runs = csv_rows(DOCS / "finetune_cpu" / "finetune_table.csv")
    assert len({(r["old_loss_start"], r["old_acc_start"]) for r in runs}) == 1  # one pre-training run
    check(prose(FINETUNING, r"The pre-training run there ended at old-people loss [0-9.]+, accuracy [0-9.]+"),
          [float(runs[0]["old_loss_start"]), float(runs[0]["old_acc_start"])])
    curricula = {(r["N"], r["setting"]): r["attr_loss"] for r in curricula_runs()}
    check(prose(CURRICULA, r"here [0-9.]+, [0-9.]+, [0-9.]+, [0-9.]+, [0-9.]+ at N 4,096"),
          [curricula[4096, f"alpha {a}"] for a in ("0", "0.4", "0.6", "0.8", "1")])


COMMITTED_RUNS = sorted(p.parent.relative_to(ROOT).as_posix() for p in DOCS.rglob("metrics.csv")
                        if (p.parent / "config.yaml").is_file())


@pytest.mark.parametrize("run", COMMITTED_RUNS)
def test_committed_run_milestones_are_its_metrics(run):
    """Each committed run's summary.json milestones are what its metrics.csv gives by the current
    definitions (docs/provenance.md: no committed run changes under the plateau-end definition)."""
    run_dir = ROOT / run
    phases = run_phases(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():  # stopped by hand: the analyses read its milestones from metrics.csv
        assert phases["fall_end_step"] is not None
        return
    summary = load_json(summary_path)
    for key in ("fall_end_step", "plateau_end_step", "acc_1pct_step", "acc_50pct_step", "acc_99pct_step"):
        assert summary[key] == phases[key], f"{run}: {key} {summary[key]} in summary.json, {phases[key]} from metrics.csv"
    for key in ("plateau_end_interpolated", "plateau_length"):
        assert summary[key] == pytest.approx(phases[key]), f"{run}: {key}"


# ---------- docs/mech/entities/README.md: the "unknown" answer (unknown_seed{0,1}/) ----------

def test_unknown_answer_table_is_its_files():
    doc = DOCS / "mech" / "entities" / "README.md"
    accuracies = []
    for column, seed in ((1, 0), (2, 1)):
        folder = DOCS / "mech" / "entities" / f"unknown_seed{seed}"
        s = load_json(folder / "summary.json")
        metrics = csv_rows(folder / "finetune_run" / "metrics.csv")
        first, last = metrics[0], metrics[-1]
        check(row(doc, "`<unknown>` rate in evaluation biographies")[column],
              [float(last["new/unknown_rate"]), float(last["val/unknown_rate"]), float(last["unseen/unknown_rate"])])
        check(row(doc, "seen people's accuracy before / after")[column],
              [float(first["val/attr_acc"]), float(last["val/attr_acc"])])
        check(row(doc, "`<unknown>` rate on one-sentence prompts")[column],
              [s["unknown_rate_known"], s["unknown_rate_unseen"]])
        for label, key, controls_label in (
                ("unknown latent (base model, layer 1)", "unknown_answer_rate_change", "controls on known people"),
                ("known latent (base model) on unseen people", "known_latent_unseen_unknown_rate_change",
                 "controls on unseen people")):
            change = s[key]
            check(row(doc, label)[column], [change["mean"], *change["ci"]])
            check(row(doc, controls_label)[column],
                  [s[f"{key}_random_latents"]["mean"], s[f"{key}_random_directions"]["mean"]])
        check(row(doc, "\"unknown\" answer rate change, unknown latent")[column],
              [s["unknown_answer_rate_change"]["mean"]])
        ablation, accuracy = s["ablation_unseen_unknown_rate_change"], s["ablation_known_accuracy"]
        check(row(doc, "unknown latent's direction ablated")[column],
              [ablation["unknown_latent"]["mean"], accuracy["unknown_latent"]])
        check(row(doc, "difference of means (unseen minus known")[column],
              [ablation["difference_of_means"]["mean"], accuracy["difference_of_means"]])
        check(row(doc, "10 random directions ablated")[column],
              [ablation["random_directions"]["mean"], ablation["random_directions"]["sd"],
               accuracy["random_directions"]])
        accuracies.append(s["accuracy_known"])
    check(prose(doc, r"Without ablation the known people's accuracy on these prompts is [\d.]+ / [\d.]+"),
          accuracies)


# ---------- docs/mech/neurons/README.md (quickstart_seed{0,1}/summary.json) ----------

def test_neurons_tables_are_their_summaries():
    doc = DOCS / "mech" / "neurons" / "README.md"
    width = 6  # measure, seed 0 main, seed 0 final, seed 1 main, seed 1 final, expectation
    for seed, (main_col, final_col) in ((0, (1, 2)), (1, (3, 4))):
        s = load_json(DOCS / "mech" / "neurons" / f"quickstart_seed{seed}" / "summary.json")
        for column, part in ((main_col, s), (final_col, s["final"])):
            check(row(doc, "H-neurons (3-vs-1) of 2,048", width)[column], [part["n_h_neurons"], part["per_mille"]])
            check(row(doc, "AUROC held-out people [95% bootstrap]", width)[column],
                  [part["auroc_heldout_people"], *part["auroc_heldout_people_interval"]])
            check(row(doc, "10 random neuron sets of that size", width)[column],
                  [part["auroc_random_sets"]["mean"], part["auroc_random_sets"]["sd"]])
            check(row(doc, "confidence-only baseline (max-prob, entropy)", width)[column],
                  [part["auroc_confidence_baseline"]])
            check(row(doc, "attribute-only baseline", width)[column], [part["auroc_attribute_baseline"]])
        check(row(doc, "plateau end", width)[main_col], [s["plateau_end_step"]])
        origin = 1 + seed
        check(row(doc, "that probe applied to the base")[origin],
              [s["origin_transfer_auroc"], *s["origin_transfer_auroc_interval"]])
        check(row(doc, "the base's own probe on the same items")[origin], [s["origin_base_auroc"]])
        check(row(doc, "mean normalised drift rank")[origin],
              [s["h_neuron_drift_rank_percentile"], s["random_sets_drift_rank_percentile"]["mean"],
               s["random_sets_drift_rank_percentile"]["sd"], s["h_neuron_drift_p_rank"]])


def test_entities_third_seed_prose_is_its_summary():
    doc = DOCS / "mech" / "entities" / "README.md"
    s = load_json(DOCS / "mech" / "entities" / "quickstart_seed2_defaults" / "summary.json")
    text = prose(doc, r"best known vs token-matched AUROC [\d.]+ \(layer \d\) against [\d.]+ for the embeddings, "
                      r"best latent separation [\d.]+, and the model's own max-probability [\d.]+")
    separation = s["best_latent_separation_min_over_families"]
    check(text, [s["auroc_best_layer_token_matched"], s["best_layer"], s["auroc_layer0"],
                 max(separation.values()), s["auroc_max_prob_baseline"]])


def test_neurons_third_seed_prose_is_its_summary():
    doc = DOCS / "mech" / "neurons" / "README.md"
    s = load_json(DOCS / "mech" / "neurons" / "quickstart_seed2_defaults" / "summary.json")
    text = prose(doc, r"With \d+ balanced test items per class .*? \(attribute-only [\d.]+\)")
    check(text, [s["balanced_items"]["test"] // 2, s["auroc_heldout_people"], s["auroc_random_sets"]["mean"],
                 s["auroc_attribute_baseline"], s["auroc_confidence_baseline"], s["final"]["auroc_heldout_people"],
                 s["final"]["auroc_attribute_baseline"]])


def test_population_prediction_quoted_is_the_committed_one():
    doc = DOCS / "population_scaling_cpu" / "README.md"
    predicted = load_json(DOCS / "population_scaling_cpu" / "predictions.json")["milestones"]["plateau_end_interpolated"]
    rows = predicted["predicted"]
    text = prose(doc, r"predicted at [\d,]+ steps for N = 8,192 .*? and [\d,]+ for N = 16,384 \([\d,]+-[\d,]+\)")
    # in order: 674, 8,192, 95 (%), 614, 733, 1,019, 16,384, 847, 1,205
    check(text, [rows["8192"]["step"], 8192, None, rows["8192"]["step_95"][0], rows["8192"]["step_95"][1],
                 rows["16384"]["step"], 16384, rows["16384"]["step_95"][0], rows["16384"]["step_95"][1]])


def test_population_scaling_small_sizes_are_their_runs():
    """docs/population_scaling_cpu/README.md: the plateau ends, biographies per person and local exponents of the
    committed runs, and the predictions in its table."""
    from biolab.analysis.population import load_jobs, population_size, run_settings, scaling_fit

    doc = DOCS / "population_scaling_cpu" / "README.md"
    jobs = load_jobs(DOCS / "population_scaling_cpu")
    fit = scaling_fit(jobs, run_settings(jobs[0]))["plateau_end_interpolated"]
    predicted = load_json(DOCS / "population_scaling_cpu" / "predictions.json")["milestones"]
    predicted = predicted["plateau_end_interpolated"]["predicted"]
    for size in sorted({population_size(j) for j in jobs}):
        entry = fit["per_population_size"][str(size)]
        cells = row(doc, f"{size:,}")
        measured = [entry["mean"]] if entry["n_seeds"] == 3 else [predicted[str(size)]["step"], entry["mean"]]
        assert entry["n_seeds"] == 3 or "only" in cells[1]  # a size not yet measured with every seed says so
        check(cells[1], measured)
        check(cells[3], [entry["biographies_per_person"]])
    local = fit["local_exponents"]
    check(prose(doc, r"local exponent between neighbouring sizes is [\d.]+"), [local[0]["exponent"]])
    check(prose(doc, r"against [\d.]+ between the smaller sizes"), [local[1]["exponent"]])
    check(prose(doc, r"The local exponent from 4,096 to 8,192 is [\d.]+"), [None, None, local[2]["exponent"]])
    large = fit["per_population_size"]["8192"]
    check(prose(doc, r"end their plateaus at steps [\d.]+ and [\d.]+ \(mean [\d.]+\), [\d.]+x the predicted [\d,]+ "
                     r"and both outside its interval \([\d,]+-[\d,]+\)"),
          [large["min"], large["max"], large["mean"], large["mean"] / predicted["8192"]["step"],
           predicted["8192"]["step"], *predicted["8192"]["step_95"]])
    low, high = predicted["8192"]["step_95"]
    assert large["n_seeds"] == 2 and (large["min"] > high or large["max"] < low)  # "two seeds ... both outside"
    for size in (8192, 16384):
        check(row(doc, f"{size:,}")[1], [predicted[str(size)]["step"]])


def test_entities_wider_model_table_is_its_summary():
    doc = DOCS / "mech" / "entities" / "README.md"
    folder = DOCS / "mech" / "entities" / "wide_seed0"
    s, run = load_json(folder / "summary.json"), load_json(folder / "run" / "summary.json")
    steering = {(r["steered"], r["condition"], r["alpha"]): r for r in csv_rows(folder / "steering.csv")}
    cell = lambda label: row(doc, label, width=3)[1]  # noqa: E731  (the wider model's column)
    check(cell("training milestones"), [run["fall_end_step"], run["plateau_end_step"], run["acc_1pct_step"],
                                        run["acc_50pct_step"], run["attr_acc"]])
    check(cell("probe AUROC, known vs token-matched"), [s["auroc_best_layer_token_matched"], s["best_layer"],
                                                        *s["auroc_best_layer_token_matched_ci"]])
    check(cell("layer 0 (embeddings) control"), [s["auroc_layer0"]])
    check(cell("known vs ALL unseen"), [s["auroc_best_layer_all_unseen"]])
    check(cell("the model's own max probability"), [s["auroc_max_prob_baseline"]])
    check(row(doc, "SAE (layer", width=3)[0], [s["sae_layer"], s["sae_d_sae"], s["sae_k"]])
    check(cell("SAE (layer"), [s["sae_variance_explained"], s["sae_dead_latents"], s["sae_loss_increase"]])
    separation = s["best_latent_separation_min_over_families"]
    check(cell("best latent separation"), [separation["known"], separation["unknown"]])
    check(cell("unknown latent on known people"), [s["steering_unknown_on_known_acc_drop"],
                                                   *s["steering_unknown_on_known_acc_drop_ci"]], scale=100)
    random_latents = steering[("unknown", "random_latents", "2")]
    check(cell("10 random latents"), [s["steering_unknown_on_known_acc_drop_random_latents"],
                                      float(random_latents["right_change_sd"]),
                                      s["steering_unknown_on_known_acc_drop_random_directions"]], scale=100)
    check(cell("known latent on unseen people"), [s["steering_known_on_unseen_maxprob_change"]])
    check(cell("random latents / directions"), [s["steering_known_on_unseen_maxprob_change_random_latents"],
                                                s["steering_known_on_unseen_maxprob_change_random_directions"]])
    assert s["first_step_auroc_0.9"]["step"] is None and "never" in cell("first snapshot at which")
