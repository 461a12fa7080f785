"""biolab.mech prompts and scoring: prompts are exact prefixes of training sentences, corrupted prompts
align with clean ones, and every score is checked on models whose answer is known."""

import numpy as np
import pytest
import torch
from torch import nn

from biolab.data.biographies import ROLE_NAME, ROLE_OTHER
from biolab.data.datamodule import BioDataModule
from biolab.data.pools import render_date
from biolab.data.templates import TEMPLATES
from biolab.mech import scoring
from biolab.mech.prompts import corrupt, recall_prompts
from biolab.mech.scoring import (answer_logits, answers_correct, filter_logits, first_token_prob, first_token_rank,
                                 hit_at_k, hits, logit_diff, prompt_accuracy, sample_answers, value_ranks)
from biolab.model import Transformer, TransformerConfig

from conftest import small_dm


@pytest.fixture(scope="module")
def dm():
    return small_dm()


def population(dm, seen):
    return dm.seen if seen else dm.unseen


def value_text(dm, attribute, value):
    return render_date(value) if attribute == "birth_date" else dm.pools.values(attribute)[value]


# ---- models whose answers are known ------------------------------------------------------------------
class Oracle(nn.Module):
    """Predicts the next token of each prompt's sentence (prompt, value, ".") with logit `sharp`, uniform
    elsewhere; with wrong_from=j it predicts <pad> instead from value token j on."""

    def __init__(self, prompts, vocab, sharp=10.0, wrong_from=None):
        super().__init__()
        self.vocab, self.sharp, self.table = vocab, sharp, {}
        full = prompts.with_answers()
        for i in range(len(prompts)):
            n, last = int(prompts.answer_len[i]), int(prompts.last[i])
            sentence = full[i, :last + 1 + n].tolist() + [int(prompts.answer_end[i])]
            for j in range(last, last + n + 1):
                wrong = wrong_from is not None and wrong_from <= j - last < n
                self.table[tuple(sentence[:j + 1])] = 0 if wrong else sentence[j + 1]

    def forward(self, tokens):
        logits = torch.zeros(*tokens.shape, self.vocab)
        for b, row in enumerate(tokens.tolist()):
            for j in range(len(row)):
                nxt = self.table.get(tuple(row[:j + 1]))
                if nxt is not None:
                    logits[b, j, nxt] = self.sharp
        return logits


