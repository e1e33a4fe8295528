"""``pruning.uniform_widths``: every layer loses the same number of neurons, with both methods, and the saved
directory loads with plain ``AutoModelForCausalLM`` giving the pruned model's logits."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

import fairprune as fp
from fairprune.core.contract.errors import ConfigError
from fairprune.core.method.planning import Plan, interleaved, plan_pruning, uniform_quota
from fairprune.testing import tiny_model

EVALUATORS = [{"name": "output_bias", "params": {"n_boot": 50}}, "parameters"]


def test_quota_is_one_width_for_every_layer_within_the_budget():
    widths = {0: 64, 1: 64, 2: 64}
    assert uniform_quota(widths, 10) == {0: 3, 1: 3, 2: 3}  # 9 of 10: the narrowest width within the budget
    assert uniform_quota(widths, 2) == {0: 0, 1: 0, 2: 0}
    assert uniform_quota({0: 64, 1: 60}, 10) == {0: 7, 1: 3}  # already uneven: both end at 57
    assert uniform_quota(widths, 30, round_to=8) == {0: 8, 1: 8, 2: 8}  # 54 -> 56, within the budget
    assert uniform_quota(widths, 20, round_to=8) == {0: 0, 1: 0, 2: 0}  # 58 -> 64: nothing
    assert uniform_quota(widths, 30, min_width=60) == {0: 4, 1: 4, 2: 4}
    # a layer with only 2 removable neurons holds every layer at 2; with round_to the width rounds up to fit
    assert uniform_quota(widths, 30, available={0: 10, 1: 2, 2: 10}) == {0: 2, 1: 2, 2: 2}
    assert uniform_quota(widths, 30, round_to=4, available={0: 10, 1: 2, 2: 10}) == {0: 0, 1: 0, 2: 0}


def test_interleaved_takes_each_layers_best_first():
    entries = [(9.0, 0, 1), (8.0, 0, 2), (7.0, 0, 3), (2.0, 1, 5), (1.0, 1, 6)]
    assert interleaved(entries) == [(9.0, 0, 1), (2.0, 1, 5), (8.0, 0, 2), (1.0, 1, 6), (7.0, 0, 3)]


def test_activation_plan_removes_the_same_top_ranked_count_per_layer():
    model = tiny_model("llama", num_hidden_layers=3)
    bias = {layer: torch.rand(64, generator=torch.Generator().manual_seed(layer)) for layer in range(3)}
    plan = plan_pruning(model, bias, budget=fp.Budget(neurons=20), uniform_widths=True)
    assert {len(v) for v in plan.removed.values()} == {6} and len(plan.removed) == 3
    assert plan.settings["uniform_widths"] is True
    uneven = plan_pruning(model, bias, budget=fp.Budget(neurons=20))
    assert len({len(uneven.removed.get(layer, [])) for layer in range(3)}) > 1  # the default is not uniform
    # within its quota each layer removes its highest-scored neurons
    from fairprune.core.contract.config import ActivationParams
    from fairprune.core.contract.registry import get_registry
    from fairprune.core.method.planning import _prunability

    imp = fp.importance(model, "max_abs_weight")
    scores = _prunability(ActivationParams(), get_registry(), bias, imp, {layer: 64 for layer in range(3)})
    for layer, removed in plan.removed.items():
        assert removed == sorted(torch.argsort(-scores[layer], stable=True)[:6].tolist())
    rounded = plan_pruning(model, bias, budget=fp.Budget(neurons=40), uniform_widths=True, round_to=8)
    assert set(rounded.widths_after()) == {56}


@pytest.fixture(scope="module")
def source(tiny_llama_dir):
    return tiny_llama_dir  # the session's saved tiny Llama (fairprune.testing.fixtures)


def config_for(source, out, method="activation", **pruning):
    chosen = {"name": method}
    if method == "attribution":
        chosen.update({"rounds": 2, "guard_fraction": 0.25, "max_perplexity_increase_pct": None,
                       "capability": {"name": "capability_cost", "params": {"chunk_tokens": 64, "max_tokens": 256}}})
    return {"model": {"source": str(source)}, "bias": {"axes": ["race"], "batch_size": 12}, "method": chosen,
            "pruning": {"budget": {"neurons": 12}, "uniform_widths": True, **pruning},
            "evaluation": {"evaluators": EVALUATORS}, "output": {"dir": str(out)}}


def assert_loads_with_transformers(source, out):
    """The saved directory through plain transformers gives the logits of the base model pruned in memory."""
    plan = Plan.load(out / "plan.json")
    model, tok = fp.load_model(str(source))
    fp.prune(model, plan)
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(plain).__name__ == "LlamaForCausalLM"
    ids = tok(["the black man works in the city", "a white woman was a good doctor"], return_tensors="pt",
              padding=True)
    with torch.no_grad():
        expected = model(**ids).logits
        got = plain(**ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    return plan


@pytest.mark.parametrize("method", ["activation", "attribution"])
def test_uniform_run_loads_with_plain_transformers(source, tmp_path, method):
    result = fp.run(config_for(source, tmp_path / method, method), progress=False)
    widths = result.metrics["pruning"]["widths_after"]
    assert len(set(widths)) == 1 and widths[0] < 64
    plan = assert_loads_with_transformers(source, result.output_dir)
    assert {len(v) for v in plan.removed.values()} == {64 - widths[0]} and len(plan.removed) == 2
    assert json.loads((result.output_dir / "config.json").read_text())["intermediate_size"] == widths[0]
    card = ModelCard.load(result.output_dir / "README.md")
    assert card.data.library_name == "transformers"
    assert "AutoModelForCausalLM.from_pretrained(path)" in card.text
    if method == "attribution":
        assert plan.settings["uniform_widths"] is True
        assert all(r["attribution"] < 0 for r in plan.records)


def test_uniform_widths_with_layers_or_too_small_a_budget_is_refused(source, tmp_path):
    with pytest.raises(ConfigError, match="pruning.*uniform_widths.*pruning.layers"):
        fp.run(config_for(source, tmp_path / "a", layers=[0]), progress=False)
    with pytest.raises(ConfigError, match="pruning.uniform_widths.*neurons=1.*2 layers"):
        fp.run(config_for(source, tmp_path / "b", budget={"neurons": 1}), progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.integration
def test_demo_config_with_uniform_widths_loads_with_plain_transformers(tmp_path):
    """The shipped demo recipe on SmolLM2 with ``--set pruning.uniform_widths=true``: plain
    ``AutoModelForCausalLM`` gives the logits of SmolLM2 pruned in memory. Only what this test reads is run:
    the analysis and selection as shipped (capability cost's text shortened), and of the evaluators only
    ``parameters`` (the shipped ones, ~6 minutes on one core, are run by the report test of test_html_report)."""
    from demo_helpers import demo_overrides, shipped_demo, trimmed

    from fairprune.commands.demo import DEMO_CONFIG
    from fairprune.core.contract.config import load_config

    # with one quota per layer the rounds raise the calibration perplexity more than the shipped 0.5% allows:
    # they were halved to fewer neurons than layers, which evening puts back (nothing removed); the README
    # gives uniform widths the 1% limit, as here
    result = fp.run(DEMO_CONFIG, demo_overrides(tmp_path / "demo", "pruning.uniform_widths=true",
                                                "method.max_perplexity_increase_pct=1.0",
                                                "evaluation.evaluators=[parameters]"), progress=False)
    shipped, ran = trimmed(shipped_demo()), load_config(result.output_dir / "config.yaml").model_dump(mode="json")
    shipped["method"]["params"]["max_perplexity_increase_pct"] = 1.0
    assert ran["method"] == shipped["method"] and ran["bias"] == shipped["bias"]  # the shipped recipe otherwise
    widths = result.metrics["pruning"]["widths_after"]
    assert len(set(widths)) == 1 and widths[0] < 1536
    assert_loads_with_transformers("smollm2-135m", result.output_dir)


def test_attribution_selection_evens_layers_by_round_then_estimate():
    from fairprune.core.method.selection import _evened, _State

    records = [{"layer": 0, "neuron": n, "round": r, "attribution": a, "cost": 0.0}
               for n, r, a in ((1, 2, -9.0), (2, 1, -0.1), (3, 1, -0.5))]
    records += [{"layer": 1, "neuron": 7, "round": 2, "attribution": -1.0, "cost": 0.0}]
    seen = []
    state = _State({0: [1, 2, 3], 1: [7]}, 4 * 10, 0.9)
    evened, kept, entry = _evened(state, records, {0: 64, 1: 64}, {0: 10, 1: 10},
                                  lambda removed: seen.append(removed) or 0.95)
    assert evened.removed == {0: [3], 1: [7]} and evened.params == 20 and evened.objective == 0.95
    assert seen == [{0: [3], 1: [7]}]  # measured again with the evened set
    assert [r["neuron"] for r in kept] == [3, 7]
    assert entry["neurons"] == -2 and entry["predicted_change"] == pytest.approx(9.1)
    assert entry["measured_change"] == pytest.approx(0.05)
    same, _, none = _evened(evened, kept, {0: 64, 1: 64}, {0: 10, 1: 10}, lambda removed: 0.0)
    assert none is None and same is evened
