"""The run loader: everything that reads a run directory or a weights file goes through here.

A run directory (written by ``python -m biolab.train``) holds config.yaml (the resolved config),
metrics.csv, summary.json once finished, checkpoints/last.ckpt (Lightning: weights, optimiser,
callback state) and, with a trajectory preset, trajectory/step_<k>.safetensors (weights only).
Training's resume, fine-tuning's init_from, the patching reference, the benchmarks, the analyses
and the interpretability package (biolab.mech) all load weights with the functions below:

    run = load_run("runs/quickstart/seed=1")
    run.cfg                       # the resolved config (DictConfig)
    dm = run.datamodule()         # rebuilt from the config and set up: the same people (a pure function of seeds)
    run.steps                     # [0, 25, ..., 1200]: trajectory snapshots and last.ckpt, by step
    model = run.model(200)        # the Transformer at step 200, eval mode, shape-checked against the config
    run.metrics(), run.summary()  # rows of metrics.csv; summary.json (or milestones from metrics.csv)

Files load safely: Lightning checkpoints with ``torch.load(weights_only=True)``, snapshots from
safetensors. Every problem (missing directory or file, corrupt file, a checkpoint that does not
match its config, a step that does not exist) is a one-line ConfigError naming it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file

from biolab.errors import ConfigError
from biolab.history import history_column
from biolab.io import read_csv, write_safetensors
from biolab.model import Transformer, TransformerConfig
from biolab.phases import phase_summary

FORMAT = "biolab-trajectory-v1"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


# ---- building the run's objects from its config ------------------------------------------------

def build_datamodule(cfg: DictConfig):
    """The BioDataModule of a config (not set up); _convert_="all" keeps plain containers in checkpoints."""
    return instantiate(cfg.data, train_seed=cfg.seed, _convert_="all")


def model_config(cfg: DictConfig, vocab_size: int) -> TransformerConfig:
    return instantiate(cfg.model, vocab_size=vocab_size, _convert_="all")


def new_model(model_cfg: TransformerConfig) -> Transformer:
    """A Transformer of this shape; its random initialisation leaves the global RNG stream untouched."""
    with torch.random.fork_rng(devices=[]):
        return Transformer(model_cfg)


# ---- weights files ------------------------------------------------------------------------------

def load_checkpoint(path: str | Path, key: str | None = None) -> dict:
    """A Lightning checkpoint, loaded with weights_only=True; a missing or corrupt file is a ConfigError."""
    path, prefix = Path(path), f"{key}: " if key else ""
    if not path.is_file():
        raise ConfigError(f"{prefix}checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"{prefix}checkpoint {path} is corrupt or not a biolab checkpoint "
                          f"({type(err).__name__})") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{prefix}{path} holds a {type(ckpt).__name__}, not a biolab checkpoint")
    return ckpt


def checkpoint_weights(ckpt: dict, path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """The Transformer's weights of a Lightning checkpoint (its "model.*" entries, prefix removed)."""
    prefix = f"{key}: " if key else ""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise ConfigError(f"{prefix}{path} has no 'state_dict' (not a checkpoint written by biolab.train)")
    # "model." keys only: a compiled module also stores its weights under "_compiled._orig_mod."
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    if not weights:
        raise ConfigError(f"{prefix}{path} has no 'model.*' weights in its state_dict")
    return weights


def weights_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "trajectory" / f"step_{step}.safetensors"


def save_weights(model: Transformer, path: str | Path, step: int) -> None:
    """Write model.state_dict() to a safetensors file atomically, with the config and step as metadata."""
    # copies on CPU: safetensors refuses shared storage (tied embeddings) and device tensors are copied anyway
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "step": str(int(step)), "model_config": json.dumps(asdict(model.cfg))}
    write_safetensors(path, state, meta)


def read_metadata(path: str | Path, key: str = "reference") -> dict:
    """A snapshot's metadata ({} if none); a missing or unreadable file is a one-line ConfigError naming `key`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as err:
        raise ConfigError(f"{key}: {path} is corrupt or not a safetensors weights file "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if "model_config" in meta:
        meta["model_config"] = json.loads(meta["model_config"])
    if "step" in meta:
        meta["step"] = int(meta["step"])
    return meta


def load_weights(path: str | Path, key: str = "reference") -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict on CPU, metadata) of a snapshot file; errors are one-line ConfigErrors."""
    meta = read_metadata(path, key)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:
        raise ConfigError(f"{key}: {path} is corrupt ({type(err).__name__})") from None
    return state, meta


