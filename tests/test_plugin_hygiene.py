"""Hook hygiene: misspelled hooks, invalid objects, broken packages and disabled plugins.

Third-party plugins are installed here the way pip installs them: a
``*.dist-info`` directory with an ``entry_points.txt`` on ``sys.path``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import PluginContractError
from fairprune.core.contract.hookspecs import hookimpl
from fairprune.core.contract.registry import DISABLE_ENV, STRICT_ENV, Registry, contract_problem, reset_registry
from fairprune.testing.plugins import install_plugin

GOOD_PLUGIN = '''
from fairprune.core.contract.hookspecs import hookimpl

class HalfScorer:
    name = "half"
    description = "half the bias"
    def score(self, bias, importance, bias_weight):
        return bias / 2

@hookimpl
def fairprune_register_scorers(register):
    register(HalfScorer())
'''

BROKEN_PLUGINS = {
    "import_error": "import fairprune_no_such_dependency_zz\n",
    "misspelled": '''
from fairprune.core.contract.hookspecs import hookimpl

@hookimpl
def fairprune_register_scorer(register):
    pass
''',
    "bad_object": '''
from fairprune.core.contract.hookspecs import hookimpl

class Nameless:
    description = "no name"
    def score(self, bias, importance, bias_weight):
        return bias

class WrongSignature:
    name = "wrong_signature"
    description = "score takes one argument"
    def score(self, bias):
        return bias

class Fine:
    name = "fine_one"
    description = "registered next to two bad objects"
    def score(self, bias, importance, bias_weight):
        return bias

@hookimpl
def fairprune_register_scorers(register):
    register(Nameless())
    register(WrongSignature())
    register(Fine())
''',
    "raises": '''
from fairprune.core.contract.hookspecs import hookimpl

@hookimpl
def fairprune_register_evaluators(register):
    raise RuntimeError("tracker credentials missing")
''',
}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh site directory on ``sys.path`` holding one good and four broken plugin packages."""
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.delenv(STRICT_ENV, raising=False)
    install_plugin(tmp_path, "fp-good", "good", "fp_good_zz", GOOD_PLUGIN)
    for key, source in BROKEN_PLUGINS.items():
        install_plugin(tmp_path, f"fp-{key.replace('_', '-')}", key, f"fp_{key}_zz", source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for key in [*BROKEN_PLUGINS, "good"]:
        sys.modules.pop(f"fp_{key}_zz", None)


def broken_by_plugin(registry: Registry) -> dict[str, str]:
    return {b.plugin: b.error for b in registry.broken}


def test_broken_plugins_leave_every_other_plugin_working(site: Path) -> None:
    registry = Registry()
    assert registry.get("scorers", "half").score(4.0, 0.0, 0.8) == 2.0
    assert registry.get("scorers", "fine_one").name == "fine_one"
    assert "linear" in registry.names("scorers")
    assert "next_token_consistency" in registry.names("evaluators")  # the installed example package
    assert {"import_error", "misspelled", "bad_object", "raises"} <= set(broken_by_plugin(registry))


def test_import_error_is_one_specific_line(site: Path) -> None:
    error = broken_by_plugin(Registry())["import_error"]
    assert error == "failed to import: ModuleNotFoundError: No module named 'fairprune_no_such_dependency_zz'"


def test_misspelled_hook_names_the_hook_and_the_right_one(site: Path) -> None:
    registry = Registry()
    error = broken_by_plugin(registry)["misspelled"]
    assert error == ("implements 'fairprune_register_scorer', which is not a fairprune hook; "
                     "did you mean 'fairprune_register_scorers'?")
    assert "misspelled" not in {p for p, _ in registry.pm.list_name_plugin()}


def test_objects_breaking_the_protocol_are_rejected_with_the_reason(site: Path) -> None:
    errors = [b for b in Registry().broken if b.plugin == "bad_object"]
    assert len(errors) == 2 and all(b.package == "fp-bad-object" for b in errors)
    assert "invalid scorer" in errors[0].error and "'name' must be a lowercase" in errors[0].error
    assert errors[1].error.endswith("score() must accept (bias, importance, bias_weight)")
    assert all("\n" not in b.error for b in errors)


def test_a_raising_registration_hook_is_reported(site: Path) -> None:
    error = broken_by_plugin(Registry())["raises"]
    assert error == "raised in fairprune_register_evaluators: RuntimeError: tracker credentials missing"


def test_each_failure_is_logged_once_as_one_line(site: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fairprune.core.contract.registry"):
        Registry()
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "'import_error'" in m]) == 1
    assert all("\n" not in m for m in lines)
    assert any(m.startswith("fairprune plugin 'misspelled' (fp-misspelled) implements") for m in lines)


