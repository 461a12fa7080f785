"""Experiment tracking with Weights & Biases (``logger=wandb``; optional extra: pip install -e ".[wandb]").

``WandbLogger`` (conf/logger/wandb.yaml) is Lightning's logger with what a study needs:

- config: the run's resolved ``config.yaml``, flattened (``data.population_size``, ``module.lr``,
  ``seed``...), given to ``wandb.init`` once at start (Lightning's own hyper-parameter logging,
  the module's arguments only, is skipped);
- group: the study (``${name}``: the sweep or experiment name); name: the run directory's last
  component (a sweep job's override string, its job directory); job type: the experiment;
- resume in place: the wandb run id is kept in ``<run_dir>/wandb_id`` and a relaunch continues
  that run (``resume="allow"``). Offline, every launch writes its own
  ``<run_dir>/wandb/offline-run-<time>-<id>`` directory; ``wandb sync`` of all of them uploads one
  run. A step already in the transaction logs of earlier launches is not logged again, and
  evaluation rows that a killed launch computed (``metrics.csv``) but wandb had not yet written to
  disk (a SIGKILL loses what wandb still held in memory) are logged first, so the run has every
  evaluation once;
- metrics are logged at their training step (wandb's ``_step`` is the trainer's global step);
- at the end (``finish_loggers``), the summary.json values go to the run summary and every figure
  of the run directory (``*.png``: learning curves, attention, analysis figures) is logged as an
  image, then the run is finished.

Offline stays quiet: wandb's banner is replaced by one line at start and the ``wandb sync``
command at the end; wandb's warnings and errors still print. ``quiet_third_party_logs`` drops
Lightning's advertising tips and its report of absent accelerators.

``wandb_records(path)`` reads a ``.wandb`` transaction log (leveldb log format of
protobuf ``Record`` messages), stopping at a torn tail.
"""

from __future__ import annotations

import json
import logging
import secrets
import shlex
import string
import struct
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from biolab.data.datamodule import ConfigError
from biolab.io import atomic_write_text, read_csv

ID_FILE = "wandb_id"


class WandbLogger(_LightningWandbLogger):
    def __init__(self, save_dir: str, project: str = "biolab", offline: bool = True, name: str | None = None,
                 group: str | None = None, job_type: str | None = None, id: str | None = None, **kwargs: Any):
        run_dir = Path(save_dir)
        if job_type is None:
            job_type = _hydra_experiment()
        super().__init__(save_dir=str(run_dir), project=project, offline=offline, name=name or run_dir.name,
                         group=group, job_type=job_type, **kwargs)
        self._wandb_init.pop("anonymous", None)  # deprecated in wandb: a warning on every run
        self._run_dir = run_dir
        self._earlier = -1       # last step that earlier launches of this run wrote to the wandb run
        self._logged_until = -1  # steps up to this one are not logged again (earlier launches, metrics.csv)
        if rank_zero_only.rank == 0:
            _finish_stale_run()
            self._id = self._wandb_init["id"] = id or _run_id(run_dir)
            self._earlier = max(logged_steps(run_dir, self._id), default=-1)

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            import wandb

            self._wandb_init.setdefault("config", _flat_config(self._run_dir / "config.yaml"))
            # a run's settings: silent drops wandb's banner and footer (offline: a `wandb leet` tip, the
            # history tables), quiet keeps the run's URL; warnings and errors follow the process's settings
            self._wandb_init.setdefault("settings", wandb.Settings(silent=True) if self._offline
                                        else wandb.Settings(quiet=True))
            run = super().experiment
            self._continue(run)
        return self._experiment

    def _continue(self, run) -> None:
        """Log the evaluations of metrics.csv that the wandb run lacks (a killed launch computed them,
        wandb had not written them to disk); announce the run."""
        self._earlier = max(self._earlier, run.step - 1)  # online, a resumed run starts after the server's last step
        self._logged_until = self._earlier
        metrics_file = self._run_dir / "metrics.csv"
        for row in read_csv(metrics_file) if metrics_file.exists() else []:
            step = int(row.pop("step"))
            if step > self._logged_until:
                run.log({**row, "trainer/global_step": step}, step=step)
                self._logged_until = step
        if self._offline:
            where = f"continued after step {self._logged_until}" if self._logged_until >= 0 else "started"
            print(f"wandb: offline run {run.name} (id {run.id}, group {run.group}) {where} in "
                  f"{self._run_dir / 'wandb'}", flush=True)

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        """Start the wandb run (fit start). The run's whole config goes to wandb.init: Lightning's
        params (the module's arguments) would repeat part of it under other keys."""
        _ = self.experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        run = self.experiment  # first: starting the run may log rows of metrics.csv (see _continue)
        if step is None:
            super().log_metrics(metrics)
        elif step > self._logged_until and metrics:
            run.log({**metrics, "trainer/global_step": step}, step=step)

    @rank_zero_only
    def finish_run(self, summary: dict, figures: list[Path], step: int) -> None:
        """summary.json into the run summary, the figures as images, then finish the wandb run."""
        import wandb

        run = self.experiment
        images = {f"figures/{path.stem}": wandb.Image(str(path)) for path in figures}
        if images:
            step = max(step, self._earlier + 1)  # not a step that an earlier launch wrote
            run.log({**images, "trainer/global_step": step}, step=step)
        run.summary.update(summary)
        run.finish()
        if self._offline:
            print(f"wandb: upload this run with: wandb sync "
                  f"{shlex.quote(str(self._run_dir / 'wandb'))}/offline-run-*-{run.id}", flush=True)


