"""Core evaluation: bootstrap intervals, EvalResult serialisation, and evaluate() wiring."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from fairprune.core.contract.config import EvaluationSection
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.protocols import PromptGroup
from fairprune.core.contract.registry import Registry
from fairprune.core.contract.results import (
    EvalResult,
    bootstrap_ci,
    change_pct,
    flat_metrics,
    reduction_pct,
    results_to_dict,
)
from fairprune.core.run.evaluation import evaluate
from fairprune.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


def groups() -> list[PromptGroup]:
    words = ["was a good friend", "said no", "went into the city", "walked home"]
    return [PromptGroup("race", f"t{i}", ("black", "white"), (f"the black man {w}", f"the white man {w}"))
            for i, w in enumerate(words)]


def test_bootstrap_ci_contains_mean_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(3.0, 1.0, 30), rng.normal(3.0, 1.0, 3000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    assert 2.8 < lo_l < 3.0 < hi_l < 3.2


def test_bootstrap_ci_is_deterministic_per_seed_and_resamples_rows_together() -> None:
    pairs = np.stack([np.arange(20.0), np.arange(20.0) + 1.0], 1)
    assert bootstrap_ci(pairs, lambda a: a[:, 1].mean() - a[:, 0].mean()) == (1.0, 1.0)  # paired: always +1
    values = np.arange(50.0)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_bootstrap_ci_degenerate_inputs() -> None:
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([2.5]) == (2.5, 2.5)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci([1.0, 2.0], alpha=1.5)


def test_reduction_and_change() -> None:
    assert reduction_pct(2.0, 1.5) == 25.0
    assert change_pct(2.0, 3.0) == 50.0
    assert math.isnan(reduction_pct(0.0, 1.0))


def test_eval_result_to_dict_is_json_with_nan_as_null() -> None:
    result = EvalResult("x")
    result.add("a", 1, (0.5, 1.5))
    result.add("b", float("nan"))
    result.tables["rows"] = [{"layer": np.int64(3), "v": np.float32(0.25), "ci": (1.0, 2.0)}]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["metrics"] == {"a": 1.0, "b": None}
    assert data["intervals"] == {"a": [0.5, 1.5]}
    assert data["tables"]["rows"] == [{"layer": 3, "v": 0.25, "ci": [1.0, 2.0]}]


def test_identical_models_show_no_change_and_intervals_contain_zero(registry: Registry, tmp_path) -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    text = tmp_path / "t.txt"
    text.write_text(" ".join(["the old man was a good friend of the family and he said no ."] * 12))
    cloze = tmp_path / "c.jsonl"
    cloze.write_text("\n".join(json.dumps({"text": t}) for t in ["the man was good", "she is a teacher",
                                                                   "they went into the city"]))
    results = evaluate(model, copy.deepcopy(model), tok, groups=groups(), registry=registry, progress=False,
                       params={"capability": {"text_path": str(text), "cloze_path": str(cloze), "window": 16,
                                              "stride": 8, "n_boot": 200}})
    assert list(results) == [c.name for c in EvaluationSection().evaluators]  # the one home of the default
    flat = flat_metrics(results)
    for key in ("activation_bias.residual_reduction_pct", "activation_bias.mlp_out_reduction_pct",
                "activation_bias.reduction_pct", "output_bias.js_reduction_pct",
                "output_bias.logprob_gap_reduction_pct", "capability.text_ppl_change_pct",
                "capability.cloze_acc_change_pts", "capability.cloze_ppl_change_pct", "parameters.removed_pct"):
        assert flat[key] == pytest.approx(0.0, abs=1e-6), key
    for name, result in results.items():
        for key, (lo, hi) in result.intervals.items():
            if key.endswith(("_reduction_pct", "_change_pct", "_change_pts")):
                assert lo <= 1e-6 and hi >= -1e-6, (name, key)
    assert flat["output_bias.js_base"] > 0 and flat["activation_bias.residual_base"] > 0
    json.dumps(results_to_dict(results))


def test_evaluate_uses_heldout_groups_of_registered_axes(registry: Registry) -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    results = evaluate(model, model, tok, axes=["race"], evaluators=["output_bias"], registry=registry,
                       progress=False, params={"output_bias": {"n_boot": 50}})
    heldout = registry.create("bias_axes", "race").prompt_groups("heldout")
    assert results["output_bias"].metrics["n_groups"] == len(heldout)
    analysis_ids = {g.template_id for g in registry.create("bias_axes", "race").prompt_groups("analysis")}
    assert not analysis_ids & {row["template_id"] for row in results["output_bias"].tables["groups"]}


def test_bad_evaluator_params_name_the_field(registry: Registry) -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(ConfigError, match=r"evaluators\.capability\.params\.windw"):
        evaluate(model, model, tok, evaluators=["capability"], params={"capability": {"windw": 3}},
                 registry=registry)
    with pytest.raises(ConfigError, match="not run: output_bias"):
        evaluate(model, model, tok, evaluators=["parameters"], params={"output_bias": {}}, registry=registry)
    with pytest.raises(ConfigError, match="evaluators.capabilty.name: .*Did you mean 'capability'"):
        evaluate(model, model, tok, evaluators=["capabilty"], registry=registry)


def test_evaluate_observes_each_model_once_per_evaluator():
    import copy

    import fairprune as fp
    from fairprune.testing import tiny_char_tokenizer

    base = tiny_model("llama", max_position_embeddings=512)
    pruned = copy.deepcopy(base)
    fp.prune(pruned, {0: [1, 5, 9], 1: [2]})
    groups = fp.get_registry().get("bias_axes", "race").prompt_groups("heldout")[:4]
    calls = {"base": 0, "pruned": 0}
    handles = [m.register_forward_pre_hook(lambda *a, label=label: calls.__setitem__(label, calls[label] + 1))
               for label, m in (("base", base), ("pruned", pruned))]
    results = evaluate(base, pruned, tiny_char_tokenizer(), groups=groups, evaluators=["output_bias"],
                       params={"output_bias": {"n_boot": 50, "continuations": [" a"]}}, progress=False)
    for handle in handles:
        handle.remove()
    assert calls["base"] == calls["pruned"] > 0  # the same work on each side, each side observed once
    assert results["output_bias"].headlines[0]["key"] == "js_reduction_pct"
