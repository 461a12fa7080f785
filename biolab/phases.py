"""The three learning phases read off an evaluation history (SPEC sections 5-6).

Plateau end (SPEC section 5; the paper gives no formula, this reconstruction matches its plots):
the first evaluation step after the initial fall at which the attribute loss is below the
no-knowledge baseline, plus the step where the loss crosses the baseline, interpolated linearly
in log-loss between the two evaluations around it. When the fall and acquisition overlap (small
populations), the baseline crossing measures the fall, so the accuracy milestones are reported too.
"""

from __future__ import annotations

import math


def plateau_end(steps: list[int], losses: list[float], baseline: float) -> tuple[int | None, float | None]:
    """(first evaluated step > 0 with loss < baseline, interpolated crossing step); (None, None) if never."""
    for i, (step, loss) in enumerate(zip(steps, losses)):
        if step > 0 and loss < baseline:
            if i == 0:
                return step, float(step)
            s0, l0 = steps[i - 1], losses[i - 1]
            a, b, c = math.log(l0), math.log(loss), math.log(baseline)
            fraction = (a - c) / (a - b) if a != b else 1.0
            return step, s0 + fraction * (step - s0)
    return None, None


def first_step_reaching(steps: list[int], values: list[float], threshold: float) -> int | None:
    """First evaluated step whose value is >= threshold (e.g. attribute accuracy 0.5)."""
    return next((s for s, v in zip(steps, values) if v >= threshold), None)


def fall_end(steps: list[int], losses: list[float], baseline: float, tolerance: float = 0.10) -> int | None:
    """End of the initial fall: first evaluated step > 0 with loss within `tolerance` of the baseline."""
    return next((s for s, v in zip(steps, losses) if s > 0 and v <= (1 + tolerance) * baseline), None)


def phase_summary(steps: list[int], losses: list[float], acc_steps: list[int], accs: list[float],
                  baseline: float) -> dict:
    """Milestones of the three phases, as stored in summary.json."""
    end_step, end_interp = plateau_end(steps, losses, baseline)
    fall = fall_end(steps, losses, baseline)
    return {
        "fall_end_step": fall,
        "plateau_end_step": end_step,
        "plateau_end_interpolated": end_interp,
        "plateau_length": None if fall is None or end_interp is None else end_interp - fall,
        "acc_at_fall_end": None if fall is None else dict(zip(acc_steps, accs)).get(fall),
        "acc_1pct_step": first_step_reaching(acc_steps, accs, 0.01),
        "acc_50pct_step": first_step_reaching(acc_steps, accs, 0.5),
        "acc_99pct_step": first_step_reaching(acc_steps, accs, 0.99),
    }
