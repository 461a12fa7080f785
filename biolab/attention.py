"""Attention metrics of the recall circuit (SPEC section 7), from softmax patterns and token roles.

Per layer, averaged over heads and over the queries of a fixed set of sequences:

    name_to_name   from the last token of each occurrence of the person's name, the attention on the
                   other name tokens
    attr_to_name   from the position that predicts the first token of a value (the last template word
                   before it), the attention on name tokens
    attr_to_text   from that same position, the attention on template words (not names, not values)
    entropy        attention entropy / ln(number of attendable tokens), over every real query
                   position with at least two attendable tokens (1 = uniform, 0 = one-hot)

`scope` says which keys count (the paper does not say; SPEC section 7):
    "sentence"  only keys in the query's own sentence; the pattern is renormalised over them, so
                name and text of one query share one unit of attention ("name" = this occurrence)
    "prefix"    every earlier key, no renormalisation ("name" = every occurrence of the name so far,
                "text" = every template word so far; the rest sits on <bos> and earlier values)

    stats = attention_stats(patterns, batch, scope="sentence")   # sums and counts, batch by batch
    metrics = finalize_attention(accumulate_attention(None, stats))  # {"L1/name_to_name": ...}

Used by the AttentionMetrics callback (biolab/callbacks/attention.py) on the evaluation schedule.
"""

from __future__ import annotations

import math

import torch

from biolab.data.biographies import IGNORE_INDEX, ROLE_NAME, ROLE_TEXT

METRICS = ("name_to_name", "attr_to_name", "attr_to_text", "entropy")
SCOPES = ("sentence", "prefix")


def query_masks(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boolean [batch, pos] masks: last name token of each occurrence, position predicting a value's
    first token, and every real (non-padding) position."""
    role, value_attr = batch["role"], batch["value_attr"]
    is_name = role == ROLE_NAME
    next_is_name = torch.zeros_like(is_name)
    next_is_name[:, :-1] = is_name[:, 1:]
    name_last = is_name & ~next_is_name
    starts_value = value_attr >= 0  # target j (token j+1) is a value token ...
    starts_value[:, 1:] &= value_attr[:, :-1] < 0  # ... and target j-1 is not: token j+1 is a value's first
    real = batch["targets"] != IGNORE_INDEX
    return name_last, starts_value, real


def attention_stats(patterns: list[torch.Tensor], batch: dict[str, torch.Tensor],
                    scope: str = "sentence") -> dict[str, torch.Tensor]:
    """Per-layer sums over queries of each metric (averaged over heads) and their query counts.

    patterns: one [batch, head, query, key] softmax pattern per layer; batch: a collated batch built
    with roles. Returns {"sum": [layers, 4], "count": [layers, 4]} in METRICS order.
    """
    if scope not in SCOPES:
        raise ValueError(f"attention scope must be one of {list(SCOPES)}, got {scope!r}")
    role, sentence = batch["role"], batch["sentence"]                     # [batch, pos]
    n_pos = role.shape[1]
    causal = torch.ones(n_pos, n_pos, dtype=torch.bool, device=role.device).tril()  # [query, key]
    keys = causal[None].expand(role.shape[0], -1, -1)                    # [batch, query, key]
    if scope == "sentence":
        keys = keys & (sentence[:, :, None] == sentence[:, None, :]) & (sentence[:, :, None] >= 0)
    key_is_name = (role == ROLE_NAME)[:, None, :]                          # [batch, 1, key]
    key_is_text = (role == ROLE_TEXT)[:, None, :]
    not_self = ~torch.eye(n_pos, dtype=torch.bool, device=role.device)[None]
    name_last, starts_value, real = query_masks(batch)
    n_keys = causal.sum(-1).float()                                        # [query] attendable tokens
    entropy_queries = real & (n_keys >= 2)[None]
    sums, counts = [], []
    for pattern in patterns:
        p = pattern.float()                                                # [batch, head, query, key]
        total = (p * keys[:, None]).sum(-1).clamp_min(1e-12)               # [batch, head, query]
        share = lambda mask: ((p * mask[:, None]).sum(-1) / total).mean(1)  # noqa: E731 -> [batch, query]
        per_query = {
            "name_to_name": (share(keys & key_is_name & not_self), name_last),
            "attr_to_name": (share(keys & key_is_name), starts_value),
            "attr_to_text": (share(keys & key_is_text), starts_value),
        }
        entropy = -(p * p.clamp_min(1e-30).log()).sum(-1).mean(1)         # [batch, query], over heads
        per_query["entropy"] = (entropy / n_keys.clamp_min(2).log()[None], entropy_queries)
        sums.append([float(v[m].sum()) for v, m in (per_query[k] for k in METRICS)])
        counts.append([float(m.sum()) for _, m in (per_query[k] for k in METRICS)])
    return {"sum": torch.tensor(sums, dtype=torch.float64), "count": torch.tensor(counts, dtype=torch.float64)}


def accumulate_attention(total: dict | None, stats: dict) -> dict:
    if total is None:
        return {k: v.clone() for k, v in stats.items()}
    return {k: total[k] + stats[k] for k in total}


def finalize_attention(total: dict, prefix: str = "attn") -> dict[str, float]:
    """{"attn/L{layer}/{metric}": mean}; layers numbered from 1 like the paper's figures."""
    means = total["sum"] / total["count"].clamp_min(1)
    out = {}
    for layer in range(means.shape[0]):
        for j, metric in enumerate(METRICS):
            value = float(means[layer, j]) if total["count"][layer, j] > 0 else math.nan
            out[f"{prefix}/L{layer + 1}/{metric}"] = value
    return out
