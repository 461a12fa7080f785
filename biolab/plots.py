"""Figures of one run: learning curves (attribute loss and accuracy) and attention metrics.

Called by ``train(cfg)`` at the end of a run (writes ``<run_dir>/learning_curves.png`` and, when the
attention callback ran, ``<run_dir>/attention.png``); also usable on a finished run directory:
``python -m biolab.plots RUN_DIR``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from biolab.history import history_column  # noqa: E402
from biolab.io import atomic_path, read_csv  # noqa: E402

EVAL_SET_STYLES = (("val", "seen people, evaluation templates", "-o"),
                   ("train_templates", "seen people, training templates", "--"),
                   ("unseen", "unseen people", ":"))


def plot_learning_curves(history: list[dict], baseline: float | None, path: str | Path, fall_end: int | None = None,
                         plateau_end: int | None = None, acc_half: int | None = None, title: str = "",
                         eval_sets=EVAL_SET_STYLES, xlabel: str = "training step") -> Path:
    """Two panels against training steps: attribute loss (log y) and attribute accuracy, one line per
    evaluation set in `eval_sets` ((prefix, label, style) triples; fine-tuning runs pass their own).

    With `fall_end` and `plateau_end` the plateau is shaded between them (phase milestones as in
    biolab.phases), so the three phases can be read off the figure.
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in ((ax_loss, "attr_loss"), (ax_acc, "attr_acc")):
        for eval_set, label, style in eval_sets:
            steps, values = history_column(history, f"{eval_set}/{metric}")
            if steps:
                ax.plot(steps, values, style, markersize=3, label=label)
        ax.set_xlabel(xlabel)
    if baseline is not None:
        ax_loss.axhline(baseline, color="k", linestyle="--", linewidth=1,
                        label=f"no-knowledge baseline {baseline:.2f}")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("attribute loss (nats per value)")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_ylabel("attribute accuracy")
    for ax in (ax_loss, ax_acc):
        mark_phases(ax, fall_end, plateau_end, acc_half)
    fig.suptitle(title or "fall to the marginals, plateau, knowledge acquisition")
    return save_figure(fig, path)


def mark_phases(ax, fall_end: int | None, plateau_end: int | None, acc_half: int | None = None) -> None:
    """Shade the plateau (fall end to plateau end), mark plateau end and 50% accuracy; grid and legend."""
    if fall_end is not None and plateau_end is not None:
        ax.axvspan(fall_end, plateau_end, color="tab:orange", alpha=0.12, label="plateau")
    if plateau_end is not None:
        ax.axvline(plateau_end, color="tab:red", alpha=0.6, linewidth=1, label=f"plateau end ({plateau_end})")
    if acc_half is not None:
        ax.axvline(acc_half, color="tab:green", alpha=0.6, linewidth=1, label=f"50% accuracy ({acc_half})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Lay out, write (atomically: a kill leaves no truncated image) and close a figure; returns the path."""
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


ATTENTION_PANELS = (("name_to_name", "name -> name (last name token)"),
                    ("attr_to_name", "attribute -> name (predicting a value)"),
                    ("attr_to_text", "attribute -> template text"),
                    ("entropy", "normalised attention entropy"))


def attention_layers(history: list[dict]) -> list[int]:
    """Layer numbers (1-based) that have attention metrics in the history."""
    found = {int(m.group(1)) for row in history for key in row if (m := re.fullmatch(r"attn/L(\d+)/\w+", key))}
    return sorted(found)


def plot_attention(history: list[dict], path: str | Path, fall_end: int | None = None,
                   plateau_end: int | None = None, acc_half: int | None = None, title: str = "") -> Path:
    """Four panels (SPEC section 7; paper Figure 3-right and Figure F): each attention metric against
    steps, one line per layer (the last layer drawn thick), the plateau shaded."""
    layers = attention_layers(history)
    fig, axes = plt.subplots(1, len(ATTENTION_PANELS), figsize=(18, 4.2))
    colors = plt.cm.viridis([i / max(1, len(layers) - 1) for i in range(len(layers))])
    for ax, (metric, label) in zip(axes, ATTENTION_PANELS):
        for layer, color in zip(layers, colors):
            steps, values = history_column(history, f"attn/L{layer}/{metric}")
            ax.plot(steps, values, "-", color=color, linewidth=2.5 if layer == layers[-1] else 1.2,
                    label=f"layer {layer}")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylim(0, 1)
        mark_phases(ax, fall_end, plateau_end, acc_half)
    axes[0].set_ylabel("attention share (mean over heads and queries)")
    fig.suptitle(title or "attention metrics")
    return save_figure(fig, path)


def overshadowing_groups(history: list[dict]) -> list[tuple[str, float]]:
    """(kind, P) of the look-alike groups measured in the history (overshadow/<kind>/P<p>/...)."""
    found = {(m.group(1), float(m.group(2))) for row in history for key in row
             if (m := re.fullmatch(r"overshadow/(\w+)/P([\d.]+)/ao", key))}
    return sorted(found, key=lambda g: (g[0] != "pair", g[0], g[1]))


def plot_overshadowing(history: list[dict], path: str | Path, fall_end: int | None = None,
                       plateau_end: int | None = None, acc_half: int | None = None, title: str = "") -> Path:
    """Knowledge overshadowing against steps (SPEC section 9.1): RO per popularity ratio P, AO beside the
    prior control, and the dominant people's accuracy R_dom; controls dashed; the plateau shaded."""
    groups = overshadowing_groups(history)
    levels = sorted({p for kind, p in groups if kind == "pair"})
    colors = dict(zip(levels, plt.cm.plasma([i / max(1, len(levels) - 1) * 0.85 for i in range(len(levels))])))
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.6))
    panels = (("ro", "RO = AO / R_dom (where R_dom >= 0.05)"), ("ao", "AO: rare prompt answered with the dominant value"),
              ("r_dom", "R_dom: accuracy on the dominant person"))
    for ax, (metric, label) in zip(axes, panels):
        for kind, level in groups:
            steps, values = history_column(history, f"overshadow/{kind}/P{level:g}/{metric}")
            style = "-" if kind == "pair" else "--"
            ax.plot(steps, values, style, color=colors.get(level, "grey"), linewidth=1.6 if kind == "pair" else 1.0,
                    label=f"P={level:g}" if kind == "pair" else f"{kind.replace('_', ' ')} only, P={level:g}")
        if metric == "ao":
            steps, values = history_column(history, "overshadow/prior")
            ax.plot(steps, values, ":", color="k", label="prior control (ordinary people)")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylim(-0.02, 1.02 if metric != "ro" else None)
        mark_phases(ax, fall_end, plateau_end, acc_half)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(title or "knowledge overshadowing")
    return save_figure(fig, path)


if __name__ == "__main__":
    run_dir = Path(sys.argv[1])
    rows = read_csv(run_dir / "metrics.csv")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    phases = dict(fall_end=summary.get("fall_end_step"), plateau_end=summary.get("plateau_end_step"),
                  acc_half=summary.get("acc_50pct_step"))
    print(plot_learning_curves(rows, rows[0]["val/baseline"], run_dir / "learning_curves.png", **phases))
    if attention_layers(rows):
        print(plot_attention(rows, run_dir / "attention.png", **phases))
