"""Signed attribution: first-order estimates against real changes, sign filtering, early stopping, objectives."""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import pytest
import torch

from fairprune.core.contract.config import AttributionParams, Budget
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.protocols import ObjectiveInputs, PromptGroup
from fairprune.core.contract.registry import Registry
from fairprune.core.data.groups import SEP
from fairprune.core.method import attribution as attr
from fairprune.core.method import selection as sel
from fairprune.plugins.capability_cost import CapabilityCost
from fairprune.plugins.objectives import (ActivationDistance, ContinuationGap, GroupMeanJS, JSAboveFloor, NextTokenJS,
                                          pairwise_js)
from fairprune.testing.contracts import BiasObjectiveContract
from fairprune.testing.models import tiny_model
from fairprune.testing.tokenizer import tiny_tokenizer

TEMPLATES = ("the {} man walked into the room and", "the {} woman has a new job at the",
             "the {} doctor said that the", "a {} student went to school because", "the {} family lives in the")


class BuiltinObjective(BiasObjectiveContract):
    def test_registers_without_clashing_with_builtins(self) -> None:
        # a built-in is already registered: check it is, under its name, instead of registering it twice
        assert type(Registry(load_entrypoints=False).get("bias_objectives", self.objective.name)) is type(self.objective)


class TestNextTokenJS(BuiltinObjective):
    objective = NextTokenJS()


class TestContinuationGapTopK(BuiltinObjective):
    objective = ContinuationGap()


class TestContinuationGapWords(BuiltinObjective):
    objective = ContinuationGap().configure({"continuations": [" was", " is", " had"]})


class TestActivationDistance(BuiltinObjective):
    objective = ActivationDistance()


class TestJSAboveFloor(BuiltinObjective):
    objective = JSAboveFloor()


class TestJSAboveHalfTheFloor(BuiltinObjective):
    objective = JSAboveFloor().configure({"floor_weight": 0.5})


class TestGroupMeanJS(BuiltinObjective):
    objective = GroupMeanJS()


