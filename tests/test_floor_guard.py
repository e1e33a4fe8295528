"""The floor guard: neurons whose removal would lower the word-swap floor by as large a share as the between-group
divergence are never removed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from fairprune.core.contract.config import AttributionParams, Budget
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.protocols import PromptGroup
from fairprune.core.data.groups import SEP
from fairprune.core.method import attribution as attr
from fairprune.core.method import selection as sel
from fairprune.core.method.floor_guard import FloorGuard, floor_guard, narrows
from fairprune.plugins.capability_cost import CapabilityCost
from fairprune.plugins.objectives import JSAboveFloor, NextTokenJS
from fairprune.testing.models import tiny_model
from fairprune.testing.tokenizer import tiny_tokenizer

TEMPLATES = ("the {} man walked into the room and", "the {} woman has a new job at the",
             "the {} doctor said that the", "a {} student went to school because", "the {} family lives in the")
#: two surface forms for each of two groups: "black"/"old" name group A, "white"/"young" group B
FORMS = {f"race{SEP}{form}": name for form, name in
         (("black", "A"), ("old", "A"), ("white", "B"), ("young", "B"))}


def form_groups(sets=(("black", "white"), ("old", "young"))) -> list[PromptGroup]:
    return [PromptGroup("race", str(i), attrs, tuple(t.format(a) for a in attrs))
            for i, t in enumerate(TEMPLATES) for attrs in sets]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = tiny_model("llama").double()
    return model, tiny_tokenizer(), attr.resolve_adapter(model)


def test_the_guard_keeps_exactly_the_neurons_that_narrow_groups_more_than_the_floor(setup) -> None:
    """The guard's base figures and masks, recomputed from the ``js_above_floor`` plugin (between − w·within)."""
    model, tok, adapter = setup
    guard = floor_guard(model, tok, form_groups(), FORMS, adapter, batch_size=8)
    batches = attr.group_batches(model, tok, form_groups(), 8, labels=FORMS)
    between = attr.attribute_objective(model, batches, JSAboveFloor().configure({"floor_weight": 0.0}), adapter)
    gap = attr.attribute_objective(model, batches, JSAboveFloor(), adapter)  # between − within
    b0, w0 = between.objective, between.objective - gap.objective
    assert guard.between == pytest.approx(b0, rel=1e-6) and guard.within == pytest.approx(w0, rel=1e-6)
    assert w0 > 0 and b0 > 0
    d_b = between.sums.delta(None)
    d_gap = gap.sums.delta(None)
    allowed_total = 0
    for layer, mask in guard.guarded.items():
        d_w = d_b[layer] - d_gap[layer]
        allowed = d_b[layer] / b0 < d_w.clamp(max=0) / w0
        assert torch.equal(~mask, allowed)
        allowed_total += int(allowed.sum())
    # the rule leaves some neurons and guards others, and it guards every neuron that would raise the divergence
    assert 0 < allowed_total < sum(m.numel() for m in guard.guarded.values())
    assert all(bool(mask[d_b[layer] >= 0].all()) for layer, mask in guard.guarded.items())
    record = guard.record()
    assert record["guarded"] + allowed_total == record["of"]
    assert record["floor_share_pct"] == pytest.approx(100 * w0 / b0)


def test_without_two_forms_of_one_group_there_is_no_floor_to_read(setup) -> None:
    model, tok, adapter = setup
    with pytest.raises(ConfigError, match="method.floor_guard: no analysis template has two surface forms"):
        floor_guard(model, tok, form_groups(sets=(("black", "white"),)), FORMS, adapter, batch_size=8)


