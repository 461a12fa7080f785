"""The decoder-only transformer of the paper (SPEC section 4), in one readable file.

Defaults: 8 layers, 8 heads, d_model 512, MLP 2048 (one hidden layer), head size 64, ~25M
non-embedding parameters. Unstated in the paper and therefore config options: pre-RMSNorm (or
LayerNorm), RoPE (or learned positions), GELU (or ReLU), untied embeddings, no dropout. Linear
layers have no biases (as in most modern LMs); GPT-2 initialisation (normal, std 0.02, residual
output projections scaled by 1/sqrt(2 * n_layers)).

Hook points follow TransformerLens names, shapes and semantics:

    hook_embed, hook_pos_embed (learned positions only)               [batch, pos, d_model]
    blocks.{l}.hook_resid_pre, hook_attn_out, hook_resid_mid, hook_mlp_out, hook_resid_post
    blocks.{l}.ln1.hook_normalized, ln2.hook_normalized, ln_final.hook_normalized  (before the gain)
    blocks.{l}.attn.hook_q, hook_k, hook_v       [batch, pos, head, d_head]; q and k BEFORE rotary
    blocks.{l}.attn.hook_rot_q, hook_rot_k       the same AFTER rotary (rope models only)
    blocks.{l}.attn.hook_attn_scores, hook_pattern                    [batch, head, query, key]
    blocks.{l}.attn.hook_z                       [batch, pos, head, d_head], mixed values
    blocks.{l}.mlp.hook_pre, hook_post           [batch, pos, d_mlp]
  analysis points, for circuit discovery (edge patching, EAP):
    blocks.{l}.hook_q_input, hook_k_input, hook_v_input    [batch, pos, head, d_model]: the residual
        stream copied per head (TransformerLens's use_split_qkv_input); each copy goes through ln1
        and into that head's slice of W_Q / W_K / W_V, so editing head h's copy changes only head h
    blocks.{l}.attn.hook_result                  [batch, pos, head, d_model]: each head's output
        after W_O; the attention output is their sum (no biases)
    blocks.{l}.hook_mlp_in                       [batch, pos, d_model]: the MLP's input before ln2,
        a copy: replacing it changes the MLP's input, not the residual stream

Attention has two paths: fused scaled_dot_product_attention when nothing needs the pattern, and an
explicit softmax when a hook is attached to hook_attn_scores or hook_pattern (a test proves they
agree). The analysis points cost memory (three [batch, pos, head, d_model] copies per layer), so the
ordinary forward (training) computes none of them: each path switches on when a hook is attached to
its point (as a pattern hook switches to explicit attention), or for the whole model with
TransformerLens's switches `set_use_split_qkv_input`, `set_use_attn_result`, `set_use_hook_mlp_in`,
all three with `model.set_analysis_hooks(True)`, or for a block of code with `with
model.analysis_hooks():`. As in TransformerLens, run_with_cache() without names_filter caches what
the forward computes under the current switches; with split q/k/v inputs ln1 runs on each copy, so
blocks.{l}.ln1.hook_normalized then fires three times with shape [batch, pos, head, d_model].
Gradients with respect to any hooked activation: a hook that calls `.retain_grad()` on it (tests).
torch.compile is only used when no hook is attached (hooks do not fire inside a compiled graph).

    model = Transformer(TransformerConfig(vocab_size=4000))
    logits = model(tokens)          # tokens [batch, pos] -> logits [batch, pos, vocab]
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from biolab.model.hooks import HookedRootModule, HookPoint

NORMS = ("rmsnorm", "layernorm")
NORM_EPS = {"rmsnorm": 1e-6, "layernorm": 1e-5}
POSITIONALS = ("rope", "learned")
ACTIVATIONS = ("gelu", "relu")
# analysis point -> the switch (on its Block or Attention) that computes it without a hook attached
ANALYSIS_SWITCHES = {"hook_q_input": "use_split_qkv_input", "hook_k_input": "use_split_qkv_input",
                     "hook_v_input": "use_split_qkv_input", "hook_result": "use_attn_result",
                     "hook_mlp_in": "use_hook_mlp_in"}


@dataclass
class TransformerConfig:
    vocab_size: int
    n_layers: int = 8
    n_heads: int = 8
    d_model: int = 512
    d_mlp: int = 2048
    max_seq_len: int = 512
    norm: str = "rmsnorm"          # pre-norm either way
    positional: str = "rope"
    activation: str = "gelu"
    tie_embeddings: bool = False
    init_std: float = 0.02
    rope_base: float = 10000.0

    def __post_init__(self):
        for key in ("vocab_size", "n_layers", "n_heads", "d_model", "d_mlp", "max_seq_len"):
            value = getattr(self, key)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"model.{key} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}")
        if self.positional == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError("model.d_model / model.n_heads must be even for rope positions")
        for key, allowed in (("norm", NORMS), ("positional", POSITIONALS), ("activation", ACTIVATIONS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"model.{key} must be one of {list(allowed)}, got {getattr(self, key)!r}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


class Norm(nn.Module):
    """RMSNorm or LayerNorm (no bias); hook_normalized is the normalised input before the gain (as in
    TransformerLens)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.kind, self.eps = cfg.norm, NORM_EPS[cfg.norm]
        self.weight = nn.Parameter(torch.ones(cfg.d_model))
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rmsnorm":
            x = F.rms_norm(x, (x.shape[-1],), eps=self.eps)
        else:
            x = F.layer_norm(x, (x.shape[-1],), eps=self.eps)
        return self.hook_normalized(x) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """GPT-NeoX rotary: dimension i rotates with i + d_head / 2. x [batch, pos, head, d_head]."""
    cos, sin = rope                                           # [pos, d_head]
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)  # output viewed [3, head, d_head]
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)      # input viewed [head, d_head]
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()  # [batch, pos, head, d_head]
        if cfg.positional == "rope":
            self.hook_rot_q, self.hook_rot_k = HookPoint(), HookPoint()  # [batch, pos, head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query, key], masked, before softmax
        self.hook_pattern = HookPoint()      # [batch, head, query, key], after softmax
        self.hook_z = HookPoint()            # [batch, pos, head, d_head], mixed values
        self.hook_result = HookPoint()       # [batch, pos, head, d_model], per head after W_O
        self.force_explicit = False
        self.use_attn_result = False

    def needs_pattern(self) -> bool:
        return self.force_explicit or self.hook_pattern.has_hooks or self.hook_attn_scores.has_hooks

    def computes_result(self) -> bool:
        return self.use_attn_result or self.hook_result.has_hooks

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, ...], rope) -> torch.Tensor:
        """x: the normalised residual stream [batch, pos, d_model], or (split inputs) a tuple of the
        normalised query, key and value inputs, each [batch, pos, head, d_model]."""
        h, d_head = self.cfg.n_heads, self.cfg.d_head
        if isinstance(x, tuple):  # head i reads its own copy through its own rows of W_Q / W_K / W_V
            batch, pos = x[0].shape[:2]
            w_qkv = self.qkv.weight.view(3, h, d_head, self.cfg.d_model)
            q, k, v = (torch.einsum("bphd,hed->bphe", inp, w) for inp, w in zip(x, w_qkv))
        else:
            batch, pos, _ = x.shape
            q, k, v = self.qkv(x).view(batch, pos, 3, h, d_head).unbind(2)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)  # [batch, pos, head, d_head]
        if rope is not None:
            q, k = self.hook_rot_q(apply_rope(q, rope)), self.hook_rot_k(apply_rope(k, rope))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))     # [batch, head, pos, d_head]
        # Right padding + causal mask: real tokens never attend to padding, so no padding mask.
        if self.needs_pattern():
            scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)   # [batch, head, query, key]
            causal = torch.ones(pos, pos, dtype=torch.bool, device=q.device).tril()
            scores = self.hook_attn_scores(scores.masked_fill(~causal, float("-inf")))
            pattern = self.hook_pattern(scores.float().softmax(dim=-1).to(v.dtype))
            z = pattern @ v                                   # [batch, head, query, d_head]
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        z = self.hook_z(z.transpose(1, 2))                    # [batch, pos, head, d_head]
        if self.computes_result():
            w_out = self.out.weight.view(self.cfg.d_model, h, d_head)
            result = self.hook_result(torch.einsum("bphe,dhe->bphd", z, w_out))  # [batch, pos, head, d_model]
            return result.sum(2)
        return self.out(z.reshape(batch, pos, self.cfg.d_model))


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.down = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)
        self.act = nn.GELU() if cfg.activation == "gelu" else nn.ReLU()
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.hook_post(self.act(self.hook_pre(self.up(x)))))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = Norm(cfg), Attention(cfg), Norm(cfg), MLP(cfg)
        self.hook_resid_pre, self.hook_attn_out = HookPoint(), HookPoint()      # [batch, pos, d_model]
        self.hook_resid_mid, self.hook_mlp_out = HookPoint(), HookPoint()
        self.hook_resid_post = HookPoint()
        self.hook_q_input, self.hook_k_input = HookPoint(), HookPoint()        # [batch, pos, head, d_model]
        self.hook_v_input = HookPoint()
        self.hook_mlp_in = HookPoint()                                         # [batch, pos, d_model]
        self.use_split_qkv_input = False
        self.use_hook_mlp_in = False

    def splits_qkv_input(self) -> bool:
        hooked = self.hook_q_input.has_hooks or self.hook_k_input.has_hooks or self.hook_v_input.has_hooks
        return self.use_split_qkv_input or hooked

    def hooks_mlp_in(self) -> bool:
        return self.use_hook_mlp_in or self.hook_mlp_in.has_hooks

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        if self.splits_qkv_input():  # copies, so a hook editing one in place leaves the residual alone
            per_head = x[:, :, None].expand(-1, -1, self.attn.cfg.n_heads, -1)  # [batch, pos, head, d_model]
            attn_in = tuple(self.ln1(hook(per_head.clone()))
                            for hook in (self.hook_q_input, self.hook_k_input, self.hook_v_input))
        else:
            attn_in = self.ln1(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(attn_in, rope)))
        mlp_in = self.hook_mlp_in(x.clone()) if self.hooks_mlp_in() else x
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(mlp_in))))


