"""Population-size study: learning curves per N and the plateau scaling law (SPEC sections 6 and 10).

From a sweep over ``data.population_size`` (and seeds), writes into the sweep directory:

    table.csv               one row per job (biolab.analysis.collect)
    population_curves.png   attribute loss (log) and accuracy against steps, one colour per N:
                            each seed and the mean over seeds, no-knowledge baseline (paper Figure 2-left)
    plateau_scaling.png     log-log against N: plateau end and 50%-accuracy step (each seed a dot, the
                            fits as lines, the paper's law over the paper's N range only), plateau length
                            (plateau end minus fall end), and biographies per person at the plateau end
    scaling_fit.json        per milestone: per N the mean over seeds, spread, runs counted and left out,
                            biographies per person and the learning rate (fraction of its peak) there;
                            power-law fits step = a * N^b over every N and over N >= fit_from (2,048:
                            where a plateau exists), each with a bootstrap interval over seeds and a fit
                            per seed; local exponents between neighbouring N; and, when predictions.json
                            exists, the prediction test (predicted against measured)
    predictions.json        written by ``--predict N1,N2`` from the sizes measured so far, BEFORE the
                            larger sizes run; never overwritten (the test is only honest that way)

Milestones are recomputed from each job's metrics.csv with the current definitions (biolab.phases):
plateau end is the first baseline crossing after the fall end, and a run whose fall goes straight
below the baseline has no plateau: it is counted ("no_plateau") and left out of the plateau fits.
The paper fits plateau_end = 0.43 * N^0.81 (R^2 0.998) over N = 4k...256k.

    python -m biolab.analysis population multiruns/population_scaling_cpu [--fit-from 2048]
    python -m biolab.analysis population multiruns/population_scaling_cpu --predict 8192,16384
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from biolab.analysis.collect import Job, collect_sweep, write_table
from biolab.errors import ConfigError
from biolab.io import write_json
from biolab.lit_module import cosine_schedule
from biolab.plots import plt, save_figure
from biolab.runs import phases_from_metrics

SIZE_KEY = "data.population_size"
MILESTONES = (("plateau_end_interpolated", "plateau end (first baseline crossing after the fall)"),
              ("acc_50pct_step", "50% attribute accuracy"))
LENGTH_KEY = "plateau_length"  # plateau end minus fall end
PAPER_FIT = (0.43, 0.81)  # plateau_end = 0.43 * N^0.81 (SPEC section 6, text)
PAPER_RANGE = (4096, 262144)  # the N over which the paper fitted it
PAPER_BIOGRAPHIES = {4096: 12.0, 262144: 5.4}  # biographies per person at the plateau end (SPEC section 6)
FIT_FROM = 2048
BOOTSTRAP = 2000


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


def job_seed(job: Job) -> int:
    return int(job.overrides.get("seed", job.summary.get("seed", 0)))


def job_phases(job: Job) -> dict:
    """The job's milestones by the current definitions, from its metrics.csv ({} before any evaluation)."""
    rows = job.metrics()
    if not rows:
        return {}
    baseline = rows[-1].get("val/baseline", job.summary.get("no_knowledge_baseline"))
    return phases_from_metrics(rows, float(baseline)) if baseline is not None else {}


def run_settings(job: Job) -> dict:
    cfg = OmegaConf.load(job.path / "config.yaml")
    return {"batch_size": int(cfg.data.batch_size), "lr": float(cfg.module.get("lr", 4e-4)),
            "min_lr": float(cfg.module.get("min_lr", 1e-7)), "max_steps": int(cfg.trainer.max_steps),
            "schedule": str(cfg.module.get("schedule", "cosine"))}


def lr_fraction(step: float, settings: dict) -> float:
    """Learning rate at `step` as a fraction of its peak (1.0 for a constant schedule)."""
    if settings["schedule"] == "constant":
        return 1.0
    return cosine_schedule(step, settings["max_steps"], settings["lr"], settings["min_lr"]) / settings["lr"]


def milestone_points(jobs: list[Job], key: str) -> list[tuple[int, int, float]]:
    """(N, seed, step) of every finished job that reached the milestone."""
    out = []
    for job in jobs:
        value = job.phases.get(key) if job.finished else None
        if value is not None:
            out.append((population_size(job), job_seed(job), float(value)))
    return out