def test_strict_mode_raises_on_the_first_broken_plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises((ModuleNotFoundError, PluginContractError)):
        Registry()


def test_in_process_plugin_with_misspelled_hook_is_refused() -> None:
    class Typo:
        @hookimpl
        def fairprune_register_evaluator(self, register):
            pass

    with pytest.raises(PluginContractError, match="did you mean 'fairprune_register_evaluators'"):
        Registry(load_entrypoints=False, extra_plugins=(Typo(),))


def test_hookimpl_with_an_argument_the_spec_lacks_is_refused() -> None:
    class ExtraArgument:
        @hookimpl
        def fairprune_layer_pruned(self, layer, removed, seconds):
            pass

    with pytest.raises(PluginContractError, match="seconds") as info:
        Registry(load_entrypoints=False, extra_plugins=(ExtraArgument(),))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("disable", ["good", "fp-good"])
def test_disabled_by_environment(site: Path, monkeypatch: pytest.MonkeyPatch, disable: str) -> None:
    monkeypatch.setenv(DISABLE_ENV, f"{disable}, import_error")
    registry = Registry()
    assert "half" not in registry.names("scorers")
    assert "import_error" not in broken_by_plugin(registry)
    assert "fine_one" in registry.names("scorers")


def test_disabled_by_constructor_argument_including_builtins(site: Path) -> None:
    registry = Registry(disabled=frozenset({"example", "scorers"}))
    assert "body_type" not in registry.names("bias_axes")
    assert "linear" not in registry.names("scorers") and "half" in registry.names("scorers")
    assert "race" in registry.names("bias_axes")


