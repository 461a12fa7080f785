"""Attribute-recall prompts: a biography sentence cut right before its value (SPEC section 9).

A prompt is <bos> followed by one sentence template of one person, filled with the person's full
name and cut right before the value. It is tokenized by the code that builds the training
biographies (BiographyBuilder's template parts, name tokens and value tokens), so its tokens are
exactly the start of a biography whose first sentence is that sentence:

    <bos> Ada Mae Smith was born in | Paris .
          ---name_pos--         last  answer (all the value's tokens), then answer_end (".")

    dm = BioDataModule(...); dm.setup()
    clean = recall_prompts(dm, split="seen", n=256, attributes=["birth_city"], templates="eval")
    corrupted = corrupt(clean, dm, seed=0)  # another person, same template, other first answer token
    logits = model(clean.tokens)[torch.arange(len(clean)), clean.last]   # see biolab.mech.scoring

Every name part is one word token, so every name is 3 tokens and a prompt's length depends on
its template only: a clean prompt and its corrupted counterpart align position by position.
Everything here is a pure function of a set-up BioDataModule and a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from biolab.data.biographies import ROLE_NAME, ROLE_OTHER, ROLE_TEXT
from biolab.data.datamodule import template_ids
from biolab.data.population import N_EVAL_TEMPLATES, N_TEMPLATES, Population
from biolab.data.templates import ATTRIBUTES

SPLITS = ("seen", "unseen")          # trained-on people, held-out people
TEMPLATE_KINDS = ("eval", "train")   # each person's 5 held-out templates, or its training ones
CORRUPT_STREAM = 7                   # random stream of corrupt(), apart from recall_prompts' streams


@dataclass
class PromptSet:
    """n prompts, right-padded with <pad>; every tensor's first dimension is the prompt."""

    tokens: torch.Tensor        # [n, pos] int64: <bos> + sentence up to the value, then <pad>
    last: torch.Tensor          # [n] position of the last prompt token (its logits predict answer[:, 0])
    name_pos: torch.Tensor      # [n, 3] positions of the first, middle and last name tokens
    role: torch.Tensor          # [n, pos] ROLE_TEXT, ROLE_NAME, ROLE_OTHER (<bos>, padding)
    person: torch.Tensor        # [n] index into the person's population (dm.seen or dm.unseen)
    seen: torch.Tensor          # [n] bool: True = trained-on population, False = held-out people
    attribute: torch.Tensor     # [n] index into dm.attributes
    template: torch.Tensor      # [n] template index within the attribute's 25
    value: torch.Tensor         # [n] pool index of the right value
    answer: torch.Tensor        # [n, max_value_len] token ids of the right value, padded with -1
    answer_first: torch.Tensor  # [n] first token of the right value
    answer_end: torch.Tensor    # [n] token that follows the value in the sentence (the template's ".")

    def __len__(self) -> int:
        return len(self.tokens)

    def _map(self, fn) -> PromptSet:
        return PromptSet(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def subset(self, idx) -> PromptSet:
        """The prompts at idx (indices, a slice or a bool mask), padding columns kept."""
        idx = torch.as_tensor(idx) if not isinstance(idx, slice) else idx
        return self._map(lambda t: t[idx])

    def to(self, device) -> PromptSet:
        return self._map(lambda t: t.to(device))

    @property
    def answer_len(self) -> torch.Tensor:
        """[n] number of tokens of the right value."""
        return (self.answer >= 0).sum(1)

    def with_answers(self, pad_id: int = 0) -> torch.Tensor:
        """[n, pos + max_value_len] the prompts followed by their right value (teacher forcing), padded with
        pad_id (<pad> is id 0 in WordTokenizer): position last + j predicts answer token j."""
        n, width = self.answer.shape
        tokens = torch.cat([self.tokens, self.tokens.new_full((n, width), pad_id)], dim=1)
        columns = self.last[:, None] + 1 + torch.arange(width, device=self.tokens.device)   # [n, width]
        answer = torch.where(self.answer >= 0, self.answer, tokens.gather(1, columns))
        return tokens.scatter(1, columns, answer)


# ---- choosing people and templates ---------------------------------------------------------------
def _require_setup(dm) -> None:
    if getattr(dm, "seen", None) is None or getattr(dm, "builder", None) is None:
        raise ValueError("the BioDataModule is not set up: call dm.setup() first")


def split_population(dm, split: str) -> Population:
    """dm.seen for "seen", dm.unseen for "unseen"."""
    _require_setup(dm)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {list(SPLITS)}")
    return dm.seen if split == "seen" else dm.unseen


def attribute_indices(dm, attributes) -> list[int]:
    """Attribute names (None = all of dm.attributes) -> indices into dm.attributes."""
    if attributes is None:
        return list(range(len(dm.attributes)))
    if isinstance(attributes, str):
        attributes = [attributes]
    unknown = [a for a in attributes if a not in dm.attributes]
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; this data module has {list(dm.attributes)}")
    if len(set(attributes)) != len(attributes):
        raise ValueError(f"attributes must not repeat, got {list(attributes)}")
    return [dm.attributes.index(a) for a in attributes]


def _template_slots(rng: np.random.Generator, n: int, templates: str, n_train_templates: int) -> np.ndarray:
    """[n] positions in each person's template permutation: the eval tail or the training head."""
    if templates == "eval":
        return rng.integers(N_TEMPLATES - N_EVAL_TEMPLATES, N_TEMPLATES, size=n)
    return rng.integers(0, n_train_templates, size=n)


def recall_prompts(dm, split: str = "seen", n: int = 256, attributes=None, templates: str = "eval",
                   seed: int = 0) -> PromptSet:
    """n prompts PER ATTRIBUTE (n distinct people of `split` each), grouped by attribute in the order given.

    templates="eval": each person's own 5 held-out evaluation templates (population.template_perm[..., -5:]);
    "train": its dm.n_train_templates training templates. Deterministic per seed; each (split, attribute)
    has its own random stream, so adding an attribute leaves the others' prompts unchanged.
    """
    population = split_population(dm, split)
    columns = attribute_indices(dm, attributes)
    if templates not in TEMPLATE_KINDS:
        raise ValueError(f"unknown templates {templates!r}; allowed: {list(TEMPLATE_KINDS)}")
    if not (isinstance(n, int) and 1 <= n <= len(population)):
        raise ValueError(f"n={n!r} prompts per attribute need n distinct people, but the {split} population "
                         f"has {len(population)}")
    people, attrs, template = [], [], []
    for a in columns:
        name = dm.attributes[a]
        rng = np.random.default_rng([seed, SPLITS.index(split), ATTRIBUTES.index(name)])
        chosen = rng.choice(len(population), size=n, replace=False)                       # [n]
        slots = _template_slots(rng, n, templates, dm.n_train_templates)                  # [n]
        people.append(chosen)
        attrs.append(np.full(n, a))
        template.append(template_ids(population, chosen, (name,), slots[:, None])[:, 0])
    seen = np.full(n * len(columns), split == "seen")
    return build_prompts(dm, seen, np.concatenate(people), np.concatenate(attrs), np.concatenate(template))


# ---- tokens ------------------------------------------------------------------------------------------
def max_value_len(dm) -> int:
    """Longest value, in tokens, over the pools of dm.attributes (the width of PromptSet.answer)."""
    return max(len(v) for values in dm.builder.value_ids for v in values)


def _prompt_row(dm, population: Population, person: int, a: int, template: int):
    """One prompt: (tokens, roles, name positions, value index, value tokens, end token)."""
    builder = dm.builder
    before, between, after = builder.template_parts[a][template]
    name = builder.name_ids(population, person)
    tokens = [dm.tokenizer.bos_id] + before + name + between
    role = [ROLE_OTHER] + [ROLE_TEXT] * len(before) + [ROLE_NAME] * len(name) + [ROLE_TEXT] * len(between)
    name_pos = list(range(1 + len(before), 1 + len(before) + len(name)))
    value = int(population.values[person, builder.attr_columns[a]])
    return tokens, role, name_pos, value, builder.value_ids[a][value], after[0]


def build_prompts(dm, seen: np.ndarray, people: np.ndarray, attributes: np.ndarray,
                  templates: np.ndarray, pos: int | None = None) -> PromptSet:
    """Prompts for given rows: seen [n] bool, people [n], attributes [n] (into dm.attributes), templates [n];
    padded to pos columns (default: the longest prompt)."""
    _require_setup(dm)
    rows = [_prompt_row(dm, dm.seen if s else dm.unseen, int(p), int(a), int(t))
            for s, p, a, t in zip(seen, people, attributes, templates)]
    n, width = len(rows), max_value_len(dm)
    pos = max(len(r[0]) for r in rows) if pos is None else pos
    tokens = torch.full((n, pos), dm.tokenizer.pad_id, dtype=torch.long)
    role = torch.full((n, pos), ROLE_OTHER, dtype=torch.long)
    answer = torch.full((n, width), -1, dtype=torch.long)
    for i, (ids, roles, _, _, value_ids, _) in enumerate(rows):
        tokens[i, :len(ids)] = torch.tensor(ids)
        role[i, :len(roles)] = torch.tensor(roles)
        answer[i, :len(value_ids)] = torch.tensor(value_ids)
    return PromptSet(
        tokens=tokens, last=torch.tensor([len(r[0]) - 1 for r in rows]), name_pos=torch.tensor([r[2] for r in rows]),
        role=role, person=torch.as_tensor(np.asarray(people), dtype=torch.long),
        seen=torch.as_tensor(np.asarray(seen), dtype=torch.bool),
        attribute=torch.as_tensor(np.asarray(attributes), dtype=torch.long),
        template=torch.as_tensor(np.asarray(templates), dtype=torch.long),
        value=torch.tensor([r[3] for r in rows]), answer=answer, answer_first=answer[:, 0].clone(),
        answer_end=torch.tensor([r[5] for r in rows]))


# ---- counterfactual prompts ------------------------------------------------------------------------
def _first_tokens(dm, population: Population, a: int) -> np.ndarray:
    """[people] first token of every person's value of attribute a."""
    pool_first = np.array([v[0] for v in dm.builder.value_ids[a]])
    return pool_first[population.values[:, dm.builder.attr_columns[a]]]


def corrupt(prompts: PromptSet, dm, seed: int = 0) -> PromptSet:
    """The counterfactual of each prompt: another person of the same split, same attribute and template,
    whose value's first token differs from the clean answer's (so a first-token logit difference means
    something; for birth dates the month differs). Deterministic per seed; ValueError when no such person
    exists for some prompt."""
    _require_setup(dm)
    rng = np.random.default_rng([seed, CORRUPT_STREAM])
    first = {}  # (seen, attribute) -> [people] first answer token
    people = np.empty(len(prompts), dtype=np.int64)
    for i in range(len(prompts)):
        seen, a = bool(prompts.seen[i]), int(prompts.attribute[i])
        if (seen, a) not in first:
            first[seen, a] = _first_tokens(dm, dm.seen if seen else dm.unseen, a)
        candidates = np.flatnonzero(first[seen, a] != int(prompts.answer_first[i]))
        if len(candidates) == 0:
            token = dm.tokenizer.itos[int(prompts.answer_first[i])]
            raise ValueError(f"corrupt: no {'seen' if seen else 'unseen'} person has a {dm.attributes[a]} "
                             f"whose first token differs from {token!r}")
        people[i] = candidates[rng.integers(len(candidates))]
    corrupted = build_prompts(dm, prompts.seen.cpu().numpy(), people, prompts.attribute.cpu().numpy(),
                              prompts.template.cpu().numpy(), pos=prompts.tokens.shape[1])
    assert torch.equal(corrupted.last, prompts.last.cpu()) and corrupted.tokens.shape == prompts.tokens.shape, \
        "a corrupted prompt differs in length from its clean prompt (names must be 3 tokens)"
    return corrupted.to(prompts.tokens.device)
