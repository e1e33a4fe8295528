"""The core invariant: removing neurons equals forcing their activations to zero, on every architecture."""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fairprune as fp
from fairprune.core.contract.errors import ArchitectureError, PlanError
from fairprune.core.contract.hookspecs import hookimpl
from fairprune.core.contract.registry import Registry
from fairprune.core.method.surgery import validate_plan
from fairprune.core.model.adapters import count_parameters, widths
from fairprune.testing import TINY_ARCHITECTURES, tiny_model

ARCHS = sorted(TINY_ARCHITECTURES)
INPUT = torch.randint(3, 128, (2, 11), generator=torch.Generator().manual_seed(0))


@cache
def registry() -> Registry:
    return Registry(load_entrypoints=False)


@cache
def base(arch: str) -> torch.nn.Module:
    return tiny_model(arch, seed=3)


def zeroed_logits(model, adapter, plan) -> torch.Tensor:
    """Logits of ``model`` with the planned neurons' activations forced to zero (hooks on down_proj inputs)."""
    def hook_for(idx):
        def hook(module, args):
            h = args[0].clone()
            h[..., idx] = 0
            return (h,) + tuple(args[1:])
        return hook

    handles = [adapter.site(model, layer, "neuron").module.register_forward_pre_hook(hook_for(torch.tensor(idx)))
               for layer, idx in plan.items() if idx]
    try:
        with torch.no_grad():
            return model(INPUT).logits
    finally:
        for handle in handles:
            handle.remove()


@st.composite
def plans(draw, layer_widths):
    plan = {}
    for layer, width in enumerate(layer_widths):
        if draw(st.booleans()):
            plan[layer] = draw(st.lists(st.integers(0, width - 1), unique=True, max_size=width - 1))
    return plan


@pytest.mark.parametrize("arch", ARCHS)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_pruning_equals_zeroing(arch, data):
    model = copy.deepcopy(base(arch))
    adapter = fp.resolve_adapter(model, registry=registry())
    plan = data.draw(plans(widths(model, adapter)))
    expected = zeroed_logits(model, adapter, plan)
    result = fp.prune(model, plan, registry=registry())
    with torch.no_grad():
        got = model(INPUT).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert result.widths_after == [w - len(plan.get(i, [])) for i, w in enumerate(result.widths_before)]
    assert widths(model, adapter) == result.widths_after


def test_empty_plan_is_identity():
    model = copy.deepcopy(base("llama"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fp.prune(model, {}, registry=registry())
    assert result.params_removed == 0 and result.widths_after == result.widths_before
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    fp.prune(model, {0: [], 1: []}, registry=registry())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("plan", "fragment"), [
    ({5: [1]}, "layer 5 is out of range"),
    ({-1: [1]}, "layer -1 is out of range"),
    ({0: [64]}, "layer 0: neuron index 64 is out of range"),
    ({0: [-2]}, "layer 0: neuron index -2 is out of range"),
    ({0: [1, 2, 1]}, "layer 0: neuron index 1 is listed twice"),
    ({1: [1.5]}, "layer 1: neuron index 1.5 is not an integer"),
    ({1: [True]}, "layer 1: neuron index True is not an integer"),
    ({"0": [1]}, "layer keys must be integers"),
    ({0: list(range(64))}, "layer 0: the plan removes all 64 neurons"),
    ({0: torch.tensor([1.0])}, "must be integers"),
    ([1, 2], "a plan must be a mapping"),
])
def test_invalid_plan_raises_and_leaves_model_untouched(plan, fragment):
    model = copy.deepcopy(base("llama"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config_before = model.config.to_dict()
    with pytest.raises(PlanError, match=fragment.replace("[", r"\[")):
        fp.prune(model, {1: [0, 1], **plan} if isinstance(plan, dict) else plan, registry=registry())
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.config.to_dict() == config_before


def test_failure_midway_restores_model_exactly():
    class HalfwayPruner:
        name = "halfway"
        description = "prunes the first layer, then fails"
        needs_calibration = False

        def apply(self, model, adapter, plan, calibration):
            adapter.keep(model, 0, torch.arange(10))
            adapter.down(model, 1).mul_(2)
            adapter.set_widths(model, [10, 64])
            raise RuntimeError("disk on fire")

    model = copy.deepcopy(base("llama"))
    params_before = list(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config_before = model.config.to_dict()
    with torch.no_grad():
        logits_before = model(INPUT).logits
    with pytest.raises(RuntimeError, match="disk on fire"):
        fp.prune(model, {0: [1, 2], 1: [3]}, pruner=HalfwayPruner(), registry=registry())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.config.to_dict() == config_before
    assert all(a is b for a, b in zip(params_before, model.parameters()))
    assert model.model.layers[0].mlp.gate_proj.out_features == 64
    with torch.no_grad():
        assert torch.equal(model(INPUT).logits, logits_before)


def test_plan_object_with_to_mapping_is_accepted():
    class Plan:
        def to_mapping(self):
            return {1: [4, 2]}

    model = copy.deepcopy(base("qwen2"))
    adapter = fp.resolve_adapter(model, registry=registry())
    checked = validate_plan(model, adapter, Plan())
    assert list(checked) == [1] and checked[1].tolist() == [2, 4] and checked[1].dtype == torch.long
    assert fp.prune(model, Plan(), registry=registry()).removed == {1: [2, 4]}


def test_keeps_dtype_and_device_and_counts_parameters():
    model = copy.deepcopy(base("llama")).to(torch.bfloat16)
    hidden = model.config.hidden_size
    result = fp.prune(model, {0: [1, 2, 3], 1: [0]}, registry=registry())
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}
    assert result.params_removed == 4 * 3 * hidden == result.params_before - count_parameters(model)
    assert result.fraction_removed == pytest.approx(result.params_removed / result.params_before)


def test_config_records_nonuniform_and_uniform_widths():
    model = copy.deepcopy(base("llama"))
    fp.prune(model, {0: [1, 2, 3]}, registry=registry())
    assert model.config.fairprune_intermediate_sizes == [61, 64]
    assert model.config.intermediate_size == 64
    fp.prune(model, {1: [0, 5, 9]}, registry=registry())
    assert model.config.fairprune_intermediate_sizes == [61, 61]
    assert model.config.intermediate_size == 61


def test_layer_pruned_hook_is_called_per_layer():
    calls = []

    class Recorder:
        @hookimpl
        def fairprune_layer_pruned(self, layer, removed, width_before, width_after):
            calls.append((layer, removed, width_before, width_after))

    reg = Registry(load_entrypoints=False)
    reg.add_plugin(Recorder(), name="recorder")
    fp.prune(copy.deepcopy(base("qwen2")), {2: [7, 3], 0: [1]}, registry=reg)
    assert calls == [(0, [1], 64, 63), (2, [3, 7], 64, 62)]


def test_resolve_adapter_by_match_and_name():
    assert fp.resolve_adapter(base("phi3"), registry=registry()).name == "fused_gate_up"
    assert fp.resolve_adapter(base("gemma3"), registry=registry()).name == "glu"
    assert fp.resolve_adapter(base("llama"), "glu", registry=registry()).name == "glu"


def test_model_without_glu_mlp_names_class_and_adapters():
    with pytest.raises(ArchitectureError) as info:
        fp.resolve_adapter(torch.nn.Sequential(torch.nn.Linear(2, 2)), registry=registry())
    assert "Sequential" in str(info.value) and "glu" in str(info.value) and "fused_gate_up" in str(info.value)
