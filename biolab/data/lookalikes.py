"""Look-alike people for knowledge overshadowing (SPEC section 9.1; PhantomCircuit, arXiv 2505.14406).

A pair is a dominant person and a rare person who share most of their name and none of their facts.
The dominant person is drawn P times as often as an ordinary person, the rare one as often as an
ordinary person; overshadowing is the rare person's question answered with the dominant's value.

    spec = LookalikeSpec(levels=(1, 2, 4, 8, 16, 32), pairs_per_level=8)
    seen, pairs = add_lookalikes(seen, unseen, pools, value_first, spec, seed=0)
    pairs.dominant[i], pairs.rare[i], pairs.level[i], pairs.kind[i]   # person indices, P, "pair"...
    distribution = spec.distribution(len(seen))                         # who the training stream draws

Kinds of pair: "pair" (the rare person has the dominant's first name and surname and another middle
name: the middle name is the only token that tells them apart), and the controls "first_name"
(only the first name shared) and "surname" (only the surname shared), at `control_levels`. Every
attribute value differs between the two, and so does its first token (the answers are scored on
it). Full names stay unique among the seen and the unseen people.

The pairs are the first people of the seen population: dominants at [0, K), rares at [K, 2K), in the
order of ``LookalikeSpec.plan()``; they count in N. Only the rare people's names and values are
redrawn (their own random stream of the population seed), so every other person is the one the
population has without look-alikes, and everything stays a pure function of the seeds. Configured by
``data/lookalikes=overshadowing`` (conf/data/lookalikes/), read by BioDataModule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biolab.data.distributions import Mixture
from biolab.data.new_people import _name_codes
from biolab.data.pools import Pools
from biolab.data.population import Population
from biolab.data.templates import ATTRIBUTES

KEY = "data.lookalikes"
KINDS = ("pair", "first_name", "surname")
LOOKALIKE_STREAM = 5  # random stream of the population seed (0-2: seen, unseen, new people)


@dataclass(frozen=True)
class LookalikeSpec:
    levels: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # popularity ratios P of the dominant person
    pairs_per_level: int = 8
    control_levels: tuple[int, ...] = (32,)          # levels that also get first-name-only and surname-only pairs
    control_pairs_per_level: int = 8

    @classmethod
    def from_config(cls, config) -> LookalikeSpec:
        """From data.lookalikes (a mapping); ValueError naming the key on a bad value."""
        config = dict(config)
        unknown = sorted(set(config) - {"levels", "pairs_per_level", "control_levels", "control_pairs_per_level"})
        if unknown:
            raise ValueError(f"{KEY}: unknown key(s) {unknown}; allowed: levels, pairs_per_level, control_levels, "
                             f"control_pairs_per_level")
        spec = cls(**{k: tuple(v) if k.endswith("levels") else v for k, v in config.items()})
        spec.check()
        return spec

    def check(self) -> None:
        for key in ("levels", "control_levels"):
            values = getattr(self, key)
            if key == "levels" and not values:
                raise ValueError(f"{KEY}.levels must list at least one popularity ratio P >= 1")
            for p in values:
                if isinstance(p, bool) or not isinstance(p, (int, float)) or not np.isfinite(p) or p < 1:
                    raise ValueError(f"{KEY}.{key}: every popularity ratio P must be a number >= 1, got {p!r}")
            if len(set(values)) != len(values):
                raise ValueError(f"{KEY}.{key} lists a level twice: {list(values)}")
        for key in ("pairs_per_level", "control_pairs_per_level"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "pairs_per_level" else 0):
                raise ValueError(f"{KEY}.{key} must be an integer >= {1 if key == 'pairs_per_level' else 0}, "
                                 f"got {value!r}")

    def plan(self) -> list[tuple[str, float]]:
        """(kind, level) of every pair, in index order."""
        rows = [("pair", float(p)) for p in self.levels for _ in range(self.pairs_per_level)]
        for kind in KINDS[1:]:
            rows += [(kind, float(p)) for p in self.control_levels for _ in range(self.control_pairs_per_level)]
        return rows

    @property
    def n_people(self) -> int:
        return 2 * len(self.plan())

    def distribution(self, population_size: int) -> Mixture:
        """Per-person weights: the dominant of a level-P pair (indices [0, K)) weight P, everyone else
        (the rare people included) weight 1."""
        levels = [p for _, p in self.plan()]
        ranges = [[i, i + 1] for i in range(len(levels))] + [[len(levels), population_size]]
        return Mixture(ranges, levels + [1.0])


@dataclass(frozen=True)
class LookalikePairs:
    dominant: np.ndarray  # [pairs] person index of the dominant person
    rare: np.ndarray      # [pairs] person index of the rare person
    level: np.ndarray     # [pairs] float: P, how many times as often as an ordinary person the dominant is drawn
    kind: np.ndarray      # [pairs] str: "pair", "first_name", "surname"

    def __len__(self) -> int:
        return len(self.dominant)


def add_lookalikes(seen: Population, unseen: Population, pools: Pools, value_first: list[np.ndarray],
                   spec: LookalikeSpec, seed: int) -> tuple[Population, LookalikePairs]:
    """The seen population with its first 2K people made into K pairs (see the module docstring).
    value_first[a][v]: first token of value v of ATTRIBUTES[a]."""
    plan = spec.plan()
    k = len(plan)
    if 2 * k > len(seen):
        raise ValueError(f"{KEY} makes {2 * k} look-alike people, more than data.population_size={len(seen)}")
    rng = np.random.default_rng([seed, LOOKALIKE_STREAM])
    sizes = (len(pools.given_names), len(pools.given_names), len(pools.surnames))
    g, _, s = sizes
    names, values = seen.names.copy(), seen.values.copy()
    codes = _name_codes(seen, sizes)
    taken = set(codes.tolist()) | set(_name_codes(unseen, sizes).tolist())
    for i, (kind, _) in enumerate(plan):
        first, middle, last = (int(x) for x in names[i])
        taken.discard(int(codes[k + i]))  # the rare person's old name is free again
        for _ in range(10_000):  # another middle name; the controls also another surname / first name
            new = [first, int(rng.integers(g)), last]
            if kind == "first_name":
                new[2] = int(rng.integers(s))
            elif kind == "surname":
                new[0] = int(rng.integers(g))
            code = new[0] * g * s + new[1] * s + new[2]
            shares_only = {"pair": True, "first_name": new[2] != last, "surname": new[0] != first}[kind]
            if new[1] != middle and shares_only and code not in taken:
                break
        else:
            raise ValueError(f"{KEY}: no free full name for a look-alike of person {i} (name space exhausted)")
        taken.add(code)
        names[k + i] = new
        for a, attribute in enumerate(ATTRIBUTES):
            differs = np.flatnonzero(value_first[a] != value_first[a][values[i, a]])
            if len(differs) == 0:
                raise ValueError(f"{KEY}: every {attribute} value starts with the same token; pairs need two")
            values[k + i, a] = differs[rng.integers(len(differs))]
    pairs = LookalikePairs(dominant=np.arange(k), rare=np.arange(k, 2 * k),
                           level=np.array([p for _, p in plan]), kind=np.array([kind for kind, _ in plan]))
    return Population(names, values, seen.template_perm), pairs
