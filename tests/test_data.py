"""Data behaviour: deterministic populations, exact value spans, pure-function training stream."""

import math

import numpy as np
import pytest
import torch

from biolab.data.biographies import IGNORE_INDEX
from biolab.data.datamodule import BioDataModule
from biolab.errors import ConfigError
from biolab.data.pools import load_pools, render_date
from biolab.data.population import make_populations
from biolab.data.templates import ATTRIBUTES, TEMPLATES
from biolab.data.tokenizer import WordTokenizer

from conftest import small_dm


def test_population_is_deterministic_and_names_unique():
    pools = load_pools()
    a_seen, a_unseen = make_populations(pools, 500, 100, seed=3)
    b_seen, b_unseen = make_populations(pools, 500, 100, seed=3)
    c_seen, _ = make_populations(pools, 500, 100, seed=4)
    np.testing.assert_array_equal(a_seen.names, b_seen.names)
    np.testing.assert_array_equal(a_seen.values, b_seen.values)
    np.testing.assert_array_equal(a_seen.template_perm, b_seen.template_perm)
    np.testing.assert_array_equal(a_unseen.values, b_unseen.values)
    assert not np.array_equal(a_seen.names, c_seen.names)
    names = {tuple(n) for n in a_seen.names}
    unseen_names = {tuple(n) for n in a_unseen.names}
    assert len(names) == 500 and len(unseen_names) == 100
    assert not names & unseen_names
    # every template permutation is a permutation of 0..24
    assert (np.sort(a_seen.template_perm, axis=-1) == np.arange(25)).all()


def test_seen_population_does_not_depend_on_unseen_count():
    pools = load_pools()
    a, _ = make_populations(pools, 300, 10, seed=0)
    b, _ = make_populations(pools, 300, 200, seed=0)
    np.testing.assert_array_equal(a.names, b.names)
    np.testing.assert_array_equal(a.values, b.values)


def test_attribute_values_are_roughly_uniform():
    pools = load_pools()
    seen, _ = make_populations(pools, 20000, 0, seed=0)
    majors = np.bincount(seen.values[:, ATTRIBUTES.index("major")], minlength=pools.size("major"))
    expected = 20000 / pools.size("major")
    chi2 = ((majors - expected) ** 2 / expected).sum()
    assert chi2 < 99 + 4 * math.sqrt(2 * 99)  # chi-square, 99 dof, fixed seed


def test_baseline_formula_on_default_pools():
    pools = load_pools()
    expected = (math.log(800) * 2 + math.log(200) + math.log(100) + math.log(500) + math.log(201 * 12 * 31)) / 6
    assert pools.baseline() == pytest.approx(expected)
    assert pools.baseline() == pytest.approx(6.785, abs=1e-3)
    assert pools.baseline(("major",)) == pytest.approx(math.log(100))


def test_render_date_covers_impossible_dates():
    assert render_date(0) == "January 1, 1900"
    assert render_date(31 + 30) == "February 31, 1900"
    assert render_date(201 * 12 * 31 - 1) == "December 31, 2100"


def test_every_attribute_renders_in_every_template():
    pools = load_pools()
    tok = WordTokenizer.from_pools(pools)
    name = f"{pools.given_names[0]} {pools.given_names[1]} {pools.surnames[0]}"
    for attribute in ATTRIBUTES:
        value = pools.values(attribute)[5]
        for template in TEMPLATES[attribute]:
            ids = tok.encode(template.format(name=name, value=value))
            value_ids = tok.encode(value)
            # the value's tokens close the sentence, right before its period
            assert ids[-len(value_ids) - 1:-1] == value_ids and tok.itos[ids[-1]] == "."


def test_value_mask_covers_exactly_the_value_tokens():
    dm = small_dm()
    pools, tok = dm.pools, dm.tokenizer
    batch = dm.train_batch(0)
    people = np.random.default_rng([dm.train_seed, 0, 0]).integers(0, dm.population_size, size=8)
    for b in range(8):
        targets = batch["targets"][b]
        attr = batch["value_attr"][b]
        person = people[b]
        for a, attribute in enumerate(dm.attributes):
            span = targets[attr == a].tolist()
            value_index = dm.seen.values[person, ATTRIBUTES.index(attribute)]
            assert span == tok.encode(pools.values(attribute)[value_index]), (b, attribute)
        # non-value tokens include the name and template words; padding is ignored
        assert (targets[attr >= 0] != IGNORE_INDEX).all()
    assert batch["input_ids"].shape == batch["targets"].shape == batch["value_attr"].shape


def test_train_batches_are_a_pure_function_of_seed_step_rank():
    dm1, dm2 = small_dm(), small_dm()
    for step in (0, 7, 1000):
        b1, b2 = dm1.train_batch(step), dm2.train_batch(step)
        for key in b1:
            assert torch.equal(b1[key], b2[key])
    assert not torch.equal(dm1.train_batch(0)["input_ids"][:, :20], dm1.train_batch(1)["input_ids"][:, :20])
    other_seed = small_dm(train_seed=3)
    assert not torch.equal(other_seed.train_batch(0)["input_ids"][:, :20], dm1.train_batch(0)["input_ids"][:, :20])
    # the population does not depend on the training seed
    np.testing.assert_array_equal(other_seed.seen.names, dm1.seen.names)


