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
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from .errors import ConfigError, NonFiniteError
from .memory import release_memory
from .protocols import PromptGroup, PruneResult

logger = logging.getLogger(__name__)


@dataclass
class EvalContext:
    """What evaluators share in one evaluation; never a model.

    ``groups`` are held-out prompt groups (never the ones used for the bias
    analysis). During ``observe``, ``label`` is ``"base"`` or ``"pruned"`` and
    ``adapter`` is the observed model's architecture adapter; during
    ``compare``, ``prune_result`` gives exact parameter counts when a pruner ran.
    ``plan`` is the run's plan (a ``planning.Plan``) when it was made before the
    base model was observed (a run; not a sweep or ``fairprune.evaluate``), and
    ``guarded`` maps each of its layers to ``Bool[width]``: the neurons the
    massive-activation guard protects (mean |h| above the method's ``guard_magnitude_ratio``,
    or the activation method's default for a method without one, times the layer median;
    empty tensors when the guard is off). A random control reads both.
    """

    tokenizer: Any
    groups: list[PromptGroup] = field(default_factory=list)
    batch_size: int = 16
    seed: int = 0
    registry: Any = None
    progress: bool = True
    label: str = ""
    adapter: Any = None
    prune_result: PruneResult | None = None
    plan: Any = None
    guarded: dict[int, Any] | None = None

    def observing(self, label: str, adapter: Any) -> "EvalContext":
        """A copy of this context for observing the ``label`` model through ``adapter``."""
        return dataclasses.replace(self, label=label, adapter=adapter)


