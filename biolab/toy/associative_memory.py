"""Toy associative memory: the fine-tuning collapse without attention (SPEC section 8, last bullet).

A one-hidden-layer MLP (64 -> 256 ReLU -> 30) memorises 8,192 unit-norm random 64-d keys, each
with a random class out of 30 ("old" memories). Pre-training (full-batch Adam) runs until every
old key is recalled. Fine-tuning then trains on M new keys (fresh Adam, constant learning rate,
mini-batches) while old-key and new-key loss/accuracy are recorded against fine-tuning steps.
Optional replay draws the old keys too, with per-key weight w relative to a new key, through the
same sampling primitive as the language-model runs (``biolab.data.distributions.Mixture``): a
fraction w N / (w N + M) of each batch replays old keys.

Everything is a pure function of ``ToyConfig.seed`` (bit-identical for a given number of torch
threads). Run the default study (about a minute on 2 CPU cores) with

    python -m biolab.toy --out docs        # writes toy_memory.csv and toy_memory.png

Results and the command that produced them: docs/toy_memory.md.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from biolab.data.distributions import Mixture


@dataclass(frozen=True)
class ToyConfig:
    n_keys: int = 8192               # old memories, learned in pre-training
    dim: int = 64                    # key dimension (unit-norm Gaussian keys)
    hidden: int = 256                # ReLU units of the single hidden layer
    n_classes: int = 30              # values: random classes
    pretrain_lr: float = 1e-2        # Adam, full batch
    pretrain_max_steps: int = 3000
    pretrain_target_loss: float = 0.05  # "learned": every old key recalled and mean loss below this
    finetune_lr: float = 1e-3        # Adam, constant (fresh optimizer state, as for a new fine-tuning job)
    finetune_steps: int = 2000
    batch_size: int = 256            # fine-tuning mini-batch, drawn with replacement
    seed: int = 0

    def __post_init__(self):
        for key in ("n_keys", "dim", "hidden", "n_classes", "pretrain_max_steps", "finetune_steps", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"toy.{key} must be a positive integer, got {value!r}")
        for key in ("pretrain_lr", "pretrain_target_loss", "finetune_lr"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"toy.{key} must be a number > 0, got {value!r}")
        if self.n_classes < 2:
            raise ValueError(f"toy.n_classes must be >= 2, got {self.n_classes}")


def make_keys(cfg: ToyConfig, n: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n unit-norm keys [n, dim] and classes [n]; a prefix of a larger draw (new-key sets are nested)."""
    keys = np.random.default_rng([cfg.seed, stream, 0]).standard_normal((n, cfg.dim))
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    labels = np.random.default_rng([cfg.seed, stream, 1]).integers(0, cfg.n_classes, size=n)
    return torch.tensor(keys, dtype=torch.float32), torch.tensor(labels)


