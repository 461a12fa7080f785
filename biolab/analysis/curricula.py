"""Curricula and imbalance (SPEC section 8; paper Figure 4-right and Figure J): which training
distribution learns the most facts in a fixed step budget, as the population size N grows?

Reads a study directory written by ``bash sweeps/curricula_cpu.sh`` with up to three sweeps (Hydra
multirun directories, one job per sub-directory; a missing or empty sweep is skipped):

    power_law/     data.distribution.alpha x data.population_size     (alpha 0 = uniform, the reference)
    celebrities/   data.distribution.n x data.distribution.weight x data.population_size
    warmup/        data.distribution.k x data.distribution.epochs x data.population_size

and writes into the study directory:

    table.csv         one row per job of every sweep: study, setting ("alpha 0.6", "n 256 w 8",
                      "k 256 e 4"), N, final attribute loss and accuracy, plateau end (interpolated
                      baseline crossing), fall end, 50%-accuracy step, finished (unfinished jobs: the
                      values of their last evaluation); each sweep also gets its full table.csv
                      (every summary scalar, biolab.analysis.collect)
    power_law.png     heat maps, rows alpha, columns N: plateau end ("none": never crossed the
                      no-knowledge baseline) and final attribute loss (with accuracy)
    celebrities.png   final attribute loss (with accuracy), rows n, columns weight w, one panel per N
    warmup.png        final attribute loss (with accuracy), rows k, columns epochs e, one panel per N
                      (heat-map colours: difference to the uniform run of the same N, blue = better)
    comparison.png    final attribute loss and accuracy against N: uniform and the best setting of
                      each study at each N (Figure 4-right / Figure J)
    best_curves.png   attribute loss and accuracy against steps of those four runs at the middle N
    curricula.json    per N: the uniform's and each study's best final loss / accuracy / plateau end;
                      for the power law the alpha with the shortest plateau and alpha 0 / 1's plateau ends

"Best" is, per N and study, the finished job with the lowest final attribute loss; for the power law
it is chosen among alpha > 0 (alpha 0 is the uniform reference, drawn as its own line). Unfinished jobs
are listed in the table and left out of every choice.

    python -m biolab.analysis curricula multiruns/curricula_cpu    # = python -m biolab.analysis.curricula
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize
from omegaconf import OmegaConf

from biolab.analysis import run_cli
from biolab.analysis.collect import Job, collect_sweep, write_table
from biolab.analysis.population import population_size
from biolab.io import write_csv, write_json
from biolab.plots import plt, save_figure

# each sweep's swept keys besides N, in label / heat-map order (rows, then columns)
STUDIES = {"power_law": ("data.distribution.alpha",),
           "celebrities": ("data.distribution.n", "data.distribution.weight"),
           "warmup": ("data.distribution.k", "data.distribution.epochs")}
STUDY_NAMES = {"power_law": "power law", "celebrities": "celebrities", "warmup": "warm-up"}
SHORT = {"data.distribution.alpha": "alpha", "data.distribution.n": "n", "data.distribution.weight": "w",
         "data.distribution.k": "k", "data.distribution.epochs": "e"}
AXIS_NAMES = {"data.distribution.alpha": "power-law exponent alpha", "data.distribution.n": "celebrities n",
              "data.distribution.weight": "celebrity weight w", "data.distribution.k": "warm-up people k",
              "data.distribution.epochs": "warm-up epochs e"}
COLORS = {"uniform": "black", "power_law": "tab:blue", "celebrities": "tab:orange", "warmup": "tab:green"}
MARKERS = {"uniform": "s", "power_law": "o", "celebrities": "^", "warmup": "D"}
LOSS, ACC = "val/attr_loss", "val/attr_acc"


@dataclass
class Run:
    """One job of a curricula sweep: its study, setting (values of STUDIES[study]), N and results."""
    study: str
    setting: tuple
    size: int
    job: Job
    attr_loss: float | None        # final (an unfinished job: its last evaluation)
    attr_acc: float | None
    plateau_end: float | None      # interpolated baseline crossing; None: never crossed
    fall_end: float | None
    acc_half: float | None         # 50%-accuracy step
    baseline: float | None         # no-knowledge baseline

    @property
    def finished(self) -> bool:
        return self.job.finished

    @property
    def label(self) -> str:
        return setting_label(self.study, self.setting)

    @property
    def is_uniform(self) -> bool:
        return self.study == "power_law" and self.setting[0] == 0

    @property
    def name(self) -> str:
        return f"{self.study}/{self.job.path.name}"


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def setting_label(study: str, setting: tuple) -> str:
    """("power_law", (0.6,)) -> "alpha 0.6"; ("celebrities", (256, 8)) -> "n 256 w 8"."""
    return " ".join(f"{SHORT[key]} {_fmt(value)}" for key, value in zip(STUDIES[study], setting))


def setting_value(job: Job, key: str):
    """The job's value of a swept key: its override, else its config.yaml (a value left at its default)."""
    if key in job.overrides:
        return job.overrides[key]
    config = job.path / "config.yaml"
    value = OmegaConf.select(OmegaConf.load(config), key) if config.exists() else None
    if value is None:
        raise ValueError(f"{job.path}: no {key} override and none in config.yaml (not a curricula job?)")
    return value


