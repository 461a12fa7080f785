"""Entity awareness (biolab.mech.entities, sae, steering, entities_study): the sets are disjoint, deterministic
and token-matched; a probe finds a planted direction and not an absent one; the TopK SAE recovers a planted
sparse dictionary; steering with a zero vector changes nothing and a vector changes only later positions;
the command runs on a run directory and resumes; bad input is one line and exit code 2."""

import json

import numpy as np
import pytest
import torch

from biolab.mech.__main__ import main as mech_main
from biolab.mech.entities import (FAMILIES, entity_sets, family_prompts, linear_separation, name_tokens,
                                  separation_scores, token_matched)
from biolab.mech.sae import sae_quality, train_sae
from biolab.mech.steering import steered_answers, steering
from biolab.model import Transformer, TransformerConfig

from conftest import small_dm

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def setting():
    dm = small_dm(population_size=1000, n_unseen=200)   # enough seen names that some unseen ones are matched
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=dm.vocab_size, n_layers=2, n_heads=2, d_model=32, d_mlp=64,
                                          max_seq_len=64)).eval().requires_grad_(False)
    return dm, model


def test_token_matched_people_have_every_name_part_among_seen_people(setting):
    dm, _ = setting
    pools = dm.pools
    seen_words = {w for p in range(len(dm.seen)) for w in dm.seen.full_name(pools, p).split()}
    unseen = np.arange(len(dm.unseen))
    matched = token_matched(dm, unseen)
    by_words = np.array([set(dm.unseen.full_name(pools, p).split()) <= seen_words for p in unseen])
    assert matched.any() and not matched.all()       # both kinds exist in 200 unseen people
    np.testing.assert_array_equal(matched, by_words)
    assert name_tokens(dm, dm.unseen, unseen).shape == (len(unseen), 3)


def test_sets_are_disjoint_and_deterministic_per_seed(setting):
    dm, model = setting
    a, b = entity_sets(model, dm, n=40, min_right=0, seed=3), entity_sets(model, dm, n=40, min_right=0, seed=3)
    other = entity_sets(model, dm, n=40, min_right=0, seed=4)
    for name in ("seen", "right", "known", "unseen", "matched"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.unseen, other.unseen)
    assert set(a.known) <= set(a.seen) and set(a.matched) <= set(a.unseen)
    np.testing.assert_array_equal(a.known, a.seen)   # min_right=0: everyone is "known"
    seen_names = {dm.seen.full_name(dm.pools, p) for p in a.seen}
    assert not seen_names & {dm.unseen.full_name(dm.pools, p) for p in a.unseen}
    strict = entity_sets(model, dm, n=40, min_right=7, seed=3)   # 7 > 6 attributes: nobody
    assert len(strict.known) == 0 and (a.right <= len(dm.attributes)).all()


def test_prompt_families_put_words_before_the_name_or_not(setting):
    dm, _ = setting
    people = np.arange(10)
    first = family_prompts(dm, people, True, "name_first")
    before = family_prompts(dm, people, True, "words_before")
    assert (first.name_pos[:, 0] == 1).all() and (before.name_pos[:, 0] > 1).all()
    both = family_prompts(dm, people, True, FAMILIES)
    assert torch.equal(both.tokens[:10, :first.tokens.shape[1]], first.tokens)   # same prompts, grouped by family


def test_probe_finds_a_planted_direction_and_not_an_absent_one():
    g = torch.Generator().manual_seed(0)
    n, d = 120, 16
    known, unknown = torch.randn(2, n, d, generator=g), torch.randn(2, n, d, generator=g)
    known[1, :, 3] += 2.0                                       # layer 1 separates, layer 0 does not
    rows = linear_separation(known, unknown, folds=5, seed=0, n_boot=20)
    assert rows[1]["logistic"] > 0.85 and rows[1]["diff_means"] > 0.85
    assert 0.3 < rows[0]["logistic"] < 0.7 and 0.3 < rows[0]["diff_means"] < 0.7
    low, high = rows[1]["logistic_ci"]
    assert low <= rows[1]["logistic"] <= high


def test_separation_scores_drop_latents_common_on_ordinary_tokens():
    known = {f: torch.tensor([[1, 1, 0]] * 10, dtype=torch.bool) for f in FAMILIES}
    unknown = {f: torch.tensor([[0, 1, 1]] * 10, dtype=torch.bool) for f in FAMILIES}
    unknown["words_before"][:5, 2] = False                      # latent 2 weaker in one family
    scores = separation_scores(known, unknown, ordinary_rate=torch.tensor([0.0, 0.0, 0.0]))
    assert scores["known"]["latent"] == 0 and scores["known"]["min_over_families"] == pytest.approx(1.0)
    assert scores["unknown"]["latent"] == 2 and scores["unknown"]["min_over_families"] == pytest.approx(0.5)
    filtered = separation_scores(known, unknown, ordinary_rate=torch.tensor([0.5, 0.0, 0.0]))
    assert filtered["known"]["latent"] != 0 and filtered["latents_allowed"] == 2


