"""The run's contract across layers: one model in memory, one config hash, third-party headlines everywhere,
report files written by a plugin, defaults in one place."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import fairprune as fp
from fairprune.core.contract.hookspecs import hookimpl
from fairprune.core.contract.plugin import Plugin
from fairprune.core.contract.protocols import Headline
from fairprune.core.contract.registry import Registry
from fairprune.core.contract.results import EvalResult
from fairprune.testing import tiny_char_tokenizer, tiny_model


class WidthEvaluator(Plugin):
    """A third-party evaluator: it records which model object it observed and reports a 'bias' headline."""

    name = "fresh_width"
    description = "mean MLP width, observed per model (test plugin)"
    needs_groups = False
    headlines = (Headline("width_drop_pct", "Fresh width drop", "%", "higher", "bias"),)

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.seen: list[tuple[str, int, int]] = []

    def configure(self, params: Any = None) -> "WidthEvaluator":
        return self  # keep one object so the test can read what it saw

    def observe(self, model, context) -> float:
        widths = [context.adapter.width(model, i) for i in range(len(context.adapter.layers(model)))]
        self.seen.append((context.label, id(model), sum(widths)))
        return float(sum(widths))

    def compare(self, base: float, pruned: float, context) -> EvalResult:
        result = EvalResult(self.name)
        result.add("width_drop_pct", 100.0 * (base - pruned) / base)
        return result


class FreshPlugin:
    def __init__(self) -> None:
        self.evaluator = WidthEvaluator()
        self.written: list[str] = []

    @hookimpl
    def fairprune_register_evaluators(self, register):
        register(self.evaluator)

    @hookimpl
    def fairprune_write_run_files(self, run, directory):
        (directory / "fresh.txt").write_text(run.config_hash)
        self.written.append(str(directory))
        return True


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), path)
    return path


def config_for(model_dir, out, **sections) -> dict[str, Any]:
    config = {"model": {"source": str(model_dir)}, "bias": {"axes": ["race"], "batch_size": 8},
              "pruning": {"budget": {"neurons": 8}},
              "evaluation": {"evaluators": ["fresh_width", {"name": "output_bias", "params": {"n_boot": 20}}]},
              "output": {"dir": str(out)}}
    config.update(sections)
    return config


@pytest.fixture(scope="module")
def fresh_run(model_dir, tmp_path_factory):
    plugin = FreshPlugin()
    registry = Registry(load_entrypoints=False, extra_plugins=(plugin,))
    out = tmp_path_factory.mktemp("runs") / "run"
    result = fp.run(config_for(model_dir, out), registry=registry, progress=False)
    return plugin, result


def test_run_observes_one_model_object_mutated_in_place(fresh_run) -> None:
    plugin, result = fresh_run
    (base_label, base_id, base_width), (pruned_label, pruned_id, pruned_width) = plugin.evaluator.seen
    assert (base_label, pruned_label) == ("base", "pruned")
    assert base_id == pruned_id  # no copy of the model was made
    assert base_width - pruned_width == result.metrics["pruning"]["neurons_removed"] == 8


def test_third_party_headline_reaches_summary_report_and_card(fresh_run) -> None:
    _, result = fresh_run
    for name in ("report.md", "README.md"):
        text = (result.output_dir / name).read_text()
        assert "Fresh width drop" in text, name
    assert "Fresh width drop" in fp.summary_text(result.metrics)
    stored = json.loads((result.output_dir / "metrics.json").read_text())
    assert stored["evaluation"]["fresh_width"]["headlines"][0]["key"] == "width_drop_pct"


def test_every_record_carries_one_config_hash(fresh_run) -> None:
    _, result = fresh_run
    out = result.output_dir
    hashes = {json.loads((out / "metrics.json").read_text())["config_hash"],
              json.loads((out / "manifest.json").read_text())["config_hash"],
              json.loads((out / "fairprune.json").read_text())["run_config_sha256"],
              (out / "fresh.txt").read_text()}
    assert len(hashes) == 1


def test_sweep_chooses_the_third_party_bias_metric(model_dir, tmp_path) -> None:
    from fairprune.core.run.sweep import sweep

    registry = Registry(load_entrypoints=False, extra_plugins=(FreshPlugin(),))
    evaluators = ["fresh_width", {"name": "capability", "params": {"tasks": ["text"], "text_max_tokens": 200,
                                                                    "window": 100, "stride": 100}}]
    config = config_for(model_dir, tmp_path / "sweep", evaluation={"evaluators": evaluators},
                        sweep={"bias_weights": [0.8], "budgets": [{"neurons": 4}, {"neurons": 8}]})
    result = sweep(config, max_perplexity_increase=1e6, registry=registry, progress=False)
    assert {p["bias_metric"] for p in result.points} == {"fresh_width.width_drop_pct"}
    assert {p["capability_metric"] for p in result.points} == {"capability.text_ppl_change_pct"}
    widths = sorted(p["bias_reduction_pct"] for p in result.points)
    assert widths[0] < widths[1]  # 4 vs 8 neurons of 128: the points really differ
    assert result.chosen["neurons_removed"] == 8


def test_run_without_the_report_plugin_still_writes_its_data(model_dir, tmp_path, caplog) -> None:
    registry = Registry(load_entrypoints=False, disabled=frozenset({"fairprune.plugins.report"}),
                        extra_plugins=(FreshPlugin(),))
    with caplog.at_level(logging.WARNING):
        result = fp.run(config_for(model_dir, tmp_path / "bare"), registry=registry, progress=False)
    files = {p.name for p in result.output_dir.iterdir()}
    assert {"metrics.json", "plan.json", "config.yaml", "manifest.json", "fairprune.json", "fresh.txt"} <= files
    assert not {"report.md", "report.html"} & files
    assert "no plugin wrote" not in caplog.text  # FreshPlugin wrote its file; the report's absence is allowed


def test_defaults_live_in_the_config() -> None:
    from fairprune.core.contract.config import ActivationParams
    from fairprune.core.method.planning import plan_sections

    assert ActivationParams().importance.name == "max_abs_weight"
    scoring, pruning = plan_sections()
    assert scoring.importance.name == "max_abs_weight" and pruning.budget.param_fraction == 0.002
    scoring, _ = plan_sections(importance="activation_weight", bias_weight=0.5)
    assert (scoring.importance.name, scoring.bias_weight) == ("activation_weight", 0.5)


def test_plan_pruning_defaults_to_max_abs_weight() -> None:
    model = tiny_model("llama", max_position_embeddings=512)
    report = fp.analyze_bias(model, tiny_char_tokenizer(), axes=["race"], progress=False, batch_size=8)
    plan = fp.plan_pruning(model, report, budget=fp.Budget(neurons=4))
    assert plan.settings["importance"] == "max_abs_weight"


def test_levels_show_without_a_sign_and_changes_with_one() -> None:
    from fairprune.core.contract.summary import headline_rows

    metrics = {"pruning": {"params_removed": 1, "params_before": 10, "params_removed_pct": 10.0,
                           "neurons_removed": 1, "layers_touched": 1},
               "evaluation": {"bench": {"metrics": {"pct_base": 58.1, "pct_change": 1.0},
                                        "intervals": {"pct_change": [-0.4, 2.4]},
                                        "headlines": [{"key": "pct_base", "label": "Level", "unit": "%",
                                                       "kind": "level"},
                                                      {"key": "pct_change", "label": "Change", "unit": " pts"}]}}}
    rows = dict(headline_rows(metrics))
    assert rows["Level"] == "58.10%"
    assert rows["Change"] == "+1.00 pts (95% CI -0.4 to +2.4)"