def test_group_mean_js_compares_each_groups_mixture_over_its_forms() -> None:
    torch.manual_seed(2)
    p, q, r = torch.log_softmax(torch.randn(3, 30), -1)
    labels = ("Black", "white", "Black", "white")
    # each group's two forms read p and q: every member pair differs, but the groups' mixtures are the same
    swapped = ObjectiveInputs([4], torch.stack([p, q, q, p]), None, [labels])
    assert float(GroupMeanJS().value(swapped)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(NextTokenJS().value(swapped)[0]) > 0.01
    # one form per group: the plain JS between the two members
    one = ObjectiveInputs([2], torch.stack([p, r]), None, [("Black", "white")])
    assert float(GroupMeanJS().value(one)[0]) == pytest.approx(float(pairwise_js(torch.stack([p, r]))), rel=1e-5)
    mixture = torch.logsumexp(torch.stack([p, q]), 0) - math.log(2)
    two = ObjectiveInputs([3], torch.stack([p, q, r]), None, [("Black", "Black", "white")])
    assert float(GroupMeanJS().value(two)[0]) == pytest.approx(float(pairwise_js(torch.stack([mixture, r]))),
                                                                rel=1e-5)
    with pytest.raises(ConfigError, match="labels"):
        GroupMeanJS().value(ObjectiveInputs([2], torch.stack([p, r])))
    # one attribute group only: 0, also where a log-probability is -inf (0 * -inf would be NaN)
    lonely = torch.stack([p, q]).clone()
    lonely[0, 0] = -math.inf
    alone = GroupMeanJS().value(ObjectiveInputs([2], lonely, None, [("Black", "Black")]))
    assert float(alone[0]) == 0.0


def test_js_above_floor_is_between_group_js_minus_the_word_swap_js() -> None:
    torch.manual_seed(1)
    lp = torch.log_softmax(torch.randn(4, 30), -1)
    labels = ("Black", "white", "Black", "white")  # members 0/2 and 1/3 are two forms of one group
    pair = {(i, j): float(pairwise_js(lp[[i, j]])) for i in range(4) for j in range(i + 1, 4)}
    between = mean([pair[k] for k in ((0, 1), (0, 3), (1, 2), (2, 3))])
    within = mean([pair[(0, 2)], pair[(1, 3)]])
    inputs = ObjectiveInputs([4], lp, None, [labels])
    assert float(JSAboveFloor().value(inputs)[0]) == pytest.approx(between - within, rel=1e-5)
    half = JSAboveFloor().configure({"floor_weight": 0.0}).value(inputs)
    assert float(half[0]) == pytest.approx(between, rel=1e-5)
    with pytest.raises(ConfigError, match="labels"):
        JSAboveFloor().value(ObjectiveInputs([4], lp))


def test_labelled_batches_merge_each_templates_forms_and_name_their_groups(setup) -> None:
    model, tok, adapter, _ = setup
    forms = [PromptGroup("race", str(i), attrs, tuple(t.format(a) for a in attrs))
             for i, t in enumerate(TEMPLATES) for attrs in (("black", "white"), ("old", "young"))]
    names = {f"race{SEP}{form}": name for form, name in
             (("black", "Black"), ("old", "Black"), ("white", "white"), ("young", "white"))}
    batches = attr.group_batches(model, tok, forms, 8, labels=names)
    assert [g.template_id for g in batches.groups] == [str(i) for i in range(len(TEMPLATES))]
    assert all(g.attributes == ("black", "white", "old", "young") for g in batches.groups)
    assert batches.labels == [("Black", "white", "Black", "white")] * len(TEMPLATES)
    seen = [(groups.sizes, groups.labels) for groups, _ in batches]
    assert sum(len(sizes) for sizes, _ in seen) == len(TEMPLATES) and all(labels for _, labels in seen)
    # an objective that uses labels refuses batches made without them
    plain = attr.group_batches(model, tok, forms, 8)
    with pytest.raises(ConfigError, match="labels"):
        attr.objective_values(model, plain, JSAboveFloor(), adapter)
    # and attribution on the merged groups matches finite differences like any objective
    result = attr.attribute_objective(model, batches, JSAboveFloor(), adapter)
    assert mean(attr.objective_values(model, batches, JSAboveFloor(), adapter)) == pytest.approx(result.objective)
    delta = result.sums.delta(None)
    neuron = int(torch.topk(delta[1].abs(), 1).indices)
    moved = []
    for sign in (1, -1):
        with nudged(model, adapter, 1, neuron, sign * 1e-2, 0.0):
            moved.append(mean(attr.objective_values(model, batches, JSAboveFloor(), adapter)))
    assert (moved[0] - moved[1]) / 2e-2 == pytest.approx(float(delta[1][neuron]), rel=1e-2)


class _FirstMember:
    """A broken objective: the first member's entropy, so not zero for identical members nor symmetric."""

    name, description, uses = "first_member", "broken on purpose", ("logprobs",)

    def bind(self, tokenizer):
        return self

    def value(self, inputs):
        starts = [sum(inputs.sizes[:g]) for g in range(len(inputs.sizes))]
        lp = inputs.logprobs[starts]
        return -(lp.exp() * lp).sum(-1)


@pytest.mark.parametrize("test", ["test_zero_when_members_are_identical", "test_invariant_to_member_order"])
def test_objective_contract_rejects_a_broken_objective(test) -> None:
    case = type("Case", (BiasObjectiveContract,), {"objective": _FirstMember()})()
    with pytest.raises(AssertionError):
        getattr(case, test)()


def test_unknown_objective_lists_the_known_ones() -> None:
    from fairprune.core.contract.errors import UnknownPluginError

    with pytest.raises(UnknownPluginError, match="next_token_js"):
        Registry(load_entrypoints=False).get("bias_objectives", "next_token_jsd")


def groups(n_members: int = 3) -> list[PromptGroup]:
    attrs = ("black", "white", "asian")[:n_members]
    return [PromptGroup("race", str(i), attrs, tuple(t.format(a) for a in attrs)) for i, t in enumerate(TEMPLATES)]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = tiny_model("llama").double()
    tok = tiny_tokenizer()
    adapter = attr.resolve_adapter(model)
    return model, tok, adapter, attr.group_batches(model, tok, groups(), 6)


@contextmanager
def nudged(model, adapter, layer: int, neuron: int, eps: float, fill: float):
    """h_i -> h_i + eps·(fill − h_i) for one neuron: the removal, scaled down to first order."""
    def pre_hook(module, args):
        h = args[0].clone()
        h[..., neuron] = h[..., neuron] + eps * (fill - h[..., neuron])
        return (h, *args[1:])

    handle = adapter.site(model, layer, "neuron").module.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


def mean(values) -> float:
    return float(sum(values) / len(values))


@pytest.mark.parametrize("objective", [NextTokenJS(), ContinuationGap().configure({"continuations": [" was", " is"]}),
                                       ActivationDistance()], ids=lambda o: o.name)
@pytest.mark.parametrize("compensated", [False, True], ids=["zero", "mean"])
def test_attribution_matches_finite_difference(setup, objective, compensated) -> None:
    model, tok, adapter, batches = setup
    bound = objective.bind(tok)
    result = attr.attribute_objective(model, batches, bound, adapter)
    fill = result.sums.mean() if compensated else None
    delta = result.sums.delta(fill)
    base = mean(attr.objective_values(model, batches, bound, adapter))
    assert base == pytest.approx(result.objective, rel=1e-6)
    eps = 1e-2  # central differences: the model's own float32 norms put noise near 1e-9 on the objective
    for layer in (0, 1):
        for neuron in torch.topk(delta[layer].abs(), 2).indices.tolist():
            r = float(fill[layer][neuron]) if fill is not None else 0.0
            moved = []
            for sign in (1, -1):
                with nudged(model, adapter, layer, neuron, sign * eps, r):
                    moved.append(mean(attr.objective_values(model, batches, bound, adapter)))
            assert (moved[0] - moved[1]) / (2 * eps) == pytest.approx(float(delta[layer][neuron]), rel=1e-2)


def test_attribution_tracks_the_real_change_when_a_neuron_is_zeroed(setup) -> None:
    # zeroing is not a small change, so the first-order estimate is not exact; across all neurons it must
    # still follow the measured change closely and get the sign of the large changes right
    model, tok, adapter, batches = setup
    bound = NextTokenJS()
    result = attr.attribute_objective(model, batches, bound, adapter)
    delta = result.sums.delta(None)
    predicted, real = [], []
    for layer in (0, 1):
        for neuron in range(delta[layer].numel()):
            ablated = attr.objective_values(model, batches, bound, adapter, removed={layer: [neuron]})
            predicted.append(float(delta[layer][neuron]))
            real.append(mean(ablated) - result.objective)
    predicted, real = torch.tensor(predicted), torch.tensor(real)
    assert float(torch.corrcoef(torch.stack([predicted, real]))[0, 1]) > 0.7
    large = real.abs() > real.abs().quantile(0.75)
    assert float((predicted[large].sign() == real[large].sign()).float().mean()) >= 0.8


def test_ablation_equals_pruning_for_both_pruners(setup) -> None:
    model, tok, adapter, batches = setup
    registry = Registry(load_entrypoints=False)
    bound = NextTokenJS()
    calibration = attr.attribute_objective(model, batches, bound, adapter).sums.mean()
    plan = {0: [1, 5, 9], 1: [2, 30]}
    for pruner, fill in (("structural", None), ("compensated", calibration)):
        ablated = attr.objective_values(model, batches, bound, adapter, removed=plan, fill=fill)
        pruned = copy.deepcopy(model)
        from fairprune.core.method.surgery import prune

        prune(pruned, plan, pruner=pruner, calibration=calibration, registry=registry)
        assert attr.objective_values(pruned, batches, bound, adapter) == pytest.approx(ablated, rel=1e-9)


def test_parameters_get_no_gradients(setup) -> None:
    model, tok, adapter, batches = setup
    flags = [p.requires_grad for p in model.parameters()]
    attr.attribute_objective(model, batches, NextTokenJS(), adapter)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags


def test_capability_cost_is_nonnegative_and_sums_chunks_as_absolute_values(setup) -> None:
    model, tok, adapter, _ = setup
    text = CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 96}).chunks(tok)
    cap = attr.capability_attribution(model, text, adapter)
    assert len(text.chunks) == 6 and cap.grad[0].shape == (6, 64)
    cost = cap.cost(None)
    signed = {layer: (-cap.grad_act[layer]).mean(0) for layer in cap.grad}
    for layer in cost:
        assert bool((cost[layer] >= signed[layer].abs() - 1e-12).all())
    assert cap.loss == pytest.approx(attr.text_loss(model, text, adapter), rel=1e-9)


