"""Hallucination neurons (H-Neurons, arXiv 2512.01797; SPEC 9.3): item labels, CETT features, activation scaling.

    n_right = label_items(model, prompts, n_samples=10, seed=0)   # [n] right answers out of 10 samples
    answers = greedy_answers(model, prompts)                       # [n, width] the model's own answers
    feats = cett_features(model, prompts, answers)                 # .answer [n, D], .other [n, D], .confidence [n, 2]
    with model.hooks(scaling_hooks(neurons, alpha, d_mlp)): ...    # hook_post[..., neuron] *= alpha

An item is one attribute-recall prompt (biolab.mech.prompts). Faithful = all sampled answers right
(n_right == n_samples), hallucinated = all wrong (n_right == 0); the rest is dropped, as in the paper.

CETT of MLP neuron j of layer l at position t: |z_j,t| * ||W_down[:, j]|| / ||h_t||, with z = the GELU output
(blocks.{l}.mlp.hook_post) and h = z W_down^T the MLP output (blocks.{l}.hook_mlp_out; the MLP has no bias).
Features are D = n_layers * d_mlp values (neuron index l * d_mlp + j), averaged per item over the positions
that predict the model's own (greedy) answer tokens (the prompt's last position and the answer tokens but the
last), and over the other prompt positions (<bos> excluded).

label_items is exact and cheap where sampling cannot vary: where every token of the right path (value, then
the sentence's "." after it) is the only token left by top-k / top-p, all samples are right; where some token
of that path is filtered out, none can be. Only the other items are sampled (scoring.sample_answers, seeded),
grouped by value length so that each group generates value length + 1 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from biolab.mech.prompts import PromptSet
from biolab.mech.scoring import (BATCH_SIZE, answers_correct, filter_logits, inference, logits_at, model_device,
                                 sample_answers)

EPS = 1e-12


# ---- labels ------------------------------------------------------------------------------------------------
def right_path_probability(model: nn.Module, prompts: PromptSet, temperature: float = 1.0, top_k: int | None = 50,
                           top_p: float | None = 0.9) -> torch.Tensor:
    """[n] probability, under the sampler's filtered distribution, that a sample is the whole right value followed by
    the sentence's end token (teacher-forced; exactly 1.0 when every step leaves one token, 0.0 when one is cut)."""
    width = prompts.answer.shape[1]
    length = prompts.answer_len.cpu()                                                   # [n]
    target = torch.cat([prompts.answer.cpu(), torch.full((len(prompts), 1), -1)], 1)    # [n, width + 1]
    target[torch.arange(len(prompts)), length] = prompts.answer_end.cpu()               # the "." after the value
    positions = prompts.last.cpu()[:, None] + torch.arange(width + 1)                   # [n, width + 1]
    tokens = prompts.with_answers().cpu()                                               # [n, pos + width]
    probability = []
    for rows, logits in logits_at(model, tokens, positions):                            # [b, width + 1, vocab]
        b, k, vocab = logits.shape
        filtered = filter_logits(logits.reshape(b * k, vocab) / temperature, top_k, top_p).softmax(-1)
        step = filtered.gather(1, target[rows].clamp(min=0).reshape(-1, 1).to(filtered.device)).view(b, k).cpu()
        probability.append(torch.where(target[rows] >= 0, step, torch.ones_like(step)).prod(1))
    return torch.cat(probability)


def label_items(model: nn.Module, prompts: PromptSet, n_samples: int = 10, seed: int = 0, temperature: float = 1.0,
                top_k: int | None = 50, top_p: float | None = 0.9, shortcut: bool = True) -> torch.Tensor:
    """[n] how many of n_samples sampled answers (temperature, top-k, top-p) are the whole right value; seeded.
    With shortcut, items whose outcome cannot vary (see the module docstring) are decided without sampling."""
    n_right = torch.full((len(prompts),), -1, dtype=torch.long)
    if shortcut and temperature > 0:
        path = right_path_probability(model, prompts, temperature, top_k, top_p)       # [n]
        n_right[path == 1.0] = n_samples
        n_right[path == 0.0] = 0
    length = prompts.answer_len.cpu()
    for value_len in length[n_right < 0].unique().tolist():
        idx = ((n_right < 0) & (length == value_len)).nonzero()[:, 0]
        group = prompts.subset(idx.to(prompts.tokens.device))
        samples = sample_answers(model, group, n_samples, temperature, top_k, top_p, seed=seed * 1000 + value_len,
                                 max_new_tokens=value_len + 1)                          # [g, n_samples, len + 1]
        n_right[idx] = answers_correct(samples, group).sum(1).cpu()
    return n_right


def classes(n_right, n_samples: int) -> np.ndarray:
    """n_right [n] (tensor or array) -> [n] 1 = hallucinated (no sample right), 0 = faithful (all right), -1 = mixed."""
    n_right = np.asarray(n_right)
    return np.where(n_right == 0, 1, np.where(n_right == n_samples, 0, -1))


