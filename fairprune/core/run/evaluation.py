"""Evaluation of a pruned model against its base, in two phases: observe each model, then compare.

Each evaluator is a plugin (kind ``evaluators``). ``observe(model, context)``
measures one model and returns small plain data; ``compare(base, pruned,
context)`` turns two observations into an ``EvalResult``: flat float metrics,
95% bootstrap intervals, tables and a markdown summary. Because a model is only
needed while it is observed, a run observes the base model before pruning it in
place and never holds two models. Each evaluator declares its ``headlines``
(``protocols.Headline``); they are copied into the result so that summaries,
reports and sweeps find them in ``metrics.json`` without knowing any evaluator.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..contract.errors import ConfigError, NonFiniteError
from ..contract.protocols import PromptGroup, PruneResult
from ..contract.results import EvalContext, EvalResult
from ..model.memory import release_memory

logger = logging.getLogger(__name__)


# -- running evaluators ----------------------------------------------------------------------------

def configure_evaluators(registry: Any, components: Sequence[Any], path: str = "evaluation.evaluators",
                         by_name: bool = False) -> list[tuple[str, Any]]:
    """``[(name, configured evaluator)]`` for components (``{name, params}`` objects or ``(name, params)``);
    ``ConfigError`` naming ``{path}.{index}`` (or ``{path}.{name}`` with ``by_name``) of an unknown name or a
    bad parameter."""
    from ..contract.config import Component, resolve_component

    out = []
    for i, comp in enumerate(components):
        if not isinstance(comp, Component):
            name, params = comp
            comp = Component(name=name, params=dict(params or {}))
        where = f"{path}.{comp.name if by_name else i}"
        out.append((comp.name, resolve_component(registry, "evaluators", comp, where)))
    return out


def needs_groups(evaluators: Sequence[tuple[str, Any]]) -> bool:
    """Whether any evaluator asks for held-out prompt groups."""
    return any(getattr(e, "needs_groups", False) for _, e in evaluators)


def observe_all(evaluators: Sequence[tuple[str, Any]], model: Any, context: EvalContext, label: str,
                adapter: Any, world: Any = None) -> dict[str, Any]:
    """``{name: observation}`` of one model (``label`` is ``"base"`` or ``"pruned"``).

    With ``world`` (a ``distributed.World`` of several processes, every one of which must call this with the
    same evaluators, model and context), the evaluators' scoring passes are shared among the processes
    (``distributed.sharing``) and every process returns the observations one process would.
    """
    from ..model.distributed import sharing

    ctx = context.observing(label, adapter)
    out: dict[str, Any] = {}
    with sharing(world):
        for name, evaluator in evaluators:
            start = time.perf_counter()
            try:
                out[name] = evaluator.observe(model, ctx)
            except NonFiniteError as exc:  # say which evaluator and which model met the NaN/inf
                if getattr(exc, "label", "") is not None:
                    raise
                from ..model.devices import non_finite_error

                error = non_finite_error(f"evaluator {name!r}: {exc.where}", label, exc.layer, exc.dtype)
                if getattr(exc, "announced", False):  # the other processes already know: not told twice
                    error.announced = True  # type: ignore[attr-defined]
                raise error from exc
            release_memory()  # each evaluator's batches and logits, freed in the heap, before the next one
            logger.info("evaluator %s observed the %s model in %.1f s", name, label, time.perf_counter() - start)
    ctx.memo.clear()
    return out


def compare_all(evaluators: Sequence[tuple[str, Any]], base: Mapping[str, Any], pruned: Mapping[str, Any],
                context: EvalContext) -> dict[str, EvalResult]:
    """``{name: EvalResult}`` from the two observations of each evaluator, with its headlines attached."""
    results: dict[str, EvalResult] = {}
    for name, evaluator in evaluators:
        result = evaluator.compare(base[name], pruned[name], context)
        result.headlines = [dataclasses.asdict(h) for h in getattr(evaluator, "headlines", ())]
        results[name] = result
    return results


def evaluate(base_model: Any, pruned_model: Any, tokenizer: Any, *, axes: Sequence[Any] | None = None,
             groups: Sequence[PromptGroup] | None = None, evaluators: Sequence[str] | None = None,
             params: Mapping[str, Mapping[str, Any]] | None = None, batch_size: int | None = None,
             registry: Any = None, prune_result: PruneResult | None = None, progress: bool = True,
             seed: int = 0) -> dict[str, EvalResult]:
    """Compare ``pruned_model`` with ``base_model`` with each named evaluator; ``{name: EvalResult}``.

    ``evaluators`` defaults to ``EvaluationSection``'s list (``core/contract/config.py``).
    Evaluators that declare ``needs_groups`` get ``groups`` if given, else the
    held-out groups of ``axes`` (default: ``BiasSection``'s axes) and their transfer groups. ``params``
    maps an evaluator name to its parameters, validated before anything runs
    (``ConfigError`` naming the field).
    """
    from ..contract.config import BiasSection, EvaluationSection
    from ..contract.registry import default_registry
    from ..data.groups import gather, transfer_groups
    from ..model.adapters import resolve_adapter

    registry = default_registry(registry)
    names = list(evaluators) if evaluators is not None else [c.name for c in EvaluationSection().evaluators]
    params = dict(params or {})
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ConfigError(f"parameters given for evaluators that are not run: {', '.join(unknown)} "
                          f"(running: {', '.join(names)})")
    configured = configure_evaluators(registry, [(n, params.get(n)) for n in names], "evaluators", by_name=True)
    transfer: dict[str, list[PromptGroup]] = {}
    if groups is None and (axes is not None or needs_groups(configured)):
        axes = axes if axes is not None else BiasSection().axes
        groups = gather(axes=axes, split="heldout", registry=registry).groups
        transfer = transfer_groups(axes, registry)
    context = EvalContext(tokenizer=tokenizer, groups=list(groups or []), transfer=transfer,
                          batch_size=batch_size or EvaluationSection().batch_size, seed=seed, registry=registry,
                          progress=progress, prune_result=prune_result)
    base = observe_all(configured, base_model, context, "base", resolve_adapter(base_model, registry=registry))
    pruned = observe_all(configured, pruned_model, context, "pruned",
                         resolve_adapter(pruned_model, registry=registry))
    return compare_all(configured, base, pruned, context)
