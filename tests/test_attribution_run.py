"""The attribution method inside the config-driven run: plan records, verification, report, reload."""

from __future__ import annotations

import json

import pytest

import fairprune as fp
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.registry import get_registry
from fairprune.core.data.groups import gather
from fairprune.core.method import attribution as attr
from fairprune.testing import tiny_char_tokenizer, tiny_model

EVALUATORS = [{"name": "output_bias", "params": {"n_boot": 50}}, "parameters"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), path)
    return path


def config_for(model_dir, out, pruner="structural", bias=None, **method):
    return {"model": {"source": str(model_dir)},
            "bias": {"axes": ["race"], "batch_size": 12, **(bias or {})},
            "method": {"name": "attribution", "rounds": 2, "guard_fraction": 0.25, "max_perplexity_increase_pct": None,
                       "capability": {"name": "capability_cost", "params": {"chunk_tokens": 64, "max_tokens": 256}},
                       **method},
            "pruning": {"pruner": pruner, "budget": {"neurons": 6}},
            "evaluation": {"evaluators": EVALUATORS}, "output": {"dir": str(out)}}


@pytest.mark.parametrize("pruner", ["structural", "compensated"])
def test_attribution_run_records_verifies_and_reloads(model_dir, tmp_path, pruner):
    result = fp.run(config_for(model_dir, tmp_path / "run", pruner), progress=False)
    out = result.output_dir
    plan = json.loads((out / "plan.json").read_text())
    check = plan["settings"]["verification"]
    assert plan["settings"]["method"] == "attribution" and plan["settings"]["fill"] == (
        "mean" if pruner == "compensated" else "zero")
    assert 0 < plan["n_neurons"] <= 6
    assert all(r["attribution"] < 0 and r["cost"] >= 0 for r in plan["records"])
    assert result.metrics["pruning"]["attribution"]["measured_change"] == pytest.approx(check["measured_change"])
    assert "Attribution check" in (out / "report.md").read_text()
    assert "Signed attribution" in (out / "README.md").read_text()
    # the saved model is the model selection measured: its objective on the analysis groups is the verified one
    model, tok = fp.load_pretrained(out)
    groups = gather(axes=["race"], split="analysis", registry=get_registry()).groups
    objective = get_registry().create("bias_objectives", "next_token_js").bind(tok)
    batches = attr.group_batches(model, tok, groups, 12)
    adapter = attr.resolve_adapter(model)
    values = attr.objective_values(model, batches, objective, adapter)
    assert sum(values) / len(values) == pytest.approx(check["objective_after"], rel=1e-4)


def test_attribution_config_errors_name_the_field(model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"^method\.objective\.name: Unknown"):
        fp.run(config_for(model_dir, tmp_path / "a", objective="next_token_jsd"), progress=False)
    with pytest.raises(ConfigError, match="bias.site"):
        fp.run(config_for(model_dir, tmp_path / "b", bias={"site": "residual"}), progress=False)
    with pytest.raises(ConfigError, match=r"^method\.capability: 'max_abs_weight' gives no calibration text"):
        fp.run(config_for(model_dir, tmp_path / "c", capability="max_abs_weight"), progress=False)
    with pytest.raises(ConfigError, match=r"method\.guard_fraction"):
        fp.run(config_for(model_dir, tmp_path / "d", guard_fraction=1.5), progress=False)
    with pytest.raises(ConfigError, match=r"^pruning\.round_to: the attribution method does not read this key"):
        fp.run({**config_for(model_dir, tmp_path / "e"), "pruning": {"budget": {"neurons": 6}, "round_to": 8}},
               progress=False)


def test_attribution_sweep_selects_per_budget_and_saves_the_chosen_points_plan(model_dir, tmp_path):
    from fairprune.core.run.sweep import sweep

    config = config_for(model_dir, tmp_path / "sweep", max_perplexity_increase_pct=None)
    config["evaluation"] = {"evaluators": ["output_bias", "capability"]}
    config["sweep"] = {"budgets": [{"neurons": 2}, {"neurons": 5}], "bias_metric": "output_bias.js_reduction_pct"}
    result = sweep(config, max_perplexity_increase=1e6, progress=False)
    assert len(result.points) == 2  # one point per budget: the attribution method has no bias weight to vary
    assert [p["budget"] for p in result.points] == [{"neurons": 2}, {"neurons": 5}]
    plan = json.loads((result.output_dir / "plan.json").read_text())
    assert plan["settings"]["budget"] == result.chosen["budget"]
    assert plan["n_neurons"] == result.chosen["neurons_removed"]
    # the other point's plan is a different selection, so the saved one is the chosen point's own
    other = next(p for p in result.points if p is not result.chosen)
    assert other["neurons_removed"] != result.chosen["neurons_removed"]
