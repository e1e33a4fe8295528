"""All-or-nothing edits of a model's MLPs that copy only what a plan removes.

A pruner either drops the planned neurons (gate/up rows and down columns go,
the rest of each weight is kept as is) or changes them in place (masking), and
may add or change small tensors (a down bias). So a ``Snapshot`` keeps, for each
gate/up/down weight, only the planned rows or columns, and for every other
tensor of the MLP (biases, norms) a full copy. It holds no reference that keeps
a replaced weight alive: a structural prune of a 1B-parameter model then needs
one layer's worth of extra memory, not a second copy of every MLP.

``restore()`` puts back, bit for bit: a weight whose planned slices were
removed is rebuilt from its kept part and the saved slices; a weight changed in
place gets its planned slices written back. A pruner that changes anything
else of a gate/up/down weight breaks this contract and cannot be undone
(``PluginContractError``).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..contract.errors import PluginContractError

_PLAIN = (int, float, bool, str, type(None), tuple)


@dataclass
class _Sliced:
    """A weight of which only the planned slices along ``dim`` were saved."""

    module: nn.Module
    name: str
    param: weakref.ref  # the original Parameter, reused on restore when something else keeps it alive
    shape: tuple[int, ...]
    dim: int
    indices: torch.Tensor  # Long[k], sorted
    removed: torch.Tensor  # the planned slices, copied
    requires_grad: bool


@dataclass
class _Whole:
    """A small tensor (bias, norm weight, buffer) saved whole; ``None`` when the slot was empty."""

    module: nn.Module
    name: str
    is_param: bool
    param: Any  # the original Parameter (small), kept for identity
    data: torch.Tensor | None


class Snapshot:
    """A restorable record of the MLPs a plan touches, and of the model's configs.

    ``mlps`` lists each touched MLP module with its width and the neuron indices
    the plan removes from it; ``configs`` are config objects saved whole. With
    ``only_planned`` (for pruners that change only the planned neurons) gate/up/down
    weights keep just the planned slices; otherwise every tensor is copied whole.
    Parameters keep their identity on restore when something else refers to them.
    """

    def __init__(self, mlps: Sequence[tuple[nn.Module, int, Sequence[int]]], configs: Sequence[Any], *,
                 only_planned: bool = True) -> None:
        self.only_planned = only_planned  # False: every tensor saved whole, for pruners that may change anything
        self.sliced: list[_Sliced] = []
        self.whole: list[_Whole] = []
        self.attrs: list[tuple[nn.Module, dict[str, Any]]] = []
        seen: set[int] = set()
        for mlp, width, indices in mlps:
            idx = torch.as_tensor(sorted(int(i) for i in indices), dtype=torch.long)
            for module in mlp.modules():
                if id(module) in seen:
                    continue
                seen.add(id(module))
                self._record(module, width, idx)
        self.configs = [(cfg, dict(vars(cfg))) for cfg in configs]

    def _record(self, module: nn.Module, width: int, idx: torch.Tensor) -> None:
        self.attrs.append((module, {k: v for k, v in vars(module).items()
                                    if not k.startswith("_") and isinstance(v, _PLAIN)}))
        for name, param in module._parameters.items():
            dim, rows = _neuron_axis(module, name, param, width, idx) if self.only_planned else (None, idx)
            if dim is None:
                self.whole.append(_Whole(module, name, True, param,
                                         None if param is None else param.detach().clone()))
                continue
            rows = rows.to(param.device)
            self.sliced.append(_Sliced(module, name, weakref.ref(param), tuple(param.shape), dim, rows,
                                       param.detach().index_select(dim, rows).clone(), param.requires_grad))
        for name, buf in module._buffers.items():
            self.whole.append(_Whole(module, name, False, None, None if buf is None else buf.detach().clone()))

    def restore(self) -> None:
        """Put every recorded tensor, module attribute and config back exactly as it was."""
        with torch.no_grad():
            for entry in self.sliced:
                _restore_sliced(entry)
            for entry in self.whole:
                _restore_whole(entry)
            for module, attrs in self.attrs:
                for key in [k for k, v in vars(module).items()
                            if not k.startswith("_") and isinstance(v, _PLAIN) and k not in attrs]:
                    delattr(module, key)
                for key, value in attrs.items():
                    object.__setattr__(module, key, value)
            recorded = {(id(e.module), e.name) for e in self.whole if e.is_param} | {
                (id(e.module), e.name) for e in self.sliced}
            for module, _ in self.attrs:  # parameters a pruner added (a new down bias) go again
                for name in [n for n in module._parameters if (id(module), n) not in recorded]:
                    del module._parameters[name]
        for cfg, saved in self.configs:
            vars(cfg).clear()
            vars(cfg).update(saved)


def _neuron_axis(module: nn.Module, name: str, param: Any, width: int,
                 idx: torch.Tensor) -> tuple[int | None, torch.Tensor]:
    """Which dim of a linear's tensor indexes the MLP's neurons, and the planned indices along it.

    Gate/up weights and biases have ``width`` rows (a fused gate_up ``2 * width``:
    gate rows then up rows); a down weight has ``width`` columns. Anything else,
    or a square weight that could be either, is saved whole.
    """
    if param is None or not isinstance(module, nn.Linear):
        return None, idx
    rows = module.out_features
    cols = module.in_features
    if name == "weight" and cols == width and rows != width:
        return 1, idx
    if rows == width and cols != width:
        return 0, idx
    if rows == 2 * width and cols != 2 * width:
        return 0, torch.cat([idx, idx + width])
    return None, idx


def _restore_sliced(entry: _Sliced) -> None:
    module, name = entry.module, entry.name
    current = module._parameters.get(name)
    original = entry.param()
    shape = list(entry.shape)
    if current is not None and tuple(current.shape) == entry.shape:  # untouched or changed in place
        current.data.index_copy_(entry.dim, entry.indices, entry.removed.to(current.device))
        data = current.data
    else:
        shape[entry.dim] -= entry.indices.numel()
        if current is None or list(current.shape) != shape:
            raise PluginContractError(f"the pruner left {type(module).__name__}.{name} with shape "
                                      f"{None if current is None else tuple(current.shape)}; only the planned "
                                      f"neurons may be removed, so it cannot be restored to {entry.shape}")
        keep = torch.ones(entry.shape[entry.dim], dtype=torch.bool)
        keep[entry.indices.cpu()] = False
        data = torch.empty(entry.shape, dtype=current.dtype, device=current.device)
        data.index_copy_(entry.dim, keep.nonzero().flatten().to(current.device), current.data)
        data.index_copy_(entry.dim, entry.indices.to(current.device), entry.removed.to(current.device))
    if original is not None:
        original.data = data
        module._parameters[name] = original
    else:
        module._parameters[name] = nn.Parameter(data, requires_grad=entry.requires_grad)


def _restore_whole(entry: _Whole) -> None:
    table = entry.module._parameters if entry.is_param else entry.module._buffers
    if entry.data is None:
        table[entry.name] = None
        return
    if entry.is_param:
        entry.param.data = entry.data
        table[entry.name] = entry.param
    else:
        table[entry.name] = entry.data


def mlp_slices(model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]]) -> list[tuple[Any, int, Any]]:
    """``(mlp module, width, planned indices)`` of every layer a plan touches (the decoder layer when the
    adapter names no MLP module; its non-MLP tensors are then saved whole)."""
    out = []
    for layer, indices in plan.items():
        try:
            module = adapter.site(model, layer, "mlp_out").module
        except (ValueError, AttributeError, NotImplementedError):
            module = adapter.layers(model)[layer]
        out.append((module, int(adapter.width(model, layer)), list(indices)))
    return out
