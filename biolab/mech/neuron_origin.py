"""Origin of the hallucination neurons with fine-tuning (H-Neurons, arXiv 2512.01797, "origin"; SPEC 9.3).

A base model (a pre-training run's final snapshot) and a fine-tuned one (``python -m biolab.train
experiment=finetune_cpu init_from=BASE/checkpoints/last.ckpt ...``, new people added) are compared:

    drift = neuron_drift(base, finetuned)                 # NeuronDrift: .delta_up, .delta_down, .z, .rank [D]
    set_drift(drift, neurons, n_random=1000, seed=0)       # mean z / rank of a neuron set against random sets
    result = origin_test(base, finetuned, items, base_result, options)
    tuned = load_finetuned(run, "runs/finetune")           # the fine-tuned Transformer, checked against run

Backward transfer: the L1 probe (biolab.mech.neurons_labelled, the same labelling, splits and choice of C) is fitted
on the fine-tuned model's items, labels and CETT features, then applied to the base model's features of the base's
own labelled items (base_result: analyse_labelled at the base snapshot); AUROC there (scales shift between models,
so accuracy is not used), beside the base's own probe and L2 probes on random neuron sets fitted the same way.

Parameter drift of MLP neuron j (index l * d_mlp + j): delta_up = 1 - cos(base, fine-tuned) of its input weights
(row j of mlp.up), delta_down = 1 - cos of its output weights (column j of mlp.down); each is z-scored over all
neurons and the two z-scores are averaged (z). rank: the paper's normalised rank, (D - rank of z) / (D - 1), so 1 is
the least changed neuron and 0 the most changed one. Run by ``python -m biolab.mech neurons RUN_DIR finetuned=DIR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from biolab.errors import ConfigError
from biolab.finetune import DATA_KEYS
from biolab.mech.neuron_probe import LinearProbe, random_set_aurocs
from biolab.mech.neurons import classes
from biolab.mech.neurons_labelled import Items, datasets, evaluate, fit_and_test, label_and_select

DRIFT_RANDOM_SETS = 1000
FLAT = 1e-9            # a spread below this is float noise: its z-scores are 0


def load_finetuned(run, directory: str):
    """The final model of a fine-tuning run started from `run`'s final checkpoint, with the same people and model
    shape (else a one-line ConfigError naming the difference)."""
    from biolab.runs import LAST_CHECKPOINT, check_weights, load_run

    tuned = load_run(directory)
    start = tuned.cfg.get("init_from")
    if not start:
        raise ConfigError(f"finetuned: {tuned.dir} is not a fine-tuning run (its config has no init_from)")
    model = tuned.model()
    check_weights(model.state_dict(), run.model(), tuned.dir, "finetuned")
    base_last = run.dir / LAST_CHECKPOINT
    if not (Path(start).exists() and base_last.exists() and Path(start).samefile(base_last)):
        raise ConfigError(f"finetuned: {tuned.dir} started from {start}, not from {base_last}")
    for key in DATA_KEYS:
        if tuned.cfg.data.get(key) != run.cfg.data.get(key):
            raise ConfigError(f"finetuned: {tuned.dir} has other people (data.{key}: {tuned.cfg.data.get(key)!r}, "
                              f"{run.dir}: {run.cfg.data.get(key)!r})")
    return model


@dataclass
class NeuronDrift:
    delta_up: np.ndarray    # [D] 1 - cosine of the input weights
    delta_down: np.ndarray  # [D] 1 - cosine of the output weights
    z: np.ndarray           # [D] mean of the two z-scores over all neurons
    rank: np.ndarray        # [D] normalised rank: 1 = least changed, 0 = most changed


def _one_minus_cosine(a: torch.Tensor, b: torch.Tensor, dim: int) -> np.ndarray:
    cosine = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=dim)
    return (1 - cosine).clamp(min=0).numpy()


def _zscore(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return np.zeros_like(values) if spread < FLAT else (values - values.mean()) / spread


def neuron_drift(base, finetuned) -> NeuronDrift:
    """Per-neuron weight drift between two models of the same shape."""
    up, down = [], []
    for block_b, block_f in zip(base.blocks, finetuned.blocks):
        up.append(_one_minus_cosine(block_b.mlp.up.weight, block_f.mlp.up.weight, dim=1))          # rows [d_mlp, d_model]
        down.append(_one_minus_cosine(block_b.mlp.down.weight, block_f.mlp.down.weight, dim=0))    # columns [d_model, d_mlp]
    delta_up, delta_down = np.concatenate(up), np.concatenate(down)                                # [D]
    z = (_zscore(delta_up) + _zscore(delta_down)) / 2
    from scipy.stats import rankdata

    rank = (len(z) - rankdata(z)) / max(len(z) - 1, 1)
    return NeuronDrift(delta_up, delta_down, z, rank)


def set_drift(drift: NeuronDrift, neurons: list[int], n_random: int = DRIFT_RANDOM_SETS, seed: int = 0) -> dict:
    """Mean z and mean normalised rank of a neuron set, against n_random random sets of its size; p: the fraction
    of random sets whose mean rank is at least the set's (one-sided: "changed less than random"), +1 smoothed."""
    if not neurons:
        return {"n": 0, "mean_z": None, "mean_rank": None}
    idx = np.asarray(neurons, dtype=int)
    rng = np.random.default_rng([seed, 43])
    draws = np.stack([rng.choice(len(drift.z), size=len(idx), replace=False) for _ in range(n_random)])  # [sets, k]
    random_z, random_rank = drift.z[draws].mean(1), drift.rank[draws].mean(1)
    mean_rank = float(drift.rank[idx].mean())
    return {"n": len(idx), "mean_z": float(drift.z[idx].mean()), "mean_rank": mean_rank,
            "mean_delta_up": float(drift.delta_up[idx].mean()), "mean_delta_down": float(drift.delta_down[idx].mean()),
            "random_mean_z": float(random_z.mean()), "random_sd_z": float(random_z.std()),
            "random_mean_rank": float(random_rank.mean()), "random_sd_rank": float(random_rank.std()),
            "n_random": n_random, "p_rank_at_least": float(((random_rank >= mean_rank).sum() + 1) / (n_random + 1))}


