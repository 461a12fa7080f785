"""Training distributions (SPEC section 8): frequencies, schedules, purity, configs and errors.

Frequencies are checked with a hand-computed chi-square statistic (scipy is not a dependency):
under the right distribution the statistic of a histogram with k bins has mean k - 1 and
standard deviation sqrt(2 (k - 1)); the threshold mean + 5 sd is exceeded with probability
< 1e-4 (Wilson-Hilferty), so a fixed seed passing it is no lucky pick, and each test also shows
that a slightly wrong distribution (alpha 0.65 instead of 0.6, weight 6 instead of 8, ...) fails it.
"""

import math
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from biolab.data.datamodule import BioDataModule
from biolab.errors import ConfigError
from biolab.data.distributions import Celebrities, Mixture, PowerLaw, Sequential, Uniform, WarmUp
from biolab.train import train

from conftest import CONF_DIR, make_cfg


def chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    assert expected.min() >= 20, "bins too small for the chi-square approximation"
    return float(((counts - expected) ** 2 / expected).sum())


def threshold(bins: int) -> float:
    df = bins - 1
    return df + 5 * math.sqrt(2 * df)


def draw(distribution, population_size: int, steps: int = 100, n: int = 1000, step=None, seed: int = 0):
    """Counts per person over `steps` batches, drawn the way TrainBatches draws them (rank 0)."""
    people = [distribution.sample(np.random.default_rng([seed, 0, s]), n, population_size,
                                  s if step is None else step) for s in range(steps)]
    people = np.concatenate(people)
    assert people.min() >= 0 and people.max() < population_size
    return np.bincount(people, minlength=population_size)


def fits(counts, probabilities, groups: int = 20) -> bool:
    """Both the per-person histogram and `groups` contiguous index bins (more power against smooth
    distortions of a law) pass the chi-square threshold."""
    ok = chi_square(counts, probabilities) < threshold(len(counts))
    if len(counts) % groups == 0 and len(counts) > groups:
        grouped, p_grouped = counts.reshape(groups, -1).sum(1), probabilities.reshape(groups, -1).sum(1)
        ok = ok and chi_square(grouped, p_grouped) < threshold(groups)
    return ok


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_power_law_frequencies(alpha):
    n_people = 200
    counts = draw(PowerLaw(alpha), n_people, steps=400)
    assert fits(counts, PowerLaw(alpha).probabilities(n_people))
    assert not fits(counts, PowerLaw(alpha + 0.05).probabilities(n_people))  # a wrong law is rejected
    p = PowerLaw(alpha).probabilities(n_people)
    assert p[0] / p[9] == pytest.approx(10 ** alpha)  # p(i) ∝ (i + 1)^-alpha


def test_power_law_hand_values():
    p = PowerLaw(1.0).probabilities(3)
    np.testing.assert_allclose(p, np.array([1, 1 / 2, 1 / 3]) / (11 / 6))


def test_celebrity_frequencies():
    n_people = 300
    counts = draw(Celebrities(n=30, weight=8), n_people)
    # two bins (celebrities, others) plus per-person bins both agree with the weights
    assert fits(counts, Celebrities(30, 8).probabilities(n_people))
    assert not fits(counts, Celebrities(30, 6).probabilities(n_people))
    share = counts[:30].sum() / counts.sum()
    assert share == pytest.approx(30 * 8 / (30 * 8 + 270), abs=0.01)


def test_uniform_frequencies_and_wrong_law_rejected():
    counts = draw(Uniform(), 100)
    assert fits(counts, np.full(100, 0.01))
    assert not fits(counts, PowerLaw(0.05).probabilities(100))


def test_warmup_switches_exactly_at_the_epoch_boundary():
    n_people, batch, k = 100, 8, 10
    warmup = WarmUp(k=k, epochs=1, batch_size=batch)
    boundary = math.ceil(n_people / batch)  # 13: the first step after N biographies were drawn
    assert warmup.switch_step(n_people) == boundary
    for step in range(boundary):
        assert draw(warmup, n_people, steps=1, step=step)[k:].sum() == 0  # only the first k people
    assert fits(draw(warmup, n_people, steps=1, n=2000, step=boundary - 1)[:k], np.full(k, 1 / k))
    after = draw(warmup, n_people, steps=40, step=boundary)
    assert fits(after, np.full(n_people, 1 / n_people))  # uniform on all from the boundary on
    # an exact multiple: 2 epochs of 64 people with batch 8 is 16 steps
    two = WarmUp(k=4, epochs=2, batch_size=8)
    assert [two.in_warmup(s, 64) for s in (0, 15, 16, 17)] == [True, True, False, False]


