"""Hallucination neurons across training: ``python -m biolab.mech neurons RUN_DIR [key=value ...]``.

1. The main checkpoint: the first snapshot whose seen accuracy (val/attr_acc) is in accuracy_range (40-80%), where
   seen people are still answered wrongly. There and at the final snapshot (biolab.mech.neurons_labelled): labels
   from 10 seeded samples, CETT features, the L1 probe (3-vs-1 and 1-vs-1), its tests on held-out people, other
   attributes and unseen people, 10 random neuron sets, the confidence-only baseline, the alpha intervention.
2. Every requested snapshot, on the main checkpoint's items and labels: the main probe applied (AUROC) and a
   probe fitted at that snapshot (AUROC, H-neuron count, overlap with the main H-neurons).

Writes RUN_DIR/mech/neurons/ (or out=DIR), resumable (done steps are skipped; other options are refused):
    labelled/steps/step_<k>.json   the main and final checkpoints' full results
    origin/steps/step_<final>.json with finetuned=DIR: the fine-tuning origin test (biolab.mech.neuron_origin)
    timeline/steps/step_<k>.json   each snapshot's transfer result
    table.csv, summary.json, timeline.png (the loss curve with the plateau shaded, the probe AUROCs on its step axis)

Options (key=value): people=all (seen people per attribute), unseen_people=128, n_samples=10, seed=0,
main_step=auto, accuracy_range=[0.4,0.8], steps=all, other_attributes=[university,employer], labelling=3-vs-1,
min_per_class=3 (the fewest items per class and split; the quick-start's main checkpoint has 9-15
faithful test items, so a larger default would stop there: counts and bootstrap intervals are reported), n_grid=10, random_sets=10, alphas=[0,0.5,1,1.5,2,2.5,3], intervention_items=256,
bootstrap=200, label_final=true, finetuned=DIR (a fine-tuning run started from RUN_DIR's final checkpoint: its
probe applied to the final snapshot, and the H-neurons' weight drift; needs the final snapshot labelled), out=DIR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biolab.errors import ConfigError
from biolab.history import history_column
from biolab.io import write_csv, write_json
from biolab.mech.track import finite_json, onset, requested_steps, track
from biolab.mech.neuron_scaling import ALPHAS
from biolab.mech.neurons_labelled import (analyse_labelled, analyse_transfer, attribute_baseline_auroc, build_items,
                                          class_counts_by_attribute)
from biolab.runs import load_run

DEFAULTS = {"people": "all", "unseen_people": 128, "n_samples": 10, "seed": 0, "main_step": "auto",
            "accuracy_range": [0.4, 0.8], "steps": "all", "other_attributes": ["university", "employer"],
            "labelling": "3-vs-1", "min_per_class": 3, "n_grid": 10, "random_sets": 10, "alphas": list(ALPHAS),
            "intervention_items": 256, "bootstrap": 200, "label_final": True, "finetuned": None, "out": None}
POSITIVE_INTS = ("unseen_people", "n_samples", "min_per_class", "n_grid", "intervention_items")
AUROC_ONSET = 0.7


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for neurons; allowed: {', '.join(DEFAULTS)}")
    merged = {**DEFAULTS, **options}
    for key in POSITIVE_INTS:
        if not (_is_int(merged[key]) and merged[key] >= 1):
            raise ConfigError(f"{key} must be an integer >= 1, got {merged[key]!r}")
    for key in ("random_sets", "bootstrap", "seed"):
        if not (_is_int(merged[key]) and merged[key] >= 0):
            raise ConfigError(f"{key} must be an integer >= 0, got {merged[key]!r}")
    if not (merged["people"] == "all" or (_is_int(merged["people"]) and merged["people"] >= 1)):
        raise ConfigError(f"people must be 'all' or an integer >= 1, got {merged['people']!r}")
    if merged["labelling"] not in ("3-vs-1", "1-vs-1"):
        raise ConfigError(f"labelling must be 3-vs-1 or 1-vs-1, got {merged['labelling']!r}")
    low_high = merged["accuracy_range"]
    if not (isinstance(low_high, list) and len(low_high) == 2 and 0 <= low_high[0] <= low_high[1] <= 1):
        raise ConfigError(f"accuracy_range must be [low, high] within [0, 1], got {low_high!r}")
    if not (isinstance(merged["alphas"], list) and len(merged["alphas"]) >= 2):
        raise ConfigError(f"alphas must be a list of at least 2 values, got {merged['alphas']!r}")
    if isinstance(merged["other_attributes"], str):
        merged["other_attributes"] = [merged["other_attributes"]]
    steps = merged["steps"]
    if not (steps == "all" or (isinstance(steps, list) and steps and all(_is_int(s) for s in steps))):
        raise ConfigError(f"steps must be 'all' or a non-empty list of steps, got {steps!r}")
    if not (merged["finetuned"] is None or isinstance(merged["finetuned"], str)):
        raise ConfigError(f"finetuned must be a run directory, got {merged['finetuned']!r}")
    if not (merged["main_step"] == "auto" or _is_int(merged["main_step"])):
        raise ConfigError(f"main_step must be 'auto' or a step, got {merged['main_step']!r}")
    return merged


def find_main_step(run, options: dict) -> int:
    """The requested main step, or the first snapshot with val/attr_acc within accuracy_range."""
    if options["main_step"] != "auto":
        return run.snapshot(options["main_step"]).step
    low, high = options["accuracy_range"]
    accuracy = dict(zip(*history_column(run.metrics(), "val/attr_acc")))
    for step in run.steps:
        if step in accuracy and low <= accuracy[step] <= high:
            return step
    shown = ", ".join(f"{s}: {accuracy[s]:.2f}" for s in run.steps if s in accuracy) or "none measured"
    raise ConfigError(f"no snapshot with seen accuracy (val/attr_acc) in [{low}, {high}] (snapshots: {shown}); "
                      f"pass main_step=K or another accuracy_range")


def run_neurons(run_dir: str | Path, log=print, **options) -> dict:
    """The labelled checkpoints, then every requested snapshot; writes table.csv, summary.json, timeline.png."""
    options = check_options(options)
    run = load_run(run_dir)
    steps = requested_steps(run, options["steps"])
    main_step, final_step = find_main_step(run, options), run.steps[-1]
    dm = run.datamodule()
    people = None if options["people"] == "all" else min(options["people"], len(dm.seen))
    items = build_items(dm, people, options["unseen_people"], options["other_attributes"], options["seed"])
    out_dir = Path(options["out"]) if options["out"] else run.dir / "mech" / "neurons"
    saved = {k: v for k, v in options.items() if k not in ("out", "finetuned")}
    labelled_steps = [main_step] + ([final_step] if options["label_final"] and final_step != main_step else [])
    tuned = None
    if options["finetuned"]:
        if final_step not in labelled_steps:
            raise ConfigError("finetuned= needs the final snapshot labelled: pass label_final=true")
        from biolab.mech.neuron_origin import load_finetuned

        tuned = load_finetuned(run, options["finetuned"])
    log(f"neurons of {run.dir}: main step {main_step}, labelled {labelled_steps}, {len(steps)} snapshots, "
        f"{len(items.seen)} seen + {len(items.unseen)} unseen items -> {out_dir}")
    labelled = track(run, out_dir / "labelled", lambda model, step: analyse_labelled(model, items, options,
                                                                                      required=step == main_step),
                     labelled_steps, saved, log)
    for result in labelled.values():       # cheap, from the saved labels: recomputed on every run
        result["class_counts_by_attribute"] = class_counts_by_attribute(items, result, options)
        if result.get("probe") is not None:
            result["attribute_baseline_auroc"] = attribute_baseline_auroc(items, result, options)
    main = labelled[main_step]
    origin = None
    if tuned is not None:
        from biolab.mech.neuron_origin import origin_test

        origin = track(run, out_dir / "origin", lambda model, step: origin_test(model, tuned, items, labelled[step],
                                                                                options),
                       [final_step], {**saved, "finetuned": str(Path(options["finetuned"]).resolve())}, log)[final_step]
    timeline = track(run, out_dir / "timeline", lambda model, step: analyse_transfer(model, items, main, options),
                     steps, saved, log)
    summary = summarise(labelled, timeline, main_step, run, origin)
    if origin is not None:
        log(f"origin: fine-tuned probe on the base AUROC {summary['origin_transfer_auroc']} (base's own "
            f"{summary['origin_base_auroc']}); H-neuron drift rank {summary['h_neuron_drift_rank_percentile']} "
            f"(random sets {summary['random_sets_drift_rank_percentile']['mean']})")
    write_csv(out_dir / "table.csv", summary["per_step"])
    write_json(out_dir / "summary.json", summary)
    from biolab.mech.plots import plot_neuron_timeline

    plot_neuron_timeline(summary, run.metrics(), out_dir / "timeline.png", title=str(run.dir))
    return summary


def step_row(result: dict, metrics: list[dict]) -> dict:
    main, own = result["main_probe"], result["own_probe"]
    row = {"step": result["step"],
           **{f"main_probe_auroc_{k}": main[k]["auroc"] for k in ("heldout_people", "other_attributes", "unseen")},
           **{f"own_probe_auroc_{k}": own[k]["auroc"] for k in ("heldout_people", "other_attributes", "unseen")},
           "own_n_h_neurons": result["own_n_h_neurons"], "jaccard_with_main": result["jaccard_with_main"],
           "confidence_baseline_auroc": result["confidence_baseline_auroc"]}
    for key in ("val/attr_loss", "val/attr_acc", "unseen/attr_loss", "unseen/max_prob"):
        steps, values = history_column(metrics, key)
        row[key] = dict(zip(steps, values)).get(result["step"])
    return row


def headline(result: dict) -> dict:
    """The numbers of one labelled checkpoint that the issue asks for."""
    if result.get("probe") is None:
        return {"skipped": result.get("skipped"), "class_counts": result["class_counts"],
                "class_counts_by_attribute": result.get("class_counts_by_attribute")}
    tests, randoms = result["tests"], [a for a in result["random_set_aurocs"] if a is not None]
    intervention = (result.get("intervention") or {}).get("measures", {})
    n_total = result["n_neurons_total"]
    return {"n_neurons_total": n_total, "n_h_neurons": result["n_h_neurons"],
            "per_mille": 1000 * result["n_h_neurons"] / n_total, "n_nonzero_weights": result["n_nonzero"],
            "class_counts": result["class_counts"], "class_counts_by_attribute": result.get("class_counts_by_attribute"),
            "balanced_items": result["balanced_items"],
            "seen_accuracy_sampled": result["seen_accuracy_sampled"],
            "auroc_heldout_people": tests["heldout_people"]["auroc"],
            "auroc_heldout_people_interval": tests["heldout_people"].get("auroc_interval"),
            "accuracy_heldout_people": tests["heldout_people"]["accuracy"],
            "auroc_other_attributes": tests["other_attributes"]["auroc"],
            "accuracy_other_attributes": tests["other_attributes"]["accuracy"],
            "auroc_unseen": tests["unseen"]["auroc"], "unseen_flagged_fraction": tests["unseen"].get("flagged_fraction"),
            "h_only_refit_auroc": result["h_only_refit_auroc"],
            "auroc_random_sets": {"mean": float(np.mean(randoms)) if randoms else None,
                                  "sd": float(np.std(randoms)) if randoms else None, "n": len(randoms)},
            "auroc_confidence_baseline": result["confidence_baseline_auroc"]["heldout_people"],
            "auroc_confidence_baseline_unseen": result["confidence_baseline_auroc"]["unseen"],
            "auroc_attribute_baseline": result.get("attribute_baseline_auroc"),
            "other_labelling": {"labelling": result["other_labelling"]["labelling"],
                                "n_h_neurons": result["other_labelling"]["n_h_neurons"],
                                "auroc_heldout_people": result["other_labelling"]["tests"]["heldout_people"]["auroc"],
                                "auroc_unseen": result["other_labelling"]["tests"]["unseen"]["auroc"]},
            "alpha_slope": {m: {k: v[k] for k in ("slope", "interval", "random_slope_mean", "random_slope_sd",
                                                  "h_over_random_spread", "at_alpha", "random_at_alpha_mean")}
                            for m, v in intervention.items()}}


def origin_headline(origin: dict | None) -> dict:
    """The origin test's numbers (biolab.mech.neuron_origin); {} without finetuned=."""
    if origin is None:
        return {}
    drift, base_drift = origin.get("h_neuron_drift", {}), origin["base_h_neuron_drift"]
    transfer, base_tests = origin.get("transfer_tests", {}), origin.get("base_tests", {})
    return {"origin_skipped": origin.get("skipped"),
            "origin_transfer_auroc": transfer.get("heldout_people", {}).get("auroc"),
            "origin_transfer_auroc_interval": transfer.get("heldout_people", {}).get("auroc_interval"),
            "origin_base_auroc": base_tests.get("heldout_people", {}).get("auroc"),
            "origin_finetuned_auroc": origin.get("finetuned_tests", {}).get("heldout_people", {}).get("auroc"),
            "origin_random_sets_transfer_auroc": origin.get("random_sets_transfer_auroc"),
            "origin_finetuned_n_h_neurons": origin.get("finetuned_n_h_neurons"),
            "origin_h_neuron_overlap": origin.get("h_neuron_overlap"),
            "h_neuron_drift_z": drift.get("mean_z"), "h_neuron_drift_rank_percentile": drift.get("mean_rank"),
            "random_sets_drift_z": {"mean": drift.get("random_mean_z"), "sd": drift.get("random_sd_z")},
            "random_sets_drift_rank_percentile": {"mean": drift.get("random_mean_rank"), "sd": drift.get("random_sd_rank"),
                                                  "n": drift.get("n_random")},
            "h_neuron_drift_p_rank": drift.get("p_rank_at_least"),
            "base_h_neuron_drift_z": base_drift.get("mean_z"),
            "base_h_neuron_drift_rank_percentile": base_drift.get("mean_rank"),
            "base_h_neuron_drift_p_rank": base_drift.get("p_rank_at_least")}


