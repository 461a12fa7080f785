"""Tables, summary.json and figures of ``python -m biolab.mech entities`` from its per-step results.

    summary = write_report(results, run, out_dir)    # {step: result} as written by biolab.mech.track

A per-layer AUROC of a comparison at a step is the WORST over the two prompt families (generality, as the
paper's min over entity types), for the logistic probe unless a name says diff_means; "best" is the best
layer >= 1 (layer 0, the embeddings, is the token-identity control). Every figure is drawn from the numbers
in summary.json's per_step rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biolab.history import history_column
from biolab.io import write_csv, write_json
from biolab.mech.track import finite_json, onset
from biolab.mech.entities import FAMILIES
from biolab.mech.entities_sae import steering_row
from biolab.plots import plt, save_figure

COMPARISONS = ("known_vs_matched", "known_vs_unseen", "seen_vs_matched", "known_vs_matched_at_answer")
PANELS = {"known_vs_matched": "at the last name token: known people vs token-matched unseen",
          "seen_vs_matched": "at the last name token: every sampled seen person vs token-matched unseen",
          "known_vs_matched_at_answer": "at the answer position: known people vs token-matched unseen"}
AUROC_ONSET = 0.9
RISE_NATS = 0.5   # the unseen-people loss "rises" once it is this far above its minimum


def worst_over_families(comparison: dict | None, layer: int, method: str = "logistic") -> float | None:
    if not comparison or set(comparison) != set(FAMILIES):
        return None
    return min(comparison[f][layer][method] for f in FAMILIES)


def step_row(result: dict, metrics: list[dict]) -> dict:
    """One row of table.csv."""
    row = {"step": result["step"], **{f"n_{k}": v for k, v in result["sets"].items()},
           "right_mean": result["right_mean"]}
    n_layers = len(result["residual_norm"])
    for name in COMPARISONS:
        comparison = result["comparisons"].get(name)
        for method in ("logistic", "diff_means"):
            suffix = "" if method == "logistic" else "_diff_means"
            values = [worst_over_families(comparison, layer, method) for layer in range(n_layers)]
            for layer, value in enumerate(values):
                row[f"{name}{suffix}_L{layer}"] = value
            later = [(v, layer) for layer, v in enumerate(values) if layer >= 1 and v is not None]
            best = max(later) if later else (None, None)
            row[f"{name}{suffix}_best"], row[f"{name}{suffix}_best_layer"] = best
    max_prob = result.get("max_prob_auroc")
    row["max_prob_auroc"] = min(max_prob.values()) if max_prob else None
    for key in ("val/attr_loss", "val/attr_acc", "unseen/attr_loss", "unseen/max_prob"):
        steps, values = history_column(metrics, key)
        row[key] = dict(zip(steps, values)).get(result["step"])
    return row


def unseen_loss_rise(metrics: list[dict]) -> dict:
    """First evaluation after the unseen-people loss's minimum where it is RISE_NATS above that minimum."""
    steps, losses = history_column(metrics, "unseen/attr_loss")
    if not losses:
        return {"step": None, "after": None}
    low = int(np.argmin(losses))
    for i in range(low + 1, len(steps)):
        if losses[i] >= losses[low] + RISE_NATS:
            return {"step": steps[i], "after": steps[i - 1]}
    return {"step": None, "after": None}


def sae_rows(results: dict) -> list[dict]:
    rows = []
    for step, result in sorted(results.items()):
        for layer in result.get("sae") or []:
            row = {"step": step, **{k: v for k, v in layer.items() if k not in ("known", "unknown")}}
            for kind in ("known", "unknown"):
                row[f"{kind}_latent"] = layer[kind]["latent"]
                row[f"{kind}_min_over_families"] = layer[kind]["min_over_families"]
                row[f"{kind}_ordinary_rate"] = layer[kind]["ordinary_rate"]
                for family, score in layer[kind]["per_family"].items():
                    row[f"{kind}_{family}"] = score
            rows.append(row)
    return rows


def layer_rows(result: dict) -> list[dict]:
    rows = []
    for name, comparison in result["comparisons"].items():
        for family, per_layer in (comparison or {}).items():
            for r in per_layer:
                rows.append({"comparison": name, "family": family, "layer": r["layer"], "logistic": r["logistic"],
                             "diff_means": r["diff_means"], "logistic_ci": r.get("logistic_ci")})
    return rows


def _steering(rows: list[dict], steered: str, condition: str, alpha, key: str):
    row = steering_row(rows, steered, condition, alpha)
    return None if row is None else row.get(key)


