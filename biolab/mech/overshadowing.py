"""Knowledge overshadowing of one model: is the rare look-alike answered with the dominant's value?

SPEC section 9.1 (PhantomCircuit, arXiv 2505.14406). A pure function of (model, prompts): the
prompts come from a data module built with look-alike pairs (``data/lookalikes=overshadowing``,
biolab.data.lookalikes), and every answer is read greedily on its first token at the answer position.

Per pair (averaged over the attributes and templates asked):
    ao      rate at which the RARE person's prompt is answered with the DOMINANT person's value
    r_dom   accuracy on the dominant person's own prompts
    r_sub   accuracy on the rare person's prompts (its own value)
    p_dom   p(dominant's value | rare prompt), the soft version of ao
    p_sub   p(rare person's value | rare prompt)
    prior   rate at which ordinary people (in no pair) are answered with the pair's dominant value,
            on prompts whose right answer starts with another token (the control: a frequent value
            that is simply said to everyone is no overshadowing)
Per level P and kind of pair: the means over its pairs, RO = AO / R_dom where R_dom >= 0.05 (else
None: a dominant fact not yet known cannot overshadow), and ao_excess = AO - prior of the same pairs.
Early in training every answer is the attribute's most frequent first token (a birth date's month
is right 1 time in 12 by chance), so AO, R_dom and the prior all sit at that floor and RO ~ 1 means
nothing there; ao_excess and the prior control say when AO is more than the floor.

    prompts = overshadowing_prompts(dm, templates_per_attribute=2)
    per_pair = measure(model, prompts)              # {"ao": [pairs], ...}
    levels = summarise(per_pair, prompts)           # {"pair/P32": {"ao":..., "ro":...}, ..., "prior": ...}

Used by the OvershadowingMetrics callback (metrics.csv, every evaluation) and by
``python -m biolab.mech overshadowing RUN_DIR`` (every snapshot; bootstrap over pairs; the circuit view).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from biolab.data.datamodule import template_ids
from biolab.data.population import N_EVAL_TEMPLATES, N_TEMPLATES
from biolab.errors import ConfigError
from biolab.mech.prompts import PromptSet, build_prompts
from biolab.mech.scoring import answer_logits

MIN_R_DOM = 0.05       # RO is defined only where the dominant fact is known at least this often
STREAM = 11            # random stream of the population seed for the prior-control people


@dataclass
class OvershadowingPrompts:
    rare: PromptSet          # the rare person of each pair, asked every attribute (its eval templates)
    dominant: PromptSet      # the dominant person, asked the same attributes (its own eval templates)
    prior: PromptSet         # ordinary people, asked the same attributes
    rare_pair: torch.Tensor      # [n_rare] pair index of each rare (and dominant) prompt
    dom_first: torch.Tensor      # [n_rare] first token of the dominant's value for that prompt's attribute
    prior_pair: torch.Tensor     # [n_prior] the pair whose dominant value a prior prompt is scored against
    prior_dom_first: torch.Tensor  # [n_prior]
    level: np.ndarray            # [pairs] P
    kind: np.ndarray             # [pairs] "pair", "first_name", "surname"


def _eval_templates(dm, people: np.ndarray, a: int, k: int) -> np.ndarray:
    """[len(people), k] template ids: the first k of each person's 5 evaluation templates of attribute a."""
    slots = np.arange(N_TEMPLATES - N_EVAL_TEMPLATES, N_TEMPLATES - N_EVAL_TEMPLATES + k)
    name = dm.attributes[a]
    return np.stack([template_ids(dm.seen, people, (name,), np.full((len(people), 1), s))[:, 0] for s in slots], 1)


def overshadowing_prompts(dm, templates_per_attribute: int = 2, prior_per_pair: int = 2,
                          seed: int = 0) -> OvershadowingPrompts:
    """The prompts of every pair of a set-up data module with look-alikes (see the module docstring)."""
    pairs = getattr(dm, "lookalikes", None)
    if pairs is None:
        raise ConfigError("this run has no look-alike pairs: train it with data/lookalikes=overshadowing")
    if not 1 <= templates_per_attribute <= N_EVAL_TEMPLATES:
        raise ConfigError(f"templates_per_attribute must be in 1..{N_EVAL_TEMPLATES}, got {templates_per_attribute}")
    k, n_attr = templates_per_attribute, len(dm.attributes)
    columns = dm.builder.attr_columns
    first = [np.array([v[0] for v in dm.builder.value_ids[a]]) for a in range(n_attr)]  # [values] per attribute
    rows = {"rare": [], "dominant": []}
    pair_idx, dom_first = [], []
    for a in range(n_attr):
        for role, people in (("rare", pairs.rare), ("dominant", pairs.dominant)):
            templates = _eval_templates(dm, people, a, k)                      # [pairs, k]
            rows[role].append((np.repeat(people, k), np.full(len(people) * k, a), templates.reshape(-1)))
        pair_idx.append(np.repeat(np.arange(len(pairs)), k))
        dom_first.append(np.repeat(first[a][dm.seen.values[pairs.dominant, columns[a]]], k))
    sets = {}
    for role, parts in rows.items():
        people, attrs, templates = (np.concatenate(x) for x in zip(*parts))
        sets[role] = build_prompts(dm, np.ones(len(people), bool), people, attrs, templates)
    prior, prior_pair, prior_first = _prior_prompts(dm, pairs, first, prior_per_pair, seed)
    return OvershadowingPrompts(rare=sets["rare"], dominant=sets["dominant"], prior=prior,
                                rare_pair=torch.as_tensor(np.concatenate(pair_idx)),
                                dom_first=torch.as_tensor(np.concatenate(dom_first)),
                                prior_pair=torch.as_tensor(prior_pair), prior_dom_first=torch.as_tensor(prior_first),
                                level=pairs.level, kind=pairs.kind)


