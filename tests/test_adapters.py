"""The built-in adapters find, read and cut the GLU MLP of every tiny architecture."""

from __future__ import annotations

import pytest
import torch

import fairprune as fp
from fairprune.core.contract.registry import Registry
from fairprune.testing import TINY_ARCHITECTURES, tiny_model

REG = Registry(load_entrypoints=False)
INPUT = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(2))


def capture(target, model):
    """The tensor seen at a SiteTarget during one forward pass."""
    seen = []
    if target.use_input:
        handle = target.module.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    else:
        handle = target.module.register_forward_hook(lambda m, args, out: seen.append(out))
    try:
        with torch.no_grad():
            model(INPUT)
    finally:
        handle.remove()
    value = seen[0]
    return target.select(value) if target.select is not None else value


@pytest.mark.parametrize("arch", sorted(TINY_ARCHITECTURES))
def test_adapter_shapes_and_sites(arch):
    model = tiny_model(arch)
    adapter = fp.resolve_adapter(model, registry=REG)
    assert adapter.name == ("fused_gate_up" if arch == "phi3" else "glu")
    hidden, width = model.config.hidden_size, model.config.intermediate_size
    assert len(adapter.layers(model)) == model.config.num_hidden_layers
    for layer in range(len(adapter.layers(model))):
        gate, up = adapter.gate_up(model, layer)
        assert gate.shape == up.shape == (width, hidden)
        assert adapter.down(model, layer).shape == (hidden, width)
        assert adapter.width(model, layer) == width
        neuron = capture(adapter.site(model, layer, "neuron"), model)
        gate_out = capture(adapter.site(model, layer, "gate"), model)
        up_out = capture(adapter.site(model, layer, "up"), model)
        assert neuron.shape[-1] == gate_out.shape[-1] == up_out.shape[-1] == width
        assert capture(adapter.site(model, layer, "residual"), model).shape[-1] == hidden
        act = adapter.mlp(model, layer)
        act_fn = getattr(act, "act_fn", None) or act.activation_fn
        torch.testing.assert_close(neuron, act_fn(gate_out) * up_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_keep_selects_rows_and_columns_in_order(arch):
    model = tiny_model(arch)
    adapter = fp.resolve_adapter(model, registry=REG)
    gate, up = (t.detach().clone() for t in adapter.gate_up(model, 1))
    down = adapter.down(model, 1).detach().clone()
    keep = torch.tensor([9, 2, 40])
    adapter.keep(model, 1, keep)
    new_gate, new_up = adapter.gate_up(model, 1)
    assert torch.equal(new_gate, gate[keep]) and torch.equal(new_up, up[keep])
    assert torch.equal(adapter.down(model, 1), down[:, keep])
    assert adapter.width(model, 1) == 3


def test_set_widths_uniform_and_not():
    model = tiny_model("gemma3")
    adapter = fp.resolve_adapter(model, registry=REG)
    adapter.set_widths(model, [10, 20, 30])
    assert model.config.intermediate_size == 30 and model.config.fairprune_intermediate_sizes == [10, 20, 30]
    adapter.set_widths(model, [12, 12, 12])
    assert model.config.intermediate_size == 12
