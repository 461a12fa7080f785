"""Command line of biolab.mech: one analysis over the snapshots of a run directory.

    python -m biolab.mech circuits RUN_DIR [key=value ...]   # knowledge circuits across training
    python -m biolab.mech overshadowing RUN_DIR [key=value ...]  # look-alike runs: RO per P across training
    python -m biolab.mech export RUN_DIR [step=K] [out=DIR]   # a TransformerLens HookedTransformer
    python -m biolab.mech neurons RUN_DIR [key=value ...]    # hallucination neurons across training
    python -m biolab.mech entities RUN_DIR [key=value ...]   # known vs unknown people across training
    python -m biolab.mech unknown RUN_DIR [key=value ...]    # an "unknown"-answer run steered with base latents

Options are key=value pairs (values parsed as YAML: 5, 0.7, [0,100,200], final); each analysis's
module docstring lists its keys (biolab/mech/circuits_study.py). Results go to RUN_DIR/mech/<analysis>/.
Bad input (a missing run directory, a step without a snapshot, an unknown analysis or option)
prints one line `error: ...` and exits with code 2, before any work.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from biolab.errors import ConfigError

USAGE = "usage: python -m biolab.mech {circuits,overshadowing,neurons,entities,unknown,export} RUN_DIR [key=value ...]"


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"options are key=value, got {pair!r}")
        try:
            options[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            raise ConfigError(f"{key}: cannot read the value {value!r}") from None
    return options


def _circuits(run_dir: str, options: dict) -> None:
    from biolab.mech.circuits_study import run_circuits

    summary = run_circuits(run_dir, **options)
    k = summary["edges_for_faithfulness_fraction"]
    print(f"final step {summary['final_step']}: {summary['n_edges']} edges; F >= 0.7 with "
          f"{'no budget' if k is None else f'{k:.1%} of the edges'} (random sets of that size: "
          f"{summary['random_faithfulness_at_that_budget']}); EAP-IG vs exact Spearman "
          f"{summary['eap_ig_vs_exact_spearman']}; circuit onset {summary['circuit_onset']['step']}, "
          f"plateau end {summary['plateau_end_step']}, 1% accuracy {summary['acc_1pct_step']}")


def _neurons(run_dir: str, options: dict) -> None:
    from biolab.mech.neurons_study import run_neurons

    s = run_neurons(run_dir, **options)
    print(f"main step {s['main_step']}: {s.get('n_h_neurons')} H-neurons of {s.get('n_neurons_total')} "
          f"({s.get('per_mille')} per mille); AUROC held-out people {s.get('auroc_heldout_people')}, unseen "
          f"{s.get('auroc_unseen')}, random sets {s.get('auroc_random_sets')}, confidence baseline "
          f"{s.get('auroc_confidence_baseline')}; AUROC >= 0.7 from step {s['first_step_auroc_0.7']['step']}, "
          f"plateau end {s['plateau_end_step']}")


def _export(run_dir: str, options: dict) -> None:
    from biolab.mech.export import save_export, to_hooked_transformer
    from biolab.runs import load_run

    unknown = sorted(set(options) - {"step", "out"})
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for export; allowed: step, out")
    run = load_run(run_dir)
    snapshot = run.snapshot(options.get("step"))
    out = Path(options.get("out") or run.dir / "mech" / "export" / f"step_{snapshot.step}")
    path = save_export(to_hooked_transformer(run.model(snapshot.step)), out,
                       meta={"step": snapshot.step, "run_dir": str(run.dir)})
    print(f"HookedTransformer of {run.dir} at step {snapshot.step} -> {path} "
          f"(load with biolab.mech.export.load_export)")


def _overshadowing(run_dir: str, options: dict) -> None:
    from biolab.mech.overshadowing_study import run_overshadowing

    summary = run_overshadowing(run_dir, **options)
    gap, interval = summary["ro_gap"], summary["ro_gap_95"]
    shown = "undefined" if gap is None else f"{gap:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
    print(f"RO peak at step {summary['peak_step']} (plateau end {summary['plateau_end_step']}, 50% accuracy "
          f"{summary['acc_50pct_step']}): RO(P={summary['pair_levels'][-1]:g}) - RO(P={summary['pair_levels'][0]:g}) "
          f"= {shown}; Spearman(log P, RO) {summary['spearman_logp_ro']}; prior control "
          f"{summary['prior_control_rate']}; recovery flip rate {summary['recovery_flip_rate']}")


def _entities(run_dir: str, options: dict) -> None:
    from biolab.mech.entities_study import run_entities

    s = run_entities(run_dir, **options)
    print(f"final step {s['final_step']}: known vs token-matched unseen AUROC {s['auroc_best_layer_token_matched']} "
          f"at layer {s['best_layer']} (layer 0: {s['auroc_layer0']}); first step >= 0.9: "
          f"{s['first_step_auroc_0.9']['step']}, plateau end {s['plateau_end_step']}, 1% accuracy {s['acc_1pct_step']}")


def _unknown(run_dir: str, options: dict) -> None:
    from biolab.mech.unknown_study import run_unknown

    s = run_unknown(run_dir, **options)

    def mean(entry):
        return "n/a" if entry is None else f"{entry['mean']:+.3f}"
    print(f"unknown-answer rate: known {s['unknown_rate_known']:.3f}, unseen {s['unknown_rate_unseen']:.3f}; unknown "
          f"latent on known people {mean(s['unknown_answer_rate_change'])} (random latents "
          f"{mean(s['unknown_answer_rate_change_random_latents'])}); known latent on unseen people "
          f"{mean(s['known_latent_unseen_unknown_rate_change'])}; unknown direction ablated, unseen "
          f"{mean(s['ablation_unseen_unknown_rate_change']['unknown_latent'])} (random directions "
          f"{mean(s['ablation_unseen_unknown_rate_change']['random_directions'])})")


COMMANDS = {"circuits": _circuits, "overshadowing": _overshadowing, "neurons": _neurons, "entities": _entities,
            "unknown": _unknown, "export": _export}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        if argv[0] not in COMMANDS:
            raise ConfigError(f"unknown analysis {argv[0]!r}; available: {', '.join(COMMANDS)}")
        if len(argv) < 2 or "=" in argv[1]:
            raise ConfigError(f"{argv[0]} needs a run directory. {USAGE}")
        COMMANDS[argv[0]](argv[1], parse_options(argv[2:]))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
