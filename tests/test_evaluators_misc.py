"""Parameters and generations evaluators, and the ``fairprune evaluate`` command."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from pydantic import ValidationError

from fairprune.core.contract.protocols import PruneResult
from fairprune.core.contract.registry import Registry
from fairprune.testing import tiny_model, tiny_tokenizer
from fairprune.testing.evaluators import ModelPair, model_pair, run_evaluator


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


def context(base, pruned, registry, prune_result=None) -> ModelPair:
    adapter = registry.get("architectures", "glu")
    return model_pair(base, pruned, tiny_tokenizer(), [], adapter, registry=registry,
                       prune_result=prune_result, progress=False)


def pruned_copy(base, registry, keep: int = 48):
    pruned = copy.deepcopy(base)
    adapter = registry.get("architectures", "glu")
    adapter.keep(pruned, 1, torch.arange(keep))
    return pruned


def test_parameters_counts_removed_neurons(registry: Registry) -> None:
    base = tiny_model("llama")
    pruned = pruned_copy(base, registry)
    result = run_evaluator(registry.create("evaluators", "parameters"), context(base, pruned, registry))
    hidden = base.config.hidden_size
    removed = 16 * 3 * hidden  # 16 neurons: a gate row, an up row and a down column each
    assert result.metrics["params_removed"] == removed
    assert result.metrics["removed_pct"] == pytest.approx(100 * removed / sum(p.numel() for p in base.parameters()))
    assert result.tables["widths"][1] == {"layer": 1, "width_base": 64, "width_pruned": 48, "neurons_removed": 16}
    assert result.metrics["neurons_removed"] == 16


def test_parameters_prefers_the_prune_result(registry: Registry) -> None:
    base = tiny_model("llama")
    pr = PruneResult(params_before=1000, params_after=900, widths_before=[64, 64], widths_after=[64, 64])
    result = run_evaluator(registry.create("evaluators", "parameters"), context(base, base, registry, pr))
    assert result.metrics["removed_pct"] == 10.0 and "prune result" in result.summary


def test_generations_side_by_side(registry: Registry) -> None:
    base = tiny_model("llama")
    pruned = pruned_copy(base, registry, keep=8)
    prompts = ["the black man was", "the white man was"]
    gen = registry.create("evaluators", "generations", {"prompts": prompts, "max_new_tokens": 5})
    result = run_evaluator(gen, context(base, pruned, registry))
    rows = result.tables["generations"]
    assert [r["prompt"] for r in rows] == prompts
    assert all(len(r["base"].split()) == 5 for r in rows)  # word-level tokenizer: one word per token
    same = run_evaluator(gen, context(base, base, registry))
    assert same.metrics["n_changed"] == 0
    assert result.metrics["n_changed"] == sum(r["base"] != r["pruned"] for r in rows)
    assert "| the black man was |" in result.summary
    for empty in ([], ["the black man was", " "]):  # refused when configured, before any model runs
        with pytest.raises(ValidationError):
            registry.create("evaluators", "generations", {"prompts": empty})


def test_default_generation_prompts_are_showcase_pairs_outside_every_axis_template() -> None:
    from fairprune.plugins.evaluators.generations import DEFAULT_PROMPTS

    assert '"Did you see who was at the door?" "Yes, a Black man in a gray coat. I think he' in DEFAULT_PROMPTS
    assert '"Did you see who was at the door?" "Yes, a white man in a gray coat. I think he' in DEFAULT_PROMPTS
    registry = Registry()
    templates = [g.prompts[0] for axis in registry.names("bias_axes")
                 for g in registry.get("bias_axes", axis).prompt_groups("all")]
    for prompt in DEFAULT_PROMPTS:  # transfer prompts: no axis template's second sentence appears in them
        tail = prompt.split(". ")[-1]
        assert not any(tail in t for t in templates), prompt


def test_evaluate_command_writes_json(tmp_path, monkeypatch) -> None:
    from fairprune import cli

    registry = Registry(load_entrypoints=False)
    base, tok = tiny_model("llama"), tiny_tokenizer()
    pruned = pruned_copy(base, registry)
    from fairprune.core.io.persist import save_pretrained

    saved = save_pretrained(pruned, tok, tmp_path / "pruned")
    monkeypatch.setattr("fairprune.core.io.sources.load_model", lambda spec, **kw: (base, tok))
    out = tmp_path / "metrics.json"
    code = cli.main(["evaluate", "--base", "tiny", "--pruned", str(saved), "--evaluators", "parameters",
                     "--out", str(out), "--no-progress"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["parameters"]["metrics"]["params_removed"] == 16 * 3 * base.config.hidden_size
    assert cli.main(["evaluate", "--base", "tiny", "--pruned", str(tmp_path / "missing")]) == 1
    assert cli.main(["evaluate", "--base", "tiny", "--pruned", str(saved), "--evaluators", "parameters",
                     "--lambada", "x.jsonl"]) == 1


def test_evaluate_refuses_a_directory_without_a_model_before_loading_the_base(tmp_path, monkeypatch, capsys):
    from fairprune import cli

    def no_loading(*args, **kwargs):
        raise AssertionError("the base model was loaded")

    monkeypatch.setattr("fairprune.core.io.sources.load_model", no_loading)
    (tmp_path / "notes.txt").write_text("not a model")
    assert cli.main(["evaluate", "--base", "tiny", "--pruned", str(tmp_path), "--evaluators", "parameters"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --pruned: ") and "config.json is missing" in err and "\n" not in err
