"""Knowledge circuits across training: ``python -m biolab.mech circuits RUN_DIR [key=value ...]``.

For every snapshot of a run (trajectory checkpoints, else last.ckpt), biolab.mech.circuits runs on
the same attribute-recall prompts (seen people, evaluation templates, every attribute) and their
counterfactual counterparts. Writes RUN_DIR/mech/circuits/ (or out=DIR):

    steps/step_<k>.json   everything measured on one snapshot (resumable: done steps are skipped)
    table.csv             one row per step: faithfulness at each budget beside random sets, edges
                          needed for F >= 0.7, Hit@10, overlap with the final circuit, prompt accuracy
                          beside val/attr_acc, the loss at that step
    summary.json          the final step's numbers, EAP-IG vs exact patching, onsets against the
                          plateau end and the 1%-accuracy step, and every step's row
    timeline.png          the loss curve with the plateau shaded and, on the same step axis, the
                          circuit's size, its overlap with the final circuit and the name-to-last edges

Options (key=value): prompts_per_attribute=40, ig_steps=5, random_sets=20, ablation=counterfactual,
exact=final (exact single-edge patching under the three ablations at the last step; "none", "all"),
exact_prompts=60 (exact patching, and the EAP / EAP-IG it is compared with, on every k-th prompt),
steps=all (or a list such as [0,100,200]), seed=0, target=0.7, min_effect=0.5, out=DIR.
"""

from __future__ import annotations

from pathlib import Path

from biolab.errors import ConfigError
from biolab.history import history_column
from biolab.io import write_csv, write_json
from biolab.mech.circuits import ABLATIONS, CircuitOptions, analyse_circuits
from biolab.mech.prompts import corrupt, recall_prompts
from biolab.mech.scoring import prompt_accuracy
from biolab.mech.track import finite_json, onset, requested_steps, track
from biolab.runs import load_run

DEFAULTS = {"prompts_per_attribute": 40, "ig_steps": 5, "random_sets": 20, "ablation": "counterfactual",
            "exact": "final", "exact_prompts": 60, "steps": "all", "seed": 0, "target": 0.7, "min_effect": 0.5, "out": None}
EXACT_CHOICES = ("final", "none", "all")
SMALL_CIRCUIT = 0.10   # a circuit "appears" once <= 10% of the edges reach the target ...
RANDOM_CEILING = 0.2   # ... while random edge sets of that size stay <= 0.2


def check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for circuits; allowed: {', '.join(DEFAULTS)}")
    merged = {**DEFAULTS, **options}
    for key in ("prompts_per_attribute", "random_sets", "exact_prompts"):
        if not (isinstance(merged[key], int) and not isinstance(merged[key], bool) and merged[key] >= 1):
            raise ConfigError(f"{key} must be an integer >= 1, got {merged[key]!r}")
    if not (isinstance(merged["ig_steps"], int) and merged["ig_steps"] >= 0):
        raise ConfigError(f"ig_steps must be an integer >= 0, got {merged['ig_steps']!r}")
    if merged["ablation"] not in ABLATIONS:
        raise ConfigError(f"ablation must be one of {list(ABLATIONS)}, got {merged['ablation']!r}")
    if merged["exact"] not in EXACT_CHOICES:
        raise ConfigError(f"exact must be one of {list(EXACT_CHOICES)}, got {merged['exact']!r}")
    steps = merged["steps"]
    if not (steps == "all" or (isinstance(steps, list) and all(isinstance(s, int) for s in steps) and steps)):
        raise ConfigError(f"steps must be 'all' or a non-empty list of steps, got {steps!r}")
    return merged


def run_circuits(run_dir: str | Path, log=print, **options) -> dict:
    """Analyse every requested snapshot of the run (skipping those done), then write the table,
    summary.json and timeline.png; returns the summary."""
    options = check_options(options)
    run = load_run(run_dir)
    steps = requested_steps(run, options["steps"])
    out_dir = Path(options["out"]) if options["out"] else run.dir / "mech" / "circuits"
    dm = run.datamodule()
    clean = recall_prompts(dm, "seen", n=min(options["prompts_per_attribute"], dm.population_size),
                           seed=options["seed"])
    corrupted = corrupt(clean, dm, seed=options["seed"])
    log(f"circuits of {run.dir}: {len(steps)} snapshots, {len(clean)} prompts "
        f"({len(dm.attributes)} attributes, evaluation templates) -> {out_dir}")
    final = steps[-1]

    def progress(done: int, total: int) -> None:
        if done % 100 == 0 or done == total:
            log(f"  exact patching: {done}/{total} edges")

    def analyse(model, step):
        exact = options["exact"] == "all" or (options["exact"] == "final" and step == final)
        circuit_options = CircuitOptions(ig_steps=options["ig_steps"], ablation=options["ablation"],
                                         random_sets=options["random_sets"], target=options["target"],
                                         min_effect=options["min_effect"], seed=options["seed"], exact=exact,
                                         exact_prompts=options["exact_prompts"], progress=progress)
        result = analyse_circuits(model, clean, corrupted, circuit_options)
        result["prompt_accuracy"] = prompt_accuracy(model, clean)
        return result

    saved_options = {k: v for k, v in options.items() if k != "out"}
    results = track(run, out_dir, analyse, steps, saved_options, log)
    summary = summarise(results, run)
    write_csv(out_dir / "table.csv", summary["per_step"])
    write_json(out_dir / "summary.json", summary)
    from biolab.mech.plots import plot_circuit_timeline

    plot_circuit_timeline(summary, run.metrics(), out_dir / "timeline.png", title=str(run.dir))
    return summary


