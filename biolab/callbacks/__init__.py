"""Training callbacks: evaluation schedule and metric history, phase tracking, attention metrics."""

from biolab.callbacks.attention import AttentionMetrics
from biolab.callbacks.evaluation import Evaluator
from biolab.callbacks.phases import PhaseTracker

__all__ = ["AttentionMetrics", "Evaluator", "PhaseTracker"]
