"""The activation method: score neurons by how much their pooled activation moves with the demographic word,
blend that with an importance metric, and remove the most prunable neurons within the budget.

Steps: ``core.bias.analyze_bias`` (site, pooling, bias metric) on the analysis split, then
``core.planning.plan_pruning`` (importance, scorer, bias weight, magnitude guard, global or per-layer ranking).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fairprune.core.contract.config import ActivationParams, resolve_component
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.plugin import Plugin
from fairprune.core.contract.protocols import MethodAnalysis, MethodContext


class ActivationMethod(Plugin):
    name = "activation"
    description = ("unsigned: a per-neuron bias metric on pooled activations blended with an importance metric "
                   "(w*bias + (1-w)*(1-importance)); the top neurons within the budget")
    Params = ActivationParams
    shared_keys = frozenset({"pruning.round_to", "sweep.bias_weights"})

    def prepare(self, config: Any, registry: Any) -> None:
        """Resolve every plugin the params name; ``ConfigError`` naming the field (before the model loads)."""
        p = self.params
        self.bias_metric = resolve_component(registry, "bias_metrics", p.metric, "method.metric")
        self.scorer = resolve_component(registry, "scorers", p.scorer, "method.scorer")
        self.importance = resolve_component(registry, "importance_metrics", p.importance, "method.importance")
        _named(registry, "poolings", p.pooling, "method.pooling")
        if callable(getattr(self.importance, "chunks", None)):
            raise ConfigError(f"method.importance: {p.importance.name!r} is the attribution method's capability "
                              "cost (it needs backward passes over a calibration text); use it with method: "
                              "{name: attribution}, or choose an importance such as max_abs_weight or "
                              "activation_weight")
        if getattr(self.importance, "needs_activations", False) and config.bias.site != "neuron":
            raise ConfigError(f"method.importance: {p.importance.name!r} needs neuron activations: set "
                              "bias.site='neuron', or choose a weight-only importance such as 'max_abs_weight'")

    def sweep_variants(self, sweep: Any) -> list[dict[str, Any]]:
        return [{"bias_weight": weight} for weight in sweep.bias_weights]

    def analyze(self, model: Any, context: MethodContext) -> MethodAnalysis:
        from fairprune.core.method.bias import analyze_bias

        bias, p = context.config.bias, self.params
        report = analyze_bias(
            model, context.tokenizer, axes=bias.axes, prompt_files=[bias.prompts] if bias.prompts else [],
            split="analysis", site=bias.site, pooling=p.pooling, metric=p.metric.name,
            metric_params=p.metric.params or None, batch_size=bias.batch_size, adapter=context.adapter,
            registry=context.registry, progress=context.progress)
        return MethodAnalysis(report, state={})

    def importance_scores(self, model: Any, analysis: MethodAnalysis, context: MethodContext) -> dict[int, Any]:
        """Per layer ``Tensor[width]`` importance, computed once per analysis (a sweep reuses it)."""
        from fairprune.core.method.planning import layer_importance

        if "importance" not in analysis.state:
            analysis.state["importance"] = layer_importance(model, self.params.importance, analysis.bias_report,
                                                            context.adapter, context.registry)
        return analysis.state["importance"]

    def plan(self, model: Any, analysis: MethodAnalysis, budget: Any, context: MethodContext,
             variant: Mapping[str, Any]) -> Any:
        from fairprune.core.method.planning import plan_pruning

        params = self.params.model_copy(update=dict(variant)) if variant else self.params
        return plan_pruning(model, analysis.bias_report, params=params, pruning=context.config.pruning,
                            budget=budget, importance=self.importance_scores(model, analysis, context),
                            importance_name=params.importance.name, adapter=context.adapter,
                            registry=context.registry)


def _named(registry: Any, kind: str, name: str, path: str) -> Any:
    from fairprune.core.contract.errors import DuplicatePluginError, UnknownPluginError

    try:
        return registry.get(kind, name)
    except (UnknownPluginError, DuplicatePluginError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