class Bigram(nn.Module):
    """logits[b, j] = (A[tokens[b, j]] + C[tokens[b, 1]]) @ B + bonus[tokens[b, j]]: depends on the previous
    token and the first name; boost(prompts) makes each prompt's right first token near-certain and its
    next tokens likelier (a peaked model, for which value_ranks skips most candidates)."""

    def __init__(self, vocab, rank=8, seed=0, scale=1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A, self.C, self.B = (nn.Parameter(torch.randn(*s, generator=g) * scale ** 0.5)
                                  for s in ((vocab, rank), (vocab, rank), (rank, vocab)))
        self.register_buffer("bonus", torch.zeros(vocab, vocab))

    def boost(self, prompts, first=60.0, rest=6.0):
        self.bonus[prompts.tokens[torch.arange(len(prompts)), prompts.last], prompts.answer_first] = first
        for i in range(len(prompts)):
            for j in range(1, int(prompts.answer_len[i])):
                self.bonus[prompts.answer[i, j - 1], prompts.answer[i, j]] += rest
        return self

    def forward(self, tokens):
        return (self.A[tokens] + self.C[tokens[:, 1:2]]) @ self.B + self.bonus[tokens]

    def brute_force_rank(self, dm, prompts, i):
        """Rank of prompt i's value among every value of its pool, by scoring each value separately."""
        values = dm.builder.value_ids[int(prompts.attribute[i])]
        width = max(len(v) for v in values)
        tokens = torch.tensor([v + [-1] * (width - len(v)) for v in values])          # [values, width]
        prev = torch.cat([prompts.tokens[i, prompts.last[i]].expand(len(values), 1), tokens[:, :-1]], 1)
        with torch.no_grad():
            logits = (self.A + self.C[prompts.tokens[i, 1]]) @ self.B + self.bonus   # [vocab, vocab]: prev -> next
            logp = logits.log_softmax(-1)
            scores = logp[prev.clamp(min=0), tokens.clamp(min=0)].masked_fill(tokens < 0, 0).sum(1)
        return int((scores >= scores[prompts.value[i]]).sum()) - 1


def tiny_transformer(dm, seed=0):
    torch.manual_seed(seed)
    return Transformer(TransformerConfig(vocab_size=dm.vocab_size, n_layers=2, n_heads=2, d_model=32, d_mlp=64,
                                         max_seq_len=64))


# ---- prompts -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("split,templates", [("seen", "eval"), ("seen", "train"), ("unseen", "eval")])
def test_prompts_are_exact_prefixes_of_training_sentences(dm, split, templates):
    prompts = recall_prompts(dm, split=split, n=4, templates=templates, seed=3)
    assert len(prompts) == 4 * len(dm.attributes)
    for i in range(len(prompts)):
        a, person, last, n = (int(x[i]) for x in (prompts.attribute, prompts.person, prompts.last, prompts.answer_len))
        pop = population(dm, bool(prompts.seen[i]))
        # the data code's biography whose first sentence is this prompt's sentence
        chosen = np.zeros((1, len(dm.attributes)), dtype=int)
        chosen[0, a] = int(prompts.template[i])
        order = np.array([[a] + [b for b in range(len(dm.attributes)) if b != a]])
        ids, attr_of, role, _ = dm.builder.build(pop, np.array([person]), chosen, order, with_roles=True)[0]
        assert prompts.tokens[i, :last + 1].tolist() == ids[:last + 1]
        assert prompts.answer[i, :n].tolist() == ids[last + 1:last + 1 + n]
        assert (prompts.answer[i, n:] == -1).all()
        assert attr_of[last + 1:last + 2 + n] == [a] * n + [-1]          # the answer is the whole value span
        assert int(prompts.answer_end[i]) == ids[last + 1 + n]
        assert prompts.role[i, :last + 1].tolist() == role[:last + 1]
        assert int(prompts.value[i]) == pop.values[person, dm.builder.attr_columns[a]]
        # and the same words as the template filled in as text
        name = dm.attributes[a]
        text = TEMPLATES[name][int(prompts.template[i])].format(name=pop.full_name(dm.pools, person),
                                                                value=value_text(dm, name, int(prompts.value[i])))
        assert ids[:last + 2 + n] == [dm.tokenizer.bos_id] + dm.tokenizer.encode(text)
        assert (prompts.tokens[i, last + 1:] == dm.tokenizer.pad_id).all()
        # the template is one of this person's evaluation (or training) templates
        perm = pop.template_perm[person, dm.builder.attr_columns[a]]
        allowed = perm[-5:] if templates == "eval" else perm[:dm.n_train_templates]
        assert int(prompts.template[i]) in allowed
    assert bool(prompts.seen.all()) == (split == "seen") and bool(prompts.seen.any()) == (split == "seen")


def test_name_positions_point_at_the_three_name_tokens(dm):
    prompts = recall_prompts(dm, n=6)
    for i in range(len(prompts)):
        pop = population(dm, bool(prompts.seen[i]))
        name = dm.tokenizer.encode(pop.full_name(dm.pools, int(prompts.person[i])))
        assert prompts.tokens[i, prompts.name_pos[i]].tolist() == name
        assert (prompts.role[i, prompts.name_pos[i]] == ROLE_NAME).all()
    assert ((prompts.role == ROLE_NAME).sum(1) == 3).all()
    assert (prompts.role[:, 0] == ROLE_OTHER).all() and (prompts.tokens[:, 0] == dm.tokenizer.bos_id).all()


def test_recall_prompts_are_balanced_and_deterministic_per_seed(dm):
    a = recall_prompts(dm, n=10, attributes=["major", "employer"], seed=0)
    b = recall_prompts(dm, n=10, attributes=["major", "employer"], seed=0)
    c = recall_prompts(dm, n=10, attributes=["major", "employer"], seed=1)
    only_major = recall_prompts(dm, n=10, attributes=["major"], seed=0)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.person, b.person)
    assert not torch.equal(a.person, c.person)
    assert torch.equal(only_major.person, a.person[:10]) and torch.equal(only_major.template, a.template[:10])
    major, employer = dm.attributes.index("major"), dm.attributes.index("employer")
    assert a.attribute.tolist() == [major] * 10 + [employer] * 10
    assert len(set(a.person[:10].tolist())) == 10                  # distinct people per attribute