def test_topk_sae_recovers_a_planted_sparse_dictionary():
    g = torch.Generator().manual_seed(0)
    d, m, k, n = 24, 48, 3, 12_000
    dictionary = torch.randn(m, d, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    chosen = torch.rand(n, m, generator=g).topk(k, dim=1).indices
    codes = torch.zeros(n, m).scatter(1, chosen, 0.5 + torch.rand(n, k, generator=g))
    x = codes @ dictionary                                                   # [n, d]
    sae, _ = train_sae(x[:10_000], d_sae=m, k=k, steps=600, batch_size=256, lr=3e-3, seed=0, dead_after=2_000)
    quality = sae_quality(sae, x[10_000:])
    best_cosine = (dictionary @ sae.decoder_directions.T).max(1).values     # [m] per planted atom
    assert (best_cosine > 0.9).float().mean() >= 0.9
    assert quality["variance_explained"] > 0.8 and quality["mean_active_latents"] <= k


def test_steering_with_zero_changes_nothing_and_a_vector_only_later_positions(setting):
    dm, model = setting
    prompts = family_prompts(dm, np.arange(8), True, "words_before")
    plain = model(prompts.tokens)
    name = prompts.name_pos[:, 2]
    with steering(model, 1, name, torch.zeros(32)):
        torch.testing.assert_close(model(prompts.tokens), plain, rtol=0, atol=0)
    with steering(model, 1, name, 5 * torch.ones(32)):
        steered = model(prompts.tokens)
    for i in range(len(prompts)):
        torch.testing.assert_close(steered[i, :name[i]], plain[i, :name[i]], rtol=0, atol=0)
        assert not torch.allclose(steered[i, name[i]:], plain[i, name[i]:])
    zero = steered_answers(model, prompts, 1, torch.zeros(32))
    assert set(zero) == {"right", "answer_prob", "max_prob"} and zero["max_prob"].shape == (8,)


def test_entities_command_writes_tables_and_figures_and_resumes(tiny_run, capsys):
    args = ["entities", str(tiny_run), "n_people=64", "min_right=0", "min_known=4", "folds=2", "sae_steps=[20]",
            "sae_train_steps=20", "biographies=16", "heldout_biographies=8", "random_controls=2", "alphas=[1]",
            "headline_alpha=1", "n_boot=10", "steer_people=4", "unknown=unseen"]
    assert mech_main(args) == 0
    out_dir = tiny_run / "mech" / "entities"
    summary = json.loads((out_dir / "summary.json").read_text())
    for key in ("best_layer", "auroc_best_layer_token_matched", "auroc_layer0", "sae_variance_explained",
                "best_latent_separation_min_over_families", "steering_unknown_on_known_acc_drop",
                "steering_unknown_on_known_acc_drop_random_latents", "steering_known_on_unseen_maxprob_change",
                "steering_known_on_unseen_maxprob_change_random_directions", "unknown_answer_rate_change",
                "first_step_auroc_0.9", "plateau_end_step", "per_step"):
        assert key in summary
    assert [r["step"] for r in summary["per_step"]] == [0, 10, 20]
    assert 0 < summary["sae_variance_explained"] <= 1 and summary["sae_layer"] in (1, 2)
    assert summary["steering_unknown_on_known_acc_drop_random_latents"] is not None
    for name in ("heatmap.png", "timeline.png"):
        assert (out_dir / name).stat().st_size > 10_000
    for name in ("table.csv", "layers.csv", "sae.csv", "steering.csv"):
        assert (out_dir / name).is_file()
    written = (out_dir / "steps" / "step_0.json").stat().st_mtime_ns
    (out_dir / "steps" / "step_10.json").unlink()
    capsys.readouterr()
    assert mech_main(args) == 0
    log = capsys.readouterr().out
    assert "] step 10:" in log and "] step 0:" not in log and "] step 20:" not in log
    assert (out_dir / "steps" / "step_0.json").stat().st_mtime_ns == written
    assert mech_main([*args, "k=8"]) == 2                          # other options: refused, not mixed
    assert "other options" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["entities", "/nonexistent/run"], "run directory not found"),
    (["entities", "RUN", "steps=[5]"], "no snapshot at step 5"),
    (["entities", "RUN", "probes=3"], "unknown option 'probes'"),
    (["entities", "RUN", "folds=1"], "need folds >= 2"),
    (["entities", "RUN", "headline_alpha=3"], "headline_alpha=3 must be one of alphas"),
    (["entities", "RUN", "unknown=rare"], "unknown must be 'matched' or 'unseen'"),
    (["entities", "RUN", "steps=[0]", "sae_steps=[10]"], "sae_steps [10] are not among the analysed steps"),
    (["entities", "RUN", "min_known=20"], "16 unseen people, fewer than min_known=20"),   # the tiny run has 16
])
def test_bad_input_is_one_line_and_exit_code_2(tiny_run, capsys, args, message):
    args = [str(tiny_run) if a == "RUN" else a for a in args]
    assert mech_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
