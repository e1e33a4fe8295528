"""Plan files: strict JSON with integer layers and indices, applied only to a model of the widths they were made for."""

from __future__ import annotations

import json

import pytest
import torch

import fairprune as fp
from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import PlanError
from fairprune.core.method.planning import Plan
from fairprune.testing import snapshot, tiny_char_tokenizer, tiny_model

PLAN = {"removed": {"0": [1, 2], "1": [3]}, "widths_before": [64, 64], "settings": {}, "records": []}


def cli_refuses(capsys, tmp_path, argv, *words):
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = cli_main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert all(w in err for w in words), err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("content", "words"), [
    ('{"removed": {"0": [1, 2]', ["plan.json:1: not valid JSON"]),
    ('{"widths_before": [64, 64]}', ["no 'removed' field"]),
    ('{"removed": {"a": [1]}}', ["layer key 'a' in 'removed' is not an integer"]),
    ('{"removed": {"0": [1.5]}}', ["removed.0 holds 1.5, which is not an integer neuron index"]),
    ('{"removed": {"0": ["3"]}}', ["removed.0 holds '3', which is not an integer"]),
    ('{"removed": {"0": 3}}', ["removed.0 must be a list of neuron indices"]),
    ('[1, 2]', ["a plan must be a JSON object"]),
    ('{"removed": {}, "widths_before": [64, 0]}', ["'widths_before' must list positive integer"]),
])
def test_a_bad_plan_file_is_one_line_before_the_model_loads(tmp_path, capsys, content, words):
    (tmp_path / "plan.json").write_text(content)
    # the model path does not exist: the plan is read first
    cli_refuses(capsys, tmp_path, ["prune", "--model", str(tmp_path / "no-model"), "--plan",
                                   str(tmp_path / "plan.json"), "--out", str(tmp_path / "out")], *words)


def test_a_missing_plan_file_is_one_line(tmp_path, capsys):
    cli_refuses(capsys, tmp_path, ["prune", "--model", str(tmp_path / "no-model"), "--plan",
                                   str(tmp_path / "absent.json"), "--out", str(tmp_path / "out")],
                "plan file not found", "absent.json")


def test_a_plan_made_for_other_widths_is_refused_and_the_model_is_untouched(tmp_path, capsys):
    model = tiny_model("llama")
    fp.prune(model, {0: list(range(6))})  # layer 0 now has 58 neurons
    fp.save_pretrained(model, tiny_char_tokenizer(), tmp_path / "cut")
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    cli_refuses(capsys, tmp_path, ["prune", "--model", str(tmp_path / "cut"), "--plan", str(tmp_path / "plan.json"),
                                   "--out", str(tmp_path / "out")],
                "made for MLP widths [64, 64] but the model has [58, 64]", "layer 0: 64 in the plan, 58 in the model")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PlanError, match="made for MLP widths"):
        fp.prune(model, Plan.from_dict(PLAN))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_plan_for_the_right_widths_still_applies(tmp_path):
    model = tiny_model("llama")
    result = fp.prune(model, Plan.load(_write(tmp_path / "plan.json", PLAN)))
    assert result.widths_after == [62, 63]


def test_non_integer_indices_in_memory_are_refused_too():
    with pytest.raises(PlanError, match="1.5"):
        Plan.from_dict({"removed": {"0": [1.5]}})
    with pytest.raises(PlanError, match="neuron index 1.5 is not an integer"):
        fp.prune(tiny_model("llama"), {0: [1.5]})


def _write(path, data):
    path.write_text(json.dumps(data))
    return path
