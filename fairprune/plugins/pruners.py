"""Built-in pruners: structural removal, masking, and removal with mean compensation.

Each pruner computes every new tensor for every layer before writing any, so a
failure while computing leaves the model untouched. Each changes only the
planned neurons' gate/up rows and down columns (and a down bias), and says so
(``changes_only_planned``), so the core's snapshot copies just those slices. torch is imported inside the functions, so
``fairprune plugins`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..core.contract.errors import PlanError
from ..core.contract.hookspecs import hookimpl
from ..core.contract.plugin import Plugin
from ..core.contract.protocols import PruneResult
from ..core.model.adapters import count_parameters, down_linear, widths

if TYPE_CHECKING:
    import torch
    from torch import nn

def kept_indices(width: int, removed: Sequence[int]) -> torch.Tensor:
    """The sorted neuron indices of a layer that are not in ``removed``."""
    import torch

    keep = torch.ones(width, dtype=torch.bool)
    keep[torch.as_tensor(list(removed), dtype=torch.long)] = False
    return keep.nonzero().flatten()


def remove_neurons(model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]]) -> PruneResult:
    """Structural removal through ``adapter.keep``: gate/up rows and down columns go, widths shrink."""
    before, params_before = widths(model, adapter), count_parameters(model)
    keeps = {layer: kept_indices(before[layer], removed) for layer, removed in plan.items()}
    for layer, keep in keeps.items():
        adapter.keep(model, layer, keep)
    return PruneResult(params_before, count_parameters(model), before, widths(model, adapter),
                       {k: list(v) for k, v in plan.items()})


def mask_neurons(model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]]) -> PruneResult:
    """Zero gate/up rows and down columns in place; widths and parameter counts stay."""
    import torch

    before, params = widths(model, adapter), count_parameters(model)
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
    import torch

    if calibration is None:
        raise PlanError("the compensated pruner needs calibration {layer: Tensor[width]} of mean activations")
    shifts: dict[int, torch.Tensor] = {}
    for layer, removed in plan.items():
        down = adapter.down(model, layer)
        idx = torch.as_tensor(list(removed), dtype=torch.long, device=down.device)
        mean = torch.as_tensor(calibration[layer]).to(device=down.device, dtype=torch.float64)[idx]
        shifts[layer] = down.detach().index_select(1, idx).double() @ mean  # select first: a small copy
    linears = {layer: down_linear(model, adapter, layer) for layer in plan}
    result = remove_neurons(model, adapter, plan)
    for layer, shift in shifts.items():
        add_down_bias(linears[layer], shift)
    result.params_after = count_parameters(model)
    return result


def add_down_bias(linear: nn.Linear, shift: torch.Tensor) -> None:
    """Add ``shift`` to a linear's bias, creating a zero bias first when it has none."""
    import torch
    from torch import nn

    weight = linear.weight
    with torch.no_grad():
        if linear.bias is None:
            linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=weight.dtype, device=weight.device),
                                       requires_grad=weight.requires_grad)
        linear.bias.add_(shift.to(dtype=linear.bias.dtype, device=linear.bias.device))


class StructuralPruner(Plugin):
    """Removes the neurons: gate and up rows and down columns disappear, widths shrink."""

    name = "structural"
    description = "remove neurons (gate/up rows, down columns); layers may end with different widths"
    needs_calibration: ClassVar[bool] = False
    changes_only_planned: ClassVar[bool] = True  # the core then snapshots just the planned slices

    def apply(self, model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]],
              calibration: Mapping[int, torch.Tensor] | None) -> PruneResult:
        return remove_neurons(model, adapter, plan)


class MaskPruner(Plugin):
    """Zeroes the neurons' gate and up rows and down columns; widths stay (same outputs, quick experiments)."""

    name = "mask"
    description = "zero the neurons' weights but keep widths (same outputs as structural; for quick experiments)"
    needs_calibration: ClassVar[bool] = False
    changes_only_planned: ClassVar[bool] = True  # the core then snapshots just the planned slices

    def apply(self, model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]],
              calibration: Mapping[int, torch.Tensor] | None) -> PruneResult:
        return mask_neurons(model, adapter, plan)


class CompensatedPruner(Plugin):
    """Removes neurons and adds their mean contribution ``sum_i E[h_i] down[:, i]`` to the down bias (FLAP-style).

    The pruned model then equals the original with each removed activation
    replaced by its calibration mean instead of by zero. A down bias is created
    when the layer has none.
    """

    name = "compensated"
    description = "remove neurons and add their mean contribution to a down_proj bias (needs calibration)"
    needs_calibration: ClassVar[bool] = True
    changes_only_planned: ClassVar[bool] = True

    def apply(self, model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]],
              calibration: Mapping[int, torch.Tensor] | None) -> PruneResult:
        return remove_with_compensation(model, adapter, plan, calibration)


@hookimpl
def fairprune_register_pruners(register):
    register(StructuralPruner())
    register(MaskPruner())
    register(CompensatedPruner())
