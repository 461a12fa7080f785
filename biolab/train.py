"""Train one run: ``train(cfg)`` is a plain function; ``python -m biolab.train`` wraps it with Hydra.

    python -m biolab.train experiment=quickstart             # CPU quick-start (a few minutes)
    python -m biolab.train experiment=paper                   # SPEC section 4 defaults (GPU)
    python -m biolab.train experiment=quickstart seed=3 data.seed=5 hydra.run.dir=runs/mine

The run directory (``hydra.run.dir``; default ``runs/<name>/<overrides>``) receives config.yaml,
metrics.csv (one row per evaluation), summary.json, learning_curves.png and checkpoints/last.ckpt.
Re-running the same command resumes from last.ckpt, or returns at once if the run finished;
a run directory that holds a different config is refused rather than overwritten.
Fine-tuning (``init_from=<checkpoint>``, data.n_new_people, data.replay_weight): biolab.finetune.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from biolab.callbacks import Evaluator, PhaseTracker
from biolab.data.datamodule import BioDataModule
from biolab.errors import ConfigError
from biolab.finetune import finetune_summary, load_init_weights
from biolab.history import history_column
from biolab.io import atomic_write_text, write_json
from biolab.phases import phase_summary
from biolab.plots import attention_layers, plot_attention, plot_learning_curves
from biolab.runs import build_datamodule, load_checkpoint, model_config
from biolab.tracking import finish_loggers, make_loggers, quiet_third_party_logs

# Lightning 2.6 with torch 2.13 warns on every fit about its own use of a deprecated torch API
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
quiet_third_party_logs()  # Lightning's advertising tips and absent-accelerator lines

# keys that may differ between the first launch and a resume of the same run
RESUME_FREE_KEYS = {"run_dir", "ckpt_path", "trainer.enable_progress_bar", "callbacks.evaluator.print_every",
                    "data.num_workers"}
# keys added after runs were started: absent from a saved config.yaml and at this value now, they are no change
ADDED_KEY_DEFAULTS = {"init_from": None, "data.n_new_people": 0, "data.replay_weight": 0.0,
                      "data.new_eval_size": None, "module.schedule": "cosine"}


def _flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        out.update(_flatten(value, path + ".") if isinstance(value, dict) else {path: value})
    return out


def check_config(cfg: DictConfig) -> None:
    """Value checks that Hydra's schema-less YAML cannot express; raise ConfigError naming the key."""
    if not cfg.get("run_dir"):
        raise ConfigError("run_dir is not set (python -m biolab.train sets it from hydra.run.dir)")
    steps = cfg.trainer.get("max_steps")
    if not (isinstance(steps, int) and steps > 0):
        raise ConfigError(f"trainer.max_steps must be a positive integer, got {steps!r}")
    for key in ("lr", "min_lr", "weight_decay"):
        value = cfg.module.get(key)
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ConfigError(f"module.{key} must be a number >= 0, got {value!r}")
    if not cfg.module.lr > 0:
        raise ConfigError(f"module.lr must be > 0, got {cfg.module.lr!r}")
    if not (isinstance(cfg.checkpoint_every, int) and cfg.checkpoint_every > 0):
        raise ConfigError(f"checkpoint_every must be a positive integer, got {cfg.checkpoint_every!r}")
    if cfg.data.get("n_new_people") and not cfg.get("init_from"):
        raise ConfigError("init_from is required with data.n_new_people > 0: the pre-training checkpoint to "
                          "fine-tune, e.g. init_from=runs/quickstart/checkpoints/last.ckpt")
    _check_slurm_tasks(cfg)


def _check_slurm_tasks(cfg: DictConfig) -> None:
    """Under SLURM with several tasks (hydra/launcher=slurm_ddp), the trainer must use one device per
    task; otherwise every task would train its own copy of the run into the same directory."""
    tasks = os.environ.get("SLURM_NTASKS")
    if not tasks or not tasks.isdigit() or int(tasks) <= 1 or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1) or 1
    if not (isinstance(devices, int) and devices * nodes == int(tasks)):
        raise ConfigError(f"this SLURM job has {tasks} tasks but trainer.devices={devices} x trainer.num_nodes="
                          f"{nodes}: set trainer.devices to the GPUs per node and +trainer.strategy=ddp")