def make_model(cfg: ToyConfig) -> torch.nn.Module:
    with torch.random.fork_rng():  # initialisation from the seed, global RNG untouched
        torch.manual_seed(cfg.seed)
        return torch.nn.Sequential(torch.nn.Linear(cfg.dim, cfg.hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(cfg.hidden, cfg.n_classes))


@torch.no_grad()
def evaluate(model: torch.nn.Module, keys: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy (nats) and recall accuracy over a set of keys."""
    logits = model(keys)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def pretrain(cfg: ToyConfig, keys: torch.Tensor, labels: torch.Tensor) -> tuple[torch.nn.Module, dict]:
    """Full-batch Adam until every key is recalled and the loss is below the target (or max steps)."""
    model = make_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.pretrain_lr)
    step = 0
    loss, acc = evaluate(model, keys, labels)
    while step < cfg.pretrain_max_steps and not (acc == 1.0 and loss < cfg.pretrain_target_loss):
        batch_loss = F.cross_entropy(model(keys), labels)
        optimizer.zero_grad()
        batch_loss.backward()
        optimizer.step()
        step += 1
        if step % 10 == 0 or step == cfg.pretrain_max_steps:
            loss, acc = evaluate(model, keys, labels)
    return model, {"pretrain_steps": step, "pretrain_loss": loss, "pretrain_acc": acc,
                   "learned": acc == 1.0 and loss < cfg.pretrain_target_loss}


def eval_schedule(total: int) -> list[int]:
    """Dense early (the collapse is fast), then every 50 steps."""
    early = [0, 1, 2, 5, *range(10, 100, 10)]
    return sorted({s for s in early if s <= total} | set(range(100, total + 1, 50)) | {total})


def finetune(cfg: ToyConfig, pretrained: torch.nn.Module, old: tuple[torch.Tensor, torch.Tensor],
             new: tuple[torch.Tensor, torch.Tensor], replay_weight: float = 0.0) -> list[dict]:
    """Fine-tune a copy of `pretrained` on the new keys (+ old keys at per-key weight replay_weight).

    Batch `step` is drawn from np.random.default_rng([seed, 2, step]) through Mixture, like the
    language-model stream. Returns one row per evaluation step.
    """
    if not (math.isfinite(replay_weight) and replay_weight >= 0):
        raise ValueError(f"toy replay weight must be a number >= 0, got {replay_weight!r}")
    model = copy.deepcopy(pretrained)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.finetune_lr)
    n_old, n_new = len(old[0]), len(new[0])
    keys, labels = torch.cat([old[0], new[0]]), torch.cat([old[1], new[1]])
    mixture = Mixture([[0, n_old], [n_old, n_old + n_new]], [replay_weight, 1.0])
    schedule, rows = set(eval_schedule(cfg.finetune_steps)), []
    for step in range(cfg.finetune_steps + 1):
        if step in schedule:
            old_loss, old_acc = evaluate(model, *old)
            new_loss, new_acc = evaluate(model, *new)
            rows.append({"n_new": n_new, "replay_weight": replay_weight, "step": step, "old_loss": old_loss,
                         "old_acc": old_acc, "new_loss": new_loss, "new_acc": new_acc})
        if step == cfg.finetune_steps:
            break
        index = mixture.sample(np.random.default_rng([cfg.seed, 2, step]), cfg.batch_size, n_old + n_new, step)
        index = torch.from_numpy(index)
        loss = F.cross_entropy(model(keys[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return rows


def run_study(cfg: ToyConfig, new_counts: Sequence[int] = (256, 1024, 4096),
              replay_weights: Sequence[float] = (0.0, 1 / 32, 1 / 8, 1 / 2, 2.0), replay_new: int = 1024,
              log: Callable[[str], None] = print) -> tuple[list[dict], dict]:
    """Pre-train once, then fine-tune without replay for each M in new_counts, and with each replay
    weight for M = replay_new. Returns (rows, info); a (M, w) pair is run once even if in both sweeps."""
    if any(not isinstance(m, int) or m < 1 for m in [*new_counts, replay_new]):
        raise ValueError(f"toy new-key counts must be positive integers, got {list(new_counts)} and {replay_new}")
    start = time.perf_counter()
    old = make_keys(cfg, cfg.n_keys, stream=0)
    new_all = make_keys(cfg, max([*new_counts, replay_new]), stream=1)
    model, info = pretrain(cfg, *old)
    log(f"pre-training: {info['pretrain_steps']} steps, old-key loss {info['pretrain_loss']:.4f}, "
        f"accuracy {info['pretrain_acc']:.4f} ({time.perf_counter() - start:.0f} s)")
    runs = [(m, 0.0) for m in new_counts] + [(replay_new, float(w)) for w in replay_weights]
    runs = list(dict.fromkeys(runs))  # de-duplicate, keep order
    rows = []
    for m, w in runs:
        run_rows = finetune(cfg, model, old, (new_all[0][:m], new_all[1][:m]), replay_weight=w)
        rows += run_rows
        low = min(r["old_acc"] for r in run_rows)
        at = {r["step"]: r["old_acc"] for r in run_rows}
        log(f"fine-tune M={m:5d} w={w:<8.4g}: old-key accuracy {at[0]:.3f} -> {at.get(100, float('nan')):.3f} "
            f"at step 100 -> {run_rows[-1]['old_acc']:.3f} at {run_rows[-1]['step']} (min {low:.3f}); "
            f"new-key accuracy {run_rows[-1]['new_acc']:.3f} ({time.perf_counter() - start:.0f} s)")
    info.update(seconds=time.perf_counter() - start, runs=[list(r) for r in runs], replay_new=replay_new,
                new_counts=list(new_counts), replay_weights=[float(w) for w in replay_weights])
    return rows, info
