"""Entity awareness across training: ``python -m biolab.mech entities RUN_DIR [key=value ...]``.

Does the model know whom it does not know (SPEC 9.4, "Do I Know This Entity?")? For every snapshot of a
run, on fixed random samples of seen and unseen people (biolab.mech.entities):

- the sets: known = seen people answered right on >= min_right of the six attributes at that snapshot;
  unseen people, and the token-matched subset whose three name tokens all occur among seen people;
- per layer (0 = embeddings, the token-identity control) and prompt family (name first / words before
  the name), the out-of-fold AUROC (5 folds) of a difference-of-means direction and an L2 logistic probe
  on the residual stream at the last name token: known vs token-matched unseen, and every sampled seen
  person vs token-matched unseen (defined before anyone is known); the first also at the answer position
  (the prompt's last token), where the model's own confidence is read; known vs all unseen people (token
  identity not controlled) at the main snapshots; and, as a confidence-only baseline, the AUROC of the
  model's own max next-token probability at the answer position (known vs token-matched unseen);
- at the main snapshots (sae_steps; default the 1%- and 50%-accuracy steps and the last), a TopK sparse
  autoencoder per layer 1..L (biolab.mech.sae) on the residual stream of ordinary biographies: variance
  explained, mean active latents, dead latents, the LM-loss increase when spliced in, and the latents that
  separate known from token-matched unseen people (latents active on > 2% of ordinary tokens dropped;
  the worst score over the two families);
- at the last of them, steering (biolab.mech.steering): the best "unknown" latent's decoder direction on
  known people and the best "known" latent on unseen people, alpha x the mean residual norm there, against
  random_controls random latents of the same layer and random directions, at the same alpha.

Writes RUN_DIR/mech/entities/ (or out=DIR): steps/step_<k>.json (resumable), table.csv (one row per
step), layers.csv (final step), sae.csv, steering.csv, summary.json, heatmap.png, timeline.png.

Options (key=value): n_people=300 (seen and unseen people sampled), min_right=2, min_known=20 (fewer
known people: no known-vs-unknown numbers at that step), folds=5, steps=all (or a list), sae_steps=main
(or a list of steps, or none), expansion=4 (d_sae / d_model), k=16, sae_train_steps=800, sae_batch=512,
biographies=1500 (SAE training biographies of seen people, plus a quarter as many of unseen people),
heldout_biographies=256, alphas=[0.5,1,2,4], headline_alpha=2, random_controls=10, steer_people=150
(known and unseen people steered, one prompt per family each), unknown=matched (the unknown people of
the SAE latents' scores: token-matched unseen, or all unseen where a small population has too few
matched), n_boot=200, seed=0, out=DIR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biolab.errors import ConfigError
from biolab.mech.entities import (FAMILIES, auroc, entity_sets, family_prompts, last_name_residuals, linear_separation,
                                  residuals_at)
from biolab.mech.entities_sae import sae_analysis, steering_analysis
from biolab.mech.scoring import answer_logits
from biolab.mech.track import requested_steps, track
from biolab.runs import load_run

DEFAULTS = {"n_people": 300, "min_right": 2, "min_known": 20, "folds": 5, "steps": "all", "sae_steps": "main",
            "expansion": 4, "k": 16, "sae_train_steps": 800, "sae_batch": 512, "biographies": 1500,
            "heldout_biographies": 256, "alphas": [0.5, 1, 2, 4], "headline_alpha": 2, "random_controls": 10,
            "steer_people": 150, "unknown": "matched",
            "n_boot": 200, "seed": 0, "out": None}
POSITIVE_INTS = ("n_people", "folds", "expansion", "k", "sae_train_steps", "sae_batch",
                 "biographies", "heldout_biographies", "random_controls", "steer_people")


def check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for entities; allowed: {', '.join(DEFAULTS)}")
    merged = {**DEFAULTS, **options}
    for key in (*POSITIVE_INTS, "min_right", "min_known", "n_boot", "seed"):
        low = 1 if key in POSITIVE_INTS else 0
        if not (isinstance(merged[key], int) and not isinstance(merged[key], bool) and merged[key] >= low):
            raise ConfigError(f"{key} must be an integer >= {low}, got {merged[key]!r}")
    if merged["folds"] < 2 or merged["min_known"] < merged["folds"]:
        raise ConfigError(f"need folds >= 2 and min_known >= folds, got folds={merged['folds']}, "
                          f"min_known={merged['min_known']}")
    for key, words in (("steps", ("all",)), ("sae_steps", ("main", "none"))):
        value = merged[key]
        if not (value in words or (isinstance(value, list) and value and all(isinstance(s, int) for s in value))):
            raise ConfigError(f"{key} must be {' or '.join(map(repr, words))} or a non-empty list of steps, got {value!r}")
    if merged["unknown"] not in ("matched", "unseen"):
        raise ConfigError(f"unknown must be 'matched' or 'unseen', got {merged['unknown']!r}")
    alphas = merged["alphas"]
    if not (isinstance(alphas, list) and alphas and all(isinstance(a, (int, float)) and a > 0 for a in alphas)):
        raise ConfigError(f"alphas must be a non-empty list of positive numbers, got {alphas!r}")
    if merged["headline_alpha"] not in alphas:
        raise ConfigError(f"headline_alpha={merged['headline_alpha']!r} must be one of alphas {alphas}")
    return merged


def nearest_snapshot(steps: list[int], step: int | None) -> int | None:
    return None if step is None else min(steps, key=lambda s: (abs(s - step), s))


def main_steps(run, steps: list[int], option) -> list[int]:
    """The snapshots that get sparse autoencoders: the 1%- and 50%-accuracy steps and the last (nearest
    snapshots), or the steps given."""
    if option == "none":
        return []
    if isinstance(option, list):
        return sorted(set(option))
    milestones = run.summary()
    wanted = [milestones.get("acc_1pct_step"), milestones.get("acc_50pct_step"), steps[-1]]
    return sorted({nearest_snapshot(steps, s) for s in wanted if s is not None})


def linear_results(model, dm, options: dict, n_boot: int) -> tuple[dict, object, dict]:
    """(result, the EntitySets, {family: (seen [L+1, s, d], unseen [L+1, u, d]) residuals}): the sets and every
    comparison's per-layer, per-family AUROC at one snapshot."""
    seed = options["seed"]
    sets = entity_sets(model, dm, options["n_people"], options["min_right"], seed)
    known = np.isin(sets.seen, sets.known)
    matched = np.isin(sets.unseen, sets.matched)
    result = {"sets": sets.sizes(), "right_mean": float(sets.right.mean()), "comparisons": {}}
    residuals = {}
    for family in FAMILIES:
        seen_prompts = family_prompts(dm, sets.seen, True, family, seed)
        unseen_prompts = family_prompts(dm, sets.unseen, False, family, seed)
        seen_x, unseen_x = last_name_residuals(model, seen_prompts), last_name_residuals(model, unseen_prompts)
        residuals[family] = (seen_x, unseen_x)                                      # [L+1, s, d], [L+1, u, d]
        seen_end = residuals_at(model, seen_prompts.tokens, seen_prompts.last)      # at the answer position
        unseen_end = residuals_at(model, unseen_prompts.tokens, unseen_prompts.last)
        groups = {"known_vs_matched": (seen_x[:, known], unseen_x[:, matched]),
                  "seen_vs_matched": (seen_x, unseen_x[:, matched]),
                  "known_vs_matched_at_answer": (seen_end[:, known], unseen_end[:, matched])}
        if n_boot:  # main snapshots only: against every unseen person (token identity not controlled)
            groups["known_vs_unseen"] = (seen_x[:, known], unseen_x)
        confidence = [answer_logits(model, p).softmax(-1).max(-1).values.cpu().numpy() for p in (seen_prompts, unseen_prompts)]
        if min(known.sum(), matched.sum()) >= options["min_known"]:   # the model's own max probability as a score
            scores = np.concatenate([confidence[0][known], confidence[1][matched]])
            labels = np.concatenate([np.ones(known.sum()), np.zeros(matched.sum())]).astype(int)
            result.setdefault("max_prob_auroc", {})[family] = auroc(scores, labels)
        for name, (pos, neg) in groups.items():
            if min(pos.shape[1], neg.shape[1]) < options["min_known"]:
                result["comparisons"].setdefault(name, None)
            elif name == "seen_vs_matched" and known.all():    # the same people as known_vs_matched
                result["comparisons"].setdefault(name, {})[family] = result["comparisons"]["known_vs_matched"][family]
            else:
                rows = linear_separation(pos, neg, options["folds"], seed, n_boot if name == "known_vs_matched" else 0)
                result["comparisons"].setdefault(name, {})[family] = rows
    result["residual_norm"] = [float(residuals[FAMILIES[0]][0][layer].norm(dim=-1).mean())
                               for layer in range(residuals[FAMILIES[0]][0].shape[0])]
    return result, sets, residuals


