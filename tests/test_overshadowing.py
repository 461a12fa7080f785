"""Knowledge overshadowing: look-alike pairs (names, values, frequencies in the stream), the metrics on a
model whose answers are known, the callback's history across a kill and resume, bad input refused."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from biolab.data.datamodule import BioDataModule
from biolab.data.lookalikes import LookalikeSpec
from biolab.data.population import make_populations
from biolab.data.templates import ATTRIBUTES
from biolab.io import read_csv
from biolab.mech.overshadowing import flat_metrics, measure, overshadowing_prompts, summarise

from conftest import CONF_DIR, kill_once_checkpointed

LOOKALIKES = {"levels": [1, 4, 16], "pairs_per_level": 3, "control_levels": [16], "control_pairs_per_level": 2}
TINY = ["experiment=tiny", "data/lookalikes=overshadowing", "callbacks=overshadowing", "data.lookalikes.levels=[1,8]",
        "data.lookalikes.pairs_per_level=2", "data.lookalikes.control_levels=[8]",
        "data.lookalikes.control_pairs_per_level=1", "callbacks.trajectory.steps=[0,10,20]"]


@pytest.fixture(scope="module")
def dm():
    module = BioDataModule(population_size=256, n_unseen=64, eval_size=32, train_template_eval_size=16,
                           unseen_eval_size=16, batch_size=32, eval_batch_size=32, seed=3, lookalikes=LOOKALIKES)
    module.setup()
    return module


def test_pairs_share_the_right_name_parts_and_no_fact(dm):
    pairs, seen, names = dm.lookalikes, dm.seen, dm.seen.names
    assert len(pairs) == 9 + 4 and list(pairs.rare) == list(range(13, 26))
    for d, r, kind in zip(pairs.dominant, pairs.rare, pairs.kind):
        first, middle, last = names[d] == names[r]
        assert not middle
        assert (first, last) == {"pair": (True, True), "first_name": (True, False), "surname": (False, True)}[kind]
        assert (seen.values[d] != seen.values[r]).all()
        for a, attribute in enumerate(ATTRIBUTES):
            first_token = [dm.tokenizer.encode(v)[0] for v in dm.pools.values(attribute)]
            assert first_token[seen.values[d, a]] != first_token[seen.values[r, a]]
    everyone = np.concatenate([names, dm.unseen.names])
    assert len({tuple(n) for n in everyone}) == len(everyone)  # full names stay unique
    plain, _ = make_populations(dm.pools, 256, 64, seed=3)
    untouched = np.r_[0:13, 26:256]  # only the rare people were redrawn
    assert (plain.names[untouched] == names[untouched]).all() and (plain.values[untouched] == seen.values[untouched]).all()


def test_dominant_people_are_drawn_p_times_as_often_in_the_stream(dm):
    """Counts per group over 400 batches against the expected counts: chi-square below the 0.999 quantile."""
    counts = np.zeros(len(dm.seen))
    stream = dm.train_batches
    for step in range(400):  # the people of training batch `step`: its generator's first draw
        rng = np.random.default_rng([stream.seed, stream.rank, step])
        np.add.at(counts, stream.distribution.sample(rng, stream.batch_size, len(stream.population), step), 1)
    pairs = dm.lookalikes
    groups = [pairs.dominant[(pairs.level == p) & (pairs.kind == "pair")] for p in (1, 4, 16)]
    groups += [pairs.dominant[pairs.kind != "pair"], pairs.rare, np.arange(26, 256)]
    weights = np.ones(len(dm.seen))
    weights[pairs.dominant] = pairs.level
    expected_share = np.array([weights[g].sum() for g in groups]) / weights.sum()
    observed = np.array([counts[g].sum() for g in groups])
    expected = expected_share * counts.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 20.52  # chi-square 0.999 quantile, 5 degrees of freedom
    per_person = observed / np.array([len(g) for g in groups])
    assert per_person[2] / per_person[-1] == pytest.approx(16, rel=0.2)  # a P=16 dominant vs an ordinary person


class Answers(torch.nn.Module):
    """A 'model' that answers each prompt (found by its tokens) with a chosen first token, probability 1."""

    def __init__(self, answers: dict[tuple, int], vocab: int):
        super().__init__()
        self.answers, self.vocab = answers, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):  # [n, pos] -> [n, pos, vocab]: at a prompt's last position, its answer
        logits = torch.full((*tokens.shape, self.vocab), -30.0)
        for i, row in enumerate(tokens):
            for p in range(tokens.shape[1]):
                answer = self.answers.get(tuple(row[:p + 1].tolist()))
                if answer is not None:
                    logits[i, p, answer] = 30.0
        return logits


def test_metrics_on_a_model_whose_answers_are_known(dm):
    prompts = overshadowing_prompts(dm, templates_per_attribute=1, prior_per_pair=1)
    key = lambda p, i: tuple(p.tokens[i, :p.last[i] + 1].tolist())  # noqa: E731
    answers = {}
    overshadowed = prompts.level[prompts.rare_pair.numpy()] == 16  # every P=16 pair (and control) overshadowed
    for i in range(len(prompts.rare)):
        answers[key(prompts.rare, i)] = int(prompts.dom_first[i] if overshadowed[i] else prompts.rare.answer_first[i])
        answers[key(prompts.dominant, i)] = int(prompts.dominant.answer_first[i])  # every dominant fact known
    for i in range(len(prompts.prior)):  # ordinary people say the first pair's dominant value
        answers[key(prompts.prior, i)] = int(prompts.prior_dom_first[i] if prompts.prior_pair[i] == 0
                                             else prompts.prior.answer_first[i])
    summary = summarise(measure(Answers(answers, dm.vocab_size), prompts), prompts)
    assert summary["pair/P16"]["ao"] == 1.0 and summary["pair/P16"]["ro"] == 1.0 and summary["pair/P16"]["r_sub"] == 0
    assert summary["pair/P1"]["ao"] == 0.0 and summary["pair/P1"]["r_sub"] == 1.0 and summary["pair/P4"]["ro"] == 0
    assert summary["first_name/P16"]["ao"] == 1.0 and summary["pair/P16"]["p_dom"] == pytest.approx(1.0)
    assert summary["prior"] == pytest.approx(1 / 13)  # one pair of 13
    assert summary["pair/P1"]["ao_excess"] == pytest.approx(-1 / 3)  # pair 0 is a P=1 pair
    flat = flat_metrics(summary)
    assert flat["overshadow/pair/P16/ro"] == 1.0 and "overshadow/pair/P16/n_pairs" not in flat


def test_ro_is_undefined_while_the_dominant_fact_is_unknown(dm):
    prompts = overshadowing_prompts(dm, templates_per_attribute=1, prior_per_pair=1)
    wrong = {}
    for p in (prompts.rare, prompts.dominant, prompts.prior):
        for i in range(len(p)):  # always the token after the right one: never right, never the dominant value
            wrong[tuple(p.tokens[i, :p.last[i] + 1].tolist())] = (int(p.answer_first[i]) + 1) % dm.vocab_size
    summary = summarise(measure(Answers(wrong, dm.vocab_size), prompts), prompts)
    assert summary["pair/P4"]["r_dom"] == 0 and summary["pair/P4"]["ro"] is None
    assert "overshadow/pair/P4/ro" not in flat_metrics(summary)


def test_the_history_of_the_metrics_survives_a_kill_and_resume(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "biolab.train", *TINY, f"hydra.run.dir={run}"]
    kill_once_checkpointed(command, run / "checkpoints" / "last.ckpt", min_step=10)
    assert not (run / "summary.json").exists()
    subprocess.run(command, cwd=CONF_DIR.rsplit("/", 1)[0], check=True, capture_output=True)
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "biolab.train", *TINY, f"hydra.run.dir={reference}"],
                   cwd=CONF_DIR.rsplit("/", 1)[0], check=True, capture_output=True)
    got, want = read_csv(run / "metrics.csv"), read_csv(reference / "metrics.csv")
    keys = [k for k in want[0] if k.startswith("overshadow/")]
    assert len(keys) > 20 and [r["step"] for r in got] == [r["step"] for r in want]
    assert [[r.get(k) for k in keys] for r in got] == [[r.get(k) for k in keys] for r in want]
    assert (run / "overshadowing.png").stat().st_size > 10_000


@pytest.mark.parametrize("override, message", [
    ("data.lookalikes.pairs_per_level=0", "data.lookalikes.pairs_per_level must be an integer >= 1"),
    ("data.lookalikes.levels=[1,0.5]", "every popularity ratio P must be a number >= 1"),
    ("data.lookalikes.pairs_per_level=40", "more than data.population_size=64"),
    ("+data.lookalikes.ratio=3", "unknown key(s) ['ratio']"),
])
def test_bad_lookalike_settings_fail_before_anything_is_written(tmp_path, override, message):
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "biolab.train", *TINY, override, f"hydra.run.dir={run}"],
                         cwd=CONF_DIR.rsplit("/", 1)[0], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not run.exists()


def test_the_metrics_callback_needs_lookalike_pairs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "biolab.train", "experiment=tiny", "callbacks=overshadowing",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=CONF_DIR.rsplit("/", 1)[0],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "data/lookalikes=overshadowing" in out.stderr


def test_spec_checks_its_values():
    with pytest.raises(ValueError, match="levels lists a level twice"):
        LookalikeSpec.from_config({"levels": [2, 2]})
    assert LookalikeSpec(levels=(1, 2), pairs_per_level=2, control_levels=(2,), control_pairs_per_level=1).n_people == 12


def test_overshadowing_command_over_snapshots(tmp_path, capsys):
    from biolab.mech.__main__ import main as mech_main
    from biolab.train import train

    from conftest import make_cfg

    run = tmp_path / "run"
    train(make_cfg(run, *TINY))
    args = ["overshadowing", str(run), "templates_per_attribute=1", "prior_per_pair=1", "random_sets=2",
            "bootstrap=50", "ig_steps=1"]
    assert mech_main(args) == 0
    out_dir = run / "mech" / "overshadowing"
    summary = __import__("json").loads((out_dir / "summary.json").read_text())
    for key in ("ro_by_p_end", "ro_gap", "ro_gap_95", "spearman_logp_ro", "prior_control_rate", "peak_step",
                "plateau_end_step", "recovery_flip_rate", "circuit_final"):
        assert key in summary
    assert summary["steps"] == [0, 10, 20] and set(summary["ro_by_p_end"]) == {"1", "8"}
    assert summary["circuit_final"]["circuit_edges"] >= 1
    assert (out_dir / "ro_by_p.png").stat().st_size > 10_000
    assert (out_dir / "table.csv").read_text().count("\n") == 1 + 3 * 4  # 3 steps x (2 pair levels + 2 controls)
    capsys.readouterr()
    assert mech_main(args) == 0  # resumed: nothing recomputed
    assert "] step" not in capsys.readouterr().out
    assert mech_main(["overshadowing", str(run), "templates_per_attribute=9"]) == 2
    from biolab.analysis.__main__ import main as analysis_main

    (tmp_path / "unanalysed").mkdir()
    (tmp_path / "unanalysed" / "config.yaml").write_text("seed: 1\n")
    assert analysis_main(["overshadowing", str(tmp_path)]) == 0  # the run's directory as a one-job sweep
    swept = __import__("json").loads((tmp_path / "overshadowing_sweep.json").read_text())
    assert [j["job"] for j in swept["jobs"]] == ["run"] and swept["missing_analysis"] == ["unanalysed"]
    assert swept["jobs"][0]["ro_by_p_end"] == summary["ro_by_p_end"]
    assert (tmp_path / "overshadowing_sweep.png").stat().st_size > 10_000


def test_each_level_is_read_at_its_own_peak():
    """The peak is the step of largest AO - prior with R_dom >= 0.05; a smaller P may peak later."""
    from types import SimpleNamespace

    from biolab.mech.overshadowing_study import peak_by_p, peak_step

    prompts = SimpleNamespace(kind=np.array(["pair"] * 4), level=np.array([1.0, 1.0, 4.0, 4.0]))

    def at(ao, r_dom, prior):  # per pair: P=1 pairs first, then P=4
        return {"per_pair": {"ao": ao, "r_dom": r_dom, "prior": prior}}
    results = {10: at([0.1, 0.1, 0.1, 0.1], [0.01, 0.01, 0.01, 0.01], [0.1] * 4),   # R_dom below 0.05: no peak
               20: at([0.1, 0.1, 0.9, 0.7], [0.1, 0.1, 0.9, 0.9], [0.1] * 4),
               30: at([0.5, 0.3, 0.2, 0.2], [0.6, 0.6, 1.0, 1.0], [0.0] * 4)}
    assert peak_step(results, prompts, 4.0) == 20 and peak_step(results, prompts, 1.0) == 30
    rows = peak_by_p(results, prompts, [1.0, 4.0], 200, np.random.default_rng(0))
    assert rows["4"]["ao_excess"] == pytest.approx(0.7) and rows["4"]["ro"] == pytest.approx(0.8 / 0.9)
    assert rows["1"]["step"] == 30 and rows["1"]["ao_excess"] == pytest.approx(0.4)
    assert rows["1"]["ao_excess_95"][0] <= 0.4 <= rows["1"]["ao_excess_95"][1]