def make_run(study: str, job: Job) -> Run:
    summary = job.summary
    final = {"attr_loss": summary.get("attr_loss"), "attr_acc": summary.get("attr_acc"),
             "baseline": summary.get("no_knowledge_baseline")}
    if None in final.values():  # no summary yet: the last evaluation
        rows = job.metrics()
        last = next((r for r in reversed(rows) if LOSS in r), {})
        final = {"attr_loss": final["attr_loss"] if final["attr_loss"] is not None else last.get(LOSS),
                 "attr_acc": final["attr_acc"] if final["attr_acc"] is not None else last.get(ACC),
                 "baseline": final["baseline"] if final["baseline"] is not None
                 else next((r["val/baseline"] for r in rows if "val/baseline" in r), None)}
    return Run(study, tuple(setting_value(job, key) for key in STUDIES[study]), population_size(job), job,
               plateau_end=summary.get("plateau_end_interpolated"), fall_end=summary.get("fall_end_step"),
               acc_half=summary.get("acc_50pct_step"), **final)


def load_study(study_dir: str | Path) -> dict[str, list[Run]]:
    """The runs of each sweep present under study_dir, by study name (in STUDIES order)."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise FileNotFoundError(f"study directory not found: {study_dir}")
    studies = {}
    for study in STUDIES:
        if not (study_dir / study).is_dir():
            continue
        try:
            jobs = collect_sweep(study_dir / study)
        except FileNotFoundError:  # an empty sweep directory: not run yet
            continue
        runs = sorted((make_run(study, job) for job in jobs), key=lambda r: (r.setting, r.size))
        seen = set()
        for run in runs:
            if (run.setting, run.size) in seen:
                raise ValueError(f"two jobs of {study} with {run.label} at N={run.size} (e.g. seeds): "
                                 "this analysis expects one job per setting and N")
            seen.add((run.setting, run.size))
        studies[study] = runs
    if not studies:
        raise FileNotFoundError(f"no curricula sweep in {study_dir}: expected job directories under "
                                f"{', '.join(s + '/' for s in STUDIES)} (run bash sweeps/curricula_cpu.sh)")
    return studies


def sizes_of(studies: dict[str, list[Run]]) -> list[int]:
    return sorted({run.size for runs in studies.values() for run in runs})


def uniform_per_size(studies: dict[str, list[Run]]) -> dict[int, Run]:
    """The finished alpha-0 run of each N (the uniform reference)."""
    return {r.size: r for r in studies.get("power_law", []) if r.is_uniform and r.finished}


def best_per_size(runs: list[Run]) -> dict[int, Run]:
    """Per N: the finished run with the lowest final attribute loss (the uniform excluded)."""
    best: dict[int, Run] = {}
    for run in runs:
        if run.finished and not run.is_uniform and run.attr_loss is not None and not math.isnan(run.attr_loss):
            if run.size not in best or run.attr_loss < best[run.size].attr_loss:
                best[run.size] = run
    return best


def unfinished_runs(studies: dict[str, list[Run]]) -> list[Run]:
    return [run for runs in studies.values() for run in runs if not run.finished]


# --------------------------------------------------------------------------------------------------
# table and json


def table_rows(studies: dict[str, list[Run]]) -> list[dict]:
    return [{"study": run.study, "setting": run.label, "N": run.size, "attr_loss": run.attr_loss,
             "attr_acc": run.attr_acc, "plateau_end_interpolated": run.plateau_end, "fall_end_step": run.fall_end,
             "acc_50pct_step": run.acc_half, "finished": run.finished, "job": run.name}
            for runs in studies.values() for run in sorted(runs, key=lambda r: (r.size, r.setting))]


def run_entry(run: Run | None, uniform: Run | None = None) -> dict | None:
    if run is None:
        return None
    entry = {"setting": run.label, **{SHORT[k]: v for k, v in zip(STUDIES[run.study], run.setting)},
             "attr_loss": run.attr_loss, "attr_acc": run.attr_acc, "plateau_end": run.plateau_end,
             "fall_end_step": run.fall_end, "acc_50pct_step": run.acc_half, "job": run.name}
    if uniform is not None and run is not uniform:
        entry["attr_loss_minus_uniform"] = run.attr_loss - uniform.attr_loss
        entry["attr_acc_minus_uniform"] = run.attr_acc - uniform.attr_acc
    return entry


def power_law_plateaus(runs: list[Run], size: int) -> dict:
    """At one N: every alpha's plateau end (None: never crossed), the shortest, and alpha 0's and 1's."""
    at_size = [r for r in runs if r.size == size and r.finished]
    by_alpha = {_fmt(r.setting[0]): r.plateau_end for r in at_size}
    crossed = [r for r in at_size if r.plateau_end is not None]
    shortest = min(crossed, key=lambda r: r.plateau_end) if crossed else None
    return {"shortest_plateau": None if shortest is None else
            {"alpha": shortest.setting[0], "plateau_end": shortest.plateau_end},
            "plateau_end_alpha_0": by_alpha.get("0"), "plateau_end_alpha_1": by_alpha.get("1"),
            "plateau_end_by_alpha": by_alpha}


