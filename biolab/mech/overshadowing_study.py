"""Knowledge overshadowing across training: ``python -m biolab.mech overshadowing RUN_DIR [key=value ...]``.

For every snapshot of a run trained with look-alike pairs (experiment=overshadowing_cpu), biolab.mech.
overshadowing measures every pair (all 5 evaluation templates per attribute by default), and at the
RO peak and the final snapshot the circuit view runs. Writes RUN_DIR/mech/overshadowing/ (or out=DIR):

    steps/step_<k>.json   per-pair AO, R_dom, R_sub, p_dom, p_sub, prior at one snapshot (resumable)
    table.csv             one row per (step, kind, P): the group means and RO
    summary.json          RO per P at the overshadowing peak (the snapshot where the largest P's AO most
                          exceeds its prior control) and at the end, with 95% bootstrap intervals over pairs;
                          peak_by_p: each P at its own peak (AO - prior, AO, R_dom, RO) and
                          spearman_logp_peak_ao_excess;
                          ro_gap = RO(largest P) - RO(1) with its interval, spearman_logp_ro, the prior
                          control, peak_step beside the plateau end and the 50%-accuracy step, recovery,
                          the controls, and the circuit view
    ro_by_p.png           RO against P at the peak and at the end (intervals), and RO against step per P
                          on the loss curve's step axis, the plateau shaded

Circuit view (at the peak and the final snapshot; biolab.mech.graph): clean = the rare person's prompt,
corrupted = the dominant person with the same template, metric = logit(Y_sub) - logit(Y_dom). EAP-IG
ranks the edges; "circuit-based recovery": on the rare prompts answered with the dominant value, keep
only the top-k edges and give every other edge the dominant prompt's activation; how many answers flip
to the rare person's value, beside random edge sets of the same size; the mirror check on the dominant
prompts (others given the rare prompt's activation) says whether the dominant answers survive. Head
roles: attention from the last position to the middle name (the one token that tells the pair apart).

Options (key=value): templates_per_attribute=5, prior_per_pair=4, steps=all (or a list), circuit_edges=0.05
(the top-k budget, a fraction of the edges), random_sets=20, ig_steps=5, bootstrap=2000, seed=0, out=DIR.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from biolab.errors import ConfigError
from biolab.io import write_csv, write_json
from biolab.mech.circuits import logit_diff_metric, spearman
from biolab.mech.graph import Graph, ablated_outputs, attribute, patched_logits
from biolab.mech.overshadowing import MIN_R_DOM, group_key, measure, overshadowing_prompts, summarise
from biolab.mech.prompts import build_prompts
from biolab.mech.track import requested_steps, track
from biolab.runs import load_run

DEFAULTS = {"templates_per_attribute": 5, "prior_per_pair": 4, "steps": "all", "circuit_edges": 0.05,
            "random_sets": 20, "ig_steps": 5, "bootstrap": 2000, "seed": 0, "out": None}


def check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for overshadowing; allowed: {', '.join(DEFAULTS)}")
    merged = {**DEFAULTS, **options}
    for key in ("templates_per_attribute", "prior_per_pair", "random_sets", "bootstrap"):
        if not (isinstance(merged[key], int) and not isinstance(merged[key], bool) and merged[key] >= 1):
            raise ConfigError(f"{key} must be an integer >= 1, got {merged[key]!r}")
    if not (isinstance(merged["circuit_edges"], (int, float)) and 0 < merged["circuit_edges"] <= 1):
        raise ConfigError(f"circuit_edges must be a fraction in (0, 1], got {merged['circuit_edges']!r}")
    steps = merged["steps"]
    if not (steps == "all" or (isinstance(steps, list) and steps and all(isinstance(s, int) for s in steps))):
        raise ConfigError(f"steps must be 'all' or a non-empty list of steps, got {steps!r}")
    return merged


# ---- per-pair statistics -------------------------------------------------------------------------------
def ro_of(per_pair: dict, members: np.ndarray) -> float | None:
    ao, r_dom = per_pair["ao"][members].mean(), per_pair["r_dom"][members].mean()
    return float(ao / r_dom) if r_dom >= MIN_R_DOM else None


def bootstrap_ro(per_pair: dict, members: np.ndarray, n: int, rng: np.random.Generator) -> list[float] | None:
    """95% interval of RO of a group, resampling its pairs."""
    index = np.flatnonzero(members)
    values = [ro for _ in range(n) if (ro := ro_of(per_pair, rng.choice(index, size=len(index)))) is not None]
    return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) >= n // 2 else None


def bootstrap_gap(per_pair: dict, low: np.ndarray, high: np.ndarray, n: int, rng) -> list[float] | None:
    """95% interval of RO(high group) - RO(low group), resampling the pairs of each."""
    gaps = []
    for _ in range(n):
        ro_high, ro_low = (ro_of(per_pair, rng.choice(np.flatnonzero(m), size=int(m.sum()))) for m in (high, low))
        if ro_high is not None and ro_low is not None:
            gaps.append(ro_high - ro_low)
    return [float(v) for v in np.percentile(gaps, [2.5, 97.5])] if len(gaps) >= n // 2 else None


def _as_arrays(result: dict) -> dict:
    return {k: np.asarray(v) for k, v in result["per_pair"].items()}


# ---- circuit view ----------------------------------------------------------------------------------------
def circuit_view(model, dm, prompts, options: dict) -> dict:
    """EAP-IG on rare vs dominant prompts, circuit-based recovery against random edge sets, the mirror
    check on the dominant prompts, and attention from the last position to the middle name."""
    rare = prompts.rare
    pairs = dm.lookalikes
    dominant_people = pairs.dominant[prompts.rare_pair.numpy()]
    twin = build_prompts(dm, np.ones(len(rare), bool), dominant_people, rare.attribute.numpy(),
                         rare.template.numpy(), pos=rare.tokens.shape[1])      # same template, dominant person
    graph = Graph.of(model)
    metric = logit_diff_metric(rare, twin)                                     # logit(Y_sub) - logit(Y_dom)
    ablated = ablated_outputs(model, graph, rare.tokens, twin.tokens, "counterfactual")
    scores = attribute(model, graph, rare.tokens, rare.last, ablated, metric, options["ig_steps"])
    k = max(1, round(options["circuit_edges"] * graph.n_edges))
    order = scores.abs().argsort(descending=True)
    rng = torch.Generator().manual_seed(options["seed"])

    def keep_of(edges: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros(graph.n_edges, dtype=torch.bool)
        keep[edges[:k]] = True
        return keep

    with torch.no_grad():
        full = patched_logits(model, graph, rare.tokens, ablated, torch.ones(graph.n_edges, dtype=torch.bool),
                              at=rare.last).argmax(-1)
        overshadowed = full == twin.answer_first                                # rare answered with Y_dom

        def flips(keep: torch.Tensor) -> float | None:
            if not overshadowed.any():
                return None
            answer = patched_logits(model, graph, rare.tokens[overshadowed], ablated[:, overshadowed], keep,
                                    at=rare.last[overshadowed]).argmax(-1)
            return float((answer == rare.answer_first[overshadowed]).float().mean())

        circuit = keep_of(order)
        random_flips = [flips(keep_of(torch.randperm(graph.n_edges, generator=rng))) for _ in range(options["random_sets"])]
        mirror = ablated_outputs(model, graph, twin.tokens, rare.tokens, "counterfactual")
        dominant_right = patched_logits(model, graph, twin.tokens, mirror, circuit, at=twin.last).argmax(-1)
        dominant_full = model(twin.tokens, twin.last).argmax(-1)
    random_flips = [f for f in random_flips if f is not None]
    names = graph.edge_names()
    return {
        "n_prompts": len(rare), "n_overshadowed": int(overshadowed.sum()), "circuit_edges": k,
        "top_edges": [names[i] for i in order[:k].tolist()],
        "recovery_flip_rate": flips(circuit),
        "recovery_flip_rate_random_mean": float(np.mean(random_flips)) if random_flips else None,
        "recovery_flip_rate_random_sd": float(np.std(random_flips, ddof=1)) if len(random_flips) > 1 else None,
        "dominant_accuracy_full": float((dominant_full == twin.answer_first).float().mean()),
        "dominant_accuracy_circuit_only": float((dominant_right == twin.answer_first).float().mean()),
        "attention_to_middle_name": middle_name_attention(model, rare),
    }


@torch.no_grad()
def middle_name_attention(model, prompts) -> list[list[float]]:
    """[layer][head] mean attention from the last position to the middle-name token."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(prompts.tokens, names_filter=names)
    rows = torch.arange(len(prompts))
    return [cache[name][rows, :, prompts.last, prompts.name_pos[:, 1]].mean(0).tolist() for name in names]


