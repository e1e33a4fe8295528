"""The config-driven run end to end on a tiny model: outputs, determinism, errors, sweep, CLI."""

from __future__ import annotations

import json
import re

import pytest

import fairprune as fp
from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import ConfigError, OutputError
from fairprune.core.contract.summary import headline_rows, summary_text
from fairprune.testing import tiny_char_tokenizer, tiny_model

FAST_EVALUATORS = [
    "activation_bias",
    {"name": "activation_pictures", "params": {"n_boot": 50}},
    {"name": "output_bias", "params": {"n_boot": 50}},
    {"name": "capability", "params": {"tasks": ["text", "cloze"], "text_max_tokens": 300, "window": 150,
                                      "stride": 150}},
    {"name": "generations", "params": {"prompts": ["A Black man walked at night.", "A white man walked at night."],
                                       "max_new_tokens": 4}},
    "parameters",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), path)
    return path


def config_for(model_dir, out, **sections):
    config = {"model": {"source": str(model_dir)}, "bias": {"axes": ["race"], "batch_size": 8},
              "pruning": {"budget": {"neurons": 8}}, "evaluation": {"evaluators": FAST_EVALUATORS},
              "output": {"dir": str(out)}}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


@pytest.fixture(scope="module")
def finished_run(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    return fp.run(config_for(model_dir, out), progress=False)


def test_run_writes_every_output(finished_run):
    out = finished_run.output_dir
    for name in ("model.safetensors", "config.json", "tokenizer.json", "fairprune.json", "plan.json", "bias",
                 "metrics.json", "report.md", "report.html", "README.md", "manifest.json", "config.yaml"):
        assert (out / name).exists(), name
    assert not list(out.parent.glob(".run.tmp-*")), "the staging directory must be gone"


def test_saved_model_is_the_pruned_model(finished_run):
    model, tok = fp.load_pretrained(finished_run.output_dir)
    widths = [layer.mlp.down_proj.in_features for layer in model.model.layers]
    assert widths == finished_run.metrics["pruning"]["widths_after"]
    assert sum(64 - w for w in widths) == 8 == finished_run.plan.n_neurons
    assert tok is not None


def test_metrics_json_matches_the_result_and_the_summary(finished_run):
    on_disk = json.loads((finished_run.output_dir / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(finished_run.metrics))
    summary = summary_text(on_disk)
    for label, value in headline_rows(on_disk):
        assert f"{label}" in summary and value in summary
    reduction = on_disk["evaluation"]["activation_bias"]["metrics"]["reduction_pct"]
    assert f"{reduction:+.2f}%" in summary


def test_output_bias_reports_the_transfer_splits_apart_in_metrics_summary_and_report(finished_run):
    metrics = json.loads((finished_run.output_dir / "metrics.json").read_text())["evaluation"]["output_bias"]
    for suffix in ("@registers", "@names"):
        assert metrics["metrics"]["n_groups" + suffix] > 0
        assert len(metrics["intervals"]["js_reduction_pct" + suffix]) == 2
    assert metrics["metrics"]["n_groups"] == 20  # the held-out templates, as before
    report = (finished_run.output_dir / "report.md").read_text()
    assert "| other registers |" in report and "| first names |" in report
    assert "first names" in summary_text(json.loads((finished_run.output_dir / "metrics.json").read_text()))


def test_model_card_has_front_matter_and_measured_figures(finished_run):
    card = (finished_run.output_dir / "README.md").read_text()
    front = card.split("---")[1]
    assert "base_model:" in front and "fairprune" in front and "tags:" in front
    assert f"{finished_run.metrics['pruning']['params_removed_pct']:.3f}%" in card
    assert "## Limitations" in card
    assert "Bias figures are on held-out templates" in card and "No bias figure" not in card  # output_bias ran


def test_manifest_records_hash_versions_and_timings(finished_run):
    manifest = json.loads((finished_run.output_dir / "manifest.json").read_text())
    assert manifest["config_hash"] == finished_run.metrics["config_hash"]
    assert {"torch", "transformers", "fairprune"} <= set(manifest["versions"])
    assert {"load", "analyze", "plan", "prune", "evaluate"} <= set(manifest["timings_s"])


def test_same_config_gives_same_plan_and_figures(finished_run, model_dir, tmp_path):
    again = fp.run(config_for(model_dir, tmp_path / "again"), progress=False)
    assert again.plan.to_dict() == finished_run.plan.to_dict()
    assert again.metrics == finished_run.metrics


def test_activation_importance_on_a_non_neuron_site_says_what_to_change(model_dir, tmp_path):
    with pytest.raises(ConfigError, match="site='neuron'.*max_abs_weight"):
        fp.run(config_for(model_dir, tmp_path / "x", bias={"site": "gate"},
                          method={"importance": "activation_weight"}), progress=False)
    assert not (tmp_path / "x").exists()


def test_bad_configs_fail_before_any_work(model_dir, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=r"method\.scorer\.name: Unknown scorer 'lineer'.*Did you mean 'linear'"):
        fp.run(config_for(model_dir, out, method={"scorer": "lineer"}), progress=False)
    with pytest.raises(ConfigError, match=r"method\.name: Unknown method 'atribution'.*Did you mean 'attribution'"):
        fp.run(config_for(model_dir, out, method={"name": "atribution"}), progress=False)
    with pytest.raises(ConfigError, match=r"method\.folds: a key of the attribution method"):
        fp.run(config_for(model_dir, out, method={"folds": 2}), progress=False)
    with pytest.raises(ConfigError, match=r"method\.importance: 'capability_cost'"):
        fp.run(config_for(model_dir, out, method={"importance": "capability_cost"}), progress=False)
    with pytest.raises(ConfigError, match=r"bias\.axes\.0: Unknown bias axis 'rac'"):
        fp.run(config_for(model_dir, out, bias={"axes": ["rac"]}), progress=False)
    with pytest.raises(ConfigError, match=r"pruning\.budget"):
        fp.run(config_for(model_dir, out, pruning={"budget": {"neurons": 3, "layer_percent": 5}}), progress=False)
    with pytest.raises(ConfigError, match=r"method\.bias_weight"):
        fp.run(config_for(model_dir, out, method={"bias_weight": 2}), progress=False)
    assert not out.exists()


def test_existing_output_is_kept_unless_overwrite(finished_run, model_dir):
    with pytest.raises(OutputError, match="exists and is not empty"):
        fp.run(config_for(model_dir, finished_run.output_dir), progress=False)
    assert (finished_run.output_dir / "metrics.json").exists()


def test_failed_run_leaves_no_output_directory(model_dir, tmp_path):
    out = tmp_path / "failed"
    config = config_for(model_dir, out, pruning={"budget": {"neurons": 8}, "pruner": "compensated"},
                        bias={"site": "gate"}, method={"importance": "max_abs_weight"})
    with pytest.raises(ConfigError, match="compensating pruner needs neuron-site"):
        fp.run(config, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".failed*"))


@pytest.mark.parametrize("budget", [{"param_fraction": 0.1}, {"layer_percent": 10}])
def test_budget_kinds_and_rounding_run_end_to_end(model_dir, tmp_path, budget):
    result = fp.run(config_for(model_dir, tmp_path / "b", pruning={"budget": budget, "round_to": 8},
                               evaluation={"evaluators": ["activation_bias", "parameters"]}), progress=False)
    widths = result.metrics["pruning"]["widths_after"]
    assert all(w % 8 == 0 for w in widths) and min(widths) < 64


def test_cli_run_with_overrides_prints_the_summary(model_dir, tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps(config_for(model_dir, tmp_path / "cli")))
    code = cli_main(["run", str(config), "--quiet", "--set", "method.bias_weight=0.6",
                     "--set", f"output.dir={tmp_path / 'cli-w06'}"])
    assert code == 0
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "cli-w06" / "metrics.json").read_text())
    assert "Parameters removed" in printed and metrics["config_hash"][:0] == ""
    assert json.loads((tmp_path / "cli-w06" / "plan.json").read_text())["settings"]["bias_weight"] == 0.6


