"""Arguments and plugin parameters that cannot work are refused when read, before a model loads."""

from __future__ import annotations

import json

import pytest

from fairprune.cli import main as cli_main
from fairprune.testing import snapshot


@pytest.mark.parametrize("command, flag, value", [("analyze", "--batch-size", "0"), ("evaluate", "--batch-size", "0"),
                                                 ("analyze", "--top", "-3"), ("evaluate", "--lambada-limit", "0")])
def test_a_count_below_one_is_refused_by_the_argument_parser(tmp_path, capsys, command, flag, value):
    argv = {"analyze": ["analyze", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o")],
            "evaluate": ["evaluate", "--base", str(tmp_path / "m"), "--pruned", str(tmp_path)]}[command]
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli_main([*argv, flag, value])
    assert info.value.code == 2
    assert f"argument {flag}: must be at least 1, got {value}" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("value", ["nan", "inf", "-inf%", "ten"])
def test_a_percentage_that_is_not_a_finite_number_is_refused(tmp_path, capsys, value):
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli_main(["sweep", str(tmp_path / "sweep.yaml"), f"--max-perplexity-increase={value}"])
    assert info.value.code == 2
    assert f"expected a percentage like 1% or 0.5, got {value!r}" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_every_command_that_shows_progress_takes_quiet():
    from fairprune.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["analyze", "--model", "m", "--out", "o", "--quiet"]).no_progress is True
    assert parser.parse_args(["evaluate", "--base", "b", "--pruned", "p", "--quiet"]).no_progress is True
    assert parser.parse_args(["run", "c.yaml", "--quiet"]).quiet is True


def test_verbose_is_read_before_and_after_the_command():
    from fairprune.cli import COMMANDS, build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "c.yaml"]).verbose == 0
    assert parser.parse_args(["-v", "run", "c.yaml"]).verbose == 1
    assert parser.parse_args(["run", "c.yaml", "-vv"]).verbose == 2
    sub = next(action for action in parser._actions if action.dest == "command")
    assert set(sub.choices) >= {name.replace("_", "-") for name in COMMANDS} - {"lm-eval-cli"}
    assert all("--verbose" in command._option_string_actions for command in sub.choices.values())


@pytest.mark.parametrize("prompts", [[""], ["A Black man walked.", "   "], []])
def test_an_empty_generations_prompt_is_a_config_error(tmp_path, capsys, prompts):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": {"source": str(tmp_path / "no-model")},
                                  "evaluation": {"evaluators": [{"name": "generations", "params": {"prompts": prompts}}]},
                                  "output": {"dir": str(tmp_path / "out")}}))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(["run", str(config), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "evaluation.evaluators.0.params.prompts" in err
    assert ("is empty" in err) if prompts else ("at least 1 item" in err)
    assert snapshot(tmp_path) == before


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch, tmp_path):
    from fairprune.commands import axes

    def broken(args):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(axes, "main", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli_main(["axes"])


def test_a_missing_benchmark_file_is_named_once(tmp_path, capsys):
    missing = tmp_path / "crows_pairs_anonymized.csv"
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": {"source": str(tmp_path / "no-model")},
                                  "evaluation": {"evaluators": [{"name": "crows_pairs", "params": {"path": str(missing)}}]},
                                  "output": {"dir": str(tmp_path / "out")}}))
    assert cli_main(["run", str(config), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count(str(missing)) == 1 and "evaluation.evaluators.0.params.path" in err and "no such file" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("value", "expected"), [
    ("method.folds=[1,", "error: --set method.folds: not valid YAML: "),
    ("method.folds=a: b: c", "error: --set method.folds: not valid YAML: mapping values are not allowed here"),
    ("evaluation.evaluators.3.params.draws=0", "evaluation.evaluators is a list, whose items cannot be set one at a "
                                               "time; give the whole list"),
])
def test_a_set_that_cannot_be_read_is_one_line(tmp_path, capsys, value, expected):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {{source: {tmp_path / 'missing-model'}}}\nevaluation: {{evaluators: [parameters]}}\n"
                      f"output: {{dir: {tmp_path / 'out'}}}\n")
    before = snapshot(tmp_path)
    assert cli_main(["run", str(config), "--set", value]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert snapshot(tmp_path) == before


def test_an_interrupt_ends_in_one_line_and_exit_code_130(tmp_path, capsys, monkeypatch):
    import fairprune.cli as cli

    def interrupted(func):
        def run(args):
            raise KeyboardInterrupt
        return run

    monkeypatch.setattr(cli, "releasing_claims", interrupted)
    assert cli_main(["run", str(tmp_path / "run.yaml")]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "error: interrupted; an output directory being written is left as it was"


def test_prune_refuses_a_plan_that_removes_nothing_before_loading(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"removed": {}}))
    before = snapshot(tmp_path)
    # the model does not exist: the plan is read and refused before any load
    assert cli_main(["prune", "--model", str(tmp_path / "no-model"), "--plan", str(plan),
                     "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: --plan: {plan} removes no neuron, so there is nothing to prune"
    assert snapshot(tmp_path) == before
