"""Architecture adapters as the core uses them: pick one for a model; widths, parameter counts, MLP weights.

The adapters themselves are plugins (``fairprune/architectures/``); this module
is the one place the core asks "which adapter understands this model" and reads
the per-layer facts every stage needs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..contract.errors import ArchitectureError
from ..contract.protocols import MLPWeights
from ..contract.registry import default_registry

if TYPE_CHECKING:
    from torch import nn

    from ..contract.registry import Registry

logger = logging.getLogger(__name__)


def resolve_adapter(model: nn.Module, name: str | None = None, registry: Registry | None = None) -> Any:
    """The architecture adapter called ``name``, or the highest-priority one that matches ``model``.

    Raises ``UnknownPluginError`` for an unknown ``name`` and ``ArchitectureError``
    when no registered adapter matches.
    """
    reg = default_registry(registry)
    if name is not None:
        return reg.get("architectures", name)
    entries = sorted(reg.items("architectures"), key=lambda e: -int(getattr(e.obj, "priority", 0)))
    for entry in entries:
        if entry.obj.matches(model):
            return entry.obj
    known = ", ".join(e.name for e in entries) or "(none registered)"
    raise ArchitectureError(f"{type(model).__name__} has no GLU MLP that a registered architecture adapter "
                            f"understands; registered adapters: {known}")


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return int(sum(p.numel() for p in model.parameters()))


def widths(model: nn.Module, adapter: Any) -> list[int]:
    """The MLP width (number of neurons) of every decoder layer, in layer order."""
    return [int(adapter.width(model, i)) for i in range(len(adapter.layers(model)))]


def mlp_weights(model: nn.Module, adapter: Any, layer: int) -> MLPWeights:
    """One layer's gate and up ``[width, hidden]`` and down ``[hidden, width]`` weights, as views."""
    gate, up = adapter.gate_up(model, layer)
    return MLPWeights(layer=layer, gate=gate, up=up, down=adapter.down(model, layer))


def down_linear(model: nn.Module, adapter: Any, layer: int) -> Any:
    """The module whose input is the neuron activation ``h`` (down_proj) of one layer."""
    return adapter.site(model, layer, "neuron").module
