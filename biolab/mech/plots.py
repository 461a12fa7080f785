"""Mechanism timelines: a measure over snapshots on the loss curve's step axis, the plateau shaded.

    plot_circuit_timeline(summary, run.metrics(), "runs/x/mech/circuits/timeline.png")

Written by ``python -m biolab.mech circuits RUN_DIR`` from its summary.json (every number in the
figure is in that file's per_step rows), so it can be redrawn without the model.
"""

from __future__ import annotations

from pathlib import Path

from biolab.history import history_column
from biolab.plots import mark_phases, plt, save_figure


def loss_panel(ax, metrics: list[dict], summary: dict) -> None:
    """Attribute loss (log y) and accuracy of the run, the no-knowledge baseline, the phases."""
    steps, losses = history_column(metrics, "val/attr_loss")
    ax.plot(steps, losses, "-", color="tab:blue", label="attribute loss (seen people)")
    base_steps, baselines = history_column(metrics, "val/baseline")
    if baselines:
        ax.axhline(baselines[-1], color="k", linestyle="--", linewidth=1, label=f"no-knowledge baseline {baselines[-1]:.2f}")
    ax.set_yscale("log")
    ax.set_ylabel("attribute loss")
    acc_ax = ax.twinx()
    acc_steps, accs = history_column(metrics, "val/attr_acc")
    acc_ax.plot(acc_steps, accs, "-", color="tab:green", alpha=0.6)
    acc_ax.set_ylabel("attribute accuracy", color="tab:green")
    acc_ax.set_ylim(-0.02, 1.02)
    mark_timeline(ax, summary)


def mark_timeline(ax, summary: dict) -> None:
    mark_phases(ax, summary.get("fall_end_step"), summary.get("plateau_end_step"))
    if summary.get("acc_1pct_step") is not None:
        ax.axvline(summary["acc_1pct_step"], color="tab:purple", alpha=0.6, linewidth=1,
                   label=f"1% accuracy ({summary['acc_1pct_step']})")
        ax.legend(fontsize=7)


def plot_circuit_timeline(summary: dict, metrics: list[dict], path: str | Path, title: str = "") -> Path:
    rows = summary["per_step"]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    loss_panel(axes[0], metrics, summary)
    axes[0].set_title("loss curve (plateau shaded)")

    ax = axes[1]
    fraction = [r["edges_for_faithfulness_fraction"] for r in rows]
    rand = [r["random_faithfulness_at_that_budget"] for r in rows]
    ax.plot(steps, [f if f is not None else float("nan") for f in fraction], "o-", label="edges needed for F >= 0.7 (fraction)")
    ax.plot(steps, [r if r is not None else float("nan") for r in rand], "s--", color="grey",
            label="F of random edge sets of that size (mean)")
    undefined = [s for s, r in zip(steps, rows) if not r["faithfulness_defined"]]
    if undefined:
        ax.plot(undefined, [0] * len(undefined), "x", color="tab:red",
                label="no effect to explain (|m_clean - m_corrupt| < min_effect)")
    ax.set_ylabel("fraction / faithfulness")
    ax.set_title(f"circuit size ({summary['n_edges']} edges in the graph)")
    mark_timeline(ax, summary)

    ax = axes[2]
    ax.plot(steps, [r["jaccard_with_final"] if r["jaccard_with_final"] is not None else float("nan") for r in rows],
            "o-", color="tab:brown", label="Jaccard overlap with the final circuit")
    ax.plot(steps, [r["hit10_circuit_over_full"] if r["hit10_circuit_over_full"] is not None else float("nan")
                    for r in rows], "^-", color="tab:cyan", label="Hit@10 of the circuit / full model")
    ax.set_ylim(-0.02, 1.1)
    ax.set_title("circuit against the final one")
    mark_timeline(ax, summary)

    ax = axes[3]
    ax.plot(steps, [r["name_to_last_edges"] if r["name_to_last_edges"] is not None else float("nan") for r in rows],
            "o-", color="tab:olive", label="circuit edges moving the name to the last position")
    ax.set_xlabel("training step")
    ax.set_ylabel("edges")
    ax.set_title("name -> last-position edges (key/value inputs, >= 50% attribution at the name)")
    mark_timeline(ax, summary)
    fig.suptitle(f"knowledge circuits over training\n{title}", fontsize=10)
    return save_figure(fig, path)


