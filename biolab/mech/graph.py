"""The edge graph of a biolab Transformer and edge attribution on it: EAP, EAP-IG, exact edge patching.

SPEC section 9.2 (Knowledge Circuits, Yao et al. 2024; EAP-IG, Hanna et al. 2024). Nodes write
to the residual stream (upstream: the input embedding, every attention head, every MLP) or read
from it (downstream: each head's query, key and value input, each MLP's input, the logits). An
edge u -> d exists when u comes before d: a head of layer l reads the input and every head and MLP
of layers < l; the MLP of layer l also reads the heads of layer l; the logits read everything. An
8-layer, 8-head model has 6,637 edges, the quick-start (4 x 4) 479.

Removing an edge u -> d replaces u's contribution to d's input by its ablated value:

    x_d' = x_d + sum over removed u of (ablated_u - current_u)

computed with the model's hook points (blocks.{l}.hook_q_input/_k_/_v_, hook_mlp_in and the last
block's hook_resid_post as inputs; blocks.0.hook_resid_pre, attn.hook_result and hook_mlp_out as
outputs), so a patched forward is the model's own forward. The ablated value of u is its output on
the corrupted prompts (counterfactual), its mean over prompts of the same template (mean), or zero.

Attribution: EAP scores an edge by (ablated_u - clean_u) . dm/dx_d (first-order change of the
metric m when the edge is removed); EAP-IG averages that gradient over `ig_steps` inputs
interpolated between the ablated and the clean input embedding. Exact patching removes one edge
at a time and measures the change (the ground truth; 479 forwards on the quick-start).

    graph = Graph.of(model)
    ablated = ablated_outputs(model, graph, clean, corrupted, "counterfactual")     # [up, n, pos, d_model]
    scores = attribute(model, graph, clean, last, ablated, metric, ig_steps=5)      # [edges], predicted change
    exact = exact_patching(model, graph, clean, last, ablated, metric)              # [edges], measured change
    m = patched_metric(model, graph, clean, last, ablated, keep, metric)            # keep: [edges] bool

`last` [n] is each prompt's answer position: the metric sees the logits there only ([n, vocab]), so
the unembedding, 40% of the quick-start's forward, runs on one position per prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

from biolab.model import Transformer

ABLATIONS = ("counterfactual", "mean", "zero")
# (logits [n', vocab] at each prompt's answer position, the prompts' slice) -> [n']
Metric = Callable[[torch.Tensor, slice], torch.Tensor]


@dataclass(frozen=True)
class Graph:
    n_layers: int
    n_heads: int

    @classmethod
    def of(cls, model: Transformer) -> Graph:
        return cls(model.cfg.n_layers, model.cfg.n_heads)

    # ---- nodes ----------------------------------------------------------------------------------
    @property
    def upstream(self) -> list[str]:
        """input, a{l}.h{h}, m{l}, in forward order (index = position in the stacked outputs)."""
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"]
        return names

    @property
    def downstream(self) -> list[str]:
        """a{l}.h{h}.q/.k/.v, m{l}, logits, in forward order."""
        names = []
        for layer in range(self.n_layers):
            for kind in "qkv":
                names += [f"a{layer}.h{h}.{kind}" for h in range(self.n_heads)]
            names.append(f"m{layer}")
        return names + ["logits"]

    def n_upstream_before(self, down: int) -> int:
        """How many upstream nodes (a prefix of `upstream`) downstream node `down` reads."""
        per_layer = 3 * self.n_heads + 1
        layer, offset = divmod(down, per_layer)
        if layer == self.n_layers:  # logits
            return 1 + self.n_layers * (self.n_heads + 1)
        return 1 + layer * (self.n_heads + 1) + (self.n_heads if offset == 3 * self.n_heads else 0)

    # ---- edges ----------------------------------------------------------------------------------
    @cached_property  # read by every patched forward: built once per graph
    def valid(self) -> torch.Tensor:
        """[up, down] bool: which (upstream, downstream) pairs are edges."""
        mask = torch.zeros(len(self.upstream), len(self.downstream), dtype=torch.bool)
        for down in range(len(self.downstream)):
            mask[: self.n_upstream_before(down), down] = True
        return mask

    @cached_property
    def edges(self) -> list[tuple[int, int]]:
        """(upstream, downstream) index pairs, upstream-major order: the order of every [edges] vector."""
        return [tuple(pair) for pair in self.valid.nonzero().tolist()]

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def edge_names(self) -> list[str]:
        up, down = self.upstream, self.downstream
        return [f"{up[u]}->{down[d]}" for u, d in self.edges]

    def to_matrix(self, values: torch.Tensor) -> torch.Tensor:
        """[edges] -> [up, down] (zero where there is no edge)."""
        matrix = torch.zeros(self.valid.shape, dtype=values.dtype)
        matrix[self.valid] = values
        return matrix

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        return matrix[self.valid]

    def layer_slices(self, layer: int) -> tuple[slice, slice, slice, int]:
        """Downstream indices of layer `layer`: its q, k and v inputs (one per head) and its MLP."""
        base, h = layer * (3 * self.n_heads + 1), self.n_heads
        return slice(base, base + h), slice(base + h, base + 2 * h), slice(base + 2 * h, base + 3 * h), base + 3 * h


# ---- node outputs -----------------------------------------------------------------------------------

def _output_names(graph: Graph) -> list[str]:
    names = ["blocks.0.hook_resid_pre"]
    for layer in range(graph.n_layers):
        names += [f"blocks.{layer}.attn.hook_result", f"blocks.{layer}.hook_mlp_out"]
    return names


def _stack_outputs(graph: Graph, cache: dict[str, torch.Tensor]) -> torch.Tensor:
    """{hook name: activation} -> [up, n, pos, d_model] in `graph.upstream` order."""
    parts = [cache["blocks.0.hook_resid_pre"][None]]
    for layer in range(graph.n_layers):
        parts.append(cache[f"blocks.{layer}.attn.hook_result"].permute(2, 0, 1, 3))  # [head, n, pos, d_model]
        parts.append(cache[f"blocks.{layer}.hook_mlp_out"][None])
    return torch.cat(parts)


@torch.no_grad()
def node_outputs(model: Transformer, graph: Graph, tokens: torch.Tensor) -> torch.Tensor:
    """Every upstream node's output on `tokens` [n, pos]: [up, n, pos, d_model]."""
    _, cache = model.run_with_cache(tokens, names_filter=_output_names(graph))
    return _stack_outputs(graph, cache)


