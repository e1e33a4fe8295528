"""Example third-party fairprune plugins: one bias axis, importance metric, bias metric, scorer, evaluator and
selection method.

This module is the entry point (``[project.entry-points.fairprune] example =
"fairprune_example"``). It holds only hook implementations; each hook imports
its implementation module when called, and those import torch only inside the
methods that compute, so ``fairprune plugins`` stays fast.
"""

from __future__ import annotations

from fairprune.core.contract.hookspecs import hookimpl


@hookimpl
def fairprune_register_bias_axes(register):
    from .axis import BodyTypeAxis

    register(BodyTypeAxis())


@hookimpl
def fairprune_register_importance_metrics(register):
    from .importance import ActivationWeightImportance

    register(ActivationWeightImportance())


@hookimpl
def fairprune_register_bias_metrics(register):
    from .bias_metric import GroupRangeBias

    register(GroupRangeBias())


@hookimpl
def fairprune_register_scorers(register):
    from .scorer import GeometricScorer

    register(GeometricScorer())


@hookimpl
def fairprune_register_evaluators(register):
    from .evaluator import NextTokenConsistency

    register(NextTokenConsistency())


@hookimpl
def fairprune_register_methods(register):
    from .method import RandomNeurons

    register(RandomNeurons())