def test_windowed_capability_cost_splits_each_chunk_and_bounds_the_chunk_cost(setup) -> None:
    model, tok, adapter, _ = setup
    params = {"chunk_tokens": 16, "max_tokens": 96}
    whole = attr.capability_attribution(model, CapabilityCost().configure(params).chunks(tok), adapter)
    text = CapabilityCost().configure({**params, "window_tokens": 5}).chunks(tok)
    windowed = attr.capability_attribution(model, text, adapter)
    per_chunk = -(-len(text.chunks[0]) // 5)  # windows per chunk, the last one shorter
    assert windowed.grad[0].shape == (6 * per_chunk, 64)
    for layer in whole.grad:
        # the windows of a chunk add up to the chunk, so |.| per window bounds |.| per chunk from above
        summed = windowed.grad_act[layer].reshape(6, per_chunk, 64).sum(1)
        assert torch.allclose(summed, whole.grad_act[layer], rtol=1e-5, atol=1e-8)
        assert bool((windowed.cost(None)[layer] >= whole.cost(None)[layer] * (1 - 1e-5) - 1e-8).all())
        assert bool((windowed.cost(None)[layer] > whole.cost(None)[layer] + 1e-9).any())


def test_missing_calibration_text_is_a_clear_error(setup, tmp_path) -> None:
    _, tok, _, _ = setup
    with pytest.raises(ConfigError, match="calibration text not found"):
        CapabilityCost().configure({"text": str(tmp_path / "none.txt")}).chunks(tok)


def test_multi_token_continuation_is_refused(setup) -> None:
    _, tok, _, _ = setup
    with pytest.raises(ConfigError, match="single-token"):
        ContinuationGap().configure({"continuations": [" was here"]}).bind(tok)


# -- selection -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_folds", [1, 3])
def test_ranking_keeps_out_every_neuron_whose_removal_raises_the_objective(n_folds) -> None:
    gen = torch.Generator().manual_seed(0)
    delta = {0: torch.randn(n_folds, 50, generator=gen), 1: torch.randn(n_folds, 50, generator=gen)}
    cost = {0: torch.rand(50, generator=gen), 1: torch.rand(50, generator=gen)}
    guarded = sel._guarded(cost, 0.0)
    best = int(torch.argmin(delta[0].max(0).values))
    for ranking in ("ratio", "reduction"):
        entries = sel._ranked(delta, cost, guarded, {0: [best]}, ranking, [0, 1])
        chosen = {(layer, n) for _, layer, n in entries}
        # a candidate lowers the objective in every fold
        expected = {(layer, n) for layer in (0, 1) for n in range(50) if bool((delta[layer][:, n] < 0).all())}
        assert chosen == expected - {(0, best)} and chosen
        if ranking == "reduction":  # the gain is the smallest fold's reduction
            assert [e[0] for e in entries] == sorted((float(-delta[layer][:, n].max()) for _, layer, n in entries),
                                                     reverse=True)


def test_template_folds_keep_each_template_together() -> None:
    gs = groups() + [PromptGroup("race", "0", ("asian", "white"), ("the asian man walked into the room and",
                                                                    "the white man walked into the room and"))]
    folds = attr.template_folds(gs, 2)
    assert [len(f) for f in folds] == [4, 2] and sum(map(len, folds)) == len(gs)
    assert [{g.template_id for g in f} for f in folds] == [{"0", "2", "4"}, {"1", "3"}]
    with pytest.raises(ConfigError, match="folds is 9 but the analysis groups come from 5 template"):
        attr.template_folds(gs, 9)


def test_guard_protects_the_costliest_neurons_of_each_layer() -> None:
    cost = {0: torch.arange(10.0), 1: torch.arange(10.0).flip(0)}
    guarded = sel._guarded(cost, 0.3)
    assert guarded[0].nonzero().flatten().tolist() == [7, 8, 9]
    assert guarded[1].nonzero().flatten().tolist() == [0, 1, 2]


def test_magnitude_guard_also_protects_the_largest_writes_to_the_residual_stream(setup) -> None:
    model, _, adapter, _ = setup
    cost = {layer: torch.arange(64.0) for layer in (0, 1)}  # the cost guard alone protects neurons 48..63
    magnitude = {layer: torch.ones(64) for layer in (0, 1)}
    magnitude[1][5] = 1e6  # a massive activation that the cost does not see
    settings = AttributionParams(guard_fraction=0.25, magnitude_guard=0.02)
    guarded = sel._guard(model, adapter, cost, magnitude, settings)
    assert bool(guarded[1][5]) and bool(guarded[0][48:].all()) and bool(guarded[1][48:].all())
    assert int(guarded[0].sum()) >= 16 and int(guarded[1].sum()) >= 17
    without = sel._guard(model, adapter, cost, magnitude, AttributionParams(guard_fraction=0.25))
    assert not bool(without[1][5]) and int(without[1].sum()) == 16


def run_selection(setup, **kw):
    model, tok, adapter, _ = setup
    settings = AttributionParams(**{"guard_fraction": 0.0, "max_perplexity_increase_pct": None, **kw})
    return sel.select_by_attribution(model, tok, groups(), objective=NextTokenJS(),
                                     capability=CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 64}),
                                     budget=Budget(neurons=12), settings=settings, batch_size=6, adapter=adapter,
                                     progress=False)


