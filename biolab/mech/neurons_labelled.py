"""One checkpoint's hallucination-neuron study (H-Neurons, SPEC 9.3): labels, the L1 probe, its tests and the alpha
intervention. Called by biolab.mech.neurons_study at the main checkpoint (first snapshot with 40-80% seen accuracy)
and the final one; each function is pure in (model, items, options).

    items = build_items(dm, people=None, unseen_people=128, other_attributes=["university", "employer"], seed=0)
    result = analyse_labelled(model, items, options)     # JSON-able: counts, probes, AUROCs, intervention
    result = analyse_transfer(model, items, main_result, options)   # another snapshot, the main items and labels

Items: every attribute's evaluation-template prompt for `people` seen people (all by default) and `unseen_people`
unseen ones. Seen people are split by person (60% train, 20% val, 20% test); the probe is fitted on the training
attributes of train people, C chosen on val people, and tested on held-out (test) people, on the other attributes
(val and test people) and on unseen people (hallucinated by construction; AUROC against the held-out faithful items).
Classes are balanced per split by subsampling the larger one (seeded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biolab.errors import ConfigError
from biolab.mech.neuron_probe import (Data, LinearProbe, accuracy, auroc, bootstrap_auroc, random_set_aurocs, refit_auroc,
                                      select_l1_probe)
from biolab.mech.neuron_scaling import alpha_sweep, conflict_prompts, slope_interval
from biolab.mech.neurons import cett_features, classes, greedy_answers, label_items, scaling_hooks
from biolab.mech.prompts import PromptSet, attribute_indices, recall_prompts
from biolab.mech.scoring import prompt_correct

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
TEST_SETS = ("heldout_people", "other_attributes", "unseen")


@dataclass
class Items:
    dm: object             # the run's set-up BioDataModule
    seen: PromptSet        # [n_seen] prompts of seen people, every attribute
    unseen: PromptSet      # [n_unseen] prompts of unseen people
    split: np.ndarray      # [n_seen] 0 train, 1 val, 2 test (by person)
    other: np.ndarray      # [n_seen] bool: an attribute the probe is not trained on


def build_items(dm, people: int | None, unseen_people: int, other_attributes: list[str], seed: int) -> Items:
    try:
        other = attribute_indices(dm, other_attributes)
    except ValueError as err:
        raise ConfigError(f"other_attributes: {err}") from None
    if len(other) >= len(dm.attributes):
        raise ConfigError("other_attributes must leave at least one attribute to train the probe on")
    seen = recall_prompts(dm, "seen", n=people or len(dm.seen), seed=seed)
    unseen = recall_prompts(dm, "unseen", n=min(unseen_people, len(dm.unseen)), seed=seed)
    order = np.random.default_rng([seed, 29]).permutation(len(dm.seen))
    cut = np.cumsum(SPLIT_FRACTIONS)[:-1] * len(order)
    split_of_person = np.empty(len(order), dtype=np.int64)
    for k, chunk in enumerate(np.split(order, cut.astype(int))):
        split_of_person[chunk] = k
    return Items(dm=dm, seen=seen, unseen=unseen, split=split_of_person[seen.person.numpy()],
                 other=np.isin(seen.attribute.numpy(), other))


def _balanced(rows: np.ndarray, label: np.ndarray, rng) -> np.ndarray:
    """rows with label 0 or 1 -> a seeded subset with as many of each."""
    groups = [rows[label[rows] == c] for c in (0, 1)]
    n = min(len(g) for g in groups)
    return np.sort(np.concatenate([rng.choice(g, size=n, replace=False) for g in groups]))


def select_rows(label_seen: np.ndarray, label_unseen: np.ndarray, items: Items, seed: int) -> dict[str, list[int]]:
    """Balanced item indices per set: train / val / test (training attributes), other (other attributes, non-train
    people), unseen (hallucinated unseen items; the faithful side is the test set's)."""
    rng = np.random.default_rng([seed, 31])
    trained = ~items.other
    rows = {name: _balanced(np.flatnonzero(trained & (items.split == k)), label_seen, rng) for k, name in enumerate(SPLITS)}
    rows["other"] = _balanced(np.flatnonzero(items.other & (items.split > 0)), label_seen, rng)
    faithful_test = rows["test"][label_seen[rows["test"]] == 0]
    unseen = np.flatnonzero(label_unseen == 1)
    rows["unseen"] = np.sort(rng.choice(unseen, size=min(len(unseen), len(faithful_test)), replace=False))
    return {name: r.tolist() for name, r in rows.items()}


def class_counts(label_seen: np.ndarray, label_unseen: np.ndarray, items: Items) -> dict:
    counts = {"unseen": {"hallucinated": int((label_unseen == 1).sum()), "faithful": int((label_unseen == 0).sum()),
                         "mixed": int((label_unseen == -1).sum())}}
    for k, name in enumerate(SPLITS):
        for group, mask in (("trained_attributes", ~items.other), ("other_attributes", items.other)):
            part = label_seen[mask & (items.split == k)]
            counts[f"{name}_{group}"] = {"hallucinated": int((part == 1).sum()), "faithful": int((part == 0).sum()),
                                         "mixed": int((part == -1).sum())}
    return counts


def datasets(model, items: Items, rows: dict, label_seen: np.ndarray) -> tuple[dict, dict]:
    """CETT features of the selected items at this model -> ({set: Data of answer features}, {set: confidence Data}),
    plus "fit:1-vs-1" (the train set) and "fit:3-vs-1" (the train set and its other-position vectors as negatives)."""
    seen_idx = sorted({i for name in SPLITS + ("other",) for i in rows[name]})
    position = {i: k for k, i in enumerate(seen_idx)}
    seen = items.seen.subset(seen_idx)
    seen_feats = cett_features(model, seen, greedy_answers(model, seen))
    unseen = items.unseen.subset(rows["unseen"]) if rows["unseen"] else None
    unseen_feats = cett_features(model, unseen, greedy_answers(model, unseen)) if unseen is not None else None
    people = items.seen.person.numpy()

    def seen_data(name, source):
        at = [position[i] for i in rows[name]]
        return Data(source[at].numpy(), label_seen[rows[name]].astype(int), people[rows[name]])

    answer = {name: seen_data(name, seen_feats.answer) for name in SPLITS + ("other",)}
    confidence = {name: seen_data(name, seen_feats.confidence) for name in SPLITS + ("other",)}
    test = answer["test"]
    faithful = test.y == 0
    for target, feats, source in ((answer, seen_feats.answer, unseen_feats and unseen_feats.answer),
                                  (confidence, seen_feats.confidence, unseen_feats and unseen_feats.confidence)):
        if source is None:
            target["unseen"] = None
            continue
        base = target["test"]
        target["unseen"] = Data(np.concatenate([base.X[faithful], source.numpy()]),
                                np.concatenate([np.zeros(faithful.sum(), int), np.ones(len(source), int)]),
                                np.concatenate([base.people[faithful], -1 - items.unseen.person.numpy()[rows["unseen"]]]))
    train, other = answer["train"], seen_data("train", seen_feats.other)
    answer["fit:1-vs-1"] = train
    answer["fit:3-vs-1"] = Data(np.concatenate([train.X, other.X]), np.concatenate([train.y, np.zeros_like(other.y)]),
                                np.concatenate([train.people, other.people]))
    return answer, confidence


def silencer(model, items: Items, cap: int):
    """neurons -> the model's accuracy on (up to cap) val-people items with those neurons silenced (alpha = 0)."""
    val = items.seen.subset(np.flatnonzero((items.split == 1) & ~items.other)[:cap].tolist())
    d_mlp = model.blocks[0].mlp.down.weight.shape[1]

    def silenced_accuracy(neurons: list[int]) -> float:
        with model.hooks(scaling_hooks(neurons, 0.0, d_mlp)):
            return prompt_correct(model, val).float().mean().item()
    return silenced_accuracy


def evaluate(probe: LinearProbe, answer: dict, options: dict) -> dict:
    out = {}
    for name, key in (("heldout_people", "test"), ("other_attributes", "other"), ("unseen", "unseen")):
        data = answer[key]
        if data is None or not len(data.y):
            out[name] = {"auroc": None, "accuracy": None, "n": 0}
            continue
        scores = probe.decision(data.X)
        out[name] = {"auroc": auroc(scores, data.y), "accuracy": accuracy(scores, data.y), "n": int(len(data.y)),
                     "auroc_interval": bootstrap_auroc(scores, data, options["bootstrap"], options["seed"])}
        if name == "unseen":  # the paper's NonExist score: how many fabricated answers the probe flags
            out[name]["flagged_fraction"] = float((scores[data.y == 1] > 0).mean()) if (data.y == 1).any() else None
    return out


def fit_and_test(model, items: Items, answer: dict, confidence: dict, options: dict, labelling: str) -> dict:
    fit = answer[f"fit:{labelling}"]
    probe, sweep = select_l1_probe(fit, answer["val"], silencer(model, items, options["intervention_items"]),
                                   options["n_grid"])
    h = probe.h_neurons
    randoms = random_set_aurocs(fit, answer["test"], len(h), options["random_sets"], options["seed"])
    return {"labelling": labelling, "probe": probe.to_json(), "c_sweep": sweep, "h_neurons": h,
            "n_h_neurons": len(h), "n_nonzero": len(probe.indices), "tests": evaluate(probe, answer, options),
            "h_only_refit_auroc": refit_auroc(fit, answer["test"], h),
            "random_set_aurocs": randoms,
            "confidence_baseline_auroc": {name: refit_auroc(confidence["train"], confidence[key], [0, 1])
                                          if confidence[key] is not None else None
                                          for name, key in (("heldout_people", "test"), ("unseen", "unseen"))}}


def intervene(model, items: Items, h: list[int], options: dict) -> dict:
    """Scale the H-neurons and random sets of the same size by each alpha; slopes with bootstrap intervals."""
    cap = options["intervention_items"]
    test_rows = np.flatnonzero(items.split == 2)
    seen = items.seen.subset(np.random.default_rng([options["seed"], 37]).permutation(test_rows)[:cap].tolist())
    unseen = items.unseen.subset(list(range(min(cap, len(items.unseen)))))
    d_total = len(model.blocks) * model.blocks[0].mlp.down.weight.shape[1]
    rng = np.random.default_rng([options["seed"], 41])
    sets = {"h": h, **{f"random_{k}": rng.choice(d_total, size=len(h), replace=False).tolist()
                       for k in range(options["random_sets"])}}
    sweep = alpha_sweep(model, sets, options["alphas"], seen, unseen, conflict_prompts(items.dm, seen, options["seed"]))
    out = {}
    for measure in sweep["h"]:
        h_fit = slope_interval(options["alphas"], sweep["h"][measure], options["bootstrap"], options["seed"])
        random_slopes = [slope_interval(options["alphas"], sweep[k][measure], 1)["slope"] for k in sets if k != "h"]
        spread = float(np.std(random_slopes)) if random_slopes else None
        out[measure] = {**h_fit, "random_slopes": random_slopes,
                        "random_slope_mean": float(np.mean(random_slopes)) if random_slopes else None,
                        "random_slope_sd": spread,
                        "h_over_random_spread": abs(h_fit["slope"]) / spread if spread else None,
                        "random_at_alpha_mean": np.mean([sweep[k][measure].mean(1) for k in sets if k != "h"], 0).tolist()
                        if random_slopes else None}
    return {"alphas": list(options["alphas"]), "n_items": {"seen": len(seen), "unseen": len(unseen)}, "measures": out}


def label_and_select(model, items: Items, options: dict, required: bool) -> tuple[dict, np.ndarray, str | None]:
    """Labels by sampling and the balanced rows: (JSON-able result, [n_seen] classes, a "too few items" message or
    None). required: too few items per class is a ConfigError rather than a message."""
    n_right_seen = label_items(model, items.seen, options["n_samples"], options["seed"]).numpy()
    n_right_unseen = label_items(model, items.unseen, options["n_samples"], options["seed"] + 1).numpy()
    label_seen, label_unseen = classes(n_right_seen, options["n_samples"]), classes(n_right_unseen, options["n_samples"])
    rows = select_rows(label_seen, label_unseen, items, options["seed"])
    result = {"n_neurons_total": len(model.blocks) * model.blocks[0].mlp.down.weight.shape[1],
              "class_counts": class_counts(label_seen, label_unseen, items),
              "balanced_items": {name: len(r) for name, r in rows.items()},
              "seen_accuracy_sampled": float((n_right_seen / options["n_samples"]).mean()),
              "n_right_seen": n_right_seen.tolist(), "n_right_unseen": n_right_unseen.tolist(), "rows": rows}
    too_few = [name for name in SPLITS if len(rows[name]) // 2 < options["min_per_class"]]
    message = None
    if too_few:
        message = (f"too few items per class at this snapshot: {', '.join(f'{n} {len(rows[n]) // 2}' for n in too_few)} "
                   f"per class (min_per_class={options['min_per_class']})")
        if required:
            raise ConfigError(message + "; pass more people, another main_step or a smaller min_per_class")
    return result, label_seen, message


def analyse_labelled(model, items: Items, options: dict, required: bool) -> dict:
    """Labels by sampling, the probes under both labellings, their tests and the intervention. required: too few
    items per class is a ConfigError (the main checkpoint) rather than a result without a probe (the final one)."""
    result, label_seen, too_few = label_and_select(model, items, options, required)
    if too_few:
        return {**result, "skipped": too_few, "probe": None}
    rows = result["rows"]
    answer, confidence = datasets(model, items, rows, label_seen)
    main = fit_and_test(model, items, answer, confidence, options, options["labelling"])
    other = "1-vs-1" if options["labelling"] == "3-vs-1" else "3-vs-1"
    result.update(main, other_labelling=fit_and_test(model, items, answer, confidence, options, other))
    result["intervention"] = intervene(model, items, main["h_neurons"], options) if main["h_neurons"] else None
    return result


def attribute_baseline_auroc(items: Items, result: dict, options: dict) -> float | None:
    """AUROC on held-out people of an L2 logistic probe on the question's attribute alone (one-hot), fitted on the
    training items: how much of the separation the attribute explains (labels are not balanced within attribute)."""
    label = classes(np.asarray(result["n_right_seen"]), options["n_samples"])
    onehot = np.eye(len(items.dm.attributes))[items.seen.attribute.numpy()]         # [n_seen, attributes]
    people = items.seen.person.numpy()
    train, test = (Data(onehot[rows], label[rows], people[rows]) for rows in (np.asarray(result["rows"][name], dtype=int)
                                                                            for name in ("train", "test")))
    return refit_auroc(train, test, np.arange(onehot.shape[1])) if len(test.y) else None


def class_counts_by_attribute(items: Items, result: dict, options: dict) -> dict:
    """{attribute: {hallucinated, faithful, mixed}} over all seen items, from the saved labels."""
    label = classes(np.asarray(result["n_right_seen"]), options["n_samples"])
    attribute = items.seen.attribute.numpy()
    return {name: {group: int(((attribute == k) & (label == c)).sum())
                   for group, c in (("hallucinated", 1), ("faithful", 0), ("mixed", -1))}
            for k, name in enumerate(items.dm.attributes)}


def analyse_transfer(model, items: Items, main: dict, options: dict) -> dict:
    """At another snapshot, on the main checkpoint's items and labels: the main probe applied (its AUROCs) and a probe
    fitted at this snapshot (its AUROCs, H-neuron count and overlap with the main H-neurons)."""
    label_seen = classes(np.asarray(main["n_right_seen"]), options["n_samples"])
    answer, confidence = datasets(model, items, main["rows"], label_seen)
    main_probe = LinearProbe(**main["probe"])
    own = fit_and_test(model, items, answer, confidence, {**options, "random_sets": 0}, options["labelling"])
    h_main, h_own = set(main["h_neurons"]), set(own["h_neurons"])
    return {"main_probe": evaluate(main_probe, answer, {**options, "bootstrap": 0}),
            "own_probe": own["tests"], "own_n_h_neurons": own["n_h_neurons"], "own_h_neurons": own["h_neurons"],
            "jaccard_with_main": len(h_main & h_own) / len(h_main | h_own) if h_main | h_own else None,
            "confidence_baseline_auroc": own["confidence_baseline_auroc"]["heldout_people"],
            "main_probe_train_auroc": auroc(main_probe.decision(answer["train"].X), answer["train"].y)}
