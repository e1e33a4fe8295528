"""Signed attribution: first-order estimates against real changes, sign filtering, early stopping, objectives."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch

from fairprune.core import attribution as attr
from fairprune.core import selection as sel
from fairprune.core.config import Budget
from fairprune.core.errors import ConfigError
from fairprune.core.protocols import PromptGroup
from fairprune.core.registry import Registry
from fairprune.plugins.capability_cost import CapabilityCost
from fairprune.plugins.objectives import ActivationDistance, ContinuationGap, NextTokenJS
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
    from fairprune.core.errors import UnknownPluginError

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
        from fairprune.core.surgery import prune

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


def test_missing_calibration_text_is_a_clear_error(setup, tmp_path) -> None:
    _, tok, _, _ = setup
    with pytest.raises(ConfigError, match="calibration text not found"):
        CapabilityCost().configure({"text": str(tmp_path / "none.txt")}).chunks(tok)


def test_multi_token_continuation_is_refused(setup) -> None:
    _, tok, _, _ = setup
    with pytest.raises(ConfigError, match="single-token"):
        ContinuationGap().configure({"continuations": [" was here"]}).bind(tok)


# -- selection -------------------------------------------------------------------------------------

def test_ranking_keeps_out_every_neuron_whose_removal_raises_the_objective() -> None:
    gen = torch.Generator().manual_seed(0)
    delta = {0: torch.randn(50, generator=gen), 1: torch.randn(50, generator=gen)}
    cost = {0: torch.rand(50, generator=gen), 1: torch.rand(50, generator=gen)}
    guarded = sel._guarded(cost, 0.0)
    for ranking in sel.RANKINGS:
        entries = sel._ranked(delta, cost, guarded, {0: [int(torch.argmin(delta[0]))]}, ranking, [0, 1])
        chosen = {(layer, n) for _, layer, n in entries}
        expected = {(layer, n) for layer in (0, 1) for n in range(50) if delta[layer][n] < 0}
        assert chosen == expected - {(0, int(torch.argmin(delta[0])))}


def test_guard_protects_the_costliest_neurons_of_each_layer() -> None:
    cost = {0: torch.arange(10.0), 1: torch.arange(10.0).flip(0)}
    guarded = sel._guarded(cost, 0.3)
    assert guarded[0].nonzero().flatten().tolist() == [7, 8, 9]
    assert guarded[1].nonzero().flatten().tolist() == [0, 1, 2]


def run_selection(setup, **kw):
    model, tok, adapter, _ = setup
    settings = sel.SelectionSettings(**{"guard_fraction": 0.0, "max_perplexity_increase_pct": None, **kw})
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

    def values_only(self, model, batches, objective, adapter, removed=None, fill=None):
        return [self.attribute(model, batches, objective, adapter).objective] * 4


@pytest.mark.parametrize("script,rounds_kept,reason", [
    ([1.0, 0.8, 0.85], 1, "stopped improving"),
    ([1.0, 0.8, 0.79], 2, "improved the objective by 1.00%"),
    ([1.0, 0.9, 0.8, 0.7, 0.6], 4, "budget reached"),
])
def test_early_stopping(setup, monkeypatch, script, rounds_kept, reason) -> None:
    fake = Scripted(script)
    monkeypatch.setattr(sel.attr, "attribute_objective", fake.attribute)
    monkeypatch.setattr(sel.attr, "objective_values", fake.values_only)
    plan = run_selection(setup, rounds=4, min_improvement_pct=2.0).plan
    log = plan.settings["round_log"]
    assert sum(r["accepted"] for r in log) == rounds_kept
    assert reason in plan.settings["stop_reason"]
    assert plan.n_neurons == 3 * rounds_kept  # 12 neurons over 4 rounds; a rejected round adds none
    assert plan.settings["verification"]["objective_after"] == pytest.approx(script[rounds_kept])


def test_bad_selection_settings_fail_before_work(setup) -> None:
    with pytest.raises(ConfigError, match="attribution.ranking"):
        run_selection(setup, ranking="best")
    with pytest.raises(ConfigError, match="attribution.guard_fraction"):
        run_selection(setup, guard_fraction=1.0)


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
    from fairprune.core.hookspecs import hookimpl

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
