"""Speed checks of the core lab, each a ratio measured in one run on this machine.

    python benchmarks/throughput.py                  # quick-start model and data, CPU
    python benchmarks/throughput.py --steps 60 --experiment paper --device cuda
    python benchmarks/throughput.py --device cuda data.num_workers=2      # Hydra overrides at the end

Prints four ratios (targets from the core-lab and dynamics issues):
1. Lightning training step vs a bare PyTorch loop, same model, batches and optimiser (>= 0.9x);
   the two are timed in alternating rounds so machine noise hits both alike;
2. data generation speed vs training consumption, batches per second (>= 10x);
3. evaluation time (attention metrics included) as a share of the quick-start's training time on
   its schedule (< 15%);
4. attention metrics alone as a share of that training time (< 10%).
Also printed: model FLOPs utilisation (MFU) of the Lightning step on non-padding tokens, with the peak it
is taken against (`--peak-tflops`; known GPUs' dense bf16 peaks by default, see PEAK_TFLOPS), and, with
data.pad_to, the padding waste. With data.device_batches the data rate is that of the device path.
Results are printed and, with --out, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from biolab.callbacks.evaluation import Evaluator
from biolab.data.biographies import IGNORE_INDEX
from biolab.runs import build_datamodule, model_config

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
# dense (no sparsity) bf16 tensor-core peaks from the vendor's data sheets, TFLOP/s, matched in the device name
PEAK_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0,
               "A100": 312.0}


def flops_per_token(model, mean_length: float) -> float:
    """Training FLOPs per non-padding token: 6 x parameters that multiply (all but the embedding lookup) plus
    attention, 12 x layers x d_model x mean causal context ((length + 1) / 2), forward and backward."""
    cfg = model.cfg
    matmul_params = model.num_params(non_embedding=True) + cfg.vocab_size * cfg.d_model  # + the unembedding
    return 6 * matmul_params + 12 * cfg.n_layers * cfg.d_model * (mean_length + 1) / 2


def peak_tflops(device_name: str, given: float | None) -> float | None:
    if given is not None or device_name == "cpu":
        return given
    return next((peak for name, peak in PEAK_TFLOPS.items() if name in device_name), None)


def build(experiment: str, overrides=(), **module_overrides):
    """Config, set-up datamodule and a factory of identically initialised modules for `experiment`
    (`overrides`: Hydra overrides such as "data.num_workers=2")."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *overrides])
    dm = build_datamodule(cfg)  # the run loader's builders: the objects train() makes
    dm.setup()
    model_cfg = model_config(cfg, dm.vocab_size)

    def make_module():
        torch.manual_seed(0)
        return instantiate(cfg.module, model=asdict(model_cfg), max_steps=cfg.trainer.max_steps,
                           attributes=list(dm.attributes), **module_overrides)
    return cfg, dm, make_module


def bare_loop(module, dm, steps: int, device: str, precision: str = "32-true") -> float:
    """Seconds for `steps` optimiser steps of a plain PyTorch loop (after one warm-up step); with
    precision bf16-mixed the forward runs under bf16 autocast, as Lightning's does."""
    module = module.to(device)
    module.configure_model()  # torch.compile where the experiment asks for it, as Lightning does
    optim_cfg = module.configure_optimizers()
    optimizer, scheduler = optim_cfg["optimizer"], optim_cfg["lr_scheduler"]["scheduler"]
    batches = [{k: v.to(device) for k, v in dm.train_batch(s).items()} for s in range(steps + 1)]
    start = None
    for i, batch in enumerate(batches):
        if i == 1:
            start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            logits = module(batch["input_ids"])  # (batch, seq, vocab)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(),
                                   ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