def run_entities(run_dir: str | Path, log=print, **options) -> dict:
    """Analyse every requested snapshot (skipping those done), then write tables, summary and figures."""
    options = check_options(options)
    run = load_run(run_dir)
    steps = requested_steps(run, options["steps"])
    sae_steps = main_steps(run, steps, options["sae_steps"])
    missing = sorted(set(sae_steps) - set(steps))
    if missing:
        raise ConfigError(f"sae_steps {missing} are not among the analysed steps {steps}")
    dm = run.datamodule()
    if options["n_people"] < options["min_known"]:
        raise ConfigError(f"n_people={options['n_people']} is below min_known={options['min_known']}")
    for name, population in (("seen", dm.seen), ("unseen", dm.unseen)):
        if len(population) < options["min_known"]:
            raise ConfigError(f"{run.dir} has {len(population)} {name} people, fewer than min_known="
                              f"{options['min_known']}: no known/unknown comparison is possible")
    out_dir = Path(options["out"]) if options["out"] else run.dir / "mech" / "entities"
    log(f"entities of {run.dir}: {len(steps)} snapshots, sparse autoencoders at {sae_steps} -> {out_dir}")

    def analyse(model, step):
        main = step in sae_steps
        result, sets, residuals = linear_results(model, dm, options, options["n_boot"] if main else 0)
        unknown = sets.matched if options["unknown"] == "matched" else sets.unseen
        if main and min(len(sets.known), len(unknown)) >= options["min_known"]:
            result["sae"], latents = sae_analysis(model, dm, sets, options)
            if step == sae_steps[-1]:
                result["steering"] = steering_analysis(model, dm, sets, latents, result["residual_norm"], options)
        return result

    saved = {k: v for k, v in options.items() if k != "out"}
    results = track(run, out_dir, analyse, steps, {**saved, "sae_steps": sae_steps}, log)
    from biolab.mech.entities_report import write_report

    return write_report(results, run, out_dir)