def test_selection_with_the_floor_guard_removes_only_neurons_it_leaves(setup) -> None:
    model, tok, adapter = setup

    def select(floor: bool):
        settings = AttributionParams(guard_fraction=0.0, max_perplexity_increase_pct=None, rounds=1,
                                     floor_guard=floor)
        return sel.select_by_attribution(model, tok, form_groups(), objective=NextTokenJS(),
                                         capability=CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 64}),
                                         budget=Budget(neurons=40), settings=settings, batch_size=8, adapter=adapter,
                                         progress=False, forms=FORMS).plan

    guard = floor_guard(model, tok, form_groups(), FORMS, adapter, batch_size=8)
    guarded = select(True)
    assert guarded.n_neurons > 0
    assert not any(bool(guard.guarded[layer][n]) for layer, ns in guarded.removed.items() for n in ns)
    record = dict(guarded.settings["floor_guard"])
    checks = record.pop("checks")
    assert record == {k: v for k, v in guard.record().items() if k != "checks"}
    # every round was measured, and the accepted one narrows the groups by a larger share than the floor
    assert checks and checks[-1]["passed"]
    entry = guarded.settings["round_log"][0]
    after = (checks[-1]["between_after"], checks[-1]["within_after"])
    assert (entry["between_js"], entry["within_js"]) == after
    assert narrows((checks[-1]["between_before"], checks[-1]["within_before"]), after)
    assert checks[-1]["between_before"] == pytest.approx(guard.between, rel=1e-6)
    assert checks[-1]["within_before"] == pytest.approx(guard.within, rel=1e-6)
    plain = select(False)  # without the guard, selection takes neurons the guard would have kept out
    assert "floor_guard" not in plain.settings
    assert any(bool(guard.guarded[layer][n]) for layer, ns in plain.removed.items() for n in ns)


def test_the_method_params_take_the_guard_and_refuse_a_bad_value() -> None:
    assert AttributionParams.model_validate({"floor_guard": True}).floor_guard is True
    assert AttributionParams().floor_guard is False
    with pytest.raises(ValidationError, match="floor_guard"):
        AttributionParams.model_validate({"floor_guard": "maybe"})


def test_the_card_names_the_guards_against_deafness_that_were_on() -> None:
    from fairprune.core.contract.config import RunConfig
    from fairprune.plugins.report import _method_text

    def lines(**params):
        config = RunConfig.model_validate({"model": {"source": "smollm2-135m"},
                                           "method": {"name": "attribution", **params}})
        return _method_text(config)[1]

    assert not any("Guards against deafness" in line for line in lines())
    floor = [line for line in lines(floor_guard=True) if line.startswith("Guards against deafness")]
    assert len(floor) == 1 and "floor guard" in floor[0] and "recall" not in floor[0]
    both = [line for line in lines(floor_guard=True, recall={"guard_fraction": 0.1, "max_drop_pts": 1.0})
            if line.startswith("Guards against deafness")]
    assert len(both) == 1 and "10% of each layer" in both[0] and "1.0 points" in both[0] and "floor guard" in both[0]


def test_the_card_numbers_the_method_steps_and_names_the_name_passages() -> None:
    from fairprune.core.contract.config import load_config
    from fairprune.plugins.report import model_card

    demo = Path(__file__).resolve().parents[1] / "examples" / "fair-smollm2.yaml"
    metrics = {"pruning": {"neurons_removed": 389, "params_removed_pct": 0.5, "params_removed": 672192,
                           "params_before": 134515008, "layers_touched": 30}}
    card = model_card(load_config(demo), metrics, "HuggingFaceTB/SmolLM2-135M-Instruct")
    method = card.split("## Method\n\n")[1].split("\n\n")[0].splitlines()
    assert [line.split(". ")[0] for line in method] == [str(i) for i in range(1, len(method) + 1)]
    names = [line for line in method if "Name passages" in line]
    assert len(names) == 1 and "10% of each layer" in names[0] and "a seeded sample of 112" in names[0]
    assert "by more than 10.0% is halved or rejected" in names[0]
    assert any("Guards against deafness" in line for line in method) and method[-1].split(". ", 1)[1].startswith("Budget")
    without = load_config(demo, ["method.cloze_check=null"])
    assert "Name passages" not in model_card(without, metrics, "base")
    # no bias evaluator ran (metrics hold none): the card says so rather than describing bias figures
    assert "**No bias figure was measured in this run**" in card and "Bias figures are on held-out" not in card


def test_between_within_js_averages_each_kind_of_pair():
    from fairprune.core.model.divergence import between_within_js, js_divergence

    torch.manual_seed(1)
    lp = torch.log_softmax(torch.randn(4, 7, dtype=torch.float64), -1)
    between, within = between_within_js(lp, ["A", "A", "B", "B"])
    pairs = {(i, j): float(js_divergence(lp[i], lp[j])) for i in range(4) for j in range(i + 1, 4)}
    assert float(within) == pytest.approx((pairs[0, 1] + pairs[2, 3]) / 2)
    assert float(between) == pytest.approx((pairs[0, 2] + pairs[0, 3] + pairs[1, 2] + pairs[1, 3]) / 4)
    # one form per group: no within pair, so the floor reads 0 and still takes a gradient
    lp3 = lp[[0, 2]].clone().requires_grad_(True)
    _, none = between_within_js(lp3, ["A", "B"])
    none.backward()
    assert float(none.detach()) == 0.0 and lp3.grad is not None


