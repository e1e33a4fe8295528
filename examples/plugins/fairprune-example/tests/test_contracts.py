"""The example plugins against fairprune's contract test classes: one subclass per plugin."""

from __future__ import annotations

from fairprune.testing.contracts import (
    BiasAxisContract,
    BiasMetricContract,
    EvaluatorContract,
    ImportanceMetricContract,
    MethodContract,
    ScorerContract,
)
from fairprune_example.axis import BodyTypeAxis
from fairprune_example.bias_metric import GroupRangeBias
from fairprune_example.evaluator import NextTokenConsistency
from fairprune_example.importance import ActivationWeightImportance
from fairprune_example.method import RandomNeurons
from fairprune_example.scorer import GeometricScorer


class TestBodyTypeAxis(BiasAxisContract):
    axis = BodyTypeAxis()


class TestActivationWeightImportance(ImportanceMetricContract):
    metric = ActivationWeightImportance()


class TestActivationWeightImportanceL1(ImportanceMetricContract):
    metric = ActivationWeightImportance().configure({"norm": "l1"})


class TestGroupRangeBias(BiasMetricContract):
    metric = GroupRangeBias()


class TestGroupRangeBiasAbsolute(BiasMetricContract):
    metric = GroupRangeBias().configure({"relative": False})


class TestGeometricScorer(ScorerContract):
    scorer = GeometricScorer()


class TestNextTokenConsistency(EvaluatorContract):
    evaluator = NextTokenConsistency()


class TestRandomNeurons(MethodContract):
    method = RandomNeurons()
