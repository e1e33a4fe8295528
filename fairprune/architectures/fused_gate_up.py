"""The adapter for Phi-3 style MLPs whose one ``gate_up_proj`` stacks the gate rows, then the up rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.contract.hookspecs import hookimpl
from ..core.contract.protocols import SiteTarget
from .glu import GLUAdapter, _slice_linear

if TYPE_CHECKING:
    import torch
    from torch import nn


class FusedGateUpAdapter(GLUAdapter):
    """Adapter for Phi-3 style MLPs whose ``gate_up_proj`` stacks gate rows then up rows."""

    name = "fused_gate_up"
    description = "GLU MLPs with one fused gate_up_proj (gate rows then up rows) and down_proj (Phi-3)"
    families: tuple[str, ...] = ("phi3",)
    priority = 10
    fused_attr = "gate_up_proj"

    def _has_mlp(self, layer: nn.Module) -> bool:
        from torch import nn

        mlp = getattr(layer, self.mlp_attr, None)
        return mlp is not None and all(isinstance(getattr(mlp, a, None), nn.Linear)
                                       for a in (self.fused_attr, self.down_attr))

    def gate_up(self, model: nn.Module, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        weight = getattr(self.mlp(model, layer), self.fused_attr).weight
        width = weight.shape[0] // 2
        return weight[:width], weight[width:]

    def site(self, model: nn.Module, layer: int, role: str) -> SiteTarget:
        if role in ("gate", "up"):
            fused = getattr(self.mlp(model, layer), self.fused_attr)
            return SiteTarget(fused, select=_first_half if role == "gate" else _second_half)
        return super().site(model, layer, role)

    def keep(self, model: nn.Module, layer: int, indices: torch.Tensor) -> None:
        import torch

        mlp = self.mlp(model, layer)
        width = self.width(model, layer)
        idx = indices.to(torch.long)
        _slice_linear(getattr(mlp, self.fused_attr), torch.cat([idx, idx + width]), 0)
        _slice_linear(getattr(mlp, self.down_attr), idx, 1)


def _first_half(output: torch.Tensor) -> torch.Tensor:
    return output[..., : output.shape[-1] // 2]


def _second_half(output: torch.Tensor) -> torch.Tensor:
    return output[..., output.shape[-1] // 2:]


@hookimpl
def fairprune_register_architectures(register):
    register(FusedGateUpAdapter())
