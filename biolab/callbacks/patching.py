"""Attention patching: train with the attention patterns of a frozen reference checkpoint (SPEC section 7).

The causal test that the plateau is the time it takes to build the recall circuit. A reference run
saves its weights along training (biolab.callbacks.trajectory). A second run with the same seed
and data (hence the same initial weights and batches) trains normally until `start_step`; from
then on every forward of the trained model (training steps and the Evaluator's evaluations alike)
uses, in the chosen layers and heads, the attention pattern that the frozen reference computes on
the same tokens, in a twin forward pass without gradient. The trained model then only learns the
per-token maps (embeddings, values, MLPs, unembedding). start_step = 0 patches throughout;
start_step = the reference's step freezes attention at that point.

Mechanism (no second copy of the model code, only hook points): a forward pre-hook on the trained
Transformer runs the reference on the input tokens and keeps its `blocks.{l}.attn.hook_pattern`
activations (stopping after the last layer needed); permanent `add_hook` hooks on the trained
model's own pattern points swap them in. Attaching those hooks switches the trained layers to the
explicit-softmax attention path, so before `start_step` nothing is attached and a run is bitwise
the unpatched run. The optimiser state (Adam moments and step counts) is cleared once, before the
first patched training step (`reset_optimizer`); the learning-rate schedule continues.

    python -m biolab.train experiment=patching_cpu callbacks=patching \\
        callbacks.patching.reference=runs/patching_cpu/reference/trajectory/step_200.safetensors \\
        callbacks.patching.start_step=0

Outside a Trainer: ``swap = PatternSwap(reference_model); swap.attach(model); model(tokens)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import lightning as L
import torch

from biolab.errors import ConfigError
from biolab.model import Transformer, TransformerConfig
from biolab.runs import check_weights, load_weights, new_model

KEY = "callbacks.patching"


class _ReferenceDone(Exception):
    """Raised by the reference's last needed pattern hook: later layers and the unembedding are skipped."""


class PatternSwap:
    """Replaces attention patterns of a model by those that a frozen reference computes on the same tokens.

    layers / heads: indices to patch (None: all); the same heads are patched in every chosen layer.
    active: called before every forward; while it returns False nothing is attached to the pattern
    points (fused attention, exactly the unpatched model).
    """

    def __init__(self, reference: Transformer, layers: list[int] | None = None, heads: list[int] | None = None,
                 active: Callable[[], bool] = lambda: True):
        self.reference = reference.eval().requires_grad_(False)
        n_heads = reference.cfg.n_heads
        self.layers = sorted(set(layers)) if layers is not None else list(range(reference.cfg.n_layers))
        self.names = [f"blocks.{layer}.attn.hook_pattern" for layer in self.layers]
        self.head_mask = None  # [1, head, 1, 1], True where the reference's pattern is used
        if heads is not None and sorted(set(heads)) != list(range(n_heads)):
            self.head_mask = torch.zeros(1, n_heads, 1, 1, dtype=torch.bool)
            self.head_mask[:, sorted(set(heads))] = True
        self.active = active
        self._device = torch.device("cpu")
        self._patterns: dict[str, torch.Tensor] = {}
        self._model: Transformer | None = None
        self._pre_handle = None
        self._pattern_handles: list = []

    @property
    def patching(self) -> bool:
        """True while the pattern points of the attached model are hooked."""
        return bool(self._pattern_handles)

    @torch.no_grad()
    def reference_patterns(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """{hook name: reference pattern [batch, head, query, key]} for the chosen layers, without gradient."""
        if self._device != tokens.device:
            self.reference.to(tokens.device)
            self._device = tokens.device
        patterns: dict[str, torch.Tensor] = {}

        def keep(pattern: torch.Tensor, hook) -> None:
            patterns[hook.name] = pattern
            if len(patterns) == len(self.names):
                raise _ReferenceDone

        with self.reference.hooks([(name, keep) for name in self.names]):
            try:
                self.reference(tokens)
            except _ReferenceDone:
                pass
        return patterns

    def attach(self, model: Transformer) -> None:
        if self._model is not None:
            raise RuntimeError("PatternSwap is already attached to a model")
        self._model = model
        self._pre_handle = model.register_forward_pre_hook(self._before_forward)

    def detach(self) -> None:
        self._unhook_patterns()
        if self._pre_handle is not None:
            self._pre_handle.remove()
        self._model, self._pre_handle, self._patterns = None, None, {}

    def _hook_patterns(self) -> None:
        for name in self.names:
            point = self._model.hook_dict[name]
            # first in line: hooks that read the pattern (run_with_cache) see the swapped one
            self._pattern_handles.append((point, point.add_hook(self._swap, prepend=True)))

    def _unhook_patterns(self) -> None:
        for point, handle in self._pattern_handles:
            point.remove_hook(handle)
        self._pattern_handles = []

    def _before_forward(self, model: Transformer, args: tuple) -> None:
        if not self.active():
            self._unhook_patterns()
            return
        if not self.patching:
            self._hook_patterns()  # hook points are read when the blocks run: effective in this forward
        self._patterns = self.reference_patterns(args[0])  # tokens [batch, pos]

    def _swap(self, pattern: torch.Tensor, hook) -> torch.Tensor:
        reference = self._patterns.pop(hook.name).to(pattern.dtype)  # [batch, head, query, key]
        if self.head_mask is None:
            return reference
        return torch.where(self.head_mask.to(pattern.device), reference, pattern)


def _check_indices(values, key: str, size: int | None) -> None:
    if values is None:
        return
    ok = isinstance(values, (list, tuple)) and len(values) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 and (size is None or v < size) for v in values)
    if not ok:
        allowed = f"0..{size - 1}" if size is not None else ">= 0"
        raise ConfigError(f"{KEY}.{key} must be null (all) or a non-empty list of integers in {allowed}, got {values!r}")