def per_size_table(jobs: list[Job], key: str, settings: dict) -> dict:
    """Per N: mean/std/min/max over seeds, runs counted, runs without a plateau, biographies per person,
    the learning rate (fraction of the peak) at the mean step."""
    finished = defaultdict(list)
    for job in jobs:
        if job.finished:
            finished[population_size(job)].append(job)
    by_size = defaultdict(list)
    for size, _, step in milestone_points(jobs, key):
        by_size[size].append(step)
    table = {}
    for size in sorted(finished):
        runs = finished[size]
        row = {"n_runs": len(runs), "n_seeds": len(by_size[size]),
               "no_plateau": sum(j.phases.get("has_plateau") is False for j in runs)}
        if by_size[size]:
            values = np.asarray(by_size[size])
            row.update(mean=float(values.mean()), std=float(values.std()), min=float(values.min()),
                       max=float(values.max()), biographies_per_person=float(values.mean() * settings["batch_size"] / size),
                       lr_fraction_at_mean=float(lr_fraction(values.mean(), settings)),
                       schedule_fraction_at_mean=float(values.mean() / settings["max_steps"]))
        table[str(size)] = row
    return table


def bootstrap_exponent(points: list[tuple[int, int, float]], n: int = BOOTSTRAP, seed: int = 0) -> dict | None:
    """95% interval of the exponent of the fit on per-N means, resampling the seeds within each N."""
    by_size = defaultdict(list)
    for size, _, step in points:
        by_size[size].append(step)
    if len(by_size) < 2:
        return None
    rng = np.random.default_rng(seed)
    sizes = sorted(by_size)
    exponents = []
    for _ in range(n):
        means = [np.mean(rng.choice(by_size[s], size=len(by_size[s]))) for s in sizes]
        exponents.append(fit_power_law(sizes, means)["exponent"])
    lo, hi = np.percentile(exponents, [2.5, 97.5])
    return {"exponent_95": [float(lo), float(hi)], "resamples": n}


def per_seed_fits(points: list[tuple[int, int, float]]) -> dict:
    """A power law per seed (over the sizes that seed reached), and the spread of their exponents."""
    by_seed = defaultdict(list)
    for size, seed, step in points:
        by_seed[seed].append((size, step))
    fits = {str(seed): fit_power_law(*zip(*sorted(pairs))) for seed, pairs in sorted(by_seed.items())
            if len({size for size, _ in pairs}) >= 2}
    exponents = [f["exponent"] for f in fits.values()]
    return {"fits": fits, "exponent_mean": float(np.mean(exponents)) if exponents else None,
            "exponent_sd": float(np.std(exponents, ddof=1)) if len(exponents) > 1 else None}


def fits_over(points: list[tuple[int, int, float]], table: dict, min_size: int = 0) -> dict | None:
    """Power law on the per-N means for N >= min_size, with its bootstrap interval and per-seed fits."""
    kept = [p for p in points if p[0] >= min_size]
    sizes = sorted({p[0] for p in kept})
    if len(sizes) < 2:
        return None
    fit = fit_power_law(sizes, [table[str(n)]["mean"] for n in sizes])
    return {**fit, "sizes": sizes, "bootstrap": bootstrap_exponent(kept), "per_seed": per_seed_fits(kept)}


def local_exponents(table: dict) -> list[dict]:
    """log(step ratio) / log(N ratio) between neighbouring N with a mean."""
    sizes = [int(n) for n, row in table.items() if "mean" in row]
    return [{"from": a, "to": b, "exponent": float(math.log(table[str(b)]["mean"] / table[str(a)]["mean"])
                                                  / math.log(b / a))} for a, b in zip(sizes, sizes[1:])]


