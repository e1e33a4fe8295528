"""The random-neuron control: draws keep the plan's per-layer counts and avoid guarded neurons, zeroing by
hooks equals pruning, and the comparison with the method is computed from the draws' own measurements."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

import fairprune as fp
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.protocols import PromptGroup
from fairprune.core.contract.registry import Registry
from fairprune.core.contract.results import EvalContext, reduction_pct
from fairprune.core.method.attribution import neuron_hooks
from fairprune.core.model.adapters import resolve_adapter
from fairprune.plugins.evaluators.random_control import RandomControlEvaluator, bias_measures, draw_neurons
from fairprune.testing import tiny_char_tokenizer, tiny_model, tiny_tokenizer
from fairprune.testing.evaluators import model_pair, run_evaluator

TEMPLATES = {"room": "the {} man walked into the room and", "job": "the {} woman has a new job at the",
             "doctor": "the {} doctor said that the", "school": "a {} student went to school because"}


def _groups() -> list[PromptGroup]:
    # two groups per template: "black"/"white", and a word swap of one group ("hispanic"/"latino") beside it
    out = []
    for tid, text in TEMPLATES.items():
        out.append(PromptGroup("toy", tid, ("black", "white"), tuple(text.format(a) for a in ("black", "white"))))
        out.append(PromptGroup("toy", tid, ("black", "asian"), tuple(text.format(a) for a in ("black", "asian"))))
    return out


def test_draws_keep_the_plans_counts_and_avoid_guarded_neurons():
    counts, widths = {0: 3, 2: 5}, {0: 64, 2: 64}
    guarded = {0: torch.arange(64) < 50, 2: torch.zeros(0, dtype=torch.bool)}  # layer 2: no guard
    draws = draw_neurons(counts, widths, guarded, 4, seed=7)
    assert len(draws) == 4
    for plan in draws:
        assert {layer: len(idx) for layer, idx in plan.items()} == counts
        assert all(i >= 50 for i in plan[0])
        assert len(set(plan[2])) == 5 and all(0 <= i < 64 for i in plan[2])
    assert len({tuple(p[2]) for p in draws}) > 1  # different draws
    assert draws == draw_neurons(counts, widths, guarded, 4, seed=7)  # seeded


def test_a_layer_with_too_few_unguarded_neurons_is_refused():
    with pytest.raises(ConfigError, match="layer 1 has 2 unguarded neurons, fewer than the plan's 3"):
        draw_neurons({1: 3}, {1: 8}, {1: torch.arange(8) < 6}, 1, seed=0)


def test_zeroing_by_hooks_equals_pruning_on_a_tiny_model():
    base = tiny_model("llama")
    plan = {0: [1, 2, 3, 40], 1: [5, 63]}
    pruned = copy.deepcopy(base)
    fp.prune(pruned, plan)
    context = EvalContext(tokenizer=tiny_tokenizer(), groups=_groups(), batch_size=3, progress=False)
    with neuron_hooks(base, resolve_adapter(base), removed=plan):
        zeroed = bias_measures(base, context, "zeroed")
    removed = bias_measures(pruned, context, "pruned")
    for key in ("between", "floor_between", "within"):
        np.testing.assert_allclose(zeroed[key], removed[key], rtol=1e-4, atol=1e-9)
    untouched = bias_measures(base, context, "base")  # the hooks are gone afterwards
    assert not np.allclose(untouched["between"], zeroed["between"])


@pytest.fixture(scope="module")
def control():
    """The control of a tiny Llama that lost 9 neurons; layer 0 guards its first half, layer 1 all but 16."""
    base = tiny_model("llama")
    plan = {0: [0, 1, 2, 3, 4, 5], 1: [10, 11, 12]}
    pruned = copy.deepcopy(base)
    fp.prune(pruned, plan)
    guarded = {0: torch.arange(64) < 32, 1: torch.arange(64) >= 16}
    evaluator = RandomControlEvaluator().configure({"draws": 3, "n_boot": 100})
    pair = model_pair(base, pruned, tiny_tokenizer(), _groups(), batch_size=4, seed=3, progress=False,
                      registry=Registry(), plan=plan, guarded=guarded)
    named = [(evaluator.name, evaluator)]
    from fairprune.core.run.evaluation import compare_all, observe_all

    seen_base = observe_all(named, base, pair.context, "base", resolve_adapter(base))
    seen_pruned = observe_all(named, pruned, pair.context, "pruned", resolve_adapter(pruned))
    result = compare_all(named, seen_base, seen_pruned, pair.context)[evaluator.name]
    return base, plan, guarded, pair.context, seen_base[evaluator.name], result, seen_pruned[evaluator.name]


def test_the_draws_of_a_run_keep_counts_and_avoid_the_guard(control):
    _, plan, guarded, _, observation, result, _ = control
    assert len(observation["drawn"]) == 3 and result.metrics["n_draws"] == 3.0
    for drawn in observation["drawn"]:
        assert {layer: len(v) for layer, v in drawn.items()} == {layer: len(v) for layer, v in plan.items()}
        for layer, idx in drawn.items():
            assert not guarded[layer][idx].any()


def test_each_draw_is_measured_on_the_base_model_with_its_neurons_zeroed(control):
    base, _, _, context, observation, result, _ = control
    ctx = context.observing("base", resolve_adapter(base))
    base_between = np.mean(observation["measures"]["between"])
    changes = []
    for k, drawn in enumerate(observation["drawn"]):
        with neuron_hooks(base, resolve_adapter(base), removed=drawn):
            again = bias_measures(base, ctx, "check")
        expected = reduction_pct(base_between, np.mean(again["between"]))
        assert result.metrics[f"control_between_reduction_pct_{k + 1}"] == pytest.approx(expected, rel=1e-6)
        changes.append(expected)
    method = result.metrics["between_reduction_pct"]
    assert result.metrics["between_vs_control_pts"] == pytest.approx(method - np.mean(changes), rel=1e-6)
    assert result.metrics["control_between_reduction_pct_max"] == pytest.approx(max(changes))
    assert result.metrics["between_beyond_control"] == float(method > max(changes))
    lo, hi = result.intervals["between_vs_control_pts"]
    assert lo <= hi
    assert not math.isnan(result.metrics["within_vs_control_pts"])  # the toy groups have a word swap per template


def test_between_minus_within_is_the_difference_of_the_reductions(control):
    _, _, _, _, observation, result, pruned_observation = control
    m = result.metrics
    assert m["n_floor_templates"] == 4.0
    b, p = observation["measures"], pruned_observation["measures"]
    between = reduction_pct(np.mean(b["floor_between"]), np.mean(p["floor_between"]))
    within = reduction_pct(np.mean(b["within"]), np.mean(p["within"]))
    assert m["within_reduction_pct"] == pytest.approx(within)
    assert m["between_minus_within_pts"] == pytest.approx(between - within)
    findings = [row["text"] for row in result.tables["findings"]]
    assert "between two words for the same group" in findings[0]
    share = 100 * np.mean(b["within"]) / np.mean(b["floor_between"])
    assert m["floor_share_pct"] == pytest.approx(share)
    assert f"floor was {share:.0f}% of the between-group divergence" in findings[0]
    assert "3 draws" in findings[1]
    json.dumps(result.to_dict(), allow_nan=False)


def test_without_a_plan_the_control_says_why():
    base = tiny_model("llama")
    evaluator = RandomControlEvaluator().configure({"n_boot": 50})
    pair = model_pair(base, copy.deepcopy(base), tiny_tokenizer(), _groups(), batch_size=4, progress=False)
    result = run_evaluator(evaluator, pair)
    assert math.isnan(result.metrics["between_vs_control_pts"])
    assert "No random control" in result.tables["findings"][1]["text"]


def test_a_run_plans_before_it_observes_and_the_control_uses_the_plan(tmp_path):
    source = tmp_path / "tiny"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), source)
    config = {"model": {"source": str(source)}, "bias": {"axes": ["race"], "batch_size": 8},
              "method": {"name": "activation", "guard_magnitude_ratio": 1.5}, "pruning": {"budget": {"neurons": 8}},
              "evaluation": {"evaluators": [{"name": "random_control", "params": {"draws": 2, "n_boot": 50}}]},
              "output": {"dir": str(tmp_path / "run"), "save_model": False}}
    result = fp.run(config, progress=False)
    metrics = result.metrics["evaluation"]["random_control"]["metrics"]
    assert metrics["n_draws"] == 2.0
    tables = result.metrics["evaluation"]["random_control"]["tables"]
    assert [row["neurons"] for row in tables["draws"]] == [result.plan.n_neurons] * 2
    for draw in (1, 2):  # the saved draws keep the plan's count in every layer
        drawn = {row["layer"]: row["neurons"] for row in tables["drawn_neurons"] if row["draw"] == draw}
        assert {layer: len(v) for layer, v in drawn.items()} == {layer: len(v) for layer, v in
                                                                 result.plan.removed.items() if v}


def test_output_bias_and_the_control_read_one_held_out_pass_per_model(monkeypatch):
    """The held-out next-token pass is shared through the observing context's memo: run once per observed
    model (not once per evaluator), never carried from the base model to the pruned one, and the observations
    equal those of each evaluator observing alone."""
    from fairprune.core.model import lm_scoring
    from fairprune.core.run.evaluation import observe_all
    from fairprune.plugins.evaluators.output_bias import OutputBiasEvaluator

    base = tiny_model("llama")
    plan = {0: [0, 1, 2, 3], 1: [10, 11]}
    pruned = copy.deepcopy(base)
    fp.prune(pruned, plan)
    pair = model_pair(base, pruned, tiny_tokenizer(), _groups(), batch_size=4, seed=3, progress=False,
                      registry=Registry(), plan=plan, guarded={})
    control = RandomControlEvaluator().configure({"draws": 2, "n_boot": 50})
    bias = OutputBiasEvaluator().configure({"n_boot": 50, "transfer": False, "continuations": [" the"]})
    both = [(bias.name, bias), (control.name, control)]

    calls: list[str] = []
    real = lm_scoring.last_token_logprobs

    def counted(model, tokenizer, prompts, *args, **kwargs):
        calls.append("pruned" if model is pruned else "base")
        return real(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(lm_scoring, "last_token_logprobs", counted)
    together = {label: observe_all(both, model, pair.context, label, resolve_adapter(model))
                for label, model in (("base", base), ("pruned", pruned))}
    # base: the shared held-out pass and one per random draw; pruned: the shared pass alone
    assert calls == ["base"] * 3 + ["pruned"]

    for label, model in (("base", base), ("pruned", pruned)):
        alone = {name: observe_all([(name, ev)], model, pair.context, label, resolve_adapter(model))[name]
                 for name, ev in both}
        assert alone[bias.name]["js"] == together[label][bias.name]["js"]
        assert alone[control.name]["measures"] == together[label][control.name]["measures"]
    assert together["base"][bias.name]["js"] != together["pruned"][bias.name]["js"]
