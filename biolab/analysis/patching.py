"""Figure of an attention-patching study (SPEC section 7): loss curves per reference step, heat map.

Reads a study directory written by sweeps/patching_cpu.sh (or patching_paper.sh): one sub-directory per run, each with
config.yaml, metrics.csv and (once finished) summary.json. A run whose config has
``callbacks.patching`` is a patched run, keyed by (reference step, start step): the reference step
comes from the weights file name (``step_<k>.safetensors``); the other runs are unpatched. Writes

- ``<study>/patching.png``: left, attribute loss (``val/attr_loss``, log scale) against steps of the
  start-0 runs, one line per reference step, with the unpatched run dashed and the no-knowledge
  baseline; middle, the same for the freeze runs (start = reference step); right, heat map of the
  final attribute loss, rows = reference step, columns = start step;
- ``<study>/patching.json``: the table behind the heat map (with each run's completion status; a
  run ended early by ``callbacks.phases.stop_after`` has no final loss and stays off the heat map), and
  per run the phase milestones of its summary (fall end, baseline crossing, 50%-accuracy step) with,
  for the runs patched from step 0, how many times earlier than the unpatched run each is reached.

    python -m biolab.analysis.patching multiruns/patching_cpu
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from matplotlib.colors import LogNorm
from omegaconf import OmegaConf

from biolab.io import write_json
from biolab.plots import plt, save_figure
from biolab.runs import load_run

LOSS = "val/attr_loss"
MILESTONES = ("fall_end_step", "plateau_end_interpolated", "acc_50pct_step")  # keys of summary.json
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "-.", ":")  # "--" is the unpatched run


def load_runs(study: str | Path) -> list[dict]:
    """One dict per run directory: path, reference_step / start_step (None if unpatched), curve, final loss."""
    runs = []
    for config_path in sorted(Path(study).glob("*/config.yaml")):
        run_dir = config_path.parent
        if not (run_dir / "metrics.csv").exists():
            continue
        run = load_run(run_dir)
        cfg = OmegaConf.to_container(run.cfg)
        patching = (cfg.get("callbacks") or {}).get("patching")
        ref_step = start = None
        if patching:
            match = re.search(r"step_(\d+)\.safetensors$", str(patching["reference"]))
            if match is None:
                continue  # a reference that is not a trajectory file: no reference step to place it at
            ref_step, start = int(match.group(1)), int(patching["start_step"])
        rows = [r for r in run.metrics() if LOSS in r]
        summary = run.summary()  # summary.json, or the milestones from metrics.csv for a run stopped by hand
        stopped = summary.get("stopped_after")  # ended early at a milestone: its last loss is no final loss
        runs.append({
            "run_dir": str(run_dir), "reference_step": ref_step, "start_step": start,
            "steps": [int(r["step"]) for r in rows], "loss": [r[LOSS] for r in rows],
            "baseline": rows[-1].get("val/baseline") if rows else None,
            "final_loss": rows[-1][LOSS] if rows and not stopped else None,
            "final_step": int(rows[-1]["step"]) if rows else None,
            "completed": bool(summary.get("completed")),
            "stopped_after": stopped,
            "final_acc": summary.get("attr_acc"),
            **{key: summary.get(key) for key in MILESTONES},
        })
    return runs


def earlier_than_unpatched(runs: list[dict]) -> list[dict]:
    """For each run patched from step 0: unpatched milestone step / patched milestone step (2.0 = reached
    twice as early; None where either run never reached it)."""
    unpatched = next((r for r in runs if r["reference_step"] is None), None)
    if unpatched is None:
        return []
    rows = []
    for run in sorted((r for r in runs if r["start_step"] == 0), key=lambda r: r["reference_step"]):
        row = {key: run[key] for key in ("reference_step", "final_loss", "final_step", "stopped_after")}
        for key in MILESTONES:
            mine, theirs = run[key], unpatched[key]
            row[key] = mine
            row[f"{key}_unpatched_over_patched"] = theirs / mine if mine and theirs else None
        rows.append(row)
    return rows


def heat_table(runs: list[dict]) -> tuple[list[int], list[int], list[list[float]]]:
    """(reference steps, start steps, final loss[reference][start]) over the patched runs; NaN where missing."""
    patched = [r for r in runs if r["reference_step"] is not None and r["final_loss"] is not None]
    refs = sorted({r["reference_step"] for r in patched})
    starts = sorted({r["start_step"] for r in patched})
    table = [[math.nan] * len(starts) for _ in refs]
    for r in patched:
        table[refs.index(r["reference_step"])][starts.index(r["start_step"])] = r["final_loss"]
    return refs, starts, table


def _plot_curves(ax, runs: list[dict], selected: list[dict], label, title: str) -> None:
    """Attribute loss against steps of `selected` (coloured by reference step), the unpatched run dashed."""
    colors = plt.cm.viridis([i / max(1, len(selected) - 1) * 0.9 for i in range(len(selected))])
    for i, (run, color) in enumerate(zip(selected, colors)):
        # a marker (every point of a short run; filled and hollow in turn) and a line style per run, so
        # curves that lie on each other stay apart
        ax.plot(run["steps"], run["loss"], LINESTYLES[i % len(LINESTYLES)], color=color,
                marker=MARKERS[i % len(MARKERS)], markersize=5 if i % 2 else 3.5,
                markevery=None if len(run["steps"]) <= 30 else 0.08, markerfacecolor="none" if i % 2 else color, label=label(run))
    for run in (r for r in runs if r["reference_step"] is None):
        ax.plot(run["steps"], run["loss"], "k--", linewidth=1.5, label="unpatched")
    baseline = next((r["baseline"] for r in runs if r["baseline"] is not None), None)
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle=":", label=f"no-knowledge baseline {baseline:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("attribute loss (nats per value)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def plot_patching(runs: list[dict], path: str | Path, title: str = "") -> Path:
    """Up to three panels: runs patched from step 0 by reference step (Figure 3-middle), freeze runs
    (start = reference step; Figure D freeze curves), heat map of the final loss (Figure D-right). A study
    without freeze runs, or without a patched run that has a final loss (all stopped early), gets no
    such panel rather than an empty one."""
    by_reference = lambda r: r["reference_step"]  # noqa: E731
    start0 = sorted((r for r in runs if r["start_step"] == 0), key=by_reference)
    frozen = sorted((r for r in runs if r["start_step"] is not None and r["start_step"] > 0
                     and r["start_step"] == r["reference_step"]), key=by_reference)
    refs, starts, table = heat_table(runs)
    widths = [1.15] + [1.15] * bool(frozen) + [1] * bool(refs)
    fig, axes = plt.subplots(1, len(widths), figsize=(6.3 * len(widths), 5), gridspec_kw={"width_ratios": widths},
                             squeeze=False)
    panels = iter(axes[0])
    _plot_curves(next(panels), runs, start0, lambda r: f"reference step {r['reference_step']}",
                 "patched from step 0, by reference step")
    if frozen:
        _plot_curves(next(panels), runs, frozen, lambda r: f"frozen at step {r['start_step']}",
                     "attention frozen at step t (start = reference = t)")
    if refs:
        ax_heat = next(panels)
        rows = list(reversed(range(len(refs))))  # latest reference on top, as in the paper's figure
        values = [table[i] for i in rows]
        finite = [v for row in values for v in row if not math.isnan(v) and v > 0]
        norm = LogNorm(vmin=min(finite), vmax=max(finite)) if finite else None
        image = ax_heat.imshow(values, cmap="magma_r", norm=norm, aspect="auto")
        for y, row in enumerate(values):
            for x, v in enumerate(row):
                if not math.isnan(v):
                    ax_heat.text(x, y, f"{v:.3g}", ha="center", va="center", fontsize=8,
                                 color="white" if norm and norm(v) > 0.6 else "black")
        ax_heat.set_xticks(range(len(starts)), [str(s) for s in starts])
        ax_heat.set_yticks(range(len(rows)), [str(refs[i]) for i in rows])
        fig.colorbar(image, ax=ax_heat, label="final attribute loss")
        ax_heat.set_xlabel("start of patching (step)")
        ax_heat.set_ylabel("reference step")
        ax_heat.set_title("final attribute loss")
    fig.suptitle(title or "attention patching")
    return save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="study directory (one sub-directory per run)")
    args = parser.parse_args(argv)
    study = Path(args.study)
    runs = load_runs(study)
    if not runs:
        raise SystemExit(f"error: no run with config.yaml and metrics.csv under {study}")
    refs, starts, table = heat_table(runs)
    write_json(study / "patching.json", {
        "reference_steps": refs, "start_steps": starts,
        "final_attr_loss": [[None if math.isnan(v) else v for v in row] for row in table],  # [reference][start]
        "runs": [{k: v for k, v in r.items() if k not in ("steps", "loss")} for r in runs],
        "start0_vs_unpatched": (comparison := earlier_than_unpatched(runs))})
    figure = plot_patching(runs, study / "patching.png", title=f"attention patching: {study}")
    unfinished = sum(not r["completed"] for r in runs)
    if comparison:
        print("patched from step 0: final loss, baseline crossing and 50%-accuracy step (x times earlier than unpatched)")
    for row in comparison:
        cross, half = row["plateau_end_interpolated"], row["acc_50pct_step"]
        loss = (f"loss {row['final_loss']:.3g}" if row["final_loss"] is not None
                else f"stopped at step {row['final_step']} ({row['stopped_after']})")
        print(f"  reference {row['reference_step']:>6}: {loss}, "
              f"crossing {_fmt(cross)} ({_fmt(row['plateau_end_interpolated_unpatched_over_patched'], 'x')}), "
              + (f"50% {_fmt(half)} ({_fmt(row['acc_50pct_step_unpatched_over_patched'], 'x')})"
                 if half is not None or row["stopped_after"] is None else "50% not reached before the stop"))
    print(f"{len(runs)} runs ({unfinished} unfinished: last evaluated step used) -> {figure}, {study / 'patching.json'}")


def _fmt(value, unit: str = "") -> str:
    # ratios with three decimals: 2.997 must not print as "3x" next to a 3x criterion
    return "never" if value is None else f"{value:.3f}{unit}" if unit else f"{value:.0f}"


if __name__ == "__main__":
    main()