def summarise(studies: dict[str, list[Run]], study_dir: Path) -> dict:
    """What curricula.json holds (see the module docstring)."""
    uniform = uniform_per_size(studies)
    best = {study: best_per_size(runs) for study, runs in studies.items()}
    per_size = {}
    for size in sizes_of(studies):
        baselines = [r.baseline for runs in studies.values() for r in runs if r.size == size and r.baseline]
        row = {"no_knowledge_baseline": baselines[0] if baselines else None,
               "uniform": run_entry(uniform.get(size)),
               "best": {study: run_entry(best[study].get(size), uniform.get(size)) for study in studies}}
        if "power_law" in studies:
            row["power_law"] = power_law_plateaus(studies["power_law"], size)
        per_size[str(size)] = row
    return {"study_dir": str(study_dir),
            "best_rule": "per N and study, the finished job with the lowest final attribute loss; "
                         "power law among alpha > 0 (alpha 0 is the uniform reference)",
            "sweeps": {study: {"jobs": len(runs), "finished": sum(r.finished for r in runs)}
                       for study, runs in studies.items()},
            "unfinished": [r.name for r in unfinished_runs(studies)],
            "per_population_size": per_size}


# --------------------------------------------------------------------------------------------------
# figures


def _heat_map(ax, colour: np.ndarray, texts: list[list[str]], rows: list[str], cols: list[str],
              cmap: str, norm: Normalize, fontsize: float = 8.5):
    """imshow of `colour` (NaN: grey) with one text per cell, black or white to stay readable."""
    colormap = plt.get_cmap(cmap).with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(colour), cmap=colormap, norm=norm, aspect="auto")
    for i, row in enumerate(texts):
        for j, text in enumerate(row):
            dark = False
            if not math.isnan(colour[i, j]):
                r, g, b, _ = colormap(norm(colour[i, j]))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color="white" if dark else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    return image