class Transformer(HookedRootModule):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.hook_embed = HookPoint()                         # [batch, pos, d_model]
        if cfg.positional == "learned":
            self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.d_model)
            self.hook_pos_embed = HookPoint()
        else:
            inv_freq = 1.0 / cfg.rope_base ** (torch.arange(0, cfg.d_head, 2).float() / cfg.d_head)
            angles = torch.outer(torch.arange(cfg.max_seq_len).float(), inv_freq)  # [pos, d_head / 2]
            angles = torch.cat((angles, angles), dim=-1)                            # [pos, d_head]
            self.register_buffer("rope_cos", angles.cos(), persistent=False)
            self.register_buffer("rope_sin", angles.sin(), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = Norm(cfg)
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.unembed.weight = self.embed.weight
        self.apply(self._init_weights)
        for block in self.blocks:  # residual projections: GPT-2 scaling
            for linear in (block.attn.out, block.mlp.down):
                nn.init.normal_(linear.weight, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))
        self.setup_hooks()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)

    @property
    def force_explicit_attention(self) -> bool:
        return all(block.attn.force_explicit for block in self.blocks)

    @force_explicit_attention.setter
    def force_explicit_attention(self, value: bool) -> None:
        for block in self.blocks:
            block.attn.force_explicit = value

    # TransformerLens's switches for the analysis points (all off: the ordinary, fast forward)
    def set_use_split_qkv_input(self, value: bool) -> None:
        for block in self.blocks:
            block.use_split_qkv_input = value

    def set_use_attn_result(self, value: bool) -> None:
        for block in self.blocks:
            block.attn.use_attn_result = value

    def set_use_hook_mlp_in(self, value: bool) -> None:
        for block in self.blocks:
            block.use_hook_mlp_in = value

    def set_analysis_hooks(self, value: bool = True) -> None:
        """Switch all analysis points (split q/k/v inputs, per-head results, MLP input) on or off."""
        self.set_use_split_qkv_input(value)
        self.set_use_attn_result(value)
        self.set_use_hook_mlp_in(value)

    @contextmanager
    def analysis_hooks(self, value: bool = True):
        """`with model.analysis_hooks():` all analysis points on inside, the previous switches after."""
        saved = [(b.use_split_qkv_input, b.attn.use_attn_result, b.use_hook_mlp_in) for b in self.blocks]
        self.set_analysis_hooks(value)
        try:
            yield self
        finally:
            for block, (split, result, mlp_in) in zip(self.blocks, saved):
                block.use_split_qkv_input, block.attn.use_attn_result, block.use_hook_mlp_in = split, result, mlp_in

    def computes_by_default(self, name: str) -> bool:
        """Whether hook point `name` fires with no hook attached (analysis points: when switched on)."""
        owner, _, point = name.rpartition(".")
        switch = ANALYSIS_SWITCHES.get(point)
        return switch is None or getattr(self.get_submodule(owner), switch)

    def num_params(self, non_embedding: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.embed.weight.numel()
            if not self.cfg.tie_embeddings:
                total -= self.unembed.weight.numel()
            if self.cfg.positional == "learned":
                total -= self.pos_embed.weight.numel()
        return total

    def forward(self, tokens: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, pos, vocab]; with `at` ([batch] positions) only there: [batch, vocab]
        (analyses that score one answer position skip the unembedding of every other position)."""
        batch, pos = tokens.shape
        if pos > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {pos} tokens exceeds model.max_seq_len={self.cfg.max_seq_len}")
        x = self.hook_embed(self.embed(tokens))              # [batch, pos, d_model]
        rope = None
        if self.cfg.positional == "learned":
            positions = self.pos_embed(torch.arange(pos, device=tokens.device)).expand(batch, -1, -1)
            x = x + self.hook_pos_embed(positions)                # [batch, pos, d_model]
        else:
            rope = (self.rope_cos[:pos], self.rope_sin[:pos])
        for block in self.blocks:
            x = block(x, rope)
        if at is not None:
            x = x[torch.arange(batch, device=x.device), at]   # [batch, d_model]
        return self.unembed(self.ln_final(x))                # [batch, pos, vocab] or [batch, vocab]
