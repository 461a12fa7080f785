"""Knowledge circuits (biolab.mech.graph, circuits, circuits_study, the command line): edge patching is
exact at its ends, EAP is exact to first order, the study runs on a run directory and resumes, bad input
is one line and exit code 2."""

import copy
import json

import pytest
import torch

from biolab.mech.__main__ import main as mech_main
from biolab.mech.circuits import CircuitOptions, analyse_circuits, logit_diff_metric, spearman
from biolab.mech.graph import (Graph, _Patcher, ablated_outputs, attribute, exact_patching, node_outputs,
                               patched_logits)
from biolab.mech.prompts import corrupt, recall_prompts

from conftest import small_dm, small_model


@pytest.fixture(scope="module")
def setting():
    dm = small_dm()
    clean = recall_prompts(dm, "seen", n=4)
    return small_model(dm.vocab_size), clean, corrupt(clean, dm)


def test_edge_counts_match_the_usual_graph():
    for layers, heads, edges in ((8, 8, 6637), (4, 4, 479), (1, 1, 8)):
        assert Graph(layers, heads).n_edges == edges
    graph = Graph(2, 2)
    assert graph.valid.sum(0).tolist()[graph.downstream.index("a1.h0.q")] == 1 + 2 + 1  # input, a0.h0-1, m0


@pytest.mark.parametrize("ablation", ["counterfactual", "mean", "zero"])
def test_keeping_every_edge_gives_the_clean_logits_and_none_the_ablated_run(setting, ablation):
    model, clean, corrupted = setting
    graph = Graph.of(model)
    ablated = ablated_outputs(model, graph, clean.tokens, corrupted.tokens, ablation, clean.template)
    with torch.no_grad():
        everything = patched_logits(model, graph, clean.tokens, ablated, torch.ones(graph.n_edges, dtype=torch.bool))
        nothing = patched_logits(model, graph, clean.tokens, ablated, torch.zeros(graph.n_edges, dtype=torch.bool))
        torch.testing.assert_close(everything, model(clean.tokens), rtol=0, atol=1e-5)
        if ablation == "counterfactual":
            torch.testing.assert_close(nothing, model(corrupted.tokens), rtol=0, atol=1e-5)
        else:  # the logits read only the ablated residual: unembed(ln_final(sum of ablated outputs))
            final = ablated.sum(0)
            torch.testing.assert_close(nothing, model.unembed(model.ln_final(final)), rtol=0, atol=1e-5)
        assert not torch.allclose(everything, nothing, atol=1e-3)


class _NaivePatcher(_Patcher):
    """The correction summed over every removed edge, never from the kept ones (the reference)."""

    def _delta(self, down):
        removed = self.removed[:len(self.current), down]
        diff = self.ablated[:len(self.current)] - torch.stack(self.current)   # [up', n, pos, d_model]
        if removed.dim() == 1:
            return torch.einsum("unpd,u->npd", diff, removed)
        return torch.einsum("unpd,uh->nphd", diff, removed)


@pytest.mark.parametrize("kept_fraction", [0.0, 0.03, 0.2, 0.6, 0.97])
def test_patching_from_the_kept_edges_equals_summing_over_the_removed_ones(setting, kept_fraction):
    """Small circuits are patched from their few kept edges (prefix sums of the ablated outputs, a running
    sum of the current ones): the logits must equal the direct sum over every removed edge."""
    model, clean, corrupted = setting
    graph = Graph.of(model)
    ablated = ablated_outputs(model, graph, clean.tokens, corrupted.tokens, "mean", clean.template)
    keep = torch.rand(graph.n_edges, generator=torch.Generator().manual_seed(1)) < kept_fraction
    removed = graph.to_matrix((~keep).float())
    with model.analysis_hooks(), torch.no_grad():
        fast = model.run_with_hooks(clean.tokens, fwd_hooks=_Patcher(graph, ablated, removed).hooks())
        naive = model.run_with_hooks(clean.tokens, fwd_hooks=_NaivePatcher(graph, ablated, removed).hooks())
        at_last = patched_logits(model, graph, clean.tokens, ablated, keep, at=clean.last)
    torch.testing.assert_close(fast, naive, rtol=0, atol=2e-5)
    torch.testing.assert_close(at_last, naive[torch.arange(len(clean)), clean.last], rtol=0, atol=2e-5)


