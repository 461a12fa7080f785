"""Population-size study: learning curves per N and the plateau-length scaling law (SPEC section 6).

From a sweep over ``data.population_size`` (and seeds), writes into the sweep directory:

    table.csv               one row per job (biolab.analysis.collect)
    population_curves.png   attribute loss (log) and accuracy against steps, one colour per N:
                            each seed and the mean over seeds, no-knowledge baseline (paper Figure 2-left)
    plateau_scaling.png     plateau end and 50%-accuracy step against N on log-log axes, each seed a
                            dot, the fitted power law a line, the paper's fit for reference (Figure 2-right)
    scaling_fit.json        for each milestone: prefactor a and exponent b of step = a * N^b, R^2 of
                            the fit in log-log space, and per N the mean step, its spread and the
                            biographies seen per person by then (step * batch / N)

The paper fits plateau_end = 0.43 * N^0.81 (R^2 0.998) over N = 4k...256k. SPEC section 10: at small
N the fall and the acquisition overlap and the baseline crossing measures the fall, so the
50%-accuracy step is fitted as well.

    python -m biolab.analysis population multiruns/population_cpu
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from biolab.analysis.collect import Job, collect_sweep, write_table
from biolab.io import write_json
from biolab.plots import plt, save_figure

SIZE_KEY = "data.population_size"
MILESTONES = (("plateau_end_interpolated", "plateau end (baseline crossing, interpolated)"),
              ("acc_50pct_step", "50% attribute accuracy"))
PAPER_FIT = (0.43, 0.81)  # plateau_end = 0.43 * N^0.81 (SPEC section 6, text)


def fit_power_law(sizes: list[float], steps: list[float]) -> dict:
    """Least squares of log(step) on log(N): step = prefactor * N^exponent; R^2 in log space."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(steps, float))
    exponent, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + exponent * x)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (residual ** 2).sum() / total if total > 0 else math.nan
    return {"prefactor": float(math.exp(intercept)), "exponent": float(exponent), "r2": float(r2),
            "n_points": len(sizes)}


def population_size(job: Job) -> int:
    if SIZE_KEY in job.overrides:
        return int(job.overrides[SIZE_KEY])
    if "population_size" in job.summary:
        return int(job.summary["population_size"])
    raise ValueError(f"{job.path}: no {SIZE_KEY} override and no summary.json (not a population sweep job?)")


def milestone_table(jobs: list[Job], key: str, batch_size: int) -> tuple[dict, list[tuple[int, float]]]:
    """Per N: mean/std/min/max of the milestone over seeds (finished jobs that reached it), and the points."""
    points = [(population_size(j), float(j.summary[key])) for j in jobs
              if j.finished and j.summary.get(key) is not None]
    by_size = defaultdict(list)
    for size, step in points:
        by_size[size].append(step)
    table = {}
    for size in sorted(by_size):
        values = np.asarray(by_size[size])
        table[str(size)] = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                            "max": float(values.max()), "n_seeds": len(values),
                            "biographies_per_person": float(values.mean() * batch_size / size)}
    return table, points


def scaling_fit(jobs: list[Job], batch_size: int) -> dict:
    """Fits of each milestone against N (on the per-N means, as the paper plots means over seeds)."""
    out = {}
    for key, _ in MILESTONES:
        table, _ = milestone_table(jobs, key, batch_size)
        fit = None
        if len(table) >= 2:
            fit = fit_power_law([float(n) for n in table], [row["mean"] for row in table.values()])
        out[key] = {"fit": fit, "per_population_size": table}
    n_unfinished = sum(not j.finished for j in jobs)
    out["jobs"] = {"total": len(jobs), "finished": len(jobs) - n_unfinished, "unfinished": n_unfinished}
    out["paper_fit_plateau_end"] = {"prefactor": PAPER_FIT[0], "exponent": PAPER_FIT[1], "r2": 0.998,
                                    "range": "N = 4k ... 256k, 8 layers d512, batch 128"}
    return out


