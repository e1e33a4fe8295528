"""Run configs: strict validation with field paths, overrides, formats, hashing."""

from __future__ import annotations

import json

import pytest

from fairprune.core.config import Budget, RunConfig, load_config, resolve_component
from fairprune.core.errors import ConfigError
from fairprune.core.registry import Registry

MINIMAL = {"model": {"source": "smollm2-135m"}}


def test_minimal_config_fills_defaults():
    config = load_config(MINIMAL)
    assert config.scoring.bias_weight == 0.8
    assert config.scoring.scorer.name == "linear"
    assert config.pruning.budget.param_fraction == 0.002
    assert config.bias.metric.name == "relative_mean_abs_diff"


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_bias_weight_outside_unit_interval_names_the_field(weight):
    with pytest.raises(ConfigError, match=r"scoring\.bias_weight"):
        load_config({**MINIMAL, "scoring": {"bias_weight": weight}})


def test_unknown_key_names_the_field():
    with pytest.raises(ConfigError, match=r"pruning\.budjet: Extra inputs are not permitted"):
        load_config({**MINIMAL, "pruning": {"budjet": {"neurons": 3}}})


@pytest.mark.parametrize("budget, message", [
    ({"neurons": 3, "param_fraction": 0.1}, "exactly one"),
    ({}, "exactly one"),
    ({"param_fraction": 1.5}, "param_fraction"),
    ({"neurons": 0}, "neurons"),
    ({"layer_percent": "lots"}, "layer_percent"),
])
def test_bad_budget_is_rejected(budget, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config({**MINIMAL, "pruning": {"budget": budget}})
    assert "pruning.budget" in str(info.value)


def test_wrong_type_names_field_and_value():
    with pytest.raises(ConfigError, match=r"bias\.batch_size.*'many'"):
        load_config({**MINIMAL, "bias": {"batch_size": "many"}})


def test_overrides_use_dotted_keys_and_yaml_values():
    config = load_config(MINIMAL, ["scoring.bias_weight=0.6", "output.dir=runs/x", "pruning.pruner=mask",
                                   "pruning.budget={neurons: 12}", "scoring.scorer.params.foo=3"])
    assert config.scoring.bias_weight == 0.6
    assert config.output.dir == "runs/x"
    assert config.pruning.pruner.name == "mask"
    assert config.pruning.budget == Budget(neurons=12)
    assert config.scoring.scorer.params == {"foo": 3}


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(MINIMAL, ["scoring.bias_weight"])


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_config_files_in_three_formats_load_alike(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    if suffix == ".yaml":
        path.write_text("model:\n  source: m\nscoring:\n  bias_weight: 0.5\n")
    elif suffix == ".toml":
        path.write_text('[model]\nsource = "m"\n[scoring]\nbias_weight = 0.5\n')
    else:
        path.write_text(json.dumps({"model": {"source": "m"}, "scoring": {"bias_weight": 0.5}}))
    assert load_config(path).scoring.bias_weight == 0.5


def test_missing_and_unparsable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)


def test_config_hash_is_stable_and_sensitive():
    a, b = load_config(MINIMAL), load_config(dict(MINIMAL))
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != load_config(MINIMAL, ["scoring.bias_weight=0.7"]).config_hash()
    assert a.config_hash() == load_config(MINIMAL, ["output.dir=elsewhere"]).config_hash()


def test_component_shorthand_string_equals_mapping():
    assert RunConfig.model_validate({**MINIMAL, "scoring": {"scorer": "rank"}}).scoring.scorer.name == "rank"


def test_unknown_plugin_in_component_names_path_and_known_names():
    registry = Registry(load_entrypoints=False)
    config = load_config({**MINIMAL, "scoring": {"scorer": "lineer"}})
    with pytest.raises(ConfigError) as info:
        resolve_component(registry, "scorers", config.scoring.scorer, "scoring.scorer")
    text = str(info.value)
    assert text.startswith("scoring.scorer.name: Unknown scorer 'lineer'")
    assert "Did you mean 'linear'?" in text and "rank" in text


def test_plugin_params_are_validated_against_the_plugin_model():
    registry = Registry(load_entrypoints=False)
    config = load_config({**MINIMAL, "scoring": {"scorer": {"name": "linear", "params": {"typo": 1}}}})
    with pytest.raises(ConfigError, match=r"scoring\.scorer\.params\.typo"):
        resolve_component(registry, "scorers", config.scoring.scorer, "scoring.scorer")
