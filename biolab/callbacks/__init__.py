"""Training callbacks: evaluation schedule and metric history, phase tracking, attention metrics."""

from biolab.callbacks.attention import AttentionMetrics
from biolab.callbacks.evaluation import Evaluator, history_column
from biolab.callbacks.phases import PhaseTracker

__all__ = ["AttentionMetrics", "Evaluator", "PhaseTracker", "history_column"]