# ---- the study ---------------------------------------------------------------------------------------------
def run_overshadowing(run_dir: str | Path, log=print, **options) -> dict:
    options = check_options(options)
    run = load_run(run_dir)
    steps = requested_steps(run, options["steps"])
    dm = run.datamodule()
    prompts = overshadowing_prompts(dm, options["templates_per_attribute"], options["prior_per_pair"], options["seed"])
    out_dir = Path(options["out"]) if options["out"] else run.dir / "mech" / "overshadowing"
    log(f"overshadowing of {run.dir}: {len(steps)} snapshots, {len(prompts.level)} pairs, {len(prompts.rare)} rare "
        f"prompts -> {out_dir}")
    saved = {k: v for k, v in options.items() if k != "out"}
    results = track(run, out_dir, lambda model, step: {"per_pair": {k: v.tolist() for k, v in
                                                                    measure(model, prompts).items()}},
                    steps, saved, log)
    summary = summarise_study(results, prompts, run, options)
    for name, step in (("peak", summary["peak_step"]), ("final", steps[-1])):
        if step is None:
            continue
        path = out_dir / f"circuit_{name}.json"
        if not path.is_file():
            log(f"circuit view at step {step} ({name})")
            write_json(path, {"step": step, **circuit_view(run.model(step), dm, prompts, options)})
        summary[f"circuit_{name}"] = json.loads(path.read_text())
    summary["recovery_flip_rate"] = (summary.get("circuit_peak") or summary.get("circuit_final") or {}).get(
        "recovery_flip_rate")
    write_csv(out_dir / "table.csv", summary.pop("rows"))
    write_json(out_dir / "summary.json", summary)
    from biolab.mech.plots import plot_overshadowing_study

    plot_overshadowing_study(summary, run.metrics(), out_dir / "ro_by_p.png", title=str(run.dir))
    return summary


