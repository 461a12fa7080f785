"""The "unknown" answer steered and ablated: ``python -m biolab.mech unknown RUN_DIR [key=value ...]``.

RUN_DIR is a fine-tuning run with data.unknown_answer (experiment=unknown_cpu, docs/unknown_answer.md): a
model taught to answer the UNKNOWN token about people it does not know. Its base model is the run's
init_from checkpoint, loaded through its own run directory (biolab.runs.load_run), as is the fine-tuned
model (its last snapshot). The paper's refusal result ("Do I Know This Entity?", SPEC 9.4), in four steps:

1. on the base model, the entity sets (known = seen people it answers right on >= min_right attributes;
   unseen people never trained on, in pre-training or fine-tuning), a TopK sparse autoencoder per layer and
   the best "unknown" and "known" latents (biolab.mech.entities_sae.sae_analysis, as in ``entities``), and
   the difference of means (unseen minus known) at the last name token at the unknown latent's layer;
2. on the fine-tuned model, the unknown-answer rate (argmax at the answer position is UNKNOWN) on known and
   on unseen people, and their accuracy;
3. steering the fine-tuned model with the base model's latents (biolab.mech.entities_sae.steering_analysis):
   the unknown latent on known people (does the unknown-answer rate rise?) and the known latent on unseen
   people (does it fall?), alpha x the fine-tuned model's residual norm at the last name token, against
   random_controls random latents of the same autoencoder and random directions at the same alpha;
4. the unknown direction (the unknown latent's decoder direction, and the difference of means) ablated
   from every weight that writes to the residual stream (biolab.mech.unknown_answer.without_direction):
   does the unknown-answer rate on unseen people fall, against random_controls random directions?

Writes RUN_DIR/mech/unknown/ (or out=DIR): summary.json, steering.csv, ablation.csv, sae.csv, unknown.png.
Options (key=value), as for ``entities``: n_people=300, min_right=2, min_known=20, expansion=4, k=16,
sae_train_steps=800, sae_batch=512, biographies=1500, heldout_biographies=256, alphas=[0.5,1,2,4],
headline_alpha=2, random_controls=10, steer_people=150, unknown=matched, n_boot=200, seed=0, out=DIR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from biolab.errors import ConfigError
from biolab.io import write_csv, write_json
from biolab.mech.entities import FAMILIES, entity_sets, family_prompts, last_name_residuals
from biolab.mech.entities_sae import random_directions, sae_analysis, steering_analysis, steering_row
from biolab.mech.entities_study import check_options as check_entity_options
from biolab.mech.scoring import prompt_correct
from biolab.mech.unknown_answer import says_unknown, without_direction
from biolab.runs import load_checkpoint, load_run

OPTIONS = ("n_people", "min_right", "min_known", "expansion", "k", "sae_train_steps", "sae_batch", "biographies",
           "heldout_biographies", "alphas", "headline_alpha", "random_controls", "steer_people", "unknown",
           "n_boot", "seed", "out")


def check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for unknown; allowed: {', '.join(OPTIONS)}")
    return {k: v for k, v in check_entity_options(options).items() if k in OPTIONS}


def base_run(run):
    """(the base Run, the step of its snapshot that the fine-tuning started from); ConfigError if unusable."""
    if not run.cfg.data.get("unknown_answer"):
        raise ConfigError(f"{run.dir} was not trained with data.unknown_answer=true (experiment=unknown_cpu): "
                          "it has no unknown answer to study")
    init_from = run.cfg.get("init_from")
    if not init_from:
        raise ConfigError(f"{run.dir} has no init_from: the base model is unknown")
    path = Path(init_from)
    if path.parent.name != "checkpoints" or not (path.parent.parent / "config.yaml").is_file():
        raise ConfigError(f"init_from={path} of {run.dir} is not a checkpoint inside a run directory "
                          "(RUN/checkpoints/*.ckpt beside RUN/config.yaml): the base run cannot be loaded")
    base = load_run(path.parent.parent)
    step = load_checkpoint(path, "init_from").get("global_step")
    if step not in base.steps:
        raise ConfigError(f"the base run {base.dir} has no snapshot at step {step} (init_from={path})")
    return base, step


def unknown_rates(model, dm, people: np.ndarray, seen: bool, unknown_id: int, seed: int) -> dict:
    """Unknown-answer rate (and, for seen people, accuracy) over one prompt per person and family."""
    prompts = family_prompts(dm, people, seen, FAMILIES, seed)
    out = {"n_prompts": len(prompts), "unknown_rate": float(says_unknown(model, prompts, unknown_id).mean())}
    if seen:
        out["accuracy"] = float(prompt_correct(model, prompts).float().mean())
    return out


def ablation_analysis(model, dm, sets, directions: dict[str, torch.Tensor], options: dict, unknown_id: int) -> list[dict]:
    """One row per ablated direction (and the random directions, mean and sd): the unknown-answer rate on
    unseen and known people after removing it from every residual-stream write, and the change."""
    n, seed = options["steer_people"], options["seed"]
    groups = {"unseen": (sets.unseen[:n], False), "known": (sets.known[:n], True)}
    clean = {g: unknown_rates(model, dm, people, seen, unknown_id, seed) for g, (people, seen) in groups.items()}
    rows = [{"direction": "none", **{f"{g}_{k}": v for g, r in clean.items() for k, v in r.items()}}]
    d_model = next(iter(directions.values())).shape[0]
    randoms = random_directions(options["random_controls"], d_model, seed + 77)
    named = [(name, [vector]) for name, vector in directions.items()] + [("random_directions", list(randoms))]
    for name, vectors in named:
        results = [{g: unknown_rates(without_direction(model, v), dm, people, seen, unknown_id, seed)
                    for g, (people, seen) in groups.items()} for v in vectors]
        row = {"direction": name, "n_vectors": len(vectors)}
        for g in groups:
            changes = [r[g]["unknown_rate"] - clean[g]["unknown_rate"] for r in results]
            row[f"{g}_unknown_rate"] = float(np.mean([r[g]["unknown_rate"] for r in results]))
            row[f"{g}_unknown_rate_change"] = float(np.mean(changes))
            row[f"{g}_unknown_rate_change_sd"] = float(np.std(changes)) if len(changes) > 1 else None
        row["known_accuracy"] = float(np.mean([r["known"]["accuracy"] for r in results]))
        rows.append(row)
    return rows


def difference_of_means(model, dm, sets, layer: int, seed: int) -> torch.Tensor:
    """[d_model] mean residual at the last name token (after `layer` blocks) of unseen minus known people,
    pooled over the prompt families."""
    known = torch.cat([last_name_residuals(model, family_prompts(dm, sets.known, True, f, seed))[layer]
                       for f in FAMILIES])                                     # [n_known x families, d_model]
    unseen = torch.cat([last_name_residuals(model, family_prompts(dm, sets.unseen, False, f, seed))[layer]
                        for f in FAMILIES])
    return unseen.mean(0) - known.mean(0)


def run_unknown(run_dir: str | Path, log=print, **options) -> dict:
    """Sets and latents on the base model, then steering and ablation on the fine-tuned one; writes the files."""
    options = check_options(options)
    run = load_run(run_dir)
    base, base_step = base_run(run)
    dm, base_dm = run.datamodule(), base.datamodule()
    if dm.fingerprint != base_dm.fingerprint:
        raise ConfigError(f"{run.dir} and its base run {base.dir} have other seen people (population fingerprint)")
    unknown_id = dm.unknown_id
    out_dir = Path(options["out"]) if options["out"] else run.dir / "mech" / "unknown"
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = options["seed"]
    log(f"unknown answer of {run.dir} (step {run.steps[-1]}), base {base.dir} (step {base_step}) -> {out_dir}")
    base_model = base.model(base_step)
    sets = entity_sets(base_model, base_dm, options["n_people"], options["min_right"], seed)
    if min(len(sets.known), len(sets.unseen)) < options["min_known"]:
        raise ConfigError(f"the base model knows {len(sets.known)} of {options['n_people']} sampled people: fewer "
                          f"than min_known={options['min_known']}")
    log(f"sets on the base model: {sets.sizes()}; sparse autoencoders per layer ...")
    sae_rows, latents = sae_analysis(base_model, base_dm, sets, options)
    layer = latents["unknown"]["layer"]
    directions = {"unknown_latent": latents["unknown"]["sae"].decoder_directions[latents["unknown"]["latent"]],
                  "difference_of_means": difference_of_means(base_model, base_dm, sets, layer, seed)}
    model = run.model()
    seen_prompts = family_prompts(dm, sets.seen, True, FAMILIES[0], seed)
    residual_norm = last_name_residuals(model, seen_prompts).norm(dim=-1).mean(1).tolist()  # [L+1]
    log("steering the fine-tuned model with the base model's latents ...")
    steering = steering_analysis(model, dm, sets, latents, residual_norm, options, unknown_id=unknown_id)
    log("ablating the unknown direction from the weights ...")
    ablation = ablation_analysis(model, dm, sets, directions, options, unknown_id)
    summary = unknown_summary(run, base, base_step, sets, latents, steering, ablation, options)
    write_csv(out_dir / "sae.csv", [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in sae_rows])
    write_csv(out_dir / "steering.csv", [{k: v for k, v in r.items() if not isinstance(v, list)}
                                         for r in steering["rows"]])
    write_csv(out_dir / "ablation.csv", ablation)
    write_json(out_dir / "summary.json", summary)
    from biolab.mech.plots import plot_unknown_answer

    plot_unknown_answer(summary, steering["rows"], ablation, out_dir / "unknown.png", title=str(run.dir.name))
    return summary


def unknown_summary(run, base, base_step, sets, latents, steering, ablation, options) -> dict:
    """The headline numbers (summary.json)."""
    alpha, rows = options["headline_alpha"], steering["rows"]
    clean = ablation[0]

    def change(steered, condition, key="unknown_change"):
        row = steering_row(rows, steered, condition, alpha)
        return None if row is None else {"mean": row[key], "sd": row.get(f"{key}_sd"), "ci": row.get(f"{key}_ci")}

    by_direction = {r["direction"]: r for r in ablation[1:]}
    return {
        "run_dir": str(run.dir), "finetuned_step": run.steps[-1], "base_run_dir": str(base.dir), "base_step": base_step,
        "sets": sets.sizes(), "headline_alpha": alpha, "options": {k: v for k, v in options.items() if k != "out"},
        "latents": steering["latents"],
        "unknown_rate_known": clean["known_unknown_rate"], "unknown_rate_unseen": clean["unseen_unknown_rate"],
        "accuracy_known": clean["known_accuracy"],
        "unknown_answer_rate_change": change("unknown", "latent"),
        "unknown_answer_rate_change_random_latents": change("unknown", "random_latents"),
        "unknown_answer_rate_change_random_directions": change("unknown", "random_directions"),
        "accuracy_change_unknown_latent": change("unknown", "latent", "right_change"),
        "known_latent_unseen_unknown_rate_change": change("known", "latent"),
        "known_latent_unseen_unknown_rate_change_random_latents": change("known", "random_latents"),
        "known_latent_unseen_unknown_rate_change_random_directions": change("known", "random_directions"),
        "ablation_unseen_unknown_rate_change": {
            name: {"mean": r["unseen_unknown_rate_change"], "sd": r["unseen_unknown_rate_change_sd"]}
            for name, r in by_direction.items()},
        "ablation_known_accuracy": {name: r["known_accuracy"] for name, r in by_direction.items()},
    }