def _symmetric_norm(values) -> Normalize:
    finite = [abs(v) for v in np.ravel(values) if not math.isnan(v)]
    limit = max(finite) if finite and max(finite) > 0 else 1.0
    return Normalize(-limit, limit)


def _loss_text(run: Run) -> str:
    text = f"{run.attr_loss:.2f}\n{100 * run.attr_acc:.1f}%" if run.attr_acc is not None else f"{run.attr_loss:.2f}"
    return text + ("*" if not run.finished else "")


def _baseline_note(runs: list[Run]) -> str:
    """'; no-knowledge baseline 6.78' for a heat map's title (a heat map has no line to draw it as)."""
    baseline = next((r.baseline for r in runs if r.baseline), None)
    return f"; no-knowledge baseline {baseline:.2f}" if baseline else ""


def _loss_minus_uniform(run: Run, uniform: dict[int, Run]) -> float:
    reference = uniform.get(run.size)
    return run.attr_loss - reference.attr_loss if reference is not None else math.nan


def plot_power_law(runs: list[Run], uniform: dict[int, Run], path: Path) -> Path:
    alphas = sorted({r.setting[0] for r in runs})
    sizes = sorted({r.size for r in runs})
    plateau = np.full((len(alphas), len(sizes)), math.nan)
    loss = np.full_like(plateau, math.nan)
    plateau_texts = [[""] * len(sizes) for _ in alphas]
    loss_texts = [[""] * len(sizes) for _ in alphas]
    for run in runs:
        i, j = alphas.index(run.setting[0]), sizes.index(run.size)
        star = "" if run.finished else "*"
        reference = uniform.get(run.size)
        if run.plateau_end is not None:
            plateau_texts[i][j] = f"{run.plateau_end:.0f}{star}"
            if reference is not None and reference.plateau_end:
                plateau[i, j] = 100 * (run.plateau_end / reference.plateau_end - 1)
        else:
            plateau_texts[i][j] = "none" + star if run.job.summary else "n/a*"  # n/a: no summary yet
        if run.attr_loss is not None:
            loss[i, j] = _loss_minus_uniform(run, uniform)
            loss_texts[i][j] = _loss_text(run)
    fig, (ax_plateau, ax_loss) = plt.subplots(1, 2, figsize=(12.5, 0.55 * len(alphas) + 2.6))
    rows, cols = [_fmt(a) for a in alphas], [str(s) for s in sizes]
    image = _heat_map(ax_plateau, plateau, plateau_texts, rows, cols, "RdBu_r", _symmetric_norm(plateau))
    fig.colorbar(image, ax=ax_plateau, label="plateau end vs uniform's at the same N (%)")
    ax_plateau.set_title("plateau end (steps; none: never below the baseline)", fontsize=10)
    image = _heat_map(ax_loss, loss, loss_texts, rows, cols, "RdBu_r", _symmetric_norm(loss))
    fig.colorbar(image, ax=ax_loss, label="loss minus uniform's at the same N (nats)")
    ax_loss.set_title(f"final attribute loss (nats{_baseline_note(runs)}) and accuracy", fontsize=10)
    for ax in (ax_plateau, ax_loss):
        ax.set_xlabel("population size N")
        ax.set_ylabel(AXIS_NAMES["data.distribution.alpha"] + " (0 = uniform)")
    note = "; * unfinished (last evaluation)" if any(not r.finished for r in runs) else ""
    fig.suptitle(f"power-law training distribution p(i) ~ (i+1)^-alpha (colour: blue = better than uniform{note})",
                 fontsize=11)
    return save_figure(fig, path)


