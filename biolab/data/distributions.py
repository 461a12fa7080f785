"""Individual distributions: which people the training stream draws (SPEC section 8).

A distribution is any object with ``sample(rng, n, population_size, step) -> int array [n]``;
configs select one with ``data.distribution._target_``. Sampling must depend only on its
arguments so the training stream stays a pure function of (seed, step, rank). Evaluation is
always uniform over the whole population, whatever the training distribution.
"""

from __future__ import annotations

import numpy as np


class Uniform:
    """Every person equally likely (the paper's default)."""

    def sample(self, rng: np.random.Generator, n: int, population_size: int, step: int) -> np.ndarray:
        return rng.integers(0, population_size, size=n)

    def __repr__(self) -> str:
        return "Uniform()"