def test_selection_only_removes_neurons_estimated_to_lower_the_objective(setup) -> None:
    selection = run_selection(setup, rounds=1)
    plan = selection.plan
    assert plan.n_neurons > 0 and all(r["attribution"] < 0 for r in plan.records)
    verification = plan.settings["verification"]
    assert verification["objective_after"] < verification["objective_before"]
    assert {(r["layer"], r["neuron"]) for r in plan.records} == {(k, n) for k, v in plan.removed.items() for n in v}


def test_folded_selection_removes_only_neurons_that_lower_the_objective_in_every_fold(setup) -> None:
    model, tok, adapter, _ = setup
    plan = run_selection(setup, rounds=1, folds=2).plan
    assert plan.settings["folds"] == 2 and plan.n_neurons > 0
    per_fold = [attr.attribute_objective(model, attr.group_batches(model, tok, part, 6), NextTokenJS(), adapter)
                .sums.delta(None) for part in attr.template_folds(groups(), 2)]
    for r in plan.records:
        assert all(float(d[r["layer"]][r["neuron"]]) < 0 for d in per_fold), r
    # and one fold's wish is not enough: some neuron lowers fold 0 alone, and none such is removed
    alone = {(layer, n) for layer in per_fold[0] for n in range(per_fold[0][layer].numel())
             if per_fold[0][layer][n] < 0 <= per_fold[1][layer][n]}
    assert alone and not alone & {(r["layer"], r["neuron"]) for r in plan.records}


