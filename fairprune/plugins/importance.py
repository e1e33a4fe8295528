"""Built-in importance metrics: how much the model needs each GLU neuron (higher = keep).

This module only registers; the tensor code lives in ``importance_metrics`` and
is imported inside the hook so that ``fairprune plugins`` does not import torch.
"""

from __future__ import annotations

from ..core.hookspecs import hookimpl


@hookimpl
def fairprune_register_importance_metrics(register):
    from . import importance_metrics as m

    for metric in (m.MaxAbsWeight(), m.PeakToPeak(), m.Variance(), m.L1Product(), m.L2Norm(),
                   m.ActivationWeight()):
        register(metric)
