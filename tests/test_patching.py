"""Attention patching and trajectory checkpoints (SPEC section 7): hooks, runs, resume, bad input.

Model-level tests use a bare Transformer; run-level tests share one tiny reference run (module
fixture) whose trajectory checkpoints are the patching references. Everything here runs on one
torch thread, subprocesses included (same thread count: bitwise-comparable runs): on a busy 2-core
machine two threads made a tiny training step 40x slower (3 s instead of 0.07 s).
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from biolab.callbacks.patching import AttentionPatching, PatternSwap
from biolab.runs import read_metadata, save_weights
from biolab.errors import ConfigError
from biolab.io import read_csv
from biolab.model import Transformer, TransformerConfig
from biolab.train import train

from conftest import kill_once_checkpointed, make_cfg

REPO = Path(__file__).resolve().parents[1]
CFG = TransformerConfig(vocab_size=50, n_layers=2, n_heads=4, d_model=64, d_mlp=128, max_seq_len=32)
TOKENS = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))
TARGETS = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(2))
IS_PATTERN = lambda name: name.endswith("hook_pattern")  # noqa: E731
METRIC_PREFIXES = ("val/", "train_templates/", "unseen/", "train/loss", "attn/")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(CFG)


def loss_and_grads(model: Transformer, forward) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = F.cross_entropy(forward().flatten(0, 1), TARGETS.flatten())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


# ---- the hooks themselves --------------------------------------------------------------------------

def test_own_patterns_keep_the_loss_and_cut_only_the_pattern_gradient():
    """Patched with its own patterns, a model has the loss of the unpatched model and exactly the
    gradients of the unpatched model with a stop-gradient on the pattern: parameters downstream of
    every pattern keep their gradients, queries and keys of patched layers get none."""
    model = tiny_model()
    plain_loss, plain = loss_and_grads(model, lambda: model(TOKENS))
    stop_loss, stopped = loss_and_grads(
        model, lambda: model.run_with_hooks(TOKENS, fwd_hooks=[(IS_PATTERN, lambda p, hook: p.detach())]))
    swap = PatternSwap(copy.deepcopy(model))
    swap.attach(model)
    patched_loss, patched = loss_and_grads(model, lambda: model(TOKENS))
    swap.detach()
    assert not any(h.has_hooks for h in model.hook_dict.values()) and not model._forward_pre_hooks

    torch.testing.assert_close(patched_loss, plain_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stop_loss, plain_loss, atol=1e-5, rtol=1e-5)
    for name in plain:
        torch.testing.assert_close(patched[name], stopped[name], atol=1e-6, rtol=1e-5, msg=name)
    d = CFG.d_model
    downstream = ["unembed.weight", "ln_final.weight", "blocks.1.mlp.up.weight", "blocks.1.mlp.down.weight",
                  "blocks.1.ln2.weight", "blocks.1.attn.out.weight"]
    for name in downstream:
        torch.testing.assert_close(patched[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)
    torch.testing.assert_close(patched["blocks.1.attn.qkv.weight"][2 * d:], plain["blocks.1.attn.qkv.weight"][2 * d:])
    for layer in range(CFG.n_layers):
        qk = f"blocks.{layer}.attn.qkv.weight"
        assert patched[qk][:2 * d].abs().max() == 0 < plain[qk][:2 * d].abs().max()
    assert patched["embed.weight"].abs().max() > 0  # the per-token maps still learn


def uniform_reference(model: Transformer) -> Transformer:
    """Zero queries and keys: every score is 0, so every pattern is uniform over the causal prefix."""
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for block in reference.blocks:
            block.attn.qkv.weight[:2 * CFG.d_model].zero_()
    return reference


def test_uniform_reference_patterns_change_the_logits_as_a_uniform_pattern_hook_does():
    model = tiny_model()
    plain = model(TOKENS)

    def uniform(pattern, hook):
        causal = torch.ones_like(pattern).tril()
        return causal / causal.sum(-1, keepdim=True)

    want = model.run_with_hooks(TOKENS, fwd_hooks=[(IS_PATTERN, uniform)])
    swap = PatternSwap(uniform_reference(model))
    swap.attach(model)
    got = model(TOKENS)
    swap.detach()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-3  # 100x the tolerance above (attention outputs are small at init)


def test_chosen_heads_and_layers_only_and_the_reference_stops_early():
    model = tiny_model()
    reference = uniform_reference(model)
    later_layer_runs = []
    reference.hook_dict["blocks.1.hook_resid_pre"].add_hook(lambda x, hook: later_layer_runs.append(1))
    _, own = model.run_with_cache(TOKENS, names_filter=IS_PATTERN)
    _, ref = reference.run_with_cache(TOKENS, names_filter=IS_PATTERN)
    later_layer_runs.clear()

    swap = PatternSwap(reference, layers=[0], heads=[1, 3])
    swap.attach(model)
    _, got = model.run_with_cache(TOKENS, names_filter=IS_PATTERN)  # the cache sees the swapped patterns
    assert [point.name for point, _ in swap._pattern_handles] == ["blocks.0.attn.hook_pattern"]
    swap.detach()
    assert later_layer_runs == []  # the reference forward ended after layer 0's pattern
    name = "blocks.0.attn.hook_pattern"
    torch.testing.assert_close(got[name][:, [1, 3]], ref[name][:, [1, 3]])
    torch.testing.assert_close(got[name][:, [0, 2]], own[name][:, [0, 2]])
    # layer 1 keeps computing its own pattern (of a changed input), not the reference's uniform one
    assert (got["blocks.1.attn.hook_pattern"] - ref["blocks.1.attn.hook_pattern"]).abs().max() > 1e-3


def test_inactive_swap_leaves_the_fused_path_bitwise():
    model = tiny_model()
    plain = model(TOKENS)
    on = [False]
    swap = PatternSwap(uniform_reference(model), active=lambda: on[0])
    swap.attach(model)
    assert torch.equal(model(TOKENS), plain) and not swap.patching
    on[0] = True
    assert not torch.equal(model(TOKENS), plain) and swap.patching
    on[0] = False
    assert torch.equal(model(TOKENS), plain) and not swap.patching
    swap.detach()


def test_saved_weights_round_trip_with_metadata(tmp_path):
    model = tiny_model()
    path = tmp_path / "w" / "step_7.safetensors"
    save_weights(model, path, step=7)
    state = load_file(str(path))
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    meta = read_metadata(path)
    assert meta["step"] == 7 and meta["model_config"]["d_model"] == 64
    assert [p.name for p in path.parent.iterdir()] == ["step_7.safetensors"]  # no temp file left


# ---- runs ----------------------------------------------------------------------------------------

TINY = ["experiment=tiny", "data.eval_size=16", "data.train_template_eval_size=0", "data.unseen_eval_size=0"]


def metric_rows(run_dir: Path) -> list[dict]:
    rows = read_csv(run_dir / "metrics.csv")
    return [{k: v for k, v in r.items() if k == "step" or k.startswith(METRIC_PREFIXES)} for r in rows]


def patched(run_dir: Path, reference: Path, start: int, *overrides: str):
    return make_cfg(run_dir, *TINY, "callbacks=patching", f"callbacks.patching.reference={reference}",
                    f"callbacks.patching.start_step={start}", *overrides)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """A tiny unpatched run keeping trajectory checkpoints at steps 0, 10 and 20."""
    run_dir = tmp_path_factory.mktemp("patching") / "reference"
    train(make_cfg(run_dir, *TINY, "callbacks=trajectory", "callbacks.trajectory.steps=[0,10,20,999]"))
    return run_dir


def test_trajectory_files_exist_at_the_configured_steps_and_load(reference_run):
    files = sorted((reference_run / "trajectory").iterdir())
    assert [f.name for f in files] == ["step_0.safetensors", "step_10.safetensors", "step_20.safetensors"]
    cfg = make_cfg(reference_run, *TINY)
    from biolab.train import _build
    import lightning as L
    L.seed_everything(cfg.seed, verbose=False)
    _, module, _ = _build(cfg)  # the initial weights of a run with this seed
    initial = load_file(str(files[0]))
    assert all(torch.equal(initial[k], v) for k, v in module.model.state_dict().items())
    final = torch.load(reference_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    last = load_file(str(files[2]))
    assert all(torch.equal(last[k], final[f"model.{k}"]) for k in last)
    assert not torch.equal(load_file(str(files[1]))["embed.weight"], last["embed.weight"])
    assert read_metadata(files[1])["step"] == 10


def test_freeze_run_matches_the_reference_until_start_and_is_deterministic(reference_run, tmp_path):
    """start = reference step = 10: identical to the reference run up to step 10 (same initial weights,
    batches and fused attention), then attention is frozen; the same command gives the same metrics."""
    ref_file = reference_run / "trajectory" / "step_10.safetensors"
    train(patched(tmp_path / "a", ref_file, 10))
    train(patched(tmp_path / "b", ref_file, 10))
    a, b, ref = metric_rows(tmp_path / "a"), metric_rows(tmp_path / "b"), metric_rows(reference_run)
    assert a == b
    assert [r["step"] for r in a] == [r["step"] for r in ref] == [0, 5, 10, 20]
    assert a[:2] == ref[:2]  # before start_step: bitwise the unpatched run
    # at step 10 the weights are the reference's, so the frozen patterns are the model's own (explicit
    # softmax instead of fused attention: equal up to rounding)
    assert a[2].keys() == ref[2].keys() and all(a[2][k] == pytest.approx(ref[2][k], rel=1e-5, abs=1e-6) for k in a[2])
    assert a[3]["val/attr_loss"] != ref[3]["val/attr_loss"] and a[3]["train/loss"] != ref[3]["train/loss"]
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if "AttentionPatching" in k)
    assert state["reset_at"] == 10


def test_patching_from_step_0_patches_the_first_evaluation(reference_run, tmp_path):
    train(patched(tmp_path / "p", reference_run / "trajectory" / "step_20.safetensors", 0, "trainer.max_steps=5"))
    got, ref = metric_rows(tmp_path / "p"), metric_rows(reference_run)
    assert got[0]["val/attr_loss"] != ref[0]["val/attr_loss"]  # same weights at step 0, other patterns


def test_resume_after_kill_in_a_patched_run_gives_the_same_metrics(reference_run, tmp_path):
    """SIGKILL a patched run after patching started, re-run the command: the metrics equal an uninterrupted
    run's (the hooks are active again after the resume and the optimiser is not reset twice)."""
    overrides = ["trainer.max_steps=60", "checkpoint_every=10", "callbacks.evaluator.dense_every=10",
                 "callbacks.evaluator.dense_until=40", "callbacks.evaluator.sparse_every=50"]
    ref_file = reference_run / "trajectory" / "step_20.safetensors"
    train(patched(tmp_path / "whole", ref_file, 20, *overrides))

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "biolab.train", *TINY, "callbacks=patching",
               f"callbacks.patching.reference={ref_file}", "callbacks.patching.start_step=20", *overrides,
               f"hydra.run.dir={killed}"]
    ckpt = killed / "checkpoints" / "last.ckpt"
    kill_once_checkpointed(command, ckpt, min_step=30, timeout=180, env=ONE_THREAD_ENV)
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    step_at_kill = torch.load(ckpt, weights_only=True)["global_step"]
    assert 20 < step_at_kill < 60

    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, env=ONE_THREAD_ENV)
    assert metric_rows(killed) == metric_rows(tmp_path / "whole")