def headline_steering(steering: dict | None, alpha) -> dict:
    rows = (steering or {}).get("rows", [])
    out = {}
    for condition, suffix in (("latent", ""), ("random_latents", "_random_latents"),
                              ("random_directions", "_random_directions")):
        drop = _steering(rows, "unknown", condition, alpha, "right_change")
        out[f"steering_unknown_on_known_acc_drop{suffix}"] = -drop if drop is not None else None
        if condition == "latent":
            ci = _steering(rows, "unknown", condition, alpha, "right_change_ci")
            out["steering_unknown_on_known_acc_drop_ci"] = sorted(-c for c in ci) if ci else None
            out["steering_known_on_unseen_maxprob_change_ci"] = _steering(rows, "known", condition, alpha,
                                                                          "max_prob_change_ci")
        out[f"steering_unknown_on_known_answer_prob_change{suffix}"] = _steering(rows, "unknown", condition, alpha,
                                                                                 "answer_prob_change")
        out[f"steering_known_on_unseen_maxprob_change{suffix}"] = _steering(rows, "known", condition, alpha,
                                                                            "max_prob_change")
    return out


def mover_head_attention(steering: dict | None) -> dict | None:
    """For each steering, the head after the steered layer that attends most from the answer position to the
    last name token without steering (the name mover), and its attention clean, steered by the latent and by
    a random direction of the same norm."""
    if not steering:
        return None
    out = {}
    for name, a in steering["attention"].items():
        clean = np.array(a["clean"])                                                 # [layers, heads]
        later = clean[a["layer"]:] if a["layer"] < len(clean) else None
        if later is None or later.size == 0:
            out[name] = None
            continue
        layer, head = np.unravel_index(int(later.argmax()), later.shape)
        layer += a["layer"]
        out[name] = {"head": f"L{layer}H{head}", "clean": float(clean[layer, head]),
                     "latent": a["latent"][layer][head], "random_direction": a["random_direction"][layer][head]}
    return out


def write_report(results: dict[int, dict], run, out_dir: Path) -> dict:
    metrics = run.metrics()
    steps = sorted(results)
    rows = [step_row(results[s], metrics) for s in steps]
    final = results[steps[-1]]
    last = rows[-1]
    sae_steps = [s for s in steps if results[s].get("sae")]
    sae_final = results[sae_steps[-1]]["sae"] if sae_steps else []
    best_layer = last["known_vs_matched_best_layer"]
    steering_step = next((s for s in reversed(steps) if results[s].get("steering")), None)
    steering = results[steering_step]["steering"] if steering_step is not None else None
    sae_layer = steering["latents"]["unknown"]["layer"] if steering else None
    sae_at_best = next((r for r in sae_final if r["layer"] == sae_layer), None)
    options = _options(out_dir)
    milestones = run.summary()
    layer0 = [final["comparisons"]["known_vs_matched"][f][0]["logistic"] for f in FAMILIES] \
        if final["comparisons"].get("known_vs_matched") else None
    summary = {
        "run_dir": str(run.dir), "final_step": steps[-1], "n_snapshots": len(steps), "sae_steps": sae_steps,
        "sets_final": final["sets"], "best_layer": best_layer,
        "auroc_best_layer_token_matched": last["known_vs_matched_best"],
        "auroc_best_layer_token_matched_ci": _ci(final, best_layer),
        "auroc_best_layer_all_unseen": last["known_vs_unseen_best"],
        "auroc_best_layer_token_matched_diff_means": last["known_vs_matched_diff_means_best"],
        "auroc_layer0": max(layer0) if layer0 else None,
        "auroc_layer0_per_family": dict(zip(FAMILIES, layer0)) if layer0 else None,
        "auroc_seen_vs_matched_best": last["seen_vs_matched_best"],
        "auroc_best_layer_token_matched_at_answer": last["known_vs_matched_at_answer_best"],
        "auroc_layer0_token_matched_at_answer": last["known_vs_matched_at_answer_L0"],
        "auroc_max_prob_baseline": last["max_prob_auroc"],
        "sae_layer": sae_layer, "sae_step": sae_steps[-1] if sae_steps else None,
        **{f"sae_{k}": (sae_at_best or {}).get(k) for k in ("variance_explained", "mean_active_latents",
                                                           "dead_latents", "loss_increase", "d_sae", "k")},
        "best_latent_separation_min_over_families": {
            kind: max((r[kind]["min_over_families"] for r in sae_final), default=None) for kind in ("known", "unknown")},
        "best_latents": (steering or {}).get("latents"), "steering_step": steering_step,
        "steering_alpha": options.get("headline_alpha"), **headline_steering(steering, options.get("headline_alpha")),
        "name_mover_attention": mover_head_attention(steering),
        "unknown_answer_rate_change": None,
        "first_step_auroc_0.9": onset(rows, lambda r: (r["known_vs_matched_best"] or 0) >= AUROC_ONSET),
        "first_step_auroc_0.9_seen_vs_matched": onset(rows, lambda r: (r["seen_vs_matched_best"] or 0) >= AUROC_ONSET),
        "first_step_known": onset(rows, lambda r: r["known_vs_matched_best"] is not None),
        "fall_end_step": milestones.get("fall_end_step"), "plateau_end_step": milestones.get("plateau_end_step"),
        "acc_1pct_step": milestones.get("acc_1pct_step"), "acc_50pct_step": milestones.get("acc_50pct_step"),
        "unseen_loss_rise": unseen_loss_rise(metrics),
        "definitions": {
            "auroc": "out-of-fold AUROC (known = positive) of an L2 logistic probe on the residual stream at the last "
                     "name token, the worst of the two prompt families; best = best layer >= 1",
            "auroc_max_prob_baseline": "AUROC of the model's max next-token probability at the answer position, "
                                       "known vs token-matched unseen, worst family (a confidence-only baseline)",
            "auroc_layer0": "the same at layer 0 (embeddings: token identity), the BEST of the two families",
            "first_step_auroc_0.9": f"first snapshot where the best layer's known-vs-token-matched AUROC >= {AUROC_ONSET} "
                                    "(interval: previous snapshot, step]; known people exist only once some are recalled",
            "unseen_loss_rise": f"first evaluation after the unseen-people loss minimum that is {RISE_NATS} nats above it",
            "steering": "changes are means over the steered prompts (both families) minus the unsteered model; "
                        "random_* are the means over the random latents / directions at the same alpha",
            "sae_layer": "the layer of the best 'unknown' latent (steered); sae.csv has every layer",
            "unknown_answer_rate_change": "measured on a fine-tuned model, not here: python -m biolab.mech unknown RUN_DIR (docs/unknown_answer.md)",
        },
        "per_step": rows,
    }
    summary = finite_json(summary)
    write_csv(out_dir / "table.csv", rows)
    write_csv(out_dir / "layers.csv", layer_rows(final))
    if sae_steps:
        write_csv(out_dir / "sae.csv", sae_rows(results))
    if steering:
        write_csv(out_dir / "steering.csv", steering["rows"])
    write_json(out_dir / "summary.json", summary)
    plot_heatmap(summary, out_dir / "heatmap.png", title=str(run.dir))
    plot_timeline(summary, metrics, out_dir / "timeline.png", title=str(run.dir))
    return summary


