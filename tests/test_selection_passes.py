"""Cheaper selection passes: the streamed capability cost equals the windowed tables' cost, and passes that
selections for several budgets share are computed once without changing what any budget selects."""

from __future__ import annotations

import pytest
import torch

from fairprune.core.contract.config import AttributionParams, Budget
from fairprune.core.contract.protocols import PromptGroup
from fairprune.core.method import attribution as attr
from fairprune.core.method import selection as sel
from fairprune.core.method.capability import capability_estimate
from fairprune.core.method.passes import SelectionPasses
from fairprune.plugins.capability_cost import CapabilityCost
from fairprune.plugins.objectives import NextTokenJS
from fairprune.testing.models import tiny_model
from fairprune.testing.tokenizer import tiny_tokenizer

TEMPLATES = ("the {} man walked into the room and", "the {} woman has a new job at the",
             "the {} doctor said that the", "a {} student went to school because", "the {} family lives in the")
GROUPS = [PromptGroup("race", str(i), ("black", "white"), tuple(t.format(a) for a in ("black", "white")))
          for i, t in enumerate(TEMPLATES)]
OBJECTIVE = NextTokenJS()  # one bound objective for every budget, as the method plugin binds it once


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = tiny_model("llama")
    return model, tiny_tokenizer(), attr.resolve_adapter(model)


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("compensated", [False, True])
def test_streamed_cost_equals_the_cost_of_the_per_window_tables(setup, window, compensated) -> None:
    model, tok, adapter = setup
    text = CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 112, "window_tokens": window}).chunks(tok)
    tables = attr.capability_attribution(model, text, adapter, batch_size=3)
    streamed = capability_estimate(model, text, adapter, compensated=compensated, batch_size=3)
    assert streamed.loss == pytest.approx(tables.loss, rel=1e-9)
    for layer in tables.mean:
        torch.testing.assert_close(streamed.mean[layer], tables.mean[layer], rtol=0, atol=0)
        torch.testing.assert_close(streamed.magnitude[layer], tables.magnitude[layer], rtol=0, atol=0)
        want = tables.cost(tables.mean if compensated else None)[layer]
        assert float(want.abs().max()) > 0
        torch.testing.assert_close(streamed.cost[layer], want, rtol=1e-5, atol=1e-9)


class Counting:
    """Wraps a real pass function and counts its calls."""

    def __init__(self, func):
        self.func, self.calls = func, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.func(*args, **kwargs)


def select(setup, budget, passes=None):
    model, tok, adapter = setup
    settings = AttributionParams(guard_fraction=0.25, rounds=2, min_improvement_pct=0.0, target_reduction_pct=40,
                                 max_perplexity_increase_pct=50.0)
    capability = CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 64, "check_tokens": 32})
    return sel.select_by_attribution(model, tok, GROUPS, objective=OBJECTIVE, capability=capability,
                                     budget=budget, settings=settings, batch_size=4, adapter=adapter,
                                     progress=False, passes=passes).plan


def test_budgets_sharing_passes_select_what_each_selects_alone_with_fewer_passes(setup, monkeypatch) -> None:
    model, _, adapter = setup
    names = ("attribute_folds", "text_loss", "objectives_values")  # every measured objective goes through it
    counters = {name: Counting(getattr(attr, name)) for name in names}
    module = sel.SelectionPasses.capability.__globals__
    counters["capability_estimate"] = Counting(module["capability_estimate"])
    for name in names:
        monkeypatch.setattr(attr, name, counters[name])
    monkeypatch.setitem(module, "capability_estimate", counters["capability_estimate"])
    budgets = [Budget(neurons=6), Budget(neurons=10)]
    alone = [select(setup, b) for b in budgets]
    calls_alone = {name: c.calls for name, c in counters.items()}
    passes = SelectionPasses(model, adapter)
    shared = [select(setup, b, passes) for b in budgets]
    calls_shared = {name: c.calls - calls_alone[name] for name, c in counters.items()}
    for a, b in zip(alone, shared):
        assert a.n_neurons > 0
        assert b.removed == a.removed
        assert b.settings["round_log"] == a.settings["round_log"]
    assert (calls_alone["capability_estimate"], calls_shared["capability_estimate"]) == (2, 1)
    assert calls_shared["attribute_folds"] == calls_alone["attribute_folds"] - 1  # the first round's, once
    assert calls_shared["text_loss"] == calls_alone["text_loss"] - 1  # the base loss of the check text, once
    before = {name: c.calls for name, c in counters.items()}
    again = select(setup, budgets[0], passes)  # a budget seen before: its checks and measurements are known
    assert again.removed == alone[0].removed
    assert counters["text_loss"].calls == before["text_loss"]
    assert counters["objectives_values"].calls == before["objectives_values"]
    assert counters["capability_estimate"].calls == before["capability_estimate"]


def test_batches_fill_half_the_free_memory_and_keep_the_cpu_default() -> None:
    from fairprune.core.model.memory import batch_for_memory

    assert batch_for_memory(None, 10, 16, 4) == 4
    assert batch_for_memory(None, 10, 3, 4) == 3
    assert batch_for_memory(1000, 100, 16, 4) == 5  # half of 1000 bytes holds 5 items of 100
    assert batch_for_memory(1000, 100, 2, 4) == 2
    assert batch_for_memory(50, 100, 16, 4) == 1  # never below one item


def test_the_cpu_batch_keeps_the_pass_within_a_share_of_the_weights(setup, monkeypatch) -> None:
    from fairprune.core.method import capability

    model, tok, adapter = setup
    text = CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 160}).chunks(tok)
    assert 1 <= capability.chunk_batch(model, text, adapter) <= capability.CPU_CHUNKS
    monkeypatch.setattr(capability, "CPU_SHARE_OF_WEIGHTS", 1e6)  # memory to spare: the most the CPU takes
    assert capability.chunk_batch(model, text, adapter) == capability.CPU_CHUNKS
    monkeypatch.setattr(capability, "CPU_SHARE_OF_WEIGHTS", 1e-6)  # none: one chunk at a time
    assert capability.chunk_batch(model, text, adapter) == 1


def test_several_objectives_are_measured_from_one_forward_and_equal_each_measured_alone(setup, monkeypatch) -> None:
    from fairprune.plugins.objectives import ContinuationGap

    model, tok, adapter = setup
    batches = attr.group_batches(model, tok, GROUPS, batch_size=4)
    objectives = (OBJECTIVE, ContinuationGap().configure({"top_k": 3}))
    removed = {0: [1, 5, 9], 1: [2]}
    alone = [SelectionPasses(model, adapter).measure([batches], o, removed) for o in objectives]
    assert alone[0] != pytest.approx(alone[1])

    forwards = Counting(attr._groups_values)
    monkeypatch.setattr(attr, "_groups_values", forwards)
    passes = SelectionPasses(model, adapter)
    both = passes.measure_all([batches], objectives, removed)
    assert both == pytest.approx(alone, rel=1e-6)
    assert forwards.calls == len(list(batches))  # one forward per batch for both objectives
    assert passes.measure([batches], objectives[1], removed) == both[1]  # known: no forward
    assert forwards.calls == len(list(batches))
    assert passes.measure_all([batches], objectives, {0: [1]}) != pytest.approx(both)  # another removed set
