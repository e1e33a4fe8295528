"""Pruning plans: budgets, selection, guards, rounding, records, determinism."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fairprune.core.contract.config import Budget
from fairprune.core.contract.errors import ConfigError, PlanError
from fairprune.core.method.planning import Plan, neuron_cost, plan_pruning
from fairprune.core.model.adapters import count_parameters, resolve_adapter
from fairprune.testing import tiny_model


@pytest.fixture
def model():
    return tiny_model("llama", num_hidden_layers=3)  # width 64, hidden 32


def report_for(model, seed=0, magnitude=None):
    adapter = resolve_adapter(model)
    gen = torch.Generator().manual_seed(seed)
    widths = [adapter.width(model, i) for i in range(len(adapter.layers(model)))]
    scores = {i: torch.rand(w, generator=gen) for i, w in enumerate(widths)}
    mags = magnitude or {i: torch.ones(w) for i, w in enumerate(widths)}
    return SimpleNamespace(scores=scores, magnitude=mags, mean={i: torch.zeros(w) for i, w in enumerate(widths)},
                           settings={"site": "neuron"})


def flat_importance(model):
    adapter = resolve_adapter(model)
    return {i: torch.zeros(adapter.width(model, i)) for i in range(len(adapter.layers(model)))}


def test_neuron_budget_global_takes_the_highest_bias_scores(model):
    report = report_for(model)
    plan = plan_pruning(model, report, importance=flat_importance(model), bias_weight=1.0, scorer="linear",
                        budget=Budget(neurons=10), guard_magnitude_ratio=None)
    assert plan.n_neurons == 10
    # with flat importance and w=1, prunability is min-max(bias) per layer: the chosen ones beat the rest per layer
    for layer, chosen in plan.removed.items():
        s = report.scores[layer]
        rest = torch.ones_like(s, dtype=torch.bool)
        rest[chosen] = False
        assert (s[chosen].min() - s.min()) / (s.max() - s.min()) >= (
            (s[rest].max() - s.min()) / (s.max() - s.min())) - 1e-6 or len(chosen) == 0


def test_param_fraction_budget_counts_gate_up_down_parameters(model):
    cost = neuron_cost(model, resolve_adapter(model), 0)
    assert cost == 32 * 3
    total = count_parameters(model)
    plan = plan_pruning(model, report_for(model), importance=flat_importance(model),
                        budget=Budget(param_fraction=0.01), guard_magnitude_ratio=None)
    assert plan.n_neurons == int(0.01 * total // cost)
    assert plan.params_to_remove == plan.n_neurons * cost
    assert plan.fraction_to_remove <= 0.01


def test_layer_percent_budget_takes_that_share_of_every_selected_layer(model):
    plan = plan_pruning(model, report_for(model), importance=flat_importance(model),
                        budget=Budget(layer_percent=10), layers=[0, 2], guard_magnitude_ratio=None)
    assert {k: len(v) for k, v in plan.removed.items()} == {0: 6, 2: 6}


def test_per_layer_selection_splits_a_global_budget_by_width(model):
    plan = plan_pruning(model, report_for(model), importance=flat_importance(model), selection="per_layer",
                        budget=Budget(neurons=9), guard_magnitude_ratio=None)
    assert sorted(len(v) for v in plan.removed.values()) == [3, 3, 3]


def test_layer_filter_restricts_pruning(model):
    plan = plan_pruning(model, report_for(model), importance=flat_importance(model), layers=[1],
                        budget=Budget(neurons=5), guard_magnitude_ratio=None)
    assert list(plan.removed) == [1]


def test_min_width_is_never_crossed(model):
    plan = plan_pruning(model, report_for(model), importance=flat_importance(model), layers=[0],
                        budget=Budget(neurons=100), min_width=60, guard_magnitude_ratio=None)
    assert plan.widths_after()[0] == 60


@pytest.mark.parametrize("multiple", [8, 32])
def test_rounding_makes_pruned_widths_multiples(model, multiple):
    plan = plan_pruning(model, report_for(model), importance=flat_importance(model), budget=Budget(neurons=20),
                        round_to=multiple, guard_magnitude_ratio=None)
    for layer in plan.removed:
        assert plan.widths_after()[layer] % multiple == 0


def test_massive_activation_neurons_are_guarded(model):
    report = report_for(model)
    mags = {i: torch.ones_like(s) for i, s in report.scores.items()}
    top = {i: int(s.argmax()) for i, s in report.scores.items()}
    for i, n in top.items():
        mags[i][n] = 50.0  # the most biased neuron of every layer is a massive one
    report.magnitude = mags
    guarded = plan_pruning(model, report, importance=flat_importance(model), bias_weight=1.0,
                           budget=Budget(neurons=12), guard_magnitude_ratio=10.0)
    unguarded = plan_pruning(model, report, importance=flat_importance(model), bias_weight=1.0,
                             budget=Budget(neurons=12), guard_magnitude_ratio=None)
    assert all(top[i] not in guarded.removed.get(i, []) for i in top)
    assert any(top[i] in unguarded.removed.get(i, []) for i in top)
    assert guarded.settings["guarded_neurons"] == 3


def test_importance_protects_important_neurons(model):
    report = report_for(model)
    imp = flat_importance(model)
    top = {i: int(s.argmax()) for i, s in report.scores.items()}
    for i, n in top.items():
        imp[i][n] = 100.0
    plan = plan_pruning(model, report, importance=imp, bias_weight=0.3, budget=Budget(neurons=6),
                        guard_magnitude_ratio=None)
    assert all(top[i] not in plan.removed.get(i, []) for i in top)


def test_plans_are_deterministic_and_record_their_reasons(model, tmp_path):
    a = plan_pruning(model, report_for(model), budget=Budget(neurons=7))
    b = plan_pruning(model, report_for(model), budget=Budget(neurons=7))
    assert a.to_dict() == b.to_dict()
    assert len(a.records) == 7 and {"layer", "neuron", "bias", "importance", "score"} <= set(a.records[0])
    loaded = Plan.load(a.save(tmp_path / "plan.json"))
    assert loaded.to_mapping() == a.to_mapping() and loaded.settings == a.settings


def test_bad_arguments_are_clear_errors(model):
    report = report_for(model)
    with pytest.raises(ConfigError, match="bias_weight"):
        plan_pruning(model, report, bias_weight=1.2)
    with pytest.raises(ConfigError, match="selection"):
        plan_pruning(model, report, selection="everywhere")
    with pytest.raises(PlanError, match="out of range"):
        plan_pruning(model, report, layers=[7])
    with pytest.raises(ConfigError, match="method.scorer.name: Unknown scorer 'lineer'"):
        plan_pruning(model, report, scorer="lineer")


def test_scores_of_a_different_width_are_rejected(model):
    report = report_for(model)
    report.scores[0] = torch.rand(10)
    with pytest.raises(PlanError, match="layer 0"):
        plan_pruning(model, report, importance=flat_importance(model))
