"""The "unknown" answer of a fine-tuned model, and a direction ablated from its weights (SPEC 9.4, item 5).

A model fine-tuned with data.unknown_answer (experiment=unknown_cpu; docs/unknown_answer.md) answers the
UNKNOWN token about people it does not know. Here, as pure functions of (model, prompts):

    says_unknown(model, prompts, unknown_id)        # [n] 1.0 where the answer's argmax is UNKNOWN
    ablated = without_direction(model, direction)   # a copy that can no longer write `direction`
    says_unknown(ablated, prompts, unknown_id)      # does removing the direction lower the rate?

``without_direction`` projects a unit direction d [d_model] out of every weight that writes to the residual
stream (W <- W - d d^T W for the attention output and MLP output matrices; E <- E - E d d^T for the token and
learned position embeddings), the weight orthogonalisation of the refusal-direction literature. No bias
writes to the residual stream in this architecture, so afterwards the residual stream has no component
along d at any layer and position.
Used by biolab.mech.unknown_study.
"""

from __future__ import annotations

import copy

import torch

from biolab.mech.prompts import PromptSet
from biolab.mech.scoring import answer_logits


def says_unknown(model, prompts: PromptSet, unknown_id: int) -> torch.Tensor:
    """[n] float: 1 where the model's most likely next token at the answer position is `unknown_id`."""
    return (answer_logits(model, prompts).argmax(-1) == unknown_id).float().cpu()


def residual_writers(model) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, weight) of every parameter that writes to the residual stream; embeddings are [rows, d_model],
    the linear maps [d_model, d_in]."""
    writers = [("embed.weight", model.embed.weight)]
    if getattr(model, "pos_embed", None) is not None:
        writers.append(("pos_embed.weight", model.pos_embed.weight))
    for layer, block in enumerate(model.blocks):
        writers += [(f"blocks.{layer}.attn.out.weight", block.attn.out.weight),
                    (f"blocks.{layer}.mlp.down.weight", block.mlp.down.weight)]
    return writers


def without_direction(model, direction: torch.Tensor):
    """A copy of `model` whose weights never write along `direction` [d_model] (normalised here)."""
    if model.cfg.tie_embeddings:  # the unembedding shares the embedding: it must still read every direction
        raise ValueError("without_direction needs untied embeddings (model.tie_embeddings=false)")
    d = direction.float() / direction.float().norm()                          # [d_model]
    ablated = copy.deepcopy(model)
    with torch.no_grad():
        for name, weight in residual_writers(ablated):
            w = weight.float()
            if name.endswith("embed.weight"):                                 # [rows, d_model]
                w = w - (w @ d)[:, None] * d[None, :]
            else:                                                             # [d_model, d_in]
                w = w - d[:, None] * (d @ w)[None, :]
            weight.copy_(w.to(weight.dtype))
    return ablated
