"""Streaming biography data for Lightning: fresh training biographies, fixed evaluation sets.

Training batches are a pure function of (training seed, step, rank): batch k of rank r is built
from ``np.random.default_rng([seed, r, k])``, so a resumed run or a DDP rank regenerates exactly the
same biographies without any saved data state. Evaluation sets are fixed sequences built once
from the population seed (the same for every training seed):

    val             seen people, evaluation templates (unseen wordings)      -> val/...
    train_templates seen people, training templates                         -> train_templates/...
    unseen          held-out people (never trained on)                        -> unseen/...
    new             fine-tuning only: new people, evaluation templates       -> new/...
    test            optional (test_eval_size > 0): seen people outside the val set's sample, evaluation
                    templates: a held-out set for reporting settings chosen on val -> test/...

Fine-tuning (SPEC section 8; docs/finetuning.md): with ``n_new_people=M`` the module adds M new
people (biolab.data.new_people), trains on the old people followed by the new ones with the replay
mixture (each old person drawn ``replay_weight`` times as often as each new one; 0 = no replay)
and adds the "new" evaluation set; the old sets ("val", ...) stay exactly those of pre-training.
With ``unknown_answer=True`` (docs/unknown_answer.md) the vocabulary gains the UNKNOWN token (last id) and
the new people are trained with every value replaced by it: a model taught to answer "unknown" about
people it does not know, tested on the held-out "unseen" people (metric ``unseen/unknown_rate``).

Knowledge overshadowing (SPEC section 9.1; docs/overshadowing.md): ``lookalikes`` (the group
``data/lookalikes``) makes the first people of the population into dominant/rare look-alike pairs
(biolab.data.lookalikes, available as ``dm.lookalikes`` after set-up) and draws each dominant person
P times as often as an ordinary one.

Static shapes (GPU runs with torch.compile): ``pad_to`` pads every training and evaluation batch to a
fixed input length ("max": the longest biography of the data; an integer; or a list of length
buckets, each batch padded to the shortest that holds it) instead of the batch's longest sequence;
padding is masked out of the loss and the metrics. The padding waste is printed at set-up and kept
in ``dm.padding``. ``device_batches`` assembles the training batches with torch ops on the training
device (biolab.data.device_batches), from the same random draws: the same batches.

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
from biolab.data.distributions import Mixture, Uniform
from biolab.data.lookalikes import LookalikeSpec, add_lookalikes
from biolab.data.new_people import answered_unknown, concat_populations, make_new_population, population_fingerprint
from biolab.data.padding import padding_report, static_lengths
from biolab.data.pools import POOL_DIR, load_pools
from biolab.data.population import N_EVAL_TEMPLATES, N_TEMPLATES, Population, make_populations
from biolab.data.templates import ATTRIBUTES
from biolab.data.tokenizer import UNKNOWN, WordTokenizer
from biolab.errors import ConfigError

EVAL_SETS = ("val", "train_templates", "unseen")
NEW_SET = "new"          # fine-tuning: new people, evaluation templates
NEW_SET_STREAM = 4       # its random stream (EVAL_SETS use 1-3, the attention set 1000)
TEST_SET = "test"        # held-out reporting set: seen people not in the val sample, evaluation templates
TEST_SET_STREAM = 5


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
    pad_lengths: tuple[int, ...] = ()  # static input lengths (data.pad_to); () = the batch's longest

    def draw(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The random choices of batch `step`: people [n], template ids [n, attrs], sentence order [n, attrs]."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        n, n_attr = self.batch_size, len(self.attributes)
        people = self.distribution.sample(rng, n, len(self.population), step)
        slots = rng.integers(0, self.n_train_templates, size=(n, n_attr))
        templates = template_ids(self.population, people, self.attributes, slots)
        order = sentence_order(rng, n, n_attr, self.shuffle_sentences)
        return people, templates, order

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        sequences = self.builder.build(self.population, *self.draw(step))
        return self.builder.collate(sequences, self.pad_lengths)


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
                 train_seed: int = 0, pool_dir: str | None = None, n_new_people: int = 0,
                 replay_weight: float = 0.0, new_eval_size: int | None = None, lookalikes=None,
                 pad_to=None, device_batches: bool = False, unknown_answer: bool = False,
                 test_eval_size: int = 0):
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
                           ("unseen_eval_size", unseen_eval_size), ("num_workers", num_workers),
                           ("test_eval_size", test_eval_size)):
            _check(isinstance(value, int) and value >= 0, f"data.{key} must be an integer >= 0, got {value!r}")
        max_train = N_TEMPLATES - N_EVAL_TEMPLATES
        _check(isinstance(n_train_templates, int) and 1 <= n_train_templates <= max_train,
               f"data.n_train_templates must be in 1..{max_train} (25 templates, 5 kept for evaluation), "
               f"got {n_train_templates!r}")
        _check(not (unseen_eval_size > 0 and n_unseen == 0),
               "data.unseen_eval_size > 0 needs data.n_unseen > 0 held-out people")
        new_eval_size = eval_size if new_eval_size is None else new_eval_size
        self._check_finetuning(n_new_people, replay_weight, new_eval_size, distribution)
        self.pools = load_pools(pool_dir or POOL_DIR)
        _check(population_size + n_unseen + n_new_people <= self.pools.name_space,
               f"data.population_size + data.n_unseen{' + data.n_new_people' if n_new_people else ''} = "
               f"{population_size + n_unseen + n_new_people} exceeds the "
               f"{self.pools.name_space} distinct full names the pools allow")
        self.population_size, self.seed, self.n_unseen = population_size, seed, n_unseen
        self.attributes, self.n_train_templates = attributes, n_train_templates
        self.shuffle_sentences, self.batch_size, self.num_workers = shuffle_sentences, batch_size, num_workers
        self.eval_sizes = {"val": eval_size, "train_templates": train_template_eval_size,
                           "unseen": unseen_eval_size, NEW_SET: new_eval_size if n_new_people else 0,
                           TEST_SET: test_eval_size}
        self.eval_batch_size, self.train_seed = eval_batch_size, train_seed
        _check(not test_eval_size or len(self._outside_val(population_size)) > 0,
               f"data.test_eval_size: the val set's {eval_size} draws cover all {population_size} seen people; "
               "no one is left for a held-out test set (lower data.eval_size)")
        self.n_new_people, self.replay_weight = n_new_people, float(replay_weight)
        self.distribution = distribution if distribution is not None else Uniform()
        self.lookalike_spec = self._check_lookalikes(lookalikes, population_size, n_new_people, distribution)
        if self.lookalike_spec:  # dominants at [0, K) drawn P times as often
            self.distribution = self.lookalike_spec.distribution(population_size)
        if n_new_people:  # old people [0, N), then new people [N, N + M)
            total = population_size + n_new_people
            self.distribution = Mixture([[0, population_size], [population_size, total]], [self.replay_weight, 1.0])
        if hasattr(self.distribution, "check"):  # population- and batch-dependent arguments
            try:
                self.distribution.check(population_size + n_new_people, batch_size)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        _check(isinstance(unknown_answer, bool), f"data.unknown_answer must be true or false, got {unknown_answer!r}")
        _check(not unknown_answer or n_new_people > 0, "data.unknown_answer=true needs data.n_new_people > 0: the "
               "new people are the ones taught to be answered <unknown> (docs/unknown_answer.md)")
        self.unknown_answer = unknown_answer
        self.tokenizer = WordTokenizer.from_pools(self.pools, extra=(UNKNOWN,) if unknown_answer else ())
        self.pad_lengths = static_lengths(pad_to, self.max_input_length)
        _check(isinstance(device_batches, bool), f"data.device_batches must be true or false, got {device_batches!r}")
        _check(not (device_batches and num_workers), "data.device_batches builds batches in the training process: "
               f"set data.num_workers=0 (got {num_workers})")
        self.device_batches, self.padding = device_batches, {}
        self.rank, self.world_size = 0, 1
        self._ready = False

    @staticmethod
    def _check_finetuning(n_new_people, replay_weight, new_eval_size, distribution) -> None:
        _check(isinstance(n_new_people, int) and not isinstance(n_new_people, bool) and n_new_people >= 0,
               f"data.n_new_people must be an integer >= 0, got {n_new_people!r}")
        _check(isinstance(replay_weight, (int, float)) and not isinstance(replay_weight, bool)
               and np.isfinite(replay_weight) and replay_weight >= 0,
               f"data.replay_weight must be a finite number >= 0, got {replay_weight!r}")
        _check(isinstance(new_eval_size, int) and new_eval_size >= 0,
               f"data.new_eval_size must be an integer >= 0 (null: data.eval_size), got {new_eval_size!r}")
        if n_new_people == 0:
            _check(replay_weight == 0, f"data.replay_weight={replay_weight} needs data.n_new_people > 0 new people")
        else:
            _check(distribution is None or isinstance(distribution, Uniform),
                   f"data.distribution must be uniform when data.n_new_people > 0 (the replay mixture of "
                   f"data.replay_weight decides who is drawn), got {distribution!r}")

    @staticmethod
    def _check_lookalikes(lookalikes, population_size, n_new_people, distribution) -> LookalikeSpec | None:
        if lookalikes is None:
            return None
        try:
            spec = LookalikeSpec.from_config(lookalikes)
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from None
        _check(spec.n_people <= population_size, f"data.lookalikes makes {spec.n_people} look-alike people, more "
               f"than data.population_size={population_size} (they count in N)")
        _check(n_new_people == 0, "data.lookalikes cannot be combined with fine-tuning (data.n_new_people > 0)")
        _check(distribution is None or isinstance(distribution, Uniform),
               f"data.lookalikes needs the uniform data.distribution (it sets who is drawn), got {distribution!r}")
        return spec

    # ---- set-up ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def unknown_id(self) -> int | None:
        """Token id of the "unknown" answer (data.unknown_answer), else None."""
        return self.tokenizer.stoi.get(UNKNOWN)

    @property
    def max_input_length(self) -> int:
        """The longest model input a biography of this data can be (tokens): model.max_seq_len must reach it."""
        return self._builder().max_length() - 1  # the model reads a sequence without its last token

    def _builder(self) -> BiographyBuilder:
        if getattr(self, "builder", None) is None:
            self.builder = BiographyBuilder(self.pools, self.tokenizer, self.attributes)
        return self.builder

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
            self.lookalikes = None
            if self.lookalike_spec:
                value_first = [np.array([self.tokenizer.encode(v)[0] for v in self.pools.values(a)])
                               for a in ATTRIBUTES]
                self.seen, self.lookalikes = add_lookalikes(self.seen, self.unseen, self.pools, value_first,
                                                            self.lookalike_spec, self.seed)
            self.train_population = self.seen
            if self.n_new_people:
                self.new = make_new_population(self.pools, self.seen, self.unseen, self.n_new_people, self.seed)
                if self.unknown_answer:  # taught to be answered <unknown>
                    self.new = answered_unknown(self.new, self._builder())
                self.train_population = concat_populations(self.seen, self.new)
            self.fingerprint = population_fingerprint(self.seen)
            self._builder()
            self.eval_batches = {name: self._make_eval_set(name) for name in (*EVAL_SETS, NEW_SET, TEST_SET)
                                 if self.eval_sizes[name]}
            self._ready = True
        self.train_batches = TrainBatches(
            self.builder, self.train_population, self.distribution, self.attributes, self.n_train_templates,
            self.shuffle_sentences, self.batch_size // self.world_size, self.train_seed, self.rank, self.pad_lengths)
        if self.pad_lengths and not self.padding:  # the first 16 training batches and the evaluation sets
            evaluation = [b for batches in self.eval_batches.values() for b in batches]
            self.padding = padding_report([self.train_batches(k) for k in range(16)], evaluation)
            if self.rank == 0:
                print(f"padding to {list(self.pad_lengths)} (data.pad_to): " + ", ".join(
                    f"{k} {v:.1%}" for k, v in self.padding.items()), flush=True)

    # ---- sampling ----------------------------------------------------------------------------
    def train_batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's share of global batch `step`: a pure function of (train_seed, step, rank)."""
        return self.train_batches(step)

    def _make_eval_set(self, name: str) -> list[dict[str, torch.Tensor]]:
        return self.fixed_batches(name, self.eval_sizes[name], pad=True)

    def fixed_batches(self, name: str, n: int, with_roles: bool = False,
                      pad: bool = False) -> list[dict[str, torch.Tensor]]:
        """n fixed sequences of set `name` (EVAL_SETS, "new": new people, "test": seen people outside the val
        sample, or "attention": seen people, training templates), drawn uniformly over the population from the
        population seed, in batches of eval_batch_size; with `pad`, padded to the static lengths of data.pad_to."""
        rng = self._eval_rng(name)
        population = {"unseen": self.unseen, NEW_SET: getattr(self, "new", None)}.get(name, self.seen)
        n_attr = len(self.attributes)
        people = self._eval_people(rng, name, n, len(population))
        if name in ("train_templates", "attention"):
            slots = rng.integers(0, self.n_train_templates, size=(n, n_attr))
        else:
            slots = rng.integers(N_TEMPLATES - N_EVAL_TEMPLATES, N_TEMPLATES, size=(n, n_attr))
        templates = template_ids(population, people, self.attributes, slots)
        order = sentence_order(rng, n, n_attr, self.shuffle_sentences)
        sequences = self.builder.build(population, people, templates, order, with_roles=with_roles)
        size = self.eval_batch_size
        lengths = self.pad_lengths if pad else ()
        return [self.builder.collate(sequences[i:i + size], lengths) for i in range(0, n, size)]

    def _eval_rng(self, name: str) -> np.random.Generator:
        """The random stream of evaluation set `name`, fixed by the population seed."""
        stream = {NEW_SET: NEW_SET_STREAM, TEST_SET: TEST_SET_STREAM}.get(
            name, EVAL_SETS.index(name) + 1 if name in EVAL_SETS else 1000)
        return np.random.default_rng([self.seed, 1000 + stream])

    def _eval_people(self, rng: np.random.Generator, name: str, n: int, size: int) -> np.ndarray:
        """[n] people of an evaluation set: uniform over the population; for "test", over the seen people
        that the val set's sample does not hold (with replacement only if fewer than n remain)."""
        if name != TEST_SET:
            return rng.integers(0, size, size=n)
        others = self._outside_val(size)
        return rng.choice(others, size=n, replace=len(others) < n)

    def _outside_val(self, size: int) -> np.ndarray:
        """The seen people (of `size`) that the val set's sample does not hold (its draw, repeated)."""
        val_people = self._eval_people(self._eval_rng("val"), "val", self.eval_sizes["val"], size)
        return np.setdiff1d(np.arange(size), val_people)

    # ---- identity of the data, saved in checkpoints ------------------------------------------
    def state_dict(self) -> dict:
        """Who the old people are (plain types, weights_only-safe): fine-tuning from this checkpoint
        checks it (biolab.finetune). Nothing here is needed to resume: the stream is a pure function."""
        info = {"population_size": self.population_size, "seed": self.seed, "n_unseen": self.n_unseen,
                "attributes": list(self.attributes), "n_train_templates": self.n_train_templates,
                "shuffle_sentences": self.shuffle_sentences, "n_new_people": self.n_new_people,
                "replay_weight": self.replay_weight, "unknown_answer": self.unknown_answer}
        if self._ready:
            info["fingerprint"] = self.fingerprint  # of the old (seen) people
        return info

    # ---- Lightning hooks ---------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        start = self.trainer.global_step if self.trainer is not None else 0  # restored on resume
        make_batch = self.train_batches
        if self.device_batches:  # the same batches, assembled on the training device
            from biolab.data.device_batches import DeviceBatches
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            make_batch = DeviceBatches(self.train_batches, device)
        return DataLoader(TrainStream(make_batch, start), batch_size=None, num_workers=self.num_workers,
                          persistent_workers=False)