def _jaccard(a: set, b: set) -> float | None:
    return len(a & b) / len(a | b) if a | b else None


def step_row(result: dict, final_circuit: set, k_final: int | None, metrics: list[dict]) -> dict:
    """One row of table.csv."""
    step = result["step"]
    row = {"step": step, "effect": result["effect"], "faithfulness_defined": result["faithfulness_defined"],
           "edges_for_faithfulness": result["edges_for_faithfulness"],
           "edges_for_faithfulness_fraction": result["edges_for_faithfulness_fraction"],
           "random_faithfulness_at_that_budget": result["random_faithfulness_at_that_budget"],
           "hit10_full": result["hit10_full"], "hit10_circuit": result["hit10_circuit"],
           "hit10_circuit_over_full": result["hit10_circuit_over_full"],
           "name_to_last_edges": result["name_to_last_edges"],
           "jaccard_with_final": _jaccard(set(result["edge_order"][:k_final]), final_circuit) if k_final else None,
           "prompt_accuracy": result.get("prompt_accuracy")}
    for point in result["faithfulness_curve"]:
        pct = f"{100 * point['fraction']:g}pct"
        row[f"faithfulness_{pct}"] = point["faithfulness"]
        row[f"random_{pct}_mean"] = point["random_mean"]
    for key in ("val/attr_loss", "val/attr_acc"):
        steps, values = history_column(metrics, key)
        row[key] = dict(zip(steps, values)).get(step)
    return row


def summarise(results: dict[int, dict], run) -> dict:
    steps = sorted(results)
    last = results[steps[-1]]
    k_final = last["edges_for_faithfulness"]
    final_circuit = set(last["edge_order"][:k_final]) if k_final else set()
    metrics = run.metrics()
    rows = [step_row(results[s], final_circuit, k_final, metrics) for s in steps]
    milestones = run.summary()
    exact = last.get("exact") or {}

    def small_circuit(row):
        fraction, rand = row["edges_for_faithfulness_fraction"], row["random_faithfulness_at_that_budget"]
        return fraction is not None and fraction <= SMALL_CIRCUIT and rand is not None and rand <= RANDOM_CEILING

    summary = {
        "run_dir": str(run.dir), "final_step": steps[-1], "n_snapshots": len(steps),
        "n_edges": last["n_edges"], "n_prompts": last["n_prompts"], "ablation": last["ablation"],
        "ig_steps": last["ig_steps"],
        "eap_ig_vs_exact_spearman": (exact.get(last["ablation"]) or {}).get("eap_ig_vs_exact_spearman"),
        "exact_by_ablation": {a: {k: v for k, v in d.items() if k != "exact"} for a, d in exact.items()},
        f"edges_for_faithfulness_{last.get('target', 0.7)}": k_final,
        "edges_for_faithfulness_fraction": last["edges_for_faithfulness_fraction"],
        "random_faithfulness_at_that_budget": last["random_faithfulness_at_that_budget"],
        "random_faithfulness_at_that_budget_sd": last["random_faithfulness_at_that_budget_sd"],
        "hit10_full": last["hit10_full"], "hit10_circuit": last["hit10_circuit"],
        "hit10_circuit_over_full": last["hit10_circuit_over_full"],
        "faithfulness_curve": last["faithfulness_curve"],
        "heads": last["heads"], "name_to_last_edge_names": last["name_to_last_edge_names"],
        "prompt_accuracy": last.get("prompt_accuracy"),
        "val_attr_acc": rows[-1]["val/attr_acc"],
        "fall_end_step": milestones.get("fall_end_step"), "plateau_end_step": milestones.get("plateau_end_step"),
        "acc_1pct_step": milestones.get("acc_1pct_step"), "acc_50pct_step": milestones.get("acc_50pct_step"),
        "circuit_onset": onset(rows, small_circuit),
        "name_to_last_onset": onset(rows, lambda r: (r["name_to_last_edges"] or 0) >= 1),
        "overlap_onset": onset(rows, lambda r: (r["jaccard_with_final"] or 0) >= 0.5),
        "definitions": {
            "circuit_onset": f"first snapshot where <= {SMALL_CIRCUIT:.0%} of the edges reach F >= target while "
                             f"random sets of that size stay <= {RANDOM_CEILING} (interval: previous snapshot, step]",
            "name_to_last_onset": "first snapshot whose circuit holds an edge into a head's key or value input "
                                  "with >= 50% of its attribution at the name positions",
            "overlap_onset": "first snapshot whose top-k edges (k = the final circuit's size) overlap the final "
                             "circuit with Jaccard >= 0.5",
        },
        "per_step": rows,
    }
    return finite_json(summary)
