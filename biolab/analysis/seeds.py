"""Settings compared over seeds: the mean, a 95% interval, and the paired difference to a reference setting.

A conclusion that one setting beats another needs the seed-to-seed spread beside the difference (issue:
"nothing overstated"). This reads a study directory of Hydra multiruns whose jobs differ by their
overrides (and by ``seed``): jobs that differ only by ``seed`` are one setting. A study directory is a
sweep (job directories inside) or a directory of sweeps (each sub-directory a sweep; the sub-directory's
name becomes part of the setting, as in sweeps/curricula_seeds_cpu.sh). For every setting and metric (the
value at the job's last evaluation in metrics.csv; unfinished jobs are listed and left out):

- n seeds, the mean, the standard deviation and a 95% Student-t interval of the mean;
- against the reference setting (--reference, a setting label; default none): the difference paired by
  seed (seeds present in both), its mean and 95% t-interval: the interval excludes 0 or it does not.

Writes STUDY_DIR/seeds.csv (one row per setting and metric), seeds.json and seeds.png (one panel per
metric: every seed as a dot, the mean and its interval as a bar).

    python -m biolab.analysis seeds multiruns/finetune_seeds_cpu --metric new/attr_acc --metric val/attr_acc \\
        --reference "data.n_new_people=384 data.replay_weight=0"
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from biolab.analysis import run_cli
from biolab.analysis.collect import Job, collect_sweep
from biolab.io import write_csv, write_json
from biolab.plots import plt, save_figure

DEFAULT_METRICS = ("test/attr_loss", "test/attr_acc")


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with df degrees of freedom, by integrating its density."""
    if df < 1:
        raise ValueError(f"t_quantile needs df >= 1, got {df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    x = np.linspace(0.0, 200.0, 2_000_001)                                    # [grid]
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
    cdf = 0.5 + np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(x))])
    return float(np.interp(p, cdf, x))


def mean_interval(values: list[float], level: float = 0.95) -> dict:
    """n, mean, sd and the Student-t interval of the mean (None with one value)."""
    x = np.asarray(values, dtype=float)
    out = {"n": len(x), "mean": float(x.mean()), "sd": float(x.std(ddof=1)) if len(x) > 1 else None}
    if len(x) > 1:
        half = t_quantile(0.5 + level / 2, len(x) - 1) * out["sd"] / math.sqrt(len(x))
        out["ci"] = [out["mean"] - half, out["mean"] + half]
    else:
        out["ci"] = None
    return out


