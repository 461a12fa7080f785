"""Sparse-autoencoder latents for known and unknown people, and steering with them, at one snapshot.

    layers, latents = sae_analysis(model, dm, sets, options)       # one TopK SAE per layer 1..L
    steering_analysis(model, dm, sets, latents, residual_norm, options)

sae_analysis trains a biolab.mech.sae.TopKSAE on the residual stream of ordinary biographies (seen
people with training templates, and a quarter as many unseen people, so that unseen names are in the
data; <bos> and padding left out), reports its quality on held-out biographies of seen people (variance
explained, mean active latents, dead latents, next-token loss with the SAE's reconstruction spliced in
at every token), and scores every latent at the last name token: s_known = f_known - f_unknown over the
known and token-matched unseen people of each prompt family (biolab.mech.entities.separation_scores; options["unknown"]="unseen": all unseen people).
steering_analysis adds alpha x (mean residual norm there) x the decoder direction of the best latents
(biolab.mech.steering). Called by biolab.mech.entities_study at its main snapshots.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from biolab.data.biographies import IGNORE_INDEX
from biolab.mech.entities import FAMILIES, family_prompts, last_name_residuals, resid_hook, separation_scores
from biolab.mech.sae import firing_rate, sae_quality, train_sae
from biolab.mech.scoring import inference
from biolab.mech.steering import name_attention, steered_answers, steered_attention

UNSEEN_SHARE = 4   # one unseen biography per UNSEEN_SHARE seen ones in the SAE's training data


def biography_residuals(model, batches: list[dict], pad_id: int) -> torch.Tensor:
    """[layers + 1, tokens, d_model] residual stream at every token of the biographies but <bos> and padding."""
    n_layers = len(model.blocks)
    names = [resid_hook(n_layers, layer) for layer in range(n_layers + 1)]
    out = []
    with inference(model):
        for batch in batches:
            tokens = batch["input_ids"]
            keep = tokens != pad_id
            keep[:, 0] = False
            _, cache = model.run_with_cache(tokens, names_filter=names)
            out.append(torch.stack([cache[name][keep] for name in names]).float())       # [L+1, t, d]
    return torch.cat(out, 1)


def spliced_loss(model, batches: list[dict], layer: int, sae, pad_id: int) -> float:
    """Mean next-token loss on the biographies with the residual after `layer` blocks replaced by the SAE's
    reconstruction at every token but <bos> and padding (sae=None: the clean model)."""
    def splice(resid, hook):                                                 # [b, pos, d_model]
        keep = tokens[:, :resid.shape[1]] != pad_id
        keep[:, 0] = False
        resid = resid.clone()
        resid[keep] = sae(resid[keep]).to(resid)
        return resid

    total, count = 0.0, 0
    with inference(model):
        for batch in batches:
            tokens = batch["input_ids"]
            hooks = [] if sae is None else [(resid_hook(len(model.blocks), layer), splice)]
            with model.hooks(hooks):
                logits = model(tokens)                                        # [b, pos, vocab]
            targets = batch["targets"]
            total += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                                     reduction="sum").item()
            count += int((targets != IGNORE_INDEX).sum())
    return total / count


def _activations_at_names(model, dm, sets, unknown: np.ndarray, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """{"known"|"unknown": {family: [L+1, n, d_model]}} at the last name token."""
    return {"known": {f: last_name_residuals(model, family_prompts(dm, sets.known, True, f, seed)) for f in FAMILIES},
            "unknown": {f: last_name_residuals(model, family_prompts(dm, unknown, False, f, seed)) for f in FAMILIES}}


def sae_analysis(model, dm, sets, options: dict) -> tuple[list[dict], dict]:
    """Per layer 1..L: the SAE's quality and its best known / unknown latents; and {"known"|"unknown":
    {"layer", "latent", "score", "direction", "sae"}} of the best latents over layers (for steering)."""
    pad = dm.tokenizer.pad_id
    train_batches = (dm.fixed_batches("attention", options["biographies"])
                     + dm.fixed_batches("unseen", max(1, options["biographies"] // UNSEEN_SHARE)))
    heldout = dm.fixed_batches("val", options["heldout_biographies"])
    x_train = biography_residuals(model, train_batches, pad)                              # [L+1, t, d]
    x_heldout = biography_residuals(model, heldout, pad)
    unknown = sets.matched if options["unknown"] == "matched" else sets.unseen
    at_names = _activations_at_names(model, dm, sets, unknown, options["seed"])
    clean = spliced_loss(model, heldout, 0, None, pad)
    d_model = x_train.shape[-1]
    layers, best = [], {}
    for layer in range(1, x_train.shape[0]):
        sae, train_log = train_sae(x_train[layer], d_sae=options["expansion"] * d_model, k=options["k"],
                                   steps=options["sae_train_steps"], batch_size=options["sae_batch"],
                                   seed=options["seed"] + layer)
        spliced = spliced_loss(model, heldout, layer, sae, pad)
        with torch.no_grad():
            active = {kind: {f: sae.encode(x[layer]) > 0 for f, x in by_family.items()}
                      for kind, by_family in at_names.items()}
        scores = separation_scores(active["known"], active["unknown"], firing_rate(sae, x_heldout[layer]))
        layers.append({"layer": layer, **sae_quality(sae, x_heldout[layer]), **train_log,
                       "loss_clean": clean, "loss_spliced": spliced, "loss_increase": spliced - clean,
                       "training_tokens": x_train.shape[1], **scores})
        for kind in ("known", "unknown"):
            score = scores[kind]["min_over_families"]
            if kind not in best or score > best[kind]["score"]:
                best[kind] = {"layer": layer, "latent": scores[kind]["latent"], "score": score, "sae": sae}
    return layers, best


def _mean(x: torch.Tensor) -> float:
    return float(x.float().mean())


def random_directions(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(n, d, generator=g)
    return directions / directions.norm(dim=1, keepdim=True)


def steering_analysis(model, dm, sets, latents: dict, residual_norm: list[float], options: dict,
                      unknown_id: int | None = None) -> dict:
    """The unknown latent on known people (accuracy, answer probability, attention to the name) and the
    known latent on unseen people (max probability), each beside random latents of its layer and random
    directions at the same alpha (rows per condition and alpha). With `unknown_id` (a model fine-tuned with
    the "unknown" answer; `latents` may come from its base model) also the unknown-answer rate."""
    seed, n_controls = options["seed"], options["random_controls"]
    rng = np.random.default_rng([seed, 21])
    n = options["steer_people"]
    prompts = {"known": family_prompts(dm, sets.known[:n], True, FAMILIES, seed),
               "unseen": family_prompts(dm, sets.unseen[:n], False, FAMILIES, seed)}
    rows, attention = [], {}
    for kind, people in (("unknown", "known"), ("known", "unseen")):
        chosen = latents[kind]
        layer, sae = chosen["layer"], chosen["sae"]
        directions = sae.decoder_directions                                                     # [d_sae, d]
        others = [j for j in range(sae.d_sae) if j != chosen["latent"]]
        random_latents = rng.choice(others, size=min(n_controls, len(others)), replace=False)
        random_dirs = random_directions(n_controls, directions.shape[1], seed + 1000 * layer)
        base = steered_answers(model, prompts[people], layer, torch.zeros(directions.shape[1]), unknown_id)
        for alpha in options["alphas"]:
            size = alpha * residual_norm[layer]
            conditions = [("latent", [directions[chosen["latent"]]])]
            if alpha == options["headline_alpha"]:
                conditions += [("random_latents", directions[random_latents]), ("random_directions", random_dirs)]
            for condition, vectors in conditions:
                effects = [steered_answers(model, prompts[people], layer, size * v, unknown_id) for v in vectors]
                rows.append({"steered": kind, "people": people, "condition": condition, "layer": layer,
                             "latent": chosen["latent"] if condition == "latent" else None, "alpha": alpha,
                             "norm": size, "n_vectors": len(vectors), "n_prompts": len(prompts[people]),
                             **_changes(base, effects, options["n_boot"], seed)})
        headline = options["headline_alpha"] * residual_norm[layer]
        attention[f"{kind}_latent_on_{people}"] = {
            "layer": layer, "clean": name_attention(model, prompts[people]).tolist(),
            "latent": steered_attention(model, prompts[people], layer, headline * directions[chosen["latent"]]).tolist(),
            "random_direction": steered_attention(model, prompts[people], layer, headline * random_dirs[0]).tolist()}
    return {"rows": rows, "attention": attention,
            "latents": {k: {"layer": v["layer"], "latent": v["latent"], "score": v["score"]} for k, v in latents.items()}}


def steering_row(rows: list[dict], steered: str, condition: str, alpha) -> dict | None:
    """The row of steering_analysis's rows for one latent kind, condition and alpha (None if not measured)."""
    return next((r for r in rows if r["steered"] == steered and r["condition"] == condition and r["alpha"] == alpha),
                None)


def _changes(base: dict, effects: list[dict], n_boot: int = 0, seed: int = 0) -> dict:
    """Mean over vectors of the change in accuracy, answer probability and max probability (and unknown-answer
    rate, when measured); their sd over vectors, and for one vector a 95% bootstrap interval over prompts
    (people) of the paired change."""
    out = {f"base_{key}": _mean(base[key]) for key in base}
    rng = np.random.default_rng(seed)
    for key in base:
        changes = [_mean(e[key]) - out[f"base_{key}"] for e in effects]
        out[f"{key}_change"] = float(np.mean(changes))
        out[f"{key}_change_sd"] = float(np.std(changes)) if len(changes) > 1 else None
        if len(effects) == 1 and n_boot:
            paired = (effects[0][key] - base[key]).numpy()                                  # [n]
            means = [paired[rng.integers(len(paired), size=len(paired))].mean() for _ in range(n_boot)]
            out[f"{key}_change_ci"] = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
    return out
