"""Individual distributions: which people the training stream draws (SPEC section 8).

A distribution is any object with ``sample(rng, n, population_size, step) -> int array [n]``
(person indices in ``[0, population_size)``); configs select one with the Hydra group
``data/distribution`` (``conf/data/distribution/*.yaml``), e.g.

    python -m biolab.train experiment=quickstart data/distribution=power_law data.distribution.alpha=0.6

Sampling depends only on its arguments, so the training stream stays a pure function of
(seed, step, rank): a resumed run or another DDP rank redraws exactly the same people. ``n`` is
the per-rank share of the batch; distributions that change over training (WarmUp, Sequential)
count time in *global* steps, so all ranks switch together. Evaluation is always uniform over the
whole population, whatever the training distribution.

Which people are frequent is decided by their index: person ``i`` is the ``i``-th person of the
population, and the population (built from the data seed only, ``biolab.data.population``) draws
names and attributes independently of the index, so "the first k people" is a random subset of
people with respect to their attributes, and it never depends on the training seed.

Optional hook: ``check(population_size, batch_size)`` validates the arguments that depend on the
population or the global batch; ``BioDataModule`` calls it before any work starts.
Constructor errors are ``ValueError`` naming the config key (``data.distribution.<key>``).
Usage and definitions for users: ``docs/distributions.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

KEY = "data.distribution"


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{KEY}.{name} must be a positive integer, got {value!r}")
    return int(value)


def _number(name: str, value, low: float, strict: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        raise ValueError(f"{KEY}.{name} must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


def _fits(name: str, value: int, population_size: int) -> None:
    if value > population_size:
        raise ValueError(f"{KEY}.{name}={value} exceeds data.population_size={population_size}")


def piecewise_uniform(rng: np.random.Generator, n: int, starts, stops, weights) -> np.ndarray:
    """Draw n indices from segments [starts[j], stops[j]) whose people have per-person weight weights[j].

    The primitive behind Celebrities and Mixture: pick a segment with probability ∝ weight x size,
    then a person uniformly inside it (empty or zero-weight segments are never picked).
    """
    starts, sizes = np.asarray(starts), np.asarray(stops) - np.asarray(starts)
    mass = np.asarray(weights, dtype=np.float64) * sizes
    segment = rng.choice(len(sizes), size=n, p=mass / mass.sum())
    return starts[segment] + rng.integers(0, sizes[segment])


class Uniform:
    """Every person equally likely (the paper's default)."""

    def sample(self, rng: np.random.Generator, n: int, population_size: int, step: int) -> np.ndarray:
        return rng.integers(0, population_size, size=n)

    def __repr__(self) -> str:
        return "Uniform()"


class PowerLaw:
    """p(i) ∝ (i + 1)^-alpha for person index i in [0, N): person 0 is the most frequent (alpha 0 = uniform)."""

    def __init__(self, alpha: float = 0.6):
        self.alpha = _number("alpha", alpha, 0.0, strict=False)
        self._cdf: dict[int, np.ndarray] = {}

    def probabilities(self, population_size: int) -> np.ndarray:
        p = np.arange(1, population_size + 1, dtype=np.float64) ** -self.alpha
        return p / p.sum()

    def sample(self, rng: np.random.Generator, n: int, population_size: int, step: int) -> np.ndarray:
        cdf = self._cdf.get(population_size)
        if cdf is None:  # cached per N: a pure function of alpha and N
            cdf = self._cdf[population_size] = np.cumsum(self.probabilities(population_size))
        people = np.searchsorted(cdf, rng.random(n), side="right")  # inverse CDF
        return np.minimum(people, population_size - 1)  # guards the last cdf value's rounding

    def __getstate__(self):  # keep pickles (DataLoader workers) small: the cache is rebuilt
        return {"alpha": self.alpha, "_cdf": {}}

    def __repr__(self) -> str:
        return f"PowerLaw(alpha={self.alpha:g})"


class Celebrities:
    """The first n people ("celebrities") are each drawn `weight` times more often than anyone else."""

    def __init__(self, n: int = 4000, weight: float = 8.0):
        self.n = _positive_int("n", n)
        self.weight = _number("weight", weight, 0.0, strict=True)

    def check(self, population_size: int, batch_size: int) -> None:
        _fits("n", self.n, population_size)

    def probabilities(self, population_size: int) -> np.ndarray:
        p = np.ones(population_size)
        p[:self.n] = self.weight
        return p / p.sum()

    def sample(self, rng: np.random.Generator, n: int, population_size: int, step: int) -> np.ndarray:
        _fits("n", self.n, population_size)
        return piecewise_uniform(rng, n, [0, self.n], [self.n, population_size], [self.weight, 1.0])

    def __repr__(self) -> str:
        return f"Celebrities(n={self.n}, weight={self.weight:g})"


class WarmUp:
    """Uniform on the first k people for `epochs` population-epochs, then uniform on everyone.

    One population-epoch is N / B global steps (N people, B = global batch in biographies, so
    N biographies). Global step s is a warm-up step iff fewer than epochs x N biographies were
    drawn before it, i.e. s x B < epochs x N; the first step on the whole population is
    ceil(epochs x N / B). `batch_size` must be the *global* batch (the YAML interpolates
    ``${data.batch_size}``), not the per-rank share n that ``sample`` receives under DDP.
    """

    def __init__(self, k: int = 8000, epochs: float = 2, batch_size: int = 128):
        self.k = _positive_int("k", k)
        self.epochs = _number("epochs", epochs, 0.0, strict=False)
        self.batch_size = _positive_int("batch_size", batch_size)

    def check(self, population_size: int, batch_size: int) -> None:
        _fits("k", self.k, population_size)
        if self.batch_size != batch_size:
            raise ValueError(f"{KEY}.batch_size={self.batch_size} must equal the global data.batch_size={batch_size}")

    def switch_step(self, population_size: int) -> int:
        """First global step that draws from the whole population."""
        return math.ceil(self.epochs * population_size / self.batch_size)

    def in_warmup(self, step: int, population_size: int) -> bool:
        return step * self.batch_size < self.epochs * population_size

    def sample(self, rng: np.random.Generator, n: int, population_size: int, step: int) -> np.ndarray:
        _fits("k", self.k, population_size)
        high = self.k if self.in_warmup(step, population_size) else population_size
        return rng.integers(0, high, size=n)

    def __repr__(self) -> str:
        return f"WarmUp(k={self.k}, epochs={self.epochs:g}, batch_size={self.batch_size})"


class Sequential:
    """Population split into `groups` contiguous groups, visited in order, `repeats` passes over all groups.

    Group j holds people [floor(j N / g), floor((j + 1) N / g)). Training (`total_steps` global
    steps, the YAML interpolates ``${trainer.max_steps}``) is cut into g x r equal stages; global
    step s is in stage min(floor(s g r / total_steps), g r - 1) and draws uniformly from group
    (stage mod g). So each group gets an equal share of the training (total_steps / (g r) steps,
    i.e. the same number of population-epochs) in each of the r passes; steps past total_steps
    stay on the last group.
    """

    def __init__(self, groups: int = 4, repeats: int = 1, total_steps: int = 16000):
        self.groups = _positive_int("groups", groups)
        self.repeats = _positive_int("repeats", repeats)
        self.total_steps = _positive_int("total_steps", total_steps)
        if self.groups * self.repeats > self.total_steps:
            raise ValueError(f"{KEY}.groups x {KEY}.repeats = {self.groups * self.repeats} exceeds "
                             f"{KEY}.total_steps={self.total_steps} (every stage needs at least one step)")

    def check(self, population_size: int, batch_size: int) -> None:
        _fits("groups", self.groups, population_size)

    def group(self, step: int) -> int:
        stages = self.groups * self.repeats
        return min(step * stages // self.total_steps, stages - 1) % self.groups

    def group_bounds(self, group: int, population_size: int) -> tuple[int, int]:
        return group * population_size // self.groups, (group + 1) * population_size // self.groups

    def sample(self, rng: np.random.Generator, n: int, population_size: int, step: int) -> np.ndarray:
        _fits("groups", self.groups, population_size)
        low, high = self.group_bounds(self.group(step), population_size)
        return rng.integers(low, high, size=n)

    def __repr__(self) -> str:
        return f"Sequential(groups={self.groups}, repeats={self.repeats}, total_steps={self.total_steps})"


class Mixture:
    """Disjoint index ranges [start, stop), each person of range j drawn with per-person weight weights[j].

    The replay primitive for fine-tuning (SPEC section 8): with the old people at [0, N_old) and
    the new people at [N_old, N_old + N_new) of one population, ``Mixture([[0, N_old],
    [N_old, N_old + N_new]], [w, 1])`` draws each old person w times as often as each new person,
    i.e. a fraction w N_old / (w N_old + N_new) of the biographies replays old people; w = 0 is
    fine-tuning without replay. People outside every range are never drawn.
    """

    def __init__(self, ranges: Sequence[Sequence[int]], weights: Sequence[float]):
        ranges = [tuple(r) for r in ranges]
        if any(len(r) != 2 for r in ranges):
            raise ValueError(f"{KEY}.ranges must be [start, stop] pairs, got {[list(r) for r in ranges]}")
        if not ranges or len(ranges) != len(weights):
            raise ValueError(f"{KEY}.ranges and {KEY}.weights must be non-empty and of equal length, "
                             f"got {len(ranges)} ranges and {len(weights)} weights")
        for start, stop in ranges:
            if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer)) and 0 <= start < stop):
                raise ValueError(f"{KEY}.ranges must be [start, stop] pairs with 0 <= start < stop, got {list(ranges)}")
        ordered = sorted(ranges)
        if any(a[1] > b[0] for a, b in zip(ordered, ordered[1:])):
            raise ValueError(f"{KEY}.ranges must not overlap, got {list(ranges)}")
        self.weights = np.array([_number("weights", w, 0.0, strict=False) for w in weights])
        if not self.weights.any():
            raise ValueError(f"{KEY}.weights must have at least one weight > 0, got {list(weights)}")
        self.ranges = [(int(a), int(b)) for a, b in ranges]

    def check(self, population_size: int, batch_size: int) -> None:
        stop = max(b for _, b in self.ranges)
        if stop > population_size:
            raise ValueError(f"{KEY}.ranges end at {stop}, beyond data.population_size={population_size}")

    def probabilities(self, population_size: int) -> np.ndarray:
        p = np.zeros(population_size)
        for (a, b), w in zip(self.ranges, self.weights):
            p[a:b] = w
        return p / p.sum()

    def sample(self, rng: np.random.Generator, n: int, population_size: int, step: int) -> np.ndarray:
        self.check(population_size, 0)
        return piecewise_uniform(rng, n, [a for a, _ in self.ranges], [b for _, b in self.ranges], self.weights)

    def __repr__(self) -> str:
        return f"Mixture(ranges={[list(r) for r in self.ranges]}, weights={self.weights.tolist()})"