def _build(cfg: DictConfig):
    """Instantiate data, model config, module and callbacks; constructor errors become one-line ConfigErrors.

    Callbacks: the evaluator first, then every other entry of the callbacks group in config order;
    a callback with a ``check(module)`` method checks itself against the model here, before any file
    is written (attention patching: the reference must be the same model).
    """
    try:
        datamodule: BioDataModule = build_datamodule(cfg)
        model_cfg = model_config(cfg, datamodule.vocab_size)
        module = instantiate(cfg.module, model=asdict(model_cfg), max_steps=cfg.trainer.max_steps,
                             attributes=list(datamodule.attributes), _convert_="all")
        metrics_file = str(Path(cfg.run_dir) / "metrics.csv")
        callbacks = [instantiate(cfg.callbacks.evaluator, metrics_file=metrics_file)]
        callbacks += [instantiate(c) for name, c in cfg.callbacks.items() if name != "evaluator" and c]
        for callback in callbacks:  # callbacks that can check themselves against the model (patching)
            if hasattr(callback, "check"):
                callback.check(module)
    except ConfigError:
        raise
    except Exception as err:  # Hydra wraps constructor errors (unknown keys, bad values)
        cause = err.__cause__ or err
        raise ConfigError(f"{type(cause).__name__}: {cause}".splitlines()[0]) from err
    return datamodule, module, callbacks


def _check_same_run(run_dir: Path, resolved: dict) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = _flatten(OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True))
    now = _flatten(resolved)
    differing = sorted(k for k in set(saved) | set(now) if k not in RESUME_FREE_KEYS and saved.get(k) != now.get(k)
                       and not (k not in saved and k in ADDED_KEY_DEFAULTS and now.get(k) == ADDED_KEY_DEFAULTS[k]))
    if differing:
        raise ConfigError(f"{run_dir} holds a run with a different config (differs in: {', '.join(differing[:8])}); "
                          "choose another hydra.run.dir or delete that directory")


def _resume_path(cfg: DictConfig, run_dir: Path) -> str | None:
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
    elif (run_dir / "checkpoints" / "last.ckpt").exists():
        path = run_dir / "checkpoints" / "last.ckpt"
    else:
        return None
    try:
        step = load_checkpoint(path).get("global_step")
    except ConfigError as err:
        raise ConfigError(f"{err}; delete it to train this run from scratch") from None
    print(f"resuming from {path} (step {step})", flush=True)
    return str(path)


def summarize(history: list[dict], datamodule: BioDataModule, evaluator: Evaluator, cfg: DictConfig,
              wall_seconds: float, tracker: PhaseTracker | None = None) -> dict:
    """summary.json contents: final metrics, phase milestones, throughput."""
    final = history[-1]
    confirm = tracker.confirm if tracker else 1
    stopped_after = tracker.stop_after if tracker and tracker.stopped_at is not None else None
    baseline = datamodule.baseline
    steps, losses = history_column(history, "val/attr_loss")
    acc_steps, accs = history_column(history, "val/attr_acc")
    eval_seconds = sum(r.get("eval_seconds", 0.0) for r in history)
    attn_seconds = sum(r.get("attn_seconds", 0.0) for r in history)
    return {
        "completed": final["step"] == cfg.trainer.max_steps or stopped_after is not None,
        "stopped_after": stopped_after,  # the milestone that ended training early (callbacks.phases.stop_after)
        "steps": int(final["step"]),
        "max_steps": cfg.trainer.max_steps,
        "attr_loss": final.get("val/attr_loss"),
        "attr_acc": final.get("val/attr_acc"),
        "no_knowledge_baseline": baseline,
        "baseline_per_attribute": datamodule.pools.baseline_per_attribute(datamodule.attributes),
        **phase_summary(steps, losses, acc_steps, accs, baseline, confirm),
        "train_templates_attr_loss": final.get("train_templates/attr_loss"),
        "unseen_attr_loss": final.get("unseen/attr_loss"),
        "unseen_attr_acc": final.get("unseen/attr_acc"),
        "unseen_max_prob": final.get("unseen/max_prob"),
        "population_size": datamodule.population_size,
        "seed": cfg.seed,
        "data_seed": datamodule.seed,
        "train_tokens_per_s": evaluator.train_tokens / max(evaluator.train_seconds, 1e-9),
        "train_seconds": evaluator.train_seconds,
        "eval_seconds": eval_seconds,
        "eval_fraction": eval_seconds / max(eval_seconds + evaluator.train_seconds, 1e-9),
        "attention_seconds": attn_seconds,
        "attention_cost_vs_training": attn_seconds / max(evaluator.train_seconds, 1e-9),
        "wall_seconds_this_launch": wall_seconds,
        "per_attribute": {k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("val/attr_")},
    }


