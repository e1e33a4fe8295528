"""Declarative GLU adapters: module paths in, slicing and config updates done once here.

A GLU neuron i is ``h_i = act(gate_i . x) * (up_i . x)``, the i-th input of
``down_proj``. Keeping a subset of neurons keeps those rows of gate and up and
those columns of down; the model then computes exactly what the original
computes with the other activations forced to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core.contract.errors import ArchitectureError
from ..core.contract.hookspecs import hookimpl
from ..core.contract.protocols import SiteTarget

if TYPE_CHECKING:  # torch is imported on first use, so registering adapters (`fairprune plugins`) stays fast
    import torch
    from torch import nn

#: where decoder layers live, tried in order
LAYER_PATHS: tuple[str, ...] = (
    "model.layers", "model.language_model.layers", "model.decoder.layers", "transformer.layers",
    "layers", "transformer.h",
)


def get_path(root: Any, path: str) -> Any:
    """Follow a dotted attribute path; None when any step is missing."""
    for part in path.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


#: rows (or, for columns, matrix rows) moved per step of an in-place compaction
_BLOCK = 256


def compact(weight: torch.Tensor, keep: torch.Tensor, dim: int) -> torch.Tensor:
    """``weight.index_select(dim, keep)`` for a 2-D weight, written into the weight's own memory.

    With ``keep`` sorted and unique, the kept slice ``j`` comes from position
    ``keep[j] >= j``, so moving blocks in order never overwrites a slice still to
    be read. The result is a contiguous view of the same storage: pruning needs no
    second copy of the weight (and a memory-mapped checkpoint's pages are reused,
    not doubled). Other layouts fall back to ``index_select`` (a new tensor).
    """
    import torch

    if weight.device.type == "meta" or weight.dim() != 2 or not weight.is_contiguous():
        return weight.index_select(dim, keep)  # nothing to move (meta) or a layout this does not handle
    n = int(keep.numel())
    if n and not (bool((keep[1:] > keep[:-1]).all()) and int(keep[0]) >= 0):
        return weight.index_select(dim, keep)
    rows, cols = weight.shape
    flat = weight.view(-1)
    with torch.no_grad():
        if dim == 0:
            for start in range(0, n, _BLOCK):
                part = keep[start:start + _BLOCK]
                flat[start * cols:(start + part.numel()) * cols] = weight.index_select(0, part).reshape(-1)
            return flat[:n * cols].view(n, cols)
        for start in range(0, rows, _BLOCK):
            stop = min(rows, start + _BLOCK)
            flat[start * n:stop * n] = weight[start:stop].index_select(1, keep).reshape(-1)
        return flat[:rows * n].view(rows, n)


def _slice_linear(linear: nn.Linear, indices: torch.Tensor, dim: int) -> None:
    """Keep ``indices`` along ``dim`` of a linear's weight (0 = outputs, 1 = inputs), in place."""
    import torch
    from torch import nn

    idx = indices.to(linear.weight.device)
    with torch.no_grad():
        linear.weight = nn.Parameter(compact(linear.weight.data, idx, dim), requires_grad=linear.weight.requires_grad)
        if dim == 0:
            if linear.bias is not None:
                linear.bias = nn.Parameter(linear.bias.index_select(0, idx),
                                           requires_grad=linear.bias.requires_grad)
            linear.out_features = int(idx.numel())
        else:
            linear.in_features = int(idx.numel())


