"""Command line of the toy associative memory (SPEC section 8): ``python -m biolab.toy --out DIR``.

Pre-trains the MLP memory, fine-tunes it on M new keys (one run per M, no replay) and with replay
of the old keys at several weights, prints progress, and writes DIR/toy_memory.csv (one row per
run and evaluation step) and DIR/toy_memory.png (old-key accuracy against fine-tuning steps: one
line per M, one line per replay weight). See docs/toy_memory.md for measured results.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from biolab.io import write_csv  # noqa: E402
from biolab.toy.associative_memory import ToyConfig, run_study  # noqa: E402


def plot(rows: list[dict], info: dict, path: Path) -> None:
    """Left: old-key accuracy per M without replay (new-key accuracy dotted); right: per replay weight."""
    fig, (ax_m, ax_w) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, values, fixed in ((ax_m, "n_new", info["new_counts"], ("replay_weight", 0.0)),
                                   (ax_w, "replay_weight", info["replay_weights"], ("n_new", info["replay_new"]))):
        for value in values:
            run = [r for r in rows if r[key] == value and r[fixed[0]] == fixed[1]]
            steps = [r["step"] for r in run]
            label = f"M = {value}" if key == "n_new" else ("no replay" if value == 0 else f"replay w = {value:g}")
            line, = ax.plot(steps, [r["old_acc"] for r in run], "-", label=label)
            ax.plot(steps, [r["new_acc"] for r in run], ":", color=line.get_color())
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel("fine-tuning step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_m.set_ylabel("accuracy (solid: old keys, dotted: new keys)")
    ax_m.set_title("fine-tuning on M new keys, no replay")
    ax_w.set_title(f"M = {info['replay_new']} new keys, old keys replayed at per-key weight w")
    fig.suptitle("Toy associative memory: MLP 64-256-30, 8,192 old keys (SPEC section 8)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m biolab.toy", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/toy_memory"), help="output directory")
    parser.add_argument("--new-keys", type=int, nargs="+", default=[256, 1024, 4096], help="M values, no replay")
    parser.add_argument("--replay-weights", type=float, nargs="+", default=[0, 1 / 32, 1 / 8, 1 / 2, 2],
                        help="per-key replay weights of the old keys")
    parser.add_argument("--replay-new-keys", type=int, default=1024, help="M of the replay runs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: fastest for this small model on a shared machine)")
    defaults = ToyConfig()
    for f in fields(ToyConfig):  # --seed, --finetune-steps, --n-keys, ...
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
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
    plot(rows, info, args.out / "toy_memory.png")
    print(f"wrote {args.out / 'toy_memory.csv'} and {args.out / 'toy_memory.png'} ({info['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