def scaling_fit(jobs: list[Job], settings: dict, fit_from: int = FIT_FROM) -> dict:
    """Per milestone (and the plateau length): the per-N table, fits over every N and over N >= fit_from,
    local exponents."""
    out = {}
    for key in [k for k, _ in MILESTONES] + [LENGTH_KEY]:
        table = per_size_table(jobs, key, settings)
        points = milestone_points(jobs, key)
        if key == LENGTH_KEY:  # a zero-length plateau cannot go on log axes
            points = [p for p in points if p[2] > 0]
        out[key] = {"per_population_size": table, "fit": fits_over(points, table),
                    f"fit_from_{fit_from}": fits_over(points, table, fit_from),
                    "local_exponents": local_exponents(table)}
    n_unfinished = sum(not j.finished for j in jobs)
    finished = [j for j in jobs if j.finished]
    out["jobs"] = {"total": len(jobs), "finished": len(finished), "unfinished": n_unfinished,
                   "with_plateau": sum(j.phases.get("has_plateau") is True for j in finished),
                   "no_plateau": sum(j.phases.get("has_plateau") is False for j in finished)}
    out["fit_from"] = fit_from
    out["schedule"] = settings
    out["paper_fit_plateau_end"] = {"prefactor": PAPER_FIT[0], "exponent": PAPER_FIT[1], "r2": 0.998,
                                    "range": list(PAPER_RANGE), "model": "8 layers d512, batch 128",
                                    "biographies_per_person_at_plateau_end": PAPER_BIOGRAPHIES}
    return out


