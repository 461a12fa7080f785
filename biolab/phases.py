"""The three learning phases read off an evaluation history (SPEC sections 5-6).

Fall end: the first evaluation step > 0 with the attribute loss within 10% of the no-knowledge
baseline. Plateau end (SPEC section 5; the paper gives no formula, this reconstruction matches its
plots): the first evaluation step AFTER the fall end at which the attribute loss is below the
baseline, plus the step where the loss crosses the baseline, interpolated linearly in log-loss
between the two evaluations around it. A run whose loss does not stay at or above the baseline for at
least two evaluations from the fall end on (the fall went straight through it: small populations,
where fall and acquisition overlap) has NO plateau: plateau end and length are None and
``has_plateau`` is False, so the plateau length is never negative. With the 25-step evaluation
schedule of the CPU presets a plateau shorter than 25 steps cannot be told from a fall. The accuracy milestones are reported for every run.

Noisy curves: with ``confirm=k`` a crossing (or milestone) counts only if the next k-1 evaluations
stay on the same side, so a single noisy dip below the baseline is not taken for the plateau end.
``confirm=1`` (default) is the SPEC definition.
"""

from __future__ import annotations

import math

# milestones that are training steps (callbacks.phases.stop_after may name one)
# a plateau must hold for this many evaluations (fall end included) before the crossing: a fall that
# passes through the 10% band between two evaluations and is below the baseline at the next is no plateau
MIN_PLATEAU_EVALUATIONS = 2
STEP_MILESTONES = ("fall_end_step", "plateau_end_step", "acc_1pct_step", "acc_50pct_step", "acc_99pct_step")


def _holds(values: list[float], i: int, confirm: int, test) -> bool:
    """values[i:i+confirm] all pass `test` (fewer at the end of the history count as not confirmed)."""
    window = values[i:i + confirm]
    return len(window) == confirm and all(test(v) for v in window)


def plateau_end(steps: list[int], losses: list[float], baseline: float, confirm: int = 1,
                after: int = 0) -> tuple[int | None, float | None]:
    """(first evaluated step > `after` with loss < baseline, interpolated crossing step); (None, None) if never."""
    for i, (step, loss) in enumerate(zip(steps, losses)):
        if step > after and _holds(losses, i, confirm, lambda v: v < baseline):
            if i == 0:
                return step, float(step)
            s0, l0 = steps[i - 1], losses[i - 1]
            a, b, c = math.log(l0), math.log(loss), math.log(baseline)
            fraction = (a - c) / (a - b) if a != b else 1.0
            return step, s0 + fraction * (step - s0)
    return None, None


def first_step_reaching(steps: list[int], values: list[float], threshold: float, confirm: int = 1) -> int | None:
    """First evaluated step whose value is >= threshold (e.g. attribute accuracy 0.5)."""
    return next((s for i, s in enumerate(steps) if _holds(values, i, confirm, lambda v: v >= threshold)), None)


def fall_end(steps: list[int], losses: list[float], baseline: float, tolerance: float = 0.10,
             confirm: int = 1) -> int | None:
    """End of the initial fall: first evaluated step > 0 with loss within `tolerance` of the baseline."""
    near = (1 + tolerance) * baseline
    return next((s for i, s in enumerate(steps) if s > 0 and _holds(losses, i, confirm, lambda v: v <= near)), None)


def phase_summary(steps: list[int], losses: list[float], acc_steps: list[int], accs: list[float],
                  baseline: float, confirm: int = 1) -> dict:
    """Milestones of the three phases, as stored in summary.json and logged under phase/."""
    fall = fall_end(steps, losses, baseline, confirm=confirm)
    end_step, end_interp = (None, None) if fall is None else plateau_end(steps, losses, baseline, confirm,
                                                                         after=fall - 1)
    # evaluations at or above the baseline from the fall end on, before the crossing
    held = sum(fall <= s < end_step for s in steps) if end_step is not None else None
    fell_through = held is not None and held < MIN_PLATEAU_EVALUATIONS
    if fell_through:
        end_step, end_interp = None, None
    return {
        "fall_end_step": fall,
        # False: the fall went straight below the baseline; None: the fall has not ended (yet)
        "has_plateau": None if fall is None else not fell_through,
        "plateau_end_step": end_step,
        "plateau_end_interpolated": end_interp,
        "plateau_length": None if fall is None or end_interp is None else end_interp - fall,
        "acc_at_fall_end": None if fall is None else dict(zip(acc_steps, accs)).get(fall),
        "acc_1pct_step": first_step_reaching(acc_steps, accs, 0.01, confirm),
        "acc_50pct_step": first_step_reaching(acc_steps, accs, 0.5, confirm),
        "acc_99pct_step": first_step_reaching(acc_steps, accs, 0.99, confirm),
    }