def test_target_reduction_stops_at_a_ranked_prefix_that_reaches_it(setup) -> None:
    model, tok, adapter, batches = setup
    free = run_selection(setup, rounds=1, min_improvement_pct=0.0, ranking="reduction").plan
    reduction = -free.settings["verification"]["measured_change_pct"]
    assert reduction > 0
    plan = run_selection(setup, rounds=1, min_improvement_pct=0.0, ranking="reduction",
                         target_reduction_pct=reduction / 2).plan
    v = plan.settings["verification"]
    assert plan.settings["stop_reason"].startswith("the objective fell by the target")
    assert -v["measured_change_pct"] >= reduction / 2 and 0 < plan.n_neurons < free.n_neurons
    ranked = [(r["layer"], r["neuron"]) for r in sorted(free.records, key=lambda r: r["attribution"])]
    assert {(r["layer"], r["neuron"]) for r in plan.records} == set(ranked[:plan.n_neurons])
    # the recorded objective is the real one of those neurons removed
    after = mean(attr.objective_values(model, batches, NextTokenJS(), adapter, removed=plan.removed))
    assert after == pytest.approx(v["objective_after"], rel=1e-9)


def _linear_measure(per_neuron: float, start: float, calls: list[int]):
    """A fake objective that falls by ``per_neuron`` for each neuron of the prefix; counts its calls."""
    def measure(removed):
        calls.append(1)
        return start - per_neuron * sum(len(v) for v in removed.values())
    return measure


@pytest.mark.parametrize("real_per_neuron", [1.0, 0.5])
def test_shortest_reaching_trusts_a_right_estimate_and_searches_when_it_misses(real_per_neuron) -> None:
    add = [(0, n) for n in range(40)]
    predicted = [-1.0] * 40  # the estimate: each neuron lowers the objective by 1
    calls: list[int] = []
    measure = _linear_measure(real_per_neuron, 100.0, calls)
    # the whole round measured 100 - 40 * real; the target asks for a fall of 12
    whole = 100.0 - 40 * real_per_neuron
    chosen, value = sel._shortest_reaching(add, {}, 88.0, 100.0, predicted, measure, value=whole)
    shortest = int(math.ceil(12 / real_per_neuron))
    # scaling the estimates to the round's measured change finds the prefix at once in both cases
    assert len(chosen) == shortest and value == pytest.approx(100.0 - real_per_neuron * shortest)
    assert len(calls) == 1
    # an estimate that is wrong in shape (the fall comes late in the round) falls back to bisection
    calls.clear()
    late = [-0.001] * 30 + [-1.0] * 10
    def measure_late(removed):
        calls.append(1)
        k = sum(len(v) for v in removed.values())
        return 100.0 - sum(-d for d in late[:k]) * real_per_neuron
    whole_late = measure_late({0: list(range(40))})
    calls.clear()
    chosen, value = sel._shortest_reaching(add, {}, 100.0 - 5 * real_per_neuron, 100.0, predicted, measure_late,
                                           value=whole_late)
    assert value <= 100.0 - 5 * real_per_neuron and len(chosen) == 35
    assert 1 < len(calls) <= 1 + math.ceil(math.log2(40))  # the guess, then a bisection


