"""Fine-tuning figures and table (SPEC section 8; paper Figure 5-middle/right): old people against new people.

Reads each fine-tuning run's config.yaml (data.n_new_people = M, data.replay_weight = w) and
metrics.csv, from run directories or sweep directories (biolab.analysis.collect.collect_sweep),
and writes into the output directory:

    finetune_trajectories.png  pre-training loss (old people, val/attr_loss) against fine-tuning loss
                               (new people, new/attr_loss), one trajectory per M (left, at one w,
                               no replay if present) and one per w (right, at one M); log-log axes,
                               a circle at step 0, a square at the end
    finetune_curves.png        old / new attribute loss and accuracy against fine-tuning steps, same
                               two columns (by M, by w)
    finetune_table.csv         one row per run: M, w, replay share, old loss at step 0 / 100 / end,
                               new loss and accuracy, unseen loss, largest change of any attention metric

    python -m biolab.analysis.finetune multiruns/finetune_cpu            # a sweep directory
    python -m biolab.analysis.finetune RUN_DIR [RUN_DIR ...] --out DIR    # run directories
    analyse_finetune(["multiruns/finetune_cpu"])  -> list of written paths

``plot_finetune_run(run_dir)`` draws one run's ``finetune.png`` (train(cfg) calls it at the end of
every fine-tuning run).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from biolab.analysis import run_cli  # noqa: E402
from biolab.analysis.collect import collect_sweep  # noqa: E402
from biolab.history import history_column  # noqa: E402
from biolab.io import read_csv, write_csv  # noqa: E402
from biolab.plots import plot_learning_curves, save_figure  # noqa: E402
from biolab.runs import load_run  # noqa: E402

OLD, NEW = "val", "new"  # evaluation-set prefixes: old people (pre-training), new people (fine-tuning)


@dataclass
class FinetuneRun:
    path: Path
    n_old: int
    n_new: int
    weight: float
    rows: list[dict]

    @property
    def replay_fraction(self) -> float:
        """Share of the training biographies that replay old people."""
        total = self.weight * self.n_old + self.n_new
        return self.weight * self.n_old / total if total else 0.0

    @property
    def label(self) -> str:
        return f"M={self.n_new}, w={self.weight:g}"


def read_run(run_dir: str | Path) -> FinetuneRun | None:
    """A fine-tuning run (config.yaml with data.n_new_people > 0 and a metrics.csv), else None."""
    run_dir = Path(run_dir)
    config, metrics = run_dir / "config.yaml", run_dir / "metrics.csv"
    if not (config.is_file() and metrics.is_file()):
        return None
    run = load_run(run_dir)
    data = OmegaConf.to_container(run.cfg, resolve=True).get("data") or {}
    if not data.get("n_new_people"):
        return None
    rows = run.metrics()
    if not rows:
        return None
    return FinetuneRun(run_dir, int(data["population_size"]), int(data["n_new_people"]),
                       float(data.get("replay_weight") or 0.0), rows)


def load_runs(paths: list[str | Path]) -> list[FinetuneRun]:
    """Fine-tuning runs from run directories (holding config.yaml) and sweep directories (of jobs)."""
    runs = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise FileNotFoundError(f"not a directory: {path}")
        dirs = [path] if (path / "config.yaml").is_file() else [job.path for job in collect_sweep(path)]
        runs += [run for run in map(read_run, dirs) if run is not None]
    if not runs:
        raise FileNotFoundError(f"no fine-tuning runs (config.yaml with data.n_new_people > 0 and metrics.csv) "
                                f"in {', '.join(map(str, paths))}")
    return sorted(runs, key=lambda r: (r.n_new, r.weight, str(r.path)))


def reference_values(runs: list[FinetuneRun], w_ref: float | None = None,
                     m_ref: int | None = None) -> tuple[float, int]:
    """(w at which M is varied: 0 if present, else the most common w; M at which w is varied: the M with
    the most distinct w, the middle one of those on ties, e.g. 384 of 96, 384, 1536)."""
    if w_ref is None:
        weights = Counter(r.weight for r in runs)
        w_ref = 0.0 if 0.0 in weights else weights.most_common(1)[0][0]
    if m_ref is None:
        per_m = {m: len({r.weight for r in runs if r.n_new == m}) for m in {r.n_new for r in runs}}
        most = sorted(m for m, count in per_m.items() if count == max(per_m.values()))
        m_ref = most[(len(most) - 1) // 2]
    return w_ref, m_ref


def _groups(runs, w_ref, m_ref):
    by_m = [r for r in runs if r.weight == w_ref]
    by_w = sorted((r for r in runs if r.n_new == m_ref), key=lambda r: r.weight)
    return ((by_m, lambda r: f"M = {r.n_new}", f"by number of new people M (w = {w_ref:g})"),
            (by_w, lambda r: f"w = {r.weight:g} ({100 * r.replay_fraction:.0f}% replay)",
             f"by replay weight w (M = {m_ref})"))


def _log_if_wide(ax, axis: str, ratio: float = 4.0) -> None:
    """Log scale when the drawn data span more than `ratio` (a narrow range reads better on a linear axis)."""
    values = [v for line in ax.get_lines() for v in (line.get_xdata() if axis == "x" else line.get_ydata())]
    values = [float(v) for v in values if v is not None and float(v) > 0]
    if values and max(values) / min(values) > ratio:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # one per run, so runs whose curves overlap stay apart


def _baseline(runs: list[FinetuneRun]) -> float | None:
    """The no-knowledge baseline logged by the runs (the same for old and new people: same pools)."""
    return next((r["val/baseline"] for run in runs for r in run.rows if r.get("val/baseline")), None)


def _colors(n: int):
    return plt.cm.viridis([i / max(1, n - 1) * 0.9 for i in range(n)])


def _paired(rows, x_key, y_key):
    pairs = [(r[x_key], r[y_key]) for r in rows if r.get(x_key) is not None and r.get(y_key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_trajectories(runs: list[FinetuneRun], path: str | Path, w_ref: float, m_ref: int) -> Path:
    """Paper Figure 5-middle/right: pre-training loss against fine-tuning loss, one trajectory per run."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, (group, label, title) in zip(axes, _groups(runs, w_ref, m_ref)):
        for i, (run, color) in enumerate(zip(group, _colors(len(group)))):
            x, y = _paired(run.rows, f"{NEW}/attr_loss", f"{OLD}/attr_loss")
            ax.plot(x, y, "-", color=color, marker=MARKERS[i % len(MARKERS)], markersize=3, label=label(run))
            if x:
                ax.plot(x[0], y[0], "o", color=color, markersize=8, markerfacecolor="none")
                ax.plot(x[-1], y[-1], "s", color=color, markersize=7)
        if not group:
            ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center")
        _log_if_wide(ax, "x")
        _log_if_wide(ax, "y")
        baseline = _baseline(runs)
        if baseline:  # both axes are attribute losses over the same pools: the same baseline on each
            ax.axhline(baseline, color="k", linestyle="--", linewidth=1, label=f"no-knowledge baseline {baseline:.2f}")
            ax.axvline(baseline, color="k", linestyle="--", linewidth=1)
        ax.set_xlabel("fine-tuning loss: new people, evaluation templates (nats per value)")
        ax.set_ylabel("pre-training loss: old people, evaluation templates")
        ax.set_title(title + "\n(circle: step 0, square: last step)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("fine-tuning: knowledge of the old people against learning the new ones")
    return save_figure(fig, path)


CURVE_ROWS = ((f"{OLD}/attr_loss", "old people: attribute loss", True),
              (f"{OLD}/attr_acc", "old people: attribute accuracy", False),
              (f"{NEW}/attr_loss", "new people: attribute loss", True),
              (f"{NEW}/attr_acc", "new people: attribute accuracy", False))


def plot_curves(runs: list[FinetuneRun], path: str | Path, w_ref: float, m_ref: int) -> Path:
    """Old / new loss and accuracy against fine-tuning steps; columns by M and by w."""
    fig, axes = plt.subplots(len(CURVE_ROWS), 2, figsize=(12, 3.2 * len(CURVE_ROWS)), sharex="col")
    for col, (group, label, title) in enumerate(_groups(runs, w_ref, m_ref)):
        for row, (key, ylabel, log) in enumerate(CURVE_ROWS):
            ax = axes[row, col]
            for i, (run, color) in enumerate(zip(group, _colors(len(group)))):
                steps, values = history_column(run.rows, key)
                ax.plot(steps, values, "-", marker=MARKERS[i % len(MARKERS)], color=color, markersize=3.5,
                        markevery=0.08, label=label(run))
            if not group:
                ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center")
            if log:
                _log_if_wide(ax, "y")
                baseline = _baseline(runs)
                if baseline:
                    ax.axhline(baseline, color="k", linestyle="--", linewidth=1,
                               label=f"no-knowledge baseline {baseline:.2f}")
            else:
                ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel(ylabel, fontsize=9)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(title, fontsize=10)
                ax.legend(fontsize=8)
        axes[-1, col].set_xlabel("fine-tuning step")
    fig.suptitle("fine-tuning: old and new people against steps")
    return save_figure(fig, path)


def _at_step(rows: list[dict], key: str, step: int) -> float | None:
    """Value at the last evaluation at or before `step`."""
    before = [r for r in rows if r["step"] <= step and r.get(key) is not None]
    return before[-1][key] if before else None


def _attention_change(rows: list[dict]) -> float | None:
    keys = sorted({k for r in rows for k in r if re.fullmatch(r"attn/L\d+/\w+", k)})
    changes = [abs(vals[-1] - vals[0]) for k in keys if len(vals := history_column(rows, k)[1]) > 1]
    return max(changes) if changes else None


def table_rows(runs: list[FinetuneRun]) -> list[dict]:
    out = []
    for run in runs:
        first, last = run.rows[0], run.rows[-1]
        out.append({
            "run": str(run.path), "n_old": run.n_old, "n_new_people": run.n_new, "replay_weight": run.weight,
            "replay_fraction": run.replay_fraction, "steps": int(last["step"]),
            "old_loss_start": first.get(f"{OLD}/attr_loss"), "old_loss_step100": _at_step(run.rows, f"{OLD}/attr_loss", 100),
            "old_loss_end": last.get(f"{OLD}/attr_loss"), "old_acc_start": first.get(f"{OLD}/attr_acc"),
            "old_acc_end": last.get(f"{OLD}/attr_acc"), "new_loss_start": first.get(f"{NEW}/attr_loss"),
            "new_loss_end": last.get(f"{NEW}/attr_loss"), "new_acc_end": last.get(f"{NEW}/attr_acc"),
            "unseen_loss_end": last.get("unseen/attr_loss"), "attention_max_change": _attention_change(run.rows),
        })
    return out


def analyse_finetune(paths: list[str | Path], out_dir: str | Path | None = None, w_ref: float | None = None,
                     m_ref: int | None = None) -> list[Path]:
    """Figures and table of the fine-tuning runs under `paths`; out_dir defaults to the single path given
    (a sweep directory), else to the runs' common parent directory. Returns the written paths."""
    runs = load_runs(paths)
    if out_dir is None:
        out_dir = Path(paths[0]) if len(paths) == 1 and not (Path(paths[0]) / "config.yaml").is_file() \
            else Path(*_common_parts([r.path.resolve() for r in runs]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    w_ref, m_ref = reference_values(runs, w_ref, m_ref)
    table = out_dir / "finetune_table.csv"
    write_csv(table, table_rows(runs))
    return [plot_trajectories(runs, out_dir / "finetune_trajectories.png", w_ref, m_ref),
            plot_curves(runs, out_dir / "finetune_curves.png", w_ref, m_ref), table]


def _common_parts(paths: list[Path]) -> tuple[str, ...]:
    parts = paths[0].parent.parts
    for path in paths[1:]:
        n = 0
        while n < min(len(parts), len(path.parent.parts)) and parts[n] == path.parent.parts[n]:
            n += 1
        parts = parts[:n]
    return parts


def plot_finetune_run(run_dir: str | Path) -> Path:
    """One run's <run_dir>/finetune.png: loss (log) and accuracy against steps for old, new and unseen people."""
    run_dir = Path(run_dir)
    rows = read_csv(run_dir / "metrics.csv")
    sets = ((OLD, "old people (pre-training)", "-o"), (NEW, "new people (fine-tuning)", "-s"),
            ("unseen", "unseen people", ":"))
    run = read_run(run_dir)
    return plot_learning_curves(rows, rows[0].get("val/baseline") if rows else None, run_dir / "finetune.png",
                                title=f"fine-tuning, {run.label}" if run else "fine-tuning",
                                eval_sets=sets, xlabel="fine-tuning step")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biolab.analysis.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="sweep directories or fine-tuning run directories")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: see above)")
    parser.add_argument("--w-ref", type=float, default=None, help="replay weight of the by-M column")
    parser.add_argument("--m-ref", type=int, default=None, help="number of new people of the by-w column")
    args = parser.parse_args(argv)
    return run_cli(lambda: print(*analyse_finetune(args.paths, args.out, args.w_ref, args.m_ref), sep="\n"))


if __name__ == "__main__":
    sys.exit(main())
