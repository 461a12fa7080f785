"""Knowledge-overshadowing metrics on the evaluation schedule (SPEC section 9.1).

For a run trained with look-alike pairs (``data/lookalikes=overshadowing``), at every evaluation step
the model answers every pair's rare and dominant person and a set of ordinary people (the prior
control); biolab.mech.overshadowing turns the greedy first-token answers into, per level P and kind
of pair, AO, R_dom, RO = AO / R_dom (where R_dom >= 0.05), p(Y_dom | rare prompt), p(Y_sub | rare
prompt), and the prior rate. They land in the evaluation's row of metrics.csv as
``overshadow/pair/P32/ro`` ... ``overshadow/prior``; the time spent as ``overshadow_seconds``.
``train(cfg)`` draws overshadowing.png from them (RO against step per P, the plateau shaded).

Enabled by conf/callbacks/overshadowing.yaml (``callbacks=overshadowing``; the experiment preset
overshadowing_cpu selects it); a run without look-alike pairs is refused before training starts.
"""

from __future__ import annotations

import time

import lightning as L

from biolab.mech.overshadowing import OvershadowingPrompts, flat_metrics, measure, overshadowing_prompts, summarise


class OvershadowingMetrics(L.Callback):
    def __init__(self, templates_per_attribute: int = 2, prior_per_pair: int = 2):
        for key, value in (("templates_per_attribute", templates_per_attribute), ("prior_per_pair", prior_per_pair)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"callbacks.overshadowing.{key} must be an integer >= 1, got {value!r}")
        self.templates_per_attribute, self.prior_per_pair = templates_per_attribute, prior_per_pair
        self.prompts: OvershadowingPrompts | None = None

    def check_datamodule(self, datamodule) -> None:
        """Before any work: the run must have look-alike pairs."""
        if getattr(datamodule, "lookalike_spec", None) is None:
            raise ValueError("callbacks.overshadowing needs look-alike pairs in the data: add "
                             "data/lookalikes=overshadowing (or use experiment=overshadowing_cpu)")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.prompts is None:
            self.prompts = overshadowing_prompts(trainer.datamodule, self.templates_per_attribute,
                                                 self.prior_per_pair)

    def evaluation_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Called by the Evaluator at every evaluation step (rank 0)."""
        start = time.perf_counter()
        metrics = flat_metrics(summarise(measure(pl_module.model, self.prompts), self.prompts))
        metrics["overshadow_seconds"] = time.perf_counter() - start
        return metrics