def test_plugins_command_shows_broken_and_disabled(site: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(DISABLE_ENV, "good")
    reset_registry(None)
    try:
        assert cli_main(["plugins", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert cli_main(["plugins"]) == 0
        text = capsys.readouterr().out
    finally:
        reset_registry(None)
    assert "good" in data["disabled"]
    assert {b["plugin"] for b in data["broken"]} >= {"import_error", "misspelled", "bad_object", "raises"}
    assert "half" not in {e["name"] for e in data["scorers"]}
    assert "import_error (fp-import-error): failed to import: ModuleNotFoundError" in text
    assert "disabled: good" in text


def test_contract_problem_names_what_is_missing() -> None:
    class NoScore:
        name = "no_score"
        description = "forgot the method"

    class NoDescription:
        name = "no_description"

        def score(self, bias, importance, bias_weight):
            return bias

    assert contract_problem("scorers", NoScore()) == "missing method score()"
    assert contract_problem("scorers", NoDescription()) == "missing a 'description' string"
    assert contract_problem("importance_metrics", NoScore()) == "missing method score()"


class EveryKind:
    """One valid object for each registration hook, as a third-party plugin would register them."""

    @staticmethod
    def _obj(name: str, **methods) -> object:
        cls = type(name.title().replace("_", ""), (), {"name": name, "description": f"test {name}", **methods})
        return cls()

    @hookimpl
    def fairprune_register_architectures(self, register):
        from fairprune.architectures.glu import GLUAdapter

        class Renamed(GLUAdapter):
            name = "hy_adapter"
            description = "test hy_adapter"
            gate_attr, up_attr, down_attr = "w1", "w3", "w2"

        register(Renamed())

    @hookimpl
    def fairprune_register_importance_metrics(self, register):
        register(self._obj("hy_importance", needs_activations=False, score=lambda self, weights, stats: None))

    @hookimpl
    def fairprune_register_bias_metrics(self, register):
        register(self._obj("hy_bias", score=lambda self, pooled, magnitude: None))

    @hookimpl
    def fairprune_register_bias_axes(self, register):
        register(self._obj("hy_axis", prompt_groups=lambda self, split="all": [], attribute_groups=lambda self: {}))

    @hookimpl
    def fairprune_register_collectors(self, register):
        register(self._obj("hy_site", collector_kind="site", role="neuron", fixed_width=False))
        register(self._obj("hy_pooling", collector_kind="pooling",
                           weights=lambda self, mask, content_pos, diverge_at: None))

    @hookimpl
    def fairprune_register_scorers(self, register):
        register(self._obj("hy_scorer", score=lambda self, bias, importance, bias_weight: None))

    @hookimpl
    def fairprune_register_pruners(self, register):
        register(self._obj("hy_pruner", needs_calibration=False,
                           apply=lambda self, model, adapter, plan, calibration: None))

    @hookimpl
    def fairprune_register_model_sources(self, register):
        register(self._obj("hy_source", priority=0, matches=lambda self, spec: False, load=lambda self, spec: None))

    @hookimpl
    def fairprune_register_evaluators(self, register):
        register(self._obj("hy_evaluator", observe=lambda self, model, context: None,
                           compare=lambda self, base, pruned, context: None))


def test_every_registration_hook_fills_its_kind() -> None:
    registry = Registry(load_entrypoints=False, strict=True, extra_plugins=(EveryKind(),))
    expected = {"architectures": "hy_adapter", "importance_metrics": "hy_importance", "bias_metrics": "hy_bias",
                "bias_axes": "hy_axis", "sites": "hy_site", "poolings": "hy_pooling", "scorers": "hy_scorer",
                "pruners": "hy_pruner", "model_sources": "hy_source", "evaluators": "hy_evaluator"}
    for kind, name in expected.items():
        entry = registry.entry(kind, name)
        assert entry.plugin == "EveryKind" and entry.description == f"test {name}"
    assert registry.broken == []


# -- the contract classes catch what they promise to catch ------------------------------------------

def _fails(contract_cls: type, attribute: str, obj: object, test: str, **kwargs) -> None:
    case = contract_cls()
    setattr(case, attribute, obj)
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        getattr(case, test)(**kwargs)


class _Scorer:
    name, description = "anti", "prefers unbiased neurons"

    def score(self, bias, importance, bias_weight):
        return -bias.float()


class _Leaky:
    name, description = "leaky", "puts one template in both splits"

    def prompt_groups(self, split="all"):
        from fairprune.core.contract.protocols import PromptGroup

        group = PromptGroup("leaky", "t0", ("black", "white"), ("the black man", "the white man"))
        return [group] if split != "all" else [group, group]

    def attribute_groups(self):
        return {"black": ("black",), "white": ("white",)}


def test_contracts_reject_broken_plugins() -> None:
    import torch

    from fairprune.core.contract.results import EvalResult
    from fairprune.testing import contracts as c

    _fails(c.ScorerContract, "scorer", _Scorer(), "test_more_biased_neurons_score_higher_at_equal_importance")
    _fails(c.ScorerContract, "scorer", _Scorer(), "test_raising_one_neurons_bias_never_lowers_its_score")

    magnitude_only = type("M", (), {"name": "m", "description": "d", "score": lambda s, pooled, mag: mag})()
    _fails(c.BiasMetricContract, "metric", magnitude_only, "test_zero_when_members_are_identical")
    first_member = type("F", (), {"name": "f", "description": "d", "score": lambda s, p, m: p[:, 0].mean(0)})()
    _fails(c.BiasMetricContract, "metric", first_member, "test_symmetric_under_member_swap")

    too_wide = type("W", (), {"name": "w", "description": "d", "needs_activations": False,
                              "score": lambda s, w, st: torch.zeros(w.gate.shape[0] + 1)})()
    _fails(c.ImportanceMetricContract, "metric", too_wide, "test_output_is_one_finite_float_per_neuron")

    _fails(c.BiasAxisContract, "axis", _Leaky(), "test_split_is_disjoint_by_template")
    _fails(c.BiasAxisContract, "axis", _Leaky(), "test_unknown_split_is_an_error")

    int_metric = EvalResult("e", metrics={"count": 3})
    _fails(c.EvaluatorContract, "evaluator", object(), "test_metrics_are_named_floats", result=int_metric)
    _fails(_named_contract(), "x", type("B", (), {"name": "Bad Name", "description": "d"})(),
           "test_name_is_lowercase_snake_or_kebab_case")


def _named_contract() -> type:
    from fairprune.testing.contracts import PluginContract

    return type("NamedContract", (PluginContract,), {"attribute": "x", "kind": "scorers"})
