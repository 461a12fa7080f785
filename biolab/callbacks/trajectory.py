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
    state, meta = load_weights("runs/.../trajectory/step_200.safetensors")  # meta["step"] == 200
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from biolab.data.datamodule import ConfigError
from biolab.io import write_safetensors
from biolab.model import Transformer

FORMAT = "biolab-trajectory-v1"


def weights_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "trajectory" / f"step_{step}.safetensors"


def save_weights(model: Transformer, path: str | Path, step: int) -> None:
    """Write model.state_dict() to a safetensors file atomically, with the config and step as metadata."""
    # copies on CPU: safetensors refuses shared storage (tied embeddings) and device tensors are copied anyway
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "step": str(int(step)), "model_config": json.dumps(asdict(model.cfg))}
    write_safetensors(path, state, meta)


def read_metadata(path: str | Path, key: str = "reference") -> dict:
    """The file's metadata ({} if none); a missing or unreadable file is a one-line ConfigError naming `key`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as err:
        raise ConfigError(f"{key}: {path} is corrupt or not a safetensors weights file "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if "model_config" in meta:
        meta["model_config"] = json.loads(meta["model_config"])
    if "step" in meta:
        meta["step"] = int(meta["step"])
    return meta


def load_weights(path: str | Path, key: str = "reference") -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict on CPU, metadata) of a trajectory file; errors are one-line ConfigErrors."""
    meta = read_metadata(path, key)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:
        raise ConfigError(f"{key}: {path} is corrupt ({type(err).__name__})") from None
    return state, meta


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
