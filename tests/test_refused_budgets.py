"""Budgets that remove no neuron are refused: at config validation when they can be, else before the analysis
(budget worth less than a neuron, round_to wider than the layers) or before pruning (the plan is empty)."""

from __future__ import annotations

import json

import pytest

import fairprune as fp
from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import ConfigError
from fairprune.testing import snapshot, tiny_char_tokenizer, tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), path)
    return path


def refused(tmp_path, capsys, model_dir, pruning):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": {"source": str(model_dir)}, "bias": {"batch_size": 8},
                                  "pruning": pruning, "evaluation": {"evaluators": ["parameters"]},
                                  "output": {"dir": str(tmp_path / "out")}}))
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = cli_main(["run", str(config), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and snapshot(tmp_path) == before
    return err


@pytest.mark.parametrize(("pruning", "words"), [
    ({"budget": {"param_fraction": 1e-9}}, ["pruning.budget:", "is less than one neuron", "raise the budget"]),
    ({"budget": {"layer_percent": 1}}, ["pruning.budget:", "is less than one neuron"]),
    ({"budget": {"neurons": 8}, "round_to": 128}, ["pruning.round_to: 128 is wider than", "[64]"]),
    ({"budget": {"neurons": 8}, "layers": [0, 5]}, ["pruning.layers.1: layer 5 does not exist", "0..1"]),
    ({"budget": {"neurons": 8}, "min_width": 64}, ["pruning.min_width: 64 leaves no neuron"]),
    ({"budget": {"neurons": 2}, "round_to": 32}, ["the plan removes no neuron", "round_to=32"]),
    ({"budget": {"neurons": 1000}}, ["pruning.budget:", "asks for 1,000 neurons, but only 126 can be removed"]),
])
def test_a_budget_that_removes_nothing_is_one_line(tmp_path, capsys, model_dir, pruning, words):
    err = refused(tmp_path, capsys, model_dir, pruning)
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and all(w in err for w in words), err


def test_an_empty_layer_list_is_a_config_error(tmp_path, capsys, model_dir):
    err = refused(tmp_path, capsys, model_dir, {"budget": {"neurons": 8}, "layers": []})
    assert err.startswith("error: invalid config: pruning.layers: List should have at least 1 item")
    assert len(err.splitlines()) == 1


def test_the_budget_is_checked_before_the_analysis(model_dir, tmp_path, monkeypatch):
    from fairprune.core.run import pipeline

    def analysis_must_not_run(run):
        raise AssertionError("the analysis ran")

    monkeypatch.setattr(pipeline, "analyze", analysis_must_not_run)
    with pytest.raises(ConfigError, match="less than one neuron"):
        fp.run({"model": {"source": str(model_dir)}, "pruning": {"budget": {"param_fraction": 1e-9}},
                "output": {"dir": str(tmp_path / "out")}}, progress=False)
