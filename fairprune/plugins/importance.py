"""Built-in importance metrics: how much the model needs each GLU neuron (higher = keep).

This module only registers; the metrics live in ``importance_metrics``, which
imports torch only when a metric runs, so ``fairprune plugins`` stays fast.
"""

from __future__ import annotations

from ..core.hookspecs import hookimpl


@hookimpl
def fairprune_register_importance_metrics(register):
    from . import importance_metrics as m

    for metric in (m.MaxAbsWeight(), m.PeakToPeak(), m.Variance(), m.L1Product(), m.L2Norm(),
                   m.ActivationWeight()):
        register(metric)
