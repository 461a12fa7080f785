"""Training batches assembled with torch ops on the training device (data.device_batches: true).

``BiographyBuilder.build`` + ``collate`` make a batch in a Python loop over biographies. Here the same
batch comes from one padded token table kept on the device (template pieces, values, the population's
names): the random choices are drawn with numpy exactly as ``TrainBatches.draw`` draws them
(people, template slots, sentence order), so the batch is still a pure function of (seed, step, rank),
and only small index arrays ([batch, pieces]) cross to the device, in one copy. A biography is a fixed
list of pieces, <bos> + per sentence (before, name, between, value, after) + <eos>; each piece is
gathered from its table and scattered to its offset in the sequence (pieces' lengths come from
host-side length tables, so choosing the padded length needs no device synchronisation).
tests/test_device_batches.py proves the batches equal the ones of ``TrainBatches`` tensor for tensor.

    make_batch = DeviceBatches(dm.train_batches, torch.device("cuda"))
    batch = make_batch(step)      # the dict of TrainBatches(step), on the device
"""

from __future__ import annotations

import numpy as np
import torch

from biolab.data.biographies import IGNORE_INDEX
from biolab.data.padding import padded_length

def _table(token_lists: list[list[int]], width: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (tokens [rows, width] right-padded with `pad`, lengths [rows])."""
    tokens = np.full((len(token_lists), width), pad, dtype=np.int64)
    for row, ids in enumerate(token_lists):
        tokens[row, :len(ids)] = ids
    return tokens, np.array([len(ids) for ids in token_lists], dtype=np.int64)


class DeviceBatches:
    """Makes the batches of a ``TrainBatches`` (same draws, same tensors) with torch ops on `device`."""

    def __init__(self, train_batches, device: torch.device | str):
        self.source, self.device = train_batches, torch.device(device)
        builder, population = train_batches.builder, train_batches.population
        tokenizer = builder.tokenizer
        self.pad_id, self.bos_id, self.eos_id = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
        self.max_length = builder.max_length()
        parts = builder.template_parts  # [attr][template] -> (before, between, after) token lists
        self.n_templates = len(parts[0])
        names = population.names                                                        # [people, 3]
        name_ids = np.stack([builder.given_ids[names[:, 0]], builder.given_ids[names[:, 1]],
                             builder.surname_ids[names[:, 2]]], axis=1).tolist()       # [people][3]
        # one table of pieces: template pieces at row (attr * templates + template) * 3 + part, then the
        # values of every attribute (value_row[attr] + pool index), then the people's names (name_row + person)
        pieces = [p for templates in parts for triple in templates for p in triple]
        self.value_row = len(pieces) + np.cumsum([0] + [len(values) for values in builder.value_ids[:-1]])
        pieces += [v for values in builder.value_ids for v in values]
        self.name_row = len(pieces)
        pieces += name_ids
        self.width = max(len(p) for p in pieces)
        tokens, self.lengths = _table(pieces, self.width, self.pad_id)  # lengths stay on the host: no sync
        self.tokens = torch.as_tensor(tokens, device=self.device)      # [pieces, width]
        self.person_values = population.values[:, builder.attr_columns].astype(np.int64)  # [people, attrs]

    def _pieces(self, people: np.ndarray, templates: np.ndarray, order: np.ndarray):
        """Per biography, its pieces in order (<bos> and <eos> apart): table rows, lengths and value_attr
        tags, each [batch, 5 * sentences] on the host."""
        batch = len(people)
        attr = order.astype(np.int64)                                               # [batch, sentences]
        template = np.take_along_axis(templates.astype(np.int64), attr, axis=1)     # [batch, sentences]
        part_row = (attr * self.n_templates + template) * 3                         # + 0, 1, 2
        value = np.take_along_axis(self.person_values[people], attr, axis=1)       # [batch, sentences]
        name_row = np.broadcast_to(self.name_row + np.asarray(people, dtype=np.int64)[:, None], attr.shape)
        rows = np.stack([part_row, name_row, part_row + 1, self.value_row[attr] + value, part_row + 2], axis=2)
        off_value = np.full_like(attr, -1)
        tags = np.stack([off_value, off_value, off_value, attr, off_value], axis=2)  # [batch, sentences, 5]
        rows = rows.reshape(batch, -1)
        return rows, self.lengths[rows], tags.reshape(batch, -1)

    def _to_device(self, *arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Equally shaped int64 host arrays -> device tensors, in one copy (from pinned memory, asynchronous,
        on CUDA)."""
        host = torch.from_numpy(np.stack(arrays))
        if self.device.type == "cuda":
            host = host.pin_memory()
        return host.to(self.device, non_blocking=True).unbind(0)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        people, templates, order = self.source.draw(step)
        rows, lengths, tags = self._pieces(people, templates, order)               # [batch, pieces]
        batch = len(people)
        starts = 1 + np.cumsum(lengths, axis=1) - lengths                           # after <bos>
        total = 2 + lengths.sum(axis=1)                                            # with <bos>, <eos>: [batch]
        length = padded_length(int(total.max()) - 1, self.source.pad_lengths)     # model input length
        width = max(self.max_length, length + 1)                                   # sequence buffer (+ a bin)
        on = dict(device=self.device)
        rows_d, lengths_d, starts_d, tags_d = self._to_device(rows, lengths, starts, tags)  # [batch, pieces]
        total_d = lengths_d.sum(1) + 2                                             # [batch]
        tokens = self.tokens[rows_d]                                               # [batch, pieces, width]
        offset = torch.arange(self.width, **on)                                    # [width]
        inside = offset < lengths_d[..., None]                                     # [batch, pieces, width]
        where = torch.where(inside, starts_d[..., None] + offset, width).flatten(1)  # outside -> the bin
        sequence = torch.full((batch, width + 1), self.pad_id, dtype=torch.long, **on)
        sequence.scatter_(1, where, tokens.flatten(1))                             # [batch, width + 1]
        sequence[:, 0] = self.bos_id
        sequence.scatter_(1, (total_d - 1)[:, None], self.eos_id)
        tag = torch.full((batch, width + 1), -1, dtype=torch.long, **on)
        tag.scatter_(1, where, tags_d[..., None].expand_as(inside).flatten(1))
        real = torch.arange(length, **on) < (total_d - 1)[:, None]                 # [batch, length]
        return {"input_ids": torch.where(real, sequence[:, :length], self.pad_id),
                "targets": torch.where(real, sequence[:, 1:length + 1], IGNORE_INDEX),
                "value_attr": torch.where(real, tag[:, 1:length + 1], -1)}
