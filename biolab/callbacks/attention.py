"""Attention metrics on the evaluation schedule: name->name, attribute->name, attribute->text, entropy.

SPEC section 7. On a fixed set of `n_sequences` biographies (seen people, training templates, fixed
by the population seed; paper preset 512), the softmax pattern of every layer is read through the
model's `blocks.{l}.attn.hook_pattern` hook points and reduced by biolab.attention. The Evaluator
calls `evaluation_metrics` at each of its evaluation steps, so the values land in the same row of
metrics.csv as the knowledge metrics, as ``attn/L{layer}/{metric}``; the time spent is recorded as
``attn_seconds`` (part of ``eval_seconds``). ``train(cfg)`` then draws ``attention.png`` into the
run directory (every layer, the plateau shaded; biolab.plots.plot_attention).

Configured in conf/callbacks/default.yaml (``callbacks.attention``); ``scope`` is "sentence" or
"prefix" (see biolab.attention); ``n_sequences: 0`` switches it off.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from biolab.attention import SCOPES, accumulate_attention, attention_stats, finalize_attention


class AttentionMetrics(L.Callback):
    def __init__(self, n_sequences: int = 512, scope: str = "sentence"):
        if not (isinstance(n_sequences, int) and n_sequences >= 0):
            raise ValueError(f"callbacks.attention.n_sequences must be an integer >= 0, got {n_sequences!r}")
        if scope not in SCOPES:
            raise ValueError(f"callbacks.attention.scope must be one of {list(SCOPES)}, got {scope!r}")
        self.n_sequences, self.scope = n_sequences, scope
        self._batches: list[dict[str, torch.Tensor]] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.n_sequences and self._batches is None:
            self._batches = trainer.datamodule.fixed_batches("attention", self.n_sequences, with_roles=True)

    @torch.no_grad()
    def measure(self, model, batches: list[dict[str, torch.Tensor]], device) -> dict[str, float]:
        """Attention metrics of `model` (a biolab Transformer) on collated batches built with roles."""
        was_training = model.training
        model.eval()
        total = None
        names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            _, cache = model.run_with_cache(batch["input_ids"], names_filter=names)
            total = accumulate_attention(total, attention_stats([cache[n] for n in names], batch, self.scope))
        model.train(was_training)
        return finalize_attention(total)

    def evaluation_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Called by the Evaluator at every evaluation step (rank 0)."""
        if not self._batches:
            return {}
        start = time.perf_counter()
        metrics = self.measure(pl_module.model, self._batches, pl_module.device)
        metrics["attn_seconds"] = time.perf_counter() - start
        return metrics