def plot_overshadowing_study(summary: dict, metrics: list[dict], path: str | Path, title: str = "") -> Path:
    """RO against P at the RO peak and at the end (95% bootstrap intervals over pairs), and RO against step
    per P under the loss curve, the plateau shaded. Every number is in summary.json."""
    fig, (ax_p, ax_loss, ax_ro) = plt.subplots(1, 3, figsize=(18, 4.6))
    for name, color in (("peak", "tab:red"), ("end", "tab:blue")):
        by_p = summary.get(f"ro_by_p_{name}") or {}
        points = [(float(p), row["ro"], row["ro_95"]) for p, row in by_p.items() if row["ro"] is not None]
        if points:
            ps, ros, intervals = zip(*points)
            low = [r - (i[0] if i else r) for r, i in zip(ros, intervals)]
            high = [(i[1] if i else r) - r for r, i in zip(ros, intervals)]
            step = summary["peak_step"] if name == "peak" else summary["final_step"]
            ax_p.errorbar(ps, ros, yerr=[low, high], fmt="o-", color=color, capsize=3, label=f"{name} (step {step})")
    own = [(float(p), row["ao_excess"], row["ao_excess_95"]) for p, row in (summary.get("peak_by_p") or {}).items()
           if row["ao_excess"] is not None]
    if own:
        ps, values, intervals = zip(*own)
        ax_p.errorbar(ps, values, yerr=[[v - i[0] for v, i in zip(values, intervals)],
                                        [i[1] - v for v, i in zip(values, intervals)]],
                      fmt="s--", color="tab:green", capsize=3, label="AO - prior, each P at its own peak")
    ax_p.axhline(summary.get("prior_control_rate") or 0, color="k", linestyle=":", label="prior control rate (peak)")
    ax_p.set_xscale("log", base=2)
    ax_p.set_xlabel("popularity ratio P of the dominant person")
    ax_p.set_ylabel("RO = AO / R_dom; AO - prior")
    ax_p.legend(fontsize=8)
    ax_p.set_title("overshadowing against P (95% bootstrap over pairs)", fontsize=10)
    loss_panel(ax_loss, metrics, summary)
    ax_loss.set_title("attribute loss and accuracy", fontsize=10)
    levels = summary["pair_levels"]
    colors = plt.cm.plasma([i / max(1, len(levels) - 1) * 0.85 for i in range(len(levels))])
    for p, color in zip(levels, colors):
        steps = [int(s) for s, c in summary["ro_curves"].items() if c[f"{p:g}"] is not None]
        ax_ro.plot(steps, [summary["ro_curves"][str(s)][f"{p:g}"] for s in steps], "o-", color=color,
                   markersize=3, label=f"P={p:g}")
    mark_timeline(ax_ro, summary)
    for ax in (ax_loss, ax_ro):
        ax.set_xlabel("training step")
    ax_ro.set_ylabel("RO")
    ax_ro.legend(fontsize=7)
    ax_ro.set_title("RO against step per P (snapshots)", fontsize=10)
    fig.suptitle(title or "knowledge overshadowing")
    return save_figure(fig, path)