def greedy_answers(model: nn.Module, prompts: PromptSet) -> torch.Tensor:
    """[n, width] the model's greedy continuation of each prompt (width = the longest value)."""
    return sample_answers(model, prompts, n_samples=1, temperature=0.0)[:, 0].cpu()


def answer_lengths(answers: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
    """answers [n, width] -> [n] tokens of each answer before its first end token ("."), at least 1."""
    ended = answers == prompts.answer_end.cpu()[:, None]                                # [n, width]
    first_end = torch.where(ended.any(1), ended.float().argmax(1), torch.full((len(answers),), answers.shape[1]))
    return first_end.clamp(min=1)


# ---- CETT features -----------------------------------------------------------------------------------------
@dataclass
class Features:
    answer: torch.Tensor      # [n, D] mean CETT over the positions predicting the answer tokens
    other: torch.Tensor       # [n, D] mean CETT over the other prompt positions (<bos> excluded)
    confidence: torch.Tensor  # [n, 2] mean max-probability and entropy of the next token over the answer positions


def cett(post: torch.Tensor, w_down: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
    """post [..., d_mlp] neuron activations, w_down [d_model, d_mlp], mlp_out [..., d_model] -> CETT [..., d_mlp]."""
    return post.abs() * w_down.norm(dim=0) / mlp_out.norm(dim=-1, keepdim=True).clamp(min=EPS)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values [b, pos, d], mask [b, pos] bool -> [b, d]."""
    weights = mask.float()
    return (values * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)


def cett_features(model: nn.Module, prompts: PromptSet, answers: torch.Tensor,
                  batch_size: int = BATCH_SIZE) -> Features:
    """CETT of every MLP neuron, averaged over answer positions and over the other prompt positions; answers [n, width]
    are the model's own answers (greedy_answers), cut at their end token."""
    n, width = answers.shape
    length = answer_lengths(answers, prompts)                                           # [n]
    last = prompts.last.cpu()
    tokens = torch.cat([prompts.tokens.cpu(), torch.zeros(n, width, dtype=torch.long)], 1)
    tokens.scatter_(1, last[:, None] + 1 + torch.arange(width), answers)               # prompt + its answer
    pos = torch.arange(tokens.shape[1])
    answer_mask = (pos >= last[:, None]) & (pos < (last + length)[:, None])             # [n, pos]
    other_mask = (pos >= 1) & (pos < last[:, None])
    names = [f"blocks.{layer}.{point}" for layer in range(len(model.blocks)) for point in ("mlp.hook_post", "hook_mlp_out")]
    device = model_device(model)
    answer_parts, other_parts, confidence = [], [], []
    with inference(model):
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            end = int((last[rows] + length[rows]).max())
            logits, cache = model.run_with_cache(tokens[rows, :end].to(device), names_filter=lambda name: name in names)
            a_mask, o_mask = answer_mask[rows, :end].to(device), other_mask[rows, :end].to(device)
            per_layer = [cett(cache[f"blocks.{layer}.mlp.hook_post"], block.mlp.down.weight,
                              cache[f"blocks.{layer}.hook_mlp_out"]) for layer, block in enumerate(model.blocks)]
            values = torch.cat(per_layer, -1)                                           # [b, pos, D]
            answer_parts.append(_masked_mean(values, a_mask).cpu())
            other_parts.append(_masked_mean(values, o_mask).cpu())
            probs = logits.float().softmax(-1)                                          # [b, pos, vocab]
            entropy = -(probs * probs.clamp(min=EPS).log()).sum(-1)
            confidence.append(_masked_mean(torch.stack([probs.max(-1).values, entropy], -1), a_mask).cpu())
    return Features(torch.cat(answer_parts), torch.cat(other_parts), torch.cat(confidence))


# ---- activation scaling ------------------------------------------------------------------------------------
def scaling_hooks(neurons: Sequence[int], alpha: float, d_mlp: int) -> list:
    """Forward hooks multiplying the activations (mlp.hook_post) of the given neurons (index l * d_mlp + j) by
    alpha at every position; use as `with model.hooks(scaling_hooks(...)):`."""
    by_layer: dict[int, list[int]] = {}
    for neuron in neurons:
        by_layer.setdefault(int(neuron) // d_mlp, []).append(int(neuron) % d_mlp)

    def make(columns: list[int]):
        index = torch.tensor(columns)

        def scale(activation: torch.Tensor, hook) -> torch.Tensor:
            scaled = activation.clone()
            scaled[..., index.to(activation.device)] *= alpha
            return scaled
        return scale

    return [(f"blocks.{layer}.mlp.hook_post", make(columns)) for layer, columns in sorted(by_layer.items())]