def _options(out_dir: Path) -> dict:
    import json

    path = out_dir / "options.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _ci(result: dict, layer: int | None):
    comparison = result["comparisons"].get("known_vs_matched")
    if not comparison or layer is None:
        return None
    worst = min(FAMILIES, key=lambda f: comparison[f][layer]["logistic"])
    return comparison[worst][layer].get("logistic_ci")


def _layers(rows: list[dict], name: str) -> int:
    return sum(1 for key in rows[0] if key.startswith(f"{name}_L"))


def plot_heatmap(summary: dict, path: Path, title: str = "") -> Path:
    """AUROC (worst family) per layer x snapshot for known vs token-matched and seen vs token-matched."""
    rows = summary["per_step"]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(max(8, 0.4 * len(steps)), 3.2 * len(PANELS)))
    for ax, (name, label) in zip(axes, PANELS.items()):
        n_layers = _layers(rows, name)
        grid = np.array([[r[f"{name}_L{layer}"] if r[f"{name}_L{layer}"] is not None else np.nan for r in rows]
                         for layer in range(n_layers)], dtype=float)                   # [layers, steps]
        image = ax.imshow(grid, aspect="auto", origin="lower", vmin=0.5, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=90, fontsize=7)
        ax.set_yticks(range(n_layers), [f"{layer}" + (" (emb)" if layer == 0 else "") for layer in range(n_layers)])
        ax.set_ylabel("layer")
        ax.set_title(f"probe AUROC, worst prompt family: {label} (blank: too few people)", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.03)
    axes[-1].set_xlabel("training step (snapshot)")
    fig.suptitle(f"where and when known and unknown people separate\n{title}", fontsize=10)
    return save_figure(fig, path)


def plot_timeline(summary: dict, metrics: list[dict], path: Path, title: str = "") -> Path:
    from biolab.mech.plots import loss_panel, mark_timeline

    rows = summary["per_step"]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1 + len(PANELS), 1, figsize=(9, 3 + 3 * len(PANELS)), sharex=True)
    loss_panel(axes[0], metrics, summary)
    axes[0].set_title("loss curve (plateau shaded)")
    for ax, (name, label) in zip(axes[1:], PANELS.items()):
        for layer in range(_layers(rows, name)):
            values = [r[f"{name}_L{layer}"] if r[f"{name}_L{layer}"] is not None else np.nan for r in rows]
            ax.plot(steps, values, "o-" if layer else "x--", markersize=3, label=f"layer {layer}" + (" (emb)" if not layer else ""))
        ax.axhline(AUROC_ONSET, color="grey", linewidth=0.8, linestyle=":")
        rise = summary["unseen_loss_rise"]["step"]
        if rise is not None:
            ax.axvline(rise, color="tab:gray", linewidth=1, linestyle="--", label=f"unseen loss rises ({rise})")
        ax.set_ylim(0.4, 1.02)
        ax.set_ylabel("AUROC (worst family)")
        ax.set_title(label, fontsize=9)
        mark_timeline(ax, summary)
    axes[-1].set_xlabel("training step")
    fig.suptitle(f"entity awareness over training\n{title}", fontsize=10)
    return save_figure(fig, path)