# ---- bad input -----------------------------------------------------------------------------------

def test_missing_reference_is_a_one_line_error_before_any_work(tmp_path):
    cfg = patched(tmp_path / "run", tmp_path / "nope.safetensors", 0)
    with pytest.raises(ConfigError, match=r"callbacks\.patching\.reference: weights file not found"):
        train(cfg)
    assert not (tmp_path / "run").exists()
    result = subprocess.run([sys.executable, "-m", "biolab.train", *TINY, "callbacks=patching",
                             f"callbacks.patching.reference={tmp_path / 'nope.safetensors'}",
                             f"hydra.run.dir={tmp_path / 'cli'}"], cwd=REPO, capture_output=True, text=True,
                            env=ONE_THREAD_ENV)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "callbacks.patching.reference" in result.stderr


def test_corrupt_reference_is_reported(tmp_path):
    bad = tmp_path / "step_0.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(ConfigError, match="corrupt or not a safetensors"):
        train(patched(tmp_path / "run", bad, 0))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("callbacks.patching.start_step=-1", r"callbacks\.patching\.start_step must be an integer >= 0"),
    ("callbacks.patching.layers=[2]", r"callbacks\.patching\.layers .* in 0\.\.1"),
    ("callbacks.patching.heads=[0,4]", r"callbacks\.patching\.heads .* in 0\.\.3"),
])
def test_bad_patching_values_fail_before_any_work(reference_run, tmp_path, override, message):
    cfg = patched(tmp_path / "run", reference_run / "trajectory" / "step_0.safetensors", 0, override)
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_reference_of_another_model_shape_is_refused_before_training(reference_run, tmp_path):
    cfg = patched(tmp_path / "run", reference_run / "trajectory" / "step_0.safetensors", 0, "model.d_model=32")
    with pytest.raises(ConfigError, match=r"another model than the configured one: d_model=64 \(configured 32\)"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # train() builds (and checks) everything before writing anything
    # the same check without a Trainer: AttentionPatching.check(module)
    from biolab.lit_module import BioLitModule
    from biolab.model import TransformerConfig as Config
    module = BioLitModule(model=dict(vars(Config(vocab_size=3964, n_layers=2, n_heads=4, d_model=32, d_mlp=256))))
    with pytest.raises(ConfigError, match="another model"):
        AttentionPatching(reference=str(reference_run / "trajectory" / "step_0.safetensors")).check(module)

    other = Transformer(TransformerConfig(vocab_size=50, n_layers=2, n_heads=4, d_model=64, d_mlp=128))
    bare = tmp_path / "bare.safetensors"  # a file without biolab metadata: only shapes are known
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(bare))
    with pytest.raises(ConfigError, match=r"embed\.weight has shape \(50, 64\)"):
        train(patched(tmp_path / "run2", bare, 0))