@dataclass
class EvalResult:
    """What one evaluator found: flat metrics, their 95% CIs, tables, a markdown summary and its headlines.

    ``headlines`` holds the evaluator's declared ``Headline`` objects as dicts
    (filled in by ``compare_all``), so a saved result says which figures matter.
    """

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    summary: str = ""
    headlines: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-serialisable dictionary (NaN becomes None, intervals become lists)."""
        return {
            "name": self.name,
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "intervals": {k: [_json_float(lo), _json_float(hi)] for k, (lo, hi) in self.intervals.items()},
            "tables": {k: [{c: _json_value(v) for c, v in row.items()} for row in rows]
                       for k, rows in self.tables.items()},
            "summary": self.summary,
            "headlines": list(self.headlines),
        }

    def add(self, key: str, value: float, interval: tuple[float, float] | None = None) -> None:
        """Record one metric (as a float) and optionally its interval."""
        self.metrics[key] = float(value)
        if interval is not None:
            self.intervals[key] = (float(interval[0]), float(interval[1]))


def _json_float(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _json_value(value: Any) -> Any:
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _json_float(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return str(value)


# -- statistics ------------------------------------------------------------------------------------

def bootstrap_ci(values_or_pairs: Any, statistic: Callable[[np.ndarray], float] | None = None, n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` by resampling examples (rows) with replacement.

    ``values_or_pairs`` is ``[n]`` (one value per example or group) or ``[n, k]``
    (e.g. base and pruned value of the same example, resampled together so the
    interval of a change is paired). ``statistic`` maps a resampled array to a
    float (default: the mean). NaN when there are no examples.
    """
    data = np.asarray(values_or_pairs, dtype=np.float64)
    statistic = statistic or (lambda a: float(np.mean(a)))
    n = data.shape[0] if data.ndim else 0
    if n == 0:
        return (math.nan, math.nan)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(int(n_boot), n))
    stats = np.array([statistic(data[row]) for row in index], dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def reduction_pct(base: float, pruned: float) -> float:
    """How much smaller ``pruned`` is than ``base``, in % of ``base`` (positive = reduced)."""
    return 100.0 * (base - pruned) / base if base else math.nan


def change_pct(base: float, pruned: float) -> float:
    """Relative change from ``base`` to ``pruned`` in % of ``base`` (positive = increased)."""
    return 100.0 * (pruned - base) / base if base else math.nan


def paired_mean_stats() -> dict[str, Callable[[np.ndarray], float]]:
    """Statistics of ``[n, 2]`` (base, pruned) arrays: both means and the % reduction of the mean."""
    return {
        "base": lambda a: float(a[:, 0].mean()),
        "pruned": lambda a: float(a[:, 1].mean()),
        "reduction_pct": lambda a: reduction_pct(float(a[:, 0].mean()), float(a[:, 1].mean())),
    }


def add_paired(result: EvalResult, prefix: str, base_values: Sequence[float], pruned_values: Sequence[float],
               seed: int = 0, n_boot: int = 1000) -> None:
    """Record ``{prefix}_base``, ``{prefix}_pruned`` and ``{prefix}_reduction_pct`` with paired bootstrap CIs.

    The values are per example (or per group) means; the reduction is of the mean.
    """
    pairs = np.stack([np.asarray(base_values, dtype=np.float64), np.asarray(pruned_values, dtype=np.float64)], 1)
    for suffix, stat in paired_mean_stats().items():
        result.add(f"{prefix}_{suffix}", stat(pairs), bootstrap_ci(pairs, stat, n_boot=n_boot, seed=seed))


def fmt_ci(result: EvalResult, key: str, digits: int = 4) -> str:
    """``value [lo, hi]`` of one metric for summaries."""
    value = result.metrics.get(key, math.nan)
    lo, hi = result.intervals.get(key, (math.nan, math.nan))
    return f"{value:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


# -- running evaluators ----------------------------------------------------------------------------

def configure_evaluators(registry: Any, components: Sequence[Any], path: str = "evaluation.evaluators",
                         by_name: bool = False) -> list[tuple[str, Any]]:
    """``[(name, configured evaluator)]`` for components (``{name, params}`` objects or ``(name, params)``);
    ``ConfigError`` naming ``{path}.{index}`` (or ``{path}.{name}`` with ``by_name``) of an unknown name or a
    bad parameter."""
    from .config import Component, resolve_component

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
                adapter: Any) -> dict[str, Any]:
    """``{name: observation}`` of one model (``label`` is ``"base"`` or ``"pruned"``)."""
    ctx = context.observing(label, adapter)
    out: dict[str, Any] = {}
    for name, evaluator in evaluators:
        start = time.perf_counter()
        try:
            out[name] = evaluator.observe(model, ctx)
        except NonFiniteError as exc:  # say which evaluator and which model met the NaN/inf
            if getattr(exc, "label", "") is not None:
                raise
            from .devices import non_finite_error

            raise non_finite_error(f"evaluator {name!r}: {exc.where}", label, exc.layer, exc.dtype) from exc
        release_memory()  # each evaluator's batches and logits, freed in the heap, before the next one
        logger.info("evaluator %s observed the %s model in %.1f s", name, label, time.perf_counter() - start)
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

    ``evaluators`` defaults to ``EvaluationSection``'s list (``core/config.py``).
    Evaluators that declare ``needs_groups`` get ``groups`` if given, else the
    held-out groups of ``axes`` (default: ``BiasSection``'s axes). ``params``
    maps an evaluator name to its parameters, validated before anything runs
    (``ConfigError`` naming the field).
    """
    from .adapters import default_registry, resolve_adapter
    from .config import BiasSection, EvaluationSection
    from .groups import gather

    registry = default_registry(registry)
    names = list(evaluators) if evaluators is not None else [c.name for c in EvaluationSection().evaluators]
    params = dict(params or {})
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ConfigError(f"parameters given for evaluators that are not run: {', '.join(unknown)} "
                          f"(running: {', '.join(names)})")
    configured = configure_evaluators(registry, [(n, params.get(n)) for n in names], "evaluators", by_name=True)
    if groups is None and (axes is not None or needs_groups(configured)):
        groups = gather(axes=axes if axes is not None else BiasSection().axes, split="heldout",
                        registry=registry).groups
    context = EvalContext(tokenizer=tokenizer, groups=list(groups or []),
                          batch_size=batch_size or EvaluationSection().batch_size, seed=seed, registry=registry,
                          progress=progress, prune_result=prune_result)
    base = observe_all(configured, base_model, context, "base", resolve_adapter(base_model, registry=registry))
    pruned = observe_all(configured, pruned_model, context, "pruned",
                         resolve_adapter(pruned_model, registry=registry))
    return compare_all(configured, base, pruned, context)


def results_to_dict(results: Mapping[str, EvalResult]) -> dict[str, dict]:
    """``{name: result.to_dict()}`` for JSON output."""
    return {name: result.to_dict() for name, result in results.items()}


def flat_metrics(results: Mapping[str, EvalResult]) -> dict[str, float]:
    """All metrics in one flat dictionary, keyed ``evaluator.metric``."""
    return {f"{name}.{key}": value for name, result in results.items() for key, value in result.metrics.items()}
