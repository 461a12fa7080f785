"""TransformerLens-style hook points: read or replace any named activation during a forward pass.

    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    cache["blocks.0.attn.hook_pattern"]          # [batch, head, query, key]
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.3.attn.hook_pattern", lambda x, hook: uniform)])

A hook is ``fn(activation, hook) -> activation | None``; returning a tensor replaces the activation
(gradients flow through the replacement); later hooks on the same point see the replacement.
Hooks added by ``hooks()`` / ``run_with_hooks`` / ``run_with_cache`` are removed when the call
returns, also on error; hooks attached with ``HookPoint.add_hook`` (e.g. by a training callback
that patches attention for a whole run) stay until their handle or ``reset_hooks()`` removes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]


class HookPoint(nn.Module):
    """Identity module that names an activation; forward hooks attached here see and may replace it."""

    def __init__(self):
        super().__init__()
        self.name: str = ""
        self._handles: list = []

    def add_hook(self, fn: HookFn, prepend: bool = False):
        """Attach fn (after the hooks already here, or before them with prepend=True); returns a handle
        whose ``remove()`` detaches it again."""
        handle = self.register_forward_hook(lambda module, inputs, output: fn(output, self), prepend=prepend)
        self._handles.append(handle)
        return handle

    def remove_hook(self, handle) -> None:
        handle.remove()
        self._handles = [h for h in self._handles if h is not handle]

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def has_hooks(self) -> bool:
        return bool(self._handles)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class HookedRootModule(nn.Module):
    """Base of a model with HookPoints: call `setup_hooks()` at the end of __init__."""

    def setup_hooks(self) -> None:
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    def _matching(self, name_or_filter: str | Callable[[str], bool]) -> list[HookPoint]:
        if callable(name_or_filter):
            return [h for n, h in self.hook_dict.items() if name_or_filter(n)]
        if name_or_filter not in self.hook_dict:
            raise KeyError(f"no hook point named {name_or_filter!r}")
        return [self.hook_dict[name_or_filter]]

    def computes_by_default(self, name: str) -> bool:
        """Whether hook point `name` fires when no hook is attached (a model may have points that only
        compute when switched on or hooked; run_with_cache() without names_filter skips those)."""
        return True

    def reset_hooks(self) -> None:
        for hook in self.hook_dict.values():
            hook.remove_hooks()

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]] = ()):
        """Attach hooks for the duration of the `with` block (hooks attached before it stay)."""
        added = []
        try:
            for name_or_filter, fn in fwd_hooks:
                for hook in self._matching(name_or_filter):
                    added.append((hook, hook.add_hook(fn)))
            yield self
        finally:
            for hook, handle in added:
                hook.remove_hook(handle)

    def run_with_hooks(self, *args, fwd_hooks=(), **kwargs):
        with self.hooks(fwd_hooks):
            return self(*args, **kwargs)

    def run_with_cache(self, *args, names_filter=None, **kwargs):
        """Forward pass that also returns {hook name: detached activation}; without names_filter, of
        every point the forward computes under the model's current switches."""
        if names_filter is None:  # what the forward computes anyway: attaching must switch nothing on
            keep = self.computes_by_default
        elif isinstance(names_filter, str):
            keep = lambda name: name == names_filter  # noqa: E731
        elif callable(names_filter):
            keep = names_filter
        else:
            wanted = set(names_filter)
            keep = lambda name: name in wanted  # noqa: E731
        cache: dict[str, torch.Tensor] = {}

        def save(activation, hook):
            cache[hook.name] = activation.detach()

        with self.hooks([(keep, save)]):
            out = self(*args, **kwargs)
        return out, cache