# ---- the study sweeps (conf/sweep/patching_*.yaml) -----------------------------------------------------

def test_freeze_sweep_runs_the_jobs_of_the_study_and_the_figure_reads_them(reference_run, tmp_path):
    """`-m sweep=patching_freeze_cpu` (tiny experiment, two reference steps): one job per step, in
    <study.dir>/ref<k>_start<k>, patched with <study.dir>/reference/trajectory/step_<k> from step k on."""
    study = tmp_path / "study"
    study.mkdir()
    (study / "reference").symlink_to(reference_run, target_is_directory=True)
    result = subprocess.run([sys.executable, "-m", "biolab.train", "-m", "sweep=patching_freeze_cpu", *TINY,
                             f"study.dir={study}", "study.reference_step=10,20", "hydra/launcher=basic"],
                            cwd=REPO, env=ONE_THREAD_ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in study.iterdir() if p.is_dir()) == ["ref10_start10", "ref20_start20", "reference"]
    for step, reset_at in ((10, 10), (20, None)):  # max_steps 20: frozen at 20 patches only the last evaluation
        run_dir = study / f"ref{step}_start{step}"
        assert json.loads((run_dir / "summary.json").read_text())["completed"]
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        state = next(v for k, v in ckpt["callbacks"].items() if "AttentionPatching" in k)
        assert state["reset_at"] == reset_at
    # attention frozen at step 10 = the direct run of the freeze test (same config, same metrics)
    direct = tmp_path / "direct"
    train(patched(direct, reference_run / "trajectory" / "step_10.safetensors", 10))
    assert metric_rows(study / "ref10_start10") == metric_rows(direct)

    from biolab.analysis.patching import main
    main([str(study)])
    table = json.loads((study / "patching.json").read_text())
    assert table["reference_steps"] == [10, 20] and table["start_steps"] == [10, 20]
    assert {r["run_dir"].rsplit("/", 1)[-1] for r in table["runs"]} == {"reference", "ref10_start10", "ref20_start20"}


