"""Training callbacks: evaluation schedule and metric history, phase tracking."""

from biolab.callbacks.evaluation import Evaluator, history_column
from biolab.callbacks.phases import PhaseTracker

__all__ = ["Evaluator", "PhaseTracker", "history_column"]
