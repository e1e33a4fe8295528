"""Selection methods are plugins: a third-party method registers, a config selects it, the built-ins pass the
method contract, and keys of a method the config does not use are refused before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import fairprune as fp
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.plugin import Plugin
from fairprune.core.contract.protocols import MethodAnalysis
from fairprune.core.contract.registry import Registry
from fairprune.testing.contracts import MethodContract


class BuiltinMethod(MethodContract):
    def test_registers_without_clashing_with_builtins(self) -> None:  # it is a built-in: registered by fairprune
        assert type(Registry(load_entrypoints=False).get("methods", self.method.name)) is type(self.method)


class TestActivationMethod(BuiltinMethod):
    method = Registry(load_entrypoints=False).get("methods", "activation")


class TestAttributionMethod(BuiltinMethod):
    method = Registry(load_entrypoints=False).get("methods", "attribution")

    def make_config(self) -> Any:
        config = super().make_config()
        params = {"rounds": 1, "max_perplexity_increase_pct": None, "guard_fraction": 0.25,
                  "capability": {"name": "capability_cost", "params": {"chunk_tokens": 64, "max_tokens": 128}}}
        return config.model_copy(update={"method": config.method.model_copy(update={"params": params})})


class LastLayerFirst(Plugin):
    """A third-party method: the first ``count`` neurons of the last layer, whatever the prompts say."""

    name = "last_layer_first"
    description = "the first neurons of the last layer (a test method)"
    shared_keys = frozenset()

    def sweep_variants(self, sweep: Any) -> list[dict[str, Any]]:
        return [{}]

    def analyze(self, model: Any, context: Any) -> MethodAnalysis:
        import torch

        widths = [context.adapter.width(model, i) for i in range(len(context.adapter.layers(model)))]
        report = fp.analyze_bias(model, context.tokenizer, axes=context.config.bias.axes, adapter=context.adapter,
                                 registry=context.registry, progress=False)
        report.scores = {i: torch.zeros(w) for i, w in enumerate(widths)}
        return MethodAnalysis(report)

    def plan(self, model: Any, analysis: MethodAnalysis, budget: Any, context: Any, variant: Any) -> Any:
        from fairprune.core.method.planning import Plan, neuron_cost

        last = len(context.adapter.layers(model)) - 1
        removed = list(range(budget.neurons))
        widths = [context.adapter.width(model, i) for i in range(last + 1)]
        return Plan(removed={last: removed}, records=[{"layer": last, "neuron": n} for n in removed],
                    settings={"method": self.name}, widths_before=widths,
                    params_total=sum(p.numel() for p in model.parameters()),
                    params_to_remove=neuron_cost(model, context.adapter, last) * len(removed))


class ThirdParty:
    @fp.hookimpl
    def fairprune_register_methods(self, register):
        register(LastLayerFirst())


@pytest.fixture(scope="module")
def model_dir(tiny_llama_dir):
    return tiny_llama_dir  # the session's saved tiny Llama (fairprune.testing.fixtures)


def config_for(model_dir: Path, out: Path, method: Any) -> dict[str, Any]:
    return {"model": {"source": str(model_dir)}, "bias": {"axes": ["race"], "batch_size": 12}, "method": method,
            "pruning": {"budget": {"neurons": 4}}, "evaluation": {"evaluators": ["parameters"]},
            "output": {"dir": str(out)}}


def test_a_registered_method_runs_from_a_config(model_dir, tmp_path):
    registry = Registry(load_entrypoints=False, extra_plugins=(ThirdParty(),))
    assert "last_layer_first" in registry.names("methods")
    result = fp.run(config_for(model_dir, tmp_path / "run", "last_layer_first"), registry=registry, progress=False)
    plan = json.loads((result.output_dir / "plan.json").read_text())
    assert plan["removed"] == {"1": [0, 1, 2, 3]} and plan["settings"]["method"] == "last_layer_first"
    assert result.metrics["pruning"]["widths_after"] == [64, 60]


def test_an_unknown_method_lists_the_known_ones_before_the_model_loads(tmp_path):
    config = config_for(tmp_path / "no-such-model", tmp_path / "never", "atribution")
    with pytest.raises(ConfigError, match=r"^method\.name: Unknown method 'atribution'.*Did you mean 'attribution'"):
        fp.run(config, registry=Registry(load_entrypoints=False), progress=False)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("method, message", [
    ({"name": "activation", "rounds": 2}, "method.rounds: a key of the attribution method, not of activation"),
    ({"name": "attribution", "bias_weight": 0.5}, "method.bias_weight: a key of the activation method"),
])
def test_the_cli_refuses_a_key_of_the_other_method_in_one_line(tmp_path, capsys, method, message):
    from fairprune.cli import main as cli_main

    path = tmp_path / "run.json"
    path.write_text(json.dumps(config_for(tmp_path / "no-such-model", tmp_path / "never", method)))
    assert cli_main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_plugins_command_lists_methods_under_their_kind(capsys):
    from fairprune.cli import main as cli_main

    assert cli_main(["plugins", "--json"]) == 0
    methods = {e["name"] for e in json.loads(capsys.readouterr().out)["methods"]}
    assert {"activation", "attribution"} <= methods