def check_weights(weights: dict[str, torch.Tensor], model: Transformer, source: str | Path, key: str) -> None:
    """Every tensor of `model` is in `weights` with the same shape, and nothing else is (ConfigError naming it)."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in weights:
            raise ConfigError(f"{key}: {source} lacks the weight {name} (another model shape)")
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise ConfigError(f"{key}: {name} has shape {tuple(weights[name].shape)} in {source}, "
                              f"{tuple(tensor.shape)} in the configured model (another model shape)")
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise ConfigError(f"{key}: {source} has weights the configured model lacks (another model shape), "
                          f"e.g. {extra[0]}")


# ---- a run directory ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    step: int
    path: Path
    kind: str  # "trajectory" (weights only) or "checkpoint" (last.ckpt)


class Run:
    """A run directory, read lazily: nothing heavier than config.yaml is loaded until asked for."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise ConfigError(f"run directory not found: {self.dir}")
        config = self.dir / "config.yaml"
        if not config.is_file():
            raise ConfigError(f"{self.dir} has no config.yaml (not a run directory written by biolab.train)")
        try:
            self.cfg: DictConfig = OmegaConf.load(config)
        except Exception as err:
            raise ConfigError(f"{config} is not a readable config ({type(err).__name__})") from None
        self._datamodule = None

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    # ---- data and model shape -------------------------------------------------------------------
    def datamodule(self, setup: bool = True):
        """The run's BioDataModule, rebuilt from its config (same people, same evaluation sets); cached."""
        if self._datamodule is None:
            try:
                self._datamodule = build_datamodule(self.cfg)
            except ConfigError:
                raise
            except Exception as err:  # Hydra wraps constructor errors
                cause = err.__cause__ or err
                raise ConfigError(f"{self.dir}/config.yaml: data: {type(cause).__name__}: {cause}".splitlines()[0]) \
                    from None
        if setup:
            self._datamodule.setup()  # idempotent
        return self._datamodule

    @cached_property
    def model_config(self) -> TransformerConfig:
        return model_config(self.cfg, self.datamodule(setup=False).vocab_size)

    # ---- snapshots --------------------------------------------------------------------------------
    @cached_property
    def snapshots(self) -> list[Snapshot]:
        """Trajectory snapshots and last.ckpt (when its step has no trajectory file), sorted by step."""
        found: dict[int, Snapshot] = {}
        for path in sorted((self.dir / "trajectory").glob("step_*.safetensors")):
            step = path.stem.removeprefix("step_")
            if step.isdigit():
                found[int(step)] = Snapshot(int(step), path, "trajectory")
        last = self.dir / LAST_CHECKPOINT
        if last.is_file():
            step = load_checkpoint(last).get("global_step")
            if isinstance(step, int) and step not in found:
                found[step] = Snapshot(step, last, "checkpoint")
        return [found[s] for s in sorted(found)]

    @property
    def steps(self) -> list[int]:
        return [s.step for s in self.snapshots]

    def snapshot(self, step: int | None = None) -> Snapshot:
        """The snapshot at `step` (None: the latest)."""
        if not self.snapshots:
            raise ConfigError(f"{self.dir} has no model snapshot (neither trajectory/step_*.safetensors "
                              f"nor {LAST_CHECKPOINT})")
        if step is None:
            return self.snapshots[-1]
        match = [s for s in self.snapshots if s.step == step]
        if not match:
            raise ConfigError(f"{self.dir} has no snapshot at step {step}; available steps: {_ranges(self.steps)}")
        return match[0]

    def weights(self, step: int | None = None) -> dict[str, torch.Tensor]:
        snap = self.snapshot(step)
        key = str(snap.path)
        if snap.kind == "checkpoint":
            return checkpoint_weights(load_checkpoint(snap.path, key), snap.path, key)
        state, meta = load_weights(snap.path, key=key)
        saved = meta.get("model_config")
        if isinstance(saved, dict):
            now = asdict(self.model_config)
            differing = [f"model.{k}={saved.get(k)!r} in the file, {v!r} in config.yaml" for k, v in now.items()
                         if k != "init_std" and saved.get(k) != v]
            if differing:
                raise ConfigError(f"{snap.path} does not match {self.dir}/config.yaml: {differing[0]}")
        return state

    def model(self, step: int | None = None) -> Transformer:
        """The Transformer at `step` (None: the latest snapshot), on CPU in eval mode, without gradients."""
        snap = self.snapshot(step)
        model = new_model(self.model_config)
        weights = self.weights(snap.step)
        check_weights(weights, model, snap.path, f"{self.dir}/config.yaml")
        model.load_state_dict(weights)
        return model.eval().requires_grad_(False)

    # ---- results --------------------------------------------------------------------------------
    def metrics(self) -> list[dict]:
        """Rows of metrics.csv (one per evaluation; [] before the first)."""
        path = self.dir / "metrics.csv"
        return read_csv(path) if path.is_file() else []

    def summary(self) -> dict:
        """summary.json; for a run without one (stopped by hand, still running) the phase milestones
        computed from metrics.csv, with "from_metrics": True."""
        path = self.dir / "summary.json"
        if path.is_file():
            return json.loads(path.read_text())
        rows = self.metrics()
        if not rows:
            return {}
        baseline = rows[-1].get("val/baseline")  # logged by the Evaluator; else from the data config
        baseline = baseline if baseline is not None else self.datamodule(setup=False).baseline
        steps, _ = history_column(rows, "val/attr_loss")
        return {"from_metrics": True, "steps": steps[-1] if steps else None, "no_knowledge_baseline": baseline,
                **phases_from_metrics(rows, baseline)}


def phases_from_metrics(rows: list[dict], baseline: float) -> dict:
    """The phase milestones (biolab.phases, the current definitions) of a run's metrics.csv rows."""
    steps, losses = history_column(rows, "val/attr_loss")
    acc_steps, accs = history_column(rows, "val/attr_acc")
    return phase_summary(steps, losses, acc_steps, accs, baseline)


def load_run(run_dir: str | Path) -> Run:
    return Run(run_dir)


def _ranges(steps: list[int], most: int = 12) -> str:
    shown = ", ".join(map(str, steps[:most]))
    return shown + (f", ... ({len(steps)} in all, last {steps[-1]})" if len(steps) > most else "")
