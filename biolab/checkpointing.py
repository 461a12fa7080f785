"""Checkpoints that are atomic on the run directory's own filesystem, and never hold a broken run.

``AtomicCheckpointIO`` is the Trainer's CheckpointIO (``train()`` sets it on the strategy). Lightning's
default (TorchCheckpointIO -> fsspec) stages the file in the system temp directory and, when that is
another filesystem (common on clusters), falls back to *copying* it over last.ckpt: a kill or a full
disk during the copy leaves a truncated last.ckpt; and a PermissionError on the way is swallowed (a
stale last.ckpt, the temp file left behind). Here every save is written next to its target
(``.last.ckpt.<random>.tmp``), fsync'ed, then renamed over it (biolab.io.atomic_path): the previous
good checkpoint survives any failure, nothing is written outside the run directory (TMPDIR plays no
part), and a failed save removes its temp file and raises a RunError that stops the run (exit code 2
on the command line, no summary.json). The checkpoint is serialised in memory first (as Lightning
does), so that a full disk is an OSError of one write, not a torch RuntimeError from its zip writer.

``SaveAtStop`` (also added by ``train()``) saves last.ckpt at the step where callbacks.phases.stop_after
ended training, so that a study of a later milestone continues the run from exactly there (branch_from).

``RunGuard`` (a callback ``train()`` adds to every run) keeps two promises about what a checkpoint holds:

* the run's resolved config, under ``CONFIG_KEY``: a ``ckpt_path`` is only resumed by a run whose
  config matches it (biolab.resume);
* finite numbers: the training loss is checked every ``check_every`` steps, at the last step and
  before every save, the weights before every save; a NaN or infinite value stops the run with a
  RunError naming the step, so no checkpoint after the divergence is written and the run is never
  marked completed. The losses are accumulated on the device (no host sync per step); the check
  syncs once per ``check_every`` steps.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from biolab.errors import RunError
from biolab.io import atomic_path

CONFIG_KEY = "biolab_config"  # the run's resolved config, saved in every checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to memory, then to a temp file beside the target, fsync, rename; a failed write is a RunError."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        buffer = io.BytesIO()  # serialised first, as Lightning does: the file sees one plain write, and an
        torch.save(checkpoint, buffer)  # I/O error is an OSError (torch's zip writer turns it into a RuntimeError)
        try:
            with atomic_path(path) as tmp:
                self.write(tmp, buffer.getbuffer())
        except OSError as err:
            kept = "keeps the previous checkpoint" if path.exists() else "was not written"
            raise RunError(f"could not write checkpoint {path}: {err.strerror or err} ({type(err).__name__}); "
                           f"{path.name} {kept}") from err

    @staticmethod
    def write(path: Path, data) -> None:
        with open(path, "wb") as f:
            f.write(data)


class RunGuard(L.Callback):
    """Saves the run's config in every checkpoint; stops the run when the loss or the weights stop being finite."""

    def __init__(self, config: dict, check_every: int = 50):
        self.config, self.check_every = config, check_every
        self._bad: torch.Tensor | None = None  # any non-finite training loss since the last check (on the device)
        self._first_bad_after = 0  # the last step checked finite

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        bad = ~torch.isfinite(loss.detach())
        self._bad = bad if self._bad is None else self._bad | bad
        step = trainer.global_step
        if step % self.check_every == 0 or step >= trainer.max_steps:
            self._check_loss(step)

    def _check_loss(self, step: int) -> None:
        if self._bad is not None and bool(self._bad):
            raise RunError(f"the training loss became NaN or infinite between steps {self._first_bad_after} "
                           f"and {step}; the run is stopped (its last checkpoint is from before that): "
                           "lower module.lr or check the data")
        self._bad, self._first_bad_after = None, step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        step = trainer.global_step
        self._check_loss(step)
        params = [p.detach() for p in pl_module.parameters()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise RunError(f"the weights became NaN or infinite by step {step}; the run is stopped without "
                           "saving them (its last checkpoint is from before): lower module.lr")
        checkpoint[CONFIG_KEY] = self.config


class SaveAtStop(L.Callback):
    """Saves `path` at the step where training was told to stop (callbacks.phases.stop_after, agreed by every
    rank), unless the periodic checkpoint falls on that step anyway. Runs after the metric callbacks, so the
    checkpoint holds that step's evaluation, as a periodic one would."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if trainer.should_stop and step % self.every and step < trainer.max_steps:
            trainer.save_checkpoint(self.path)
