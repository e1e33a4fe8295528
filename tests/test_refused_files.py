"""Every file a run reads is checked before the model loads; the message names the config field."""

from __future__ import annotations

import json

import pytest

from fairprune.cli import main as cli_main
from fairprune.core.contract.config import load_config
from fairprune.core.contract.errors import ConfigError, PromptError
from fairprune.core.run.preflight import check_input_files, input_files
from fairprune.testing import snapshot


def config(tmp_path, **sections):
    data = {"model": {"source": "smollm2-135m"}, "output": {"dir": str(tmp_path / "out")}}
    data.update(sections)
    return load_config(data)


@pytest.mark.parametrize(("sections", "field"), [
    ({"evaluation": {"evaluators": ["activation_bias", {"name": "capability",
                                                        "params": {"lambada_path": "missing/lambada.jsonl"}}]}},
     "evaluation.evaluators.1.params.lambada_path"),
    ({"evaluation": {"evaluators": [{"name": "capability", "params": {"text_path": "missing.txt"}}]}},
     "evaluation.evaluators.0.params.text_path"),
    ({"evaluation": {"evaluators": [{"name": "crows_pairs", "params": {"path": "data/crows_pairs.csv"}}]}},
     "evaluation.evaluators.0.params.path"),
    ({"bias": {"prompts": "missing-pairs.csv"}}, "bias.prompts"),
    ({"bias": {"axes": ["race", "axes/mine.yaml"]}}, "bias.axes.1"),
    ({"evaluation": {"axes": ["mine.yaml"]}}, "evaluation.axes.0"),
])
def test_a_missing_file_is_named_by_its_config_field(tmp_path, sections, field):
    with pytest.raises(ConfigError) as info:
        check_input_files(config(tmp_path, **sections))
    assert str(info.value).startswith(f"{field}: file not found: ")


def test_nested_plugin_paths_are_found():
    params = {"benchmarks": [{"name": "crows_pairs", "path": "a.csv"}, {"name": "bbq", "data_file": "b.jsonl"}],
              "limit": 10, "note_path": ""}
    from fairprune.core.run.preflight import param_files

    assert param_files(params, "evaluation.evaluators.0.params") == [
        ("evaluation.evaluators.0.params.benchmarks.0.path", "a.csv"),
        ("evaluation.evaluators.0.params.benchmarks.1.data_file", "b.jsonl")]


def test_a_prompt_file_that_does_not_parse_is_refused_with_its_field_and_line(tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("a,b\nThe Black man ran,The white man ran,extra\n")
    with pytest.raises(PromptError, match=rf"^bias\.prompts: {bad}:2: 3 cells but the header has 2 columns"):
        check_input_files(config(tmp_path, bias={"prompts": str(bad)}))


def test_registered_axis_names_are_not_files(tmp_path):
    assert input_files(config(tmp_path, bias={"axes": ["race", "gender"]})) == []


def test_run_checks_data_files_before_the_model_loads(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({
        "model": {"source": str(tmp_path / "no-model")}, "output": {"dir": str(tmp_path / "out")},
        "evaluation": {"evaluators": ["activation_bias", {"name": "capability",
                                                          "params": {"lambada_path": str(tmp_path / "l.jsonl")}}]}}))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(["run", str(config), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: evaluation.evaluators.1.params.lambada_path: file not found: {tmp_path / 'l.jsonl'}"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("argv", "field"), [
    (["evaluate", "--base", "{m}", "--pruned", "{t}", "--lambada", "{t}/l.jsonl"], "--lambada"),
    (["evaluate", "--base", "{m}", "--pruned", "{t}", "--params", '{{"capability": {{"text_path": "{t}/x.txt"}}}}'],
     "--params.capability.text_path"),
    (["analyze", "--model", "{m}", "--axes", "race,{t}/mine.yaml", "--out", "{t}/out"], "--axes.1"),
])
def test_commands_check_files_before_the_model_loads(tmp_path, capsys, argv, field):
    argv = [a.format(m=tmp_path / "no-model", t=tmp_path) for a in argv]
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {field}: file not found: {tmp_path}") and len(err.splitlines()) == 1
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("flags", "message"), [
    (["--axes", "race,racee"], "--axes: Unknown bias axis 'racee'. Did you mean 'race'?"),
    (["--metric", "bogus"], "--metric: Unknown bias metric 'bogus'."),
    (["--site", "nueron"], "--site: Unknown site 'nueron'. Did you mean 'neuron'?"),
    (["--pooling", "sufix"], "--pooling: Unknown pooling 'sufix'. Did you mean 'suffix'?"),
])
def test_analyze_checks_plugin_names_before_the_model_loads(tmp_path, capsys, flags, message):
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(["analyze", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "out"), *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and " Available: " in err and len(err.splitlines()) == 1
    assert snapshot(tmp_path) == before
