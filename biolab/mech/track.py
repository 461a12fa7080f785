"""Run one analysis over the snapshots of a run: resumable, one JSON file per step.

    results = track(run, out_dir, analyse, steps=run.steps, options={"ig_steps": 5})

``analyse(model, step) -> dict`` is a pure function of the model at that step (its prompts are
built once by the caller). Each result is written to ``out_dir/steps/step_<k>.json`` as soon as
it is done; a re-run skips the steps already written, so an interrupted analysis loses at most
the step in progress. ``out_dir/options.json`` records the options: a re-run with other options
is refused (its per-step files would mix two analyses) rather than silently mixed.

``requested_steps(run, steps)`` checks the snapshots an analysis asks for. Shared by the studies' summaries: ``onset(rows, holds)`` (the first snapshot where a condition holds, as
the interval since the previous one) and ``finite_json(value)`` (NaN -> None, for JSON).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from biolab.errors import ConfigError
from biolab.io import write_json
from biolab.runs import Run


def step_path(out_dir: Path, step: int) -> Path:
    return out_dir / "steps" / f"step_{step}.json"


def check_options(out_dir: Path, options: dict) -> None:
    """Record the options, or refuse when out_dir holds results of other options."""
    path = out_dir / "options.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        differing = sorted(k for k in set(saved) | set(options) if saved.get(k) != options.get(k))
        if differing:
            shown = ", ".join(f"{k}={options.get(k)!r} (saved {saved.get(k)!r})" for k in differing[:4])
            raise ConfigError(f"{out_dir} holds results computed with other options: {shown}; "
                              f"delete it or pass out=<another directory>")
    write_json(path, options)


def requested_steps(run: Run, steps) -> list[int]:
    """The snapshots an analysis runs on: every one for steps="all", else the listed steps, each checked to
    exist before any work (a run without snapshots or a missing step is the run loader's one-line error)."""
    if not run.steps:
        run.snapshot()  # raises the one-line "no model snapshot" error
    chosen = run.steps if steps == "all" else sorted(set(steps))
    for step in chosen:
        run.snapshot(step)
    return chosen


def track(run: Run, out_dir: str | Path, analyse: Callable[[object, int], dict], steps: list[int],
          options: dict, log: Callable[[str], None] = print) -> dict[int, dict]:
    """{step: result} for every step in `steps`, computing only the ones not yet written."""
    out_dir = Path(out_dir)
    check_options(out_dir, options)
    results = {}
    for i, step in enumerate(steps):
        path = step_path(out_dir, step)
        if path.is_file():
            results[step] = json.loads(path.read_text())
            continue
        start = time.perf_counter()
        result = {"step": step, **analyse(run.model(step), step)}
        result["seconds"] = time.perf_counter() - start
        write_json(path, result)
        results[step] = result
        log(f"[{i + 1}/{len(steps)}] step {step}: {result['seconds']:.1f} s -> {path}")
    return results


def onset(rows: list[dict], holds) -> dict:
    """First step where `holds(row)`, as the interval (previous snapshot, that step]."""
    for previous, row in zip([None, *rows], rows):
        if holds(row):
            return {"step": row["step"], "after": previous["step"] if previous else None}
    return {"step": None, "after": None}


def finite_json(value):
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value
