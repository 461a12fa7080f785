"""New people for fine-tuning, the joint old+new training population, population fingerprints (SPEC section 8).

Fine-tuning adds M new people to a trained model. They are drawn from the same pools as the seen
("old") and held-out ("unseen") people, from their own random stream of the population seed
(stream 2; streams 0 and 1 draw the seen and unseen people), and share no full name with either,
so adding them never changes the old or the unseen people. They are a pure function of
(pool files, population_size, n_unseen, n_new_people, data seed). Sets of new people for
different M are not nested (each M is its own draw).

The fine-tuning stream trains on one population: the old people first, then the new ones
(indices [0, N) and [N, N + M)), drawn with ``biolab.data.distributions.Mixture`` (replay).
``BioDataModule(n_new_people=M, replay_weight=w)`` does this; usable alone:

    seen, unseen = make_populations(load_pools(), 512, 64, seed=0)
    new = make_new_population(load_pools(), seen, unseen, 128, seed=0)
    both = concat_populations(seen, new)     # 640 people, old first
    population_fingerprint(seen)             # hex digest: "are these the same people?"

With ``unknown_answer`` (docs/unknown_answer.md) the new people are trained with every value replaced by
the UNKNOWN token (``answered_unknown``): people the model must learn to answer "unknown" about.
"""

from __future__ import annotations

import hashlib

import numpy as np

from biolab.data.pools import Pools
from biolab.data.population import Population, _draw_people, _draw_unique_names

NEW_PEOPLE_STREAM = 2


def _name_codes(population: Population, sizes: tuple[int, int, int]) -> np.ndarray:
    g, _, s = sizes
    names = population.names.astype(np.int64)
    return names[:, 0] * g * s + names[:, 1] * s + names[:, 2]


def make_new_population(pools: Pools, seen: Population, unseen: Population, n_new: int, seed: int) -> Population:
    """`n_new` people disjoint (by full name) from `seen` and `unseen`, fixed by the population seed."""
    if n_new < 1:
        raise ValueError(f"data.n_new_people must be a positive integer, got {n_new!r}")
    sizes = (len(pools.given_names), len(pools.given_names), len(pools.surnames))
    taken = np.concatenate([_name_codes(seen, sizes), _name_codes(unseen, sizes)])
    rng = np.random.default_rng([seed, NEW_PEOPLE_STREAM])
    codes = _draw_unique_names(rng, n_new, sizes, taken=taken)
    return _draw_people(rng, codes, pools, sizes)


def concat_populations(first: Population, second: Population) -> Population:
    """One population: the people of `first` (indices [0, len(first))), then those of `second`."""
    return Population(np.concatenate([first.names, second.names]), np.concatenate([first.values, second.values]),
                      np.concatenate([first.template_perm, second.template_perm]))


def answered_unknown(population: Population, builder) -> Population:
    """The same people with every value of the data's attributes replaced by the UNKNOWN answer (the index
    just past each pool, which biolab.data.biographies.BiographyBuilder renders as the UNKNOWN token)."""
    values = population.values.copy()                                     # [people, 6]
    for a, column in enumerate(builder.attr_columns):
        values[:, column] = builder.unknown_index[a]
    return Population(population.names, values, population.template_perm)


def population_fingerprint(population: Population) -> str:
    """SHA-256 of names, values and template splits: equal digests mean the same people, facts and splits."""
    digest = hashlib.sha256()
    for array in (population.names, population.values, population.template_perm):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
