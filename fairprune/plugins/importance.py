"""Importance metrics over one layer's GLU weights (and, for one, its activations).

Contract of every ``score``: ``MLPWeights`` views (gate/up ``[width, hidden]``,
down ``[hidden, width]``) in, a finite float32 ``Tensor[width]`` out, higher
meaning the model needs the neuron more. Weights are read in float32 whatever
the model's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from ..core.contract.hookspecs import hookimpl
from ..core.contract.plugin import Plugin
from ..core.contract.protocols import MLPWeights

if TYPE_CHECKING:  # torch is imported when a metric runs, not when it is registered
    import torch


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float()


class MaxAbsWeight(Plugin):
    """The default: max|gate row i| + max|up row i| (the strongest input weight of the neuron)."""

    name = "max_abs_weight"
    description = "max |gate row| + max |up row| per neuron (weight-only; the library default)"
    needs_activations: ClassVar[bool] = False

    def score(self, weights: MLPWeights, stats: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        return _f32(weights.gate).abs().amax(dim=1) + _f32(weights.up).abs().amax(dim=1)


class PeakToPeak(Plugin):
    """Peak-to-peak magnitude: (max + |min|) of the gate row plus the same of the up row."""

    name = "peak_to_peak"
    description = "peak-to-peak magnitude: (max + |min|) of gate row + (max + |min|) of up row"
    needs_activations: ClassVar[bool] = False

    def score(self, weights: MLPWeights, stats: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        import torch

        total = torch.zeros(weights.gate.shape[0])
        for rows in (_f32(weights.gate), _f32(weights.up)):
            total = total + rows.amax(dim=1) + rows.amin(dim=1).abs()
        return total


class Variance(Plugin):
    """Population variance of the gate row plus that of the up row (spread of the input weights)."""

    name = "variance"
    description = "variance of the gate row + variance of the up row (population variance)"
    needs_activations: ClassVar[bool] = False

    def score(self, weights: MLPWeights, stats: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        return (_f32(weights.gate).var(dim=1, unbiased=False)
                + _f32(weights.up).var(dim=1, unbiased=False))


class L1Product(Plugin):
    """|gate row|_1 * |up row|_1 * |down column|_1: a bound on how much the neuron can move the output."""

    name = "l1_product"
    description = "L1 norm of gate row x L1 norm of up row x L1 norm of down column"
    needs_activations: ClassVar[bool] = False

    def score(self, weights: MLPWeights, stats: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        return (_f32(weights.gate).abs().sum(dim=1) * _f32(weights.up).abs().sum(dim=1)
                * _f32(weights.down).abs().sum(dim=0))


class L2Norm(Plugin):
    """L2 norm of all the neuron's weights: sqrt(|gate row|^2 + |up row|^2 + |down column|^2)."""

    name = "l2"
    description = "L2 norm of the neuron's gate row, up row and down column together"
    needs_activations: ClassVar[bool] = False

    def score(self, weights: MLPWeights, stats: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        squares = (_f32(weights.gate).pow(2).sum(dim=1) + _f32(weights.up).pow(2).sum(dim=1)
                   + _f32(weights.down).pow(2).sum(dim=0))
        return squares.sqrt()


class ActivationWeight(Plugin):
    """mean |h_i| x |down column i|_2: the typical size of the neuron's write to the residual stream.

    Activation-aware, so it protects the few massive-activation neurons whose
    removal wrecks a small model even though their weights look ordinary.
    """

    name = "activation_weight"
    description = ("mean |activation| x L2 norm of down column (activation-aware; protects massive activations; "
                   "the activation method's choice in examples/fair-llama-3.2-1b.yaml)")
    needs_activations: ClassVar[bool] = True

    def score(self, weights: MLPWeights, stats: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        if stats is None or "mean_abs" not in stats:
            raise ValueError(f"{self.name} needs stats['mean_abs'] (mean |h_i| per neuron) for layer {weights.layer}")
        return _f32(stats["mean_abs"]) * _f32(weights.down).norm(dim=0)


@hookimpl
def fairprune_register_importance_metrics(register):
    from .capability_cost import CapabilityCost

    for metric in (MaxAbsWeight(), PeakToPeak(), Variance(), L1Product(), L2Norm(), ActivationWeight(),
                   CapabilityCost()):
        register(metric)
