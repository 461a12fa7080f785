"""What Hydra does around ``train()``, made safe: conf/train.yaml registers ``RunDirCallback``.

* Before Hydra creates the run directory (``on_run_start``), its path is checked: an existing file
  or a path that cannot be created is one line on stderr and exit code 2 (Hydra would print a
  traceback). A directory that Hydra creates for a start that is then refused is removed again, if
  still empty, when the process exits: a refused first start leaves nothing behind.
* Hydra's own ``.hydra/`` (config.yaml, hydra.yaml, overrides.yaml) is not written by Hydra before
  the job (``hydra.output_subdir: null``) but by ``train()`` through ``write_hydra_files``, once
  every check has passed and the run directory is locked; ``python -m biolab.analysis table`` reads
  overrides.yaml from there as before. Hydra's log file (``<job>.log``) is not written at all
  (``hydra/job_logging: stdout``).
* Local sweep workers (``hydra/launcher=local``, joblib/loky processes) die with their driver: a
  worker whose parent is the sweep's driver watches it and SIGKILLs itself once the driver is gone
  (kill -9 of the driver included), instead of training on as an orphan; its temp files are
  removed when the job is run again (biolab.runlock.remove_orphans).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from biolab.checks import check_run_dir
from biolab.errors import ConfigError
from biolab.io import atomic_write_text

_watching: int | None = None  # the driver this process watches, once started


class RunDirCallback(Callback):
    def __init__(self) -> None:
        self.driver_pid: int | None = None

    def on_run_start(self, config, **kwargs) -> None:
        HydraConfig.instance().set_config(config)  # resolves ${hydra:...} in hydra.run.dir
        run_dir = Path(str(config.hydra.run.dir)).absolute()
        try:
            check_run_dir(run_dir)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        created = run_dir
        while not created.parent.exists() and created.parent != created:
            created = created.parent
        if not created.exists():  # Hydra is about to create it (and maybe parents): remove them if left empty
            atexit.register(_remove_if_empty, run_dir, created)

    def on_multirun_start(self, config, **kwargs) -> None:
        self.driver_pid = os.getpid()  # pickled with the callback into every worker of the launcher

    def on_job_start(self, config, **kwargs) -> None:
        driver = self.driver_pid
        if driver is not None and os.getpid() != driver and os.getppid() == driver:
            die_with_parent(driver)


def _remove_if_empty(run_dir: Path, top: Path) -> None:
    directory = run_dir
    while True:
        try:
            directory.rmdir()  # only an empty directory
        except OSError:
            return
        if directory == top or directory.parent == directory:
            return
        directory = directory.parent


def die_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """SIGKILL this process once its parent `parent_pid` is gone (checked every `interval` seconds)."""
    global _watching
    if _watching == parent_pid:
        return
    _watching = parent_pid

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="biolab-die-with-driver", daemon=True).start()


def write_hydra_files(run_dir: str | Path, cfg) -> None:
    """Hydra's .hydra/{config,hydra,overrides}.yaml of this launch (when Hydra runs this job), written atomically."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    if OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir", throw_on_missing=False) != str(run_dir):
        return  # a train(cfg) call after some earlier Hydra job in this process
    out = Path(run_dir) / ".hydra"
    files = {"config.yaml": cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": hydra_cfg.hydra.overrides.task}
    for name, content in files.items():
        atomic_write_text(out / name, OmegaConf.to_yaml(content))
