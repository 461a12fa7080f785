"""The transformer and its TransformerLens-style hooks."""

from biolab.model.hooks import HookedRootModule, HookPoint
from biolab.model.transformer import Transformer, TransformerConfig

__all__ = ["HookedRootModule", "HookPoint", "Transformer", "TransformerConfig"]