@pytest.mark.parametrize("scale, launcher, steps, refs", [
    ("cpu", "local", 1600, [0, 50, 100, 200, 400, 800, 1600]),
    ("paper", "slurm", 16000, [0, 500, 1000, 2000, 4000, 8000, 16000])])
def test_patching_sweeps_compose_the_study_grid(scale, launcher, steps, refs):
    from test_launchers import compose_multirun
    jobs = {}
    for study in ("", "freeze_", "grid_"):
        cfg = compose_multirun(f"sweep=patching_{study}{scale}", "study.dir=S")
        assert cfg.hydra.runtime.choices["hydra/launcher"] == launcher and cfg.trainer.max_steps == steps
        assert cfg.module.compile is False and cfg.hydra.sweep.dir == "S"
        jobs[study] = {key: [int(v) for v in value.split(",")] for key, value in cfg.hydra.sweeper.params.items()}
        one = compose_multirun(f"sweep=patching_{study}{scale}", "study.dir=S", f"study.reference_step={refs[3]}")
        assert one.callbacks.patching.reference == f"S/reference/trajectory/step_{refs[3]}.safetensors"
        assert one.hydra.sweep.subdir == f"ref{refs[3]}_start{one.callbacks.patching.start_step}"
    assert jobs[""] == {"study.reference_step": refs}  # start 0 (the default) for every reference
    assert jobs["freeze_"] == {"study.reference_step": refs[1:-1]}  # start = reference step
    assert jobs["grid_"] == {"study.reference_step": refs, "callbacks.patching.start_step": [0, *refs[1:-1]]}


