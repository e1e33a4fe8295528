"""The batched collection engine: exact against a prompt-by-prompt reference, hooks cleaned up, early stop."""

from __future__ import annotations

import pytest
import torch

from fairprune.core.contract.errors import PromptError
from fairprune.core.contract.registry import Registry
from fairprune.core.data.prompts import pairs_to_groups
from fairprune.core.method.collect import capture, collect_pooled, collect_prompts
from fairprune.core.model.adapters import resolve_adapter
from fairprune.testing import tiny_model, tiny_tokenizer

REGISTRY = Registry(load_entrypoints=False)

PAIRS = [
    ("the black man walked into the room . the doctor said he", "the white man walked into the room . the doctor said he"),
    ("a young woman works at the school", "an old woman works at the school"),
    ("the asian student was very smart and", "the hispanic student was very smart and"),
    ("his rich friend lives in the city", "his poor friend lives in the city"),
    ("the muslim family went home", "the christian family went home"),
]
TRIPLE = [("the black man is a doctor", "the white man is a doctor", "the arab man is a doctor")]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_hidden_layers=3)


def reference(model, tok, groups, role, pooling):
    """Prompt by prompt, unpadded, with a plain hook: the definition the engine must match."""
    adapter = resolve_adapter(model, registry=REGISTRY)
    n_layers = len(adapter.layers(model))
    pooled = {i: [] for i in range(n_layers)}
    abs_sum = {i: 0.0 for i in range(n_layers)}
    total = {i: 0.0 for i in range(n_layers)}
    n_tokens = 0
    for group in groups:
        ids = [tok(p)["input_ids"] for p in group.prompts]
        for j, mine in enumerate(ids):
            diverge = min(next((t for t, (x, y) in enumerate(zip(mine, o)) if x != y), min(len(mine), len(o)))
                          for k, o in enumerate(ids) if k != j)
            seen = {}
            handles = []
            for i in range(n_layers):
                target = adapter.site(model, i, role)
                if target.use_input:
                    handles.append(target.module.register_forward_pre_hook(
                        lambda m, a, i=i, seen=seen: seen.__setitem__(i, a[0])))
                else:
                    handles.append(target.module.register_forward_hook(
                        lambda m, a, o, i=i, seen=seen: seen.__setitem__(i, o[0] if isinstance(o, tuple) else o)))
            with torch.no_grad():
                model(torch.tensor([mine]))
            for h in handles:
                h.remove()
            for i in range(n_layers):
                h = seen[i][0].float()
                part = {"mean": h, "suffix": h[min(diverge, len(mine) - 1):], "last": h[-1:]}[pooling]
                pooled[i].append(part.mean(0))
                abs_sum[i] = abs_sum[i] + h.abs().sum(0)
                total[i] = total[i] + h.sum(0)
            n_tokens += len(mine)
    n = len(groups[0].prompts)
    return ({i: torch.stack(v).reshape(len(groups), n, -1) for i, v in pooled.items()},
            {i: v / n_tokens for i, v in abs_sum.items()}, {i: v / n_tokens for i, v in total.items()}, n_tokens)


