"""Cost of attention patching: patched / unpatched training step time, measured in one run (SPEC section 7).

    python benchmarks/patching.py --out benchmarks/results/cpu_patching.json     # quick-start, CPU
    python benchmarks/patching.py --experiment paper --device cuda --steps 30      # paper size, GPU

Three variants of the same Lightning training loop (same model, batches and optimiser), timed in
alternating rounds so that machine noise hits all alike (best round of each):
- unpatched: fused scaled_dot_product_attention (what a normal run does);
- explicit: the explicit-softmax attention path alone, no patching (isolates the cost of the path
  that any hook on hook_pattern switches to);
- patched: AttentionPatching from step 0, every layer and head (explicit path + the reference's
  twin forward under no_grad).
Target (patching issue): patched / unpatched <= 1.6x. torch.compile is off in every variant (hooks do
not fire through it). The reference weights are the untrained model's; the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from throughput import build, lightning_loop  # benchmarks/throughput.py (this script's directory is on sys.path)

from biolab.callbacks.patching import AttentionPatching
from biolab.runs import save_weights
from biolab.data.biographies import IGNORE_INDEX
VARIANTS = ("unpatched", "explicit", "patched")


def timed_fit(variant: str, make_module, dm, steps: int, device: str, precision: str, reference: str) -> float:
    """Seconds for `steps` optimiser steps through Trainer.fit, after one warm-up step."""
    module = make_module()
    callbacks = []
    if variant == "explicit":
        module.model.force_explicit_attention = True
    elif variant == "patched":
        callbacks.append(AttentionPatching(reference=reference, start_step=0))
    return lightning_loop(module, dm, steps, device, callbacks=callbacks, precision=precision)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="quickstart")
    parser.add_argument("--steps", type=int, default=30, help="timed optimiser steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, dm, make_module = build(args.experiment, compile=False)
    precision = str(cfg.trainer.precision) if args.device == "cuda" else "32-true"
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        reference = str(Path(tmp) / "step_0.safetensors")
        save_weights(make_module().model, reference, step=0)
        for _ in range(args.rounds):
            for variant in VARIANTS:
                seconds[variant].append(timed_fit(variant, make_module, dm, args.steps, args.device, precision,
                                                  reference))
    best = {v: min(s) for v, s in seconds.items()}
    tokens = sum(int((dm.train_batch(s)["targets"] != IGNORE_INDEX).sum()) for s in range(1, args.steps + 1))
    results = {
        "experiment": args.experiment, "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "precision": precision,
        "timed_steps": args.steps, "rounds": args.rounds,
        "load_average_1min_at_end": os.getloadavg()[0],  # other processes on the machine (noise)
        "seconds_per_round": seconds,
        "step_ms": {v: 1000 * best[v] / args.steps for v in VARIANTS},
        "tokens_per_s": {v: tokens / best[v] for v in VARIANTS},
        "patched_over_unpatched": best["patched"] / best["unpatched"],
        "explicit_over_unpatched": best["explicit"] / best["unpatched"],
        "patched_over_explicit": best["patched"] / best["explicit"],
    }
    print(f"patched / unpatched step time : {results['patched_over_unpatched']:.2f}x  (target <= 1.6)")
    print(f"  explicit softmax path alone : {results['explicit_over_unpatched']:.2f}x of the fused (SDPA) step")
    print(f"  reference twin forward      : {results['patched_over_explicit']:.2f}x of the explicit step")
    print("  step ms (best of rounds)    : " + ", ".join(f"{v} {ms:.1f}" for v, ms in results["step_ms"].items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