def study_jobs(study_dir: Path) -> list[tuple[str, Job]]:
    """(prefix, job) of the study: the sweep's own jobs (prefix ""), or every sub-sweep's (prefix its name)."""
    try:
        return [("", job) for job in collect_sweep(study_dir)]
    except FileNotFoundError:
        pass
    out = []
    for sub in sorted(p for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            out += [(sub.name, job) for job in collect_sweep(sub)]
        except FileNotFoundError:
            continue
    if not out:
        raise FileNotFoundError(f"no job directories in {study_dir} or its sub-directories (run the sweep first)")
    return out


def setting_label(prefix: str, job: Job) -> str:
    """The job's overrides except seed, as "key=value key=value" (with its sweep's name in front)."""
    keys = " ".join(f"{k}={v}" for k, v in sorted(job.overrides.items()) if k != "seed")
    return " ".join(part for part in (prefix, keys) if part) or "(no overrides)"


def resolve_reference(reference: str, labels) -> str:
    """The setting label `reference` names: itself, or the only label that starts with it ("uniform")."""
    if reference in labels:
        return reference
    matches = [label for label in labels if label.startswith(reference)]
    if len(matches) != 1:
        raise ValueError(f"--reference {reference!r} names {len(matches)} settings; settings: {sorted(labels)}")
    return matches[0]


def final_value(job: Job, metric: str) -> float | None:
    rows = [r for r in job.metrics() if metric in r]
    return float(rows[-1][metric]) if rows else None


def compare_seeds(study_dir: str | Path, metrics=DEFAULT_METRICS, reference: str | None = None) -> dict:
    """Per setting and metric: the values by seed, their mean and interval, and the paired difference."""
    study_dir = Path(study_dir)
    values: dict[str, dict[str, dict[int, float]]] = {}
    unfinished = []
    for prefix, job in study_jobs(study_dir):
        label = setting_label(prefix, job)
        if not job.finished:
            unfinished.append(str(job.path))
            continue
        seed = int(job.overrides.get("seed", job.summary.get("seed", 0)))
        for metric in metrics:
            value = final_value(job, metric)
            if value is not None:
                values.setdefault(label, {}).setdefault(metric, {})[seed] = value
    if not values:
        raise FileNotFoundError(f"no finished job of {study_dir} has any of the metrics {list(metrics)}")
    if reference is not None:
        reference = resolve_reference(reference, values)
    settings = {}
    for label, by_metric in values.items():
        settings[label] = {}
        for metric, by_seed in by_metric.items():
            entry = {"seeds": by_seed, **mean_interval(list(by_seed.values()))}
            ref = (values.get(reference) or {}).get(metric, {}) if reference else {}
            paired = sorted(set(by_seed) & set(ref))
            if reference and label != reference and paired:
                entry["minus_reference"] = mean_interval([by_seed[s] - ref[s] for s in paired])
            settings[label][metric] = entry
    return {"study_dir": str(study_dir), "metrics": list(metrics), "reference": reference,
            "settings": settings, "unfinished": unfinished,
            "interval": "95% Student-t interval of the mean over seeds; minus_reference paired by seed"}


def table_rows(result: dict) -> list[dict]:
    rows = []
    for label, by_metric in result["settings"].items():
        for metric, e in by_metric.items():
            diff = e.get("minus_reference") or {}
            rows.append({"setting": label, "metric": metric, "n_seeds": e["n"], "mean": e["mean"], "sd": e["sd"],
                         "ci_low": (e["ci"] or [None])[0], "ci_high": (e["ci"] or [None, None])[1],
                         "seeds": " ".join(f"{s}:{v:.4g}" for s, v in sorted(e["seeds"].items())),
                         "minus_reference_mean": diff.get("mean"),
                         "minus_reference_ci_low": (diff.get("ci") or [None])[0],
                         "minus_reference_ci_high": (diff.get("ci") or [None, None])[1]})
    return rows


def plot_seeds(result: dict, path: Path) -> Path:
    metrics = result["metrics"]
    labels = list(result["settings"])
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6, 1.2 * len(labels) + 2), 3.2 * len(metrics)),
                             squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        for i, label in enumerate(labels):
            e = result["settings"][label].get(metric)
            if e is None:
                continue
            ax.plot([i] * e["n"], list(e["seeds"].values()), "o", color="grey", alpha=0.6, markersize=4)
            if e["ci"]:
                ax.errorbar(i, e["mean"], yerr=[[e["mean"] - e["ci"][0]], [e["ci"][1] - e["mean"]]], fmt="s",
                            color="tab:blue" if label != result["reference"] else "black", capsize=5)
        ax.set_xticks(range(len(labels)), [lbl.replace(" ", "\n") for lbl in labels], fontsize=7)
        ax.set_ylabel(metric)
    axes[0, 0].set_title("every seed (dots), mean and 95% t-interval (bars); reference in black", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biolab.analysis seeds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--metric", action="append", help=f"metrics.csv column (repeat; default {DEFAULT_METRICS})")
    parser.add_argument("--reference", help="the setting the others are compared with, paired by seed (its label, "
                        "or the start of exactly one label)")
    args = parser.parse_args(argv)

    def action():
        result = compare_seeds(args.study_dir, tuple(args.metric or DEFAULT_METRICS), args.reference)
        write_csv(args.study_dir / "seeds.csv", table_rows(result))
        write_json(args.study_dir / "seeds.json", result)
        plot_seeds(result, args.study_dir / "seeds.png")
        for row in table_rows(result):
            ci = "" if row["ci_low"] is None else f" [{row['ci_low']:.4g}, {row['ci_high']:.4g}]"
            diff = "" if row["minus_reference_mean"] is None else (
                f"; minus reference {row['minus_reference_mean']:+.4g}"
                + ("" if row["minus_reference_ci_low"] is None else
                   f" [{row['minus_reference_ci_low']:+.4g}, {row['minus_reference_ci_high']:+.4g}]"))
            print(f"{row['setting']:<50} {row['metric']:<18} n={row['n_seeds']} mean {row['mean']:.4g}{ci}{diff}")
        if result["unfinished"]:
            print(f"note: {len(result['unfinished'])} unfinished job(s) left out")
        print(f"-> {args.study_dir / 'seeds.csv'}, seeds.json, seeds.png")

    return run_cli(action)


if __name__ == "__main__":
    raise SystemExit(main())
