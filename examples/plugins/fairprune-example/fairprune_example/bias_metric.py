"""A bias metric for axes with any number of groups: the spread (max - min) of a neuron across members.

For two members it is |a - b|; for three or more it is the widest gap between
any two attribute groups. Divided by the neuron's typical magnitude by default,
so that massive-activation neurons do not dominate (see FINDINGS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from fairprune.core.contract.plugin import Plugin, StrictParams

if TYPE_CHECKING:
    import torch


class GroupRangeBias(Plugin):
    """Mean over prompt groups of (max - min over members), optionally divided by mean |activation|."""

    name = "group_range"
    description = "mean over prompt groups of the max-min spread across members, relative to magnitude (example plugin)"

    class Params(StrictParams):
        relative: bool = True
        eps: float = Field(default=1e-6, gt=0)

    def score(self, pooled: "torch.Tensor", magnitude: "torch.Tensor") -> "torch.Tensor":
        pooled = pooled.detach().float()  # [n_groups, n_members, width]
        spread = (pooled.amax(dim=1) - pooled.amin(dim=1)).mean(dim=0)
        if not self.params.relative:
            return spread
        return spread / (magnitude.detach().float().to(spread.device) + self.params.eps)
