"""Built-in pruners: structural removal, masking, and removal with mean compensation.

The tensor code lives in ``pruning_impl``, imported inside the hook so that
``fairprune plugins`` stays fast.
"""

from __future__ import annotations

from ..core.hookspecs import hookimpl


@hookimpl
def fairprune_register_pruners(register):
    from .pruning_impl import CompensatedPruner, MaskPruner, StructuralPruner

    register(StructuralPruner())
    register(MaskPruner())
    register(CompensatedPruner())
