"""Run configs: strict validation with field paths, overrides, formats, hashing."""

from __future__ import annotations

import json
import re

import pytest

from fairprune.core.contract.config import Budget, RunConfig, load_config, resolve_component
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.registry import Registry
from fairprune.core.run.pipeline import resolve_method

MINIMAL = {"model": {"source": "smollm2-135m"}}


def test_minimal_config_fills_defaults():
    config = load_config(MINIMAL)
    method = resolve_method(config, Registry(load_entrypoints=False))
    assert config.method.name == "activation" and method.name == "activation"
    assert method.params.bias_weight == 0.8
    assert method.params.scorer.name == "linear"
    assert config.pruning.budget.param_fraction == 0.002
    assert method.params.metric.name == "relative_mean_abs_diff"


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_bias_weight_outside_unit_interval_names_the_field(weight):
    with pytest.raises(ConfigError, match=r"^invalid config: method\.bias_weight"):
        resolve_method(load_config({**MINIMAL, "method": {"bias_weight": weight}}), Registry(load_entrypoints=False))


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


@pytest.mark.parametrize("override, expected", [
    ("bias.axes=race", "bias.axes: Input should be a valid list; write a list, e.g. [race]"),
    ("pruning.budget={neurons:100}", "YAML needs a space after the colon: {neurons: 100}"),
    ("foo.bar=1", "foo: Extra inputs are not permitted; known keys here: model, method, bias, pruning"),
    ("sweep.budgets=[0.001]", "sweep.budgets.0: Input should be a valid dictionary (got 0.001)"),
])
def test_common_mistakes_get_a_hint(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(MINIMAL, [override])
    assert expected in str(info.value) and "Budget" not in str(info.value) and "got None" not in str(info.value)


def test_wrong_type_names_field_and_value():
    with pytest.raises(ConfigError, match=r"bias\.batch_size.*'many'"):
        load_config({**MINIMAL, "bias": {"batch_size": "many"}})


@pytest.mark.parametrize("override, field", [
    ("bias.batch_size=true", "bias.batch_size"),                                  # int
    ("method.cloze_check={max_increase_pct: 10, check_limit: true}", "method.cloze_check.check_limit"),  # int | None
    ("method.max_perplexity_increase_pct=false", "method.max_perplexity_increase_pct"),                 # float | None
    ("evaluation.evaluators=[{name: random_control, params: {draws: true}}]",                # a plugin's Params
     "evaluation.evaluators.0.params.draws"),
])
def test_a_boolean_where_a_number_is_expected_is_refused(override, field):
    # pydantic alone reads true as 1: check_limit: true would check one passage
    from fairprune.core.run.pipeline import resolve_plugins

    with pytest.raises(ConfigError) as info:  # sections at load, plugins' params when they are resolved
        resolve_plugins(load_config({**MINIMAL, "method": "attribution"}, [override]), Registry(load_entrypoints=False))
    assert f"{field}: expected a number, not a boolean" in str(info.value) and "\n" not in str(info.value)


def test_numbers_and_booleans_still_load_where_they_belong():
    config = load_config({**MINIMAL, "method": "attribution"},
                         ["method.max_perplexity_increase_pct=1", "method.floor_guard=true", "output.overwrite=true"])
    method = resolve_method(config, Registry(load_entrypoints=False))
    assert config.output.overwrite is True
    assert method.params.max_perplexity_increase_pct == 1.0 and method.params.floor_guard is True


def test_overrides_use_dotted_keys_and_yaml_values():
    config = load_config(MINIMAL, ["method.bias_weight=0.6", "output.dir=runs/x", "pruning.pruner=mask",
                                   "pruning.budget={neurons: 12}", "method.scorer={name: linear, params: {foo: 3}}"])
    assert config.method.params["bias_weight"] == 0.6
    assert config.output.dir == "runs/x"
    assert config.pruning.pruner.name == "mask"
    assert config.pruning.budget == Budget(neurons=12)
    assert config.method.params["scorer"] == {"name": "linear", "params": {"foo": 3}}


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(MINIMAL, ["method.bias_weight"])


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_config_files_in_three_formats_load_alike(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    if suffix == ".yaml":
        path.write_text("model:\n  source: m\nmethod:\n  name: activation\n  bias_weight: 0.5\n")
    elif suffix == ".toml":
        path.write_text('[model]\nsource = "m"\n[method]\nname = "activation"\nbias_weight = 0.5\n')
    else:
        path.write_text(json.dumps({"model": {"source": "m"}, "method": {"name": "activation", "bias_weight": 0.5}}))
    assert load_config(path).method.params == {"bias_weight": 0.5}


def test_missing_and_unparsable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml:1: not valid YAML"):
        load_config(bad)


def test_config_hash_is_stable_and_sensitive():
    a, b = load_config(MINIMAL), load_config(dict(MINIMAL))
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != load_config(MINIMAL, ["method.bias_weight=0.7"]).config_hash()
    assert a.config_hash() == load_config(MINIMAL, ["output.dir=elsewhere"]).config_hash()


def test_component_shorthand_string_equals_mapping():
    assert RunConfig.model_validate({**MINIMAL, "pruning": {"pruner": "mask"}}).pruning.pruner.name == "mask"
    assert RunConfig.model_validate({**MINIMAL, "method": "attribution"}).method.name == "attribution"


def test_unknown_plugin_in_component_names_path_and_known_names():
    registry = Registry(load_entrypoints=False)
    config = load_config({**MINIMAL, "method": {"scorer": "lineer"}})
    with pytest.raises(ConfigError) as info:
        resolve_method(config, registry)
    text = str(info.value)
    assert text.startswith("method.scorer.name: Unknown scorer 'lineer'")
    assert "Did you mean 'linear'?" in text and "rank" in text


def test_plugin_params_are_validated_against_the_plugin_model():
    registry = Registry(load_entrypoints=False)
    config = load_config({**MINIMAL, "pruning": {"pruner": {"name": "structural", "params": {"typo": 1}}}})
    with pytest.raises(ConfigError, match=r"pruning\.pruner\.params\.typo"):
        resolve_component(registry, "pruners", config.pruning.pruner, "pruning.pruner")
    with pytest.raises(ConfigError, match=r"method\.scorer\.params\.typo"):
        resolve_method(load_config({**MINIMAL, "method": {"scorer": {"name": "linear", "params": {"typo": 1}}}}),
                       registry)


@pytest.mark.parametrize("old, new", [
    ({"scoring": {"bias_weight": 0.5}}, "method"), ({"bias": {"method": "attribution"}}, "method.name"),
    ({"bias": {"attribution": {"folds": 2}}}, "method"), ({"bias": {"metric": "x"}}, "method.metric"),
    ({"pruning": {"guard_magnitude_ratio": 5}}, "method.guard_magnitude_ratio"),
])
def test_a_key_of_the_old_layout_says_where_it_moved(old, new):
    with pytest.raises(ConfigError) as info:
        load_config({**MINIMAL, **old})
    assert f"moved to {new} " in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("method, key, owner", [("activation", "folds", "attribution"),
                                                ("attribution", "bias_weight", "activation"),
                                                ("attribution", "scorer", "activation")])
def test_a_key_of_the_other_method_is_refused_naming_it(method, key, owner):
    config = load_config({**MINIMAL, "method": {"name": method, key: 1}})
    with pytest.raises(ConfigError) as info:
        resolve_method(config, Registry(load_entrypoints=False))
    assert str(info.value).startswith(f"method.{key}: a key of the {owner} method, not of {method}")


@pytest.mark.parametrize("section", [{"pruning": {"round_to": 8}}, {"sweep": {"bias_weights": [0.5]}}])
def test_a_shared_key_the_method_does_not_read_is_refused(section):
    config = load_config({**MINIMAL, "method": "attribution", **section})
    with pytest.raises(ConfigError, match="the attribution method does not read this key"):
        resolve_method(config, Registry(load_entrypoints=False))
    resolve_method(load_config({**MINIMAL, **section}), Registry(load_entrypoints=False))  # activation reads both


def test_inline_and_nested_method_params_are_the_same():
    inline = load_config({**MINIMAL, "method": {"name": "attribution", "folds": 2}})
    nested = load_config({**MINIMAL, "method": {"name": "attribution", "params": {"folds": 2}}})
    assert inline == nested and inline.config_hash() == nested.config_hash()


def test_capability_cost_as_activation_importance_is_refused_before_the_model_loads():
    config = load_config({**MINIMAL, "method": {"importance": "capability_cost"}})
    with pytest.raises(ConfigError, match=r"^method\.importance: 'capability_cost' is the attribution method"):
        resolve_method(config, Registry(load_entrypoints=False))


def test_an_override_inside_a_methods_component_keeps_the_components_other_fields():
    """`--set method.capability.params.x=...` reaches the method's capability component (after validation a
    component's keys live under ``params``) instead of replacing it with a nameless one."""
    from fairprune.core.contract.config import load_config

    config = load_config({"model": {"source": "smollm2-135m"}, "method": {"name": "attribution", "capability": {
        "name": "capability_cost", "params": {"window_tokens": 8, "check_tokens": 512}}, "folds": 2}},
        ["method.capability.params.window_tokens=4", "method.folds=3"])
    assert config.method.params["capability"] == {"name": "capability_cost",
                                                  "params": {"window_tokens": 4, "check_tokens": 512}}
    assert config.method.params["folds"] == 3
    assert config.method.name == "attribution"


def test_an_unknown_key_set_on_a_method_is_still_refused_before_the_model_loads(tmp_path):
    from fairprune.core.contract.registry import get_registry
    from fairprune.core.run.pipeline import prepare

    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"method\.bogus: Extra inputs are not permitted"):
        prepare({"model": {"source": "smollm2-135m"}, "method": {"name": "attribution"}, "output": {"dir": str(out)}},
                ["method.bogus=1"], registry=get_registry(), progress=False)
    assert not out.exists()


@pytest.mark.parametrize("key", ["max_memory", "offload_folder"])
def test_placement_keys_without_a_device_map_are_refused(key):
    value = {"cpu": "1GiB"} if key == "max_memory" else "offload"
    with pytest.raises(ConfigError, match=f"model: .*{key} without device_map does nothing"):
        load_config({**MINIMAL, "model": {"source": "x", key: value}})
    assert getattr(load_config({**MINIMAL, "model": {"source": "x", "device_map": "auto", key: value}}).model, key)


def test_a_repeated_yaml_key_or_a_syntax_error_is_one_line_at_its_file_and_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  source: a\npruning:\n  budget: {neurons: 4}\nmodel:\n  source: b\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:5: duplicate key 'model'"):
        load_config(path)
    path.write_text("model:\n  source: a\n  source: b\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:3: duplicate key 'source'"):
        load_config(path)
    path.write_text("model: [\n  source: a\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "run.yaml:3: not valid YAML" in str(info.value) and len(str(info.value).splitlines()) == 1
    path.write_text("model:\n  source: a\n")
    assert load_config(path).model.source == "a"


@pytest.mark.parametrize(("override", "message"), [
    ("model.sorce=x", "model.sorce: Extra inputs are not permitted. Did you mean 'source'?"),
    ("pruning.budget.param_fractoin=0.1", "pruning.budget.param_fractoin: Extra inputs are not permitted. "
                                          "Did you mean 'param_fraction'?"),
    ("bias.axis=[race]", "bias.axis: Extra inputs are not permitted. Did you mean 'axes'?"),
])
def test_a_misspelled_key_gets_the_closest_field(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(MINIMAL, [override])
    with pytest.raises(ConfigError) as info:
        load_config(MINIMAL, ["bias.zzzz=1"])
    assert "Did you mean" not in str(info.value)


def test_a_misspelled_method_or_plugin_key_gets_the_closest_field():
    registry = Registry(load_entrypoints=False)
    config = load_config({**MINIMAL, "method": {"name": "attribution"}}, ["method.foldz=2"])
    with pytest.raises(ConfigError, match=re.escape("method.foldz: Extra inputs are not permitted. "
                                                    "Did you mean 'folds'?")):
        resolve_method(config, registry)
    config = load_config({**MINIMAL, "method": {"name": "attribution"}},
                         ["method.capability={name: capability_cost, params: {window_token: 4}}"])
    with pytest.raises(ConfigError, match=re.escape("method.capability.params.window_token: Extra inputs are not "
                                                    "permitted. Did you mean 'window_tokens'?")):
        resolve_method(config, registry)