def ablated_outputs(model: Transformer, graph: Graph, clean: torch.Tensor, corrupted: torch.Tensor | None,
                    ablation: str, groups: torch.Tensor | None = None) -> torch.Tensor:
    """The value each upstream node's output takes when an edge from it is removed: [up, n, pos, d_model].

    counterfactual: its output on `corrupted` (same shape as clean); mean: its mean output over the
    clean prompts of the same group (e.g. the template, so positions align), at each position; zero.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {list(ABLATIONS)}, got {ablation!r}")
    if ablation == "counterfactual":
        if corrupted is None or corrupted.shape != clean.shape:
            raise ValueError("counterfactual ablation needs corrupted prompts of the clean prompts' shape")
        return node_outputs(model, graph, corrupted)
    outputs = node_outputs(model, graph, clean)
    if ablation == "zero":
        return torch.zeros_like(outputs)
    groups = torch.zeros(clean.shape[0], dtype=torch.long) if groups is None else groups
    mean = torch.empty_like(outputs)
    for group in groups.unique():
        members = groups == group
        mean[:, members] = outputs[:, members].mean(dim=1, keepdim=True)
    return mean


# ---- the patched forward ------------------------------------------------------------------------------

class _Patcher:
    """Hooks that record upstream outputs as they are computed and correct each downstream input by
    sum over removed edges of (ablated - current). removed: [up, down] float (1 = removed).

    The correction is computed from whichever edge set is smaller. With few edges removed, directly.
    With few kept (a small circuit), from the kept ones: the input of a downstream node is the sum of
    the upstream outputs before it plus constants (biases), so
        x' = x - sum_u current_u + sum_u ablated_u + sum over KEPT u of (current_u - ablated_u),
    where sum_u current_u is kept as a running sum and sum_u ablated_u is a prefix sum computed once.
    """

    def __init__(self, graph: Graph, ablated: torch.Tensor, removed: torch.Tensor,
                 prefix: torch.Tensor | None = None):
        self.graph, self.ablated, self.removed = graph, ablated, removed.to(ablated.dtype)
        self.current: list[torch.Tensor] = []  # upstream outputs of this forward, [n, pos, d_model] each
        self.current_sum: torch.Tensor | float = 0.0                        # sum of self.current
        self.prefix = prefix                    # ablated_prefix_sums(ablated), computed when first needed

    def ablated_prefix(self, count: int) -> torch.Tensor:
        """sum of the ablated outputs of the first `count` upstream nodes: [n, pos, d_model]."""
        if self.prefix is None:
            self.prefix = ablated_prefix_sums(self.ablated)
        return self.prefix[count]

    def _delta(self, down: slice | int) -> torch.Tensor | None:
        n_up = len(self.current)
        removed = self.removed[:n_up, down]                              # [up', heads] or [up']
        kept = 1.0 - removed
        removed_rows, kept_rows = _nonzero_rows(removed), _nonzero_rows(kept)
        if not removed_rows:
            return None
        if len(removed_rows) <= len(kept_rows):  # few removed: correct each of them
            diff = self.ablated[removed_rows] - self._stack(removed_rows)  # [rows, n, pos, d_model]
            return self._spread(diff, removed[removed_rows])
        # few kept: everything ablated, then the kept edges restored
        base = self.ablated_prefix(n_up) - self.current_sum              # [n, pos, d_model]
        if removed.dim() == 2:
            base = base[:, :, None]                                      # [n, pos, 1, d_model]: every head
        if not kept_rows:
            return base
        diff = self._stack(kept_rows) - self.ablated[kept_rows]          # [rows, n, pos, d_model]
        return base + self._spread(diff, kept[kept_rows])

    def _stack(self, rows: list[int]) -> torch.Tensor:
        return torch.stack([self.current[u] for u in rows])

    @staticmethod
    def _spread(diff: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if weights.dim() == 1:
            return torch.einsum("unpd,u->npd", diff, weights)
        return torch.einsum("unpd,uh->nphd", diff, weights)

    def hooks(self) -> list[tuple[str, Callable]]:
        hooks = [("blocks.0.hook_resid_pre", self._record)]
        for layer in range(self.graph.n_layers):
            q, k, v, mlp = self.graph.layer_slices(layer)
            for kind, down in zip("qkv", (q, k, v)):
                hooks.append((f"blocks.{layer}.hook_{kind}_input", self._correct(down)))
            hooks.append((f"blocks.{layer}.attn.hook_result", self._record_heads))
            hooks.append((f"blocks.{layer}.hook_mlp_in", self._correct(mlp)))
            hooks.append((f"blocks.{layer}.hook_mlp_out", self._record))
        hooks.append((f"blocks.{self.graph.n_layers - 1}.hook_resid_post", self._correct(len(self.graph.downstream) - 1)))
        return hooks

    def _record(self, activation, hook):
        self.current.append(activation)
        self.current_sum = self.current_sum + activation

    def _record_heads(self, activation, hook):  # [n, pos, head, d_model]
        self.current.extend(activation.unbind(2))
        self.current_sum = self.current_sum + activation.sum(2)

    def _correct(self, down):
        def hook(activation, hook_point):
            delta = self._delta(down)
            return activation if delta is None else activation + delta
        return hook


def _nonzero_rows(weights: torch.Tensor) -> list[int]:
    """Indices of the rows of [up'] or [up', heads] with any nonzero entry."""
    return weights.reshape(weights.shape[0], -1).any(1).nonzero()[:, 0].tolist()


def ablated_prefix_sums(ablated: torch.Tensor) -> torch.Tensor:
    """[up, n, pos, d_model] -> [up + 1, n, pos, d_model]: row k = sum of the first k upstream outputs."""
    return torch.cat([torch.zeros_like(ablated[:1]), ablated.cumsum(0)])


def patched_logits(model: Transformer, graph: Graph, tokens: torch.Tensor, ablated: torch.Tensor,
                   keep: torch.Tensor, prefix: torch.Tensor | None = None,
                   at: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [n, pos, vocab] of the model with only the edges in `keep` ([edges] bool) left intact;
    with `at` ([n] positions) only there, [n, vocab]. prefix: ablated_prefix_sums(ablated), when many
    patched forwards share one `ablated`."""
    removed = graph.to_matrix((~keep.bool()).float())
    patcher = _Patcher(graph, ablated, removed, prefix)
    with model.analysis_hooks():
        return model.run_with_hooks(tokens, at, fwd_hooks=patcher.hooks())