def plot_two_key_study(study: str, runs: list[Run], uniform: dict[int, Run], path: Path) -> Path:
    """Final attribute loss heat maps (rows: first swept key, columns: second), one panel per N."""
    row_key, col_key = STUDIES[study]
    row_values = sorted({r.setting[0] for r in runs})
    col_values = sorted({r.setting[1] for r in runs})
    sizes = sorted({r.size for r in runs})
    tables = {size: (np.full((len(row_values), len(col_values)), math.nan),
                     [[""] * len(col_values) for _ in row_values]) for size in sizes}
    for run in runs:
        colour, texts = tables[run.size]
        i, j = row_values.index(run.setting[0]), col_values.index(run.setting[1])
        if run.attr_loss is not None:
            colour[i, j] = _loss_minus_uniform(run, uniform)
            texts[i][j] = _loss_text(run)
    norm = _symmetric_norm([tables[s][0] for s in sizes])
    width = 1.0 + 1.1 * len(col_values)
    fig, axes = plt.subplots(1, len(sizes) + 1, figsize=(width * len(sizes) + 1.6, 0.75 * len(row_values) + 2.4),
                             gridspec_kw={"width_ratios": [1] * len(sizes) + [0.06]}, squeeze=False)
    axes = axes[0]
    for ax, size in zip(axes, sizes):
        image = _heat_map(ax, *tables[size], [_fmt(v) for v in row_values], [_fmt(v) for v in col_values],
                          "RdBu_r", norm)
        reference = uniform.get(size)
        ax.set_title(f"N = {size}" + (f" (uniform {reference.attr_loss:.2f}, {100 * reference.attr_acc:.1f}%)"
                                      if reference else ""), fontsize=9.5)
        ax.set_xlabel(AXIS_NAMES[col_key])
    axes[0].set_ylabel(AXIS_NAMES[row_key])
    fig.colorbar(image, cax=axes[-1], label="loss minus uniform's (nats)")
    note = "; * unfinished" if any(not r.finished for r in runs) else ""
    fig.suptitle(f"{STUDY_NAMES[study]}: final attribute loss (nats{_baseline_note(runs)}) and accuracy "
                 f"(colour: blue = better than uniform{note})", fontsize=11)
    return save_figure(fig, path)


def comparison_lines(studies: dict[str, list[Run]]) -> dict[str, dict[int, Run]]:
    """The four lines of the comparison: uniform, then each study's best, per N."""
    lines = {"uniform": uniform_per_size(studies)}
    lines.update({study: best_per_size(runs) for study, runs in studies.items()})
    return {key: line for key, line in lines.items() if line}


def _line_label(key: str) -> str:
    return "uniform (alpha 0)" if key == "uniform" else f"best {STUDY_NAMES[key]}"


def _spread(positions: list[float], gap: float) -> list[float]:
    """Sorted 1-d positions moved apart to at least `gap`: overlapping neighbours form a group laid out
    evenly around its members' mean; positions clear of the others stay where they are."""
    groups = [[p] for p in positions]

    def layout(group: list[float]) -> list[float]:
        start = sum(group) / len(group) - gap * (len(group) - 1) / 2
        return [start + gap * i for i in range(len(group))]

    merged = True
    while merged:
        merged = False
        for i in range(len(groups) - 1):
            if layout(groups[i])[-1] + gap > layout(groups[i + 1])[0] + 1e-9:
                groups[i] += groups.pop(i + 1)
                merged = True
                break
    return [p for group in groups for p in layout(group)]


def _label_points(ax, points: list[tuple[float, float, str, str]], fontsize: float = 7.5) -> None:
    """Text of each (x, y, text, colour) to the right of its point; texts at the same x spread vertically
    so that they do not overlap (thin leader lines where moved)."""
    to_points = 72.0 / ax.figure.dpi
    by_x = defaultdict(list)
    for point in points:
        by_x[point[0]].append(point)
    for group in by_x.values():
        group.sort(key=lambda p: p[1])
        ys = [ax.transData.transform((x, y))[1] * to_points for x, y, _, _ in group]
        for (x, y, text, colour), y_pts, target in zip(group, ys, _spread(ys, fontsize * 1.35)):
            moved = abs(target - y_pts) > 1.0
            ax.annotate(text, (x, y), xytext=(9, target - y_pts), textcoords="offset points", fontsize=fontsize,
                        color=colour, va="center", ha="left",
                        bbox=dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none", alpha=0.8),
                        arrowprops=dict(arrowstyle="-", color=colour, lw=0.5, alpha=0.6) if moved else None)


