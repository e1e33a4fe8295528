"""Results of evaluators and the statistics evaluator authors use: ``EvalContext`` (what an evaluator may read),
``EvalResult`` (flat float metrics, 95% intervals, tables, a summary), bootstrap intervals and the
base-vs-pruned helpers (``add_paired``, ``fmt_ci``). Part of the plugin contract: any plugin may import it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .protocols import PromptGroup, PruneResult


@dataclass
class EvalContext:
    """What evaluators share in one evaluation; never a model.

    ``groups`` are held-out prompt groups (never the ones used for the bias
    analysis); ``transfer`` maps each transfer split (``"transfer_registers"``,
    ``"transfer_names"``; ``core/data/transfer.py``) to its groups, which no analysis
    reads either (empty when the axes have none). During ``observe``, ``label`` is ``"base"`` or ``"pruned"`` and
    ``adapter`` is the observed model's architecture adapter; during
    ``compare``, ``prune_result`` gives exact parameter counts when a pruner ran.
    ``plan`` is the run's plan (a ``planning.Plan``) when it was made before the
    base model was observed (a run; not a sweep or ``fairprune.evaluate``), and
    ``guarded`` maps each of its layers to ``Bool[width]``: the neurons the
    massive-activation guard protects (mean |h| above the method's ``guard_magnitude_ratio``,
    or the activation method's default for a method without one, times the layer median;
    empty tensors when the guard is off). A random control reads both.
    ``memo`` holds what one evaluator computed from the observed model as it stands, for another observing
    the same model (``output_bias.held_out_next_token``); each ``observing`` copy starts with an empty one, so
    the base and the pruned model never share an entry, and nothing computed with hooks applied belongs in it.
    """

    tokenizer: Any
    groups: list[PromptGroup] = field(default_factory=list)
    transfer: dict[str, list[PromptGroup]] = field(default_factory=dict)
    batch_size: int = 16
    seed: int = 0
    registry: Any = None
    progress: bool = True
    label: str = ""
    adapter: Any = None
    prune_result: PruneResult | None = None
    plan: Any = None
    guarded: dict[int, Any] | None = None
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def observing(self, label: str, adapter: Any) -> "EvalContext":
        """A copy of this context for observing the ``label`` model through ``adapter``, with an empty ``memo``."""
        return dataclasses.replace(self, label=label, adapter=adapter, memo={})


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


def results_to_dict(results: Mapping[str, EvalResult]) -> dict[str, dict]:
    """``{name: result.to_dict()}`` for JSON output."""
    return {name: result.to_dict() for name, result in results.items()}


def flat_metrics(results: Mapping[str, EvalResult]) -> dict[str, float]:
    """All metrics in one flat dictionary, keyed ``evaluator.metric``."""
    return {f"{name}.{key}": value for name, result in results.items() for key, value in result.metrics.items()}
