"""Training callbacks: evaluation schedule and metric history (more studies add their own here)."""

from biolab.callbacks.evaluation import Evaluator, history_column

__all__ = ["Evaluator", "history_column"]