class AttentionPatching(L.Callback):
    def __init__(self, reference: str, start_step: int = 0, layers: list[int] | None = None,
                 heads: list[int] | None = None, reset_optimizer: bool = True):
        if not (isinstance(start_step, int) and not isinstance(start_step, bool) and start_step >= 0):
            raise ConfigError(f"{KEY}.start_step must be an integer >= 0, got {start_step!r}")
        if not isinstance(reset_optimizer, bool):
            raise ConfigError(f"{KEY}.reset_optimizer must be true or false, got {reset_optimizer!r}")
        if not reference or not isinstance(reference, str):
            raise ConfigError(f"{KEY}.reference must be the path of a trajectory weights file "
                              f"(<run_dir>/trajectory/step_<k>.safetensors), got {reference!r}")
        self.reference_path, self.start_step, self.reset_optimizer = reference, start_step, reset_optimizer
        self._weights, self.meta = load_weights(reference, key=f"{KEY}.reference")
        ref_cfg = self.meta.get("model_config") or {}
        _check_indices(layers, "layers", ref_cfg.get("n_layers"))
        _check_indices(heads, "heads", ref_cfg.get("n_heads"))
        self.layers, self.heads = layers, heads
        self.reset_at: int | None = None  # step at which the optimiser state was cleared (checkpointed)
        self._reference: Transformer | None = None
        self.swap: PatternSwap | None = None

    # ---- set-up: the frozen reference, checked against the configured model -------------------
    def build_reference(self, cfg: TransformerConfig) -> Transformer:
        path = self.reference_path
        saved = self.meta.get("model_config")
        if saved is not None:
            differing = [f"{k}={saved.get(k)!r} (configured {v!r})" for k, v in asdict(cfg).items() if saved.get(k) != v]
            if differing:
                raise ConfigError(f"{KEY}.reference: {path} holds another model than the configured one: "
                                  + ", ".join(differing))
        reference = new_model(cfg)  # the global RNG stream stays that of an unpatched run
        check_weights(self._weights, reference, path, f"{KEY}.reference")
        reference.load_state_dict(self._weights)
        return reference

    def check(self, pl_module: L.LightningModule) -> Transformer:
        """Check the configured module against the reference file and build the reference (ConfigError if not
        compatible). Called by `setup`; a caller may call it earlier, before any file is written."""
        if self._reference is None:
            if pl_module.hparams.get("compile"):
                raise ConfigError(f"{KEY} needs module.compile=false (hooks do not fire through torch.compile)")
            model: Transformer = pl_module.model
            _check_indices(self.layers, "layers", model.cfg.n_layers)
            _check_indices(self.heads, "heads", model.cfg.n_heads)
            self._reference = self.build_reference(model.cfg)
            self._weights = {}  # now in the reference
        return self._reference

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.swap is None:
            self.swap = PatternSwap(self.check(pl_module), self.layers, self.heads,
                                    active=lambda: trainer.global_step >= self.start_step)
            self.swap.attach(pl_module.model)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.swap is not None:
            self.swap.detach()
            self.swap = None

    # ---- optimiser reset, once, before the first patched training step ------------------------
    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx) -> None:
        if self.reset_optimizer and self.reset_at is None and trainer.global_step >= self.start_step:
            for optimizer in trainer.optimizers:
                optimizer.state.clear()  # Adam moments and step counts (bias correction restarts)
            self.reset_at = trainer.global_step

    # ---- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"reset_at": self.reset_at, "start_step": self.start_step, "reference": self.reference_path}

    def load_state_dict(self, state_dict: dict) -> None:
        self.reset_at = state_dict["reset_at"]
