"""Analysis hook points for circuit discovery: per-head q/k/v inputs, per-head results, the MLP input,
q and k before and after rotary, and gradients with respect to hooked activations."""

import pytest
import torch

from biolab.model import Transformer, TransformerConfig

CONFIGS = {"rope_rmsnorm": dict(positional="rope", norm="rmsnorm"),
           "learned_layernorm": dict(positional="learned", norm="layernorm", activation="relu")}
ANALYSIS = ("hook_q_input", "hook_k_input", "hook_v_input", "hook_result", "hook_mlp_in")
TOKENS = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))
OTHER = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(2))


def tiny(dtype=torch.float32, **kwargs) -> Transformer:
    """Initialised large enough (std 0.2) for sharp attention, so q and k edits matter."""
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=50, n_layers=2, n_heads=4, d_model=64, d_mlp=128,
                                          max_seq_len=32, init_std=0.2, **kwargs)).to(dtype)
    with torch.no_grad():  # norm gains away from 1, so a wrong per-head ln1 would show
        for name, p in model.named_parameters():
            if name.endswith("ln1.weight") or name.endswith("ln2.weight"):
                p.uniform_(0.5, 1.5)
    return model


def assert_changed(a, b):
    assert (a - b).abs().max() > 0.01 * b.abs().max()


def set_head(head, value):
    """A hook that writes `value` into one head of a [batch, pos, head, ...] activation."""
    def hook(x, _):
        x = x.clone()
        x[:, :, head] = value
        return x
    return hook