def summarise(labelled: dict, timeline: dict, main_step: int, run, origin: dict | None = None) -> dict:
    metrics, milestones = run.metrics(), run.summary()
    rows = [step_row(timeline[s], metrics) for s in sorted(timeline)]
    main = headline(labelled[main_step])
    summary = {
        "run_dir": str(run.dir), "main_step": main_step, "labelled_steps": sorted(labelled),
        **{k: v for k, v in main.items() if k != "alpha_slope"},
        "alpha_slope": main.get("alpha_slope", {}).get("adopts_context"),
        "alpha_slopes_all_measures": main.get("alpha_slope"),
        "final": {"step": max(labelled), **headline(labelled[max(labelled)])} if max(labelled) != main_step else None,
        "first_step_auroc_0.7": onset(rows, lambda r: (r["main_probe_auroc_heldout_people"] or 0) >= AUROC_ONSET),
        "first_step_own_probe_auroc_0.7": onset(rows, lambda r: (r["own_probe_auroc_heldout_people"] or 0) >= AUROC_ONSET),
        "fall_end_step": milestones.get("fall_end_step"), "plateau_end_step": milestones.get("plateau_end_step"),
        "acc_1pct_step": milestones.get("acc_1pct_step"), "acc_50pct_step": milestones.get("acc_50pct_step"),
        **origin_headline(origin),
        "definitions": {
            "alpha_slope": "slope over alpha of the context-adoption rate (a biography sentence stating a wrong value, "
                           "then the query) with the H-neurons scaled; interval: 2.5-97.5% bootstrap over items",
            "first_step_auroc_0.7": "first snapshot where the main checkpoint's probe, applied to that snapshot's "
                                    "features of the main items, reaches AUROC >= 0.7 on held-out people against "
                                    "the main checkpoint's labels (interval: previous snapshot, step]",
            "per_mille": "H-neurons (positive probe weights) per 1,000 MLP neurons",
            "auroc_attribute_baseline": "AUROC on held-out people of a logistic probe on the question's attribute "
                                        "alone (one-hot): the part of the separation the attribute explains",
            "origin_transfer_auroc": "AUROC on held-out people of the final snapshot (base) of the probe fitted on the "
                                     "fine-tuned model (origin_base_auroc: the base's own probe, same items)",
            "h_neuron_drift_rank_percentile": "mean normalised drift rank of the fine-tuned probe's H-neurons (1 = "
                                              "least changed of all neurons; random sets: 0.5); drift z: mean of the "
                                              "z-scored 1 - cosine of input and output weights; p: fraction of random "
                                              "sets with a mean rank at least as high",
        },
        "per_step": rows,
    }
    return finite_json(summary)
