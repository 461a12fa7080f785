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
"""

from __future__ import annotations

import numpy as np
import torch

from biolab.data.pools import Pools
from biolab.data.population import Population
from biolab.data.templates import ATTRIBUTES, TEMPLATES
from biolab.data.tokenizer import WordTokenizer

IGNORE_INDEX = -100


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

    def _split_template(self, template: str) -> tuple[list[int], list[int], list[int]]:
        before_name, rest = template.split("{name}")
        between, after_value = rest.split("{value}")
        enc = self.tokenizer.encode
        return enc(before_name), enc(between), enc(after_value)

    def _value_tokens(self, pools: Pools, attribute: str) -> list[list[int]]:
        return [self.tokenizer.encode(v) for v in pools.values(attribute)]

    def build(self, population: Population, people: np.ndarray, templates: np.ndarray,
              order: np.ndarray) -> list[tuple[list[int], list[int]]]:
        """people [batch], templates [batch, attrs] (template index 0-24), order [batch, attrs].

        Returns per biography (token ids, value_attr per token), value_attr -1 outside values.
        """
        bos, eos = self.tokenizer.bos_id, self.tokenizer.eos_id
        out = []
        for b, person in enumerate(people):
            first, middle, last = population.names[person]
            name = [self.given_ids[first], self.given_ids[middle], self.surname_ids[last]]
            ids, attr_of = [bos], [-1]
            for a in order[b]:
                before, between, after = self.template_parts[a][templates[b, a]]
                value = self.value_ids[a][population.values[person, self.attr_columns[a]]]
                head = before + name + between
                ids += head + value + after
                attr_of += [-1] * len(head) + [int(a)] * len(value) + [-1] * len(after)
            ids.append(eos)
            attr_of.append(-1)
            out.append((ids, attr_of))
        return out

    def collate(self, sequences: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Pad to the longest sequence of this batch only (SPEC section 3)."""
        length = max(len(ids) for ids, _ in sequences) - 1
        batch = len(sequences)
        input_ids = torch.full((batch, length), self.tokenizer.pad_id, dtype=torch.long)
        targets = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        value_attr = torch.full((batch, length), -1, dtype=torch.long)
        for b, (ids, attr_of) in enumerate(sequences):
            n = len(ids) - 1
            input_ids[b, :n] = torch.tensor(ids[:-1])
            targets[b, :n] = torch.tensor(ids[1:])
            value_attr[b, :n] = torch.tensor(attr_of[1:])  # target j is token j+1
        return {"input_ids": input_ids, "targets": targets, "value_attr": value_attr}
