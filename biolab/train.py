"""Train one run: ``train(cfg)`` is a plain function; ``python -m biolab.train`` wraps it with Hydra.

    python -m biolab.train experiment=quickstart             # CPU quick-start (a few minutes)
    python -m biolab.train experiment=paper                   # SPEC section 4 defaults (GPU)
    python -m biolab.train experiment=quickstart seed=3 data.seed=5 hydra.run.dir=runs/mine

The run directory (``hydra.run.dir``; default ``runs/<name>/<overrides>``) receives config.yaml,
metrics.csv (one row per evaluation), checkpoints/last.ckpt, learning_curves.png and, last,
summary.json. Re-running the same command resumes from last.ckpt, or returns at once if the run
finished (redrawing a missing figure); a run directory that holds a different config is refused
rather than overwritten. Every check runs before anything is written, and one process at a time
holds a run directory (README, "Durability").
Fine-tuning (``init_from=<checkpoint>``, data.n_new_people, data.replay_weight): biolab.finetune.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from biolab.callbacks import Evaluator, PhaseTracker
from biolab.checkpointing import AtomicCheckpointIO, RunGuard, SaveAtStop
from biolab.checks import check_memory, check_run_dir, check_values
from biolab.data.datamodule import BioDataModule
from biolab.errors import ConfigError
from biolab.finetune import finetune_summary, load_init_weights
from biolab.history import history_column
from biolab.hydra_hooks import write_hydra_files
from biolab.io import atomic_write_text, read_csv, write_json
from biolab.phases import phase_summary
from biolab.plots import (attention_layers, overshadowing_groups, plot_attention, plot_learning_curves,
                          plot_overshadowing)
from biolab.resume import check_same_run as _check_same_run
from biolab.resume import resume_checkpoint
from biolab.runlock import RunLock, is_launching_process, refuse_if_locked, remove_orphans
from biolab.runs import LAST_CHECKPOINT, build_datamodule, model_config
from biolab.tracking import finish_loggers, make_loggers, quiet_third_party_logs

# Lightning 2.6 with torch 2.13 warns on every fit about its own use of a deprecated torch API
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# and, on machines with SLURM's srun, on every run outside a SLURM job (biolab's SLURM jobs run under srun): noise
# before biolab's one-line errors
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
# a run continued from another run's checkpoint (branch_from) keeps no best-k bookkeeping (save_top_k=0) to reload
warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
quiet_third_party_logs()  # Lightning's advertising tips and absent-accelerator lines

# training steps between checks that the loss is finite (one host sync each; also checked before every save)
FINITE_CHECK_EVERY = 50


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_config(cfg: DictConfig) -> dict:
    """Value checks that Hydra's schema-less YAML cannot express; raise ConfigError naming the key.
    Returns the resolved config (plain containers)."""
    if not cfg.get("run_dir"):
        raise ConfigError("run_dir is not set (python -m biolab.train sets it from hydra.run.dir)")
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # a broken interpolation
        raise ConfigError(f"{type(err).__name__}: {err}".splitlines()[0]) from None
    steps = cfg.trainer.get("max_steps")
    if not _positive_int(steps):
        raise ConfigError(f"trainer.max_steps must be a positive integer, got {steps!r}")
    for key in ("lr", "min_lr", "weight_decay"):
        value = cfg.module.get(key)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
            raise ConfigError(f"module.{key} must be a number >= 0, got {value!r}")
    if not cfg.module.lr > 0:
        raise ConfigError(f"module.lr must be > 0, got {cfg.module.lr!r}")
    betas = resolved["module"].get("betas")
    if not (isinstance(betas, list) and len(betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"module.betas must be two numbers in [0, 1), got {betas!r}")
    if not _positive_int(cfg.checkpoint_every):
        raise ConfigError(f"checkpoint_every must be a positive integer, got {cfg.checkpoint_every!r}")
    if cfg.data.get("n_new_people") and not cfg.get("init_from"):
        raise ConfigError("init_from is required with data.n_new_people > 0: the pre-training checkpoint to "
                          "fine-tune, e.g. init_from=runs/quickstart/checkpoints/last.ckpt")
    check_values(resolved)
    _check_cuda(cfg)
    check_run_dir(cfg.run_dir, "run_dir")
    _check_slurm_tasks(cfg)
    return resolved


def _check_cuda(cfg: DictConfig) -> None:
    """A GPU preset on a machine without CUDA fails here, in one line, not inside Lightning's Trainer."""
    accelerator = str(cfg.trainer.get("accelerator", "auto")).lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} needs a CUDA GPU and this machine has none "
                          "(torch.cuda.is_available() is false): use a CPU experiment or trainer.accelerator=cpu")


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
    a callback with a ``check(module)`` or ``check_datamodule(datamodule)`` method checks itself against
    the model or the data here, before any file is written (attention patching: the reference must be
    the same model; overshadowing metrics: the data must have look-alike pairs).
    """
    try:
        datamodule: BioDataModule = build_datamodule(cfg)
        model_cfg = model_config(cfg, datamodule.vocab_size)
        if datamodule.max_input_length > model_cfg.max_seq_len:
            raise ConfigError(f"model.max_seq_len={model_cfg.max_seq_len} is shorter than the longest biography "
                              f"of this data ({datamodule.max_input_length} tokens)")
        module = instantiate(cfg.module, model=asdict(model_cfg), max_steps=cfg.trainer.max_steps,
                             attributes=list(datamodule.attributes), unknown_id=datamodule.unknown_id, _convert_="all")
        module.configure_optimizers()  # the optimiser's own checks, before any file is written
        metrics_file = str(Path(cfg.run_dir) / "metrics.csv")
        callbacks = [instantiate(cfg.callbacks.evaluator, metrics_file=metrics_file)]
        callbacks += [instantiate(c) for name, c in cfg.callbacks.items() if name != "evaluator" and c]
        for callback in callbacks:  # callbacks that check themselves against the model or the data
            if hasattr(callback, "check"):
                callback.check(module)
            if hasattr(callback, "check_datamodule"):
                callback.check_datamodule(datamodule)
    except ConfigError:
        raise
    except Exception as err:  # Hydra wraps constructor errors (unknown keys, bad values)
        cause = err.__cause__ or err
        raise ConfigError(f"{type(cause).__name__}: {cause}".splitlines()[0]) from err
    return datamodule, module, callbacks


def _trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    """The Lightning Trainer (accelerator, devices, precision checked by its constructor: one-line errors)."""
    try:
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                         default_root_dir=str(cfg.run_dir))
    except Exception as err:
        cause = err.__cause__ or err
        raise ConfigError(f"trainer: {type(cause).__name__}: {cause}".splitlines()[0]) from err
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()  # atomic on the run directory's filesystem
    return trainer


def _state(run_dir: Path) -> list:
    """What a start decides from (config, summary, last checkpoint), to see that it did not change under it."""
    out = []
    for path in (run_dir / "config.yaml", run_dir / "summary.json", run_dir / LAST_CHECKPOINT):
        stat = path.stat() if path.exists() else None
        out.append(stat and (stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return out


def _finished(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is unreadable ({type(err).__name__}); delete it to finish the run again") from None
    return summary if summary.get("completed") else None


def figures(run_dir: Path, history: list[dict], summary: dict, finetuning: bool) -> dict:
    """{file name: draw(path)} of a run's figures: learning_curves.png, attention.png (when attention
    was measured), overshadowing.png (look-alike runs), finetune.png (fine-tuning runs)."""
    phases = dict(fall_end=summary.get("fall_end_step"), plateau_end=summary.get("plateau_end_step"),
                  acc_half=summary.get("acc_50pct_step"))
    if finetuning:  # the pre-training phases do not apply to a run that starts trained
        phases = dict.fromkeys(phases)
    title = f"N={summary['population_size']}, seed={summary['seed']}, data seed={summary['data_seed']}"
    baseline = summary["no_knowledge_baseline"]
    draw = {"learning_curves.png": lambda path: plot_learning_curves(history, baseline, path, **phases, title=title)}
    if attention_layers(history):
        draw["attention.png"] = lambda path: plot_attention(history, path, **phases,
                                                            title=f"attention metrics, {title}")
    if overshadowing_groups(history):
        draw["overshadowing.png"] = lambda path: plot_overshadowing(history, path, **phases,
                                                                    title=f"knowledge overshadowing, {title}")
    if finetuning:
        from biolab.analysis.finetune import plot_finetune_run
        draw["finetune.png"] = lambda path: plot_finetune_run(run_dir)
    return draw


def _redraw_missing_figures(run_dir: Path, summary: dict, finetuning: bool) -> None:
    """A finished run whose figures were lost (killed before they were drawn, deleted) gets them back."""
    metrics = run_dir / "metrics.csv"
    draw = figures(run_dir, read_csv(metrics) if metrics.exists() else [], summary, finetuning)
    missing = [name for name in draw if not (run_dir / name).exists()]
    if missing:
        with RunLock(run_dir):
            for name in missing:
                draw[name](run_dir / name)
        print(f"{run_dir}: redrew {', '.join(missing)}", flush=True)


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
        **datamodule.padding,  # data.pad_to: train/eval_pad_fraction and what padding each batch to its longest costs
        # attr_loss/<attribute>, attr_acc/<attribute>; the overall attr_loss and attr_acc are above
        "per_attribute": {k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("val/attr_")
                          and k.count("/") == 2},
    }


def train(cfg: DictConfig) -> dict:
    """Train (or resume, or skip if finished) the run described by cfg; return its summary.

    Every check (values, model, population, trainer, the checkpoint to resume) runs before anything
    is written; then the run directory is locked (biolab.runlock) and written: config.yaml and
    .hydra/, metrics.csv and checkpoints while training, the figures, and summary.json last.
    """
    start = time.perf_counter()
    resolved = check_config(cfg)
    run_dir = Path(cfg.run_dir)
    launching = is_launching_process()  # the other ranks of a distributed run share its directory
    if launching:
        refuse_if_locked(run_dir)
    before = _state(run_dir)
    _check_same_run(run_dir, resolved)
    finetuning = bool(cfg.get("init_from") or cfg.data.get("n_new_people"))
    summary = _finished(run_dir)
    if summary is not None:
        if launching:
            _redraw_missing_figures(run_dir, summary, finetuning)
        print(f"{run_dir} already finished (summary.json); nothing to do", flush=True)
        return summary
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # model initialisation; data has its own seeds
    datamodule, module, callbacks = _build(cfg)
    check_memory(resolved, sum(p.numel() for p in module.parameters()))  # before the population is drawn
    ckpt_path = resume_checkpoint(cfg, run_dir, resolved, datamodule)
    if cfg.get("init_from") and ckpt_path is None:  # a fresh fine-tuning run; a resumed one has its own weights
        load_init_weights(cfg.init_from, module, datamodule)
    evaluator: Evaluator = callbacks[0]
    tracker = next((c for c in callbacks if isinstance(c, PhaseTracker)), None)
    callbacks.append(RunGuard(resolved, check_every=FINITE_CHECK_EVERY))
    callbacks.append(SaveAtStop(run_dir / LAST_CHECKPOINT, cfg.checkpoint_every))
    checkpointing = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
        every_n_train_steps=cfg.checkpoint_every, save_on_train_epoch_end=False)
    loggers = make_loggers(cfg.get("logger"), run_dir)
    trainer = _trainer(cfg, [*callbacks, checkpointing], loggers)
    with RunLock(run_dir) if launching else nullcontext():
        if launching:
            if _state(run_dir) != before:
                raise ConfigError(f"{run_dir} changed while this start was being checked (another process "
                                  "finished or started in it); run the command again")
            for orphan in remove_orphans(run_dir):
                print(f"removed {orphan.name} (left by an interrupted write)", flush=True)
            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(resolved))
            write_hydra_files(run_dir, cfg)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if trainer.global_rank != 0:
            return {}
        summary = summarize(evaluator.history, datamodule, evaluator, cfg, time.perf_counter() - start, tracker)
        if finetuning:
            summary.update(finetune_summary(evaluator.history, datamodule, cfg.get("init_from")))
        for name, draw in figures(run_dir, evaluator.history, summary, finetuning).items():
            draw(run_dir / name)
        finish_loggers(trainer.loggers, summary, run_dir)  # wandb: summary, figures, finish
        write_json(run_dir / "summary.json", summary)  # last: a run with a summary.json is finished
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
