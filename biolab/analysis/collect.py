"""Collect every job of a sweep directory into one table (overrides + summary.json), by reading files.

A sweep directory (``multiruns/<name>``, written by ``python -m biolab.train -m ...``) holds one
sub-directory per job with ``.hydra/overrides.yaml``, ``config.yaml``, ``metrics.csv`` and, once
the job has finished, ``summary.json``. ``collect_sweep`` returns one `Job` per sub-directory and
``write_table`` writes ``<sweep_dir>/table.csv``: one row per job, its overrides (the swept values),
its status (finished / unfinished) and every scalar of its summary. Summaries are read by the run
loader (``biolab.runs.Run.summary``): a job stopped by hand, without summary.json, still has its
phase milestones, computed from metrics.csv (``from_metrics: true``; it stays unfinished).

    python -m biolab.analysis table multiruns/population_cpu
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from biolab.errors import ConfigError
from biolab.io import write_csv
from biolab.runs import Run

IGNORED_OVERRIDES = ("sweep", "experiment", "hydra.", "name")


@dataclass
class Job:
    path: Path
    overrides: dict[str, object]          # swept values, e.g. {"data.population_size": 512, "seed": 1}
    summary: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)  # milestones recomputed from metrics.csv (population analysis)

    @property
    def finished(self) -> bool:
        return bool(self.summary.get("completed"))

    def metrics(self) -> list[dict]:
        """The job's metrics.csv rows (numbers as floats); [] before its first evaluation."""
        path = self.path / "metrics.csv"
        if not path.exists():
            return []
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: parse_value(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def parse_value(text: str):
    """'512' -> 512, '3e-3' -> 0.003, 'true' -> True, anything else stays text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_overrides(job_dir: Path) -> dict[str, object]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    out = {}
    for item in OmegaConf.load(path) or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        if not key.startswith(IGNORED_OVERRIDES):
            out[key] = parse_value(value)
    return out


def collect_sweep(sweep_dir: str | Path) -> list[Job]:
    """Every job directory under sweep_dir (one that holds a config.yaml or .hydra/), in natural order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory not found: {sweep_dir}")
    jobs = []
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not ((job_dir / "config.yaml").exists() or (job_dir / ".hydra").is_dir()):
            continue
        jobs.append(Job(job_dir, read_overrides(job_dir), job_summary(job_dir)))
    if not jobs:
        raise FileNotFoundError(f"no job directories in {sweep_dir} (run the sweep first)")
    return sorted(jobs, key=_natural_order)


def job_summary(job_dir: Path) -> dict:
    """summary.json, else the milestones so far from metrics.csv (Run.summary), else {} (no config.yaml yet)."""
    try:
        return Run(job_dir).summary()
    except ConfigError:
        return {}


def _natural_order(job: Job) -> tuple:
    """Jobs ordered by their swept values, numbers numerically (N=128 before N=1024)."""
    return tuple((key, (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value)))
                 for key, value in sorted(job.overrides.items()))


def table_rows(jobs: list[Job]) -> list[dict]:
    rows = []
    for job in jobs:
        scalars = {k: v for k, v in job.summary.items() if not isinstance(v, (dict, list))}
        rows.append({"job": job.path.name, **job.overrides,
                     "status": "finished" if job.finished else "unfinished", **scalars})
    return rows


def write_table(jobs: list[Job], path: str | Path) -> Path:
    write_csv(path, table_rows(jobs))
    return Path(path)