@torch.no_grad()
def patched_metric(model: Transformer, graph: Graph, tokens: torch.Tensor, last: torch.Tensor,
                   ablated: torch.Tensor, keep: torch.Tensor, metric: Metric, batch_size: int = 512,
                   prefix: torch.Tensor | None = None) -> torch.Tensor:
    """The per-prompt metric [n] with only the edges in `keep` intact, in batches of prompts."""
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        part = slice(start, start + batch_size)
        logits = patched_logits(model, graph, tokens[part], ablated[:, part], keep,
                                None if prefix is None else prefix[:, part], last[part])  # [n', vocab]
        out.append(metric(logits, part))
    return torch.cat(out)


# ---- attribution -------------------------------------------------------------------------------------

def _input_gradients(model: Transformer, graph: Graph, tokens: torch.Tensor, last: torch.Tensor,
                     embed_start: torch.Tensor, alpha: float, metric: Metric, part: slice) -> torch.Tensor:
    """d mean(metric) / d(input of every downstream node), with the input embedding at
    embed_start + alpha (clean - embed_start): [down, n, pos, d_model]."""
    inputs: dict[str, torch.Tensor] = {}

    def interpolate(activation, hook):  # the input node's output (a leaf that requires grad)
        return (embed_start + alpha * (activation - embed_start)).detach().requires_grad_(True)

    def keep(activation, hook):
        activation.retain_grad()
        inputs[hook.name] = activation

    names = []
    for layer in range(graph.n_layers):
        names += [f"blocks.{layer}.hook_{kind}_input" for kind in "qkv"] + [f"blocks.{layer}.hook_mlp_in"]
    names.append(f"blocks.{graph.n_layers - 1}.hook_resid_post")
    with torch.enable_grad(), model.analysis_hooks():
        logits = model.run_with_hooks(tokens, last, fwd_hooks=[("blocks.0.hook_resid_pre", interpolate)]
                                      + [(name, keep) for name in names])       # [n', vocab]
        metric(logits, part).sum().backward()
    grads = []
    for name in names:  # graph.downstream order: q, k, v inputs of each head, the MLP, ..., the logits
        tensor = inputs[name]
        grad = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
        grads.extend(grad.unbind(2) if grad.dim() == 4 else [grad])  # [n, pos, head, d_model]: one per head
    return torch.stack(grads)                                            # [down, n, pos, d_model]


