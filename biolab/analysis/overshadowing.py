"""Knowledge overshadowing across runs of a sweep (SPEC section 9.1; docs/overshadowing.md).

Reads each job's ``mech/overshadowing/summary.json`` (written by ``python -m biolab.mech overshadowing
RUN``) and its swept values, and writes into the sweep directory:

    overshadowing_sweep.json   per job: its overrides, RO per P at the peak and at the end (with the
                               bootstrap intervals), ro_gap with its interval, Spearman(log P, RO), the
                               prior control, the peak step beside the plateau end and the 50% step
    overshadowing_sweep.png    RO against P at the RO peak, one line per job (colour: the swept setting
                               other than the seed; line style: the seed), and the peak step against
                               the plateau end

Jobs without an analysis are listed as missing, not dropped silently.

    python -m biolab.analysis overshadowing multiruns/overshadowing_sweep_cpu
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from biolab.analysis import run_cli
from biolab.analysis.collect import collect_sweep
from biolab.io import write_json
from biolab.plots import plt, save_figure

KEYS = ("ro_by_p_peak", "ro_by_p_end", "ro_gap", "ro_gap_95", "spearman_logp_ro", "prior_control_rate",
        "peak_step", "plateau_end_step", "acc_50pct_step", "recovery_flip_rate")


def collect_overshadowing(sweep_dir: str | Path) -> dict:
    jobs, missing = [], []
    for job in collect_sweep(sweep_dir):
        path = job.path / "mech" / "overshadowing" / "summary.json"
        if not path.is_file():
            missing.append(job.path.name)
            continue
        summary = json.loads(path.read_text())
        jobs.append({"job": job.path.name, "overrides": job.overrides, **{k: summary.get(k) for k in KEYS}})
    return {"jobs": jobs, "missing_analysis": missing}


def _setting(overrides: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(overrides.items()) if k != "seed") or "run"


def plot_sweep(result: dict, path: Path) -> Path:
    fig, (ax_ro, ax_peak) = plt.subplots(1, 2, figsize=(13, 4.8))
    settings = sorted({_setting(j["overrides"]) for j in result["jobs"]})
    colors = dict(zip(settings, plt.cm.tab10.colors))
    styles = ["-", "--", ":", "-."]
    for job in result["jobs"]:
        by_p = job["ro_by_p_peak"] or {}
        points = sorted((float(p), row["ro"]) for p, row in by_p.items() if row["ro"] is not None)
        seed = int(job["overrides"].get("seed", 0))
        setting = _setting(job["overrides"])
        if points:
            ax_ro.plot(*zip(*points), "o" + styles[seed % len(styles)], color=colors[setting],
                       label=f"{setting}, seed {seed}")
        if job["peak_step"] is not None and job["plateau_end_step"] is not None:
            ax_peak.scatter(job["plateau_end_step"], job["peak_step"], color=colors[setting])
    ax_ro.set_xscale("log", base=2)
    ax_ro.set_xlabel("popularity ratio P")
    ax_ro.set_ylabel("RO at its peak")
    ax_ro.legend(fontsize=7)
    ax_peak.set_xlabel("plateau end (step)")
    ax_peak.set_ylabel("RO peak (step)")
    if not ax_peak.collections:  # no run with both a plateau end and an RO peak: say so, not a blank panel
        ax_peak.text(0.5, 0.5, "no run with both a plateau end and an RO peak", transform=ax_peak.transAxes,
                     ha="center")
    ax_peak.axline((0, 0), slope=1, color="grey", linestyle=":", label="peak = plateau end")
    ax_peak.legend(fontsize=7)
    fig.suptitle(f"knowledge overshadowing across {len(result['jobs'])} runs")
    return save_figure(fig, path)


def analyse_overshadowing_sweep(sweep_dir: str | Path) -> dict:
    sweep_dir = Path(sweep_dir)
    result = collect_overshadowing(sweep_dir)
    if not result["jobs"]:
        raise FileNotFoundError(f"no job of {sweep_dir} has mech/overshadowing/summary.json: run "
                                f"python -m biolab.mech overshadowing <job> first")
    write_json(sweep_dir / "overshadowing_sweep.json", result)
    plot_sweep(result, sweep_dir / "overshadowing_sweep.png")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m biolab.analysis overshadowing SWEEP_DIR", file=sys.stderr)
        return 2

    def action() -> None:
        result = analyse_overshadowing_sweep(argv[0])
        for job in result["jobs"]:
            print(f"{job['job']}: RO gap {job['ro_gap']} {job['ro_gap_95']}, Spearman(log P, RO) "
                  f"{job['spearman_logp_ro']}, RO peak at {job['peak_step']} (plateau end {job['plateau_end_step']})")
        if result["missing_analysis"]:
            print(f"not analysed yet: {', '.join(result['missing_analysis'])}")
        print(f"-> {Path(argv[0]) / 'overshadowing_sweep.json'}, overshadowing_sweep.png")
    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