def _curves_by_size(jobs: list[Job], metric: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per N: evaluation steps (union over seeds) and [seeds, steps] values, NaN after a seed's run ended
    (runs stopped at a milestone end at different steps)."""
    runs = defaultdict(list)
    for job in jobs:
        rows = [r for r in job.metrics() if metric in r]
        if rows:
            runs[population_size(job)].append({int(r["step"]): r[metric] for r in rows})
    out = {}
    for size, curves in runs.items():
        steps = sorted(set().union(*curves))
        out[size] = (np.asarray(steps), np.asarray([[c.get(s, np.nan) for s in steps] for c in curves]))
    return out


def plot_population_curves(jobs: list[Job], baseline: float, path: Path) -> Path:
    sizes = sorted({population_size(j) for j in jobs})
    colors = dict(zip(sizes, plt.cm.plasma(np.linspace(0.05, 0.85, len(sizes)))))
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, metric in ((ax_loss, "val/attr_loss"), (ax_acc, "val/attr_acc")):
        for size, (steps, values) in sorted(_curves_by_size(jobs, metric).items()):
            for seed_values in values:  # each seed thin, up to where its run ended
                ax.plot(steps, seed_values, color=colors[size], linewidth=0.8, alpha=0.55)
            everyone = ~np.isnan(values).any(0)  # mean only over the steps every seed reached
            ax.plot(steps[everyone], values[:, everyone].mean(0), color=colors[size], linewidth=2.2,
                    label=f"N = {size} ({len(values)} seeds)")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    ax_loss.axhline(baseline, color="k", linestyle="--", linewidth=1, label=f"no-knowledge baseline {baseline:.2f}")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("attribute loss (nats per value)")
    ax_acc.set_ylabel("attribute accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_loss.legend(fontsize=8)
    fig.suptitle("learning curves by population size (thin: each seed, up to where its run ended; "
                 "thick: mean over seeds)", fontsize=11)
    return save_figure(fig, path)


def plot_scaling(jobs: list[Job], fits: dict, batch_size: int, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 5.2))
    sizes = sorted({population_size(j) for j in jobs})
    grid = np.geomspace(min(sizes) / 1.3, max(sizes) * 1.3, 50)
    for (key, label), color in zip(MILESTONES, ("tab:red", "tab:green")):
        table, points = milestone_table(jobs, key, batch_size)
        if not points:
            continue
        ax.scatter(*zip(*points), color=color, alpha=0.35, s=18)
        ax.plot([int(n) for n in table], [row["mean"] for row in table.values()], "o", color=color, markersize=7)
        fit = fits[key]["fit"]
        if fit:
            ax.plot(grid, fit["prefactor"] * grid ** fit["exponent"], "-", color=color,
                    label=f"{label}: {fit['prefactor']:.3g} N^{fit['exponent']:.2f}, R² {fit['r2']:.3f}")
    a, b = PAPER_FIT
    ax.plot(grid, a * grid ** b, ":", color="grey", label=f"paper plateau end, 8L d512 batch 128: {a} N^{b}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("population size N (people)")
    ax.set_ylabel("training step")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("plateau end and 50%-accuracy step against N (dots: seeds; large: mean)", fontsize=10)
    return save_figure(fig, path)


def analyse_population_sweep(sweep_dir: str | Path) -> dict:
    """Table, figures and fits of a population-size sweep; returns the fits (also in scaling_fit.json)."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_sweep(sweep_dir)
    write_table(jobs, sweep_dir / "table.csv")
    rows = next((j.metrics() for j in jobs if j.metrics()), [])
    baseline = float(rows[0]["val/baseline"]) if rows else math.nan
    batch_size = _batch_size(jobs[0])
    fits = scaling_fit(jobs, batch_size)
    write_json(sweep_dir / "scaling_fit.json", fits)
    plot_population_curves(jobs, baseline, sweep_dir / "population_curves.png")
    plot_scaling(jobs, fits, batch_size, sweep_dir / "plateau_scaling.png")
    return fits


def _batch_size(job: Job) -> int:
    from omegaconf import OmegaConf
    return int(OmegaConf.load(job.path / "config.yaml").data.batch_size)
