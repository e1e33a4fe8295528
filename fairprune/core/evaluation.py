"""Evaluation of a pruned model against its base: the context, the result, bootstrap CIs and ``evaluate``.

Each evaluator is a plugin (kind ``evaluators``) that receives an ``EvalContext``
and returns an ``EvalResult``: flat float metrics, 95% bootstrap intervals, tables
and a markdown summary. ``evaluate`` builds the held-out prompt groups from the
bias axes, configures the requested evaluators and runs them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from .errors import ConfigError
from .protocols import PromptGroup, PruneResult

logger = logging.getLogger(__name__)

#: evaluators run by ``evaluate`` when none are named
DEFAULT_EVALUATORS: tuple[str, ...] = ("activation_bias", "output_bias", "capability", "parameters")
#: the axis used when a bias evaluator runs and no axes or groups are given
DEFAULT_AXES: tuple[str, ...] = ("race",)


@dataclass
class EvalContext:
    """Everything an evaluator needs: both models, the tokenizer, held-out groups and run settings.

    ``groups`` are held-out prompt groups (never the ones used for the bias
    analysis). ``adapter_base``/``adapter_pruned`` are architecture adapters
    (may be the same object); ``prune_result`` gives exact parameter counts.
    """

    base_model: Any
    pruned_model: Any
    tokenizer: Any
    groups: list[PromptGroup] = field(default_factory=list)
    adapter_base: Any = None
    adapter_pruned: Any = None
    batch_size: int = 16
    seed: int = 0
    registry: Any = None
    prune_result: PruneResult | None = None
    progress: bool = True
    base_cache: dict | None = None  # shared by calls that evaluate the same base model (a sweep's grid points)

    def models(self) -> tuple[tuple[str, Any, Any], ...]:
        """``(("base", model, adapter), ("pruned", model, adapter))`` for loops over both models."""
        return (("base", self.base_model, self.adapter_base), ("pruned", self.pruned_model, self.adapter_pruned))

    def per_model(self, key: str, compute: Callable[[str, Any, Any], Any]) -> dict[str, Any]:
        """``{label: compute(label, model, adapter)}`` for base and pruned. With a ``base_cache``, the base
        result for the same ``key`` (which must name everything it depends on) and held-out groups is reused."""
        out = {}
        for label, model, adapter in self.models():
            if label == "base" and self.base_cache is not None:
                groups = tuple((g.template_id, g.prompts) for g in self.groups)
                cache_key = (id(model), key, hash(groups), self.batch_size)
                if cache_key not in self.base_cache:
                    self.base_cache[cache_key] = compute(label, model, adapter)
                out[label] = self.base_cache[cache_key]
            else:
                out[label] = compute(label, model, adapter)
        return out


@dataclass
class EvalResult:
    """What one evaluator found: flat metrics, their 95% CIs, tables and a markdown summary."""

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    summary: str = ""

    def to_dict(self) -> dict:
        """A JSON-serialisable dictionary (NaN becomes None, intervals become lists)."""
        return {
            "name": self.name,
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "intervals": {k: [_json_float(lo), _json_float(hi)] for k, (lo, hi) in self.intervals.items()},
            "tables": {k: [{c: _json_value(v) for c, v in row.items()} for row in rows]
                       for k, rows in self.tables.items()},
            "summary": self.summary,
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

def heldout_groups(axes: Iterable[Any], registry: Any) -> list[PromptGroup]:
    """The held-out prompt groups of each axis (a registered axis name or an axis object)."""
    groups: list[PromptGroup] = []
    for axis in axes:
        obj = registry.create("bias_axes", axis) if isinstance(axis, str) else axis
        found = list(obj.prompt_groups("heldout"))
        if not found:
            raise ConfigError(f"bias axis {getattr(obj, 'name', axis)!r} has no held-out prompt groups")
        groups.extend(found)
    return groups


def _configure(registry: Any, name: str, params: Mapping[str, Any] | None) -> Any:
    try:
        return registry.create("evaluators", name, dict(params) if params else None)
    except ValidationError as exc:
        problems = "; ".join(f"evaluators.{name}.params.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"invalid parameters for evaluator {name!r}: {problems}") from exc


def evaluate(base_model: Any, pruned_model: Any, tokenizer: Any, *, axes: Sequence[Any] | None = None,
             groups: Sequence[PromptGroup] | None = None, evaluators: Sequence[str] = DEFAULT_EVALUATORS,
             params: Mapping[str, Mapping[str, Any]] | None = None, batch_size: int = 16, registry: Any = None,
             prune_result: PruneResult | None = None, progress: bool = True,
             seed: int = 0, base_cache: dict | None = None) -> dict[str, EvalResult]:
    """Compare ``pruned_model`` with ``base_model`` with each named evaluator; ``{name: EvalResult}``.

    Evaluators that declare ``needs_groups = True`` (the bias evaluators) get
    ``groups`` if given, else the held-out groups of ``axes`` (default ``["race"]``). ``params`` maps an evaluator name to its parameters,
    validated against that evaluator's ``Params`` before anything runs. Pass the same ``base_cache`` dict to
    calls that share ``base_model`` (a sweep) so the base model's side is measured once.
    """
    from .registry import get_registry
    from .surgery import resolve_adapter

    registry = registry or get_registry()
    evaluators = list(evaluators)
    params = dict(params or {})
    unknown = sorted(set(params) - set(evaluators))
    if unknown:
        raise ConfigError(f"parameters given for evaluators that are not run: {', '.join(unknown)} "
                          f"(running: {', '.join(evaluators)})")
    configured = [(name, _configure(registry, name, params.get(name))) for name in evaluators]
    if groups is None and (axes is not None or any(getattr(e, "needs_groups", False) for _, e in configured)):
        groups = heldout_groups(axes if axes is not None else DEFAULT_AXES, registry)
    context = EvalContext(
        base_model=base_model, pruned_model=pruned_model, tokenizer=tokenizer, groups=list(groups or []),
        adapter_base=resolve_adapter(base_model, registry=registry),
        adapter_pruned=resolve_adapter(pruned_model, registry=registry),
        batch_size=batch_size, seed=seed, registry=registry, prune_result=prune_result, progress=progress,
        base_cache=base_cache)
    results: dict[str, EvalResult] = {}
    for name, evaluator in configured:
        start = time.perf_counter()
        results[name] = evaluator.evaluate(context)
        logger.info("evaluator %s finished in %.1f s", name, time.perf_counter() - start)
    return results


def results_to_dict(results: Mapping[str, EvalResult]) -> dict[str, dict]:
    """``{name: result.to_dict()}`` for JSON output."""
    return {name: result.to_dict() for name, result in results.items()}


def flat_metrics(results: Mapping[str, EvalResult]) -> dict[str, float]:
    """All metrics in one flat dictionary, keyed ``evaluator.metric``."""
    return {f"{name}.{key}": value for name, result in results.items() for key, value in result.metrics.items()}
