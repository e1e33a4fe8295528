"""What the benchmark evaluators share: loading at configure time, and paired bootstrap statistics.

A benchmark evaluator reads its file when it is configured (so a malformed file
is reported before any model runs), observes one model as plain per-example
log-probabilities, and compares two observations with statistics computed on
the same examples: ``<metric>_base``, ``<metric>_pruned`` and ``<metric>_change``
(pruned − base, in the metric's unit), each with a 95% percentile bootstrap
interval over examples. The three intervals use the same resamples, so the
interval of the change is paired.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..contract.errors import ConfigError
from ..contract.plugin import Plugin
from ..contract.results import EvalResult, bootstrap_ci, fmt_ci
from ..data.benchmark_files import existing_path
from ..contract.plugin import StrictParams

#: a statistic of per-example features ``[n_examples, n_features]`` -> one float
Statistic = Callable[[np.ndarray], float]


class BenchmarkParams(StrictParams):
    """Options every benchmark evaluator has; each describes its ``path`` and adds its filters.

    ``path_kind`` (``"file"``, ``"directory"`` or ``"either"``) says what the path
    must name; a path that does not exist fails validation with the field named.
    """

    model_config = ConfigDict(extra="forbid")
    path_kind: ClassVar[str] = "file"
    path: str = Field(description="the benchmark's file")
    limit: int | None = Field(None, ge=1, description="a seeded random sample of N examples (None = all)")
    sample_seed: int = Field(0, description="seed of the sample taken when limit is set")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str) -> str:
        return existing_path(value, cls.path_kind)


class BenchmarkEvaluator(Plugin):
    """Base of the evaluators that read a benchmark from a path given in their params.

    The registered object is unconfigured (``params`` is None: there is no
    default path); ``configure`` validates the params and parses the whole file.
    Subclasses implement ``load() -> examples``.
    """

    needs_groups = False

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params
        self._examples: Any = None

    def configure(self, params: dict[str, Any] | BaseModel | None = None) -> "BenchmarkEvaluator":
        clone = super().configure(params)
        clone._examples = clone.load()  # every line checked now, before any model runs
        return clone

    def load(self) -> Any:
        raise NotImplementedError

    @property
    def examples(self) -> Any:
        """The parsed examples; a ``ConfigError`` when the evaluator was never given its params."""
        if self._examples is None:
            raise ConfigError(f"{self.name} needs params with a 'path' to the benchmark's file")
        return self._examples

    def features(self, observation: dict[str, list]) -> np.ndarray:
        """Per-example figures of one observation that the statistics read (``[n_examples, ...]``)."""
        raise NotImplementedError

    def paired_features(self, base: dict[str, list], pruned: dict[str, list]) -> tuple[np.ndarray, np.ndarray]:
        """``features`` of the base and the pruned observation, each checked against the selected examples."""
        for observation in (base, pruned):
            self.check_observation(observation, len(self.examples))
        return self.features(base), self.features(pruned)

    def check_observation(self, observation: dict[str, list], n_examples: int) -> None:
        """An error when an observation does not belong to this evaluator's examples (another file or filter)."""
        sizes = {key: len(values) for key, values in observation.items() if isinstance(values, list)}
        if any(size != n_examples for size in sizes.values()):
            raise ConfigError(f"{self.name}: an observation of {sizes} values does not match the "
                              f"{n_examples} examples selected by the params")

    def score_pairs(self, model: Any, context: Any, pairs: Sequence[tuple[str, str]], title: str,
                    names: tuple[str, str]) -> dict[str, list[float]]:
        """Total log-probability (nats) of both sentences of each pair: ``{names[0]: [...], names[1]: [...]}``."""
        from ..model.benchmark_scoring import sentence_logprobs

        sentences = [s for pair in pairs for s in pair]
        scored = sentence_logprobs(model, context.tokenizer, sentences, context.batch_size, context.progress,
                                   f"{title} ({getattr(context, 'label', '') or 'model'})")
        return {names[0]: [s.logprob for s in scored[0::2]], names[1]: [s.logprob for s in scored[1::2]]}

    def compare_subsets(self, result: EvalResult, base: np.ndarray, pruned: np.ndarray, subsets: dict[str, np.ndarray],
                        statistics: dict[str, Statistic], context: Any, count: str) -> None:
        """``add_compared`` for each statistic on each subset of examples; keys ``<statistic><subset>``.

        ``subsets`` maps a key suffix (``""`` for all examples) to a boolean mask
        ``[n_examples]``; ``count`` names the metric that records each subset's size.
        """
        seed = getattr(context, "seed", 0)
        for suffix, mask in subsets.items():
            for metric, statistic in statistics.items():
                add_compared(result, metric + suffix, base[mask], pruned[mask], statistic, seed, self.params.n_boot)
            result.add(count + suffix, float(mask.sum()))