def test_logits_at_chosen_positions_equal_the_full_logits_there(setting):
    model, clean, _ = setting
    with torch.no_grad():
        full = model(clean.tokens)                                            # [n, pos, vocab]
        torch.testing.assert_close(model(clean.tokens, clean.last), full[torch.arange(len(clean)), clean.last])


def test_removing_one_edge_changes_only_its_downstream_input(setting):
    model, clean, corrupted = setting
    graph = Graph.of(model)
    ablated = ablated_outputs(model, graph, clean.tokens, corrupted.tokens, "counterfactual")
    keep = torch.ones(graph.n_edges, dtype=torch.bool)
    edge = graph.edge_names().index("input->m1")
    keep[edge] = False
    seen = {}  # the inputs of the unpatched forward
    with model.analysis_hooks(), torch.no_grad():
        model.run_with_hooks(clean.tokens, fwd_hooks=[(lambda n: "mlp_in" in n or "q_input" in n,
                                                       lambda x, hook: seen.setdefault(hook.name, x.clone()))])
    # the patched forward: m1's input moves by (corrupted - clean) embedding, everything before m1 is unchanged
    outputs = node_outputs(model, graph, clean.tokens)
    captured = {}
    patcher = _Patcher(graph, ablated, graph.to_matrix((~keep).float()))
    hooks = patcher.hooks() + [(name, lambda x, hook: captured.setdefault(hook.name, x.clone()))
                               for name in ("blocks.0.hook_mlp_in", "blocks.1.hook_q_input", "blocks.1.hook_mlp_in")]
    with model.analysis_hooks(), torch.no_grad():
        model.run_with_hooks(clean.tokens, fwd_hooks=hooks)
    torch.testing.assert_close(captured["blocks.0.hook_mlp_in"], seen["blocks.0.hook_mlp_in"])
    torch.testing.assert_close(captured["blocks.1.hook_q_input"], seen["blocks.1.hook_q_input"])
    expected = seen["blocks.1.hook_mlp_in"] + ablated[0] - outputs[0]
    torch.testing.assert_close(captured["blocks.1.hook_mlp_in"], expected, rtol=0, atol=1e-5)


def test_eap_equals_exact_patching_to_first_order(setting):
    """With ablated outputs a tiny step from the clean ones, removing an edge changes the metric by the
    gradient times that step: EAP must match exact patching edge by edge."""
    model, clean, corrupted = setting
    model = copy.deepcopy(model).double()  # float64: the comparison is not limited by rounding
    graph = Graph.of(model)
    metric = logit_diff_metric(clean, corrupted)
    outputs = node_outputs(model, graph, clean.tokens)
    ablated = outputs + 1e-4 * torch.randn(outputs.shape, generator=torch.Generator().manual_seed(0),
                                           dtype=torch.float64)
    eap = attribute(model, graph, clean.tokens, clean.last, ablated, metric, ig_steps=0).double()
    exact = exact_patching(model, graph, clean.tokens, clean.last, ablated, metric).double()
    assert exact.abs().max() > 1e-6  # the step is large enough to measure
    torch.testing.assert_close(eap, exact, rtol=0, atol=1e-2 * exact.abs().max().item())
    assert spearman(eap, exact) > 0.99
    assert spearman(eap, -exact) < 0  # the comparison can fail


