"""Mask equals structural removal; compensation equals replacing removed activations by their means."""

from __future__ import annotations

import copy

import pytest
import torch

import fairprune as fp
from fairprune.core.contract.errors import PlanError
from fairprune.core.contract.registry import Registry
from fairprune.testing import tiny_model

INPUT = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(1))
REG = Registry(load_entrypoints=False)
PLAN = {0: [0, 5, 17, 30], 1: [2, 3]}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(INPUT).logits


def forced_logits(model, plan, values) -> torch.Tensor:
    """Logits with each planned neuron's activation replaced by ``values[layer][i]``."""
    adapter = fp.resolve_adapter(model, registry=REG)

    def hook_for(layer, idx):
        def hook(module, args):
            h = args[0].clone()
            h[..., idx] = values[layer][idx].to(h.dtype)
            return (h,)
        return hook

    handles = [adapter.site(model, layer, "neuron").module.register_forward_pre_hook(
        hook_for(layer, torch.tensor(idx))) for layer, idx in plan.items()]
    try:
        return logits(model)
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("arch", ["llama", "phi3", "gemma3", "qwen2"])
def test_mask_equals_structural(arch):
    base = tiny_model(arch)
    masked, removed = copy.deepcopy(base), copy.deepcopy(base)
    mask_result = fp.prune(masked, PLAN, pruner="mask", registry=REG)
    fp.prune(removed, PLAN, pruner="structural", registry=REG)
    torch.testing.assert_close(logits(masked), logits(removed), atol=1e-5, rtol=0)
    assert mask_result.widths_after == mask_result.widths_before
    assert mask_result.params_removed == 0
    gate, up = fp.resolve_adapter(masked, registry=REG).gate_up(masked, 0)
    assert gate[PLAN[0]].abs().sum() == 0 and up[PLAN[0]].abs().sum() == 0


@pytest.mark.parametrize("arch", ["llama", "phi3", "gemma"])
def test_compensated_equals_mean_replacement(arch):
    base = tiny_model(arch)
    width = base.config.intermediate_size
    gen = torch.Generator().manual_seed(5)
    calibration = {layer: torch.randn(width, generator=gen) for layer in range(base.config.num_hidden_layers)}
    expected = forced_logits(base, PLAN, calibration)
    pruned = copy.deepcopy(base)
    fp.prune(pruned, PLAN, pruner="compensated", calibration=calibration, registry=REG)
    torch.testing.assert_close(logits(pruned), expected, atol=1e-5, rtol=0)


def test_compensated_bias_math_for_constant_calibration():
    base = tiny_model("llama")
    adapter = fp.resolve_adapter(base, registry=REG)
    down0 = adapter.down(base, 0).detach().clone()
    calibration = {0: torch.full((64,), 0.5), 1: torch.full((64,), 0.5)}
    pruned = copy.deepcopy(base)
    result = fp.prune(pruned, PLAN, pruner="compensated", calibration=calibration, registry=REG)
    bias = pruned.model.layers[0].mlp.down_proj.bias
    torch.testing.assert_close(bias, 0.5 * down0[:, PLAN[0]].sum(dim=1), atol=1e-6, rtol=0)
    hidden = base.config.hidden_size
    assert result.params_removed == 6 * 3 * hidden - 2 * hidden  # two new biases
    torch.testing.assert_close(logits(pruned), forced_logits(base, PLAN, calibration), atol=1e-5, rtol=0)


def test_compensated_adds_to_an_existing_bias():
    base = tiny_model("llama", mlp_bias=True)
    old_bias = base.model.layers[1].mlp.down_proj.bias.detach().clone()
    calibration = {0: torch.ones(64), 1: torch.ones(64)}
    pruned = copy.deepcopy(base)
    fp.prune(pruned, PLAN, pruner="compensated", calibration=calibration, registry=REG)
    down1 = base.model.layers[1].mlp.down_proj.weight.detach()
    torch.testing.assert_close(pruned.model.layers[1].mlp.down_proj.bias, old_bias + down1[:, [2, 3]].sum(1))
    torch.testing.assert_close(logits(pruned), forced_logits(base, PLAN, calibration), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("calibration", "fragment"), [
    (None, "needs calibration"),
    ({0: torch.zeros(64)}, "no entry for layer 1"),
    ({0: torch.zeros(63), 1: torch.zeros(64)}, "layer 0 must be a finite float tensor of shape"),
    ({0: torch.zeros(64), 1: torch.full((64,), float("nan"))}, "layer 1 must be a finite"),
])
def test_compensated_rejects_bad_calibration_untouched(calibration, fragment):
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PlanError, match=fragment):
        fp.prune(model, PLAN, pruner="compensated", calibration=calibration, registry=REG)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
