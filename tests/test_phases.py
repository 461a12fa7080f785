"""PhaseTracker on synthetic curves: clean, noisy, never leaving the plateau; resume keeps history."""

import numpy as np
import pytest

from biolab.callbacks import PhaseTracker

BASELINE = 6.785


def synthetic_history(n_steps=3000, every=50, plateau_end=1200, noise=0.0, acquire=True, seed=0):
    """Three-phase curve: fall from 17 towards 7.0 (time constant 60 steps), plateau at 7.0, exponential acquisition."""
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(0, n_steps + 1, every):
        fall = 7.0 + 10.0 * np.exp(-step / 60)
        if acquire and step > plateau_end:
            loss = 7.0 * np.exp(-(step - plateau_end) / 400) + 0.01
            acc = 1 - np.exp(-(step - plateau_end) / 300)
        else:
            loss, acc = fall, 0.0
        loss *= np.exp(noise * rng.standard_normal())
        rows.append({"step": step, "val/attr_loss": float(loss), "val/attr_acc": float(np.clip(acc, 0, 1))})
    return rows


def run_tracker(history, confirm=1):
    tracker = PhaseTracker(confirm=confirm)
    for i in range(1, len(history) + 1):  # one update per evaluation, as during training
        tracker.update(history[:i], BASELINE)
    return tracker


def test_clean_three_phase_curve():
    phases = run_tracker(synthetic_history()).phases
    # 7 + 10 exp(-s/60) <= 1.1 * baseline from s = 184: the evaluation at 200
    assert phases["fall_end_step"] == 200
    # loss 7.0 at 1200 -> 7.0 * exp(-50/400) = 6.18 at 1250: the first evaluation below the baseline
    assert phases["plateau_end_step"] == 1250
    assert 1200 < phases["plateau_end_interpolated"] < 1250
    assert phases["acc_1pct_step"] == 1250 and phases["acc_50pct_step"] == 1450
    assert phases["acc_99pct_step"] == 2600


def test_noisy_curve_needs_confirmation():
    history = synthetic_history(noise=0.04, seed=3)
    dips = [r["step"] for r in history if 300 < r["step"] <= 1200 and r["val/attr_loss"] < BASELINE]
    assert dips, "this seed must put a noisy dip below the baseline during the plateau"
    assert run_tracker(history, confirm=1).phases["plateau_end_step"] < 1200  # fooled by the dip
    confirmed = run_tracker(history, confirm=3).phases
    assert 1200 < confirmed["plateau_end_step"] <= 1300
    assert 1300 < confirmed["acc_50pct_step"] <= 1550


def test_run_that_never_leaves_the_plateau():
    phases = run_tracker(synthetic_history(acquire=False)).phases
    assert phases["fall_end_step"] is not None
    assert phases["plateau_end_step"] is None and phases["plateau_length"] is None
    assert phases["acc_1pct_step"] is None


def test_snapshots_grow_during_training_and_survive_a_state_dict_round_trip():
    history = synthetic_history()
    tracker = run_tracker(history[:10])
    assert tracker.phases["plateau_end_step"] is None  # not reached yet at step 450
    restored = PhaseTracker()
    restored.load_state_dict(tracker.state_dict())
    for i in range(11, len(history) + 1):
        restored.update(history[:i], BASELINE)
    assert restored.snapshots == run_tracker(history).snapshots


def test_bad_confirm_is_refused():
    with pytest.raises(ValueError, match="callbacks.phases.confirm"):
        PhaseTracker(confirm=0)


def test_stop_after_ends_the_run_at_the_milestone_and_counts_as_finished(tiny_cfg, milestone_at_10):
    """stop_after ends training at the first evaluation where the milestone is known; the run is finished
    (re-running does nothing). The milestone is forced at step >= 10 so the tiny run reaches it."""
    import json
    from pathlib import Path

    from biolab.train import train

    cfg = tiny_cfg("callbacks.phases.stop_after=acc_50pct_step")
    summary = train(cfg)
    assert summary["steps"] == 10 and summary["max_steps"] == 20
    assert summary["completed"] and summary["stopped_after"] == "acc_50pct_step"
    assert json.loads((Path(cfg.run_dir) / "summary.json").read_text()) == summary
    assert train(cfg) == summary  # finished: nothing to do


def test_bad_stop_after_is_refused():
    with pytest.raises(ValueError, match="callbacks.phases.stop_after"):
        PhaseTracker(stop_after="acc_42pct_step")


def test_stop_after_plateau_end_also_stops_a_run_without_plateau():
    """A fall straight through the baseline has no plateau: waiting for its end would run to max_steps."""
    history = [{"step": s, "val/attr_loss": v, "val/attr_acc": 0.0}
               for s, v in ((0, 30.0), (25, 12.0), (50, 5.0), (75, 2.0))]
    tracker = PhaseTracker(stop_after="plateau_end_step")
    tracker.update(history[:2], BASELINE)
    assert not tracker._milestone_settled()
    tracker.update(history[:3], BASELINE)
    assert tracker.phases["has_plateau"] is False and tracker._milestone_settled()
    assert not PhaseTracker(stop_after="acc_50pct_step")._milestone_settled()
