"""Hallucination figure of one run (SPEC section 8; paper Figure 5-left and Figure M): unseen against seen people.

The paper's finding: on people never trained on ("unseen"), the attribute loss rises above the
no-knowledge baseline exactly while knowledge about the seen people is acquired, and the
model's max-probability on their values rises with it (confident fabrication). From one run's
metrics.csv this draws four panels against training steps, each with the seen people
(``val/...``: evaluation templates) and the unseen people (``unseen/...``):

    attribute loss (log scale, the no-knowledge baseline dashed) | attribute accuracy |
    mean max-probability on value tokens | mean predictive entropy on value tokens (nats)

with the plateau shaded when summary.json has fall_end_step and plateau_end_step, into
``<run_dir>/hallucination.png``:

    python -m biolab.analysis.hallucination runs/quickstart
    plot_hallucination("runs/quickstart")  -> Path
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from biolab.analysis import run_cli  # noqa: E402
from biolab.history import history_column  # noqa: E402
from biolab.io import read_csv  # noqa: E402

PANELS = (("attr_loss", "attribute loss (nats per value)"),
          ("attr_acc", "attribute accuracy"),
          ("max_prob", "max-probability on value tokens"),
          ("entropy", "entropy on value tokens (nats)"))
SETS = (("val", "seen people (evaluation templates)", "-o", "tab:blue"),
        ("unseen", "unseen people (never trained on)", "-s", "tab:red"))


def plot_hallucination(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write <run_dir>/hallucination.png (or `path`) from <run_dir>/metrics.csv (+ summary.json); return it."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        raise FileNotFoundError(f"no metrics.csv in {run_dir}")
    rows = read_csv(metrics)
    if not any("unseen/attr_loss" in r for r in rows):
        raise ValueError(f"{metrics} has no unseen-people metrics (a run with data.n_unseen=0 or "
                         "data.unseen_eval_size=0)")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    fall_end, plateau_end = summary.get("fall_end_step"), summary.get("plateau_end_step")
    baseline = next((r["val/baseline"] for r in rows if "val/baseline" in r), summary.get("no_knowledge_baseline"))

    fig, axes = plt.subplots(1, len(PANELS), figsize=(19, 4.3))
    for ax, (metric, label) in zip(axes, PANELS):
        for prefix, set_label, style, color in SETS:
            steps, values = history_column(rows, f"{prefix}/{metric}")
            if steps:
                ax.plot(steps, values, style, color=color, markersize=3, label=set_label)
        if fall_end is not None and plateau_end is not None:
            ax.axvspan(fall_end, plateau_end, color="tab:orange", alpha=0.12, label="plateau")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    loss_ax = axes[0]
    if baseline is not None:
        loss_ax.axhline(baseline, color="k", linestyle="--", linewidth=1, label=f"no-knowledge baseline {baseline:.2f}")
    loss_ax.set_yscale("log")
    axes[1].set_ylim(-0.02, 1.02)
    axes[2].set_ylim(-0.02, 1.02)
    for ax in axes:
        ax.legend(fontsize=8)
    final = rows[-1]
    fig.suptitle("hallucinations: unseen people against seen people "
                 f"(final unseen loss {final.get('unseen/attr_loss', float('nan')):.2f}, "
                 f"max-probability {final.get('unseen/max_prob', float('nan')):.2f})")
    fig.tight_layout()
    path = Path(path) if path is not None else run_dir / "hallucination.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m biolab.analysis.hallucination RUN_DIR", file=sys.stderr)
        return 2
    return run_cli(lambda: print(plot_hallucination(argv[0])))


if __name__ == "__main__":
    sys.exit(main())