def plot_comparison(studies: dict[str, list[Run]], path: Path) -> Path:
    lines = comparison_lines(studies)
    sizes = sizes_of(studies)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 5))
    for ax, attr in ((ax_loss, "attr_loss"), (ax_acc, "attr_acc")):
        for key, line in lines.items():
            xs = sorted(line)
            ax.plot(xs, [getattr(line[x], attr) for x in xs], marker=MARKERS[key], color=COLORS[key],
                    linestyle="-" if key == "uniform" else "--", linewidth=1.4, markersize=6, label=_line_label(key))
    baselines = {}
    for runs in studies.values():
        for run in runs:
            if run.baseline:
                baselines.setdefault(run.size, run.baseline)
    if len(set(baselines.values())) == 1:  # the same at every N (it depends on the attribute pools only)
        ax_loss.axhline(next(iter(baselines.values())), linestyle=":", color="grey", linewidth=1.5,
                        label=f"no-knowledge baseline ({next(iter(baselines.values())):.2f})")
    elif baselines:
        xs = sorted(baselines)
        ax_loss.plot(xs, [baselines[x] for x in xs], ":", color="grey", linewidth=1.5,
                     label="no-knowledge baseline")
    for ax in (ax_loss, ax_acc):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.margins(y=0.1)  # room for the spread labels above the top point and below the lowest
        ax.set_xlim(min(sizes) / 2 ** 0.3, max(sizes) * 2 ** 0.9)  # room for the labels on the right
        ax.set_xlabel("population size N (people)")
        ax.grid(alpha=0.3)
    ax_loss.set_ylabel("final attribute loss (nats per value)")
    ax_acc.set_ylabel("final attribute accuracy")
    ax_loss.set_title("final attribute loss (lower is better)", fontsize=10)
    ax_acc.set_title("final attribute accuracy", fontsize=10)
    ax_loss.legend(fontsize=8, loc="lower right")
    ax_acc.legend(fontsize=8, loc="upper right")
    steps = {r.job.summary.get("steps") for runs in studies.values() for r in runs if r.finished}
    budget = f" after {steps.pop()} steps" if len(steps) == 1 else ""
    fig.suptitle(f"uniform against the best setting of each study at each N{budget} "
                 "(label: the chosen setting)", fontsize=11)
    fig.tight_layout()  # the label spreading works in the final axes' coordinates
    for ax, attr in ((ax_loss, "attr_loss"), (ax_acc, "attr_acc")):
        _label_points(ax, [(size, getattr(run, attr), run.label, COLORS[key])
                           for key, line in lines.items() if key != "uniform" for size, run in line.items()])
    return save_figure(fig, path)


def middle_size(sizes: list[int]) -> int:
    """The middle N of the sweep (the lower middle of an even count)."""
    return sorted(sizes)[(len(sizes) - 1) // 2]


def plot_best_curves(studies: dict[str, list[Run]], path: Path) -> tuple[Path, int]:
    """Attribute loss and accuracy against steps of the uniform and each study's best run at the middle N."""
    lines = comparison_lines(studies)
    size = middle_size(sorted({s for line in lines.values() for s in line}))
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.8))
    baseline = None
    for key, line in lines.items():
        run = line.get(size)
        if run is None:
            continue
        rows = [r for r in run.job.metrics() if LOSS in r]
        steps = [r["step"] for r in rows]
        label = f"{'uniform' if key == 'uniform' else STUDY_NAMES[key]}: {run.label}"
        style = dict(color=COLORS[key], linewidth=2.0 if key == "uniform" else 1.4,
                     linestyle="-" if key == "uniform" else "--", marker=MARKERS[key], markevery=0.1, markersize=4)
        ax_loss.plot(steps, [r[LOSS] for r in rows], label=label, **style)
        ax_acc.plot(steps, [r.get(ACC, math.nan) for r in rows], label=label, **style)
        baseline = baseline or run.baseline
    if baseline:
        ax_loss.axhline(baseline, color="grey", linestyle=":", linewidth=1.5,
                        label=f"no-knowledge baseline {baseline:.2f}")
        bottom, top = ax_loss.get_ylim()
        ax_loss.set_ylim(bottom, min(top, 1.6 * baseline))  # the first steps' fall cut: the plateau and after matter
    ax_loss.set_ylabel("attribute loss (nats per value)")
    ax_acc.set_ylabel("attribute accuracy")
    ax_loss.set_title("attribute loss (the first steps' fall cut off)", fontsize=10)
    ax_acc.set_title("attribute accuracy", fontsize=10)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"N = {size}: the uniform run and the best run of each study (lowest final attribute loss)",
                 fontsize=11)
    return save_figure(fig, path), size