def predict(sweep_dir: str | Path, sizes: list[int], fit_from: int | None = None) -> dict:
    """Fit the sizes measured so far and write predictions.json for `sizes` (never overwritten)."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "predictions.json"
    if path.exists():
        raise ConfigError(f"{path} exists: a prediction is written once, before the sizes it predicts run "
                          f"(delete it by hand to start the test again)")
    jobs = load_jobs(sweep_dir)
    measured = sorted({population_size(j) for j in jobs if j.finished})
    clash = sorted(set(sizes) & {population_size(j) for j in jobs})
    if clash:
        raise ConfigError(f"N = {clash} already ran (or started) in {sweep_dir}: predict sizes not yet run")
    settings = run_settings(jobs[0])
    fits = scaling_fit(jobs, settings, fit_from or FIT_FROM)
    predictions = {"fitted_on_sizes": measured, "predicted_sizes": sorted(sizes),
                   "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "milestones": {},
                   "not_predicted": {}}
    for key, _ in MILESTONES:
        fit = fits[key]["fit"] if fit_from is None else fits[key][f"fit_from_{fit_from}"]
        if fit is None:  # a milestone this sweep does not reach (runs stopped at the plateau end: no 50% step)
            predictions["not_predicted"][key] = f"too few measured sizes with this milestone (sizes run: {measured})"
            continue
        interval = (fit["bootstrap"] or {}).get("exponent_95")
        entry = {"fit": {k: fit[k] for k in ("prefactor", "exponent", "r2", "sizes")}, "exponent_95": interval,
                 "predicted": {}}
        top = max(fit["sizes"])
        top_mean = fits[key]["per_population_size"][str(top)]["mean"]
        for n in sorted(sizes):
            row = {"step": fit["prefactor"] * n ** fit["exponent"]}
            if interval:  # the exponent's interval, anchored at the largest measured N
                row["step_95"] = [top_mean * (n / top) ** b for b in interval]
            entry["predicted"][str(n)] = row
        predictions["milestones"][key] = entry
    if not predictions["milestones"]:
        raise ConfigError(f"too few measured sizes to fit any milestone (have {measured})")
    write_json(path, predictions)
    return predictions


def prediction_check(sweep_dir: Path, jobs: list[Job], fits: dict) -> dict | None:
    """predictions.json against what the sweep has measured since."""
    path = sweep_dir / "predictions.json"
    if not path.exists():
        return None
    predictions = json.loads(path.read_text())
    written = datetime.fromisoformat(predictions["written_at"]) if "written_at" in predictions else None
    started = [datetime.fromtimestamp((job.path / "config.yaml").stat().st_mtime, timezone.utc)
               for job in jobs if (job.path / "config.yaml").is_file()
               and population_size(job) in set(predictions["predicted_sizes"])]
    out = {"fitted_on_sizes": predictions["fitted_on_sizes"], "written_at": predictions.get("written_at"),
           # every predicted size's run began after the prediction was written (config.yaml is its first file)
           "written_before_the_runs": None if written is None or not started else bool(written <= min(started)),
           "milestones": {}}
    for key, entry in predictions["milestones"].items():
        rows = {}
        for n, predicted in entry["predicted"].items():
            measured = fits[key]["per_population_size"].get(n, {})
            row = {"predicted": predicted["step"], "predicted_95": predicted.get("step_95"),
                   "measured_mean": measured.get("mean"), "measured_seeds": measured.get("n_seeds", 0)}
            if row["measured_mean"] is not None:
                row["measured_over_predicted"] = row["measured_mean"] / row["predicted"]
                lo_hi = row["predicted_95"]
                row["inside_95"] = None if not lo_hi else bool(min(lo_hi) <= row["measured_mean"] <= max(lo_hi))
            rows[n] = row
        out["milestones"][key] = rows
    return out


def load_jobs(sweep_dir: Path) -> list[Job]:
    jobs = collect_sweep(sweep_dir)
    if not jobs:
        raise ConfigError(f"{sweep_dir} holds no job directories")
    for job in jobs:
        job.phases = job_phases(job)
    return jobs


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


def _draw_fit(ax, fit: dict | None, color: str, style: str, label: str) -> None:
    if fit:
        grid = np.geomspace(min(fit["sizes"]) / 1.15, max(fit["sizes"]) * 1.15, 40)
        interval = (fit.get("bootstrap") or {}).get("exponent_95")
        shown = f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
        ax.plot(grid, fit["prefactor"] * grid ** fit["exponent"], style, color=color,
                label=f"{label}: {fit['prefactor']:.3g} N^{fit['exponent']:.2f}{shown}")


def _draw_points(ax, jobs: list[Job], fits: dict, key: str, color: str) -> None:
    points = milestone_points(jobs, key)
    if key == LENGTH_KEY:
        points = [p for p in points if p[2] > 0]
    if points:
        ax.scatter([p[0] for p in points], [p[2] for p in points], color=color, alpha=0.35, s=18)
        table = fits[key]["per_population_size"]
        means = [(int(n), row["mean"]) for n, row in table.items() if "mean" in row]
        ax.plot(*zip(*means), "o", color=color, markersize=7)


def _log_axes(ax, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("population size N (people)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)


def plot_scaling(jobs: list[Job], fits: dict, path: Path) -> Path:
    """Three log-log panels against N: milestones, plateau length, biographies per person at the plateau end."""
    fit_from = fits["fit_from"]
    sizes = sorted({population_size(j) for j in jobs})
    fig, (ax_steps, ax_length, ax_bios) = plt.subplots(1, 3, figsize=(17, 5.2))
    for (key, label), color in zip(MILESTONES, ("tab:red", "tab:green")):
        _draw_points(ax_steps, jobs, fits, key, color)
        _draw_fit(ax_steps, fits[key]["fit"], color, "-", f"{label}, all N")
        _draw_fit(ax_steps, fits[key][f"fit_from_{fit_from}"], color, "--", f"N >= {fit_from}")
    a, b = PAPER_FIT
    lo, hi = max(PAPER_RANGE[0], min(sizes) / 1.15), min(PAPER_RANGE[1], max(sizes) * 1.15)
    if lo < hi:  # the paper's law only where the paper measured it
        grid = np.geomspace(lo, hi, 20)
        ax_steps.plot(grid, a * grid ** b, ":", color="grey", linewidth=2,
                      label=f"paper plateau end {a} N^{b} (8L d512, batch 128; fitted on N 4k-256k)")
    _log_axes(ax_steps, "training step", "milestones against N (dots: seeds; large: mean; "
                                          "[ ]: 95% bootstrap over seeds)")
    _draw_points(ax_length, jobs, fits, LENGTH_KEY, "tab:orange")
    _draw_fit(ax_length, fits[LENGTH_KEY]["fit"], "tab:orange", "-", "plateau length, all N")
    _draw_fit(ax_length, fits[LENGTH_KEY][f"fit_from_{fit_from}"], "tab:orange", "--", f"N >= {fit_from}")
    no_plateau = fits["jobs"]["no_plateau"]
    if not [p for p in milestone_points(jobs, LENGTH_KEY) if p[2] > 0]:  # say so rather than leave it blank
        ax_length.text(0.5, 0.5, "no run with a plateau", transform=ax_length.transAxes, ha="center")
    _log_axes(ax_length, "plateau length (steps: plateau end - fall end)",
              f"plateau length ({no_plateau} finished run(s) without a plateau left out)")
    table = fits["plateau_end_interpolated"]["per_population_size"]
    bios = [(int(n), row["biographies_per_person"]) for n, row in table.items() if "mean" in row]
    if bios:
        ax_bios.plot(*zip(*bios), "o-", color="tab:red", label="this sweep (mean over seeds)")
    ax_bios.plot(list(PAPER_BIOGRAPHIES), list(PAPER_BIOGRAPHIES.values()), "s:", color="grey",
                 label="paper (N 4k and 256k)")
    _log_axes(ax_bios, "biographies per person at the plateau end", "step x batch / N at the plateau end")
    return save_figure(fig, path)


def analyse_population_sweep(sweep_dir: str | Path, fit_from: int = FIT_FROM) -> dict:
    """Table, figures and fits of a population-size sweep; returns the fits (also in scaling_fit.json)."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    write_table(jobs, sweep_dir / "table.csv")
    rows = next((j.metrics() for j in jobs if j.metrics()), [])
    baseline = float(rows[0]["val/baseline"]) if rows else math.nan
    fits = scaling_fit(jobs, run_settings(jobs[0]), fit_from)
    fits["prediction_check"] = prediction_check(sweep_dir, jobs, fits)
    write_json(sweep_dir / "scaling_fit.json", fits)
    plot_population_curves(jobs, baseline, sweep_dir / "population_curves.png")
    plot_scaling(jobs, fits, sweep_dir / "plateau_scaling.png")
    return fits


