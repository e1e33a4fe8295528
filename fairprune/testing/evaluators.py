"""Run an evaluator's two phases on a pair of models, for tests of evaluator plugins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ModelPair:
    """A base model, a pruned model, their adapters and the shared ``EvalContext``."""

    base: Any
    pruned: Any
    context: Any
    adapter_base: Any = None
    adapter_pruned: Any = None


def model_pair(base: Any, pruned: Any, tokenizer: Any, groups: Any = (), adapter: Any = None,
               **context_fields: Any) -> ModelPair:
    """A ``ModelPair`` whose context holds ``tokenizer``, ``groups`` and any other ``EvalContext`` field."""
    from fairprune.core.contract.results import EvalContext

    context = EvalContext(tokenizer=tokenizer, groups=list(groups), **context_fields)
    return ModelPair(base, pruned, context, adapter, adapter)


def run_evaluator(evaluator: Any, pair: ModelPair) -> Any:
    """``evaluator.compare(observe(base), observe(pruned))`` as a run does; the ``EvalResult``."""
    from fairprune.core.model.adapters import resolve_adapter
    from fairprune.core.run.evaluation import compare_all, observe_all

    def adapter_of(model: Any, given: Any) -> Any:
        return given if given is not None else resolve_adapter(model, registry=pair.context.registry)

    named = [(evaluator.name, evaluator)]
    base = observe_all(named, pair.base, pair.context, "base", adapter_of(pair.base, pair.adapter_base))
    pruned = observe_all(named, pair.pruned, pair.context, "pruned", adapter_of(pair.pruned, pair.adapter_pruned))
    return compare_all(named, base, pruned, pair.context)[evaluator.name]