def test_corrupted_prompts_align_with_clean_ones(dm):
    for split in ("seen", "unseen"):
        clean = recall_prompts(dm, split=split, n=8, seed=2)
        bad = corrupt(clean, dm, seed=0)
        assert bad.tokens.shape == clean.tokens.shape and torch.equal(bad.last, clean.last)
        assert torch.equal(bad.template, clean.template) and torch.equal(bad.attribute, clean.attribute)
        assert torch.equal(bad.seen, clean.seen) and torch.equal(bad.name_pos, clean.name_pos)
        assert (bad.person != clean.person).all()
        assert (bad.answer_first != clean.answer_first).all() and (bad.value != clean.value).all()
        outside_name = clean.role != ROLE_NAME                      # same template: only the name differs
        assert torch.equal(bad.tokens[outside_name], clean.tokens[outside_name])
        assert (bad.tokens[clean.role == ROLE_NAME] != clean.tokens[clean.role == ROLE_NAME]).any()
        # each corrupted prompt is itself a valid prompt of its person
        pop = population(dm, split == "seen")
        cols = torch.tensor(dm.builder.attr_columns)[bad.attribute].numpy()
        assert (bad.value.numpy() == pop.values[bad.person.numpy(), cols]).all()
    again, other = corrupt(clean, dm, seed=0), corrupt(clean, dm, seed=1)
    assert torch.equal(again.tokens, bad.tokens) and torch.equal(again.person, bad.person)
    assert not torch.equal(other.person, bad.person)
    part = corrupt(clean.subset([3, 1]), dm, seed=0)               # a subset keeps its padding width
    assert part.tokens.shape == (2, clean.tokens.shape[1])


def test_corrupt_without_a_counterpart_names_the_attribute():
    lonely = small_dm(population_size=1, attributes=["university"])
    prompts = recall_prompts(lonely, n=1)
    with pytest.raises(ValueError, match="university"):
        corrupt(prompts, lonely)


def test_bad_input_is_named(dm):
    with pytest.raises(ValueError, match="height"):
        recall_prompts(dm, attributes=["height"])
    with pytest.raises(ValueError, match="n=65"):
        recall_prompts(dm, n=65)
    with pytest.raises(ValueError, match="n=17"):
        recall_prompts(dm, split="unseen", n=17)
    with pytest.raises(ValueError, match="held_out"):
        recall_prompts(dm, split="held_out")
    with pytest.raises(ValueError, match="test"):
        recall_prompts(dm, templates="test")
    with pytest.raises(ValueError, match="setup"):
        recall_prompts(BioDataModule(population_size=8, n_unseen=2, eval_size=4))


# ---- scores on hand-built logits ---------------------------------------------------------------------
def test_logit_diff_rank_prob_and_hits_on_hand_built_logits(dm):
    clean = recall_prompts(dm, n=1, attributes=["birth_city", "major", "employer"])
    bad = corrupt(clean, dm)
    vocab = dm.vocab_size
    logits = torch.zeros(3, vocab)
    rows = torch.arange(3)
    logits[rows, clean.answer_first] = torch.tensor([5.0, 1.0, 2.0])
    logits[rows, bad.answer_first] = torch.tensor([2.0, 4.0, 2.0])
    assert logit_diff(logits, clean, bad).tolist() == [3.0, -3.0, 0.0]
    # prompt 0: answer on top; 1: only the corrupted token above it; 2: tied with it (ties count against)
    assert first_token_rank(logits, clean).tolist() == [0, 1, 1]
    expected = torch.exp(logits[rows, clean.answer_first]) / torch.exp(logits).sum(1)
    torch.testing.assert_close(first_token_prob(logits, clean), expected)
    assert first_token_rank(torch.zeros(3, vocab), clean).tolist() == [vocab - 1] * 3   # constant: no hits
    ranks = torch.tensor([0, 3, 12, 9])
    assert hit_at_k(ranks, 1) == 0.25 and hit_at_k(ranks, 10) == 0.75


