"""Phase tracking: the fall, the plateau and the acquisition milestones, live during training.

SPEC sections 5-6. After every evaluation of the Evaluator callback (which must come before this
one in the callback list), the milestones of biolab.phases are recomputed from the evaluation
history and logged to the run's loggers as ``phase/<name>`` (only those already reached). The
tracker keeps one snapshot per evaluation (step -> milestones known then) in its state_dict, so
a resumed run keeps it. ``confirm`` > 1 makes the milestones robust to noisy curves.
"""

from __future__ import annotations

import lightning as L

from biolab.callbacks.evaluation import Evaluator, history_column
from biolab.phases import phase_summary


class PhaseTracker(L.Callback):
    def __init__(self, confirm: int = 1):
        if not (isinstance(confirm, int) and confirm >= 1):
            raise ValueError(f"callbacks.phases.confirm must be an integer >= 1, got {confirm!r}")
        self.confirm = confirm
        self.snapshots: list[dict] = []  # {"step": s, **milestones known at s}

    @property
    def phases(self) -> dict:
        """Milestones at the latest evaluation (empty before the first)."""
        return {k: v for k, v in self.snapshots[-1].items() if k != "step"} if self.snapshots else {}

    def update(self, history: list[dict], baseline: float) -> dict:
        steps, losses = history_column(history, "val/attr_loss")
        acc_steps, accs = history_column(history, "val/attr_acc")
        phases = phase_summary(steps, losses, acc_steps, accs, baseline, self.confirm)
        self.snapshots.append({"step": steps[-1], **phases})
        return phases

    def on_train_start(self, trainer, pl_module) -> None:
        self._after_evaluation(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._after_evaluation(trainer)

    def _after_evaluation(self, trainer: L.Trainer) -> None:
        evaluator = next((c for c in trainer.callbacks if isinstance(c, Evaluator)), None)
        if evaluator is None or not evaluator.history:
            return
        step = int(evaluator.history[-1]["step"])
        if self.snapshots and self.snapshots[-1]["step"] >= step:
            return  # no new evaluation since the last snapshot
        phases = self.update(evaluator.history, trainer.datamodule.baseline)
        reached = {f"phase/{k}": float(v) for k, v in phases.items() if v is not None}
        for logger in trainer.loggers:
            logger.log_metrics(reached, step=step)

    def state_dict(self) -> dict:
        return {"snapshots": self.snapshots, "confirm": self.confirm}

    def load_state_dict(self, state_dict: dict) -> None:
        self.snapshots = list(state_dict["snapshots"])
