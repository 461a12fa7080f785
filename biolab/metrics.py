"""Knowledge metrics on value tokens (SPEC section 5).

- attribute loss: cross-entropy summed over the tokens of one value (nats per attribute),
  averaged over values and sequences;
- attribute accuracy: a value counts only if every one of its tokens is the argmax (teacher-forced);
- confidence on value tokens: mean max-probability and mean entropy (nats) of the prediction.

`value_stats` works on one batch and returns sums, so batches can be accumulated exactly;
`finalize` turns the sums into the logged means, overall and per attribute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from biolab.data.biographies import IGNORE_INDEX


def value_stats(logits: torch.Tensor, targets: torch.Tensor, value_attr: torch.Tensor,
                n_attributes: int) -> dict[str, torch.Tensor]:
    """Per-attribute sums for one batch.

    logits [batch, pos, vocab], targets [batch, pos], value_attr [batch, pos] (-1 off values).
    Returns tensors of shape [attrs]: loss_sum, correct, count (values), token_count,
    max_prob_sum, entropy_sum (the last three over value tokens), and the scalar token loss sums
    of the language-model objective (lm_loss_sum, lm_tokens).
    """
    logits = logits.float()
    log_probs = F.log_softmax(logits, dim=-1)                                 # [batch, pos, vocab]
    safe_targets = targets.clamp_min(0)
    token_nll = -log_probs.gather(-1, safe_targets[..., None]).squeeze(-1)   # [batch, pos]
    token_nll = token_nll.masked_fill(targets == IGNORE_INDEX, 0.0)
    correct_token = logits.argmax(-1) == targets                              # [batch, pos]
    probs = log_probs.exp()
    max_prob = probs.max(-1).values                                           # [batch, pos]
    entropy = -(probs * log_probs).sum(-1)                                    # [batch, pos]

    one_hot = F.one_hot(value_attr + 1, n_attributes + 1)[..., 1:].float()   # [batch, pos, attrs]
    present = one_hot.sum(1) > 0                                              # [batch, attrs]
    loss_per_value = torch.einsum("bp,bpa->ba", token_nll, one_hot)          # [batch, attrs]
    wrong_tokens = torch.einsum("bp,bpa->ba", (~correct_token).float(), one_hot)
    correct_value = (wrong_tokens == 0) & present                            # [batch, attrs]
    return {
        "loss_sum": loss_per_value.sum(0),
        "correct": correct_value.sum(0).float(),
        "count": present.sum(0).float(),
        "token_count": one_hot.sum((0, 1)),
        "max_prob_sum": torch.einsum("bp,bpa->a", max_prob, one_hot),
        "entropy_sum": torch.einsum("bp,bpa->a", entropy, one_hot),
        "lm_loss_sum": token_nll.sum(),
        "lm_tokens": (targets != IGNORE_INDEX).sum().float(),
    }


def accumulate(total: dict[str, torch.Tensor] | None, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if total is None:
        return {k: v.detach().clone() for k, v in batch.items()}
    return {k: total[k] + batch[k].detach() for k in total}


def finalize(sums: dict[str, torch.Tensor], attributes: tuple[str, ...], prefix: str) -> dict[str, float]:
    """Means from accumulated sums, e.g. {"val/attr_loss": ..., "val/attr_acc/major": ...}."""
    count, tokens = sums["count"], sums["token_count"]
    out = {
        f"{prefix}/attr_loss": (sums["loss_sum"].sum() / count.sum()).item(),
        f"{prefix}/attr_acc": (sums["correct"].sum() / count.sum()).item(),
        f"{prefix}/max_prob": (sums["max_prob_sum"].sum() / tokens.sum()).item(),
        f"{prefix}/entropy": (sums["entropy_sum"].sum() / tokens.sum()).item(),
        f"{prefix}/lm_loss": (sums["lm_loss_sum"] / sums["lm_tokens"]).item(),
    }
    for i, attribute in enumerate(attributes):
        out[f"{prefix}/attr_loss/{attribute}"] = (sums["loss_sum"][i] / count[i]).item()
        out[f"{prefix}/attr_acc/{attribute}"] = (sums["correct"][i] / count[i]).item()
    return out