class StepTimer(L.Callback):
    """Time from the end of the first (warm-up) training step to the end of the last."""

    def __init__(self, device: str = "cpu"):
        self.device = device

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.device == "cuda":
            torch.cuda.synchronize()
        if trainer.global_step == 1:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def lightning_loop(module, dm, steps: int, device: str, callbacks=(), precision: str = "32-true") -> float:
    """Seconds for `steps` optimiser steps through Trainer.fit (batches from the datamodule's stream),
    after one warm-up step; `callbacks` are added to the timer (e.g. attention patching)."""
    timer = StepTimer(device)
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=steps + 1,
                        precision=precision, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[timer, *callbacks])
    trainer.fit(module, datamodule=dm)
    return timer.end - timer.start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="quickstart")
    parser.add_argument("--steps", type=int, default=40, help="timed optimiser steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's bf16 peak for MFU (default: PEAK_TFLOPS by device name)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.num_workers=2 module.compile=false")
    args = parser.parse_args(argv)
    cfg, dm, make_module = build(args.experiment, args.overrides)
    precision = str(cfg.trainer.precision) if args.device == "cuda" else "32-true"

    # 1. Lightning vs bare loop, alternating rounds
    bare, lightning = [], []
    for _ in range(args.rounds):
        bare.append(bare_loop(make_module(), dm, args.steps, args.device, precision))
        lightning.append(lightning_loop(make_module(), dm, args.steps, args.device, precision=precision))
    real = [(dm.train_batch(s)["targets"] != IGNORE_INDEX).sum(1) for s in range(1, args.steps + 1)]
    tokens = sum(int(r.sum()) for r in real)
    bare_tps, lightning_tps = tokens / min(bare), tokens / min(lightning)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    peak = peak_tflops(device_name, args.peak_tflops)
    model_flops = flops_per_token(make_module().model, tokens / sum(len(r) for r in real))
    mfu = lightning_tps * model_flops / (peak * 1e12) if peak else None

    # 2. data generation vs training consumption
    make_batch = dm.train_batch
    if dm.device_batches:  # the path training uses: assembled on the training device
        from biolab.data.device_batches import DeviceBatches
        make_batch = DeviceBatches(dm.train_batches, args.device)
    start = time.perf_counter()
    n_batches = 200
    for s in range(n_batches):
        make_batch(10_000 + s)
    if args.device == "cuda":
        torch.cuda.synchronize()
    gen_batches_per_s = n_batches / (time.perf_counter() - start)
    train_steps_per_s = args.steps / min(lightning)

    # 3. evaluation share on the experiment's schedule
    module = make_module().to(args.device)
    start = time.perf_counter()
    for name, batches in dm.eval_batches.items():
        module.evaluate(batches, prefix=name)
    attention = instantiate(cfg.callbacks.attention)
    attention_batches = dm.fixed_batches("attention", attention.n_sequences, with_roles=True)
    attn_start = time.perf_counter()
    attention.measure(module.model, attention_batches, torch.device(args.device))
    attn_seconds = time.perf_counter() - attn_start
    eval_seconds = time.perf_counter() - start
    evaluator = instantiate(cfg.callbacks.evaluator)
    assert isinstance(evaluator, Evaluator)
    max_steps = cfg.trainer.max_steps
    n_evals = sum(evaluator.is_eval_step(s, max_steps) for s in range(max_steps + 1))
    train_seconds = max_steps / train_steps_per_s
    eval_share = n_evals * eval_seconds / train_seconds
    attn_share = n_evals * attn_seconds / train_seconds

    results = {
        "experiment": args.experiment, "overrides": args.overrides, "device": args.device,
        "num_workers": int(cfg.data.num_workers),
        "device_name": device_name, "pad_lengths": list(dm.pad_lengths), "device_batches": dm.device_batches,
        "padding": dm.padding,
        "precision": precision, "compile": bool(cfg.module.get("compile", False)),
        "compile_options": dict(cfg.module.get("compile_options") or {}), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "timed_steps": args.steps, "rounds": args.rounds,
        "bare_tokens_per_s": bare_tps, "lightning_tokens_per_s": lightning_tps,
        "lightning_over_bare": lightning_tps / bare_tps,
        "data_batches_per_s": gen_batches_per_s, "train_steps_per_s": train_steps_per_s,
        "data_over_training": gen_batches_per_s / train_steps_per_s,
        "flops_per_token": model_flops, "peak_tflops": peak, "mfu": mfu,
        "evaluations": n_evals, "seconds_per_evaluation": eval_seconds,
        "eval_over_training_time": eval_share,
        "attention_sequences": attention.n_sequences, "seconds_per_attention_measure": attn_seconds,
        "attention_over_training_time": attn_share,
    }
    print(f"lightning / bare loop tokens/s : {results['lightning_over_bare']:.3f}  (target >= 0.9)"
          f"   [{lightning_tps:,.0f} vs {bare_tps:,.0f} tok/s]")
    if mfu is not None:
        print(f"model FLOPs utilisation        : {mfu:.1%}  (non-padding tokens; peak {peak} TFLOP/s bf16 dense, "
              f"{device_name})   [{train_steps_per_s:.1f} steps/s]")
    print(f"data generation / training     : {results['data_over_training']:.1f}x  (target >= 10)"
          f"   [{gen_batches_per_s:.1f} vs {train_steps_per_s:.2f} batches/s]")
    print(f"evaluation / training time     : {eval_share:.1%}  (target < 15%)"
          f"   [{n_evals} evaluations x {eval_seconds:.2f} s over {train_seconds:.0f} s of training]")
    print(f"attention metrics / training   : {attn_share:.1%}  (target < 10%)"
          f"   [{n_evals} x {attn_seconds:.2f} s for {attention.n_sequences} sequences]")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
