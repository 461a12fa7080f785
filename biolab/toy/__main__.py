"""Command line of the toy associative memory (SPEC section 8): ``python -m biolab.toy --out DIR``.

Pre-trains the MLP memory, fine-tunes it on M new keys (one run per M, no replay) and with replay
of the old keys at several weights, prints progress, and writes DIR/toy_memory.csv (one row per
run and evaluation step) and DIR/toy_memory.png (old- and new-key accuracy and loss against
fine-tuning steps, one line per M and one per replay weight, chance level dashed). ``--replot``
redraws the figure from DIR/toy_memory.csv without training. See docs/toy_memory.md for measured results.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import fields
from pathlib import Path

import torch

from biolab.io import read_csv, write_csv
from biolab.plots import plt, save_figure
from biolab.toy.associative_memory import ToyConfig, run_study


MARKERS = ("o", "s", "^", "D", "v", "P")


def plot(rows: list[dict], info: dict, path: Path, n_classes: int) -> Path:
    """Accuracy (top) and loss (bottom, log) of the old keys (solid) and new keys (dotted) against
    fine-tuning steps; left: one line per M without replay, right: one line per replay weight. Chance
    level dashed: accuracy 1 / n_classes, loss ln(n_classes) (the uniform guess, this model's
    no-knowledge baseline). Each run has its own colour and marker, so overlapping lines stay apart."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    columns = ((axes[:, 0], "n_new", info["new_counts"], ("replay_weight", 0.0), "fine-tuning on M new keys, no replay"),
               (axes[:, 1], "replay_weight", info["replay_weights"], ("n_new", info["replay_new"]),
                f"M = {info['replay_new']} new keys, old keys replayed at per-key weight w"))
    for (ax_acc, ax_loss), key, values, fixed, title in columns:
        for i, value in enumerate(values):
            run = [r for r in rows if r[key] == value and r[fixed[0]] == fixed[1]]
            steps = [r["step"] for r in run]
            label = f"M = {value:g}" if key == "n_new" else ("no replay" if value == 0 else f"replay w = {value:.3g}")
            style = dict(marker=MARKERS[i % len(MARKERS)], markevery=0.1, markersize=4, color=f"C{i}")
            for ax, metric in ((ax_acc, "acc"), (ax_loss, "loss")):
                ax.plot(steps, [r[f"old_{metric}"] for r in run], "-", label=label, **style)
                ax.plot(steps, [r[f"new_{metric}"] for r in run], ":", **style)
        ax_acc.axhline(1 / n_classes, color="k", linestyle="--", linewidth=1, label=f"chance 1/{n_classes}")
        ax_loss.axhline(math.log(n_classes), color="k", linestyle="--", linewidth=1,
                        label=f"chance: uniform guess ln {n_classes} = {math.log(n_classes):.2f} nats")
        ax_acc.set_ylim(-0.02, 1.02)
        ax_loss.set_yscale("log")
        ax_acc.set_title(title, fontsize=10)
        ax_loss.set_xlabel("fine-tuning step (linear to 10, then log)")
        for ax in (ax_acc, ax_loss):
            ax.set_xscale("symlog", linthresh=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="center left" if ax is ax_acc else "lower left")
    axes[0, 0].set_ylabel("accuracy (solid: old keys, dotted: new keys)")
    axes[1, 0].set_ylabel("loss, nats (solid: old keys, dotted: new keys)")
    fig.suptitle("Toy associative memory: MLP 64-256-30, 8,192 old keys (SPEC section 8)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=80)


def study_info(rows: list[dict]) -> dict:
    """The runs of a toy_memory.csv as run_study's info: M values without replay, the M of the replay runs
    and its weights (what `plot` needs to redraw a committed CSV)."""
    runs = list(dict.fromkeys((int(r["n_new"]), float(r["replay_weight"])) for r in rows))
    replayed = [m for m, w in runs if w > 0]
    replay_new = replayed[0] if replayed else runs[0][0]
    return {"new_counts": [m for m, w in runs if w == 0], "replay_new": replay_new,
            "replay_weights": [w for m, w in runs if m == replay_new]}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m biolab.toy", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/toy_memory"), help="output directory")
    parser.add_argument("--new-keys", type=int, nargs="+", default=[256, 1024, 4096], help="M values, no replay")
    parser.add_argument("--replay-weights", type=float, nargs="+", default=[0, 1 / 32, 1 / 8, 1 / 2, 2],
                        help="per-key replay weights of the old keys")
    parser.add_argument("--replay-new-keys", type=int, default=1024, help="M of the replay runs")
    parser.add_argument("--replot", action="store_true",
                        help="redraw OUT/toy_memory.png from OUT/toy_memory.csv (no training)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: fastest for this small model on a shared machine)")
    defaults = ToyConfig()
    for f in fields(ToyConfig):  # --seed, --finetune-steps, --n-keys, ...
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.replot:
        csv_path = args.out / "toy_memory.csv"
        if not csv_path.is_file():
            print(f"error: --replot needs {csv_path}, which does not exist", file=sys.stderr)
            sys.exit(2)
        rows = read_csv(csv_path)
        print(f"wrote {plot(rows, study_info(rows), args.out / 'toy_memory.png', args.n_classes)}")
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        cfg = ToyConfig(**{f.name: getattr(args, f.name) for f in fields(ToyConfig)})
        rows, info = run_study(cfg, args.new_keys, args.replay_weights, args.replay_new_keys,
                               log=lambda line: print(line, flush=True))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        torch.set_num_threads(threads)  # main() may be called from Python (tests)
    write_csv(args.out / "toy_memory.csv", [{k: round(v, 5) for k, v in r.items()} for r in rows])
    plot(rows, info, args.out / "toy_memory.png", cfg.n_classes)
    print(f"wrote {args.out / 'toy_memory.csv'} and {args.out / 'toy_memory.png'} ({info['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