def test_answer_logits_are_the_last_positions_logits(dm):
    prompts = recall_prompts(dm, n=3)
    model = tiny_transformer(dm)
    model.train()
    got = answer_logits(model, prompts, batch_size=5)
    assert model.training                                           # the mode is restored
    with torch.no_grad():
        for i in range(len(prompts)):
            alone = model.eval()(prompts.tokens[i:i + 1, :prompts.last[i] + 1])[0, -1]
            torch.testing.assert_close(got[i], alone, rtol=1e-4, atol=1e-5)


# ---- whole-value ranks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["peaked", "unsure_first", "flat"])
def test_value_ranks_match_brute_force_scoring(dm, kind, monkeypatch):
    prompts = recall_prompts(dm, n=2, attributes=["university", "birth_date", "birth_city"], seed=5)
    model = Bigram(dm.vocab_size, scale=1.0 if kind == "peaked" else 0.05)
    if kind == "peaked":          # other months, and most days of the right month, get skipped
        model.boost(prompts)
    if kind == "unsure_first":    # first tokens nearly tied, the rest of each right value near-certain:
        model.boost(prompts, first=0.0, rest=60.0)   # skipping a row too eagerly would change ranks
    rows = []
    real_logits_at = scoring.logits_at
    monkeypatch.setattr(scoring, "logits_at", lambda m, t, *args: rows.append(len(t)) or real_logits_at(m, t, *args))
    ranks = value_ranks(model, prompts, dm, max_rows=256)
    pruned_rows, rows[:] = sum(rows), []
    expected = [model.brute_force_rank(dm, prompts, i) for i in range(len(prompts))]
    assert ranks.tolist() == expected
    assert len(set(expected)) > 1                                  # the check is not vacuous
    rows[:] = []
    assert torch.equal(value_ranks(model, prompts, dm, max_rows=300, prune=False), ranks)
    unpruned_rows, rows[:] = sum(rows), []
    if kind == "peaked":          # skipping saves most of the work
        assert pruned_rows < unpruned_rows / 5
    # capped ranks: exact below the cap, and prompts stop once the cap is reached
    assert torch.equal(value_ranks(model, prompts, dm, max_rows=64, max_rank=100), ranks.clamp(max=100))
    if kind == "flat":
        assert sum(rows) < pruned_rows / 3


def test_value_ranks_of_an_oracle_are_zero(dm):
    prompts = recall_prompts(dm, n=2, attributes=["university", "birth_date"], seed=6)
    assert value_ranks(Oracle(prompts, dm.vocab_size), prompts, dm).tolist() == [0] * len(prompts)


def test_hits_use_whole_value_ranks_where_first_tokens_are_shared(dm):
    prompts = recall_prompts(dm, n=4, attributes=["university", "birth_date", "birth_city", "major"], seed=7)
    perfect = hits(Oracle(prompts, dm.vocab_size), prompts, dm)
    assert all(perfect[a]["hit@1"] == 1.0 for a in ("overall", "university", "birth_date", "birth_city", "major"))
    assert perfect["overall"]["n"] == 16 and perfect["major"]["n"] == 4
    assert {a: perfect[a]["method"] for a in ("university", "birth_date", "birth_city", "major")} == {
        "university": "value_rank", "birth_date": "value_rank", "birth_city": "first_token", "major": "first_token"}
    # right first token, wrong rest: first-token attributes still hit, whole-value attributes do not
    first_only = hits(Oracle(prompts, dm.vocab_size, wrong_from=1), prompts, dm)
    assert first_only["birth_date"]["hit@1"] == 0.0 and first_only["birth_city"]["hit@1"] == 1.0
    multi = (prompts.answer_len > 1) & (prompts.attribute == dm.attributes.index("university"))
    assert first_only["university"]["hit@1"] <= 1 - multi.sum().item() / 4
    model = Bigram(dm.vocab_size, seed=1)
    got = hits(model, prompts, dm, k=(1, 10, 1000))
    uni = prompts.subset(prompts.attribute == dm.attributes.index("university"))
    city = prompts.subset(prompts.attribute == dm.attributes.index("birth_city"))
    assert got["university"]["hit@1000"] == hit_at_k(value_ranks(model, uni, dm), 1000)
    assert got["birth_city"]["hit@1000"] == hit_at_k(first_token_rank(answer_logits(model, city), city), 1000)


