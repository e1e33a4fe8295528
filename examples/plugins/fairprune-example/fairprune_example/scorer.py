"""A multiplicative scorer: a neuron is prunable only when it is both biased and unimportant.

The linear blend lets a very biased neuron through however important it is; the
geometric blend ``bias^w * (1 - importance)^(1-w)`` (on per-layer ranks) drives
prunability to zero for the most important neurons whatever their bias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from fairprune.core.contract.plugin import Plugin, StrictParams

if TYPE_CHECKING:
    import torch


def rank01(values: "torch.Tensor") -> "torch.Tensor":
    """Per-layer ranks scaled to [0, 1]; ties share their mean rank so equal inputs score equally."""
    import torch

    values = values.detach().float()
    n = values.numel()
    order = torch.argsort(values, stable=True)
    ranks = torch.empty(n, dtype=torch.float32, device=values.device)
    ranks[order] = torch.arange(n, dtype=torch.float32, device=values.device)
    unique, inverse = torch.unique(values, return_inverse=True)
    mean_rank = torch.zeros(unique.numel(), dtype=torch.float32, device=values.device)
    mean_rank.index_add_(0, inverse, ranks)
    mean_rank /= torch.bincount(inverse, minlength=unique.numel()).float()
    return mean_rank[inverse] / max(n - 1, 1)


class GeometricScorer(Plugin):
    """Prunability = (eps + rank(bias))^w * (eps + 1 - rank(importance))^(1-w)."""

    name = "geometric"
    description = "bias_rank^w x (1 - importance_rank)^(1-w): both biased and unimportant (example plugin)"

    class Params(StrictParams):
        eps: float = Field(default=0.01, gt=0, description="floor that keeps the product from vanishing")

    def score(self, bias: "torch.Tensor", importance: "torch.Tensor", bias_weight: float) -> "torch.Tensor":
        eps = self.params.eps
        unimportant = 1.0 - rank01(importance)
        return (eps + rank01(bias)) ** bias_weight * (eps + unimportant) ** (1.0 - bias_weight)