def test_eap_ig_tracks_exact_patching_on_counterfactual_prompts(setting):
    model, clean, corrupted = setting
    result = analyse_circuits(model, clean, corrupted, CircuitOptions(ig_steps=8, random_sets=3, min_effect=0.0,
                                                                      exact=True, exact_ablations=("counterfactual",)))
    assert result["exact"]["counterfactual"]["eap_ig_vs_exact_spearman"] > 0.8
    fractions = [point["fraction"] for point in result["faithfulness_curve"]]
    assert fractions == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    assert all(len(point) == 6 for point in result["faithfulness_curve"])
    assert len(result["edge_order"]) == Graph.of(model).n_edges
    to_name = torch.tensor(result["heads"]["to_name"])
    to_relation = torch.tensor(result["heads"]["to_relation"])
    assert ((to_name + to_relation) <= 1 + 1e-5).all() and (to_name >= 0).all()


def test_circuits_command_writes_the_timeline_and_resumes(tiny_run, capsys):
    args = ["circuits", str(tiny_run), "prompts_per_attribute=3", "random_sets=2", "ig_steps=2", "min_effect=0"]
    assert mech_main(args) == 0
    out_dir = tiny_run / "mech" / "circuits"
    summary = json.loads((out_dir / "summary.json").read_text())
    for key in ("eap_ig_vs_exact_spearman", "edges_for_faithfulness_0.7", "random_faithfulness_at_that_budget",
                "hit10_circuit_over_full", "plateau_end_step", "acc_1pct_step", "circuit_onset", "per_step"):
        assert key in summary
    assert [row["step"] for row in summary["per_step"]] == [0, 10, 20]
    assert summary["eap_ig_vs_exact_spearman"] is not None  # exact patching ran at the final step
    assert (out_dir / "timeline.png").stat().st_size > 10_000
    assert (out_dir / "table.csv").read_text().count("\n") == 4
    written = {p.name: p.stat().st_mtime_ns for p in (out_dir / "steps").iterdir()}
    (out_dir / "steps" / "step_10.json").unlink()
    capsys.readouterr()
    assert mech_main(args) == 0
    log = capsys.readouterr().out
    assert "] step 10:" in log and "] step 0:" not in log and "] step 20:" not in log  # only the missing step ran
    assert (out_dir / "steps" / "step_0.json").stat().st_mtime_ns == written["step_0.json"]
    assert mech_main([*args[:-1], "min_effect=1"]) == 2  # other options: refused, not mixed
    assert "other options" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["circuits", "/nonexistent/run"], "run directory not found"),
    (["wiring", "RUN"], "unknown analysis 'wiring'"),
    (["circuits", "RUN", "steps=[5]"], "no snapshot at step 5"),
    (["circuits", "RUN", "budget=3"], "unknown option 'budget'"),
    (["circuits", "RUN", "ablation=resample"], "ablation must be one of"),
    (["export", "RUN", "step=7"], "no snapshot at step 7"),
])
def test_bad_input_is_one_line_and_exit_code_2(tiny_run, capsys, args, message):
    args = [str(tiny_run) if a == "RUN" else a for a in args]
    assert mech_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_export_command_writes_a_loadable_hooked_transformer(tiny_run):
    pytest.importorskip("transformer_lens")
    from biolab.mech.export import load_export
    from biolab.runs import load_run

    assert mech_main(["export", str(tiny_run), "step=10"]) == 0
    hooked = load_export(tiny_run / "mech" / "export" / "step_10")
    tokens = recall_prompts(load_run(tiny_run).datamodule(), "seen", n=2).tokens
    with torch.no_grad():
        torch.testing.assert_close(hooked(tokens), load_run(tiny_run).model(10)(tokens), rtol=0, atol=1e-4)


def test_smallest_budget_finds_the_first_grid_point_reaching_the_target_with_few_evaluations():
    from biolab.mech.circuits import budget_grid, smallest_budget

    grid = budget_grid(479)
    for needed in (1, 2, 7, 19, 20, 300, 479):
        calls = []

        def faithfulness(k, needed=needed):
            calls.append(k)
            return 1.0 if k >= needed else 0.0
        expected = next(k for k in grid if k >= needed)
        assert smallest_budget(faithfulness, grid, 0.7) == expected
        assert len(calls) <= 2 * 8 + 2  # the linear scan needed up to len(grid) = 72
    assert smallest_budget(lambda k: 0.5, grid, 0.7) is None
