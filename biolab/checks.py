"""Start-up checks that need no model or data: value types, finite numbers, seeds, memory, the run path.

``train()`` runs them (through ``check_config``) before it builds anything, and everything runs
before a file is written. Types are checked against the signatures of the classes the config
instantiates (every node with a ``_target_``): a boolean where a number is expected
(``data.population_size=true`` would otherwise train with N = 1), a fraction where an integer is
expected, anything but true/false where a flag is expected. Every number of the config must be
finite (``module.lr=inf`` or ``nan``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from pathlib import Path

from hydra.utils import get_object

from biolab.errors import ConfigError

SEED_KEYS = ("seed", "data.seed")
SEED_MAX = 2 ** 32 - 1  # numpy and Lightning's seed_everything take seeds in [0, 2^32)
# peak memory of drawing a population, per person (measured: ~290 bytes at 1M and 4M people; with margin
# for the training distribution's per-person arrays and the evaluation sets)
BYTES_PER_PERSON = 400


def check_values(resolved: dict) -> None:
    """Finite numbers everywhere; types that match the instantiated classes' signatures; valid seeds.
    `resolved`: the run's config as plain containers, interpolations resolved."""
    _check_finite(resolved, "")
    for path, node in _target_nodes(resolved, ""):
        hints = _hints(node["_target_"])
        for key, value in node.items():
            if not key.startswith("_") and key in hints:
                _check_type(f"{path}{key}", value, hints[key])
    for key in SEED_KEYS:
        seed = _select(resolved, key)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
            raise ConfigError(f"{key} must be an integer in 0..{SEED_MAX}, got {seed!r}")


def _select(node: dict, dotted: str):
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _check_finite(node, path: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, f"{path}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{path} must be a finite number, got {node!r}")


def _target_nodes(node: dict, path: str):
    """(dotted prefix, node) of every mapping that names a class or function to instantiate."""
    if node.get("_target_"):
        yield path, node
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _target_nodes(value, f"{path}{key}.")


def _hints(target) -> dict:
    try:
        obj = get_object(str(target))
        if dataclasses.is_dataclass(obj):
            return typing.get_type_hints(obj)
        return typing.get_type_hints(obj.__init__ if isinstance(obj, type) else obj)
    except Exception:  # an unknown target is reported when it is instantiated; unresolvable hints: no check
        return {}


def _accepted(hint) -> set:
    """The plain types a hint admits (Union / Optional / Literal flattened; generics by their origin)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        return set().union(*(_accepted(arg) for arg in typing.get_args(hint)))
    if origin is typing.Literal:
        return {type(arg) for arg in typing.get_args(hint)}
    if origin is not None:
        return {origin}
    return {hint} if isinstance(hint, type) else {object}


def _check_type(key: str, value, hint) -> None:
    accepted = _accepted(hint)
    if object in accepted or value is None:
        return
    numbers = accepted & {int, float}
    if isinstance(value, bool) and bool not in accepted and numbers:
        raise ConfigError(f"{key} must be {'an integer' if numbers == {int} else 'a number'}, got {value!r}")
    if isinstance(value, float) and int in accepted and float not in accepted:
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if accepted <= {bool, type(None)} and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")


# ---- memory ---------------------------------------------------------------------------------------

def check_memory(resolved: dict, model_parameters: int = 0, available: int | None = None) -> None:
    """Refuse a run that cannot fit in memory, from an estimate, before the population is drawn: the
    population (BYTES_PER_PERSON) and the model with its gradients and AdamW moments (16 bytes per
    parameter, fp32), in every process of the run on this node."""
    data = resolved["data"]
    people = sum(v for v in (data.get("population_size"), data.get("n_unseen"), data.get("n_new_people"))
                 if isinstance(v, int) and not isinstance(v, bool))
    devices = resolved["trainer"].get("devices")
    processes = devices if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0 else 1
    population, model = people * BYTES_PER_PERSON, model_parameters * 16
    need = (population + model) * processes
    available = available_memory() if available is None else available
    if available is not None and need > available:
        gib = 2 ** 30
        raise ConfigError(f"data.population_size={data.get('population_size')}: this run needs about "
                          f"{need / gib:.1f} GiB ({people:,} people {population / gib:.1f} GiB, model and optimiser "
                          f"{model / gib:.1f} GiB{f', x {processes} processes' if processes > 1 else ''}), "
                          f"{available / gib:.1f} GiB of memory are available")


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup limit (containers, SLURM)."""
    best = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                best = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            best = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
            if limit.isdigit() and usage.isdigit():
                room = int(limit) - int(usage)
                best = room if best is None else min(best, room)
        except OSError:
            continue
    return best


# ---- the run directory's path ---------------------------------------------------------------------

def check_run_dir(run_dir: str | Path, key: str = "hydra.run.dir") -> None:
    """The run directory is a writable directory, or can be created: not an existing file, not below
    one, not in a directory this process cannot write."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is an existing file, not a directory")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path} is not writable (a read-only directory or filesystem)")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{key}={path} cannot be created: {ancestor} is a file")
    if ancestor != path and not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path} cannot be created: {ancestor} is not writable")
