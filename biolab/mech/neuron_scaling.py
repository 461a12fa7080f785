"""Scaling neuron activations by alpha (H-Neurons' intervention, SPEC 9.3): utility, confidence and a context-conflict
test, with slopes over alpha and bootstrap intervals.

    conflict = conflict_prompts(dm, seen_prompts, seed=0)    # a biography sentence stating a wrong value, then the query
    rows = alpha_sweep(model, {"h": h_neurons, "random_0": [...]}, alphas, seen, unseen, conflict)
    slope_interval(alphas, rows["h"]["adopts_context"])       # slope of the item mean over alpha, 95% bootstrap interval

Measures per item at each alpha: seen_correct (the whole right value is the argmax, teacher-forced), unseen_max_prob
and unseen_entropy (the first answer token's distribution for unseen people: confidence of fabrication) and, on the
conflict prompts, adopts_context (the argmax first token is the wrong value stated in the context; the analogue of
the paper's FaithEval compliance) and keeps_memory (it is the person's true value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from biolab.data.datamodule import template_ids
from biolab.mech.neurons import EPS, scaling_hooks
from biolab.mech.prompts import PromptSet, build_prompts, corrupt
from biolab.mech.scoring import answer_logits, logits_at, prompt_correct

ALPHAS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
CONFLICT_STREAM = 19   # random stream of the context sentences' templates


@dataclass
class ConflictSet:
    tokens: torch.Tensor       # [n, pos] <bos> context sentence with a wrong value, then the query prompt, <pad>
    last: torch.Tensor         # [n] last query position (predicts the answer's first token)
    wrong_first: torch.Tensor  # [n] first token of the value stated in the context
    right_first: torch.Tensor  # [n] first token of the person's true value


def conflict_prompts(dm, prompts: PromptSet, seed: int = 0) -> ConflictSet:
    """For each (seen) prompt: a training-template sentence about the same person stating another person's value
    (first token differs, biolab.mech.prompts.corrupt), then the prompt itself."""
    rng = np.random.default_rng([seed, CONFLICT_STREAM])
    people, attributes = prompts.person.cpu().numpy(), prompts.attribute.cpu().numpy()
    templates = np.empty(len(prompts), dtype=np.int64)
    for a in np.unique(attributes):
        rows = np.flatnonzero(attributes == a)
        slots = rng.integers(0, dm.n_train_templates, size=len(rows))
        templates[rows] = template_ids(dm.seen, people[rows], (dm.attributes[a],), slots[:, None])[:, 0]
    context = build_prompts(dm, np.ones(len(prompts), dtype=bool), people, attributes, templates)
    wrong = corrupt(prompts, dm, seed=seed).to("cpu")
    query = prompts.to("cpu")
    rows = []
    for i in range(len(prompts)):
        value = wrong.answer[i][wrong.answer[i] >= 0]
        rows.append(torch.cat([context.tokens[i, :context.last[i] + 1], value, context.answer_end[i:i + 1],
                               query.tokens[i, 1:query.last[i] + 1]]))
    tokens = torch.full((len(rows), max(len(r) for r in rows)), dm.tokenizer.pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = row
    return ConflictSet(tokens=tokens, last=torch.tensor([len(r) - 1 for r in rows]),
                       wrong_first=wrong.answer_first.clone(), right_first=query.answer_first.clone())


def measure(model: nn.Module, seen: PromptSet, unseen: PromptSet, conflict: ConflictSet) -> dict[str, np.ndarray]:
    """Per-item measures of one model (with whatever hooks are attached)."""
    probs = answer_logits(model, unseen).softmax(-1)                                   # [n_unseen, vocab]
    entropy = -(probs * probs.clamp(min=EPS).log()).sum(-1)
    first = torch.cat([logits[:, 0].argmax(-1).cpu() for _, logits in
                       logits_at(model, conflict.tokens, conflict.last[:, None])])      # [n_conflict]
    return {"seen_correct": prompt_correct(model, seen).float().numpy(),
            "unseen_max_prob": probs.max(-1).values.cpu().numpy(), "unseen_entropy": entropy.cpu().numpy(),
            "adopts_context": (first == conflict.wrong_first).float().numpy(),
            "keeps_memory": (first == conflict.right_first).float().numpy()}


def alpha_sweep(model: nn.Module, neuron_sets: dict[str, list[int]], alphas, seen: PromptSet, unseen: PromptSet,
                conflict: ConflictSet) -> dict[str, dict[str, np.ndarray]]:
    """{set name: {measure: [n_alphas, n_items]}} with each set's neurons scaled by each alpha."""
    d_mlp = model.blocks[0].mlp.down.weight.shape[1]
    out = {}
    for name, neurons in neuron_sets.items():
        per_alpha = []
        for alpha in alphas:
            with model.hooks(scaling_hooks(neurons, float(alpha), d_mlp)):
                per_alpha.append(measure(model, seen, unseen, conflict))
        out[name] = {key: np.stack([m[key] for m in per_alpha]) for key in per_alpha[0]}
    return out


def slope(alphas, means: np.ndarray) -> float:
    """Least-squares slope of means [n_alphas] (or [n_alphas, b] column-wise) against alpha."""
    x = np.asarray(alphas, dtype=float)
    x = x - x.mean()
    return (x @ (means - means.mean(0))) / (x @ x)


def slope_interval(alphas, values: np.ndarray, n_boot: int = 200, seed: int = 0) -> dict:
    """values [n_alphas, n_items] -> {"slope", "interval": 2.5 / 97.5 percentiles resampling items, "at_alpha"}."""
    rng = np.random.default_rng([seed, 23])
    draws = rng.integers(0, values.shape[1], size=(n_boot, values.shape[1]))            # [boot, n]
    boot = slope(alphas, values[:, draws].mean(-1))                                     # [boot]
    return {"slope": float(slope(alphas, values.mean(1))), "interval": np.percentile(boot, [2.5, 97.5]).tolist(),
            "at_alpha": values.mean(1).tolist()}
