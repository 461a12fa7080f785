"""Populations of fictional people: unique full names, six uniform attributes, template splits.

SPEC sections 1-2. A population is a pure function of (pool files, size, population seed): the
training seed never touches it, so "same people, different training seed" is one override. The
held-out ("unseen") people share the pools but no full name with the seen ones; they are drawn from
their own random stream, so changing their number never changes the seen population.

    seen, unseen = make_populations(load_pools(), size=2048, n_unseen=512, seed=0)
    seen.values[7, 2]           # pool index of person 7's third attribute (ATTRIBUTES order)
    seen.template_perm[7, 2]    # permutation of the 25 templates: [:n_train] train, [-5:] eval
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biolab.data.pools import Pools
from biolab.data.templates import ATTRIBUTES, TEMPLATES

N_TEMPLATES = 25       # per attribute (SPEC section 2)
N_EVAL_TEMPLATES = 5   # the last 5 of each person's permutation; never used for training


@dataclass(frozen=True)
class Population:
    names: np.ndarray          # [people, 3] int: given-name, given-name (middle), surname indices
    values: np.ndarray         # [people, 6] int: pool index of each attribute, ATTRIBUTES order
    template_perm: np.ndarray  # [people, 6, 25] int8: per-(person, attribute) template order

    def __len__(self) -> int:
        return len(self.names)

    def full_name(self, pools: Pools, person: int) -> str:
        first, middle, last = self.names[person]
        return f"{pools.given_names[first]} {pools.given_names[middle]} {pools.surnames[last]}"


def _draw_unique_names(rng: np.random.Generator, n: int, sizes: tuple[int, int, int],
                       taken: np.ndarray | None = None) -> np.ndarray:
    """Draw n distinct full-name codes (first*G*S + middle*S + last), none in `taken`."""
    g, _, s = sizes
    codes = np.empty(0, dtype=np.int64)
    excluded = np.empty(0, dtype=np.int64) if taken is None else np.asarray(taken, dtype=np.int64)
    while len(codes) < n:
        draw = rng.integers(0, g * g * s, size=max(1024, 2 * (n - len(codes))), dtype=np.int64)
        draw = draw[~np.isin(draw, excluded) & ~np.isin(draw, codes)]
        _, first_seen = np.unique(draw, return_index=True)        # keep draw order, drop repeats
        codes = np.concatenate([codes, draw[np.sort(first_seen)]])
    return codes[:n]


def _codes_to_names(codes: np.ndarray, sizes: tuple[int, int, int]) -> np.ndarray:
    g, _, s = sizes
    first, rest = np.divmod(codes, g * s)
    middle, last = np.divmod(rest, s)
    return np.stack([first, middle, last], axis=1).astype(np.int32)  # [people, 3]


def _draw_people(rng: np.random.Generator, name_codes: np.ndarray, pools: Pools,
                 sizes: tuple[int, int, int]) -> Population:
    n = len(name_codes)
    values = np.stack([rng.integers(0, pools.size(a), size=n) for a in ATTRIBUTES], axis=1)
    base = np.broadcast_to(np.arange(N_TEMPLATES, dtype=np.int8), (n, len(ATTRIBUTES), N_TEMPLATES))
    perm = rng.permuted(base, axis=-1)  # [people, 6, 25], an independent shuffle per (person, attribute)
    return Population(_codes_to_names(name_codes, sizes), values.astype(np.int32), perm)


def make_populations(pools: Pools, size: int, n_unseen: int, seed: int) -> tuple[Population, Population]:
    """Seen population of `size` people and a disjoint unseen one of `n_unseen` people."""
    assert all(len(t) == N_TEMPLATES for t in TEMPLATES.values()), "every attribute needs 25 templates"
    if size < 1 or n_unseen < 0:
        raise ValueError(f"population sizes must be positive, got size={size}, n_unseen={n_unseen}")
    sizes = (len(pools.given_names), len(pools.given_names), len(pools.surnames))
    if size + n_unseen > pools.name_space:
        raise ValueError(f"{size} + {n_unseen} people exceed the {pools.name_space} distinct full names")
    seen_rng, unseen_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    seen_codes = _draw_unique_names(seen_rng, size, sizes)
    seen = _draw_people(seen_rng, seen_codes, pools, sizes)
    unseen_codes = _draw_unique_names(unseen_rng, n_unseen, sizes, taken=seen_codes)
    unseen = _draw_people(unseen_rng, unseen_codes, pools, sizes)
    return seen, unseen
