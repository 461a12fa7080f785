"""Known and unknown people (SPEC 9.4, "Do I Know This Entity?"): the sets, the residual stream at the
last name token, and linear separation per layer. Pure functions of (model, data module, seed).

    sets = entity_sets(model, dm, n=300, seed=0)        # known / seen / unseen / token-matched unseen
    prompts = family_prompts(dm, sets.known, True, "words_before", seed=0)
    x = last_name_residuals(model, prompts)            # [layers + 1, n, d_model]; layer 0 = embeddings
    linear_separation(x_known, x_unknown, folds=5)     # per layer: difference-of-means and probe AUROC

Sets (deterministic per seed): `seen` is a fixed random sample of seen people, `known` those of them the
model answers right (every value token the argmax, teacher-forced) on >= min_right of the six attributes,
one held-out template each; `unseen` a random sample of held-out people, `matched` those of them whose
three name tokens all occur among the seen people's names, so that token identity alone cannot tell them
apart (layer 0, the embeddings, is the control: it sees only the last name token).

Prompt families stand in for the paper's entity types: templates that start with the name ("{name} was
born in") and templates with words before it ("The birth of {name} ..."). For the first family the
residual at the last name token depends on <bos> and the name only. Run by ``python -m biolab.mech
entities RUN_DIR`` (biolab.mech.entities_study).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from biolab.data.datamodule import template_ids
from biolab.data.population import N_EVAL_TEMPLATES, N_TEMPLATES
from biolab.data.templates import TEMPLATES
from biolab.mech.prompts import build_prompts, PromptSet
from biolab.mech.scoring import prompt_correct, inference

FAMILIES = ("name_first", "words_before")
SETS_STREAM, FAMILY_STREAM = 11, 12   # random streams of entity_sets and family_prompts


# ---- the sets -----------------------------------------------------------------------------------------
@dataclass
class EntitySets:
    seen: np.ndarray           # [s] seen people evaluated (indices into dm.seen)
    right: np.ndarray          # [s] attributes (of 6) each is answered right on
    known: np.ndarray          # seen people with right >= min_right
    unseen: np.ndarray         # [u] held-out people (indices into dm.unseen)
    matched: np.ndarray        # the unseen people whose three name tokens all occur among seen people

    def sizes(self) -> dict:
        return {"seen": len(self.seen), "known": len(self.known), "unseen": len(self.unseen),
                "matched": len(self.matched)}


def name_tokens(dm, population, people: np.ndarray) -> np.ndarray:
    """[n, 3] token ids of the people's first, middle and last names."""
    return np.array([dm.builder.name_ids(population, int(p)) for p in people], dtype=np.int64).reshape(-1, 3)


def token_matched(dm, unseen_people: np.ndarray) -> np.ndarray:
    """[n] bool: every name token of the unseen person occurs in some seen person's name."""
    seen_tokens = np.unique(name_tokens(dm, dm.seen, np.arange(len(dm.seen))))
    return np.isin(name_tokens(dm, dm.unseen, unseen_people), seen_tokens).all(1)


def sample_people(dm, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(seen [min(n, seen)], unseen [min(n, unseen)]) random people, fixed by the seed."""
    rng = np.random.default_rng([seed, SETS_STREAM])
    seen = np.sort(rng.choice(len(dm.seen), size=min(n, len(dm.seen)), replace=False))
    unseen = np.sort(rng.choice(len(dm.unseen), size=min(n, len(dm.unseen)), replace=False))
    return seen, unseen


def recall_counts(model, dm, people: np.ndarray, seed: int) -> np.ndarray:
    """[n] how many of dm.attributes each seen person is answered right on (one held-out template each)."""
    rng = np.random.default_rng([seed, SETS_STREAM, 1])
    n, n_attr = len(people), len(dm.attributes)
    slots = rng.integers(N_TEMPLATES - N_EVAL_TEMPLATES, N_TEMPLATES, size=(n, n_attr))
    templates = template_ids(dm.seen, people, dm.attributes, slots)                        # [n, attrs]
    prompts = build_prompts(dm, np.ones(n * n_attr, dtype=bool), np.repeat(people, n_attr),
                            np.tile(np.arange(n_attr), n), templates.reshape(-1))
    return prompt_correct(model, prompts).view(n, n_attr).sum(1).numpy()


def entity_sets(model, dm, n: int = 300, min_right: int = 2, seed: int = 0) -> EntitySets:
    seen, unseen = sample_people(dm, n, seed)
    right = recall_counts(model, dm, seen, seed)
    return EntitySets(seen=seen, right=right, known=seen[right >= min_right], unseen=unseen,
                      matched=unseen[token_matched(dm, unseen)])


# ---- prompts of a family ----------------------------------------------------------------------------
def family_templates(dm, family: str) -> list[np.ndarray]:
    """Per attribute of dm.attributes, the template indices of the family."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; allowed: {list(FAMILIES)}")
    first = family == "name_first"
    return [np.array([i for i, t in enumerate(TEMPLATES[a]) if t.startswith("{name}") == first])
            for a in dm.attributes]


