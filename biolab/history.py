"""Metric histories: the rows of a run's metrics.csv (one per evaluation) and columns read from them.

Used by the Evaluator (in memory), the phase tracker, figures, analyses and the run loader alike:

    steps, losses = history_column(read_csv(run_dir / "metrics.csv"), "val/attr_loss")
"""

from __future__ import annotations


def history_column(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric over the rows that have it."""
    rows = [r for r in history if r.get(key) is not None]
    return [int(r["step"]) for r in rows], [float(r[key]) for r in rows]