def attribute(model: Transformer, graph: Graph, tokens: torch.Tensor, last: torch.Tensor, ablated: torch.Tensor,
              metric: Metric, ig_steps: int = 0, batch_size: int = 64, positions: torch.Tensor | None = None):
    """Predicted change of the mean metric when each edge alone is removed: [edges].

    ig_steps=0: EAP (gradient at the clean input); ig_steps=k: EAP-IG, the gradient averaged over k
    inputs interpolated between the ablated and the clean input embedding (alpha = 1/k, ..., 1).
    positions [n, pos] bool: also return the part of each score carried by these positions.
    """
    if not (isinstance(ig_steps, int) and ig_steps >= 0):
        raise ValueError(f"ig_steps must be an integer >= 0, got {ig_steps!r}")
    n = tokens.shape[0]
    clean = node_outputs(model, graph, tokens)                            # [up, n, pos, d_model]
    alphas = [1.0] if ig_steps == 0 else [(i + 1) / ig_steps for i in range(ig_steps)]
    scores = torch.zeros(graph.valid.shape)                               # [up, down]
    at_positions = torch.zeros(graph.valid.shape)
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        grad = sum(_input_gradients(model, graph, tokens[part], last[part], ablated[0, part], a, metric, part)
                   for a in alphas)
        diff = ablated[:, part] - clean[:, part]                          # [up, n', pos, d_model]
        grad = grad / len(alphas)                                         # [down, n', pos, d_model]
        scores += torch.einsum("unpd,vnpd->uv", diff, grad)
        if positions is not None:
            at_positions += torch.einsum("unpd,vnpd,np->uv", diff, grad, positions[part].float())
    result = graph.from_matrix(scores) / n
    return result if positions is None else (result, graph.from_matrix(at_positions) / n)


@torch.no_grad()
def exact_patching(model: Transformer, graph: Graph, tokens: torch.Tensor, last: torch.Tensor,
                   ablated: torch.Tensor, metric: Metric,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Measured change of the mean metric when each edge alone is removed: [edges]."""
    n_edges = graph.n_edges
    prefix = ablated_prefix_sums(ablated)
    full = patched_metric(model, graph, tokens, last, ablated, torch.ones(n_edges, dtype=torch.bool), metric).mean()
    changes = torch.empty(n_edges)
    for i in range(n_edges):
        keep = torch.ones(n_edges, dtype=torch.bool)
        keep[i] = False
        changes[i] = patched_metric(model, graph, tokens, last, ablated, keep, metric, prefix=prefix).mean() - full
        if progress is not None:
            progress(i + 1, n_edges)
    return changes
