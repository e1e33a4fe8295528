"""Built-in bias metrics: pooled activations of prompt groups -> one bias score per neuron.

``pooled`` is ``[n_groups, n_members, width]``; member j carries the same
attribute group in every group. Absolute scores are largest for neurons with
large activations; the ``relative_`` scores divide by the neuron's typical
magnitude, which is what keeps pruned models alive (benchmarks/RESULTS.md: absolute scores break the model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field

from ..core.contract.hookspecs import hookimpl
from ..core.contract.plugin import Plugin, StrictParams

if TYPE_CHECKING:
    import torch


def _pair_diffs(pooled: torch.Tensor) -> torch.Tensor:
    """``|x_j - x_k|`` for every member pair j < k: ``[n_groups, n_pairs, width]``."""
    import torch

    n = pooled.shape[1]
    if n < 2:
        raise ValueError(f"bias metrics need at least two members per group, got pooled of shape {tuple(pooled.shape)}")
    rows, cols = torch.triu_indices(n, n, offset=1)
    return (pooled[:, rows] - pooled[:, cols]).abs()


class RelativeParams(StrictParams):
    """Options of scale-free metrics."""

    model_config = ConfigDict(extra="forbid")
    eps: float = Field(1e-6, gt=0, description="added to the magnitude before dividing")


class MeanAbsDiff(Plugin):
    """Mean over groups (and member pairs) of |a - b|: optipfair's pair score."""

    name = "mean_abs_diff"
    description = "mean over groups and member pairs of |a - b| (optipfair-compatible, absolute)"

    def score(self, pooled: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        return _pair_diffs(pooled.float()).mean(dim=(0, 1))


class MaxAbsDiff(Plugin):
    """Largest |a - b| over groups and member pairs: catches neurons that react to one template."""

    name = "max_abs_diff"
    description = "max over groups and member pairs of |a - b| (absolute)"

    def score(self, pooled: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        return _pair_diffs(pooled.float()).amax(dim=(0, 1))


class GroupVariance(Plugin):
    """Variance across attribute groups of each group's mean activation (over templates)."""

    name = "group_variance"
    description = "variance across members of the per-member mean over groups (absolute)"

    def score(self, pooled: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        if pooled.shape[1] < 2:
            raise ValueError(f"group_variance needs at least two members, got shape {tuple(pooled.shape)}")
        return pooled.float().mean(dim=0).var(dim=0, unbiased=False)


class RelativeMeanAbsDiff(Plugin):
    """``mean_abs_diff / (magnitude + eps)``: comparable across neurons of very different scales (default)."""

    name = "relative_mean_abs_diff"
    description = "mean |a - b| divided by the neuron's mean |activation| (scale-free; default)"
    Params = RelativeParams

    def score(self, pooled: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        return MeanAbsDiff().score(pooled, magnitude) / (magnitude.float() + self.params.eps)


class RelativeGroupVariance(Plugin):
    """``group_variance / (magnitude + eps)^2``: the scale-free variance across attribute groups."""

    name = "relative_group_variance"
    description = "variance across groups divided by the squared mean |activation| (scale-free)"
    Params = RelativeParams

    def score(self, pooled: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        return GroupVariance().score(pooled, magnitude) / (magnitude.float() + self.params.eps) ** 2


@hookimpl
def fairprune_register_bias_metrics(register):
    for cls in (MeanAbsDiff, MaxAbsDiff, GroupVariance, RelativeMeanAbsDiff, RelativeGroupVariance):
        register(cls())