def _family_rows(dm, n: int, seen: bool, family: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """([n] attributes, [n] templates): a random attribute and a random template of the family each."""
    rng = np.random.default_rng([seed, FAMILY_STREAM, FAMILIES.index(family), int(seen)])
    options = family_templates(dm, family)
    attributes = rng.integers(0, len(dm.attributes), size=n)
    return attributes, np.array([rng.choice(options[a]) for a in attributes], dtype=np.int64)


def family_prompts(dm, people: np.ndarray, seen: bool, family: str | tuple = FAMILIES, seed: int = 0) -> PromptSet:
    """One prompt per person and family (a family or a tuple of them, grouped by family): a random attribute
    and a random template of the family (any of the 25: the residual at the name does not depend on whether
    the template was trained on). A person's prompt of a family is the same whichever families are asked."""
    families = (family,) if isinstance(family, str) else tuple(family)
    rows = [_family_rows(dm, len(people), seen, f, seed) for f in families]
    return build_prompts(dm, np.full(len(people) * len(families), seen), np.tile(people, len(families)),
                         np.concatenate([a for a, _ in rows]), np.concatenate([t for _, t in rows]))


# ---- the residual stream at the last name token -------------------------------------------------------
def resid_hook(n_layers: int, layer: int) -> str:
    """Hook point of the residual stream after `layer` blocks (0 = the embeddings, n_layers = the last)."""
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer must be in 0..{n_layers}, got {layer}")
    return f"blocks.{layer}.hook_resid_pre" if layer < n_layers else f"blocks.{n_layers - 1}.hook_resid_post"


def residuals_at(model, tokens: torch.Tensor, positions: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """tokens [n, pos], positions [n] -> [layers + 1, n, d_model] residual stream at those positions."""
    n_layers = len(model.blocks)
    names = [resid_hook(n_layers, layer) for layer in range(n_layers + 1)]
    out = []
    with inference(model):
        for start in range(0, len(tokens), batch_size):
            where = positions[start:start + batch_size]                                 # [b]
            _, cache = model.run_with_cache(tokens[start:start + batch_size, :int(where.max()) + 1],
                                            names_filter=names)
            rows = torch.arange(len(where))
            out.append(torch.stack([cache[name][rows, where] for name in names]).float())   # [layers + 1, b, d]
    return torch.cat(out, 1)


def last_name_residuals(model, prompts: PromptSet) -> torch.Tensor:
    """[layers + 1, n, d_model] residual stream at each prompt's last name token."""
    return residuals_at(model, prompts.tokens, prompts.name_pos[:, 2])


# ---- linear separation ----------------------------------------------------------------------------------
def _folds(labels: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)


def out_of_fold_scores(x: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0,
                       c: float = 1.0) -> dict[str, np.ndarray]:
    """x [n, d], labels [n] (1 = known) -> {"diff_means": [n], "logistic": [n]} held-out scores: the
    projection on the train folds' mean(known) - mean(unknown), and an L2 logistic probe on standardised x."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = {"diff_means": np.zeros(len(x)), "logistic": np.zeros(len(x))}
    for train, test in _folds(labels, folds, seed):
        direction = x[train][labels[train] == 1].mean(0) - x[train][labels[train] == 0].mean(0)   # [d]
        scores["diff_means"][test] = x[test] @ direction
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, l1_ratio=0.0, max_iter=500))
        scores["logistic"][test] = probe.fit(x[train], labels[train]).decision_function(x[test])
    return scores


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (labels 1 = positive): the Mann-Whitney statistic, ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos = int((labels == 1).sum())
    n_neg = len(labels) - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auroc(scores: np.ndarray, labels: np.ndarray, n_boot: int = 200, seed: int = 0) -> list[float]:
    """95% interval of the AUROC over people resampled with replacement (within each class)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        values.append(auroc(scores[idx], labels[idx]))
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def linear_separation(x_known: torch.Tensor, x_unknown: torch.Tensor, folds: int = 5, seed: int = 0,
                      n_boot: int = 0) -> list[dict]:
    """x_known [layers + 1, a, d], x_unknown [layers + 1, b, d] -> per layer {"layer", "diff_means",
    "logistic"} out-of-fold AUROC (known = positive), with 95% bootstrap intervals when n_boot > 0."""
    labels = np.concatenate([np.ones(x_known.shape[1]), np.zeros(x_unknown.shape[1])]).astype(int)
    rows = []
    for layer in range(x_known.shape[0]):
        x = torch.cat([x_known[layer], x_unknown[layer]]).numpy()
        scores = out_of_fold_scores(x, labels, folds, seed)
        row = {"layer": layer, **{k: auroc(s, labels) for k, s in scores.items()}}
        if n_boot:
            row["logistic_ci"] = bootstrap_auroc(scores["logistic"], labels, n_boot, seed)
        rows.append(row)
    return rows


# ---- sparse-autoencoder latents that separate known from unknown people ---------------------------------
def separation_scores(active_known: dict[str, torch.Tensor], active_unknown: dict[str, torch.Tensor],
                      ordinary_rate: torch.Tensor, max_ordinary: float = 0.02) -> dict:
    """Per family f: acts [n, d_sae] bool of known and unknown people. s_known = f_known - f_unknown (fraction
    active), s_unknown the reverse; latents active on more than max_ordinary of ordinary biography tokens
    (ordinary_rate [d_sae]) are dropped. Returns the best latent of each kind by its worst score over the
    families ({"known": {"latent", "min_over_families", "per_family"}, "unknown": ...})."""
    s_known = torch.stack([active_known[f].float().mean(0) - active_unknown[f].float().mean(0)
                           for f in active_known])                                        # [families, d_sae]
    allowed = ordinary_rate <= max_ordinary                                               # [d_sae]
    out = {"latents_allowed": int(allowed.sum())}
    for kind, scores in (("known", s_known), ("unknown", -s_known)):
        worst = scores.min(0).values.masked_fill(~allowed, float("-inf"))                 # [d_sae]
        j = int(worst.argmax())
        out[kind] = {"latent": j, "min_over_families": float(worst[j]),
                     "per_family": dict(zip(active_known, scores[:, j].tolist())),
                     "ordinary_rate": float(ordinary_rate[j])}
    return out