def train(cfg: DictConfig) -> dict:
    """Train (or resume, or skip if finished) the run described by cfg; return its summary."""
    start = time.perf_counter()
    check_config(cfg)
    run_dir = Path(cfg.run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    _check_same_run(run_dir, resolved)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("completed"):
            print(f"{run_dir} already finished (summary.json); nothing to do", flush=True)
            return summary
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # model initialisation; data has its own seeds
    datamodule, module, callbacks = _build(cfg)
    ckpt_path = _resume_path(cfg, run_dir)
    if cfg.get("init_from") and ckpt_path is None:  # a fresh fine-tuning run; a resumed one has its own weights
        load_init_weights(cfg.init_from, module, datamodule)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(resolved))
    evaluator: Evaluator = callbacks[0]
    tracker = next((c for c in callbacks if isinstance(c, PhaseTracker)), None)
    checkpointing = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
        every_n_train_steps=cfg.checkpoint_every, save_on_train_epoch_end=False)
    loggers = make_loggers(cfg.get("logger"), run_dir)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[*callbacks, checkpointing], logger=loggers or False,
                                     default_root_dir=str(run_dir))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.global_rank != 0:
        return {}
    summary = summarize(evaluator.history, datamodule, evaluator, cfg, time.perf_counter() - start, tracker)
    finetuning = bool(cfg.get("init_from") or datamodule.n_new_people)
    if finetuning:
        summary.update(finetune_summary(evaluator.history, datamodule, cfg.get("init_from")))
    write_json(summary_path, summary)
    phases = dict(fall_end=summary["fall_end_step"], plateau_end=summary["plateau_end_step"],
                  acc_half=summary["acc_50pct_step"])
    if finetuning:  # the pre-training phases do not apply to a run that starts trained
        phases = dict.fromkeys(phases)
    title = f"N={datamodule.population_size}, seed={cfg.seed}, data seed={datamodule.seed}"
    plot_learning_curves(evaluator.history, datamodule.baseline, run_dir / "learning_curves.png", **phases,
                         title=title)
    if attention_layers(evaluator.history):
        plot_attention(evaluator.history, run_dir / "attention.png", **phases, title=f"attention metrics, {title}")
    if finetuning:
        from biolab.analysis.finetune import plot_finetune_run
        plot_finetune_run(run_dir)
    finish_loggers(trainer.loggers, summary, run_dir)  # wandb: summary, figures, finish
    print(f"finished: attr loss {summary['attr_loss']:.4f} (baseline {summary['no_knowledge_baseline']:.3f}), "
          f"attr acc {summary['attr_acc']:.3f}, plateau end {summary['plateau_end_step']}, "
          f"{summary['train_tokens_per_s']:,.0f} train tok/s\nrun directory: {run_dir}", flush=True)
    return summary


# absolute path: works for `python -m biolab.train` and for the console script alike (editable install)
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    cfg.run_dir = HydraConfig.get().runtime.output_dir
    try:
        train(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        from biolab.slurm import in_submitit_job
        if in_submitit_job():  # a job of a SLURM sweep: submitit pickles the error, the launcher raises it
            raise
        sys.exit(2)


def main() -> None:
    """Console script entry point (biolab-train)."""
    _hydra_main()


if __name__ == "__main__":
    main()
