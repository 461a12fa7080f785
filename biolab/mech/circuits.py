"""Knowledge circuits of one snapshot: edge attribution, faithfulness against edge budget, head roles.

SPEC section 9.2 and its guards. A pure function of (model, clean prompts, corrupted prompts,
options): ``analyse_circuits`` returns one JSON-ready dict. The clean prompts ask a person's
attribute ("<bos> Ada Mae Smith was born in"); each corrupted prompt asks another person the same
question with the same template and an answer with another first token. The metric is the logit
difference between the clean and the corrupted answer's first token at the last position.

- attribution: EAP-IG scores of every edge (biolab.mech.graph), plus plain EAP;
- faithfulness F = (m_circuit - m_none) / (m_all - m_none) of the top-k edges by |score| for
  budgets of 1% ... 50% of the edges, beside `random_sets` random edge sets of each size
  (never one number: a "circuit" of a 16-head model can be most of the model);
- edges_for_faithfulness: the smallest budget on a fine grid (8 points per doubling) reaching
  F >= `target` (0.7), located per doubling first (biolab.mech.circuits.smallest_budget);
- Hit@10 of that circuit alone against the full model's (first-token rank over the vocabulary);
- head roles: attention from the last position to the name tokens and to the relation words;
- name-to-last edges: circuit edges into a head's key or value input whose attribution comes
  mostly (>= 50%) from the name positions, i.e. edges that move the person to the answer;
- optionally exact single-edge patching (ground truth) and the Spearman correlation of EAP and
  EAP-IG with it, under each ablation.

    result = analyse_circuits(model, clean, corrupted, CircuitOptions(ig_steps=5, exact=True))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from biolab.data.biographies import ROLE_NAME, ROLE_TEXT
from biolab.mech.graph import (ABLATIONS, Graph, ablated_outputs, ablated_prefix_sums, attribute, exact_patching,
                               patched_logits, patched_metric)
from biolab.mech.prompts import PromptSet
from biolab.mech.scoring import first_token_rank, hit_at_k, logit_diff

BUDGETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


@dataclass
class CircuitOptions:
    ig_steps: int = 5               # EAP-IG interpolation steps (0: plain EAP only)
    ablation: str = "counterfactual"  # counterfactual | mean | zero: what a removed edge carries
    budgets: tuple = BUDGETS        # fractions of all edges for the faithfulness curve
    random_sets: int = 20           # random edge sets per budget (the control)
    target: float = 0.7             # faithfulness the "circuit" must reach
    exact: bool = False             # exact single-edge patching (ground truth; one forward per edge)
    exact_ablations: tuple = ABLATIONS  # ablations under which exact patching is compared (when exact)
    exact_prompts: int = 60         # exact patching (and the attribution it is compared with) on <= this many prompts
    min_effect: float = 0.5         # |m_all - m_none| below this: nothing to explain, F is not computed
    seed: int = 0
    batch_size: int = 512             # prompts per patched forward
    progress: object = field(default=None, repr=False)  # progress(done, total) during exact patching

    def __post_init__(self):
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {list(ABLATIONS)}, got {self.ablation!r}")
        if not all(isinstance(b, (int, float)) and 0 < b <= 1 for b in self.budgets):
            raise ValueError(f"budgets must be fractions in (0, 1], got {list(self.budgets)}")
        if not (isinstance(self.random_sets, int) and self.random_sets >= 1):
            raise ValueError(f"random_sets must be an integer >= 1, got {self.random_sets!r}")
        if not 0 < self.target <= 1:
            raise ValueError(f"target must be in (0, 1], got {self.target!r}")


def logit_diff_metric(clean: PromptSet, corrupted: PromptSet):
    """metric(logits [n', vocab] at the prompts' last positions, part) -> [n'] logit difference."""
    def metric(at_last: torch.Tensor, part: slice) -> torch.Tensor:
        return logit_diff(at_last, clean.subset(part), corrupted.subset(part))
    return metric


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    ra, rb = (_average_ranks(np.asarray(x, dtype=float)) for x in (a, b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="mergesort")] = np.arange(len(x), dtype=float)
    _, inverse = np.unique(x, return_inverse=True)
    return (np.bincount(inverse, weights=ranks) / np.bincount(inverse))[inverse]


def budget_grid(n_edges: int) -> list[int]:
    """Edge counts from 1 to all, about 8 per factor of 2 (the search grid for edges_for_faithfulness)."""
    grid = {max(1, min(n_edges, round(2 ** (i / 8)))) for i in range(int(8 * math.log2(n_edges)) + 1)}
    return sorted(grid | {n_edges})


def smallest_budget(faithfulness, grid: list[int], target: float, stride: int = 8) -> int | None:
    """The smallest k on `grid` with faithfulness(k) >= target, found with few patched forwards: every
    `stride`-th grid point (one per doubling of k) first, then the points between the last one below
    the target and the first one above. Exact when faithfulness rises with k (a circuit's top-k edges);
    where it does not, the first crossing within the located doubling."""
    coarse = grid[::stride] if grid[::stride][-1] == grid[-1] else grid[::stride] + [grid[-1]]
    below = None
    for k in coarse:
        if faithfulness(k) >= target:
            start = 0 if below is None else grid.index(below) + 1
            return next(j for j in grid[start:grid.index(k) + 1] if j == k or faithfulness(j) >= target)
        below = k
    return None


def _top_k(order: torch.Tensor, k: int, n_edges: int) -> torch.Tensor:
    keep = torch.zeros(n_edges, dtype=torch.bool)
    keep[order[:k]] = True
    return keep


class _Faithfulness:
    """F of any edge set, with the all-kept and none-kept metrics computed once."""

    def __init__(self, model, graph, tokens, last, ablated, metric, batch_size, min_effect):
        self.args = (model, graph, tokens, last, ablated)
        self.metric, self.batch_size = metric, batch_size
        self.prefix = ablated_prefix_sums(ablated)  # shared by every patched forward of the sweep
        n_edges = graph.n_edges
        self.m_all = self.mean(torch.ones(n_edges, dtype=torch.bool))
        self.m_none = self.mean(torch.zeros(n_edges, dtype=torch.bool))
        self.effect = self.m_all - self.m_none
        self.defined = abs(self.effect) >= min_effect

    def mean(self, keep: torch.Tensor) -> float:
        return patched_metric(*self.args, keep, self.metric, self.batch_size, self.prefix).mean().item()

    def __call__(self, keep: torch.Tensor) -> float:
        return (self.mean(keep) - self.m_none) / self.effect if self.defined else float("nan")


def analyse_circuits(model, clean: PromptSet, corrupted: PromptSet, options: CircuitOptions | None = None) -> dict:
    """Everything this module measures on one snapshot (see the module docstring); JSON-ready."""
    options = options or CircuitOptions()
    graph = Graph.of(model)
    n_edges, tokens = graph.n_edges, clean.tokens
    metric = logit_diff_metric(clean, corrupted)
    groups = clean.attribute * 1000 + clean.template                     # mean ablation: same template
    ablated = ablated_outputs(model, graph, tokens, corrupted.tokens, options.ablation, groups)
    name_mask = clean.role == ROLE_NAME                                  # [n, pos]
    last = clean.last
    ig, ig_at_names = attribute(model, graph, tokens, last, ablated, metric, options.ig_steps, positions=name_mask)
    eap = attribute(model, graph, tokens, last, ablated, metric, 0) if options.ig_steps else ig
    order = ig.abs().argsort(descending=True)
    faith = _Faithfulness(model, graph, tokens, last, ablated, metric, options.batch_size, options.min_effect)
    rng = torch.Generator().manual_seed(options.seed)

    def random_f(k: int) -> list[float]:
        return [faith(_top_k(torch.randperm(n_edges, generator=rng), k, n_edges)) for _ in range(options.random_sets)]

    curve = []
    for fraction in options.budgets:
        k = max(1, round(fraction * n_edges))
        rand = random_f(k) if faith.defined else []
        curve.append({"fraction": fraction, "edges": k, "faithfulness": faith(_top_k(order, k, n_edges)),
                      "random_mean": _mean(rand), "random_sd": _sd(rand), "random_max": max(rand, default=None)})
    needed = smallest_budget(lambda k: faith(_top_k(order, k, n_edges)), budget_grid(n_edges),
                             options.target) if faith.defined else None
    rand_needed = random_f(needed) if needed else []
    circuit = _top_k(order, needed, n_edges) if needed else None
    result = {
        "n_prompts": len(clean), "n_edges": n_edges, "ablation": options.ablation, "ig_steps": options.ig_steps,
        "target": options.target,
        "metric_clean": faith.m_all, "metric_none": faith.m_none, "effect": faith.effect,
        "faithfulness_defined": faith.defined,
        "edges_for_faithfulness": needed, "edges_for_faithfulness_fraction": needed / n_edges if needed else None,
        "random_faithfulness_at_that_budget": _mean(rand_needed),
        "random_faithfulness_at_that_budget_sd": _sd(rand_needed),
        "faithfulness_curve": curve,
        **_hits(model, graph, clean, ablated, circuit, options.batch_size),
        "heads": head_roles(model, clean),
        "edge_order": order.tolist(),  # every edge, by |EAP-IG score|: circuits of any budget, overlaps
        "eap_ig": ig.tolist(), "eap": eap.tolist(),
        "name_share": _name_share(ig, ig_at_names).tolist(),
    }
    result.update(name_to_last(graph, circuit, result["name_share"]))
    if options.exact:
        # every k-th prompt (all attributes and templates kept): one patched forward per edge and ablation
        sub = torch.arange(0, len(clean), max(1, math.ceil(len(clean) / options.exact_prompts)))
        result["exact_prompts"] = len(sub)
        result["exact"] = exact_comparison(model, graph, clean.subset(sub), corrupted.subset(sub), options,
                                           groups[sub])
    return result


def exact_comparison(model, graph, clean, corrupted, options, groups) -> dict:
    """Under each ablation: exact single-edge patching, and Spearman of EAP and EAP-IG with it, on the
    same prompts."""
    metric = logit_diff_metric(clean, corrupted)
    out = {}
    for ablation in options.exact_ablations:
        ablated = ablated_outputs(model, graph, clean.tokens, corrupted.tokens, ablation, groups)
        exact = exact_patching(model, graph, clean.tokens, clean.last, ablated, metric, options.progress)
        ig = attribute(model, graph, clean.tokens, clean.last, ablated, metric, max(options.ig_steps, 1))
        eap = attribute(model, graph, clean.tokens, clean.last, ablated, metric, 0)
        out[ablation] = {"exact": exact.tolist(),
                         "eap_ig_vs_exact_spearman": spearman(ig, exact),
                         "eap_vs_exact_spearman": spearman(eap, exact),
                         "eap_ig_vs_exact_spearman_abs": spearman(ig.abs(), exact.abs())}
    return out


def _hits(model, graph, clean: PromptSet, ablated, circuit, batch_size) -> dict:
    """Hit@10 (first token over the vocabulary) of the full model and of the circuit alone."""
    def ranks(keep):
        out = []
        for start in range(0, len(clean), batch_size):
            part = slice(start, start + batch_size)
            at_last = patched_logits(model, graph, clean.tokens[part], ablated[:, part], keep,
                                     at=clean.last[part])                 # [n', vocab]
            out.append(first_token_rank(at_last, clean.subset(part)))
        return torch.cat(out)
    with torch.no_grad():
        full = hit_at_k(ranks(torch.ones(graph.n_edges, dtype=torch.bool)), 10)
        alone = hit_at_k(ranks(circuit), 10) if circuit is not None else None
    return {"hit10_full": full, "hit10_circuit": alone,
            "hit10_circuit_over_full": alone / full if alone is not None and full > 0 else None}


@torch.no_grad()
def head_roles(model, prompts: PromptSet) -> dict:
    """Per layer and head, the mean attention from the last position to the name tokens and to the
    relation words (template words other than <bos>): {"to_name": [[...]], "to_relation": [[...]]}."""
    n_layers = model.cfg.n_layers
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    _, cache = model.run_with_cache(prompts.tokens, names_filter=names)
    rows = torch.arange(len(prompts))
    to_name, to_relation = [], []
    for name in names:
        at_last = cache[name][rows, :, prompts.last]                       # [n, head, key]
        to_name.append((at_last * (prompts.role == ROLE_NAME)[:, None]).sum(-1).mean(0).tolist())
        to_relation.append((at_last * (prompts.role == ROLE_TEXT)[:, None]).sum(-1).mean(0).tolist())
    return {"to_name": to_name, "to_relation": to_relation}


def _name_share(scores: torch.Tensor, at_names: torch.Tensor) -> torch.Tensor:
    """Share of an edge's attribution carried by the name positions, |names| / (|names| + |rest|)."""
    rest = scores - at_names
    total = at_names.abs() + rest.abs()
    return torch.where(total > 0, at_names.abs() / total.clamp_min(1e-30), torch.zeros_like(total))


def name_to_last(graph: Graph, circuit: torch.Tensor | None, name_share: list[float]) -> dict:
    """Circuit edges into a head's key or value input whose attribution comes mostly from the name positions."""
    if circuit is None:
        return {"name_to_last_edges": None, "name_to_last_edge_names": []}
    down_names, names = graph.downstream, graph.edge_names()
    chosen = [i for i, (u, d) in enumerate(graph.edges)
              if circuit[i] and down_names[d][-2:] in (".k", ".v") and name_share[i] >= 0.5]
    return {"name_to_last_edges": len(chosen), "name_to_last_edge_names": [names[i] for i in chosen]}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _sd(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) > 1 else None
