"""LightningModule: next-token training on biographies and the knowledge metrics (SPEC sections 4-5).

Training minimises the language-model loss on every token. The optimiser is AdamW(beta 0.9, 0.95),
weight decay on matrices only (embeddings included; norm gains are not decayed), and the learning
rate follows a cosine from `lr` to `min_lr` over `max_steps` with no warm-up (the paper's schedule),
or stays at `lr` with ``schedule="constant"`` (fine-tuning, SPEC section 8; `min_lr` is then unused).
`evaluate(batches, prefix)` computes the value-token metrics of biolab.metrics on fixed sequences
(with ``unknown_id``, the token of the "unknown" answer, also the unknown-answer rate);
the Evaluator callback calls it on the evaluation schedule.

Built by ``train(cfg)``; checkpoints hold plain containers only, so they load with weights_only=True.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F

from biolab.data.biographies import IGNORE_INDEX
from biolab.metrics import accumulate, finalize, value_stats
from biolab.model import Transformer, TransformerConfig


def cosine_schedule(step: int, max_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate at `step`: cosine from lr (step 0) to min_lr (step max_steps), no warm-up."""
    progress = min(step, max_steps) / max(1, max_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


SCHEDULES = ("cosine", "constant")


class BioLitModule(L.LightningModule):
    def __init__(self, model: dict, lr: float = 4e-4, min_lr: float = 1e-7, betas: tuple = (0.9, 0.95),
                 weight_decay: float = 0.1, max_steps: int = 16_000, compile: bool = False,
                 attributes: tuple = (), schedule: str = "cosine", compile_options: dict | None = None,
                 unknown_id: int | None = None):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"module.schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        if not isinstance(compile_options or {}, dict):
            raise ValueError(f"module.compile_options must be a mapping of torch.compile arguments, "
                             f"got {compile_options!r}")
        self.save_hyperparameters()  # plain dict / numbers only: safe for weights_only loading
        self.model = Transformer(TransformerConfig(**model))
        self.attributes = tuple(attributes)
        self._compiled = None

    def configure_model(self) -> None:
        if self.hparams.compile and self._compiled is None:
            # hooks do not fire through torch.compile: compiled forward is used only when none is attached
            self._compiled = torch.compile(self.model, **(self.hparams.compile_options or {}))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        uses_hooks = any(h.has_hooks for h in self.model.hook_dict.values())
        net = self._compiled if (self._compiled is not None and not uses_hooks) else self.model
        return net(input_ids)  # [batch, pos, vocab]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), ignore_index=IGNORE_INDEX)
        # progress bar only: the Evaluator logs train/loss (mean since the last evaluation) at evaluation steps
        self.log("train/loss", loss, prog_bar=True, logger=False)
        return loss

    @torch.no_grad()
    def evaluate(self, batches: list[dict[str, torch.Tensor]], prefix: str) -> dict[str, float]:
        """Value-token metrics over fixed evaluation batches, e.g. {"val/attr_loss": 6.8, ...}."""
        was_training = self.training
        self.eval()
        trainer = self._trainer  # None when used outside a Trainer (benchmarks, notebooks)
        bf16 = trainer is not None and "bf16" in str(trainer.precision)
        sums = None
        for batch in batches:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = self(batch["input_ids"])
            sums = accumulate(sums, value_stats(logits, batch["targets"], batch["value_attr"], len(self.attributes),
                                                self.hparams.get("unknown_id")))
        self.train(was_training)
        return finalize(sums, self.attributes, prefix)

    def configure_optimizers(self):
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        lr, min_lr, max_steps = self.hparams.lr, self.hparams.min_lr, self.hparams.max_steps
        constant = self.hparams.schedule == "constant"
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 1.0 if constant else cosine_schedule(step, max_steps, lr, min_lr) / lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
