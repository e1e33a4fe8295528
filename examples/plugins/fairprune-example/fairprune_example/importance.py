"""An activation-aware importance metric: mean |activation| x output weight norm (Wanda-style, per neuron).

A neuron that fires weakly but writes through a large ``down_proj`` column, or
fires strongly through a small one, matters less than one that does both; the
product estimates how much the neuron adds to the residual stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal


from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.plugin import Plugin, StrictParams

if TYPE_CHECKING:  # torch is imported only when a score is computed
    import torch

    from fairprune.core.contract.protocols import MLPWeights


class ActivationWeightImportance(Plugin):
    """Importance of neuron i = mean|h_i| over calibration prompts x norm of down_proj column i."""

    name = "act_times_weight"
    description = "mean |activation| x down_proj column norm, from calibration prompts (Wanda-style, example plugin)"
    needs_activations = True

    class Params(StrictParams):
        norm: Literal["l2", "l1", "max"] = "l2"

    def score(self, weights: "MLPWeights", stats: "Mapping[str, torch.Tensor] | None") -> "torch.Tensor":
        if not stats or "mean_abs" not in stats:
            raise ConfigError(f"importance metric {self.name!r} needs activation statistics ('mean_abs'); "
                              "analyze bias on the 'neuron' site first")
        down = weights.down.detach().float()  # [hidden, width]
        if self.params.norm == "l2":
            column = down.norm(dim=0)
        elif self.params.norm == "l1":
            column = down.abs().sum(dim=0)
        else:
            column = down.abs().amax(dim=0)
        magnitude = stats["mean_abs"].detach().float().to(column.device)
        if magnitude.shape != column.shape:
            raise ConfigError(f"importance metric {self.name!r}: activation statistics of layer {weights.layer} "
                              f"have shape {tuple(magnitude.shape)}, the layer has width {column.numel()}")
        return magnitude * column
