"""Trajectory checkpoints: the model's weights at chosen steps, for attention patching (SPEC section 7).

The patching study trains a reference run and keeps its weights at steps {0, 0.5k, 1k, 2k, 4k, 8k,
16k}; later runs replace their attention patterns by those of one of these checkpoints
(biolab.callbacks.patching). This callback writes, on global rank 0,

    <run_dir>/trajectory/step_<k>.safetensors     (run_dir = trainer.default_root_dir)

holding only the Transformer's weights (no optimiser state), with the model config and the step in
the safetensors metadata. Step 0 is written when training starts, step k right after the k-th
optimiser step. Writes are atomic (temp file, then rename); a file that already exists is kept, so
a resumed run does not rewrite it (training is deterministic, it would be the same).

    python -m biolab.train experiment=quickstart callbacks=trajectory_cpu   # or callbacks=trajectory
    load_run("runs/...").model(200)   # biolab.runs reads them (and writes them: save_weights)
"""

from __future__ import annotations

import lightning as L

from biolab.errors import ConfigError
from biolab.runs import save_weights, weights_path


class TrajectoryCheckpoints(L.Callback):
    def __init__(self, steps: list[int] = (0, 500, 1000, 2000, 4000, 8000, 16000)):
        steps = list(steps)
        if not steps or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps):
            raise ConfigError(f"callbacks.trajectory.steps must be a non-empty list of integers >= 0, got {steps!r}")
        self.steps = sorted(set(steps))

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step not in self.steps or not trainer.is_global_zero:
            return
        path = weights_path(trainer.default_root_dir, step)
        if not path.exists():  # resumed runs keep what was written before (same weights)
            save_weights(pl_module.model, path, step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, pl_module)  # step 0 (or the resumed step, if it is in the list and missing)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._save(trainer, pl_module)