def test_stream_resumes_at_the_restored_step_and_workers_keep_order():
    from biolab.data.datamodule import TrainStream
    dm = small_dm()
    stream = iter(TrainStream(dm.train_batches, start_step=5))
    assert torch.equal(next(stream)["input_ids"], dm.train_batch(5)["input_ids"])
    loader = torch.utils.data.DataLoader(TrainStream(dm.train_batches, 3), batch_size=None, num_workers=2)
    got = [b["input_ids"] for _, b in zip(range(4), loader)]
    for i, ids in enumerate(got):
        assert torch.equal(ids, dm.train_batch(3 + i)["input_ids"])


def test_padding_only_to_longest_in_batch():
    dm = small_dm()
    batch = dm.train_batch(0)
    lengths = (batch["targets"] != IGNORE_INDEX).sum(1)
    assert lengths.max().item() == batch["input_ids"].shape[1]


def _templates_used(dm, ids, population):
    """Recover (person, attribute index, template id) of each sentence of one biography."""
    tok, builder = dm.tokenizer, dm.builder
    period = tok.stoi["."]
    name_to_person = {(builder.given_ids[f], builder.given_ids[m], builder.surname_ids[l]): p
                      for p, (f, m, l) in enumerate(population.names)}
    body = [i for i in ids if i not in (tok.bos_id, tok.eos_id, tok.pad_id)]
    sentences, current = [], []
    for token in body:
        current.append(token)
        if token == period:
            sentences.append(current)
            current = []
    found = []
    for sentence in sentences:
        matches = []
        for a, attribute in enumerate(dm.attributes):
            for t, (before, between, after) in enumerate(builder.template_parts[a]):
                n = len(before)
                name = tuple(sentence[n:n + 3])
                person = name_to_person.get(name)
                if person is None or sentence[:n] != before or sentence[n + 3:n + 3 + len(between)] != between:
                    continue
                value = builder.value_ids[a][population.values[person, ATTRIBUTES.index(attribute)]]
                if sentence[n + 3 + len(between):] == value + after:
                    matches.append((person, a, t))
        assert len(matches) == 1, [tok.itos[i] for i in sentence]
        found.append(matches[0])
    return found


def test_training_uses_training_templates_and_evaluation_uses_evaluation_templates():
    dm = small_dm(n_train_templates=3)
    batch = dm.train_batch(4)
    for row in batch["input_ids"]:
        used = _templates_used(dm, row.tolist(), dm.seen)
        assert len(used) == 6
        for person, a, t in used:
            assert t in dm.seen.template_perm[person, a, :3]
    for name, population in (("val", dm.seen), ("unseen", dm.unseen)):
        for row in dm.eval_batches[name][0]["input_ids"][:8]:
            for person, a, t in _templates_used(dm, row.tolist(), population):
                assert t in population.template_perm[person, a, 20:]


def test_fixed_sentence_order_option():
    dm = small_dm(shuffle_sentences=False)
    attr = dm.train_batch(0)["value_attr"][0]
    first_seen = [int(a) for a in attr[attr >= 0].unique_consecutive()]
    assert first_seen == list(range(6))


@pytest.mark.parametrize("kwargs, key", [
    (dict(population_size=-5), "data.population_size"),
    (dict(n_train_templates=21), "data.n_train_templates"),
    (dict(attributes=["birth_date", "shoe_size"]), "data.attributes"),
    (dict(population_size=900 * 900 * 1000), "data.population_size + data.n_unseen"),
    (dict(batch_size=0), "data.batch_size"),
])
def test_bad_data_config_fails_with_the_key_named(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("+", r"\+")):
        BioDataModule(**kwargs)


def test_each_rank_gets_its_own_reproducible_share_of_the_batch():
    from dataclasses import replace
    dm = small_dm(batch_size=8)
    rank0 = replace(dm.train_batches, batch_size=4, rank=0)
    rank1 = replace(dm.train_batches, batch_size=4, rank=1)
    assert not torch.equal(rank0(3)["input_ids"][:, :10], rank1(3)["input_ids"][:, :10])
    assert torch.equal(rank1(3)["input_ids"], replace(rank1)(3)["input_ids"])
    assert rank0(3)["input_ids"].shape[0] == 4


def test_the_held_out_test_set_has_other_people_than_val_and_leaves_the_other_sets_alone():
    plain, with_test = small_dm(), small_dm(test_eval_size=24)
    assert "test" not in plain.eval_batches and "test" in with_test.eval_batches
    for name in plain.eval_batches:  # adding the test set changes no other set
        for a, b in zip(plain.eval_batches[name], with_test.eval_batches[name]):
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(len(b["input_ids"]) for b in with_test.eval_batches["test"]) == 24
    val_people = set(np.random.default_rng([1, 1001]).integers(0, 64, size=32).tolist())  # small_dm: seed 1
    test_people = with_test._eval_people(np.random.default_rng([1, 1005]), "test", 24, 64)
    assert len(test_people) == 24 and not set(test_people.tolist()) & val_people
    # the sequences hold exactly those people's names
    names = {tuple(with_test.builder.name_ids(with_test.seen, p)) for p in test_people}
    for batch in with_test.eval_batches["test"]:
        for seq in batch["input_ids"].tolist():
            assert any(any(tuple(seq[i:i + 3]) == name for i in range(len(seq) - 2)) for name in names)
    again = small_dm(test_eval_size=24)
    for a, b in zip(with_test.eval_batches["test"], again.eval_batches["test"]):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_test_set_with_no_one_left_outside_val_is_refused():
    with pytest.raises(ConfigError, match="data.test_eval_size"):
        small_dm(population_size=8, eval_size=400, test_eval_size=4)
