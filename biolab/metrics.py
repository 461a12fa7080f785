"""Knowledge metrics on value tokens (SPEC section 5).

- attribute loss: cross-entropy summed over the tokens of one value (nats per attribute),
  averaged over values and sequences;
- attribute accuracy: a value counts only if every one of its tokens is the argmax (teacher-forced);
- confidence on value tokens: mean max-probability and mean entropy (nats) of the prediction;
- with the "unknown" answer (data.unknown_answer): the share of values whose first token's argmax is
  the UNKNOWN token (``unknown_rate``: how often the model says it does not know).

`value_stats` works on one batch and returns sums, so batches can be accumulated exactly;
`finalize` turns the sums into the logged means, overall and per attribute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from biolab.data.biographies import IGNORE_INDEX


def value_stats(logits: torch.Tensor, targets: torch.Tensor, value_attr: torch.Tensor,
                n_attributes: int, unknown_id: int | None = None) -> dict[str, torch.Tensor]:
    """Per-attribute sums for one batch.

    logits [batch, pos, vocab], targets [batch, pos], value_attr [batch, pos] (-1 off values).
    Returns tensors of shape [attrs]: loss_sum, correct, count (values), token_count,
    max_prob_sum, entropy_sum (the last three over value tokens), and the scalar sums of the
    language-model objective over all tokens (lm_loss_sum, lm_tokens). Only value positions go
    through the full softmax statistics, which keeps evaluation cheap. With `unknown_id`, also
    unknown_sum [attrs]: values whose first token's argmax is that token.
    """
    batch = logits.shape[0]
    lm_loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                  ignore_index=IGNORE_INDEX, reduction="sum")
    is_value = value_attr >= 0                                              # [batch, pos]
    seq_index = is_value.nonzero()[:, 0]                                    # [values_tokens]
    attr = value_attr[is_value]                                             # [value_tokens]
    value_logits = logits[is_value].float()                                 # [value_tokens, vocab]
    value_targets = targets[is_value]                                       # [value_tokens]
    log_probs = F.log_softmax(value_logits, dim=-1)
    nll = -log_probs.gather(-1, value_targets[:, None]).squeeze(-1)        # [value_tokens]
    predicted = value_logits.argmax(-1)                                     # [value_tokens]
    wrong = (predicted != value_targets).float()
    probs = log_probs.exp()
    max_prob = probs.max(-1).values
    entropy = -(probs * log_probs).sum(-1)

    group = seq_index * n_attributes + attr                                 # one (sequence, attribute) = one value
    def per_value(x):                                                       # -> [batch, attrs]
        return torch.zeros(batch * n_attributes, device=x.device).index_add_(0, group, x).view(batch, n_attributes)
    def per_attr(x):                                                        # -> [attrs]
        return torch.zeros(n_attributes, device=x.device).index_add_(0, attr, x)

    tokens_per_value = per_value(torch.ones_like(nll))
    present = tokens_per_value > 0
    correct = (per_value(wrong) == 0) & present
    out = {
        "loss_sum": per_value(nll).sum(0),
        "correct": correct.sum(0).float(),
        "count": present.sum(0).float(),
        "token_count": tokens_per_value.sum(0),
        "max_prob_sum": per_attr(max_prob),
        "entropy_sum": per_attr(entropy),
        "lm_loss_sum": lm_loss_sum,
        "lm_tokens": (targets != IGNORE_INDEX).sum().float(),
    }
    if unknown_id is not None:
        previous = torch.cat([torch.full_like(value_attr[:, :1], -1), value_attr[:, :-1]], dim=1)
        first = (previous != value_attr)[is_value]                          # [value_tokens] a value's first token
        says_unknown = (predicted == unknown_id) & first
        out["unknown_sum"] = per_attr(says_unknown.float())
    return out


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
    if "unknown_sum" in sums:
        out[f"{prefix}/unknown_rate"] = (sums["unknown_sum"].sum() / count.sum()).item()
    for i, attribute in enumerate(attributes):
        out[f"{prefix}/attr_loss/{attribute}"] = (sums["loss_sum"][i] / count[i]).item()
        out[f"{prefix}/attr_acc/{attribute}"] = (sums["correct"][i] / count[i]).item()
    return out