class _ScriptedPasses:
    """Measurements that depend only on how many neurons are removed: 4 or more lower the floor by a larger share
    than the between-group JS (deafness); fewer narrow the groups."""

    def measure(self, folds, objective, removed, fill) -> float:
        k = sum(len(v) for v in removed.values())
        if objective == "between":
            return 1.0 - 0.05 * k
        return 1.0 - (0.1 * k if k >= 4 else 0.01 * k)

    def measure_all(self, folds, objectives, removed, fill) -> list[float]:
        return [self.measure(folds, o, removed, fill) for o in objectives]


def test_a_round_that_lowers_the_floor_by_a_larger_share_is_halved_until_it_narrows() -> None:
    guard = FloorGuard(1.0, 1.0, {}, objectives=("between", "within"))
    add = [(0, n) for n in range(8)]
    kept, after = guard.fit(_ScriptedPasses(), {}, add, None)
    assert kept == add[:2]  # 8 and 4 neurons deafen; 2 narrow
    assert after == pytest.approx((0.9, 0.98))
    assert [c["neurons"] for c in guard.checks] == [8, 4, 2]
    assert [c["passed"] for c in guard.checks] == [False, False, True]
    # with neurons already removed the check compares against the figures they leave
    guard.checks.clear()
    assert guard.fit(_ScriptedPasses(), {0: [10]}, [(1, 0)], None)[0] == [(1, 0)]
    assert guard.checks[0]["between_before"] == pytest.approx(0.95)


def test_narrows_gives_no_credit_for_a_higher_floor() -> None:
    assert narrows((1.0, 1.0), (0.9, 1.2))      # the groups narrow; the floor rising does not count against it
    assert not narrows((1.0, 1.0), (1.0, 1.5))  # a higher floor alone is not a narrower gap
    assert not narrows((1.0, 1.0), (0.9, 0.85))  # the floor fell by a larger share: deafness


def test_the_round_log_gives_the_figures_of_the_neurons_the_target_kept(setup) -> None:
    from fairprune.core.method.passes import SelectionPasses

    model, tok, adapter = setup
    settings = AttributionParams(guard_fraction=0.0, max_perplexity_increase_pct=None, rounds=1, floor_guard=True,
                                 target_reduction_pct=3.0)
    plan = sel.select_by_attribution(model, tok, form_groups(), objective=NextTokenJS(),
                                     capability=CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 64}),
                                     budget=Budget(neurons=40), settings=settings, batch_size=8, adapter=adapter,
                                     progress=False, forms=FORMS).plan
    checks = plan.settings["floor_guard"]["checks"]
    entry = plan.settings["round_log"][0]
    assert 0 < entry["neurons"] < checks[-1]["neurons"], "the target must have kept a prefix of the checked round"
    guard = floor_guard(model, tok, form_groups(), FORMS, adapter, batch_size=8)
    between, within = guard.measured(SelectionPasses(model, adapter), plan.removed, None)
    assert (entry["between_js"], entry["within_js"]) == pytest.approx((between, within), rel=1e-6)


def test_two_objectives_from_one_forward_equal_two_passes(setup) -> None:
    from fairprune.core.method.floor_guard import _PairJS

    model, tok, adapter = setup
    batches = attr.group_batches(model, tok, form_groups(), 8, positions="last", labels=FORMS)
    objectives = (_PairJS(same=False), _PairJS(same=True))
    recall_like = JSAboveFloor()  # read without gradients from the same forwards
    together = attr.attribute_objectives(model, batches, objectives, adapter, also=recall_like)
    for k, objective in enumerate(objectives):
        alone = attr.attribute_objective(model, batches, objective, adapter, also=recall_like if k == 0 else None)
        assert together[k].values == pytest.approx(alone.values, rel=1e-12)
        for table in ("grad", "grad_act", "act", "abs_act"):
            for layer, value in getattr(alone.sums, table).items():
                assert torch.allclose(getattr(together[k].sums, table)[layer], value, rtol=1e-6, atol=1e-12)
        assert together[k].also == (alone.also if k == 0 else None)
    assert together[0].also is not None