# --------------------------------------------------------------------------------------------------


def analyse_curricula(study_dir: str | Path) -> dict:
    """Table, json and figures of a curricula study directory; returns curricula.json's content, with
    the written paths under "written"."""
    study_dir = Path(study_dir)
    studies = load_study(study_dir)
    for study in studies:
        write_table([run.job for run in studies[study]], study_dir / study / "table.csv")
    written = [study_dir / "table.csv"]
    write_csv(written[0], table_rows(studies))
    result = summarise(studies, study_dir)
    uniform = uniform_per_size(studies)
    if "power_law" in studies:
        written.append(plot_power_law(studies["power_law"], uniform, study_dir / "power_law.png"))
    for study in ("celebrities", "warmup"):
        if study in studies:
            written.append(plot_two_key_study(study, studies[study], uniform, study_dir / f"{study}.png"))
    if any(comparison_lines(studies).values()):
        written.append(plot_comparison(studies, study_dir / "comparison.png"))
        path, size = plot_best_curves(studies, study_dir / "best_curves.png")
        written.append(path)
        result["best_curves_population_size"] = size
    write_json(study_dir / "curricula.json", result)
    written.append(study_dir / "curricula.json")
    return {**result, "written": [str(p) for p in written]}


def _result_line(title: str, entry: dict | None) -> str:
    if entry is None:
        return f"  {title:<18} -"
    plateau = "none" if entry["plateau_end"] is None else f"{entry['plateau_end']:.0f}"
    return (f"  {title:<18} {entry['setting']:<12} loss {entry['attr_loss']:.3f}  acc {entry['attr_acc']:.3f}  "
            f"plateau end {plateau}")


def print_summary(result: dict) -> None:
    sweeps = ", ".join(f"{s} {v['jobs']} jobs ({v['finished']} finished)" for s, v in result["sweeps"].items())
    print(f"{result['study_dir']}: {sweeps}")
    if result["unfinished"]:
        print(f"note: {len(result['unfinished'])} unfinished job(s) left out of the best choice: "
              + ", ".join(result["unfinished"]))
    for size, row in result["per_population_size"].items():
        baseline = row["no_knowledge_baseline"]
        print(f"N = {size}" + (f" (no-knowledge baseline {baseline:.3f})" if baseline else ""))
        print(_result_line("uniform", row["uniform"]))
        for study, entry in row["best"].items():
            print(_result_line(f"best {STUDY_NAMES[study]}", entry))
        plateaus = row.get("power_law")
        if plateaus and plateaus["shortest_plateau"]:
            shortest = plateaus["shortest_plateau"]
            ends = ", ".join(f"alpha {a}: " + ("none" if v is None else f"{v:.0f}")
                             for a, v in (("0", plateaus["plateau_end_alpha_0"]),
                                          ("1", plateaus["plateau_end_alpha_1"])))
            print(f"  power law: shortest plateau at alpha {_fmt(shortest['alpha'])} "
                  f"({shortest['plateau_end']:.0f} steps); {ends}")
    print("-> " + ", ".join(result["written"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biolab.analysis.curricula", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_dir", type=Path, help="study directory, e.g. multiruns/curricula_cpu")
    args = parser.parse_args(argv)
    return run_cli(lambda: print_summary(analyse_curricula(args.study_dir)))


if __name__ == "__main__":
    sys.exit(main())