def plot_neuron_timeline(summary: dict, metrics: list[dict], path: str | Path, title: str = "") -> Path:
    """The loss curve, then on its step axis the hallucination probes' held-out AUROC and H-neuron counts
    (every number from summary.json's per_step rows; biolab.mech.neurons_study)."""
    rows = summary["per_step"]
    steps = [r["step"] for r in rows]

    def column(key):
        return [r[key] if r[key] is not None else float("nan") for r in rows]

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    loss_panel(axes[0], metrics, summary)
    axes[0].set_title("loss curve (plateau shaded)")
    ax = axes[1]
    ax.plot(steps, column("main_probe_auroc_heldout_people"), "o-",
            label=f"probe of step {summary['main_step']} applied here (held-out people)")
    ax.plot(steps, column("own_probe_auroc_heldout_people"), "s-", color="tab:brown", label="probe fitted at this step")
    ax.plot(steps, column("main_probe_auroc_unseen"), "^--", color="tab:red", alpha=0.7,
            label="main probe: unseen vs held-out faithful")
    ax.plot(steps, column("confidence_baseline_auroc"), "x:", color="grey", label="confidence-only baseline")
    randoms = summary.get("auroc_random_sets") or {}
    if randoms.get("mean") is not None:
        ax.axhline(randoms["mean"], color="k", linestyle=":", linewidth=1,
                   label=f"random neuron sets at step {summary['main_step']} ({randoms['mean']:.2f})")
    ax.axhline(0.5, color="k", linewidth=0.5)
    ax.set_ylim(0.3, 1.02)
    ax.set_ylabel("AUROC")
    ax.set_title(f"hallucinated vs faithful items (labels of step {summary['main_step']})")
    mark_timeline(ax, summary)
    ax = axes[2]
    ax.plot(steps, column("own_n_h_neurons"), "o-", color="tab:olive", label="H-neurons of the probe fitted here")
    ax2 = ax.twinx()
    ax2.plot(steps, column("jaccard_with_main"), "s--", color="tab:cyan")
    ax2.set_ylabel("Jaccard with the main H-neurons", color="tab:cyan")
    ax2.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("H-neurons")
    ax.set_title(f"H-neurons per step (of {summary.get('n_neurons_total')} MLP neurons)")
    mark_timeline(ax, summary)
    fig.suptitle(f"hallucination neurons over training\n{title}", fontsize=10)
    return save_figure(fig, path)


def plot_unknown_answer(summary: dict, steering_rows: list[dict], ablation: list[dict], path: str | Path,
                        title: str = "") -> Path:
    """The "unknown" answer of a fine-tuned model (biolab.mech.unknown_study): the change in its unknown-answer
    rate when steered with the base model's latents, against alpha, with the random controls at the headline
    alpha; and the rate on unseen people with a direction ablated from the weights, against random directions."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    for steered, people, color in (("unknown", "known", "tab:red"), ("known", "unseen", "tab:blue")):
        rows = sorted((r for r in steering_rows if r["steered"] == steered and r["condition"] == "latent"),
                      key=lambda r: r["alpha"])
        ax.plot([r["alpha"] for r in rows], [r["unknown_change"] for r in rows], "o-", color=color,
                label=f"{steered} latent on {people} people")
        for condition, marker, shift in (("random_latents", "s", 0.92), ("random_directions", "^", 1.08)):
            for r in steering_rows:  # beside the latent's point at the same alpha (shifted to stay readable)
                if r["steered"] == steered and r["condition"] == condition:
                    ax.errorbar(r["alpha"] * shift, r["unknown_change"], yerr=r["unknown_change_sd"] or 0, fmt=marker,
                                color=color, alpha=0.5, capsize=3,
                                label=f"{condition.replace('_', ' ')} ({people}, mean +- sd)")
    ax.axhline(0, color="k", linewidth=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("alpha (x residual norm at the last name token)")
    ax.set_ylabel("change in the unknown-answer rate")
    ax.set_title(f"steering with the base model's latents\n(unknown-answer rate unsteered: known "
                 f"{summary['unknown_rate_known']:.2f}, unseen {summary['unknown_rate_unseen']:.2f})", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    names = [r["direction"] for r in ablation]
    rates = [r["unseen_unknown_rate"] for r in ablation]
    errors = [r.get("unseen_unknown_rate_change_sd") or 0 for r in ablation]
    ax.bar(range(len(names)), rates, yerr=errors, capsize=4,
           color=["grey"] + ["tab:red"] * (len(names) - 2) + ["lightgrey"])
    for i, r in enumerate(ablation):  # what the ablation costs on known people
        ax.text(i, rates[i] + errors[i] + 0.02, f"known acc.\n{r['known_accuracy']:.2f}", ha="center", fontsize=7)
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylabel("unknown-answer rate on unseen people")
    ax.set_ylim(0, 1.02)
    ax.set_title("direction ablated from every residual-stream write\n(bars: mean +- sd over random directions)",
                 fontsize=9)
    fig.suptitle(f"the \"unknown\" answer: base model's latents on the fine-tuned model\n{title}", fontsize=10)
    return save_figure(fig, path)
