"""The ``parameters`` evaluator: parameter counts and MLP widths before and after pruning."""

from __future__ import annotations

from typing import Any

from ...core.evaluation import EvalContext, EvalResult
from ...core.plugin import Plugin


def count_parameters(model: Any) -> int:
    """Number of distinct parameters of a model (tied weights counted once)."""
    return int(sum(p.numel() for p in model.parameters()))


def _widths(model: Any, adapter: Any) -> list[int]:
    if adapter is None:
        return []
    return [int(adapter.width(model, i)) for i in range(len(adapter.layers(model)))]


class ParametersEvaluator(Plugin):
    """How many parameters pruning removed, in total and per layer."""

    name = "parameters"
    description = "parameter counts and MLP widths before and after pruning, % removed"

    def evaluate(self, context: EvalContext) -> EvalResult:
        pr = context.prune_result
        before = pr.params_before if pr is not None else count_parameters(context.base_model)
        after = pr.params_after if pr is not None else count_parameters(context.pruned_model)
        result = EvalResult(self.name)
        result.add("params_base", before)
        result.add("params_pruned", after)
        result.add("params_removed", before - after)
        result.add("removed_pct", 100.0 * (before - after) / before if before else 0.0)
        wb = _widths(context.base_model, context.adapter_base)
        wp = _widths(context.pruned_model, context.adapter_pruned)
        if wb and len(wb) == len(wp):
            result.tables["widths"] = [{"layer": i, "width_base": b, "width_pruned": q, "neurons_removed": b - q}
                                       for i, (b, q) in enumerate(zip(wb, wp))]
            result.add("neurons_removed", sum(wb) - sum(wp))
            result.add("neurons_removed_pct", 100.0 * (sum(wb) - sum(wp)) / sum(wb) if sum(wb) else 0.0)
        source = "prune result" if pr is not None else "counted"
        result.summary = (f"Parameters: {before:,} → {after:,} ({before - after:,} removed, "
                          f"{result.metrics['removed_pct']:.3f}%; {source}).")
        return result
