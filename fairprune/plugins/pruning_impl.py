"""Pruners: apply a validated plan ``{layer: [neuron indices]}`` to a model in place.

Each pruner first computes every new tensor for every layer and only then
writes them, so a failure while computing leaves the model untouched (the core
also snapshots and restores, for third-party pruners).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.errors import PlanError
from ..core.plugin import Plugin
from ..core.protocols import PruneResult


def _widths(model: nn.Module, adapter: Any) -> list[int]:
    return [int(adapter.width(model, i)) for i in range(len(adapter.layers(model)))]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def kept_indices(width: int, removed: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """The sorted neuron indices of a layer that are not in ``removed``."""
    keep = torch.ones(width, dtype=torch.bool)
    keep[torch.as_tensor(list(removed), dtype=torch.long)] = False
    return keep.nonzero().flatten().to(device) if device is not None else keep.nonzero().flatten()


def down_linear(model: nn.Module, adapter: Any, layer: int) -> nn.Linear:
    """The down projection of a layer: the module whose input is the neuron activation."""
    module = adapter.site(model, layer, "neuron").module
    if not isinstance(module, nn.Linear):
        raise PlanError(f"layer {layer}: the neuron site is a {type(module).__name__}, not a Linear down projection")
    return module


class StructuralPruner(Plugin):
    """Removes the neurons: gate and up rows and down columns disappear, widths shrink."""

    name = "structural"
    description = "remove neurons (gate/up rows, down columns); layers may end with different widths"
    needs_calibration: ClassVar[bool] = False

    def apply(self, model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]],
              calibration: Mapping[int, torch.Tensor] | None) -> PruneResult:
        before, params_before = _widths(model, adapter), _params(model)
        keeps = {layer: kept_indices(before[layer], removed) for layer, removed in plan.items()}
        for layer, keep in keeps.items():
            adapter.keep(model, layer, keep)
        return PruneResult(params_before, _params(model), before, _widths(model, adapter),
                           {k: list(v) for k, v in plan.items()})


class MaskPruner(Plugin):
    """Zeroes the neurons' gate and up rows and down columns; widths stay (same outputs, quick experiments)."""

    name = "mask"
    description = "zero the neurons' weights but keep widths (same outputs as structural; for quick experiments)"
    needs_calibration: ClassVar[bool] = False

    def apply(self, model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]],
              calibration: Mapping[int, torch.Tensor] | None) -> PruneResult:
        before, params = _widths(model, adapter), _params(model)
        targets = []
        for layer, removed in plan.items():
            gate, up = adapter.gate_up(model, layer)
            idx = torch.as_tensor(list(removed), dtype=torch.long, device=gate.device)
            targets.append((gate, up, adapter.down(model, layer), idx))
        with torch.no_grad():  # a zero down column alone already silences the neuron, even with MLP biases
            for gate, up, down, idx in targets:
                gate[idx] = 0
                up[idx] = 0
                down[:, idx] = 0
        return PruneResult(params, params, before, list(before), {k: list(v) for k, v in plan.items()})


class CompensatedPruner(Plugin):
    """Removes neurons and adds their mean contribution ``sum_i E[h_i] down[:, i]`` to the down bias (FLAP-style).

    The pruned model then equals the original with each removed activation
    replaced by its mean, instead of by zero. A down bias is created when the
    layer has none.
    """

    name = "compensated"
    description = "remove neurons and add their mean contribution to a down_proj bias (needs calibration)"
    needs_calibration: ClassVar[bool] = True

    def apply(self, model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]],
              calibration: Mapping[int, torch.Tensor] | None) -> PruneResult:
        if calibration is None:
            raise PlanError("the compensated pruner needs calibration {layer: Tensor[width]} of mean activations")
        before, params_before = _widths(model, adapter), _params(model)
        shifts: dict[int, torch.Tensor] = {}
        for layer, removed in plan.items():
            down = adapter.down(model, layer)
            idx = torch.as_tensor(list(removed), dtype=torch.long, device=down.device)
            mean = torch.as_tensor(calibration[layer]).to(device=down.device, dtype=torch.float64)[idx]
            shifts[layer] = down.detach().double().index_select(1, idx) @ mean
        keeps = {layer: kept_indices(before[layer], removed) for layer, removed in plan.items()}
        linears = {layer: down_linear(model, adapter, layer) for layer in plan}
        for layer, keep in keeps.items():
            adapter.keep(model, layer, keep)
            add_down_bias(linears[layer], shifts[layer])
        return PruneResult(params_before, _params(model), before, _widths(model, adapter),
                           {k: list(v) for k, v in plan.items()})


def add_down_bias(linear: nn.Linear, shift: torch.Tensor) -> None:
    """Add ``shift`` to a linear's bias, creating a zero bias first when it has none."""
    weight = linear.weight
    with torch.no_grad():
        if linear.bias is None:
            linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=weight.dtype, device=weight.device),
                                       requires_grad=weight.requires_grad)
        linear.bias.add_(shift.to(dtype=linear.bias.dtype, device=linear.bias.device))