@pytest.mark.parametrize("pooling", ["mean", "suffix", "last"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_equals_prompt_by_prompt(model, pooling, side, batch_size):
    tok = tiny_tokenizer(padding_side=side)
    groups = pairs_to_groups(PAIRS)
    want, magnitude, mean, n_tokens = reference(model, tok, groups, "neuron", pooling)
    got = collect_pooled(model, tok, groups, pooling=pooling, batch_size=batch_size, progress=False,
                         registry=REGISTRY)
    assert got.n_tokens == n_tokens
    for layer in want:
        assert got.pooled[layer].shape == (len(PAIRS), 2, 64)
        torch.testing.assert_close(got.pooled[layer], want[layer], atol=1e-5, rtol=0)
        torch.testing.assert_close(got.magnitude[layer], magnitude[layer], atol=1e-5, rtol=0)
        torch.testing.assert_close(got.mean[layer], mean[layer], atol=1e-5, rtol=0)


@pytest.mark.parametrize("site,role,width", [("gate", "gate", 64), ("up", "up", 64), ("mlp_out", "mlp_out", 32),
                                             ("residual", "residual", 32)])
def test_every_site_matches_the_reference(model, site, role, width):
    tok = tiny_tokenizer(padding_side="left")
    groups = pairs_to_groups(TRIPLE)
    want, _, _, _ = reference(model, tok, groups, role, "suffix")
    got = collect_pooled(model, tok, groups, site=site, batch_size=2, progress=False, registry=REGISTRY)
    for layer in want:
        assert got.pooled[layer].shape == (1, 3, width)
        torch.testing.assert_close(got.pooled[layer], want[layer], atol=1e-5, rtol=0)


def test_several_sites_in_one_pass_equal_separate_passes(model):
    tok = tiny_tokenizer()
    groups = pairs_to_groups(PAIRS)
    both = collect_prompts(model, tok, groups, sites=("gate", "up"), pooling="mean", progress=False,
                           registry=REGISTRY)
    for site in ("gate", "up"):
        alone = collect_prompts(model, tok, groups, sites=(site,), pooling="mean", progress=False,
                                registry=REGISTRY)[site]
        for layer in alone.per_prompt:
            torch.testing.assert_close(both[site].per_prompt[layer], alone.per_prompt[layer], atol=1e-6, rtol=0)


def test_only_requested_layers_are_collected(model):
    got = collect_pooled(model, tiny_tokenizer(), pairs_to_groups(PAIRS[:2]), layers=[1], progress=False,
                         registry=REGISTRY)
    assert list(got.pooled) == [1]


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_after_success_and_after_an_exception(model):
    before = hook_count(model)
    collect_pooled(model, tiny_tokenizer(), pairs_to_groups(PAIRS[:2]), site="residual", progress=False,
                   registry=REGISTRY)
    assert hook_count(model) == before

    def failing(site, layer, activation):
        raise RuntimeError("reducer failed")

    adapter = resolve_adapter(model, registry=REGISTRY)
    with (pytest.raises(RuntimeError, match="reducer failed"),
          capture(model, adapter, ["neuron", "gate"], [0, 2], failing, registry=REGISTRY) as run):
        assert hook_count(model) == before + 4
        run.forward(input_ids=torch.tensor([[5, 6, 7]]))
    assert hook_count(model) == before
    assert not any("_optipfair" in k or "activation" in k for k in vars(model))


def test_forward_stops_after_the_last_needed_layer(model):
    calls = []
    handles = [model.lm_head.register_forward_hook(lambda *a: calls.append("lm_head")),
               model.model.layers[2].register_forward_hook(lambda *a: calls.append("layer2"))]
    try:
        collect_pooled(model, tiny_tokenizer(), pairs_to_groups(PAIRS[:2]), layers=[0, 1], progress=False,
                       registry=REGISTRY)
    finally:
        for h in handles:
            h.remove()
    assert calls == []


def test_tokenizer_without_pad_token_is_not_changed(model):
    tok = tiny_tokenizer()
    tok.pad_token = None
    groups = pairs_to_groups(PAIRS)
    got = collect_pooled(model, tok, groups, batch_size=4, progress=False, registry=REGISTRY)
    assert tok.pad_token is None
    want, _, _, _ = reference(model, tok, groups, "neuron", "suffix")
    torch.testing.assert_close(got.pooled[0], want[0], atol=1e-5, rtol=0)


def test_members_that_tokenize_alike_are_rejected(model):
    groups = pairs_to_groups([("the zebra man is here", "the giraffe man is here")])  # both map to <unk>
    with pytest.raises(PromptError, match="same token ids"):
        collect_pooled(model, tiny_tokenizer(), groups, progress=False, registry=REGISTRY)


def test_prompts_longer_than_the_context_are_rejected():
    small = tiny_model("llama", max_position_embeddings=8)
    long = "the black man walked into the room and said that he was"
    groups = pairs_to_groups([(long, long.replace("black", "white"))])
    with pytest.raises(PromptError, match="more than the model's context of 8") as info:
        collect_pooled(small, tiny_tokenizer(), groups, progress=False, registry=REGISTRY)
    assert long in str(info.value)


def test_groups_of_different_sizes_are_rejected_by_collect_pooled(model):
    groups = pairs_to_groups(PAIRS[:1]) + pairs_to_groups(TRIPLE)
    with pytest.raises(PromptError, match="different numbers of members"):
        collect_pooled(model, tiny_tokenizer(), groups, progress=False, registry=REGISTRY)


def test_other_architectures_match_the_reference():
    for arch in ("qwen2", "gemma3", "phi3"):
        m = tiny_model(arch)
        tok = tiny_tokenizer(padding_side="left")
        groups = pairs_to_groups(PAIRS[:3])
        want, magnitude, _, _ = reference(m, tok, groups, "neuron", "suffix")
        got = collect_pooled(m, tok, groups, batch_size=4, progress=False, registry=REGISTRY)
        for layer in want:
            torch.testing.assert_close(got.pooled[layer], want[layer], atol=1e-5, rtol=0, msg=arch)
            torch.testing.assert_close(got.magnitude[layer], magnitude[layer], atol=1e-5, rtol=0, msg=arch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_reducer_sums_equal_a_fresh_float32_copy_and_reuse_one_buffer(dtype):
    """The hook's reductions are those of ``h.float()``, whatever the dtype and layout, while every hook reuses one
    float32 scratch buffer (a fresh activation-sized tensor per hook costs page faults). Equal to float32 rounding:
    BLAS may sum a strided and a contiguous copy in different orders (seen on some CPUs: 1 ulp)."""
    from fairprune.core.method.collect import _PooledReducer

    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(4, 6, generator=gen) > 0.3
    weights = mask.float() / mask.float().sum(1, keepdim=True).clamp(min=1)
    reducer = _PooledReducer(n_prompts=8)
    reducer.start([5, 1, 0, 7], weights, mask)
    stack = torch.stack([weights, mask.float()], 1)
    buffers = set()
    for layer, width in enumerate((32, 16, 32)):
        wide = torch.randn(4, 6, 2 * width, generator=gen, dtype=torch.float64).to(dtype)
        activation = wide[..., ::2]  # a strided view, as a fused gate_up's half is
        reducer("neuron", layer, activation)
        h = activation.float()
        want_sums, want_abs = torch.bmm(stack, h), torch.bmm(stack[:, 1:], h.abs())[:, 0]
        rows = torch.tensor([5, 1, 0, 7])
        torch.testing.assert_close(reducer.pooled[("neuron", layer)][rows], want_sums[:, 0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(reducer.sum[("neuron", layer)][rows], want_sums[:, 1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(reducer.abs_sum[("neuron", layer)][rows], want_abs, rtol=1e-6, atol=1e-6)
        assert torch.equal(activation, wide[..., ::2])  # the model's activation is never written
        buffers.add(reducer.scratch[torch.device("cpu")].data_ptr())
    assert len(buffers) == 1
