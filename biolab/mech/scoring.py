"""How well a model answers attribute-recall prompts (biolab.mech.prompts): logits, ranks, Hit@k, sampling.

    logits = answer_logits(model, clean)           # [n, vocab] at each prompt's last position
    logit_diff(logits, clean, corrupted)           # [n] clean first answer token minus the corrupted one
    ranks = first_token_rank(logits, clean); hit_at_k(ranks, 10)
    value_ranks(model, prompts, dm)                # [n] rank of the whole value among its attribute's pool
    hits(model, prompts, dm)                       # Hit@1, Hit@10 per attribute and overall, method named
    prompt_accuracy(model, prompts)                # report beside val/attr_acc (SPEC section 9 guard)
    answers_right(model, prompts)                  # [n] bool: the same per prompt
    samples = sample_answers(model, prompts, n_samples=10, temperature=1.0, top_k=50, top_p=0.9)
    answers_correct(samples, prompts)              # [n, n_samples] bool

A model is any nn.Module called as model(tokens [batch, pos]) -> logits [batch, pos, vocab]: biolab's
Transformer or a hand-built module in tests. Every function runs it in eval mode without gradients, in
batches on the model's device, and restores its training mode. Results come back on the prompts' device.

Ranks are 0 for the best, and ties count against the right answer (rank = how many other candidates
score at least as high), so a model with constant logits gets no hits.

Which rank Hit@k uses (SPEC section 9): the first token's rank over the whole vocabulary where a value's
first token is nearly unique (cities, majors, employers), and the rank of the whole value's
teacher-forced log-probability among all values of the pool for universities (many start with
"University") and birth dates (the month comes first). value_ranks is exact over the whole pool,
all 201 x 12 x 31 = 74,772 birth dates included, not a sample of it: values that share their leading
tokens share one forward pass (every date's probability comes from the 372 sequences prompt + month +
day + ","), and a sequence is skipped when the tokens all its values share are already less likely
than the whole right value (such values cannot outrank it; months are checked before month-days).
Without a KV cache the prompt is recomputed for every sequence, so a prompt costs at most 1 + 12 + 372
sequences for dates and about 126 for universities; a confident model needs a few. hits() only needs
ranks below max(k): value_ranks(max_rank=10) stops a prompt once 10 values beat it, which makes
wrongly answered prompts (held-out people) cheap as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
from torch import nn

from biolab.mech.prompts import PromptSet

VALUE_RANK_ATTRIBUTES = ("university", "birth_date")   # first token shared by many values (SPEC 9)
BATCH_SIZE = 256       # prompts per forward pass
MAX_ROWS = 512         # sequences per forward pass in value_ranks
TOLERANCE = 1e-3       # nats of float noise allowed for when value_ranks skips unlikely candidates


# ---- running the model -----------------------------------------------------------------------------------
@contextmanager
def inference(model: nn.Module):
    """Eval mode and no gradients for the duration; the previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    tensor = next(chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def logits_at(model: nn.Module, tokens: torch.Tensor, positions: torch.Tensor,
              batch_size: int = BATCH_SIZE) -> Iterator[tuple[slice, torch.Tensor]]:
    """tokens [n, pos], positions [n, k] -> yields (rows, logits [rows, k, vocab] at those positions), in
    batches on the model's device. Columns after a batch's largest position are not run (causal model)."""
    device = model_device(model)
    with inference(model):
        for start in range(0, len(tokens), batch_size):
            rows = slice(start, start + batch_size)
            where = positions[rows].to(device)                                # [b, k]
            logits = model(tokens[rows, :int(where.max()) + 1].to(device))     # [b, width, vocab]
            yield rows, logits.gather(1, where[..., None].expand(-1, -1, logits.shape[-1])).float()


def answer_logits(model: nn.Module, prompts: PromptSet, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """[n, vocab] logits at each prompt's last position (they predict the value's first token)."""
    parts = [logits[:, 0] for _, logits in logits_at(model, prompts.tokens, prompts.last[:, None], batch_size)]
    return torch.cat(parts).to(prompts.tokens.device)


# ---- scores on answer logits ---------------------------------------------------------------------------
def logit_diff(logits: torch.Tensor, clean: PromptSet, corrupt: PromptSet) -> torch.Tensor:
    """logits [n, vocab] -> [n] logit of the clean answer's first token minus the corrupted answer's."""
    right = logits.gather(1, clean.answer_first[:, None].to(logits.device))
    other = logits.gather(1, corrupt.answer_first[:, None].to(logits.device))
    return (right - other)[:, 0]


def first_token_prob(logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
    """logits [n, vocab] -> [n] probability of the right value's first token."""
    return logits.float().softmax(-1).gather(1, prompts.answer_first[:, None].to(logits.device))[:, 0]


def rank_of(scores: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """scores [n, candidates], right [n] candidate index -> [n] rank (0 = best; ties count against it)."""
    right_score = scores.gather(1, right[:, None])                   # [n, 1]
    return (scores >= right_score).sum(1) - 1


def first_token_rank(logits: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
    """logits [n, vocab] -> [n] rank of the right first token over the whole vocabulary (0 = top)."""
    return rank_of(logits, prompts.answer_first.to(logits.device))


def hit_at_k(ranks: torch.Tensor, k: int) -> float:
    """Fraction of ranks below k (Hit@1 = top-1 accuracy)."""
    return (ranks < k).float().mean().item()


# ---- exact rank of the whole value among its pool ---------------------------------------------------------
@dataclass
class CandidatePlan:
    """All values of one pool; multi-token values sharing leading tokens share one forward pass (a row)."""

    tokens: torch.Tensor         # [values, width] token ids of every value, padded with -1
    continuations: torch.Tensor  # [rows, width - 1] longest value prefixes v[:-1] to append to a prompt, <pad> after
    by_row: torch.Tensor         # [multi-token values] value indices sorted by row
    row_start: torch.Tensor      # [rows + 1] by_row[row_start[r]:row_start[r + 1]] are the values of row r
    shared: torch.Tensor         # [rows] how many leading tokens of its row every value of the row starts with

    def values_of(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rows [b] -> (which of the b rows [m], value index [m]) for every value scored in those rows."""
        counts = self.row_start[rows + 1] - self.row_start[rows]                       # [b]
        which = torch.arange(len(rows)).repeat_interleave(counts)                       # [m]
        within = torch.arange(len(which)) - (counts.cumsum(0) - counts)[which]          # [m] rank inside its row
        return which, self.by_row[self.row_start[rows][which] + within]


def candidate_plan(values: list[list[int]], pad_id: int) -> CandidatePlan:
    """A value's log-probability needs the logits after each of its proper prefixes; one sequence
    prompt + P gives them for every prefix of P, so only the longest prefixes P = v[:-1] need rows
    (372 month-day-comma rows for the 74,772 dates). Single-token values need no row."""
    width = max(len(v) for v in values)
    tokens = np.array([v + [-1] * (width - len(v)) for v in values], dtype=np.int64)
    multi = [i for i, v in enumerate(values) if len(v) > 1]
    prefixes = {tuple(values[i][:-1]) for i in multi}
    inside = {p[:k] for p in prefixes for k in range(1, len(p))}
    longest = sorted(prefixes - inside)                     # not a strict prefix of another needed prefix
    row_of = {}
    for r, p in enumerate(longest):
        for k in range(1, len(p) + 1):
            row_of.setdefault(p[:k], r)
    row = np.array([row_of[tuple(values[i][:-1])] for i in multi], dtype=np.int64)
    order = np.argsort(row, kind="stable")
    shared = np.full(len(longest), width, dtype=np.int64)
    np.minimum.at(shared, row, [len(values[i]) - 1 for i in multi])
    continuations = np.array([list(p) + [pad_id] * (width - 1 - len(p)) for p in longest], dtype=np.int64)
    return CandidatePlan(tokens=torch.from_numpy(tokens),
                         continuations=torch.from_numpy(continuations.reshape(len(longest), width - 1)),
                         by_row=torch.from_numpy(np.array(multi, dtype=np.int64)[order]),
                         row_start=torch.from_numpy(np.searchsorted(row[order], np.arange(len(longest) + 1))),
                         shared=torch.from_numpy(shared))


def _value_log_probs(logits: torch.Tensor, which: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """logits [b, width, vocab] at the positions predicting value tokens 0..width-1 of b sequences; value i
    read from sequence which[i] with tokens [m, width] (-1 padded) -> [m] log-probabilities (summed over tokens)."""
    logp = logits.log_softmax(-1)                                                      # [b, width, vocab]
    which, tokens = which.to(logits.device), tokens.to(logits.device)
    step = torch.arange(tokens.shape[1], device=logits.device)
    picked = logp[which[:, None], step[None, :], tokens.clamp(min=0)]                  # [m, width]
    return picked.masked_fill(tokens < 0, 0.0).sum(-1).cpu()


def _rows_worth_running(model: nn.Module, prefixes: torch.Tensor, plan: CandidatePlan, first: torch.Tensor,
                        best: torch.Tensor, max_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([g, rows] bool, [g, rows] bound): the candidate rows that may hold a value at least as likely as the
    right one (best [g]), and each row's upper bound on the log-probability of its values.

    A row's bound is the log-probability of the leading tokens that all its values share: log-probabilities
    only fall as tokens are added, so a row whose bound is below best holds no value that outranks the
    right one. The bound starts at the first token (first [g, vocab]) and is deepened one token at a time
    while the distinct prefixes to run for it are few (at most a quarter of the rows still alive), e.g.
    the 12 months (prompt + month) before the 372 month-day rows of the dates.
    """
    continuations, shared = plan.continuations, plan.shared                           # [rows, extra], [rows]
    bound = first[:, continuations[:, 0]]                                              # [g, rows]
    alive = bound >= best[:, None] - TOLERANCE
    for depth in range(1, continuations.shape[1]):
        deeper = alive & (shared > depth)                                              # rows to extend by one token
        pair_prompt, pair_row = deeper.nonzero().unbind(1)                             # [pairs]
        keys, key_of = torch.unique(torch.cat([pair_prompt[:, None], continuations[pair_row, :depth]], 1),
                                    dim=0, return_inverse=True)                        # [k, 1 + depth], [pairs]
        if len(keys) == 0 or len(keys) > alive.sum() / 4:
            break
        seqs = torch.cat([prefixes[keys[:, 0]], keys[:, 1:]], 1)                       # [k, length + depth]
        where = torch.full((len(keys), 1), seqs.shape[1] - 1)
        logp = torch.cat([logits[:, 0].log_softmax(-1).cpu() for _, logits in logits_at(model, seqs, where, max_rows)])
        bound[pair_prompt, pair_row] += logp[key_of, continuations[pair_row, depth]]
        alive &= bound >= best[:, None] - TOLERANCE
    return alive, bound


def _right_value(model: nn.Module, prefixes: torch.Tensor, answer: torch.Tensor, pad_id: int,
                 max_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """prefixes [g, length], answer [g, width] right value tokens (-1 padded), teacher-forced ->
    (first-token log-probs [g, vocab], the right value's log-probability [g])."""
    g, length = prefixes.shape
    width = answer.shape[1]
    seqs = torch.cat([prefixes, torch.where(answer[:, :-1] >= 0, answer[:, :-1], pad_id)], 1)
    first, best = [], []
    for rows, logits in logits_at(model, seqs, (length - 1 + torch.arange(width)).expand(g, width), max_rows):
        first.append(logits[:, 0].log_softmax(-1).cpu())
        best.append(_value_log_probs(logits, torch.arange(len(logits)), answer[rows]))
    return torch.cat(first), torch.cat(best)


def _likeliest_first(pair_prompt: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Order of (prompt, row) pairs: every prompt's likeliest row (highest bound [pairs]), then every
    prompt's second likeliest, and so on, so that each batch advances all prompts."""
    by_bound = bound.argsort(descending=True, stable=True)
    by_prompt = by_bound[pair_prompt[by_bound].argsort(stable=True)]                 # prompt, then bound
    group_start = torch.searchsorted(pair_prompt[by_prompt], pair_prompt[by_prompt], right=False)
    turn = torch.empty_like(pair_prompt)
    turn[by_prompt] = torch.arange(len(by_prompt)) - group_start                       # place within its prompt
    return turn.argsort(stable=True)


def value_log_probs(model: nn.Module, prefixes: torch.Tensor, right: torch.Tensor, plan: CandidatePlan,
                    pad_id: int, max_rows: int = MAX_ROWS, prune: bool = True,
                    max_rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """prefixes [g, length] prompts of one length (up to their last token), right [g] right value index ->
    (scores [g, values], beaten [g] bool): the teacher-forced log-probability of every value of the plan, or
    -inf where it was not needed: values that cannot be as likely as the right one (prune), and, with
    max_rank, values left once max_rank values clearly likelier than the right one were found (beaten)."""
    g, length = prefixes.shape
    width = plan.tokens.shape[1]
    first, best = _right_value(model, prefixes, plan.tokens[right], pad_id, max_rows)  # [g, vocab], [g]
    scores = first[:, plan.tokens[:, 0]]                                               # single-token values: done
    scores[:, plan.by_row] = float("-inf")
    ahead = (scores >= best[:, None] + TOLERANCE).sum(1)                               # [g] clearly likelier values
    # multi-token values: one row per (prompt, longest prefix) that may hold a value as likely as the right one
    if prune:
        keep, bound = _rows_worth_running(model, prefixes, plan, first, best, max_rows)   # [g, rows] twice
    else:
        keep, bound = torch.ones(g, len(plan.continuations), dtype=torch.bool), first[:, plan.continuations[:, 0]]
    pair_prompt, pair_row = keep.nonzero().unbind(1)                                   # [pairs]
    pending = _likeliest_first(pair_prompt, bound[pair_prompt, pair_row])              # [pairs] order to run
    positions = (length - 1 + torch.arange(width)).expand(max_rows, width)
    while len(pending):
        if max_rank is not None:
            pending = pending[ahead[pair_prompt[pending]] < max_rank]                  # drop beaten prompts
        batch, pending = pending[:max_rows], pending[max_rows:]
        prompt, row = pair_prompt[batch], pair_row[batch]                              # [b], [b]
        seqs = torch.cat([prefixes[prompt], plan.continuations[row]], 1)               # [b, length + width - 1]
        for _, logits in logits_at(model, seqs, positions[:len(seqs)], max_rows):     # one batch: [b, width, vocab]
            which, value = plan.values_of(row)                                         # [m], [m]
            score = _value_log_probs(logits, which, plan.tokens[value])                # [m]
            scores[prompt[which], value] = score
            ahead.index_add_(0, prompt[which], (score >= best[prompt[which]] + TOLERANCE).long())
    beaten = ahead >= max_rank if max_rank is not None else torch.zeros(g, dtype=torch.bool)
    return scores, beaten


def value_ranks(model: nn.Module, prompts: PromptSet, dm, max_rows: int = MAX_ROWS, prune: bool = True,
                max_rank: int | None = None) -> torch.Tensor:
    """[n] rank (0 = best, ties against) of the right value's teacher-forced log-probability among ALL
    values of its attribute's pool (74,772 for birth dates), exactly; with max_rank, ranks from max_rank
    on are reported as max_rank, and a prompt stops as soon as max_rank values beat it (hits() passes
    max(k): the held-out people's dates then cost a few rows instead of 373).

    Prompts are grouped by (attribute, length) so that the candidates' forward passes need no padding
    of the prompt; a candidate row is skipped when the tokens all its values share are already less
    likely than the whole right value (log-probabilities only fall as tokens are added).
    """
    ranks = torch.empty(len(prompts), dtype=torch.long)
    attribute, last, value = prompts.attribute.cpu(), prompts.last.cpu(), prompts.value.cpu()
    for a in attribute.unique().tolist():
        plan = candidate_plan(dm.builder.value_ids[a], dm.tokenizer.pad_id)
        for end in last[attribute == a].unique().tolist():
            idx = ((attribute == a) & (last == end)).nonzero()[:, 0]                  # [g]
            scores, beaten = value_log_probs(model, prompts.tokens.cpu()[idx, :end + 1], value[idx], plan,
                                             dm.tokenizer.pad_id, max_rows, prune, max_rank)   # [g, values], [g]
            ranks[idx] = rank_of(scores, value[idx])
            if max_rank is not None:
                ranks[idx] = torch.where(beaten, max_rank, ranks[idx].clamp(max=max_rank))
    return ranks.to(prompts.tokens.device)


# ---- Hit@k per attribute -------------------------------------------------------------------------------
def rank_method(attribute: str) -> str:
    """"value_rank" for attributes whose first token is shared by many values, else "first_token"."""
    return "value_rank" if attribute in VALUE_RANK_ATTRIBUTES else "first_token"


def recall_ranks(model: nn.Module, prompts: PromptSet, dm, max_rank: int | None = None) -> torch.Tensor:
    """[n] each prompt's rank under its attribute's rank_method (per prompt, e.g. for bootstrap intervals);
    with max_rank, ranks from max_rank on are reported as max_rank (much cheaper for value ranks)."""
    ranks = first_token_rank(answer_logits(model, prompts), prompts).cpu()
    attribute = prompts.attribute.cpu()
    for a in attribute.unique().tolist():
        if rank_method(dm.attributes[a]) == "value_rank":
            mask = attribute == a
            part = prompts.subset(mask.to(prompts.tokens.device))
            ranks[mask] = value_ranks(model, part, dm, max_rank=max_rank).cpu()
    return ranks if max_rank is None else ranks.clamp(max=max_rank)


def hits(model: nn.Module, prompts: PromptSet, dm, k=(1, 10)) -> dict:
    """{"overall": {"hit@1": .., "hit@10": .., "n": ..}, "<attribute>": {.., "method": "first_token" or
    "value_rank"}}: Hit@k overall and per attribute, each attribute scored by its rank_method."""
    ranks = recall_ranks(model, prompts, dm, max_rank=max(k))      # Hit@k needs no rank beyond max(k)
    attribute = prompts.attribute.cpu()

    def summary(mask: torch.Tensor) -> dict:
        return {**{f"hit@{kk}": hit_at_k(ranks[mask], kk) for kk in k}, "n": int(mask.sum())}

    result = {"overall": summary(torch.ones_like(attribute, dtype=torch.bool))}
    for a in attribute.unique().tolist():
        name = dm.attributes[a]
        result[name] = {**summary(attribute == a), "method": rank_method(name)}
    return result


# ---- greedy accuracy and sampling ----------------------------------------------------------------------
def prompt_accuracy(model: nn.Module, prompts: PromptSet, batch_size: int = BATCH_SIZE) -> float:
    """Fraction of prompts whose every value token is the argmax, teacher-forced: biolab.metrics' attribute
    accuracy on standalone prompts, to report beside val/attr_acc."""
    return answers_right(model, prompts, batch_size).float().mean().item()


def answers_right(model: nn.Module, prompts: PromptSet, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """[n] bool (on CPU): every value token of the prompt is the argmax, teacher-forced."""
    width = prompts.answer.shape[1]
    positions = prompts.last[:, None] + torch.arange(width, device=prompts.last.device)   # [n, width]
    correct = []
    for rows, logits in logits_at(model, prompts.with_answers(), positions, batch_size):  # [b, width, vocab]
        answer = prompts.answer[rows].to(logits.device)
        right = (logits.argmax(-1) == answer) | (answer < 0)
        correct.append(right.all(1).cpu())
    return torch.cat(correct)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """logits [rows, vocab] with -inf outside the top_k tokens and outside the smallest set of most
    probable tokens whose probability reaches top_p (the top token always stays)."""
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p                          # mass before this token reached top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def sample_answers(model: nn.Module, prompts: PromptSet, n_samples: int = 10, temperature: float = 1.0,
                   top_k: int | None = 50, top_p: float | None = 0.9, seed: int = 0,
                   max_new_tokens: int | None = None, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """[n, n_samples, max_new_tokens] sampled continuations of each prompt (default length: the longest
    value of the data, PromptSet.answer's width).

    Temperature, then top-k, then top-p (None or 0 / 1.0 switch them off); temperature 0 is greedy. Seeded by
    a CPU torch.Generator, so the samples are deterministic per seed (for a given batch_size) on CPU.
    """
    if temperature < 0 or n_samples < 1:
        raise ValueError(f"need temperature >= 0 and n_samples >= 1, got {temperature}, {n_samples}")
    new = prompts.answer.shape[1] if max_new_tokens is None else max_new_tokens
    generator = torch.Generator().manual_seed(seed)
    tokens = prompts.tokens.repeat_interleave(n_samples, 0)               # [n * samples, pos]
    last = prompts.last.repeat_interleave(n_samples, 0)                   # [n * samples]
    out = []
    with inference(model):
        for start in range(0, len(tokens), batch_size):
            rows = slice(start, start + batch_size)
            out.append(generate(model, tokens[rows], last[rows], new,
                                lambda logits: next_token(logits, temperature, top_k, top_p, generator)))
    return torch.cat(out).view(len(prompts), n_samples, new).to(prompts.tokens.device)


def generate(model: nn.Module, tokens: torch.Tensor, last: torch.Tensor, new: int, choose) -> torch.Tensor:
    """tokens [b, pos] right-padded prompts, last [b] -> [b, new] tokens chosen one at a time by
    choose(logits [b, vocab]) -> [b], each appended after the row's own last token (no KV cache)."""
    device = model_device(model)
    seqs = torch.cat([tokens, tokens.new_zeros(len(tokens), new)], dim=1).to(device)   # [b, pos + new]
    rows = torch.arange(len(seqs), device=device)
    where = last.to(device)                                               # [b] position predicting the next token
    for _ in range(new):
        logits = model(seqs[:, :int(where.max()) + 1])[rows, where].float()   # [b, vocab]
        seqs[rows, where + 1] = choose(logits).to(device)
        where = where + 1
    picked = last.to(device)[:, None] + 1 + torch.arange(new, device=device)  # [b, new]
    return seqs.gather(1, picked).cpu()


def next_token(logits: torch.Tensor, temperature: float, top_k, top_p, generator: torch.Generator) -> torch.Tensor:
    """logits [rows, vocab] -> [rows] next token: argmax at temperature 0, else a seeded sample."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def answers_correct(samples: torch.Tensor, prompts: PromptSet) -> torch.Tensor:
    """samples [n, n_samples, new] -> [n, n_samples] bool: the sample is the full right value, ended (the
    next sampled token, where one was sampled, is the sentence's answer_end "."), so "Washington" is not
    taken for a right "Washington University" nor the reverse."""
    n, _, new = samples.shape
    device = samples.device
    length = prompts.answer_len.to(device)[:, None]                       # [n, 1]
    step = torch.arange(new, device=device)[None]                         # [1, new]
    answer = prompts.answer.to(device)[:, :new]
    answer = torch.cat([answer, answer.new_full((n, new - answer.shape[1]), -1)], 1)   # [n, new]
    value_ok = ((samples == answer[:, None]) | (step >= length)[:, None]).all(-1) & (length <= new)
    at_end = (samples == prompts.answer_end.to(device)[:, None, None]) & (step == length)[:, None]
    return value_ok & (at_end.any(-1) | (length >= new))
