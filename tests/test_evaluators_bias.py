"""Bias evaluators: hand-computed JS divergence, activation distances against a manual forward pass."""

from __future__ import annotations

import copy
import math
from itertools import combinations

import pytest
import torch

from fairprune.core.contract.protocols import PromptGroup
from fairprune.core.contract.registry import Registry
from fairprune.plugins.evaluators.output_bias import js_divergence
from fairprune.testing import tiny_model, tiny_tokenizer
from fairprune.testing.evaluators import ModelPair, model_pair, run_evaluator


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


GROUPS = [
    PromptGroup("race", "a", ("black", "white"), ("the black man was", "the white man was")),
    PromptGroup("race", "b", ("black", "white"), ("a black woman said that she", "a white woman said that she")),
    PromptGroup("race", "c", ("black", "white"), ("the black doctor went home", "the white doctor went home")),
]


def context(base, pruned, registry, groups=GROUPS) -> ModelPair:
    adapter = registry.get("architectures", "glu")
    return model_pair(base, pruned, tiny_tokenizer(), list(groups), adapter, batch_size=4,
                       registry=registry, progress=False)


def test_js_divergence_matches_hand_computation() -> None:
    p, q = torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([0.9, 0.1], dtype=torch.float64)
    m = [0.7, 0.3]
    expected = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) \
        + 0.5 * (0.9 * math.log(0.9 / m[0]) + 0.1 * math.log(0.1 / m[1]))
    assert js_divergence(p.log(), q.log()).item() == pytest.approx(expected, rel=1e-9)
    # disjoint supports: the maximum, ln 2 (zero probabilities handled as 0 log 0 = 0)
    disjoint = js_divergence(torch.tensor([1.0, 0.0]).log(), torch.tensor([0.0, 1.0]).log()).item()
    assert disjoint == pytest.approx(math.log(2))
    assert js_divergence(q.log(), q.log()).item() == pytest.approx(0.0, abs=1e-12)


def test_output_bias_matches_manual_distributions(registry: Registry) -> None:
    model = tiny_model("llama")
    tok = tiny_tokenizer()
    evaluator = registry.create("evaluators", "output_bias", {"continuations": [" was", " the man"], "n_boot": 100})
    result = run_evaluator(evaluator, context(model, model, registry))
    js, gaps = [], []
    for group in GROUPS:
        logps = []
        for prompt in group.prompts:
            ids = torch.tensor([tok(prompt)["input_ids"]])
            with torch.no_grad():
                logps.append(torch.log_softmax(model(ids).logits[0, -1].double(), -1))
        js.append(js_divergence(logps[0], logps[1]).item())
        was = tok(" was", add_special_tokens=False)["input_ids"][0]
        the, man = tok(" the man", add_special_tokens=False)["input_ids"]
        cont = []
        for prompt, lp in zip(group.prompts, logps):
            ids = torch.tensor([tok(prompt)["input_ids"] + [the]])
            with torch.no_grad():
                second = torch.log_softmax(model(ids).logits[0, -1].double(), -1)[man]
            cont.append((lp[was].item(), (lp[the] + second).item()))
        gaps.append((abs(cont[0][0] - cont[1][0]) + abs(cont[0][1] - cont[1][1])) / 2)
    assert result.metrics["js_base"] == pytest.approx(sum(js) / 3, rel=1e-4)
    assert result.metrics["logprob_gap_base"] == pytest.approx(sum(gaps) / 3, rel=1e-4)
    assert result.metrics["js_reduction_pct"] == 0.0


def test_output_bias_is_zero_for_groups_of_identical_prompts(registry: Registry) -> None:
    same = [PromptGroup("race", "s", ("x", "y"), ("the man was", "the man was"))]
    model = tiny_model("llama")
    result = run_evaluator(registry.create("evaluators", "output_bias", {"n_boot": 20}), context(model, model, registry,
                                                                                           same))
    assert result.metrics["js_base"] == pytest.approx(0.0, abs=1e-9)
    assert result.metrics["logprob_gap_base"] == pytest.approx(0.0, abs=1e-6)


