"""An example selection method: random neurons within the budget, the chance baseline a method must beat.

Neurons whose mean |activation| on the analysis prompts exceeds ``guard_magnitude_ratio`` times their layer's
median are never drawn (removing one breaks a small model, which would measure breakage, not chance).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from fairprune.core.contract.plugin import Plugin, StrictParams
from fairprune.core.contract.protocols import MethodAnalysis, MethodContext


class RandomNeuronsParams(StrictParams):
    seed: int = Field(default=0, description="seed of the draw")
    guard_magnitude_ratio: float = Field(default=10.0, gt=0, description="never draw neurons this far above "
                                                                           "their layer's median mean |activation|")


class RandomNeurons(Plugin):
    name = "random_neurons"
    description = "example plugin: random neurons within the budget (massive-activation ones excluded), a chance baseline"
    Params = RandomNeuronsParams
    shared_keys = frozenset()

    def sweep_variants(self, sweep: Any) -> list[dict[str, Any]]:
        return [{}]

    def analyze(self, model: Any, context: MethodContext) -> MethodAnalysis:
        """The activation analysis (for the magnitudes the guard reads, and for the report's pictures)."""
        from fairprune.core.method.bias import analyze_bias

        bias = context.config.bias
        report = analyze_bias(model, context.tokenizer, axes=bias.axes,
                              prompt_files=[bias.prompts] if bias.prompts else [], split="analysis", site="neuron",
                              batch_size=bias.batch_size, adapter=context.adapter, registry=context.registry,
                              progress=context.progress)
        return MethodAnalysis(report)

    def plan(self, model: Any, analysis: MethodAnalysis, budget: Any, context: MethodContext,
             variant: Mapping[str, Any]) -> Any:
        import torch

        from fairprune.core.method.planning import plan_pruning

        gen = torch.Generator().manual_seed(self.params.seed)
        scores = {layer: torch.rand(s.numel(), generator=gen) for layer, s in analysis.bias_report.scores.items()}
        plan = plan_pruning(model, _Report(analysis, scores), bias_weight=1.0, budget=budget, pruning=context.config.pruning,
                            guard_magnitude_ratio=self.params.guard_magnitude_ratio, adapter=context.adapter,
                            registry=context.registry)
        plan.settings.update(method=self.name, seed=self.params.seed)
        return plan


class _Report:
    """The analysis' report with random scores in place of its bias scores (magnitudes kept for the guard)."""

    def __init__(self, analysis: MethodAnalysis, scores: Mapping[int, Any]) -> None:
        report = analysis.bias_report
        self.scores, self.magnitude, self.mean, self.settings = scores, report.magnitude, report.mean, report.settings
