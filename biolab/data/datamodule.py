"""Streaming biography data for Lightning: fresh training biographies, fixed evaluation sets.

Training batches are a pure function of (training seed, step, rank): batch k of rank r is built
from ``np.random.default_rng([seed, r, k])``, so a resumed run or a DDP rank regenerates exactly the
same biographies without any saved data state. Evaluation sets are fixed sequences built once
from the population seed (the same for every training seed):

    val             seen people, evaluation templates (unseen wordings)      -> val/...
    train_templates seen people, training templates                         -> train_templates/...
    unseen          held-out people (never trained on)                        -> unseen/...

Built by ``train(cfg)`` from ``conf/data/*.yaml``; usable alone:

    dm = BioDataModule(population_size=512, n_unseen=64, eval_size=64, batch_size=16)
    dm.setup()
    batch = dm.train_batch(step=0)   # dict of tensors, see biolab.data.biographies
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from biolab.data.biographies import BiographyBuilder
from biolab.data.distributions import Uniform
from biolab.data.pools import POOL_DIR, load_pools
from biolab.data.population import N_EVAL_TEMPLATES, N_TEMPLATES, Population, make_populations
from biolab.data.templates import ATTRIBUTES
from biolab.data.tokenizer import WordTokenizer

EVAL_SETS = ("val", "train_templates", "unseen")


class ConfigError(ValueError):
    """A bad configuration value, reported before any work starts."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def sentence_order(rng: np.random.Generator, n: int, n_attr: int, shuffle: bool) -> np.ndarray:
    """[n, attrs] order of the sentences in each biography (random per biography, or fixed)."""
    if shuffle:
        return np.argsort(rng.random((n, n_attr)), axis=1)
    return np.broadcast_to(np.arange(n_attr), (n, n_attr))


def template_ids(population, people: np.ndarray, attributes: tuple[str, ...], slots: np.ndarray) -> np.ndarray:
    """slots [n, attrs] positions in each person's template permutation -> template ids [n, attrs]."""
    columns = np.array([ATTRIBUTES.index(a) for a in attributes])
    return population.template_perm[people[:, None], columns[None, :], slots]


@dataclass
class TrainBatches:
    """Makes training batch `step` of one rank; picklable, so DataLoader workers can use it."""

    builder: BiographyBuilder
    population: Population
    distribution: object
    attributes: tuple[str, ...]
    n_train_templates: int
    shuffle_sentences: bool
    batch_size: int  # per rank
    seed: int
    rank: int = 0

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, step])
        n, n_attr = self.batch_size, len(self.attributes)
        people = self.distribution.sample(rng, n, len(self.population), step)
        slots = rng.integers(0, self.n_train_templates, size=(n, n_attr))
        templates = template_ids(self.population, people, self.attributes, slots)
        order = sentence_order(rng, n, n_attr, self.shuffle_sentences)
        return self.builder.collate(self.builder.build(self.population, people, templates, order))


class TrainStream(IterableDataset):
    """Infinite stream of training batches from `start_step` (the restored step on resume)."""

    def __init__(self, make_batch: TrainBatches, start_step: int = 0):
        self.make_batch, self.start_step = make_batch, start_step

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        offset, stride = (0, 1) if worker is None else (worker.id, worker.num_workers)
        step = self.start_step + offset
        while True:  # workers interleave steps; the DataLoader returns them in step order
            yield self.make_batch(step)
            step += stride