def origin_test(base, finetuned, items: Items, base_result: dict, options: dict) -> dict:
    """Backward transfer of the fine-tuned model's probe to the base model, and the drift of both probes' H-neurons.
    base_result: analyse_labelled of the base model on the same items and options (its labels, rows and probe)."""
    drift = neuron_drift(base, finetuned)
    tuned, label_tuned, too_few = label_and_select(finetuned, items, options, required=False)
    out = {"finetuned_class_counts": tuned["class_counts"], "finetuned_balanced_items": tuned["balanced_items"],
           "finetuned_seen_accuracy_sampled": tuned["seen_accuracy_sampled"],
           "drift_all": {"mean_delta_up": float(drift.delta_up.mean()), "mean_delta_down": float(drift.delta_down.mean())},
           "base_h_neuron_drift": set_drift(drift, base_result.get("h_neurons") or [], seed=options["seed"])}
    if too_few or base_result.get("probe") is None:
        return {**out, "skipped": f"fine-tuned model: {too_few}" if too_few else f"base: {base_result.get('skipped')}"}
    answer_tuned, confidence_tuned = datasets(finetuned, items, tuned["rows"], label_tuned)
    fitted = fit_and_test(finetuned, items, answer_tuned, confidence_tuned, {**options, "random_sets": 0},
                          options["labelling"])
    label_base = classes(np.asarray(base_result["n_right_seen"]), options["n_samples"])
    answer_base, _ = datasets(base, items, base_result["rows"], label_base)
    probe = LinearProbe(**fitted["probe"])
    fit = answer_tuned[f"fit:{options['labelling']}"]
    randoms = [a for a in random_set_aurocs(fit, answer_base["test"], len(fitted["h_neurons"]), options["random_sets"],
                                            options["seed"]) if a is not None]
    return {**out, "finetuned_probe": fitted["probe"], "finetuned_h_neurons": fitted["h_neurons"],
            "finetuned_n_h_neurons": fitted["n_h_neurons"], "finetuned_tests": fitted["tests"],
            "transfer_tests": evaluate(probe, answer_base, options), "base_tests": base_result["tests"],
            "random_sets_transfer_auroc": {"mean": float(np.mean(randoms)) if randoms else None,
                                           "sd": float(np.std(randoms)) if randoms else None, "n": len(randoms)},
            "h_neuron_overlap": {"base": len(base_result["h_neurons"]), "finetuned": fitted["n_h_neurons"],
                                 "shared": len(set(base_result["h_neurons"]) & set(fitted["h_neurons"]))},
            "h_neuron_drift": set_drift(drift, fitted["h_neurons"], seed=options["seed"])}
