"""Static input lengths for compiled GPU training (data.pad_to) and the padding waste they cost.

Right padding with a causal model changes nothing for the real tokens, and pad positions are masked
out of the loss and the metrics (targets IGNORE_INDEX, value_attr -1), so padding every batch to a
fixed length (or to one of a few length buckets) changes only the shapes the compiler sees:

    data.pad_to: null          each batch padded to its own longest sequence (dynamic shapes; CPU default)
    data.pad_to: max           every batch padded to the longest biography this data can make
    data.pad_to: 160           every batch padded to 160 input tokens (must hold the longest biography)
    data.pad_to: [80, max]     buckets: each batch padded to the shortest that holds it

``BioDataModule`` resolves the option with `static_lengths`, pads with `padded_length` (through
``BiographyBuilder.collate``) and reports `padding_waste` at set-up.
"""

from __future__ import annotations

import torch

from biolab.errors import ConfigError


def padded_length(length: int, pad_lengths: tuple[int, ...] = ()) -> int:
    """The input length a batch whose longest input is `length` tokens is padded to: itself without
    static lengths, else the shortest static length >= it."""
    if not pad_lengths:
        return length
    fitting = [p for p in pad_lengths if p >= length]
    if not fitting:
        raise ValueError(f"a batch of {length} input tokens exceeds the static lengths {list(pad_lengths)} "
                         "(data.pad_to)")
    return min(fitting)


def static_lengths(pad_to, longest: int) -> tuple[int, ...]:
    """data.pad_to (null | "max" | int | list of ints and "max") -> sorted static input lengths, () for none;
    `longest`: the longest model input the data can make ("max"). Bad values raise ConfigError naming the key."""
    if pad_to is None:
        return ()
    lengths = list(pad_to) if isinstance(pad_to, (list, tuple)) else [pad_to]
    lengths = [longest if x == "max" else x for x in lengths]
    if not (lengths and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in lengths)):
        raise ConfigError(f'data.pad_to must be null, "max", a positive integer or a list of them, got {pad_to!r}')
    if max(lengths) < longest:
        raise ConfigError(f"data.pad_to={pad_to!r} is shorter than the longest biography of this data "
                          f"({longest} input tokens); end the list with max")
    return tuple(sorted(set(lengths)))


def padding_waste(batches: list[dict[str, torch.Tensor]]) -> tuple[float, float]:
    """(fraction of pad tokens among the inputs of `batches` as padded, the same fraction had each batch
    been padded to its own longest sequence)."""
    real = [(b["targets"] >= 0).sum(1) for b in batches]            # [batch] real input tokens per sequence
    total_real = sum(int(r.sum()) for r in real)
    padded = sum(b["targets"].numel() for b in batches)
    dynamic = sum(len(r) * int(r.max()) for r in real)
    return 1 - total_real / padded, 1 - total_real / dynamic


def padding_report(train: list[dict], evaluation: list[dict]) -> dict[str, float]:
    """Padding waste of training and evaluation batches, as summary keys (printed by the datamodule)."""
    out = {}
    for name, batches in (("train", train), ("eval", evaluation)):
        if batches:
            out[f"{name}_pad_fraction"], out[f"{name}_dynamic_pad_fraction"] = padding_waste(batches)
    return out
