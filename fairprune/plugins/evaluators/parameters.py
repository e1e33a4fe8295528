"""The ``parameters`` evaluator: parameter counts and MLP widths before and after pruning."""

from __future__ import annotations

from typing import Any

from ...core.contract.plugin import Plugin
from ...core.contract.results import EvalContext, EvalResult
from ...core.model.adapters import count_parameters, widths


class ParametersEvaluator(Plugin):
    """How many parameters pruning removed, in total and per layer."""

    name = "parameters"
    description = "parameter counts and MLP widths before and after pruning, % removed"
    needs_groups = False
    headlines = ()  # the run summary states parameters removed from the prune result itself

    def observe(self, model: Any, context: EvalContext) -> dict[str, Any]:
        """One model's parameter count and per-layer MLP widths."""
        return {"params": count_parameters(model),
                "widths": widths(model, context.adapter) if context.adapter is not None else []}

    def compare(self, base: dict[str, Any], pruned: dict[str, Any], context: EvalContext) -> EvalResult:
        pr = context.prune_result
        before = pr.params_before if pr is not None else base["params"]
        after = pr.params_after if pr is not None else pruned["params"]
        result = EvalResult(self.name)
        result.add("params_base", before)
        result.add("params_pruned", after)
        result.add("params_removed", before - after)
        result.add("removed_pct", 100.0 * (before - after) / before if before else 0.0)
        wb, wp = base["widths"], pruned["widths"]
        if wb and len(wb) == len(wp):
            result.tables["widths"] = [{"layer": i, "width_base": b, "width_pruned": q, "neurons_removed": b - q}
                                       for i, (b, q) in enumerate(zip(wb, wp))]
            result.add("neurons_removed", sum(wb) - sum(wp))
            result.add("neurons_removed_pct", 100.0 * (sum(wb) - sum(wp)) / sum(wb) if sum(wb) else 0.0)
        source = "prune result" if pr is not None else "counted"
        result.summary = (f"Parameters: {before:,} → {after:,} ({before - after:,} removed, "
                          f"{result.metrics['removed_pct']:.3f}%; {source}).")
        return result
