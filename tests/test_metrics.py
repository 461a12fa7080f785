"""Value-token metrics against a brute-force loop, and the plateau detector on synthetic curves."""

import math

import pytest
import torch

from biolab.metrics import accumulate, finalize, value_stats
from biolab.phases import first_step_reaching, phase_summary, plateau_end


def brute_force(logits, targets, value_attr, n_attr):
    losses, corrects = {a: [] for a in range(n_attr)}, {a: [] for a in range(n_attr)}
    log_probs = logits.log_softmax(-1)
    for b in range(logits.shape[0]):
        for a in range(n_attr):
            positions = (value_attr[b] == a).nonzero().flatten().tolist()
            if not positions:
                continue
            losses[a].append(-sum(log_probs[b, p, targets[b, p]].item() for p in positions))
            corrects[a].append(all(logits[b, p].argmax().item() == targets[b, p].item() for p in positions))
    return losses, corrects


def test_value_stats_match_brute_force():
    g = torch.Generator().manual_seed(0)
    batch, pos, vocab, n_attr = 5, 20, 11, 3
    logits = torch.randn(batch, pos, vocab, generator=g) * 3
    targets = torch.randint(0, vocab, (batch, pos), generator=g)
    targets[:, -3:] = -100  # padding
    value_attr = torch.full((batch, pos), -1)
    value_attr[:, 2:4], value_attr[:, 7:8], value_attr[:, 10:14] = 0, 1, 2
    value_attr[4, 10:14] = -1  # one sequence without attribute 2
    # make some values exactly right so accuracy is not trivially zero
    for b in (0, 1):
        for p in range(2, 4):
            logits[b, p, targets[b, p]] = 100.0
    losses, corrects = brute_force(logits, targets, value_attr, n_attr)
    stats = finalize(accumulate(None, value_stats(logits, targets, value_attr, n_attr)), ("x", "y", "z"), "val")
    all_losses = [v for a in range(n_attr) for v in losses[a]]
    all_correct = [v for a in range(n_attr) for v in corrects[a]]
    assert stats["val/attr_loss"] == pytest.approx(sum(all_losses) / len(all_losses), rel=1e-5)
    assert stats["val/attr_acc"] == pytest.approx(sum(all_correct) / len(all_correct))
    assert stats["val/attr_acc/x"] == pytest.approx(2 / 5)
    assert stats["val/attr_loss/z"] == pytest.approx(sum(losses[2]) / 4, rel=1e-5)
    mask = targets != -100
    lm = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    assert stats["val/lm_loss"] == pytest.approx(lm.item(), rel=1e-5)
    probs = logits.softmax(-1)[value_attr >= 0]
    assert stats["val/max_prob"] == pytest.approx(probs.max(-1).values.mean().item(), rel=1e-5)
    entropy = -(probs * probs.log()).nansum(-1)
    assert stats["val/entropy"] == pytest.approx(entropy.mean().item(), rel=1e-4)


def test_accumulating_batches_equals_one_big_batch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 9, 7, generator=g)
    targets = torch.randint(0, 7, (6, 9), generator=g)
    value_attr = torch.randint(-1, 2, (6, 9), generator=g)
    whole = finalize(value_stats(logits, targets, value_attr, 2), ("a", "b"), "v")
    parts = accumulate(None, value_stats(logits[:2], targets[:2], value_attr[:2], 2))
    parts = accumulate(parts, value_stats(logits[2:], targets[2:], value_attr[2:], 2))
    split = finalize(parts, ("a", "b"), "v")
    for key in whole:
        assert split[key] == pytest.approx(whole[key], rel=1e-5)


def test_plateau_end_on_a_three_phase_curve():
    baseline = 6.785
    steps = [0, 125, 250, 375, 500, 625, 750]
    losses = [38.7, 8.0, 7.0, 6.95, 6.5, 3.0, 0.5]
    step, crossing = plateau_end(steps, losses, baseline)
    assert step == 500
    expected = 375 + (math.log(6.95) - math.log(baseline)) / (math.log(6.95) - math.log(6.5)) * 125
    assert crossing == pytest.approx(expected)
    assert 375 < crossing < 500


def test_plateau_end_none_when_loss_never_goes_below_baseline():
    assert plateau_end([0, 100, 200], [30.0, 7.0, 6.9], 6.785) == (None, None)


def test_plateau_end_ignores_step_zero_and_noise_above_baseline():
    steps = [0, 100, 200, 300, 400]
    losses = [5.0, 7.1, 6.9, 7.0, 6.7]  # noisy plateau just above the baseline, step 0 ignored
    assert plateau_end(steps, losses, 6.785)[0] == 400


def test_first_step_reaching():
    assert first_step_reaching([0, 10, 20], [0.0, 0.6, 0.99], 0.5) == 10
    assert first_step_reaching([0, 10], [0.0, 0.4], 0.5) is None


def test_a_crossing_during_the_fall_is_no_plateau():
    """A plateau holds for two evaluations at or above the baseline from the fall end on; a fall that goes
    straight through the baseline has none (no negative plateau length)."""
    baseline = 6.785
    steps = [0, 25, 50, 75, 100, 125]
    accs = [0, 0, 0, 0.2, 0.6, 0.9]
    phases = phase_summary(steps, [38.0, 12.0, 7.2, 7.0, 5.0, 2.0], steps, accs, baseline)
    assert phases["fall_end_step"] == 50 and phases["has_plateau"] is True
    assert phases["plateau_end_step"] == 100 and 75 < phases["plateau_end_interpolated"] < 100
    assert phases["plateau_length"] == pytest.approx(phases["plateau_end_interpolated"] - 50)
    for losses in ([38.0, 12.0, 6.0, 5.0, 2.0, 1.0],   # below the baseline at the first evaluation near it
                   [38.0, 12.0, 7.2, 5.0, 2.0, 1.0]):  # in the 10% band once, then below: passing through
        phases = phase_summary(steps, losses, steps, accs, baseline)
        assert phases["fall_end_step"] == 50 and phases["has_plateau"] is False
        assert phases["plateau_end_step"] is None and phases["plateau_length"] is None
        assert phases["acc_50pct_step"] == 100  # accuracy milestones are still reported


def test_plateau_end_is_the_first_crossing_after_the_fall_end():
    baseline = 6.785
    steps = [0, 25, 50, 75, 100, 125]
    losses = [6.0, 30.0, 7.0, 6.9, 6.8, 6.0]  # step-0 loss below the baseline does not count
    phases = phase_summary(steps, losses, steps, [0.0] * 6, baseline)
    assert phases["fall_end_step"] == 50 and phases["plateau_end_step"] == 125
    assert 100 < phases["plateau_end_interpolated"] < 125
    assert phases["plateau_length"] == pytest.approx(phases["plateau_end_interpolated"] - 50)


def test_no_fall_end_yet_means_plateau_unknown():
    phases = phase_summary([0, 25], [38.0, 20.0], [0, 25], [0.0, 0.0], 6.785)
    assert phases["fall_end_step"] is None and phases["has_plateau"] is None and phases["plateau_end_step"] is None