def test_shortest_reaching_measures_a_trusted_guess_before_the_whole_round() -> None:
    add = [(0, n) for n in range(40)]
    predicted = [-1.0] * 40
    calls: list[int] = []
    measure = _linear_measure(0.5, 100.0, calls)  # the real fall is half the estimate
    # the last round's measured/predicted ratio was right: one forward pass, the whole round never measured
    chosen, value = sel._shortest_reaching(add, {}, 88.0, 100.0, predicted, measure, scale=0.5)
    assert len(chosen) == 24 and value == 88.0 and len(calls) == 1
    # a ratio that flatters the round: the guess misses, the whole round is measured, its own ratio finds it
    calls.clear()
    chosen, value = sel._shortest_reaching(add, {}, 88.0, 100.0, predicted, measure, scale=1.0)
    assert len(chosen) == 24 and value == 88.0 and len(calls) == 3
    # a round that cannot reach the target: the whole round and its measured objective
    calls.clear()
    chosen, value = sel._shortest_reaching(add, {}, 70.0, 100.0, predicted, measure, scale=1.0)
    assert chosen == add and value == 80.0 and len(calls) == 2


def test_target_reduction_out_of_range_is_refused() -> None:
    from fairprune.core.contract.config import load_config
    from fairprune.core.contract.registry import Registry
    from fairprune.core.run.pipeline import resolve_method

    config = load_config({"model": {"source": "m"}, "method": {"name": "attribution", "target_reduction_pct": 100}})
    with pytest.raises(ConfigError, match=r"method\.target_reduction_pct: Input should be less than 100"):
        resolve_method(config, Registry(load_entrypoints=False))


def test_selection_verifies_by_real_ablation(setup) -> None:
    model, tok, adapter, batches = setup
    plan = run_selection(setup, rounds=3, min_improvement_pct=0.0).plan
    measured = mean(attr.objective_values(model, batches, NextTokenJS(), adapter, removed=plan.removed))
    assert plan.settings["verification"]["objective_after"] == pytest.approx(measured, rel=1e-9)
    assert sum(plan.records[i]["round"] >= 1 for i in range(plan.n_neurons)) == plan.n_neurons


class Scripted:
    """Stands in for the attribution passes: every neuron looks helpful, the measured objective follows a script."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def attribute(self, model, batches, objective, adapter, removed=None, fill=None, progress=False):
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        sums = attr.NeuronSums()
        for layer in range(2):
            sums.grad[layer] = torch.zeros(64)
            sums.grad_act[layer] = torch.linspace(0.1, 1.0, 64)  # delta = -h·g < 0 everywhere
            sums.act[layer] = torch.zeros(64)
            sums.abs_act[layer] = torch.zeros(64)
        return attr.ObjectiveAttribution([value] * 4, sums)

    def values_only(self, model, batches, objectives, adapter, removed=None, fill=None):
        return [[self.attribute(model, batches, objectives[0], adapter).objective] * 4 for _ in objectives]


@pytest.mark.parametrize("script,rounds_kept,reason", [
    ([1.0, 0.8, 0.85], 1, "stopped improving"),
    ([1.0, 0.8, 0.79], 2, "improved the objective by 1.00%"),
    ([1.0, 0.9, 0.8, 0.7, 0.6], 4, "budget reached"),
])
def test_early_stopping(setup, monkeypatch, script, rounds_kept, reason) -> None:
    fake = Scripted(script)
    monkeypatch.setattr(sel.attr, "attribute_objective", fake.attribute)
    monkeypatch.setattr(sel.attr, "objectives_values", fake.values_only)
    plan = run_selection(setup, rounds=4, min_improvement_pct=2.0).plan
    log = plan.settings["round_log"]
    assert sum(r["accepted"] for r in log) == rounds_kept
    assert reason in plan.settings["stop_reason"]
    assert plan.n_neurons == 3 * rounds_kept  # 12 neurons over 4 rounds; a rejected round adds none
    assert plan.settings["verification"]["objective_after"] == pytest.approx(script[rounds_kept])


@pytest.mark.parametrize("key, value", [("ranking", "best"), ("guard_fraction", 1.0), ("rounds", 0)])
def test_bad_selection_settings_fail_before_work(key, value) -> None:
    from fairprune.core.contract.config import load_config
    from fairprune.core.contract.registry import Registry
    from fairprune.core.run.pipeline import resolve_method

    config = load_config({"model": {"source": "m"}, "method": {"name": "attribution", key: value}})
    with pytest.raises(ConfigError, match=rf"^invalid config: method\.{key}: "):
        resolve_method(config, Registry(load_entrypoints=False))


class _LastTokenGap:
    """A third-party objective: the spread of the members' most likely next-token log-probability."""

    name, description, uses = "top_logprob_gap", "spread of the members' best next-token log-probability", ("logprobs",)

    def bind(self, tokenizer):
        return self

    def value(self, inputs):
        best = inputs.logprobs.max(-1).values
        out, start = [], 0
        for size in inputs.sizes:
            out.append(best[start:start + size].max() - best[start:start + size].min())
            start += size
        return torch.stack(out)


