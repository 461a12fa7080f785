"""Export a biolab Transformer to TransformerLens 3.x (SPEC section 9, optional interoperability).

TransformerLens's `HookedTransformer` (version 3; version 4 removed it) is what external tools
(EAP-IG, SAELens, auto-circuit) load. The export is exact up to float rounding (tests: logits within
1e-4 on real biographies): same weights, pre-norm RMSNorm (eps 1e-6) or LayerNorm (eps 1e-5, zero
bias), GPT-NeoX rotary over the whole head (rotary_adjacent_pairs=False) or learned positions, exact
erf GELU (TransformerLens "gelu" = F.gelu; "gelu_new" would be the tanh approximation) or ReLU,
all biases zero, W_U a copy of the (possibly tied) embedding. There is no tokenizer: feed the token
ids of biolab's tokenizer, without a BOS token (default_prepend_bos=False).

    from biolab.mech.export import load_export, save_export, to_hooked_transformer
    hooked = to_hooked_transformer(model)                 # biolab.model.Transformer -> HookedTransformer
    save_export(hooked, "runs/x/mech/export/step_1000", meta={"step": 1000})
    hooked = load_export("runs/x/mech/export/step_1000")  # config.json + model.safetensors
    hooked.set_use_split_qkv_input(True)                  # TransformerLens's own switches
    logits, cache = hooked.run_with_cache(tokens)         # tokens [batch, pos] from biolab's tokenizer

`python -m biolab.mech export RUN_DIR step=K` writes RUN_DIR/mech/export/step_<K>/ this way. Needs
the `mech` extra (transformer-lens>=3.9,<4). TransformerLens's known-harmless DeprecationWarning for
HookedTransformer ("use TransformerBridge", which only wraps HuggingFace models) is silenced here.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import torch

from biolab.io import write_json, write_safetensors
from biolab.model import Transformer
from biolab.model.transformer import NORM_EPS

FORMAT = "biolab-hooked-transformer-v1"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
# the HookedTransformerConfig fields to_hooked_transformer sets (all that save_export writes)
CONFIG_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx",
                 "act_fn", "normalization_type", "eps", "positional_embedding_type", "rotary_dim",
                 "rotary_base", "rotary_adjacent_pairs", "default_prepend_bos", "model_name")


@contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        yield


def _build(fields: dict):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(**fields, device="cpu", dtype=torch.float32, init_weights=False)
    with _quiet():
        return HookedTransformer(cfg, move_to_device=False)


def hooked_config(model: Transformer) -> dict:
    """The HookedTransformerConfig fields (JSON-able) that describe `model`."""
    cfg = model.cfg
    rope = cfg.positional == "rope"
    return dict(n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head,
                d_mlp=cfg.d_mlp, d_vocab=cfg.vocab_size, d_vocab_out=cfg.vocab_size, n_ctx=cfg.max_seq_len,
                act_fn=cfg.activation,  # "gelu" (exact, erf) or "relu", as nn.GELU() / nn.ReLU()
                normalization_type="RMS" if cfg.norm == "rmsnorm" else "LN", eps=NORM_EPS[cfg.norm],
                positional_embedding_type="rotary" if rope else "standard",
                rotary_dim=cfg.d_head if rope else None, rotary_base=cfg.rope_base,
                rotary_adjacent_pairs=False,  # GPT-NeoX: dimension i pairs with i + d_head / 2
                default_prepend_bos=False, model_name="biolab")


def hooked_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """biolab weights under TransformerLens names and layouts (float32, CPU; biases not included)."""
    cfg, h, d_head = model.cfg, model.cfg.n_heads, model.cfg.d_head
    w = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    state = {"embed.W_E": w["embed.weight"],                      # [vocab, d_model]
             "unembed.W_U": w["unembed.weight"].T,                # [d_model, vocab]
             "ln_final.w": w["ln_final.weight"]}
    if cfg.positional == "learned":
        state["pos_embed.W_pos"] = w["pos_embed.weight"]          # [n_ctx, d_model]
    for l in range(cfg.n_layers):
        b = f"blocks.{l}."
        w_q, w_k, w_v = w[b + "attn.qkv.weight"].view(3, h, d_head, cfg.d_model).transpose(2, 3)  # [head, d_model, d_head]
        state.update({
            b + "ln1.w": w[b + "ln1.weight"], b + "ln2.w": w[b + "ln2.weight"],
            b + "attn.W_Q": w_q, b + "attn.W_K": w_k, b + "attn.W_V": w_v,
            b + "attn.W_O": w[b + "attn.out.weight"].view(cfg.d_model, h, d_head).permute(1, 2, 0),  # [head, d_head, d_model]
            b + "mlp.W_in": w[b + "mlp.up.weight"].T,             # [d_model, d_mlp]
            b + "mlp.W_out": w[b + "mlp.down.weight"].T,          # [d_mlp, d_model]
        })
    return {k: v.contiguous() for k, v in state.items()}


def _load(hooked, weights: dict[str, torch.Tensor]):
    """Load `weights`; every other parameter must be a bias (set to zero); buffers stay as built."""
    full = hooked.state_dict()
    params = dict(hooked.named_parameters())
    unknown = sorted(set(weights) - set(full))
    unset = sorted(k for k in params if k not in weights and not k.split(".")[-1].startswith("b"))
    if unknown or unset:
        raise ValueError(f"weights do not fit the HookedTransformer: unknown {unknown}, missing {unset}")
    full.update({k: torch.zeros_like(p) for k, p in params.items() if k not in weights})
    full.update(weights)
    hooked.load_state_dict(full, strict=True)
    return hooked.eval()


def to_hooked_transformer(model: Transformer):
    """A transformer_lens.HookedTransformer (float32, CPU, eval mode) computing the same logits."""
    return _load(_build(hooked_config(model)), hooked_state_dict(model))


def save_export(hooked, out_dir: str | Path, meta: dict | None = None) -> Path:
    """Write out_dir/config.json (the config fields, `meta`) and out_dir/model.safetensors (the weights)."""
    out_dir = Path(out_dir)
    params = {k: p.detach().to("cpu", torch.float32).contiguous() for k, p in hooked.named_parameters()}
    write_safetensors(out_dir / WEIGHTS_FILE, params, {"format": FORMAT})
    write_json(out_dir / CONFIG_FILE, {
        "format": FORMAT, "transformer_lens_version": version("transformer-lens"),
        "hooked_transformer_config": {k: getattr(hooked.cfg, k) for k in CONFIG_FIELDS},
        "meta": meta or {}})
    return out_dir


def load_export(out_dir: str | Path):
    """The HookedTransformer saved by save_export in out_dir (float32, CPU, eval mode)."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    config_path = out_dir / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"no TransformerLens export in {out_dir} ({CONFIG_FILE} missing)")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{config_path}: format {config.get('format')!r}, expected {FORMAT!r}")
    return _load(_build(config["hooked_transformer_config"]), load_file(str(out_dir / WEIGHTS_FILE)))