# ---- greedy accuracy and sampling -----------------------------------------------------------------------
def test_prompt_accuracy_of_an_oracle_is_one(dm):
    prompts = recall_prompts(dm, n=4)
    assert prompt_accuracy(Oracle(prompts, dm.vocab_size), prompts) == 1.0
    single = (prompts.answer_len == 1).float().mean().item()
    assert 0 < single < 1
    assert prompt_accuracy(Oracle(prompts, dm.vocab_size, wrong_from=1), prompts) == pytest.approx(single)
    assert prompt_accuracy(Oracle(prompts, dm.vocab_size, wrong_from=0), prompts) == 0.0


def test_sampler_is_seeded_and_greedy_at_temperature_zero(dm):
    prompts = recall_prompts(dm, n=2)
    model = tiny_transformer(dm)
    a = sample_answers(model, prompts, n_samples=3, seed=0)
    assert a.shape == (len(prompts), 3, prompts.answer.shape[1])
    assert torch.equal(a, sample_answers(model, prompts, n_samples=3, seed=0))
    assert not torch.equal(a, sample_answers(model, prompts, n_samples=3, seed=1))
    greedy = sample_answers(model, prompts, n_samples=2, temperature=0, max_new_tokens=4, batch_size=5)
    with torch.no_grad():
        for i in range(len(prompts)):
            seq = prompts.tokens[i, :prompts.last[i] + 1].tolist()
            for _ in range(4):
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
            assert greedy[i, 0].tolist() == greedy[i, 1].tolist() == seq[-4:]
    assert torch.equal(sample_answers(model, prompts, n_samples=2, top_k=1, max_new_tokens=4, batch_size=5), greedy)


def test_filter_logits_keeps_top_k_and_the_top_p_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda f: torch.isfinite(f).squeeze(0).tolist()
    assert kept(filter_logits(logits, None, 0.7)) == [True, True, False, False]
    assert kept(filter_logits(logits, None, 0.5)) == [True, False, False, False]
    assert kept(filter_logits(logits, None, 0.96)) == [True, True, True, True]
    assert kept(filter_logits(logits, 3, None)) == [True, True, True, False]
    assert kept(filter_logits(logits[:, [3, 1, 0, 2]], None, 0.7)) == [False, True, True, False]


def test_answers_correct_needs_the_whole_ended_value(dm):
    prompts = recall_prompts(dm, n=3)
    oracle = Oracle(prompts, dm.vocab_size, sharp=30.0)
    samples = sample_answers(oracle, prompts, n_samples=2, seed=0)
    assert answers_correct(samples, prompts).all()
    n, width = len(prompts), samples.shape[-1]
    first = prompts.answer_first
    one_token = (prompts.answer_len == 1).nonzero()[0, 0]
    hand = samples.clone()
    hand[:, 0, 0] = (first + 1) % dm.vocab_size                     # wrong first token
    hand[one_token, 1, 1] = dm.tokenizer.stoi["of"]                 # right token, but the value goes on
    right = answers_correct(hand, prompts)
    assert not right[:, 0].any() and not right[one_token, 1]
    assert right[torch.arange(n) != one_token, 1].all()
    short = samples[..., :1]                                         # too short for multi-token values
    assert torch.equal(answers_correct(short, prompts), (prompts.answer_len == 1)[:, None].expand(n, 2))
    assert width == prompts.answer.shape[1]