def test_activation_bias_matches_manual_mean_pooled_residual(registry: Registry) -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    result = run_evaluator(registry.create("evaluators", "activation_bias", {"n_boot": 50}), 
        context(model, model, registry))
    expected = []
    for group in GROUPS:
        pooled = []
        for prompt in group.prompts:
            with torch.no_grad():
                out = model(torch.tensor([tok(prompt)["input_ids"]]), output_hidden_states=True)
            pooled.append(out.hidden_states[1][0].double().mean(0))  # output of layer 0, mean over tokens
        expected.append((pooled[0] - pooled[1]).abs().mean().item())
    row = next(r for r in result.tables["layers"] if r["site"] == "residual" and r["layer"] == 0)
    assert row["base"] == pytest.approx(sum(expected) / 3, rel=1e-4)
    assert {(r["site"], r["layer"]) for r in result.tables["layers"]} == \
        {(s, layer) for s in ("residual", "mlp_out") for layer in range(2)}


def test_activation_bias_sees_pruning_and_averages_layers(registry: Registry) -> None:
    base = tiny_model("llama")
    pruned = copy.deepcopy(base)
    adapter = registry.get("architectures", "glu")
    for layer in range(2):
        adapter.keep(pruned, layer, torch.arange(0, 64, 2))
    result = run_evaluator(registry.create("evaluators", "activation_bias", {"n_boot": 50}), 
        context(base, pruned, registry))
    assert result.metrics["mlp_out_reduction_pct"] != pytest.approx(0.0, abs=1e-3)
    rows = [r for r in result.tables["layers"] if r["site"] == "residual"]
    assert result.metrics["residual_base"] == pytest.approx(sum(r["base"] for r in rows) / len(rows), rel=1e-9)
    assert result.metrics["residual_pruned"] == pytest.approx(sum(r["pruned"] for r in rows) / len(rows), rel=1e-9)
    assert result.metrics["reduction_pct"] == result.metrics["residual_reduction_pct"]
    lo, hi = result.intervals["residual_reduction_pct"]
    assert lo <= result.metrics["residual_reduction_pct"] <= hi


def test_activation_bias_handles_groups_of_three_members(registry: Registry) -> None:
    three = [PromptGroup("race", f"t{i}", ("black", "white", "asian"),
                         tuple(f"the {a} man {w}" for a in ("black", "white", "asian")))
             for i, w in enumerate(["was", "said no", "went home"])]
    model = tiny_model("llama")
    result = run_evaluator(registry.create("evaluators", "activation_bias", {"n_boot": 20, "sites": ["residual"]}), 
        context(model, model, registry, three + GROUPS))
    assert result.metrics["n_groups"] == 6 and result.metrics["residual_reduction_pct"] == 0.0
    assert len(list(combinations(range(3), 2))) == 3


def test_the_reported_js_is_the_attribution_objectives_value_on_the_same_groups(registry: Registry) -> None:
    """One JS for both: the figure output_bias shows per group equals what next_token_js optimises."""
    from fairprune.core.method import attribution as attr
    from fairprune.core.model import divergence

    model, tok = tiny_model("llama"), tiny_tokenizer()
    evaluator = registry.create("evaluators", "output_bias", {"n_boot": 50})
    observed = evaluator.observe(model, context(model, model, registry).context)
    objective = registry.create("bias_objectives", "next_token_js").bind(tok)
    batches = attr.group_batches(model, tok, GROUPS, 4)
    values = attr.objective_values(model, batches, objective, registry.get("architectures", "glu"))
    assert observed["js"] == pytest.approx(values, rel=1e-5, abs=1e-9)
    assert js_divergence is divergence.js_divergence
    from fairprune.plugins import objectives

    assert objectives.pair_js(torch.randn(3, 7).log_softmax(-1))[0].dtype == torch.float32