def _print_fits(sweep_dir: Path, fits: dict) -> None:
    jobs = fits["jobs"]
    print(f"{jobs['total']} jobs, {jobs['finished']} finished ({jobs['with_plateau']} with a plateau, "
          f"{jobs['no_plateau']} without: left out of the plateau fits)")
    for key in [k for k, _ in MILESTONES] + [LENGTH_KEY]:
        for size, row in fits[key]["per_population_size"].items():
            if "mean" in row:
                print(f"  {key:>24} N={size:>6}: {row['mean']:8.1f} steps (sd {row['std']:.1f}, {row['n_seeds']} of "
                      f"{row['n_runs']} runs), {row['biographies_per_person']:.1f} biographies per person, "
                      f"lr {row['lr_fraction_at_mean']:.0%} of peak")
        for name in ("fit", f"fit_from_{fits['fit_from']}"):
            fit = fits[key][name]
            if fit:
                interval = (fit["bootstrap"] or {}).get("exponent_95")
                shown = f", 95% [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
                print(f"  {key} ({name}, N {fit['sizes'][0]}-{fit['sizes'][-1]}): "
                      f"{fit['prefactor']:.3g} * N^{fit['exponent']:.3f}{shown}, R^2 {fit['r2']:.3f}")
        local = ", ".join(f"{r['from']}->{r['to']}: {r['exponent']:.2f}" for r in fits[key]["local_exponents"])
        if local:
            print(f"  {key} local exponents: {local}")
    for key, rows in ((fits.get("prediction_check") or {}).get("milestones") or {}).items():
        for n, row in rows.items():
            got = "not measured yet" if row["measured_mean"] is None else \
                f"measured {row['measured_mean']:.0f} ({row['measured_over_predicted']:.2f}x)"
            print(f"  prediction {key} N={n}: {row['predicted']:.0f}, {got}")
    print(f"-> {sweep_dir / 'table.csv'}, scaling_fit.json, population_curves.png, plateau_scaling.png")


def main(argv: list[str] | None = None) -> int:
    from biolab.analysis import run_cli

    parser = argparse.ArgumentParser(prog="python -m biolab.analysis population", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a population sweep directory, e.g. multiruns/population_cpu")
    parser.add_argument("--fit-from", type=int, default=FIT_FROM, help="the second fit uses N >= this (default 2048)")
    parser.add_argument("--predict", type=lambda text: [int(n) for n in text.split(",")], metavar="N1,N2",
                        help="write predictions.json for these sizes from the sizes measured so far, then stop")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    def action() -> None:
        if args.predict:
            result = predict(args.sweep_dir, args.predict, args.fit_from)
            for key, entry in result["milestones"].items():
                shown = ", ".join(f"N={n}: {row['step']:.0f}" for n, row in entry["predicted"].items())
                print(f"predicted {key} ({entry['fit']['prefactor']:.3g} N^{entry['fit']['exponent']:.3f} on "
                      f"N {entry['fit']['sizes']}): {shown}")
            print(f"-> {args.sweep_dir / 'predictions.json'} (commit it before the larger sizes run)")
        else:
            _print_fits(args.sweep_dir, analyse_population_sweep(args.sweep_dir, args.fit_from))
    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
