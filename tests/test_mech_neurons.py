"""Hallucination neurons (biolab.mech.neurons, neuron_probe, neuron_scaling, neurons_study): CETT equals a direct
computation, the probe finds planted neurons, alpha = 1 changes nothing and alpha = 0 is zero-ablation, labels are
deterministic per seed and exact where sampling cannot vary, bad input is one line and exit code 2."""

import json

import numpy as np
import pytest
import torch

from biolab.mech.__main__ import main as mech_main
from biolab.mech.neuron_probe import Data, random_set_aurocs, select_l1_probe
from biolab.mech.neuron_scaling import conflict_prompts, slope_interval
from biolab.mech.neurons import (answer_lengths, cett_features, classes, greedy_answers, label_items,
                                 right_path_probability, scaling_hooks)
from biolab.mech.prompts import recall_prompts

from conftest import small_dm, small_model

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def setting():
    dm = small_dm()
    return dm, small_model(dm.vocab_size), recall_prompts(dm, "seen", n=6)


def test_cett_equals_a_direct_computation_from_weights_and_activations(setting):
    dm, model, prompts = setting
    answers = greedy_answers(model, prompts)
    feats = cett_features(model, prompts, answers, batch_size=5)   # batches of another size than the set
    length = answer_lengths(answers, prompts)
    i = 3
    last, n = int(prompts.last[i]), int(length[i])
    tokens = torch.cat([prompts.tokens[i, :last + 1], answers[i]])[None]
    _, cache = model.run_with_cache(tokens)
    expected_answer, expected_other = [], []
    for layer, block in enumerate(model.blocks):
        z = cache[f"blocks.{layer}.mlp.hook_post"][0]                       # [pos, d_mlp]
        w = block.mlp.down.weight                                           # [d_model, d_mlp]
        direct = torch.stack([torch.stack([(w[:, j] * z[t, j]).norm() for j in range(z.shape[1])])
                              / (z[t] @ w.T).norm() for t in range(z.shape[0])])   # ||W[:, j] z_j|| / ||h||
        expected_answer.append(direct[last:last + n].mean(0))
        expected_other.append(direct[1:last].mean(0))
    torch.testing.assert_close(feats.answer[i], torch.cat(expected_answer), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(feats.other[i], torch.cat(expected_other), rtol=1e-4, atol=1e-6)
    assert feats.answer.shape == (len(prompts), 2 * 64) and (feats.confidence[:, 0] <= 1).all()


def test_probe_recovers_planted_neurons():
    rng = np.random.default_rng(0)
    n, d, planted = 400, 300, [7, 42, 250]

    def draw(m):
        y = rng.integers(0, 2, size=m)
        X = rng.normal(size=(m, d))
        X[:, planted] += 1.5 * y[:, None]
        X[:, 100] -= 1.5 * y                      # a negatively weighted neuron: not an H-neuron
        return Data(X, y, np.arange(m))

    train, val, test = draw(n), draw(n // 2), draw(n // 2)
    probe, sweep = select_l1_probe(train, val, n_grid=8)
    assert set(planted) <= set(probe.h_neurons) and 100 not in probe.h_neurons
    assert len(probe.h_neurons) <= 10 and sweep[0]["n_nonzero"] <= sweep[-1]["n_nonzero"]
    from biolab.mech.neuron_probe import auroc
    assert auroc(probe.decision(test.X), test.y) > 0.9
    assert np.mean(random_set_aurocs(train, test, k=3, n_sets=5)) < 0.75   # random sets rarely hold the planted ones


def test_silencing_enters_the_choice_of_c():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=300)
    X = rng.normal(size=(300, 50))
    X[:, :20] += 0.8 * y[:, None]
    data = Data(X, y, np.arange(300))
    free, _ = select_l1_probe(data, data, n_grid=6)
    costly, sweep = select_l1_probe(data, data, lambda neurons: -len(neurons), n_grid=6)  # each neuron costs 1
    assert len(costly.h_neurons) < len(free.h_neurons)
    assert all(row["silenced_accuracy"] == -row["n_h_neurons"] for row in sweep)


def test_alpha_one_changes_nothing_and_alpha_zero_is_zero_ablation(setting):
    dm, model, prompts = setting
    neurons = [3, 17, 64 + 5, 64 + 60]                    # two in each layer
    with torch.no_grad():
        clean = model(prompts.tokens)
        with model.hooks(scaling_hooks(neurons, 1.0, 64)):
            torch.testing.assert_close(model(prompts.tokens), clean, rtol=0, atol=0)
        with model.hooks(scaling_hooks(neurons, 0.0, 64)):
            silenced = model(prompts.tokens)

        def zero(x, hook, columns):
            x = x.clone()
            x[..., columns] = 0
            return x
        with model.hooks([("blocks.0.mlp.hook_post", lambda x, hook: zero(x, hook, [3, 17])),
                          ("blocks.1.mlp.hook_post", lambda x, hook: zero(x, hook, [5, 60]))]):
            torch.testing.assert_close(silenced, model(prompts.tokens), rtol=0, atol=0)
        with model.hooks(scaling_hooks(neurons, 2.0, 64)):
            assert not torch.allclose(model(prompts.tokens), clean)


def test_labels_are_deterministic_per_seed_and_exact_where_sampling_cannot_vary(setting):
    dm, model, _ = setting
    prompts = recall_prompts(dm, "seen", n=8)
    first = label_items(model, prompts, n_samples=4, seed=3)
    assert torch.equal(first, label_items(model, prompts, n_samples=4, seed=3))
    sampled = label_items(model, prompts, n_samples=4, seed=3, shortcut=False)
    path = right_path_probability(model, prompts)
    assert ((path == 0) | (path == 1)).any()                   # some items are decided without sampling
    decided = (path == 0) | (path == 1)
    assert torch.equal(first[decided], sampled[decided])        # ... exactly as sampling decides them
    assert (first >= 0).all() and (first <= 4).all()
    # a model that puts all mass on each right token: every item faithful without sampling
    assert classes(np.array([0, 4, 2]), 4).tolist() == [1, 0, -1]


def test_conflict_prompts_state_another_value_then_ask(setting):
    dm, _, prompts = setting
    conflict = conflict_prompts(dm, prompts, seed=0)
    assert (conflict.wrong_first != conflict.right_first).all()
    for i in range(len(prompts)):
        query = prompts.tokens[i, 1:prompts.last[i] + 1]
        row = conflict.tokens[i, :conflict.last[i] + 1]
        assert torch.equal(row[-len(query):], query) and conflict.wrong_first[i] in row[:-len(query)]


def test_slope_and_its_interval():
    alphas = [0, 1, 2, 3]
    values = np.array([[0.0, 0.0, 1.0, 1.0]] * 1 + [[0.2, 0.2, 1.0, 1.0]] + [[0.4, 0.6, 1.0, 1.0]] + [[0.6, 0.8, 1.0, 1.0]])
    fit = slope_interval(alphas, values, n_boot=100)
    assert fit["slope"] == pytest.approx(np.polyfit(alphas, values.mean(1), 1)[0])
    assert fit["interval"][0] <= fit["slope"] <= fit["interval"][1]


def test_neurons_command_writes_its_outputs_and_resumes(tiny_run, capsys, monkeypatch):
    import biolab.mech.neurons_labelled as labelled

    def alternating(model, prompts, n_samples=10, seed=0, **kwargs):   # the tiny run knows nobody: plant labels
        return torch.tensor([n_samples * (i % 2) for i in range(len(prompts))])

    monkeypatch.setattr(labelled, "label_items", alternating)
    out = tiny_run.parent / "neurons_out"
    args = ["neurons", str(tiny_run), "main_step=10", "unseen_people=8", "random_sets=2", "bootstrap=5",
            "min_per_class=2", "intervention_items=8", "n_grid=3", "alphas=[0,1,2]", f"out={out}"]
    assert mech_main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("n_neurons_total", "n_h_neurons", "per_mille", "auroc_heldout_people", "auroc_unseen",
                "auroc_random_sets", "auroc_confidence_baseline", "alpha_slope", "first_step_auroc_0.7",
                "plateau_end_step", "class_counts"):
        assert key in summary
    assert summary["n_neurons_total"] == 2 * 256 and [r["step"] for r in summary["per_step"]] == [0, 10, 20]
    assert (out / "timeline.png").stat().st_size > 10_000
    capsys.readouterr()
    (out / "timeline" / "steps" / "step_0.json").unlink()
    assert mech_main(args) == 0
    log = capsys.readouterr().out
    assert "] step 0:" in log and "] step 10:" not in log


@pytest.mark.parametrize("args, message", [
    (["neurons", "RUN"], "no snapshot with seen accuracy"),
    (["neurons", "RUN", "main_step=10", "min_per_class=1000"], "too few items per class"),
    (["neurons", "RUN", "main_step=10", "other_attributes=[hair_colour]"], "unknown attribute"),
    (["neurons", "RUN", "labelling=2-vs-2"], "labelling must be"),
    (["neurons", "RUN", "main_step=7"], "no snapshot at step 7"),
    (["neurons", "RUN", "probes=3"], "unknown option 'probes'"),
])
def test_bad_input_is_one_line_and_exit_code_2(tiny_run, tmp_path, capsys, args, message):
    args = [str(tiny_run) if a == "RUN" else a for a in args] + ["unseen_people=4", "n_samples=2", f"out={tmp_path}"]
    assert mech_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_attribute_baseline_sees_labels_that_follow_the_attribute():
    from biolab.mech.neurons_labelled import attribute_baseline_auroc, build_items, class_counts_by_attribute, select_rows

    dm = small_dm()
    items = build_items(dm, None, 8, ["university", "employer"], 0)
    attribute = items.seen.attribute.numpy()

    def baseline(n_right):
        label = classes(n_right, 10)
        result = {"n_right_seen": n_right.tolist(), "rows": select_rows(label, np.ones(len(items.unseen), int), items, 0)}
        return attribute_baseline_auroc(items, result, {"n_samples": 10})

    assert baseline(np.where(attribute == 0, 0, 10)) == 1.0                  # hallucinated exactly on birth dates
    counts = class_counts_by_attribute(items, {"n_right_seen": np.where(attribute == 0, 0, 10).tolist()}, {"n_samples": 10})
    assert counts["birth_date"] == {"hallucinated": int((attribute == 0).sum()), "faithful": 0, "mixed": 0}
    assert counts["major"]["hallucinated"] == 0 and counts["major"]["faithful"] == int((attribute == 4).sum())
    random_labels = np.random.default_rng(3).integers(0, 2, size=len(attribute)) * 10
    assert baseline(random_labels) < 0.8