def test_a_plugin_registers_an_objective_that_attribution_uses(setup) -> None:
    from fairprune.core.contract.hookspecs import hookimpl

    class ThirdParty:
        @hookimpl
        def fairprune_register_bias_objectives(self, register):
            register(_LastTokenGap())

    registry = Registry(load_entrypoints=False, strict=True, extra_plugins=(ThirdParty(),))
    assert "top_logprob_gap" in registry.names("bias_objectives")
    model, tok, adapter, batches = setup
    objective = registry.create("bias_objectives", "top_logprob_gap").bind(tok)
    result = attr.attribute_objective(model, batches, objective, adapter)
    assert result.objective > 0 and all(bool(d.isfinite().all()) and float(d.abs().sum()) > 0
                                        for d in result.sums.delta(None).values())


@pytest.fixture(scope="module")
def suffix_batches(setup):
    model, tok, _, _ = setup
    return attr.group_batches(model, tok, groups(), 6, positions="suffix")


def test_suffix_positions_are_the_tokens_every_member_shares(setup, suffix_batches) -> None:
    model, tok, _, _ = setup
    expected = [len(tok(t.split("{}")[1], add_special_tokens=False)["input_ids"]) for t in TEMPLATES]
    assert suffix_batches.positions == expected and min(expected) > 1
    assert attr.group_batches(model, tok, groups(), 6).positions == [1] * len(TEMPLATES)
    capped = attr.group_batches(model, tok, groups(), 6, positions="suffix", max_positions=2)
    assert capped.positions == [2] * len(TEMPLATES)
    # members that differ in their last token share no suffix: the last position alone is read
    odd = [PromptGroup("race", "0", ("black", "white"), ("the man is black", "the man is white"))]
    assert attr.group_batches(model, tok, odd, 6, positions="suffix").positions == [1]
    with pytest.raises(ConfigError, match="positions must be one of last, suffix"):
        attr.group_batches(model, tok, groups(), 6, positions="all")


def test_suffix_objective_is_the_mean_js_over_the_shared_positions(setup, suffix_batches) -> None:
    from fairprune.plugins.objectives import pairwise_js

    model, tok, adapter, _ = setup
    values = attr.objective_values(model, suffix_batches, NextTokenJS(), adapter)
    for group, count, value in zip(groups(), suffix_batches.positions, values):
        with torch.no_grad():
            logprobs = [torch.log_softmax(model(**tok(p, return_tensors="pt")).logits[0, -count:], -1)
                        for p in group.prompts]
        stacked = torch.stack(logprobs, 1)  # [positions, members, vocab]
        expected = mean([float(pairwise_js(stacked[p])) for p in range(count)])
        assert value == pytest.approx(expected, rel=1e-6)


