"""Cost of the circuits analysis on the quick-start model: exact patching of every edge and one EAP-IG pass.

    python benchmarks/circuits.py                          # quick-start shape, untrained weights
    python benchmarks/circuits.py --run runs/quickstart    # the latest snapshot of a run
    python benchmarks/circuits.py --snapshots 12           # also: a full per-snapshot analysis x 12 (estimate)

Prints seconds for one EAP-IG pass (5 steps), for exact patching of every edge (one patched forward
per edge) over the same prompts, their ratio, and the time of one snapshot of
``python -m biolab.mech circuits`` (without exact patching) times --snapshots, against the 15-minute
target for ~12 snapshots on 2 cores. Writes benchmarks/results/cpu_circuits.json. Timings depend on
what else runs on the machine: the JSON records the 1-minute load average at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from biolab.mech.circuits import CircuitOptions, analyse_circuits, logit_diff_metric
from biolab.mech.graph import Graph, ablated_outputs, attribute, exact_patching
from biolab.mech.prompts import corrupt, recall_prompts
from biolab.runs import build_datamodule, load_run, model_config, new_model

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def quickstart_model():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=quickstart"])
    dm = build_datamodule(cfg)
    dm.setup()
    return new_model(model_config(cfg, dm.vocab_size)).eval().requires_grad_(False), dm


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a run directory (default: the quick-start shape, untrained)")
    parser.add_argument("--prompts-per-attribute", type=int, default=43, help="43 x 6 attributes = 258 prompts")
    parser.add_argument("--snapshots", type=int, default=12)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_circuits.json"))
    args = parser.parse_args(argv)
    if args.run:
        run = load_run(args.run)
        model, dm = run.model(), run.datamodule()
    else:
        model, dm = quickstart_model()
    clean = recall_prompts(dm, "seen", n=args.prompts_per_attribute)
    corrupted = corrupt(clean, dm)
    graph, metric = Graph.of(model), logit_diff_metric(clean, corrupted)
    ablated = ablated_outputs(model, graph, clean.tokens, corrupted.tokens, "counterfactual")
    start = time.perf_counter()
    attribute(model, graph, clean.tokens, clean.last, ablated, metric, ig_steps=5)
    eap_ig = time.perf_counter() - start
    start = time.perf_counter()
    exact_patching(model, graph, clean.tokens, clean.last, ablated, metric)
    exact = time.perf_counter() - start
    start = time.perf_counter()
    analyse_circuits(model, clean, corrupted, CircuitOptions(min_effect=0.0))
    snapshot = time.perf_counter() - start
    result = {"model": f"{model.cfg.n_layers} layers x {model.cfg.n_heads} heads, d_model {model.cfg.d_model}",
              "source": args.run or "quick-start shape, untrained", "prompts": len(clean), "edges": graph.n_edges,
              "torch_threads": torch.get_num_threads(), "eap_ig_5_steps_seconds": eap_ig,
              "exact_patching_all_edges_seconds": exact, "exact_over_eap_ig": exact / eap_ig,
              "one_snapshot_seconds": snapshot, "snapshots": args.snapshots,
              "full_pass_estimate_minutes": snapshot * args.snapshots / 60, "target_minutes": 15,
              "load_average_1min_at_end": os.getloadavg()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{graph.n_edges} edges, {len(clean)} prompts: EAP-IG (5 steps) {eap_ig:.1f} s; exact patching of every "
          f"edge {exact:.1f} s ({exact / eap_ig:.0f}x); one snapshot of the circuits analysis {snapshot:.1f} s -> "
          f"{args.snapshots} snapshots ~{snapshot * args.snapshots / 60:.1f} min (target < 15 min on 2 cores); "
          f"load average {result['load_average_1min_at_end']:.1f} -> {args.out}")
    return result


if __name__ == "__main__":
    main()
