"""Phase tracking: the fall, the plateau and the acquisition milestones, live during training.

SPEC sections 5-6. After every evaluation of the Evaluator callback (which must come before this
one in the callback list), the milestones of biolab.phases are recomputed from the evaluation
history and logged to the run's loggers as ``phase/<name>`` (only those already reached). The
tracker keeps one snapshot per evaluation (step -> milestones known then) in its state_dict, so
a resumed run keeps it. ``confirm`` > 1 makes the milestones robust to noisy curves.

``stop_after`` (e.g. ``acc_50pct_step``) ends training at the evaluation where that milestone is
first reached: population sweeps that only need the plateau end and the 50%-accuracy step save
most of their compute this way. The learning-rate schedule is still the one of trainer.max_steps,
so runs stopped early follow the same schedule as complete ones. The run counts as finished
(summary.json: completed true, stopped_after). With DDP, rank 0 decides and broadcasts.
"""

from __future__ import annotations

import lightning as L

from biolab.callbacks.evaluation import Evaluator
from biolab.history import history_column
from biolab.phases import STEP_MILESTONES, phase_summary


class PhaseTracker(L.Callback):
    def __init__(self, confirm: int = 1, stop_after: str | None = None):
        if not (isinstance(confirm, int) and confirm >= 1):
            raise ValueError(f"callbacks.phases.confirm must be an integer >= 1, got {confirm!r}")
        if stop_after is not None and stop_after not in STEP_MILESTONES:
            raise ValueError(f"callbacks.phases.stop_after must be null or one of {list(STEP_MILESTONES)}, "
                             f"got {stop_after!r}")
        self.confirm, self.stop_after = confirm, stop_after
        self.snapshots: list[dict] = []  # {"step": s, **milestones known at s}
        self.stopped_at: int | None = None  # step at which stop_after ended training

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
        evaluator = _evaluator(trainer)
        step = trainer.global_step
        if self.stop_after and evaluator and evaluator.is_eval_step(step, trainer.max_steps):
            reached = trainer.strategy.broadcast(self._milestone_settled(), src=0)
            if reached and step < trainer.max_steps:
                self.stopped_at = step
                trainer.should_stop = True
                print(f"stopping at step {step}: {self.stop_after} reached (callbacks.phases.stop_after)",
                      flush=True)

    def _milestone_settled(self) -> bool:
        """stop_after has been reached, or (plateau milestones) the run turned out to have no plateau."""
        phases = self.phases
        no_plateau = self.stop_after.startswith("plateau") and phases.get("has_plateau") is False
        return phases.get(self.stop_after) is not None or no_plateau

    def _after_evaluation(self, trainer: L.Trainer) -> None:
        evaluator = _evaluator(trainer)
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
        return {"snapshots": self.snapshots, "confirm": self.confirm, "stopped_at": self.stopped_at}

    def load_state_dict(self, state_dict: dict) -> None:
        self.snapshots = list(state_dict["snapshots"])
        self.stopped_at = state_dict.get("stopped_at")


def _evaluator(trainer: L.Trainer) -> Evaluator | None:
    return next((c for c in trainer.callbacks if isinstance(c, Evaluator)), None)