def test_warmup_under_ddp_counts_global_steps(tmp_path):
    """Two ranks of a global batch 8 each draw 4 people, from the subset until the same global step."""
    calls = []

    class Recording(WarmUp):
        def sample(self, rng, n, population_size, step):
            people = super().sample(rng, n, population_size, step)
            calls.append((step, n, people))
            return people

    dm = BioDataModule(population_size=64, n_unseen=0, unseen_eval_size=0, eval_size=8,
                       train_template_eval_size=8, batch_size=8, distribution=Recording(k=4, epochs=1, batch_size=8))
    for rank in (0, 1):
        dm.rank, dm.world_size = rank, 2
        dm.setup()
        for step in (7, 8):  # 64 people / batch 8: step 8 is the first after one epoch
            dm.train_batch(step)
    assert [(s, n) for s, n, _ in calls] == [(7, 4), (8, 4)] * 2
    assert all(people.max() < 4 for s, _, people in calls if s == 7)


def test_sequential_visits_groups_in_order():
    seq = Sequential(groups=3, repeats=2, total_steps=60)
    assert [seq.group(s) for s in range(0, 60, 10)] == [0, 1, 2, 0, 1, 2]
    assert [seq.group(s) for s in (9, 10, 59, 60, 1000)] == [0, 1, 2, 2, 2]  # past the end: last group
    n_people = 30  # groups [0, 10), [10, 20), [20, 30)
    for step in range(60):
        counts = draw(seq, n_people, steps=1, n=200, step=step)
        low, high = seq.group_bounds(seq.group(step), n_people)
        assert counts[:low].sum() == counts[high:].sum() == 0
    assert fits(draw(seq, n_people, steps=10, n=500, step=15)[10:20], np.full(10, 0.1))
    # stages of equal length up to one step when total_steps is not a multiple of g x r
    uneven = Sequential(groups=3, repeats=1, total_steps=10)
    assert [uneven.group(s) for s in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    # uneven group sizes: contiguous, covering everyone
    assert [Sequential(3, 1, 10).group_bounds(j, 10) for j in range(3)] == [(0, 3), (3, 6), (6, 10)]


def test_mixture_replays_old_range_with_its_weight():
    mix = Mixture(ranges=[[0, 40], [40, 50]], weights=[0.25, 1.0])  # 40 old at w = 1/4, 10 new
    counts = draw(mix, 60)
    assert counts[50:].sum() == 0  # outside every range: never drawn
    p = mix.probabilities(60)
    assert p[:40].sum() == pytest.approx(0.5)  # w N_old / (w N_old + N_new) = 10 / 20
    assert fits(counts[:50], p[:50])
    assert not fits(counts[:50], Mixture([[0, 40], [40, 50]], [0.35, 1.0]).probabilities(60)[:50])
    assert draw(Mixture([[0, 40], [40, 50]], [0, 1]), 50, steps=5)[:40].sum() == 0  # w = 0: no replay


@pytest.mark.parametrize("distribution", [
    Uniform(), PowerLaw(0.8), Celebrities(5, 4), WarmUp(5, 1, 16), Sequential(4, 2, 40),
    Mixture([[0, 10], [20, 30]], [2, 1])], ids=repr)
def test_same_seed_step_rank_same_people(distribution):
    def people(seed, rank, step):
        return distribution.sample(np.random.default_rng([seed, rank, step]), 64, 50, step)

    np.testing.assert_array_equal(people(0, 1, 7), people(0, 1, 7))
    import pickle  # DataLoader workers get a pickled copy: it draws the same people
    copy = pickle.loads(pickle.dumps(distribution))
    np.testing.assert_array_equal(copy.sample(np.random.default_rng([0, 1, 7]), 64, 50, 7), people(0, 1, 7))
    if not isinstance(distribution, Mixture | Sequential | WarmUp):  # these use a small subset early on
        assert not np.array_equal(people(0, 1, 7), people(0, 0, 7))
        assert not np.array_equal(people(0, 1, 7), people(1, 1, 7))


@pytest.mark.parametrize("make, key", [
    (lambda: PowerLaw(alpha=-0.5), "alpha"),
    (lambda: PowerLaw(alpha="big"), "alpha"),
    (lambda: Celebrities(n=0), "n"),
    (lambda: Celebrities(n=10, weight=0), "weight"),
    (lambda: WarmUp(k=10, epochs=-1), "epochs"),
    (lambda: WarmUp(k=2.5), "k"),
    (lambda: WarmUp(k=10, batch_size=0), "batch_size"),
    (lambda: Sequential(groups=0), "groups"),
    (lambda: Sequential(groups=4, repeats=0), "repeats"),
    (lambda: Sequential(groups=4, repeats=3, total_steps=10), "total_steps"),
    (lambda: Mixture([[0, 10]], [1, 2]), "ranges"),
    (lambda: Mixture([[5, 2]], [1]), "ranges"),
    (lambda: Mixture([[0, 10], [5, 20]], [1, 1]), "ranges"),
    (lambda: Mixture([[0, 10]], [-1]), "weights"),
    (lambda: Mixture([[0, 10]], [0]), "weights"),
])
def test_bad_arguments_name_the_config_key(make, key):
    with pytest.raises(ValueError, match=rf"data\.distribution\.{key}"):
        make()


@pytest.mark.parametrize("distribution, key", [
    (Celebrities(n=100), "data.distribution.n=100 exceeds data.population_size=64"),
    (WarmUp(k=100, batch_size=8), "data.distribution.k=100 exceeds"),
    (WarmUp(k=10, batch_size=16), "data.distribution.batch_size=16 must equal the global data.batch_size=8"),
    (Sequential(groups=100), "data.distribution.groups=100 exceeds"),
    (Mixture([[0, 10], [10, 80]], [1, 1]), "beyond data.population_size=64"),
])
def test_population_dependent_errors_come_before_any_work(distribution, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        BioDataModule(population_size=64, n_unseen=0, unseen_eval_size=0, batch_size=8, distribution=distribution)


DISTRIBUTION_OPTIONS = sorted(p.stem for p in (Path(CONF_DIR) / "data" / "distribution").glob("*.yaml"))


@pytest.mark.parametrize("option", DISTRIBUTION_OPTIONS)
def test_every_distribution_config_composes_and_instantiates(tmp_path, option):
    """The defaults are paper-scale (N 64k, SPEC section 8), with interpolated batch and steps."""
    cfg = make_cfg(tmp_path, "experiment=paper", f"data/distribution={option}")
    distribution = instantiate(cfg.data.distribution)
    people = distribution.sample(np.random.default_rng(0), 16, cfg.data.population_size, 0)
    assert people.shape == (16,) and people.max() < cfg.data.population_size
    if option == "warmup":  # global batch 128: 2 epochs of 64k people = 1000 steps
        assert distribution.batch_size == 128 and distribution.switch_step(64_000) == 1000
    if option == "sequential":
        assert distribution.total_steps == cfg.trainer.max_steps == 16_000
    quick = make_cfg(tmp_path, "experiment=quickstart", f"data/distribution={option}")
    if option == "warmup":  # follows an experiment's batch size
        assert instantiate(quick.data.distribution).batch_size == 64


def test_default_is_uniform_and_override_reaches_the_constructor(tmp_path):
    assert DISTRIBUTION_OPTIONS == ["celebrities", "power_law", "sequential", "uniform", "warmup"]
    assert make_cfg(tmp_path).data.distribution._target_.endswith("Uniform")
    cfg = make_cfg(tmp_path, "data/distribution=power_law", "data.distribution.alpha=0.8")
    assert instantiate(cfg.data.distribution).alpha == 0.8


def test_bad_distribution_in_a_run_fails_before_work_with_the_key(tiny_cfg):
    cfg = tiny_cfg("data/distribution=warmup")  # default k = 8000 > the tiny population of 64
    with pytest.raises(ConfigError, match=r"data\.distribution\.k=8000 exceeds data\.population_size=64"):
        train(cfg)
    assert not Path(cfg.run_dir).exists()
    with pytest.raises(ConfigError, match=r"data\.distribution\.alpha must be"):
        train(tiny_cfg("data/distribution=power_law", "data.distribution.alpha=-1"))