def subsets_by(values: Sequence[str], prefix: str = "_") -> dict[str, np.ndarray]:
    """Masks of all examples (suffix ``""``) and of each distinct value (suffix ``_<slug>``), sorted by value."""
    array = np.asarray(values, dtype=object)
    masks = {"": np.ones(len(array), dtype=bool)}
    masks.update({f"{prefix}{slug(str(v))}": array == v for v in sorted(set(values))})
    return masks


def slug(text: str) -> str:
    """A metric-key fragment: ``"race-color"`` -> ``"race_color"``, ``"Race_x_SES"`` -> ``"race_x_ses"``."""
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def add_compared(result: EvalResult, key: str, base: np.ndarray, pruned: np.ndarray, statistic: Statistic,
                 seed: int = 0, n_boot: int = 1000) -> None:
    """Record ``key_base``, ``key_pruned`` and ``key_change`` (pruned − base) with paired bootstrap intervals.

    ``base`` and ``pruned`` are per-example features ``[n]`` or ``[n, k]`` of the
    same examples in the same order; ``statistic`` maps a ``[m, k]`` array to a
    float (NaN when undefined; NaN resamples are dropped from the interval).
    """
    n = len(base)
    if len(pruned) != n:
        raise ValueError(f"{key}: {n} base examples but {len(pruned)} pruned ones")
    k = int(np.asarray(base).reshape(n, -1).shape[1]) if n else 1
    data = np.concatenate([np.asarray(base, np.float64).reshape(n, k), np.asarray(pruned, np.float64).reshape(n, k)],
                          axis=1)
    stats: dict[str, Statistic] = {
        "base": lambda a: statistic(a[:, :k]),
        "pruned": lambda a: statistic(a[:, k:]),
        "change": lambda a: statistic(a[:, k:]) - statistic(a[:, :k]),
    }
    for suffix, stat in stats.items():
        value = stat(data) if n else float("nan")
        result.add(f"{key}_{suffix}", value, bootstrap_ci(data, stat, n_boot=n_boot, seed=seed))


def pct_positive(values: np.ndarray) -> float:
    """Percentage of rows whose first feature is > 0 (NaN for no rows)."""
    return 100.0 * float(np.mean(values[:, 0] > 0)) if len(values) else float("nan")


def mean_abs(values: np.ndarray) -> float:
    """Mean |first feature| (NaN for no rows)."""
    return float(np.mean(np.abs(values[:, 0]))) if len(values) else float("nan")


def mean_first(values: np.ndarray) -> float:
    """Mean of the first feature (NaN for no rows)."""
    return float(np.mean(values[:, 0])) if len(values) else float("nan")


def summary_table(result: EvalResult, intro: str, rows: Sequence[tuple[str, str]]) -> str:
    """A markdown table ``| measure | base | pruned | change |`` of ``(label, metric key prefix)`` rows."""
    lines = [intro, "", "| measure | base | pruned | change (pruned − base) |", "|---|---|---|---|"]
    for label, key in rows:
        if f"{key}_base" in result.metrics:
            lines.append(f"| {label} | {fmt_ci(result, key + '_base')} | {fmt_ci(result, key + '_pruned')} | "
                         f"{fmt_ci(result, key + '_change')} |")
    return "\n".join(lines)
