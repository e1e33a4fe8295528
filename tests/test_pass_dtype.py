"""``method.pass_dtype: bfloat16``: selection's passes in bf16 autocast, per-neuron sums and objectives float32."""

from __future__ import annotations

import pytest
import torch

from fairprune.core.contract.config import AttributionParams, Budget
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.protocols import PromptGroup
from fairprune.core.method import attribution as attr
from fairprune.core.method import selection as sel
from fairprune.core.method.capability import capability_estimate
from fairprune.core.method.precision import pass_precision
from fairprune.plugins.capability_cost import CapabilityCost
from fairprune.plugins.objectives import NextTokenJS
from fairprune.testing.models import tiny_model
from fairprune.testing.tokenizer import tiny_tokenizer

TEMPLATES = ("the {} man walked into the room and", "the {} woman has a new job at the",
             "the {} doctor said that the", "a {} student went to school because", "the {} family lives in the",
             "my {} friend is a good", "the {} child said that she")
GROUPS = [PromptGroup("race", str(i), ("black", "white", "asian"), tuple(t.format(a) for a in ("black", "white", "asian")))
          for i, t in enumerate(TEMPLATES)]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = tiny_model("llama", hidden_size=64, intermediate_size=128)
    return model, tiny_tokenizer(), attr.resolve_adapter(model)


class DownInputs:
    """Records the dtype of every down_proj input of the forwards it watches, and the attention in use."""

    def __init__(self, model, adapter) -> None:
        self.model, self.attention = model, set()
        self.dtypes: set[torch.dtype] = set()
        self.handles = [adapter.site(model, layer, "neuron").module.register_forward_pre_hook(self.hook)
                        for layer in range(len(adapter.layers(model)))]

    def hook(self, module, args):
        self.dtypes.add(args[0].dtype)
        self.attention.add(self.model.config._attn_implementation)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_bf16_attribution_estimates_follow_float32_and_sum_in_float32(setup) -> None:
    model, tok, adapter = setup
    batches = attr.group_batches(model, tok, GROUPS, 6)
    objective = NextTokenJS()
    attention = model.config._attn_implementation
    wide = attr.attribute_objective(model, batches, objective, adapter)
    watch = DownInputs(model, adapter)
    try:
        with pass_precision(model, "bfloat16"):
            low = attr.attribute_objective(model, batches, objective, adapter)
    finally:
        watch.close()
    assert watch.dtypes == {torch.bfloat16}  # the pass really ran in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the bf16 weight copies were put back
    assert watch.attention == {"eager"}  # with eager attention (bf16 fused attention's backward is slow)
    assert next(model.parameters()).dtype == torch.float32  # and the model was left as it was
    assert model.config._attn_implementation == attention
    for table in (low.sums.grad, low.sums.grad_act, low.sums.act, low.sums.abs_act):
        assert all(t.dtype == torch.float32 for t in table.values())
    assert all(isinstance(v, float) for v in low.values)
    assert low.objective == pytest.approx(wide.objective, rel=0.05)
    a, b = wide.sums.delta(None), low.sums.delta(None)
    for layer in a:
        assert float(a[layer].abs().max()) > 0
        assert correlation(a[layer], b[layer]) > 0.99, layer
        assert correlation(a[layer], b[layer].roll(1)) < 0.5  # a layer's estimates are its own neurons'


def test_bf16_capability_cost_follows_float32(setup) -> None:
    model, tok, adapter = setup
    text = CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 96, "window_tokens": 4}).chunks(tok)
    wide = capability_estimate(model, text, adapter, batch_size=3)
    with pass_precision(model, "bfloat16"):
        low = capability_estimate(model, text, adapter, batch_size=3)
    assert low.loss == pytest.approx(wide.loss, rel=0.02)
    for layer in wide.cost:
        assert low.cost[layer].dtype == torch.float32
        assert correlation(wide.cost[layer], low.cost[layer]) > 0.99


def test_a_bf16_selection_records_its_dtype_and_keeps_the_model(setup) -> None:
    model, tok, adapter = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    capability = CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 64, "check_tokens": 32})
    plans = {}
    for dtype in ("float32", "bfloat16"):
        settings = AttributionParams(rounds=2, guard_fraction=0.25, min_improvement_pct=0.0,
                                     max_perplexity_increase_pct=20.0, pass_dtype=dtype)
        plans[dtype] = sel.select_by_attribution(model, tok, GROUPS, objective=NextTokenJS(), capability=capability,
                                                 budget=Budget(neurons=16), settings=settings, batch_size=6,
                                                 adapter=adapter, progress=False).plan
    assert plans["bfloat16"].settings["pass_dtype"] == "bfloat16"
    assert plans["float32"].settings["pass_dtype"] == "float32"
    assert plans["bfloat16"].n_neurons > 0
    chosen = [{(layer, n) for layer, v in p.removed.items() for n in v} for p in plans.values()]
    assert len(chosen[0] & chosen[1]) >= len(chosen[0]) // 2  # mostly the same neurons
    for key, value in model.state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key])


def test_bf16_blocks_swap_linear_weights_for_copies_and_put_the_same_tensors_back(setup) -> None:
    from fairprune.core.method.precision import original

    model, _, adapter = setup
    down = adapter.down(model, 0)
    data, head = down.data_ptr(), model.get_output_embeddings().weight.data_ptr()
    with pass_precision(model, "bfloat16"):
        assert down.dtype == torch.bfloat16
        # code that reads weights inside the block sees the float32 ones
        assert original(down).dtype == torch.float32 and original(down).data_ptr() == data
    assert down.data_ptr() == data and down.dtype == torch.float32  # the same storage back
    assert model.get_output_embeddings().weight.data_ptr() == head
    tied = tiny_model("gemma3")  # tied embeddings: the shared head weight is left alone
    embedding = tied.get_input_embeddings().weight
    with pass_precision(tied, "bfloat16"):
        assert embedding.dtype == torch.float32
        assert tied.get_output_embeddings().weight is embedding


def test_bf16_passes_are_refused_where_they_cannot_run(setup) -> None:
    model, tok, _ = setup
    double = tiny_model("llama").double()
    with pytest.raises(ConfigError, match=r"^method.pass_dtype: bfloat16 passes need a float32.*float64"), \
            pass_precision(double, "bfloat16"):
        pass
    settings = AttributionParams(pass_dtype="bfloat16")
    with pytest.raises(ConfigError, match="method.pass_dtype"):  # before any pass
        sel.select_by_attribution(double, tok, GROUPS, objective=NextTokenJS(), capability=CapabilityCost(),
                                  budget=Budget(neurons=4), settings=settings, progress=False)
    with pytest.raises(Exception, match="pass_dtype"):
        AttributionParams.model_validate({"pass_dtype": "float16"})
    with pytest.raises(ConfigError, match="must be one of float32, bfloat16"), pass_precision(model, "int8"):
        pass