def test_suffix_attribution_matches_finite_difference(setup, suffix_batches) -> None:
    model, tok, adapter, _ = setup
    result = attr.attribute_objective(model, suffix_batches, NextTokenJS(), adapter)
    delta = result.sums.delta(None)
    eps = 1e-2
    for layer in (0, 1):
        neuron = int(torch.argmax(delta[layer].abs()))
        moved = []
        for sign in (1, -1):
            with nudged(model, adapter, layer, neuron, sign * eps, 0.0):
                moved.append(mean(attr.objective_values(model, suffix_batches, NextTokenJS(), adapter)))
        assert (moved[0] - moved[1]) / (2 * eps) == pytest.approx(float(delta[layer][neuron]), rel=1e-2)


def test_suffix_positions_refuse_residual_stream_objectives(setup, suffix_batches) -> None:
    model, _, adapter, _ = setup
    with pytest.raises(ConfigError, match="positions: last"):
        attr.objective_values(model, suffix_batches, ActivationDistance(), adapter)


@pytest.fixture(scope="module")
def continuation_batches(setup):
    model, tok, _, _ = setup
    return attr.group_batches(model, tok, groups(), 6, positions="continuation", continuation_tokens=3)


def test_continuation_is_the_greedy_choice_of_the_members_mean_probability(setup, continuation_batches) -> None:
    model, tok, _, _ = setup
    assert continuation_batches.positions == [4] * len(TEMPLATES)
    start = 0
    for group in groups():
        rows = continuation_batches.ids[start:start + len(group.prompts)]
        start += len(group.prompts)
        prompts = [tok(p)["input_ids"] for p in group.prompts]
        appended = [row[len(p):] for row, p in zip(rows, prompts)]
        assert all(row[:len(p)] == p for row, p in zip(rows, prompts))
        assert len(appended[0]) == 3 and all(a == appended[0] for a in appended)
        # the same choice by hand: each member alone, unpadded, step by step
        chosen: list[int] = []
        for _ in range(3):
            with torch.no_grad():
                probs = [torch.softmax(model(torch.tensor([p + chosen])).logits[0, -1], -1) for p in prompts]
            chosen.append(int(torch.stack(probs).mean(0).argmax()))
        assert appended[0] == chosen


def test_continuation_objective_reads_the_last_prompt_position_and_every_appended_token(
        setup, continuation_batches) -> None:
    model, _, adapter, _ = setup
    values = attr.objective_values(model, continuation_batches, NextTokenJS(), adapter)
    start = 0
    for group, value in zip(groups(), values):
        rows = continuation_batches.ids[start:start + len(group.prompts)]
        start += len(group.prompts)
        with torch.no_grad():
            stacked = torch.stack([torch.log_softmax(model(torch.tensor([r])).logits[0, -4:], -1) for r in rows], 1)
        assert value == pytest.approx(mean([float(pairwise_js(stacked[p])) for p in range(4)]), rel=1e-6)
    result = attr.attribute_objective(model, continuation_batches, NextTokenJS(), adapter)
    delta, eps = result.sums.delta(None), 1e-2
    neuron = int(torch.argmax(delta[1].abs()))
    moved = []
    for sign in (1, -1):
        with nudged(model, adapter, 1, neuron, sign * eps, 0.0):
            moved.append(mean(attr.objective_values(model, continuation_batches, NextTokenJS(), adapter)))
    assert (moved[0] - moved[1]) / (2 * eps) == pytest.approx(float(delta[1][neuron]), rel=1e-2)


def test_continuation_tokens_without_continuation_positions_are_refused() -> None:
    assert AttributionParams(positions="continuation").continuation_tokens is None
    assert AttributionParams(positions="continuation", continuation_tokens=2).continuation_tokens == 2
    with pytest.raises(ValueError, match="continuation_tokens does nothing with positions: last"):
        AttributionParams(continuation_tokens=2)


def test_rounds_that_end_below_the_budget_say_so(setup, monkeypatch) -> None:
    fake = Scripted([1.0, 0.9, 0.8, 0.7, 0.6])
    monkeypatch.setattr(sel.attr, "attribute_objective", fake.attribute)
    monkeypatch.setattr(sel.attr, "objectives_values", fake.values_only)
    # every round is halved by a check to half its share: 4 rounds end with room left in the budget
    original = sel._capability_check
    monkeypatch.setattr(sel, "_capability_check", lambda model, text, adapter, state, add, *a, **k:
                        original(model, text, adapter, state, add[:max(1, len(add) // 2)], *a, **k))
    plan = run_selection(setup, rounds=4, min_improvement_pct=2.0).plan
    assert plan.n_neurons < 12
    assert plan.settings["stop_reason"] == f"all 4 rounds ran ({plan.n_neurons} neurons, less than the budget allows)"
