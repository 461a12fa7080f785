"""Steering: add a vector to the residual stream at each prompt's last name token, and what it changes.

    with steering(model, layer=2, positions=prompts.name_pos[:, 2], vector=alpha * direction):
        ...                                       # every forward pass of the block sees the added vector
    steered_answers(model, prompts, 2, vector)    # {"right", "answer_prob", "max_prob"}: [n] each
    name_attention(model, prompts)                # [layers, heads] attention from the last position to the name

Layer l is the residual stream after l blocks (biolab.mech.entities.resid_hook). A forward pass must hold
the prompts in one batch (the positions are per prompt), so the functions here pass batch_size=len(prompts).
Used by biolab.mech.entities_study (SPEC 9.4: the "unknown" latent on known people, the "known" latent
on unseen people, random latents and random directions of the same norm as controls).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from biolab.mech.entities import resid_hook
from biolab.mech.prompts import PromptSet
from biolab.mech.scoring import answer_logits, prompt_correct, first_token_prob, inference


@contextmanager
def steering(model, layer: int, positions: torch.Tensor, vector: torch.Tensor):
    """Adds vector [d_model] at (row i, positions[i]) of the residual stream after `layer` blocks."""
    def add(resid, hook):                                                    # [n, pos, d_model]
        if resid.shape[0] != len(positions):
            raise ValueError(f"steering holds {len(positions)} positions, the batch has {resid.shape[0]} rows")
        resid = resid.clone()
        resid[torch.arange(len(positions)), positions.to(resid.device)] += vector.to(resid)
        return resid

    with model.hooks([(resid_hook(len(model.blocks), layer), add)]):
        yield model


def steered_answers(model, prompts: PromptSet, layer: int, vector: torch.Tensor,
                    unknown_id: int | None = None) -> dict[str, torch.Tensor]:
    """[n] each: whether the whole value is the argmax (teacher-forced), the probability of its first token,
    and the largest next-token probability at the answer position (the model's confidence); with
    `unknown_id` (a model fine-tuned with the "unknown" answer) also whether the answer is that token."""
    n = len(prompts)
    with steering(model, layer, prompts.name_pos[:, 2], vector):
        right = prompt_correct(model, prompts, batch_size=n)
        logits = answer_logits(model, prompts, batch_size=n)                  # [n, vocab]
    out = {"right": right.float(), "answer_prob": first_token_prob(logits, prompts).cpu(),
           "max_prob": logits.softmax(-1).max(-1).values.cpu()}
    if unknown_id is not None:
        out["unknown"] = (logits.argmax(-1) == unknown_id).float().cpu()
    return out


def name_attention(model, prompts: PromptSet) -> torch.Tensor:
    """[layers, heads] mean attention from each prompt's last position to its last name token."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(len(model.blocks))]
    rows = torch.arange(len(prompts))
    with inference(model):
        _, cache = model.run_with_cache(prompts.tokens[:, :int(prompts.last.max()) + 1], names_filter=names)
    return torch.stack([cache[name][rows, :, prompts.last, prompts.name_pos[:, 2]].mean(0).float()
                        for name in names])


def steered_attention(model, prompts: PromptSet, layer: int, vector: torch.Tensor) -> torch.Tensor:
    with steering(model, layer, prompts.name_pos[:, 2], vector):
        return name_attention(model, prompts)
