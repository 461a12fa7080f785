"""Fine-tuning from a pre-trained checkpoint (SPEC section 8): weight loading with its checks, and the summary.

A fine-tuning run is an ordinary run of ``biolab.train`` with three additions (docs/finetuning.md):
``init_from`` (a pre-training run's checkpoint; only the model weights are taken: fresh optimiser,
step 0), ``data.n_new_people`` / ``data.replay_weight`` (new people and the replay mixture, see
biolab.data.new_people) and ``module.schedule=constant``:

    python -m biolab.train experiment=quickstart hydra.run.dir=runs/quickstart     # pre-training
    python -m biolab.train experiment=finetune_cpu init_from=runs/quickstart/checkpoints/last.ckpt \\
        data.n_new_people=256 data.replay_weight=0.5

``train(cfg)`` calls ``load_init_weights`` only when the run starts (no last.ckpt in its own run
directory): a resumed fine-tuning run continues from its own checkpoint and never reads init_from
again. Before any training, the checkpoint must load with weights_only=True, hold a "state_dict",
have the same model shape (every tensor name and shape), and come from a run with the same
population ("old people"): data.population_size, data.seed, data.n_unseen, data.attributes,
data.n_train_templates, data.shuffle_sentences, and the fingerprint of the old people when the
checkpoint records it (checkpoints written by BioDataModule.state_dict); for older checkpoints the
pre-training run's config.yaml next to checkpoints/ is read instead. Any mismatch is a ConfigError
naming the key. One difference is allowed: tokens this run appends to the vocabulary (data.unknown_answer
adds UNKNOWN as the last id) grow the embedding and unembedding by rows at their end, initialised at the
mean of the trained rows (``grow_vocabulary``); every trained row keeps its id and value.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from biolab.data.datamodule import BioDataModule
from biolab.errors import ConfigError
from biolab.runs import check_weights, checkpoint_weights, load_checkpoint

KEY = "init_from"
# data settings that decide who the old people are and how their biographies are written
DATA_KEYS = ("population_size", "seed", "n_unseen", "attributes", "n_train_templates", "shuffle_sentences")
MODEL_KEYS_IGNORED = ("init_std",)  # irrelevant once the weights are loaded


GROWN_WEIGHTS = ("embed.weight", "unembed.weight")  # [vocab, d_model] each: the rows of appended tokens


def grow_vocabulary(model_state: dict, module, n_extra: int) -> tuple[dict, int]:
    """The checkpoint's weights with rows appended for the last `n_extra` token ids of this run when the
    checkpoint lacks them (each row the mean of the trained rows), and how many were appended (0 or n_extra)."""
    vocab = module.model.cfg.vocab_size
    old = model_state.get(GROWN_WEIGHTS[0])
    if not n_extra or old is None or old.shape[0] != vocab - n_extra:
        return model_state, 0
    grown = dict(model_state)
    for name in GROWN_WEIGHTS:
        rows = model_state[name]                                              # [vocab - n_extra, d_model]
        grown[name] = torch.cat([rows, rows.mean(0, keepdim=True).expand(n_extra, -1)])
    return grown, n_extra


def check_model(ckpt: dict, model_state: dict, module, path: Path, grown: int = 0) -> None:
    """Same architecture: config keys first (clear names), then every tensor's name and shape
    (`grown`: tokens appended to the checkpoint's vocabulary by this run)."""
    saved = (ckpt.get("hyper_parameters") or {}).get("model")
    if isinstance(saved, dict):
        now = dict(module.hparams.model)
        for key in sorted(set(saved) | set(now)):
            if key == "vocab_size" and grown and saved.get(key) == now.get(key) - grown:
                continue
            if key not in MODEL_KEYS_IGNORED and saved.get(key) != now.get(key):
                raise ConfigError(f"{KEY}: the model differs from the checkpoint's: model.{key}={now.get(key)!r} "
                                  f"here, {saved.get(key)!r} in {path}; use the pre-training run's model settings")
    check_weights(model_state, module.model, path, KEY)


def _saved_data_info(ckpt: dict, path: Path) -> tuple[dict | None, str]:
    """The pre-training run's data settings: from the checkpoint, else from its run's config.yaml."""
    info = ckpt.get(BioDataModule.__qualname__)
    if isinstance(info, dict):
        return info, "the checkpoint"
    config = path.parent.parent / "config.yaml" if path.parent.name == "checkpoints" else None
    if config is not None and config.is_file():
        data = OmegaConf.to_container(OmegaConf.load(config), resolve=True).get("data") or {}
        return {k: data[k] for k in DATA_KEYS if k in data}, str(config)
    return None, ""


def check_data(ckpt: dict, datamodule: BioDataModule, path: Path) -> None:
    """The old people of this run are the pre-training run's people (the rule of docs/finetuning.md)."""
    saved, source = _saved_data_info(ckpt, path)
    if saved is None:
        print(f"warning: {KEY}={path}: no data settings found (neither in the checkpoint nor in a config.yaml "
              "beside checkpoints/): cannot verify that the old people are the pre-training run's", flush=True)
        return
    now = {k: getattr(datamodule, k) for k in DATA_KEYS}
    now["attributes"] = list(now["attributes"])
    for key in DATA_KEYS:
        if key in saved and saved[key] != now[key]:
            raise ConfigError(f"{KEY}: data.{key}={now[key]!r} here but {saved[key]!r} in the pre-training run "
                              f"({source}): the old people must be the same; set data.{key}={saved[key]!r}")
    if "fingerprint" in saved:
        datamodule.setup()  # idempotent: the trainer's own setup reuses the populations drawn here
        if saved["fingerprint"] != datamodule.fingerprint:
            raise ConfigError(f"{KEY}: same data settings but other old people than in {path} (population "
                              "fingerprint differs: other pool files or population code)")
    if saved.get("n_new_people"):
        print(f"note: {KEY}={path} is itself a fine-tuning run; its {saved['n_new_people']} new people are "
              "not tracked here (old people = its pre-training population)", flush=True)


def load_init_weights(path: str | Path, module, datamodule: BioDataModule) -> int | None:
    """Check the checkpoint against this run (model shape, old people), then load its model weights into
    `module`. Returns the checkpoint's step. Raises ConfigError before any change on a mismatch."""
    path = Path(path)
    ckpt = load_checkpoint(path, KEY)
    model_state = checkpoint_weights(ckpt, path, KEY)
    model_state, grown = grow_vocabulary(model_state, module, len(datamodule.tokenizer.extra))
    check_model(ckpt, model_state, module, path, grown)
    check_data(ckpt, datamodule, path)
    module.model.load_state_dict(model_state, strict=True)
    if grown:
        print(f"vocabulary grown by {grown} token(s) {list(datamodule.tokenizer.extra)}: their embedding and "
              "unembedding rows start at the mean of the trained rows", flush=True)
    step = ckpt.get("global_step")
    summary_path = path.parent.parent / "summary.json"
    if summary_path.is_file():
        trained = json.loads(summary_path.read_text()).get("steps")
        if isinstance(trained, int) and isinstance(step, int) and trained != step:
            print(f"warning: {KEY}={path} holds step {step} but its run trained {trained} steps "
                  "(checkpoint_every does not divide trainer.max_steps)", flush=True)
    print(f"initialised the model from {path} (step {step}); optimiser and step counter start afresh", flush=True)
    return step


def finetune_summary(history: list[dict], datamodule: BioDataModule, init_from: str | None) -> dict:
    """summary.json additions of a fine-tuning run: the setting and the old/new metrics at start and end."""
    first, final = history[0], history[-1]
    n_old, n_new, w = datamodule.population_size, datamodule.n_new_people, datamodule.replay_weight
    return {
        "init_from": init_from,
        "n_new_people": n_new,
        "replay_weight": w,
        "replay_fraction": w * n_old / (w * n_old + n_new) if n_new else 1.0,  # share of old-people biographies
        "old_attr_loss_start": first.get("val/attr_loss"),
        "old_attr_acc_start": first.get("val/attr_acc"),
        "new_attr_loss_start": first.get("new/attr_loss"),
        "new_attr_loss": final.get("new/attr_loss"),
        "new_attr_acc": final.get("new/attr_acc"),
    }