def peak_step(results: dict[int, dict], prompts, level: float) -> int | None:
    """The snapshot where the level-P pairs' AO most exceeds their prior control (AO - prior), among those
    with R_dom >= 0.05. Not the largest RO: before anything is known every answer is the attribute's most
    frequent first token, AO, R_dom and the prior sit at the same floor and RO ~ 1 means nothing."""
    members = (prompts.kind == "pair") & (prompts.level == level)
    best, best_excess = None, 0.0
    for step in sorted(results):
        per_pair = _as_arrays(results[step])
        if per_pair["r_dom"][members].mean() < MIN_R_DOM:
            continue
        excess = float(per_pair["ao"][members].mean() - per_pair["prior"][members].mean())
        if excess > best_excess:
            best, best_excess = step, excess
    return best


def peak_by_p(results: dict[int, dict], prompts, levels: list[float], n: int, rng) -> dict:
    """Per level P, its own overshadowing peak (peak_step at that P): the step, AO - prior with a 95% bootstrap
    interval over pairs, AO, R_dom and RO there. Smaller P learn the dominant fact later, so one common step
    compares pairs at different stages; each P's own peak does not."""
    out = {}
    for p in levels:
        members = (prompts.kind == "pair") & (prompts.level == p)
        step = peak_step(results, prompts, p)
        row = {"step": step, "ao_excess": None, "ao_excess_95": None, "ao": None, "r_dom": None, "ro": None}
        if step is not None:
            per_pair = _as_arrays(results[step])
            excess = per_pair["ao"][members] - per_pair["prior"][members]                    # [pairs of P]
            boots = [rng.choice(excess, size=len(excess)).mean() for _ in range(n)]
            row.update(ao_excess=float(excess.mean()), ao_excess_95=[float(v) for v in np.percentile(boots, [2.5, 97.5])],
                       ao=float(per_pair["ao"][members].mean()), r_dom=float(per_pair["r_dom"][members].mean()),
                       ro=ro_of(per_pair, members))
        out[f"{p:g}"] = row
    return out


