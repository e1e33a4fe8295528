"""The pruning snapshot: it saves only the planned slices of gate/up/down, holds no replaced weight, restores exactly."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fairprune.core.contract.errors import PluginContractError
from fairprune.core.contract.registry import Registry
from fairprune.core.method.snapshot import Snapshot, mlp_slices
from fairprune.testing import tiny_model

REG = Registry(load_entrypoints=False)
INPUT = torch.tensor([[1, 5, 9, 13, 17, 21]])
PLAN = {0: [1, 2, 40], 1: [3]}


def adapter_for(model):
    from fairprune.core.method.surgery import resolve_adapter

    return resolve_adapter(model, registry=REG)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def snapshot(model, plan=PLAN, only_planned=True):
    adapter = adapter_for(model)
    return Snapshot(mlp_slices(model, adapter, plan), [model.config], only_planned=only_planned), adapter


def assert_restored(model, before, logits):
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(INPUT).logits, logits)


@pytest.mark.parametrize("arch", ["llama", "phi3", "qwen2"])
def test_structural_prune_is_undone_bit_for_bit(arch):
    model = tiny_model(arch)
    before, config = state(model), model.config.to_dict()
    with torch.no_grad():
        logits = model(INPUT).logits
    snap, adapter = snapshot(model)
    widths = [adapter.width(model, i) for i in range(len(adapter.layers(model)))]
    for layer, removed in PLAN.items():
        keep = [i for i in range(widths[layer]) if i not in removed]
        adapter.keep(model, layer, torch.tensor(keep))
    adapter.set_widths(model, [adapter.width(model, i) for i in range(len(widths))])
    assert [adapter.width(model, i) for i in PLAN] == [widths[i] - len(v) for i, v in PLAN.items()]
    snap.restore()
    assert model.config.to_dict() == config
    assert_restored(model, before, logits)


def test_only_the_planned_slices_are_copied():
    model = tiny_model("llama")
    snap, _ = snapshot(model)
    hidden = model.config.hidden_size
    sliced = sum(e.removed.numel() for e in snap.sliced)
    assert sliced == 3 * hidden * sum(len(v) for v in PLAN.values())  # gate rows, up rows, down columns
    whole = sum(e.data.numel() for e in snap.whole if e.data is not None)
    assert whole == 0  # a Llama MLP has no biases


def test_a_replaced_weight_is_freed_while_the_snapshot_lives():
    """The snapshot keeps no reference to the old weight, so a structural prune does not double the memory."""
    model = tiny_model("llama")
    snap, adapter = snapshot(model)
    old = weakref.ref(model.model.layers[0].mlp.gate_proj.weight)
    adapter.keep(model, 0, torch.arange(10, 64))
    gc.collect()
    assert old() is None
    with pytest.raises(PluginContractError, match="only the planned neurons may be removed"):
        snap.restore()  # arange(10, 64) removed more than the plan's [1, 2, 40]


def test_masking_in_place_and_an_added_down_bias_are_undone():
    model = tiny_model("llama")
    before = state(model)
    with torch.no_grad():
        logits = model(INPUT).logits
    snap, adapter = snapshot(model)
    params = list(model.parameters())
    down = model.model.layers[0].mlp.down_proj
    with torch.no_grad():
        gate, up = adapter.gate_up(model, 0)
        gate[[1, 2, 40]] = 0
        up[[1, 2, 40]] = 0
        adapter.down(model, 0)[:, [1, 2, 40]] = 0
        down.bias = torch.nn.Parameter(torch.ones(down.out_features))
    snap.restore()
    assert down.bias is None
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert_restored(model, before, logits)


def test_whole_copies_undo_any_change_for_pruners_that_do_not_promise_less():
    model = tiny_model("llama")
    before = state(model)
    with torch.no_grad():
        logits = model(INPUT).logits
    snap, adapter = snapshot(model, only_planned=False)
    adapter.keep(model, 0, torch.arange(10))
    with torch.no_grad():
        adapter.down(model, 1).mul_(2)
    snap.restore()
    assert_restored(model, before, logits)


def test_a_structural_prune_holds_no_replaced_weight_at_any_time():
    """While the built-in pruner runs, each layer's old weights are freed as soon as they are replaced."""
    import fairprune as fp

    model = tiny_model("llama")
    olds = [weakref.ref(layer.mlp.gate_proj.weight) for layer in model.model.layers]
    alive_during = []

    class Spy:
        name = "spy"
        description = "structural removal that records which replaced weights are still alive"
        needs_calibration = False
        changes_only_planned = True

        def apply(self, model, adapter, plan, calibration):
            result = REG.get("pruners", "structural").apply(model, adapter, plan, calibration)
            gc.collect()
            alive_during.extend(ref() is not None for ref in olds)
            return result

    fp.prune(model, PLAN, pruner=Spy(), registry=REG)
    assert alive_during == [False, False]


@given(rows=st.integers(1, 40), cols=st.integers(1, 40), dim=st.sampled_from([0, 1]), data=st.data())
def test_in_place_compaction_equals_index_select(rows, cols, dim, data):
    """Structural pruning moves the kept slices inside the weight's own memory; the result is exact."""
    from fairprune.architectures import glu

    weight = torch.randn(rows, cols)
    size = weight.shape[dim]
    keep = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1)))
    want = weight.index_select(dim, torch.tensor(keep))
    storage = weight.untyped_storage().data_ptr()
    got = glu.compact(weight, torch.tensor(keep), dim)
    assert torch.equal(got, want) and got.is_contiguous()
    assert got.untyped_storage().data_ptr() == storage  # no second copy of the weight
