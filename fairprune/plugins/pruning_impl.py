"""Tensor code of the built-in pruners: apply a validated plan ``{layer: [neuron indices]}`` in place.

Each function computes every new tensor for every layer before writing any,
so a failure while computing leaves the model untouched (the core also
snapshots and restores, for third-party pruners).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core.errors import PlanError
from ..core.protocols import PruneResult


def _widths(model: nn.Module, adapter: Any) -> list[int]:
    return [int(adapter.width(model, i)) for i in range(len(adapter.layers(model)))]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def kept_indices(width: int, removed: Sequence[int]) -> torch.Tensor:
    """The sorted neuron indices of a layer that are not in ``removed``."""
    keep = torch.ones(width, dtype=torch.bool)
    keep[torch.as_tensor(list(removed), dtype=torch.long)] = False
    return keep.nonzero().flatten()


def down_linear(model: nn.Module, adapter: Any, layer: int) -> nn.Linear:
    """The down projection of a layer: the module whose input is the neuron activation."""
    module = adapter.site(model, layer, "neuron").module
    if not isinstance(module, nn.Linear):
        raise PlanError(f"layer {layer}: the neuron site is a {type(module).__name__}, not a Linear down projection")
    return module


def remove_neurons(model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]]) -> PruneResult:
    """Structural removal through ``adapter.keep``: gate/up rows and down columns go, widths shrink."""
    before, params_before = _widths(model, adapter), _params(model)
    keeps = {layer: kept_indices(before[layer], removed) for layer, removed in plan.items()}
    for layer, keep in keeps.items():
        adapter.keep(model, layer, keep)
    return PruneResult(params_before, _params(model), before, _widths(model, adapter),
                       {k: list(v) for k, v in plan.items()})


def mask_neurons(model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]]) -> PruneResult:
    """Zero gate/up rows and down columns in place; widths and parameter counts stay."""
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


def remove_with_compensation(model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]],
                             calibration: Mapping[int, torch.Tensor] | None) -> PruneResult:
    """Structural removal plus ``sum_{i removed} E[h_i] down[:, i]`` added to each layer's down bias."""
    if calibration is None:
        raise PlanError("the compensated pruner needs calibration {layer: Tensor[width]} of mean activations")
    shifts: dict[int, torch.Tensor] = {}
    for layer, removed in plan.items():
        down = adapter.down(model, layer)
        idx = torch.as_tensor(list(removed), dtype=torch.long, device=down.device)
        mean = torch.as_tensor(calibration[layer]).to(device=down.device, dtype=torch.float64)[idx]
        shifts[layer] = down.detach().double().index_select(1, idx) @ mean
    linears = {layer: down_linear(model, adapter, layer) for layer in plan}
    result = remove_neurons(model, adapter, plan)
    for layer, shift in shifts.items():
        add_down_bias(linears[layer], shift)
    result.params_after = _params(model)
    return result


def add_down_bias(linear: nn.Linear, shift: torch.Tensor) -> None:
    """Add ``shift`` to a linear's bias, creating a zero bias first when it has none."""
    weight = linear.weight
    with torch.no_grad():
        if linear.bias is None:
            linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=weight.dtype, device=weight.device),
                                       requires_grad=weight.requires_grad)
        linear.bias.add_(shift.to(dtype=linear.bias.dtype, device=linear.bias.device))