@pytest.mark.parametrize("config", CONFIGS)
def test_all_analysis_paths_on_give_the_plain_logits(config):
    model = tiny(**CONFIGS[config])
    plain = model(TOKENS)
    model.force_explicit_attention = True
    with model.analysis_hooks():
        logits, cache = model.run_with_cache(TOKENS)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)
    for name in ANALYSIS:
        owner = "blocks.1.attn" if name == "hook_result" else "blocks.1"
        shape = (3, 12, 64) if name == "hook_mlp_in" else (3, 12, 4, 64)
        assert cache[f"{owner}.{name}"].shape == shape
    # attention output = sum over heads of hook_result; the MLP's input is resid_mid
    torch.testing.assert_close(cache["blocks.1.attn.hook_result"].sum(2), cache["blocks.1.hook_attn_out"],
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(cache["blocks.0.hook_mlp_in"], cache["blocks.0.hook_resid_mid"])
    assert not any(b.use_split_qkv_input or b.use_hook_mlp_in or b.attn.use_attn_result for b in model.blocks)


def test_analysis_points_compute_only_when_switched_on_or_hooked():
    model = tiny()
    _, cache = model.run_with_cache(TOKENS)
    assert not any(name.endswith(ANALYSIS) for name in cache)
    assert cache["blocks.0.ln1.hook_normalized"].shape == (3, 12, 64)
    _, cache = model.run_with_cache(TOKENS, names_filter=["blocks.0.attn.hook_result", "blocks.1.hook_mlp_in"])
    assert set(cache) == {"blocks.0.attn.hook_result", "blocks.1.hook_mlp_in"}  # hooked: computed
    model.set_use_split_qkv_input(True)
    _, cache = model.run_with_cache(TOKENS)
    assert {n for n in cache if n.endswith(ANALYSIS)} == {f"blocks.{l}.hook_{x}_input" for l in (0, 1) for x in "qkv"}
    assert cache["blocks.0.ln1.hook_normalized"].shape == (3, 12, 4, 64)  # ln1 runs on each head's copy
    model.set_analysis_hooks(False)
    assert not model.blocks[0].splits_qkv_input()


def rotate_independently(x, base=10000.0):
    """GPT-NeoX rotary written out: dimension i and i + d/2 rotate by pos * base^(-2i/d). x [b, p, h, d]."""
    d = x.shape[-1]
    angle = torch.arange(x.shape[1])[:, None] * base ** (-2 * torch.arange(d // 2) / d)  # [pos, d/2]
    cos, sin = angle.cos()[:, None], angle.sin()[:, None]                                # [pos, 1, d/2]
    first, second = x[..., : d // 2], x[..., d // 2:]
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


def test_hook_q_is_before_rotary_and_hook_rot_q_after():
    model = tiny()
    _, cache = model.run_with_cache(TOKENS)
    w_q, w_k, _ = model.blocks[1].attn.qkv.weight.view(3, 4, 16, 64)    # [head, d_head, d_model]
    normalized = cache["blocks.1.ln1.hook_normalized"] * model.blocks[1].ln1.weight  # [batch, pos, d_model]
    torch.testing.assert_close(cache["blocks.1.attn.hook_q"], torch.einsum("bpd,hed->bphe", normalized, w_q))
    torch.testing.assert_close(cache["blocks.1.attn.hook_k"], torch.einsum("bpd,hed->bphe", normalized, w_k))
    for x in "qk":
        torch.testing.assert_close(cache[f"blocks.1.attn.hook_rot_{x}"],
                                   rotate_independently(cache[f"blocks.1.attn.hook_{x}"]), atol=1e-5, rtol=1e-5)
    assert_changed(cache["blocks.1.attn.hook_rot_q"], cache["blocks.1.attn.hook_q"])
    assert "blocks.0.attn.hook_rot_q" not in tiny(positional="learned").hook_dict


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("x", "qkv")
def test_one_heads_input_from_another_prompt_equals_patching_that_heads_q_k_or_v(config, x):
    """Head 2's q (k, v) input at layer 1 replaced by the other prompt's residual stream must equal
    replacing head 2's hook_q (hook_k, hook_v) by the other prompt's: only head 2 reads that copy."""
    model, head = tiny(**CONFIGS[config]), 2
    _, other = model.run_with_cache(OTHER, names_filter=["blocks.1.hook_resid_pre", f"blocks.1.attn.hook_{x}"])
    plain, cache = model.run_with_cache(TOKENS, names_filter="blocks.1.attn.hook_result")
    with model.hooks([(f"blocks.1.hook_{x}_input", set_head(head, other["blocks.1.hook_resid_pre"]))]):
        via_input, patched = model.run_with_cache(TOKENS, names_filter="blocks.1.attn.hook_result")
    via_head = model.run_with_hooks(
        TOKENS, fwd_hooks=[(f"blocks.1.attn.hook_{x}", set_head(head, other[f"blocks.1.attn.hook_{x}"][:, :, head]))])
    torch.testing.assert_close(via_input, via_head, atol=1e-5, rtol=1e-5)
    assert_changed(via_input, plain)
    result, result_patched = cache["blocks.1.attn.hook_result"], patched["blocks.1.attn.hook_result"]
    others = [h for h in range(4) if h != head]
    torch.testing.assert_close(result_patched[:, :, others], result[:, :, others], atol=1e-6, rtol=0)
    assert_changed(result_patched[:, :, head], result[:, :, head])


def test_editing_copies_in_place_leaves_the_residual_stream_alone():
    model = tiny()
    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out"]
    _, plain = model.run_with_cache(TOKENS, names_filter=names)

    def zero_head_0(x, hook):
        x[:, :, 0] = 0  # in place, returns None

    with model.hooks([("blocks.0.hook_q_input", zero_head_0)]):
        _, edited = model.run_with_cache(TOKENS, names_filter=names)
    torch.testing.assert_close(edited["blocks.0.hook_resid_pre"], plain["blocks.0.hook_resid_pre"], atol=0, rtol=0)
    assert_changed(edited["blocks.0.hook_attn_out"], plain["blocks.0.hook_attn_out"])

    shift = torch.linspace(-1, 1, 64)  # not a rescaling: the norm would undo that
    for edit in (lambda x, hook: x + shift, lambda x, hook: x.add_(shift)):  # replaced, or edited in place
        with model.hooks([("blocks.0.hook_mlp_in", edit)]):
            _, edited = model.run_with_cache(TOKENS, names_filter=names)
        resid_mid = plain["blocks.0.hook_resid_mid"]
        torch.testing.assert_close(edited["blocks.0.hook_resid_mid"], resid_mid, atol=0, rtol=0)
        block = model.blocks[0]
        with torch.no_grad():
            expected = block.mlp(block.ln2(resid_mid + shift))
        torch.testing.assert_close(edited["blocks.0.hook_mlp_out"], expected, atol=1e-6, rtol=1e-5)
        assert_changed(expected, plain["blocks.0.hook_mlp_out"])


def metric(logits):
    return logits[:, -1, 3].sum() - logits[:, -1, 7].sum()


@pytest.mark.parametrize("config", CONFIGS)
def test_gradients_of_hooked_activations_match_finite_differences(config):
    """retain_grad() in a hook gives d metric / d activation: checked against central differences in
    float64 along a random direction, and against the residual-stream identity
    grad(resid_pre) = grad(resid_mid) + sum over heads of grad(q, k and v inputs)."""
    model = tiny(torch.float64, **CONFIGS[config])
    points = ["hook_embed", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_q_input",
              "blocks.1.hook_k_input", "blocks.1.hook_v_input", "blocks.0.attn.hook_result",
              "blocks.1.hook_mlp_in", "blocks.0.attn.hook_q"]
    kept = {}

    def keep(x, hook):
        x.retain_grad()
        kept[hook.name] = x

    with model.hooks([(name, keep) for name in points]):
        metric(model(TOKENS)).backward()
    grads = {name: kept[name].grad for name in points}
    torch.testing.assert_close(grads["blocks.1.hook_resid_pre"],
                               grads["blocks.1.hook_resid_mid"]
                               + sum(grads[f"blocks.1.hook_{x}_input"].sum(2) for x in "qkv"))
    g = grads["blocks.0.attn.hook_result"]  # attention output = sum over heads: same gradient for each
    torch.testing.assert_close(g, g[:, :, :1].expand_as(g))

    generator = torch.Generator().manual_seed(3)
    eps = 1e-5
    for name in points:
        direction = torch.randn(grads[name].shape, generator=generator, dtype=torch.float64)

        def shifted(sign):
            with torch.no_grad():
                return metric(model.run_with_hooks(TOKENS, fwd_hooks=[(name, lambda x, h: x + sign * eps * direction)]))

        numeric = (shifted(1) - shifted(-1)) / (2 * eps)
        analytic = (grads[name] * direction).sum()
        assert abs(analytic) > 1e-6, name
        torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9, msg=name)