def make_loggers(logger_cfg, run_dir: Path) -> list:
    """Instantiate the configured loggers into run_dir; a missing optional package is a one-line ConfigError."""
    from hydra.utils import instantiate

    loggers = []
    for key, cfg in (logger_cfg or {}).items():
        try:
            loggers.append(instantiate(cfg, save_dir=str(run_dir)))
        except Exception as err:
            cause = err.__cause__ or err
            if isinstance(cause, ModuleNotFoundError):
                raise ConfigError(f"logger.{key}: a package is missing; for logger=wandb: pip install -e \".[wandb]\" "
                                  f"({str(cause).splitlines()[0]})") from err
            raise
    return loggers


def finish_loggers(loggers: list, summary: dict, run_dir: Path) -> None:
    """End of a run: the summary and the run directory's figures to every WandbLogger, which then finishes."""
    figures = sorted(Path(run_dir).glob("*.png"))
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.finish_run(summary, figures, int(summary["steps"]))


# ---- transaction logs ----------------------------------------------------------------------------
_BLOCK, _HEADER = 32768, 7  # leveldb log format: 32 KiB blocks; chunk header crc32 (4), length (2), type (1)
_FULL, _FIRST, _LAST = 1, 2, 4


def wandb_records(path: str | Path) -> Iterator:
    """The protobuf Records of a .wandb file, in order; stops at a torn or corrupt tail (a killed run)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if len(data) < _HEADER:
        return  # killed before wandb wrote the file header
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb transaction log")
    pos, parts = _HEADER, []
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # block trailer: zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        if kind == 0 or len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) != crc:
            return
        pos += _HEADER + length
        parts = [chunk] if kind in (_FULL, _FIRST) else parts + [chunk]
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            yield record


def run_logs(run_dir: str | Path, run_id: str) -> list[Path]:
    """The transaction logs of wandb run `run_id` in run_dir/wandb, one per launch, oldest first."""
    return sorted(Path(run_dir).glob(f"wandb/*-{run_id}/run-{run_id}.wandb"))


def logged_steps(run_dir: str | Path, run_id: str) -> list[int]:
    """Steps of the history records of wandb run `run_id` written to disk in run_dir, in log order."""
    return [history_step(record.history) for path in run_logs(run_dir, run_id) for record in wandb_records(path)
            if record.WhichOneof("record_type") == "history"]


def history_step(history) -> int:
    """The step of a HistoryRecord: its ``_step`` item (wandb < 0.18 leaves ``step.num`` at 0)."""
    for item in history.item:
        if item.key == "_step" or list(item.nested_key) == ["_step"]:
            return int(json.loads(item.value_json))
    return history.step.num


# ---- helpers -------------------------------------------------------------------------------------
def _run_id(run_dir: Path) -> str:
    """The wandb run id of this run directory: kept in <run_dir>/wandb_id, made on the first launch."""
    path = run_dir / ID_FILE
    if path.exists():
        return path.read_text().strip()
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # as wandb's ids
    atomic_write_text(path, run_id + "\n")
    return run_id


def _flat_config(path: Path) -> dict:
    """The run's config.yaml as {"data.population_size": 64, ...}; {} if there is none."""
    from biolab.resume import flatten

    return flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=True)) if path.exists() else {}


def _hydra_experiment() -> str | None:
    """The experiment chosen on the command line (experiment=...), inside a Hydra app; else None."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None


def _finish_stale_run() -> None:
    """A wandb run still open in this process belongs to an earlier job (a sweep job that failed):
    finish it, or Lightning would log this run into it."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1)


class _DropLines(logging.Filter):
    def __init__(self, *patterns: str):
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(p) for p in self.patterns)


_NOISE = _DropLines("💡 Tip:", "GPU available: False, used: False", "TPU available: False, using: 0 TPU cores")


def quiet_third_party_logs() -> None:
    """Drop Lightning's advertising tips ("💡 Tip: ... litlogger / litmodels") and its report of
    accelerators that are neither available nor used; every other message, warnings included, stays."""
    for name in ("lightning_utilities.core.rank_zero", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _NOISE not in logger.filters:
            logger.addFilter(_NOISE)
