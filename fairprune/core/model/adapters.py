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

    The adapter must prune the MLP of every decoder layer (``check_supported``).
    Raises ``UnknownPluginError`` for an unknown ``name`` and ``ArchitectureError``,
    one line naming the layers and their MLP types, when no registered adapter
    matches or when some layers' MLPs (expert blocks, non-GLU MLPs) are ones
    the adapter cannot prune.
    """
    reg = default_registry(registry)
    if name is not None:
        adapter = reg.get("architectures", name)
        check_supported(model, adapter)
        return adapter
    entries = sorted(reg.items("architectures"), key=lambda e: -int(getattr(e.obj, "priority", 0)))
    for entry in entries:
        if entry.obj.matches(model):
            check_supported(model, entry.obj)
            return entry.obj
    raise ArchitectureError(f"{model_name(model)} cannot be pruned: {_closest_misfit(model, [e.obj for e in entries])}; "
                            f"{supported_text(reg)}")


def model_name(model: nn.Module) -> str:
    """``LlamaForCausalLM (llama)``: the class and, when the config has one, its ``model_type``."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    return type(model).__name__ + (f" ({kind})" if kind else "")


def supported_text(registry: Registry) -> str:
    """``registered adapters: glu (llama, ...), fused_gate_up (phi3)``, the families each adapter prunes."""
    parts = []
    for entry in registry.items("architectures"):
        families = tuple(getattr(entry.obj, "families", ()) or ())
        parts.append(entry.name + (f" ({', '.join(families)})" if families else ""))
    return "registered adapters: " + ("; ".join(parts) or "(none)")


def check_supported(model: nn.Module, adapter: Any) -> None:
    """``ArchitectureError`` (one line) unless ``adapter`` can prune the MLP of every decoder layer of ``model``.

    Asks the adapter's optional ``unsupported_layers(model) -> [(layer, MLP type)]``;
    an adapter without it is trusted. A mixture-of-experts model whose first
    layers are dense GLUs and whose others are expert blocks fails here, before
    any analysis, naming the expert layers.
    """
    find = getattr(adapter, "unsupported_layers", None)
    misfits = find(model) if find is not None else []
    if misfits:
        total = len(adapter.layers(model))
        raise ArchitectureError(
            f"{model_name(model)} cannot be pruned by the adapter {adapter.name!r}: {layer_summary(misfits)} of its "
            f"{total} decoder layers {'is' if len(misfits) == 1 else 'are'} not a GLU MLP it prunes "
            f"({adapter.description}); fairprune prunes only models whose every layer has one")


def layer_summary(misfits: list[tuple[int, str]]) -> str:
    """``layers 1-3 (Qwen3MoeSparseMoeBlock)``: runs of consecutive layers with the same MLP type."""
    runs: list[list[Any]] = []
    for index, kind in misfits:
        if runs and runs[-1][2] == kind and runs[-1][1] == index - 1:
            runs[-1][1] = index
        else:
            runs.append([index, index, kind])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b, _ in runs)
    kinds = sorted({kind for *_, kind in runs})
    return f"layer{'s' if len(misfits) > 1 else ''} {text} ({', '.join(kinds)})"


def _closest_misfit(model: nn.Module, adapters: list[Any]) -> str:
    """What the adapter that fits most layers finds wrong, or that no decoder layers were found."""
    best: list[tuple[int, str]] | None = None
    for adapter in adapters:
        find = getattr(adapter, "unsupported_layers", None)
        if find is None:
            continue
        try:
            misfits = find(model)
        except ArchitectureError:
            continue
        if best is None or len(misfits) < len(best):
            best = misfits
    if not best:
        return "no registered architecture adapter finds its decoder layers"
    return f"no registered adapter prunes its MLPs: {layer_summary(best)}"


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
