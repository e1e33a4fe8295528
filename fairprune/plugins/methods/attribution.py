"""The signed attribution method: the first-order effect of removing each neuron on an output-level bias
objective, from backward passes over the analysis groups, selected in rounds under a capability guard and a
measured perplexity check (``core.selection``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fairprune.core.contract.config import AttributionParams, resolve_component
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.plugin import Plugin
from fairprune.core.contract.protocols import MethodAnalysis, MethodContext


class AttributionMethod(Plugin):
    name = "attribution"
    description = ("signed, output-grounded: neurons whose removal is estimated, then measured, to lower the bias "
                   "objective, protected by a capability cost, in rounds")
    Params = AttributionParams
    shared_keys: frozenset[str] = frozenset()

    def prepare(self, config: Any, registry: Any) -> None:
        """Resolve the objective and the capability metric and read the cloze check's passages; ``ConfigError``
        naming the field otherwise."""
        if config.bias.site != "neuron":
            raise ConfigError("bias.site: the attribution method scores neurons (the input of down_proj); set "
                              f"bias.site=neuron, got {config.bias.site!r}")
        self.objective = resolve_component(registry, "bias_objectives", self.params.objective, "method.objective")
        self.capability = resolve_component(registry, "importance_metrics", self.params.capability,
                                            "method.capability")
        if not callable(getattr(self.capability, "chunks", None)):
            raise ConfigError(f"method.capability: {self.capability.name!r} gives no calibration text; use "
                              "capability_cost (or a metric with chunks(tokenizer))")
        cloze = self.params.cloze_check
        if cloze is not None:  # a missing or malformed file, or a sample of them all, fails before the model loads
            from fairprune.core.method.cloze_check import BUNDLED_PASSAGES, check_samples, read_passages

            texts = read_passages(cloze.passages if cloze.passages is not None else BUNDLED_PASSAGES)
            check_samples(len(texts), cloze.passages, limit=cloze.limit, check_limit=cloze.check_limit)
        if self.params.recall is not None:
            _check_recall_prompts(config, self.params.recall.prompts)

    def sweep_variants(self, sweep: Any) -> list[dict[str, Any]]:
        return [{}]  # a sweep varies the budget only

    def analyze(self, model: Any, context: MethodContext) -> MethodAnalysis:
        """Select for the config's budget; the ``BiasReport`` carries the first round's attributions. Under
        torchrun every process calls this and the selection's passes are shared among them."""
        from fairprune.core.method.passes import SelectionPasses

        passes = SelectionPasses(model, context.adapter)  # what later budgets on this model reuse
        selection, report = self._select(model, context, context.config.pruning.budget, shard=True, passes=passes)
        return MethodAnalysis(report, state={_key(context.config.pruning.budget): selection, PASSES: passes})

    def plan(self, model: Any, analysis: MethodAnalysis, budget: Any, context: MethodContext,
             variant: Mapping[str, Any]) -> Any:
        """The plan selected for ``budget`` (a ceiling); selection runs again for a budget not seen before (in
        this process alone: under torchrun only rank 0 plans)."""
        key = _key(budget)
        if key not in analysis.state:
            analysis.state[key] = self._select(model, context, budget, passes=analysis.state.get(PASSES))[0]
        return analysis.state[key].plan

    def _select(self, model: Any, context: MethodContext, budget: Any, shard: bool = False,
                passes: Any = None) -> tuple[Any, Any]:
        from fairprune.core.method.selection import run_selection

        return run_selection(model, context, self.params, objective=self.objective, capability=self.capability,
                             budget=budget, shard=shard, passes=passes)


def _check_recall_prompts(config: Any, prompts: str | None) -> None:
    """The recall guard's prompts read as an axis file before the model loads (the bundled ones of the first
    bias axis when ``prompts`` is None); ``ConfigError`` naming ``method.recall.prompts`` otherwise."""
    from fairprune.core.contract.errors import PromptError
    from fairprune.core.data.prompts import load_axis
    from fairprune.core.method.recall_guard import recall_prompts_file

    path = recall_prompts_file(config, prompts)
    if prompts is None:
        return  # a bundled file
    try:
        axis = load_axis(path)
    except PromptError as exc:
        raise ConfigError(f"method.recall.prompts: {exc}") from None
    if len(axis.attribute_groups()) < 2:
        raise ConfigError(f"method.recall.prompts: {prompts} has fewer than two groups to choose among")


#: the key of the analysis state holding the passes selections on this model share (``SelectionPasses``)
PASSES = "passes"


def _key(budget: Any) -> str:
    return repr(sorted(budget.model_dump(exclude_none=True).items()))
