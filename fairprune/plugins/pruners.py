"""Built-in pruners: structural removal, masking, and removal with mean compensation.

The classes are light; their tensor code lives in ``pruning_impl`` and is
imported when a pruner runs, so that ``fairprune plugins`` does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..core.hookspecs import hookimpl
from ..core.plugin import Plugin
from ..core.protocols import PruneResult

if TYPE_CHECKING:
    import torch
    from torch import nn


class StructuralPruner(Plugin):
    """Removes the neurons: gate and up rows and down columns disappear, widths shrink."""

    name = "structural"
    description = "remove neurons (gate/up rows, down columns); layers may end with different widths"
    needs_calibration: ClassVar[bool] = False

    def apply(self, model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]],
              calibration: Mapping[int, torch.Tensor] | None) -> PruneResult:
        from .pruning_impl import remove_neurons

        return remove_neurons(model, adapter, plan)


class MaskPruner(Plugin):
    """Zeroes the neurons' gate and up rows and down columns; widths stay (same outputs, quick experiments)."""

    name = "mask"
    description = "zero the neurons' weights but keep widths (same outputs as structural; for quick experiments)"
    needs_calibration: ClassVar[bool] = False

    def apply(self, model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]],
              calibration: Mapping[int, torch.Tensor] | None) -> PruneResult:
        from .pruning_impl import mask_neurons

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

    def apply(self, model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]],
              calibration: Mapping[int, torch.Tensor] | None) -> PruneResult:
        from .pruning_impl import remove_with_compensation

        return remove_with_compensation(model, adapter, plan, calibration)


@hookimpl
def fairprune_register_pruners(register):
    register(StructuralPruner())
    register(MaskPruner())
    register(CompensatedPruner())
