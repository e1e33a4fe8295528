"""Built-in scorers: blend one layer's bias and importance into prunability (higher = remove first)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.contract.hookspecs import hookimpl
from ..core.contract.plugin import Plugin

if TYPE_CHECKING:
    import torch


def min_max(values: "torch.Tensor") -> "torch.Tensor":
    """Scale to [0, 1] within the layer; a constant layer maps to zeros."""
    lo, hi = values.min(), values.max()
    span = hi - lo
    return (values - lo) / span if float(span) > 0 else values.new_zeros(values.shape)


def rank01(values: "torch.Tensor") -> "torch.Tensor":
    """Ranks scaled to [0, 1] (ties broken by index, so the result is deterministic)."""
    import torch

    n = values.numel()
    ranks = torch.empty(n, dtype=torch.float32, device=values.device)
    ranks[torch.argsort(values, stable=True)] = torch.arange(n, dtype=torch.float32, device=values.device)
    return ranks / max(n - 1, 1)


class LinearScorer(Plugin):
    name = "linear"
    description = "w*minmax(bias) + (1-w)*(1 - minmax(importance)), min-max normalised within each layer"

    def score(self, bias: "torch.Tensor", importance: "torch.Tensor", bias_weight: float) -> "torch.Tensor":
        return bias_weight * min_max(bias.float()) + (1.0 - bias_weight) * (1.0 - min_max(importance.float()))


class RankScorer(Plugin):
    name = "rank"
    description = "the linear blend on per-layer ranks instead of values: robust to massive outliers"

    def score(self, bias: "torch.Tensor", importance: "torch.Tensor", bias_weight: float) -> "torch.Tensor":
        return bias_weight * rank01(bias.float()) + (1.0 - bias_weight) * (1.0 - rank01(importance.float()))


class BiasOnlyScorer(Plugin):
    name = "bias_only"
    description = "baseline: prunability is the min-max normalised bias score alone (ignores bias_weight)"

    def score(self, bias: "torch.Tensor", importance: "torch.Tensor", bias_weight: float) -> "torch.Tensor":
        return min_max(bias.float())


class ImportanceOnlyScorer(Plugin):
    name = "importance_only"
    description = "baseline: least important first, as in plain structured pruning (ignores bias and bias_weight)"

    def score(self, bias: "torch.Tensor", importance: "torch.Tensor", bias_weight: float) -> "torch.Tensor":
        return 1.0 - min_max(importance.float())


@hookimpl
def fairprune_register_scorers(register):
    for scorer in (LinearScorer(), RankScorer(), BiasOnlyScorer(), ImportanceOnlyScorer()):
        register(scorer)
