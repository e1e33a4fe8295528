"""The plugin contract of the evidence evaluators (attribute recall, random control, stereotype preference)."""

from __future__ import annotations

import dataclasses
import math

import fairprune as fp
from fairprune.plugins.evaluators.attribute_recall import AttributeRecallEvaluator
from fairprune.plugins.evaluators.random_control import RandomControlEvaluator
from fairprune.plugins.evaluators.stereotype_preference import StereotypePreferenceEvaluator
from fairprune.testing.contracts import EvaluatorContract


class _Builtin(EvaluatorContract):
    def test_registers_without_clashing_with_builtins(self) -> None:  # a built-in: registered by fairprune
        assert isinstance(fp.get_registry().get("evaluators", self.plugin.name), type(self.plugin))


class TestAttributeRecallContract(_Builtin):
    evaluator = AttributeRecallEvaluator().configure({"axes": ["race"], "limit": 12, "n_boot": 50})


class TestStereotypePreferenceContract(_Builtin):
    evaluator = StereotypePreferenceEvaluator().configure({"n_boot": 50})


class TestRandomControlContract(_Builtin):
    evaluator = RandomControlEvaluator().configure({"draws": 2, "n_boot": 50})

    def make_setting(self):
        """The default setting, with the pruned quarter of each layer as the plan and no guard."""
        base, pruned, context = super().make_setting()
        return base, pruned, dataclasses.replace(context, plan=context.prune_result.removed, guarded=None)

    def test_the_draws_were_measured(self, result) -> None:
        assert result.metrics["n_draws"] == 2.0
        assert not math.isnan(result.metrics["between_vs_control_pts"])
