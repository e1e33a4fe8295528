"""The attribution method inside the config-driven run: plan records, verification, report, reload."""

from __future__ import annotations

import json

import pytest

import fairprune as fp
from fairprune.core import attribution as attr
from fairprune.core.errors import ConfigError
from fairprune.core.groups import gather
from fairprune.core.registry import get_registry
from fairprune.testing import tiny_char_tokenizer, tiny_model

EVALUATORS = [{"name": "output_bias", "params": {"n_boot": 50}}, "parameters"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), path)
    return path


def config_for(model_dir, out, pruner="structural", **bias):
    return {"model": {"source": str(model_dir)},
            "bias": {"axes": ["race"], "batch_size": 12, "method": "attribution",
                     "attribution": {"rounds": 2, "guard_fraction": 0.25, "max_perplexity_increase_pct": None,
                                     "capability": {"name": "capability_cost",
                                                    "params": {"chunk_tokens": 64, "max_tokens": 256}}},
                     **bias},
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
    with pytest.raises(ConfigError, match="bias.objective"):
        fp.run(config_for(model_dir, tmp_path / "a", objective="next_token_jsd"), progress=False)
    with pytest.raises(ConfigError, match="bias.site"):
        fp.run(config_for(model_dir, tmp_path / "b", site="residual"), progress=False)
    with pytest.raises(ConfigError, match="bias.attribution.capability"):
        bad = config_for(model_dir, tmp_path / "c")
        bad["bias"]["attribution"]["capability"] = "max_abs_weight"
        fp.run(bad, progress=False)
    with pytest.raises(ConfigError, match="bias.attribution.guard_fraction"):
        bad = config_for(model_dir, tmp_path / "d")
        bad["bias"]["attribution"]["guard_fraction"] = 1.5
        fp.run(bad, progress=False)
