"""Is it the same run? The config of a run directory and of a resume checkpoint against the config now.

A run directory's config.yaml, and every checkpoint written since biolab.checkpointing's RunGuard
(under its ``biolab_config`` key), record the resolved config of the run. A launch resumes only
what it would itself have written: the keys may differ only in ``RESUME_FREE_KEYS`` (how the run
is watched and fed, not what it computes) and in keys added to the code after the run started, at
their default (``ADDED_KEY_DEFAULTS``). ``ckpt_path=`` pointing at another run's checkpoint (other
population, seeds, schedule, model) is refused naming the keys; ``branch_from=`` starts a run without a
checkpoint of its own from another run's, which may differ only in ``BRANCH_FREE_KEYS`` (a study that
measures a later milestone continues the runs of one stopped at an earlier one); for checkpoints older than the
record, the config.yaml of the run they belong to is read, else their module hyper-parameters and
data settings (population fingerprint included) are compared.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from biolab.checkpointing import CONFIG_KEY
from biolab.errors import ConfigError
from biolab.runs import LAST_CHECKPOINT, load_checkpoint

TRAIN_YAML = Path(__file__).resolve().parents[1] / "conf" / "train.yaml"
# conf/train.yaml leaves these keys out of run-directory names (hydra.job.config.override_dirname.exclude_keys);
# all of them may differ between launches of one run but the ones that define it
RUN_DEFINING_KEYS = ("name", "init_from")
RESUME_FREE_KEYS = {"run_dir"} | {
    key for key in OmegaConf.load(TRAIN_YAML).hydra.job.config.override_dirname.exclude_keys
    if key not in RUN_DEFINING_KEYS}
# keys in which a run may differ from the run it branches from (branch_from): which study it belongs to and
# where it stops, not what it computes up to there
BRANCH_FREE_KEYS = ("name", "callbacks.phases.stop_after")
# keys added after runs were started: absent from a saved config.yaml and at this value now, they are no change
ADDED_KEY_DEFAULTS = {"init_from": None, "data.n_new_people": 0, "data.replay_weight": 0.0,
                      "data.new_eval_size": None, "module.schedule": "cosine", "data.pad_to": None,
                      "data.device_batches": False, "module.compile_options": None, "data.unknown_answer": False,
                      "data.test_eval_size": 0, "branch_from": None}
# what a checkpoint without a config record says about its run: module hyper-parameters, data settings
MODULE_KEYS = ("lr", "min_lr", "betas", "weight_decay", "max_steps", "schedule")
DATA_KEYS = ("population_size", "seed", "n_unseen", "attributes", "n_train_templates", "shuffle_sentences",
             "n_new_people", "replay_weight")


def flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        out.update(flatten(value, path + ".") if isinstance(value, dict) else {path: value})
    return out


def config_differences(saved: dict, now: dict) -> list[str]:
    """Keys (flattened) whose values differ between two resolved configs, free keys and added defaults aside."""
    saved, now = flatten(saved), flatten(now)
    return sorted(k for k in set(saved) | set(now) if k not in RESUME_FREE_KEYS and saved.get(k) != now.get(k)
                  and not (k not in saved and k in ADDED_KEY_DEFAULTS and now.get(k) == ADDED_KEY_DEFAULTS[k]))


def _load_config(path: Path) -> dict:
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as err:
        raise ConfigError(f"{path} is not a readable config ({type(err).__name__})") from None


def check_same_run(run_dir: Path, resolved: dict) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    differing = config_differences(_load_config(saved_path), resolved)
    if differing:
        raise ConfigError(f"{run_dir} holds a run with a different config (differs in: {', '.join(differing[:8])}); "
                          "choose another hydra.run.dir or delete that directory")


def resume_checkpoint(cfg, run_dir: Path, resolved: dict, datamodule) -> str | None:
    """The checkpoint this launch resumes (ckpt_path, else the run's last.ckpt, else branch_from, else None),
    checked to be a biolab checkpoint of this run's config; every problem is a one-line ConfigError."""
    explicit = bool(cfg.get("ckpt_path"))
    path = Path(cfg.ckpt_path) if explicit else run_dir / LAST_CHECKPOINT
    if not explicit and not path.exists():
        return branch_checkpoint(cfg, resolved, datamodule) if cfg.get("branch_from") else None
    key = "ckpt_path" if explicit else None
    try:
        ckpt = load_checkpoint(path, key)
    except ConfigError as err:
        if explicit:
            raise
        raise ConfigError(f"{err}; delete it to train this run from scratch") from None
    check_checkpoint_matches(ckpt, path, resolved, datamodule, key or str(path))
    print(f"resuming from {path} (step {ckpt.get('global_step')})", flush=True)
    return str(path)


def branch_checkpoint(cfg, resolved: dict, datamodule) -> str:
    """branch_from, checked to be a checkpoint of a run that differs from this one only in BRANCH_FREE_KEYS."""
    path = Path(cfg.branch_from)
    if not path.is_file():
        raise ConfigError(f"branch_from: {path} not found (run the study it belongs to first, or set "
                          "branch_from=null to train from scratch)")
    ckpt = load_checkpoint(path, "branch_from")
    if not isinstance(ckpt.get(CONFIG_KEY), dict):
        raise ConfigError(f"branch_from: {path} does not record its run's config (a checkpoint from before "
                          "checkpoints held it): branch only from a checkpoint that does, or train from scratch")
    check_checkpoint_matches(ckpt, path, resolved, datamodule, "branch_from", free=BRANCH_FREE_KEYS)
    print(f"branching from {path} (step {ckpt.get('global_step')}; only {' and '.join(BRANCH_FREE_KEYS)} "
          "may differ)", flush=True)
    return str(path)


def check_checkpoint_matches(ckpt: dict, path: Path, resolved: dict, datamodule, key: str, free=()) -> None:
    """The checkpoint was written by a run with this config, but for the keys in `free` (module docstring)."""
    for needed in ("state_dict", "global_step", "loops"):
        if needed not in ckpt:
            raise ConfigError(f"{key}: {path} is not a checkpoint written by biolab.train (no {needed!r})")
    saved, source = ckpt.get(CONFIG_KEY), "the checkpoint"
    beside = path.parent.parent / "config.yaml" if path.parent.name == "checkpoints" else None
    if not isinstance(saved, dict) and beside is not None and beside.is_file():
        saved, source = _load_config(beside), str(beside)
    if isinstance(saved, dict):
        differing = [k for k in config_differences(saved, resolved) if k not in free]
        if differing:
            raise ConfigError(f"{key}: {path} belongs to another run ({source} differs in: "
                              f"{', '.join(differing[:8])}); resume it with its own config")
    else:
        _check_legacy_checkpoint(ckpt, path, resolved, key)
    data = ckpt.get(type(datamodule).__qualname__)
    if isinstance(data, dict) and "fingerprint" in data:
        datamodule.setup()  # idempotent: the trainer's own setup reuses the populations drawn here
        if data["fingerprint"] != datamodule.fingerprint:
            raise ConfigError(f"{key}: {path} was trained on other people (population fingerprint differs: "
                              "other pool files or population code)")


def _check_legacy_checkpoint(ckpt: dict, path: Path, resolved: dict, key: str) -> None:
    """A checkpoint without a config record: its module hyper-parameters and data settings must be this run's."""
    hparams, data = ckpt.get("hyper_parameters"), ckpt.get("BioDataModule")
    if not isinstance(hparams, dict) or not isinstance(data, dict):
        raise ConfigError(f"{key}: {path} records neither its run's config nor its hyper-parameters and data "
                          "settings: not a checkpoint of a biolab run")
    module, data_now = dict(resolved["module"]), dict(resolved["data"])
    module["max_steps"] = resolved["trainer"]["max_steps"]
    now = {**{f"module.{k}": module.get(k) for k in MODULE_KEYS}, **{f"data.{k}": data_now.get(k) for k in DATA_KEYS},
           **{f"model.{k}": v for k, v in resolved["model"].items() if not k.startswith("_")}}
    then = {**{f"module.{k}": hparams.get(k) for k in MODULE_KEYS}, **{f"data.{k}": data.get(k) for k in DATA_KEYS},
            **{f"model.{k}": v for k, v in (hparams.get("model") or {}).items() if k != "vocab_size"}}
    differing = [k for k in now if k in then and then[k] is not None and _norm(then[k]) != _norm(now[k])]
    if differing:
        raise ConfigError(f"{key}: {path} belongs to another run (differs in: {', '.join(differing[:8])})")


def _norm(value):
    return list(value) if isinstance(value, tuple) else value