def _prior_prompts(dm, pairs, first: list[np.ndarray], per_pair: int, seed: int):
    """Ordinary people (in no pair) asked each attribute, each scored against one pair's dominant value;
    only people whose own value starts with another token than that dominant value."""
    rng = np.random.default_rng([dm.seed, STREAM, seed])
    columns = dm.builder.attr_columns
    ordinary = np.arange(2 * len(pairs), len(dm.seen))
    people, attrs, templates, pair_of, dom = [], [], [], [], []
    for a in range(len(dm.attributes)):
        own = first[a][dm.seen.values[ordinary, columns[a]]]                 # [ordinary]
        for i, d in enumerate(pairs.dominant):
            target = first[a][dm.seen.values[d, columns[a]]]
            candidates = ordinary[own != target]
            chosen = rng.choice(candidates, size=min(per_pair, len(candidates)), replace=False)
            people.append(chosen)
            attrs.append(np.full(len(chosen), a))
            templates.append(_eval_templates(dm, chosen, a, 1)[:, 0])
            pair_of.append(np.full(len(chosen), i))
            dom.append(np.full(len(chosen), target))
    people, attrs, templates = (np.concatenate(x) for x in (people, attrs, templates))
    prompts = build_prompts(dm, np.ones(len(people), bool), people, attrs, templates)
    return prompts, np.concatenate(pair_of), np.concatenate(dom)


def _per_pair(values: torch.Tensor, pair: torch.Tensor, n_pairs: int) -> np.ndarray:
    """Mean of values [n] per pair index [n]: [pairs]."""
    sums = torch.zeros(n_pairs, dtype=torch.float64).index_add_(0, pair, values.double())
    counts = torch.zeros(n_pairs, dtype=torch.float64).index_add_(0, pair, torch.ones_like(values, dtype=torch.float64))
    return (sums / counts.clamp_min(1)).numpy()


@torch.no_grad()
def measure(model, prompts: OvershadowingPrompts, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Per-pair rates and probabilities (module docstring): {"ao", "r_dom", "r_sub", "p_dom", "p_sub", "prior"}."""
    n_pairs = len(prompts.level)
    rare = answer_logits(model, prompts.rare, batch_size).float()            # [n_rare, vocab]
    dominant = answer_logits(model, prompts.dominant, batch_size).float()    # [n_rare, vocab]
    prior = answer_logits(model, prompts.prior, batch_size).float()          # [n_prior, vocab]
    rows = torch.arange(len(rare))
    rare_choice, rare_probs = rare.argmax(-1), rare.softmax(-1)
    per_prompt = {
        "ao": (rare_choice == prompts.dom_first).float(),
        "r_dom": (dominant.argmax(-1) == prompts.dominant.answer_first).float(),
        "r_sub": (rare_choice == prompts.rare.answer_first).float(),
        "p_dom": rare_probs[rows, prompts.dom_first],
        "p_sub": rare_probs[rows, prompts.rare.answer_first],
    }
    out = {key: _per_pair(value, prompts.rare_pair, n_pairs) for key, value in per_prompt.items()}
    out["prior"] = _per_pair((prior.argmax(-1) == prompts.prior_dom_first).float(), prompts.prior_pair, n_pairs)
    return out


def group_key(kind: str, level: float) -> str:
    return f"{kind}/P{level:g}"


def summarise(per_pair: dict[str, np.ndarray], prompts: OvershadowingPrompts) -> dict:
    """Means over the pairs of each (kind, level): ao, r_dom, r_sub, p_dom, p_sub, ro; and the prior rate."""
    out = {}
    for kind in dict.fromkeys(prompts.kind):
        for level in dict.fromkeys(prompts.level[prompts.kind == kind]):
            members = (prompts.kind == kind) & (prompts.level == level)
            row = {key: float(per_pair[key][members].mean())
                   for key in ("ao", "r_dom", "r_sub", "p_dom", "p_sub", "prior")}
            row["ro"] = row["ao"] / row["r_dom"] if row["r_dom"] >= MIN_R_DOM else None
            row["ao_excess"] = row["ao"] - row["prior"]  # beyond what ordinary people get from that value
            row["n_pairs"] = int(members.sum())
            out[group_key(kind, level)] = row
    out["prior"] = float(per_pair["prior"].mean())
    return out


def flat_metrics(summary: dict, prefix: str = "overshadow/") -> dict[str, float]:
    """summarise() as metrics.csv columns: overshadow/pair/P32/ro, ..., overshadow/prior (None left out)."""
    out = {f"{prefix}prior": summary["prior"]}
    for group, row in summary.items():
        if group != "prior":
            out.update({f"{prefix}{group}/{key}": value for key, value in row.items()
                        if value is not None and key != "n_pairs"})
    return out
