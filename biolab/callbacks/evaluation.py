"""Evaluation on the paper's schedule, metric history, ``metrics.csv`` and progress lines.

SPEC section 5: evaluate every `dense_every` steps up to `dense_until`, then every `sparse_every`
(paper: 125 up to 2k, then 500), plus step 0 and the last step. At each point the module's
`evaluate` runs on every fixed evaluation set of the datamodule (val, train_templates, unseen) and
one row is appended to the history: step, learning rate, mean training loss since the previous
row, training throughput, all value-token metrics, and the metrics of every other callback that
defines ``evaluation_metrics(trainer, pl_module) -> dict`` (e.g. AttentionMetrics), so all of them
share one row and one schedule. The history is saved in checkpoints
(state_dict), so a resumed run keeps it, and rewritten atomically to ``<run_dir>/metrics.csv``
after every evaluation.

Evaluation runs on global rank 0 only (the sets are small); other ranks skip it.
"""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from biolab.io import write_csv


class Evaluator(L.Callback):
    def __init__(self, dense_every: int = 125, dense_until: int = 2000, sparse_every: int = 500,
                 metrics_file: str | None = None, print_every: int = 50):
        for key, value in (("dense_every", dense_every), ("sparse_every", sparse_every)):
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"callbacks.evaluator.{key} must be a positive integer, got {value!r}")
        self.dense_every, self.dense_until, self.sparse_every = dense_every, dense_until, sparse_every
        self.metrics_file, self.print_every = metrics_file, print_every
        self.history: list[dict] = []
        self.train_tokens, self.train_seconds = 0.0, 0.0   # cumulative, evaluation excluded
        self._interval = {"loss_sum": 0.0, "steps": 0, "tokens": 0.0, "seconds": 0.0}
        self._last_time: float | None = None

    # ---- schedule ------------------------------------------------------------------------------
    def is_eval_step(self, step: int, max_steps: int) -> bool:
        dense = step <= self.dense_until and step % self.dense_every == 0
        return step == 0 or step == max_steps or dense or step % self.sparse_every == 0

    # ---- hooks ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0 and not self.history:
            self._evaluate(trainer, pl_module)
        self._last_time = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        seconds = now - (self._last_time or now)
        tokens = float((batch["targets"] >= 0).sum()) * trainer.world_size
        loss = outputs["loss"].item() if isinstance(outputs, dict) else float(outputs)
        interval = self._interval
        interval["loss_sum"] += loss
        interval["steps"] += 1
        interval["tokens"] += tokens
        interval["seconds"] += seconds
        self.train_tokens += tokens
        self.train_seconds += seconds
        step = trainer.global_step
        if self.print_every and step % self.print_every == 0:
            self._print_progress(trainer, loss)
        if self.is_eval_step(step, trainer.max_steps):
            self._evaluate(trainer, pl_module)
        self._last_time = time.perf_counter()  # evaluation time is not training time

    # ---- evaluation ----------------------------------------------------------------------------
    def _evaluate(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        step, interval = trainer.global_step, self._interval
        row: dict = {"step": step, "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None}
        if interval["steps"]:
            row["train/loss"] = interval["loss_sum"] / interval["steps"]
            row["train/tokens_per_s"] = interval["tokens"] / max(interval["seconds"], 1e-9)
        start = time.perf_counter()
        datamodule = trainer.datamodule
        for name, batches in datamodule.eval_batches.items():
            row.update(pl_module.evaluate(batches, prefix=name))
        for callback in trainer.callbacks:
            if callback is not self and hasattr(callback, "evaluation_metrics"):
                row.update(callback.evaluation_metrics(trainer, pl_module))
        row["eval_seconds"] = time.perf_counter() - start
        row["elapsed_train_seconds"] = self.train_seconds
        row["val/baseline"] = datamodule.baseline
        self.history.append(row)
        self._interval = {"loss_sum": 0.0, "steps": 0, "tokens": 0.0, "seconds": 0.0}
        if self.metrics_file:
            write_csv(self.metrics_file, self.history)
        for logger in trainer.loggers:
            logger.log_metrics({k: v for k, v in row.items() if k != "step" and v is not None}, step=step)
        self._print_eval(row)

    @rank_zero_only
    def _print_progress(self, trainer: L.Trainer, loss: float) -> None:
        step, max_steps = trainer.global_step, trainer.max_steps
        rate = self.train_tokens / max(self.train_seconds, 1e-9)
        steps_per_s = step / max(self.train_seconds, 1e-9) if self.train_seconds else 0.0
        eta = (max_steps - step) / steps_per_s if steps_per_s else float("nan")
        print(f"step {step:>6}/{max_steps} | train loss {loss:.3f} | {rate:,.0f} tok/s | eta {eta / 60:.1f} min",
              flush=True)

    @rank_zero_only
    def _print_eval(self, row: dict) -> None:
        parts = [f"eval @ {row['step']:>6}", f"attr loss {row.get('val/attr_loss', float('nan')):.3f}",
                 f"(baseline {row['val/baseline']:.3f})", f"attr acc {row.get('val/attr_acc', float('nan')):.3f}"]
        if "unseen/attr_loss" in row:
            parts.append(f"unseen loss {row['unseen/attr_loss']:.2f}")
        print(" | ".join(parts), flush=True)

    # ---- resume --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"history": self.history, "train_tokens": self.train_tokens, "train_seconds": self.train_seconds,
                "interval": dict(self._interval)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict["history"])
        self.train_tokens = state_dict["train_tokens"]
        self.train_seconds = state_dict["train_seconds"]
        self._interval = dict(state_dict["interval"])  # training loss since the last evaluation