class BioDataModule(L.LightningDataModule):
    """Population, tokenizer, training stream and evaluation sets (sizes are in sequences)."""

    def __init__(self, population_size: int = 64_000, seed: int = 0, n_unseen: int = 16_000,
                 attributes: list[str] | tuple[str, ...] = ATTRIBUTES, n_train_templates: int = 20,
                 shuffle_sentences: bool = True, batch_size: int = 128, eval_size: int = 16_000,
                 train_template_eval_size: int = 2_000, unseen_eval_size: int = 2_000,
                 eval_batch_size: int = 256, num_workers: int = 0, distribution=None,
                 train_seed: int = 0, pool_dir: str | None = None):
        super().__init__()
        attributes = tuple(attributes)
        unknown = [a for a in attributes if a not in ATTRIBUTES]
        _check(not unknown, f"data.attributes: unknown attribute(s) {unknown}; allowed: {list(ATTRIBUTES)}")
        _check(len(attributes) > 0 and len(set(attributes)) == len(attributes),
               f"data.attributes must be a non-empty list without repeats, got {list(attributes)}")
        for key, value in (("population_size", population_size), ("batch_size", batch_size),
                           ("eval_size", eval_size), ("eval_batch_size", eval_batch_size)):
            _check(isinstance(value, int) and value > 0, f"data.{key} must be a positive integer, got {value!r}")
        for key, value in (("n_unseen", n_unseen), ("train_template_eval_size", train_template_eval_size),
                           ("unseen_eval_size", unseen_eval_size), ("num_workers", num_workers)):
            _check(isinstance(value, int) and value >= 0, f"data.{key} must be an integer >= 0, got {value!r}")
        max_train = N_TEMPLATES - N_EVAL_TEMPLATES
        _check(isinstance(n_train_templates, int) and 1 <= n_train_templates <= max_train,
               f"data.n_train_templates must be in 1..{max_train} (25 templates, 5 kept for evaluation), "
               f"got {n_train_templates!r}")
        _check(not (unseen_eval_size > 0 and n_unseen == 0),
               "data.unseen_eval_size > 0 needs data.n_unseen > 0 held-out people")
        self.pools = load_pools(pool_dir or POOL_DIR)
        _check(population_size + n_unseen <= self.pools.name_space,
               f"data.population_size + data.n_unseen = {population_size + n_unseen} exceeds the "
               f"{self.pools.name_space} distinct full names the pools allow")
        self.population_size, self.seed, self.n_unseen = population_size, seed, n_unseen
        self.attributes, self.n_train_templates = attributes, n_train_templates
        self.shuffle_sentences, self.batch_size, self.num_workers = shuffle_sentences, batch_size, num_workers
        self.eval_sizes = {"val": eval_size, "train_templates": train_template_eval_size,
                           "unseen": unseen_eval_size}
        self.eval_batch_size, self.train_seed = eval_batch_size, train_seed
        self.distribution = distribution if distribution is not None else Uniform()
        if hasattr(self.distribution, "check"):  # population- and batch-dependent arguments
            try:
                self.distribution.check(population_size, batch_size)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        self.tokenizer = WordTokenizer.from_pools(self.pools)
        self.rank, self.world_size = 0, 1
        self._ready = False

    # ---- set-up ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def baseline(self) -> float:
        return self.pools.baseline(self.attributes)

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        _check(self.batch_size % self.world_size == 0,
               f"data.batch_size={self.batch_size} must be divisible by the {self.world_size} devices")
        if not self._ready:
            self.seen, self.unseen = make_populations(self.pools, self.population_size, self.n_unseen, self.seed)
            self.builder = BiographyBuilder(self.pools, self.tokenizer, self.attributes)
            self.eval_batches = {name: self._make_eval_set(name) for name in EVAL_SETS if self.eval_sizes[name]}
            self._ready = True
        self.train_batches = TrainBatches(
            self.builder, self.seen, self.distribution, self.attributes, self.n_train_templates,
            self.shuffle_sentences, self.batch_size // self.world_size, self.train_seed, self.rank)

    # ---- sampling ----------------------------------------------------------------------------
    def train_batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's share of global batch `step`: a pure function of (train_seed, step, rank)."""
        return self.train_batches(step)

    def _make_eval_set(self, name: str) -> list[dict[str, torch.Tensor]]:
        return self.fixed_batches(name, self.eval_sizes[name])

    def fixed_batches(self, name: str, n: int, with_roles: bool = False) -> list[dict[str, torch.Tensor]]:
        """n fixed sequences of set `name` (EVAL_SETS, or "attention": seen people, training templates),
        drawn uniformly over the population from the population seed, in batches of eval_batch_size."""
        stream = EVAL_SETS.index(name) + 1 if name in EVAL_SETS else 1000
        rng = np.random.default_rng([self.seed, 1000 + stream])  # fixed by the population seed
        population = self.unseen if name == "unseen" else self.seen
        n_attr = len(self.attributes)
        people = rng.integers(0, len(population), size=n)  # uniform over the whole population
        if name in ("train_templates", "attention"):
            slots = rng.integers(0, self.n_train_templates, size=(n, n_attr))
        else:
            slots = rng.integers(N_TEMPLATES - N_EVAL_TEMPLATES, N_TEMPLATES, size=(n, n_attr))
        templates = template_ids(population, people, self.attributes, slots)
        order = sentence_order(rng, n, n_attr, self.shuffle_sentences)
        sequences = self.builder.build(population, people, templates, order, with_roles=with_roles)
        size = self.eval_batch_size
        return [self.builder.collate(sequences[i:i + size]) for i in range(0, n, size)]

    # ---- Lightning hooks ---------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        start = self.trainer.global_step if self.trainer is not None else 0  # restored on resume
        return DataLoader(TrainStream(self.train_batches, start), batch_size=None, num_workers=self.num_workers,
                          persistent_workers=False)