class GLUAdapter:
    """Adapter for MLPs with ``mlp.{gate,up,down}`` linears; subclasses change the names.

    Covers Llama, Mistral, Qwen2/3, Gemma 1/2/3, OLMo 2, Granite, SmolLM and any
    model with the same module names.
    """

    name = "glu"
    description = "GLU MLPs with separate gate_proj, up_proj and down_proj linears (Llama, Mistral, Qwen, Gemma, ...)"
    #: model families (``config.model_type``) whose every layer this adapter prunes; tested on tiny models
    families: tuple[str, ...] = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text",
                                 "olmo2", "granite")
    priority = 0
    mlp_attr = "mlp"
    gate_attr = "gate_proj"
    up_attr = "up_proj"
    down_attr = "down_proj"

    # -- finding things ------------------------------------------------------------------------
    def matches(self, model: nn.Module) -> bool:
        try:
            layers = self.layers(model)
        except ArchitectureError:
            return False
        return len(layers) > 0 and self._has_mlp(layers[0])

    def _has_mlp(self, layer: nn.Module) -> bool:
        from torch import nn

        mlp = getattr(layer, self.mlp_attr, None)
        return mlp is not None and all(isinstance(getattr(mlp, a, None), nn.Linear)
                                       for a in (self.gate_attr, self.up_attr, self.down_attr))

    def unsupported_layers(self, model: nn.Module) -> list[tuple[int, str]]:
        """``[(layer, MLP class name)]`` of the decoder layers whose MLP this adapter cannot prune (expert blocks,
        non-GLU MLPs, no MLP); empty when it prunes them all. Raises ``ArchitectureError`` without layers."""
        return [(i, type(getattr(layer, self.mlp_attr, None)).__name__ if getattr(layer, self.mlp_attr, None)
                 is not None else "no MLP") for i, layer in enumerate(self.layers(model)) if not self._has_mlp(layer)]

    def layers(self, model: nn.Module) -> Sequence[nn.Module]:
        from torch import nn

        for path in LAYER_PATHS:
            layers = get_path(model, path)
            if isinstance(layers, nn.ModuleList) and len(layers) > 0:
                return layers
        raise ArchitectureError(f"{type(model).__name__}: no decoder layers found at any of {LAYER_PATHS}")

    def mlp(self, model: nn.Module, layer: int) -> nn.Module:
        return getattr(self.layers(model)[layer], self.mlp_attr)

    def width(self, model: nn.Module, layer: int) -> int:
        return getattr(self.mlp(model, layer), self.down_attr).in_features

    def gate_up(self, model: nn.Module, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        mlp = self.mlp(model, layer)
        return getattr(mlp, self.gate_attr).weight, getattr(mlp, self.up_attr).weight

    def down(self, model: nn.Module, layer: int) -> torch.Tensor:
        return getattr(self.mlp(model, layer), self.down_attr).weight

    def site(self, model: nn.Module, layer: int, role: str) -> SiteTarget:
        mlp = self.mlp(model, layer)
        if role == "neuron":
            return SiteTarget(getattr(mlp, self.down_attr), use_input=True)
        if role == "gate":
            return SiteTarget(getattr(mlp, self.gate_attr))
        if role == "up":
            return SiteTarget(getattr(mlp, self.up_attr))
        if role == "mlp_out":
            return SiteTarget(mlp)
        if role == "residual":
            return SiteTarget(self.layers(model)[layer], select=_first)
        raise ValueError(f"unknown site role {role!r}; roles are neuron, gate, up, mlp_out, residual")

    # -- cutting ---------------------------------------------------------------------------------
    def keep(self, model: nn.Module, layer: int, indices: torch.Tensor) -> None:
        mlp = self.mlp(model, layer)
        _slice_linear(getattr(mlp, self.gate_attr), indices, 0)
        _slice_linear(getattr(mlp, self.up_attr), indices, 0)
        _slice_linear(getattr(mlp, self.down_attr), indices, 1)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = int(indices.numel())

    def set_widths(self, model: nn.Module, widths: Sequence[int]) -> None:
        """Record widths: uniform widths set ``intermediate_size`` (plain HF reload works);
        non-uniform ones also set ``fairprune_intermediate_sizes``."""
        config = model.config
        widths = [int(w) for w in widths]
        text_config = getattr(config, "text_config", None) or config
        for cfg in {id(config): config, id(text_config): text_config}.values():
            cfg.intermediate_size = widths[0] if len(set(widths)) == 1 else max(widths)
            cfg.fairprune_intermediate_sizes = widths


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@hookimpl
def fairprune_register_architectures(register):
    register(GLUAdapter())