def test_cli_reports_config_errors_in_one_line(model_dir, tmp_path, capsys):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps(config_for(model_dir, tmp_path / "x", pruning={"budget": {"neurons": 0}})))
    assert cli_main(["run", str(config), "--quiet"]) == 1
    assert "pruning.budget.neurons" in capsys.readouterr().err


def test_sweep_shares_analysis_marks_pareto_and_saves_the_chosen_point(model_dir, tmp_path):
    from fairprune.core.run.sweep import sweep

    config = config_for(model_dir, tmp_path / "sweep", sweep={"bias_weights": [0.5, 1.0],
                                                              "budgets": [{"neurons": 4}, {"neurons": 12}]})
    result = sweep(config, max_perplexity_increase=1000.0, progress=False)
    assert len(result.points) == 4
    assert any(p["pareto"] for p in result.points)
    assert sum(p["chosen"] for p in result.points) == 1
    saved = json.loads((result.output_dir / "sweep.json").read_text())
    assert saved["points"] == json.loads(json.dumps(result.points))
    chosen = result.chosen
    plan = json.loads((result.output_dir / "plan.json").read_text())
    assert plan["settings"]["bias_weight"] == chosen["bias_weight"]
    assert plan["n_neurons"] == chosen["neurons_removed"]
    assert (result.output_dir / "model.safetensors").exists()
    page = (result.output_dir / "report.html").read_text()  # the sweep's trade-off and the chosen point's pictures
    assert {"pareto", "pca", "tokens"} <= set(re.findall(r'<figure id="plot-(\w+)"><img', page))


def test_sweep_without_feasible_point_saves_no_model(model_dir, tmp_path):
    from fairprune.core.run.sweep import sweep

    config = config_for(model_dir, tmp_path / "sweep", sweep={"bias_weights": [1.0], "budgets": [{"neurons": 30}]})
    result = sweep(config, max_perplexity_increase=-1000.0, progress=False)
    assert result.chosen is None
    assert not (result.output_dir / "model.safetensors").exists()
    assert "no model was saved" in (result.output_dir / "sweep.md").read_text()


def test_cli_sweep_prints_the_table_and_fails_without_a_feasible_point(model_dir, tmp_path, capsys):
    config = tmp_path / "sweep.json"
    config.write_text(json.dumps(config_for(model_dir, tmp_path / "s", sweep={"bias_weights": [1.0],
                                                                              "budgets": [{"neurons": 4}]})))
    assert cli_main(["sweep", str(config), "--quiet", "--max-perplexity-increase=-1000%"]) == 1
    printed = capsys.readouterr().out
    assert "| settings |" in printed and "| bias_weight=1.0 |" in printed and "no point within -1000.0% perplexity increase" in printed
    assert cli_main(["sweep", str(config), "--quiet", "--set", f"output.dir={tmp_path / 's2'}",
                     "--max-perplexity-increase", "1000%"]) == 0
    assert (tmp_path / "s2" / "model.safetensors").exists()
