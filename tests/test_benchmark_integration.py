"""The benchmark evaluators as plugins: the evaluator contract, ``fairprune.evaluate``, run configs, the CLI.

Uses the small files in ``tests/data/benchmarks/`` (written for these tests in
each benchmark's exact format) and tiny random models.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

import fairprune as fp
from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import ConfigError
from fairprune.plugins.evaluators.bbq import BBQEvaluator
from fairprune.plugins.evaluators.crows_pairs import CrowsPairsEvaluator
from fairprune.plugins.evaluators.stereoset import StereoSetEvaluator
from fairprune.plugins.evaluators.winobias import WinoBiasEvaluator
from fairprune.testing import tiny_char_tokenizer, tiny_model
from fairprune.testing.contracts import EvaluatorContract

DATA = Path(__file__).parent / "data" / "benchmarks"
FILES = {"crows_pairs": DATA / "crows_pairs.csv", "bbq": DATA / "bbq", "winobias": DATA / "winobias",
         "stereoset": DATA / "stereoset_dev.json"}
#: a figure each evaluator reports for base and pruned
FIGURE = {"crows_pairs": "pct_stereotype", "bbq": "bias_score_ambiguous", "winobias": "pct_pro", "stereoset": "ss"}


class BenchmarkContract(EvaluatorContract):
    """The evaluator contract, with the required ``path`` given where the contract validates params."""

    def test_params_reject_unknown_options(self) -> None:
        params = self.plugin.Params
        path = str(self.plugin.params.path)
        assert params.model_validate({"path": path}).path == path
        with pytest.raises(ValidationError):
            params.model_validate({"path": path, "no_such_option_zz": 1})
        with pytest.raises(ValidationError, match="path"):
            params.model_validate({})

    def test_registers_without_clashing_with_builtins(self) -> None:
        # a built-in: registered under its name by fairprune itself (a second registration would clash)
        from fairprune.core.contract.registry import Registry

        registered = Registry(load_entrypoints=False).get(self.kind, self.plugin.name)
        assert type(registered) is type(self.plugin) and registered.params is None


class TestCrowsPairsContract(BenchmarkContract):
    evaluator = CrowsPairsEvaluator().configure({"path": str(FILES["crows_pairs"]), "n_boot": 50})


class TestBBQContract(BenchmarkContract):
    evaluator = BBQEvaluator().configure({"path": str(FILES["bbq"]), "n_boot": 50})


class TestWinoBiasContract(BenchmarkContract):
    evaluator = WinoBiasEvaluator().configure({"path": str(FILES["winobias"]), "n_boot": 50})


class TestStereoSetContract(BenchmarkContract):
    evaluator = StereoSetEvaluator().configure({"path": str(FILES["stereoset"]), "n_boot": 50})


@pytest.fixture(scope="module")
def models():
    base = tiny_model("llama")
    pruned = copy.deepcopy(base)
    fp.prune(pruned, {0: [0, 1, 2], 1: [5]})
    return base, pruned, tiny_char_tokenizer()


@pytest.mark.parametrize("name", sorted(FILES))
def test_evaluate_reports_base_pruned_and_change(models, name):
    base, pruned, tok = models
    params = {"path": str(FILES[name]), "n_boot": 50}
    if name == "crows_pairs":
        params["bias_types"] = ["race-color"]
    result = fp.evaluate(base, pruned, tok, evaluators=[name], params={name: params}, progress=False)[name]
    figure = FIGURE[name]
    for suffix in ("base", "pruned", "change"):
        assert f"{figure}_{suffix}" in result.metrics and f"{figure}_{suffix}" in result.intervals
    assert result.metrics[f"{figure}_change"] == pytest.approx(
        result.metrics[f"{figure}_pruned"] - result.metrics[f"{figure}_base"])
    assert [h["key"] for h in result.headlines] == [h.key for h in fp.get_registry().get("evaluators", name).headlines]
    if name == "crows_pairs":
        assert result.metrics["n_pairs"] == 2  # the two race-color rows of the file


def test_evaluate_names_the_bad_field_before_any_work(models):
    base, pruned, tok = models
    with pytest.raises(ConfigError, match=r"evaluators\.bbq\.params\.path"):
        fp.evaluate(base, pruned, tok, evaluators=["bbq"], params={"bbq": {}}, progress=False)
    with pytest.raises(ConfigError, match=r"evaluators\.winobias\.params\.typs"):
        fp.evaluate(base, pruned, tok, evaluators=["winobias"],
                    params={"winobias": {"path": str(FILES["winobias"]), "typs": [1]}}, progress=False)


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), root / "src")
    config = {"model": {"source": str(root / "src")}, "bias": {"axes": ["race"], "batch_size": 8},
              "pruning": {"budget": {"neurons": 8}},
              "evaluation": {"evaluators": [{"name": "winobias", "params": {"path": str(FILES["winobias"]),
                                                                            "n_boot": 50}},
                                            {"name": "bbq", "params": {"path": str(FILES["bbq"]), "n_boot": 50}},
                                            "parameters"]},
              "output": {"dir": str(root / "run")}}
    return fp.run(config, progress=False)


def test_run_config_figures_reach_metrics_report_card_and_html(benchmark_run):
    out = benchmark_run.output_dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert "pct_pro_base" in metrics["evaluation"]["winobias"]["metrics"]
    assert "bias_score_ambiguous_pruned" in metrics["evaluation"]["bbq"]["metrics"]
    for file in ("report.md", "README.md", "report.html"):
        text = (out / file).read_text()
        assert "WinoBias % pro-stereotypical (pruned)" in text, file
        assert "BBQ bias score, ambiguous (base; " in text, file  # the label names the answer ranking
    assert "| % pro-stereotypical preferred (all) |" in (out / "report.md").read_text()


def test_run_config_with_a_malformed_benchmark_file_fails_before_any_work(tmp_path):
    bad = tmp_path / "crows.csv"
    bad.write_text(",sent_more,sent_less,bias_type\n0,a,b,age\n")
    config = {"model": {"source": "no-such-model-is-loaded"}, "evaluation": {"evaluators": [
        {"name": "crows_pairs", "params": {"path": str(bad)}}]}, "output": {"dir": str(tmp_path / "run")}}
    with pytest.raises(ConfigError, match="missing column 'stereo_antistereo'"):
        fp.run(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_cli_evaluate_runs_a_benchmark(benchmark_run, capsys, tmp_path):
    out = tmp_path / "results.json"
    params = json.dumps({"winobias": {"path": str(FILES["winobias"]), "n_boot": 50}})
    code = cli_main(["evaluate", "--base", str(benchmark_run.output_dir.parent / "src"), "--pruned",
                     str(benchmark_run.output_dir), "--evaluators", "winobias", "--params", params, "--out", str(out),
                     "--no-progress"])
    assert code == 0
    assert "% pro-stereotypical preferred, type 2" in capsys.readouterr().out
    assert "pct_pro_type1_pruned" in json.loads(out.read_text())["winobias"]["metrics"]
