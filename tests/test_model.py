"""Model behaviour: SDPA = explicit attention, hooks read and replace activations, causality."""

import pytest
import torch

from biolab.model import Transformer, TransformerConfig


def tiny(**kwargs) -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(vocab_size=50, n_layers=2, n_heads=4, d_model=64, d_mlp=128,
                                         max_seq_len=32, **kwargs))


TOKENS = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("positional", ["rope", "learned"])
def test_fused_and_explicit_attention_agree_with_gradients(norm, positional):
    model = tiny(norm=norm, positional=positional)
    fused = model(TOKENS)
    fused.square().mean().backward()
    grads_fused = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.force_explicit_attention = True
    explicit = model(TOKENS)
    explicit.square().mean().backward()
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)
    for g_explicit, p in zip(grads_fused, model.parameters()):
        torch.testing.assert_close(p.grad, g_explicit, atol=1e-5, rtol=1e-4)


def test_identity_pattern_hook_keeps_logits_uniform_pattern_changes_them():
    model = tiny()
    plain = model(TOKENS)
    same = model.run_with_hooks(TOKENS, fwd_hooks=[(lambda n: n.endswith("hook_pattern"), lambda x, hook: x)])
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)

    def uniform(pattern, hook):
        causal = torch.ones_like(pattern).tril()
        return causal / causal.sum(-1, keepdim=True)

    changed = model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)])
    assert not torch.allclose(changed, plain, atol=1e-3)
    assert not any(h.has_hooks for h in model.hook_dict.values())


def test_hooks_are_removed_even_when_a_hook_raises():
    model = tiny()

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.1.mlp.hook_post", boom)])
    assert not any(h.has_hooks for h in model.hook_dict.values())
    with pytest.raises(KeyError, match="no hook point"):
        model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.9.attn.hook_pattern", lambda x, h: x)])


def test_run_with_cache_names_and_shapes():
    model = tiny()
    logits, cache = model.run_with_cache(TOKENS)
    assert logits.shape == (3, 12, 50)
    pattern = cache["blocks.1.attn.hook_pattern"]
    assert pattern.shape == (3, 4, 12, 12)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, 4, 12))
    assert (pattern.triu(1) == 0).all()
    assert cache["blocks.0.attn.hook_q"].shape == (3, 12, 4, 16)
    assert cache["blocks.0.mlp.hook_post"].shape == (3, 12, 128)
    assert cache["hook_embed"].shape == cache["blocks.1.hook_resid_post"].shape == (3, 12, 64)
    _, only = model.run_with_cache(TOKENS, names_filter="blocks.0.hook_resid_pre")
    assert list(only) == ["blocks.0.hook_resid_pre"]
    torch.testing.assert_close(only["blocks.0.hook_resid_pre"], cache["hook_embed"])


def test_causality():
    model = tiny()
    changed = TOKENS.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 50
    a, b = model(TOKENS), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_activation_replacement_carries_gradients():
    model = tiny()
    out = model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.0.hook_resid_mid", lambda x, h: 2 * x)])
    out.sum().backward()
    assert model.embed.weight.grad is not None and model.embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, field", [
    (dict(d_model=100, n_heads=8), "d_model"), (dict(norm="batchnorm"), "norm"),
    (dict(positional="alibi"), "positional"), (dict(n_layers=0), "n_layers"),
])
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TransformerConfig(vocab_size=50, **kwargs)


def test_default_size_is_the_papers():
    model = Transformer(TransformerConfig(vocab_size=100))
    per_layer = 4 * 512 * 512 + 2 * 512 * 2048
    assert abs(model.num_params() - 8 * per_layer) <= 8 * 2 * 512 + 512  # + norm gains
    assert model.unembed.weight is not model.embed.weight


def test_too_long_sequence_is_refused():
    with pytest.raises(ValueError, match="max_seq_len"):
        tiny()(torch.zeros(1, 33, dtype=torch.long))


def test_scoped_hooks_leave_permanent_hooks_in_place_and_see_their_replacement():
    model = tiny()

    def uniform(pattern, hook):
        causal = torch.ones_like(pattern).tril()
        return causal / causal.sum(-1, keepdim=True)

    handle = model.hook_dict["blocks.0.attn.hook_pattern"].add_hook(uniform)  # e.g. a patching callback
    patched = model(TOKENS)
    _, cache = model.run_with_cache(TOKENS, names_filter="blocks.0.attn.hook_pattern")
    # the cache sees the replaced pattern, and the permanent hook survives the scoped one
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], uniform(cache["blocks.0.attn.hook_pattern"], None))
    assert model.hook_dict["blocks.0.attn.hook_pattern"].has_hooks
    torch.testing.assert_close(model(TOKENS), patched)
    model.hook_dict["blocks.0.attn.hook_pattern"].remove_hook(handle)
    assert not any(h.has_hooks for h in model.hook_dict.values())
    assert not torch.allclose(model(TOKENS), patched, atol=1e-3)
