"""Closed word-level tokenizer built from the value pools and the templates (SPEC section 3).

Every word (``\\w+``) and every punctuation character is one token, so "March 16, 2042." becomes
[March][16][,][2042][.]: the value's tokens never absorb the sentence's period, and the span of a
value inside a biography is known exactly. The vocabulary is closed (a few thousand tokens) and
deterministic: sorted tokens of the pools and templates after three special tokens. Extra tokens
(``extra``, e.g. UNKNOWN for the "unknown" answer of docs/unknown_answer.md) come last, so adding one
keeps every other id and a trained model's vocabulary grows by rows at its end (biolab.finetune).

    tok = WordTokenizer.from_pools(load_pools())
    tok.encode("Ada Mae Smith was born on March 16, 2042.")  # -> list of ids
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from biolab.data.pools import DAYS, MONTHS, YEARS, Pools
from biolab.data.templates import TEMPLATES

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
UNKNOWN = "<unknown>"  # the "I do not know this person" answer (data.unknown_answer); only an extra token


def split_words(text: str) -> list[str]:
    """Split text into word and punctuation tokens."""
    return TOKEN_PATTERN.findall(text)


class WordTokenizer:
    """Maps word tokens to ids and back. Unknown words raise a KeyError naming the word."""

    def __init__(self, tokens: Iterable[str], extra: tuple[str, ...] = ()):
        words = sorted(set(tokens) - set(SPECIAL_TOKENS) - set(extra))
        self.itos: list[str] = list(SPECIAL_TOKENS) + words + list(extra)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id = (self.stoi[t] for t in SPECIAL_TOKENS)
        self.extra = tuple(extra)

    @classmethod
    def from_pools(cls, pools: Pools, templates: dict[str, tuple[str, ...]] = TEMPLATES,
                   extra: tuple[str, ...] = ()) -> "WordTokenizer":
        texts: list[str] = list(pools.given_names) + list(pools.surnames)
        for values in pools.by_file.values():
            texts.extend(values)
        texts.extend(MONTHS)
        texts.extend(str(x) for x in DAYS + YEARS)
        texts.append(", .")
        for attribute_templates in templates.values():
            texts.extend(t.replace("{name}", " ").replace("{value}", " ") for t in attribute_templates)
        return cls((w for text in texts for w in split_words(text)), extra)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[w] for w in split_words(text)]
        except KeyError as err:
            raise KeyError(f"word {err.args[0]!r} is not in the closed vocabulary") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Space-separated tokens (padding dropped); for reading, not for round trips."""
        return " ".join(self.itos[i] for i in ids if i != self.pad_id)