def summarise_study(results: dict[int, dict], prompts, run, options: dict) -> dict:
    steps = sorted(results)
    kind, level = prompts.kind, prompts.level
    pair_levels = sorted(set(level[kind == "pair"].tolist()))
    groups = {step: summarise(_as_arrays(results[step]), prompts) for step in steps}  # {step: {group: row}}
    rows = [{"step": step, "group": group, **row} for step in steps for group, row in groups[step].items()
            if group != "prior"]
    ro_curves = {step: {p: groups[step][group_key("pair", p)]["ro"] for p in pair_levels} for step in steps}
    top = pair_levels[-1]
    peak = peak_step(results, prompts, top)
    rng = np.random.default_rng(options["seed"])
    summary = {"n_pairs": int(len(level)), "pair_levels": pair_levels, "steps": steps, "peak_step": peak,
               "peak_definition": f"the snapshot of largest AO - prior at P = {top:g} (R_dom >= {MIN_R_DOM})",
               "final_step": steps[-1], "min_r_dom": MIN_R_DOM}
    for name, step in (("peak", peak), ("end", steps[-1])):
        if step is None:
            continue
        per_pair = _as_arrays(results[step])
        by_p = {}
        for p in pair_levels:
            members = (kind == "pair") & (level == p)
            by_p[f"{p:g}"] = {"ro": ro_of(per_pair, members), "ro_95": bootstrap_ro(per_pair, members,
                                                                                    options["bootstrap"], rng)}
        summary[f"ro_by_p_{name}"] = by_p
        low, high = (kind == "pair") & (level == pair_levels[0]), (kind == "pair") & (level == top)
        ro_low, ro_high = ro_of(per_pair, low), ro_of(per_pair, high)
        summary[f"ro_gap_{name}"] = None if ro_low is None or ro_high is None else ro_high - ro_low
        summary[f"ro_gap_{name}_95"] = bootstrap_gap(per_pair, low, high, options["bootstrap"], rng)
        pairs_ro = [(p, by_p[f"{p:g}"]["ro"]) for p in pair_levels if by_p[f"{p:g}"]["ro"] is not None]
        summary[f"spearman_logp_ro_{name}"] = (spearman([math.log(p) for p, _ in pairs_ro], [r for _, r in pairs_ro])
                                               if len(pairs_ro) >= 3 else None)
        summary[f"prior_control_rate_{name}"] = float(per_pair["prior"].mean())
        summary[f"controls_{name}"] = {g: r for g, r in groups[step].items()
                                       if g != "prior" and not g.startswith("pair/")}
    summary["peak_by_p"] = peak_by_p(results, prompts, pair_levels, options["bootstrap"], rng)
    excess = [(p, row["ao_excess"]) for p, row in ((p, summary["peak_by_p"][f"{p:g}"]) for p in pair_levels)
              if row["step"] is not None]
    summary["spearman_logp_peak_ao_excess"] = (spearman([math.log(p) for p, _ in excess], [e for _, e in excess])
                                               if len(excess) >= 3 else None)
    summary["ro_gap"] = summary.get("ro_gap_peak")
    summary["ro_gap_95"] = summary.get("ro_gap_peak_95")
    summary["spearman_logp_ro"] = summary.get("spearman_logp_ro_peak")
    summary["prior_control_rate"] = summary.get("prior_control_rate_peak")
    run_summary = run.summary()
    for key in ("fall_end_step", "plateau_end_step", "acc_1pct_step", "acc_50pct_step"):
        summary[key] = run_summary.get(key)
    summary["ro_curves"] = {str(s): {f"{p:g}": v for p, v in c.items()} for s, c in ro_curves.items()}
    summary["rows"] = rows
    return summary