# ---- the study figure --------------------------------------------------------------------------------

def test_study_figure_reads_runs_and_tabulates_final_losses(tmp_path):
    from biolab.analysis.patching import main
    from biolab.io import write_csv

    def fake_run(name, reference_step=None, start=None, losses=(16.0, 7.0, 1.0), crossing=None, stopped=None):
        run_dir = tmp_path / name
        callbacks = {"evaluator": {"_target_": "x"}}
        if reference_step is not None:
            callbacks["patching"] = {"reference": f"runs/r/trajectory/step_{reference_step}.safetensors",
                                     "start_step": start}
        (run_dir).mkdir()
        (run_dir / "config.yaml").write_text(json.dumps({"callbacks": callbacks}))
        write_csv(run_dir / "metrics.csv", [{"step": 10 * i, "val/attr_loss": v, "val/baseline": 6.8}
                                            for i, v in enumerate(losses)])
        if crossing is not None:
            (run_dir / "summary.json").write_text(json.dumps(
                {"completed": True, "plateau_end_interpolated": crossing, "acc_50pct_step": None,
                 "stopped_after": stopped}))

    fake_run("reference", crossing=300.0)
    fake_run("ref0_start0", 0, 0, (16.0, 9.0, 0.6), crossing=400.0)
    fake_run("ref10_start0", 10, 0, (16.0, 2.0, 0.2), crossing=100.0)
    fake_run("ref10_start10", 10, 10, (16.0, 7.0, 0.4))
    fake_run("ref20_start0", 20, 0, (16.0, 6.0), crossing=15.0, stopped="plateau_end_step")  # ended at its crossing
    main([str(tmp_path)])
    table = json.loads((tmp_path / "patching.json").read_text())
    assert table["reference_steps"] == [0, 10] and table["start_steps"] == [0, 10]  # no final loss for ref 20
    assert table["final_attr_loss"] == [[0.6, None], [0.2, 0.4]]
    earlier = {row["reference_step"]: row for row in table["start0_vs_unpatched"]}
    assert earlier[10]["plateau_end_interpolated_unpatched_over_patched"] == pytest.approx(3.0)
    assert earlier[0]["plateau_end_interpolated_unpatched_over_patched"] == pytest.approx(0.75)
    assert earlier[20]["plateau_end_interpolated_unpatched_over_patched"] == pytest.approx(20.0)
    assert earlier[20]["final_loss"] is None and earlier[20]["stopped_after"] == "plateau_end_step"
    assert earlier[10]["acc_50pct_step_unpatched_over_patched"] is None  # never reached
    assert (tmp_path / "patching.png").stat().st_size > 10_000
