"""Biographies as token ids, with the exact span of every attribute value (SPEC sections 2-3).

A biography is [BOS] + six sentences + [EOS]: for each attribute one of the person's templates is
filled with the full name and the value (placeholders are spliced as token lists, so a value's
tokens carry only the value), the sentences are shuffled (optional) and joined. Templates and
values are tokenized once, up front, so building a batch is list concatenation.

`collate` returns the tensors the model trains on:
    input_ids  [batch, pos]  sequence without its last token, right-padded with <pad>
    targets    [batch, pos]  sequence shifted by one, IGNORE_INDEX where padded
    value_attr [batch, pos]  attribute index (into the data's attribute list) of each target token
                             that belongs to a value, -1 elsewhere
and, for sequences built with ``with_roles=True`` (attention metrics), per input token:
    role       [batch, pos]  ROLE_TEXT (template words), ROLE_NAME, ROLE_VALUE, or ROLE_OTHER
                             (<bos>, <eos>, padding)
    sentence   [batch, pos]  index of the token's sentence in the biography, -1 for <bos>/padding
"""

from __future__ import annotations

import numpy as np
import torch

from biolab.data.padding import padded_length
from biolab.data.pools import Pools
from biolab.data.population import Population
from biolab.data.templates import ATTRIBUTES, TEMPLATES
from biolab.data.tokenizer import UNKNOWN, WordTokenizer

IGNORE_INDEX = -100
ROLE_OTHER, ROLE_TEXT, ROLE_NAME, ROLE_VALUE = 0, 1, 2, 3


class BiographyBuilder:
    """Turns (people, template choices, sentence order) into token sequences."""

    def __init__(self, pools: Pools, tokenizer: WordTokenizer, attributes=ATTRIBUTES):
        self.tokenizer = tokenizer
        self.attributes = tuple(attributes)
        self.attr_columns = [ATTRIBUTES.index(a) for a in self.attributes]  # into Population.values
        self.given_ids = np.array([tokenizer.stoi[n] for n in pools.given_names])
        self.surname_ids = np.array([tokenizer.stoi[n] for n in pools.surnames])
        # per attribute: 25 templates as (tokens before name, tokens between name and value, after value)
        self.template_parts = [[self._split_template(t) for t in TEMPLATES[a]] for a in self.attributes]
        self.value_ids = [self._value_tokens(pools, a) for a in self.attributes]
        # the "unknown" answer (data.unknown_answer): the value index just past each pool renders UNKNOWN
        self.unknown_index = [len(values) for values in self.value_ids]
        if UNKNOWN in tokenizer.stoi:
            for values in self.value_ids:
                values.append([tokenizer.stoi[UNKNOWN]])

    def _split_template(self, template: str) -> tuple[list[int], list[int], list[int]]:
        before_name, rest = template.split("{name}")
        between, after_value = rest.split("{value}")
        enc = self.tokenizer.encode
        return enc(before_name), enc(between), enc(after_value)

    def _value_tokens(self, pools: Pools, attribute: str) -> list[list[int]]:
        return [self.tokenizer.encode(v) for v in pools.values(attribute)]

    def name_ids(self, population: Population, person: int) -> list[int]:
        """Token ids of a person's full name: always 3, since every name part is one word token."""
        first, middle, last = population.names[person]
        return [self.given_ids[first], self.given_ids[middle], self.surname_ids[last]]
    def max_length(self) -> int:
        """Tokens of the longest biography these templates and values can make, <bos> and <eos> included."""
        name = 3  # given name, middle name, surname: one token each
        return 2 + sum(max(len(b) + len(m) + len(a) for b, m, a in parts) + name + max(map(len, values))
                       for parts, values in zip(self.template_parts, self.value_ids))

    def build(self, population: Population, people: np.ndarray, templates: np.ndarray,
              order: np.ndarray, with_roles: bool = False) -> list[tuple[list[int], ...]]:
        """people [batch], templates [batch, attrs] (template index 0-24), order [batch, attrs].

        Returns per biography (token ids, value_attr per token), value_attr -1 outside values;
        with_roles adds (role per token, sentence index per token).
        """
        bos, eos = self.tokenizer.bos_id, self.tokenizer.eos_id
        out = []
        for b, person in enumerate(people):
            name = self.name_ids(population, person)
            ids, attr_of = [bos], [-1]
            role, sentence = [ROLE_OTHER], [-1]
            for s, a in enumerate(order[b]):
                before, between, after = self.template_parts[a][templates[b, a]]
                value = self.value_ids[a][population.values[person, self.attr_columns[a]]]
                head = before + name + between
                ids += head + value + after
                attr_of += [-1] * len(head) + [int(a)] * len(value) + [-1] * len(after)
                if with_roles:
                    role += ([ROLE_TEXT] * len(before) + [ROLE_NAME] * len(name) + [ROLE_TEXT] * len(between)
                             + [ROLE_VALUE] * len(value) + [ROLE_TEXT] * len(after))
                    sentence += [s] * (len(head) + len(value) + len(after))
            ids.append(eos)
            attr_of.append(-1)
            role.append(ROLE_OTHER)
            sentence.append(-1)
            out.append((ids, attr_of, role, sentence) if with_roles else (ids, attr_of))
        return out

    def collate(self, sequences: list[tuple[list[int], ...]],
                pad_lengths: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
        """Pad to the longest sequence of this batch (SPEC section 3), or with `pad_lengths` (static
        lengths, data.pad_to; biolab.data.padding) to the shortest of them that holds it."""
        length = padded_length(max(len(seq[0]) for seq in sequences) - 1, pad_lengths)
        batch = len(sequences)
        with_roles = len(sequences[0]) == 4
        input_ids = torch.full((batch, length), self.tokenizer.pad_id, dtype=torch.long)
        targets = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        value_attr = torch.full((batch, length), -1, dtype=torch.long)
        if with_roles:
            role = torch.full((batch, length), ROLE_OTHER, dtype=torch.long)
            sentence = torch.full((batch, length), -1, dtype=torch.long)
        for b, (ids, attr_of, *roles) in enumerate(sequences):
            n = len(ids) - 1
            input_ids[b, :n] = torch.tensor(ids[:-1])
            targets[b, :n] = torch.tensor(ids[1:])
            value_attr[b, :n] = torch.tensor(attr_of[1:])  # target j is token j+1
            if with_roles:
                role[b, :n] = torch.tensor(roles[0][:-1])  # input token j
                sentence[b, :n] = torch.tensor(roles[1][:-1])
        batch_tensors = {"input_ids": input_ids, "targets": targets, "value_attr": value_attr}
        if with_roles:
            batch_tensors.update(role=role, sentence=sentence)
        return batch_tensors
