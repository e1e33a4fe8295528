"""The registry resolves names, refuses duplicates, and survives broken plugins."""

from __future__ import annotations

import sys
import types
from importlib import metadata

import pytest

from fairprune.core.contract.errors import DuplicatePluginError, UnknownPluginError
from fairprune.core.contract.hookspecs import hookimpl
from fairprune.core.contract.registry import Registry, contract_problem


def _metric_plugin(metric_name: str) -> object:
    class Metric:
        name = metric_name
        description = "test metric"
        needs_activations = False

        def score(self, weights, stats):
            return weights.gate.abs().sum(1)

    class Plugin:
        @hookimpl
        def fairprune_register_importance_metrics(self, register):
            register(Metric())

    return Plugin()


def test_unknown_metric_lists_known_names_and_closest():
    reg = Registry(load_entrypoints=False)
    with pytest.raises(UnknownPluginError) as info:
        reg.get("importance_metrics", "max_abs_weigth")
    message = str(info.value)
    assert "Did you mean 'max_abs_weight'?" in message
    for name in ("l1_product", "peak_to_peak", "variance", "activation_weight"):
        assert name in message
    assert isinstance(info.value, LookupError) and not isinstance(info.value, KeyError)


def test_duplicate_name_names_both_plugins():
    reg = Registry(load_entrypoints=False)
    with pytest.raises(DuplicatePluginError) as info:
        reg.add_plugin(_metric_plugin("l2"), name="my_metrics", package="my-package")
    message = str(info.value)
    assert "fairprune.plugins.importance" in message and "my_metrics" in message and "my-package" in message


def test_plugin_raising_on_import_is_reported_and_others_load(monkeypatch):
    good = types.ModuleType("fairprune_test_good_plugin")
    good.plugin = _metric_plugin("good_metric")
    monkeypatch.setitem(sys.modules, "fairprune_test_good_plugin", good)
    eps = [metadata.EntryPoint("broken", "fairprune_test_no_such_module_zz:plugin", "fairprune"),
           metadata.EntryPoint("good", "fairprune_test_good_plugin:plugin", "fairprune")]
    monkeypatch.setattr(metadata, "entry_points", lambda group=None, **kw: eps if group == "fairprune" else [])
    reg = Registry(strict=False, disabled=frozenset())
    assert "good_metric" in reg.names("importance_metrics")
    assert "max_abs_weight" in reg.names("importance_metrics")
    broken = {b.plugin: b.error for b in reg.broken}
    assert "broken" in broken and "ModuleNotFoundError" in broken["broken"]


def test_registration_hook_raising_is_reported_and_others_load():
    class Exploding:
        @hookimpl
        def fairprune_register_pruners(self, register):
            raise RuntimeError("boom")

    reg = Registry(load_entrypoints=False, strict=False)
    reg.add_plugin(Exploding(), name="exploding")
    assert any(b.plugin == "exploding" and "boom" in b.error for b in reg.broken)
    assert reg.names("pruners") == ["compensated", "mask", "structural"]


class _NoName:
    description = "x"

    def score(self, weights, stats):
        return weights


class _NoMethod:
    name = "no_method"
    description = "x"


class _WrongArity:
    name = "wrong_arity"
    description = "x"

    def score(self, weights):
        return weights


@pytest.mark.parametrize(("obj", "fragment"), [
    (_NoName(), "'name'"), (_NoMethod(), "missing method score()"), (_WrongArity(), "score() must accept"),
])
def test_contract_problem_rejects_incomplete_objects(obj, fragment):
    problem = contract_problem("importance_metrics", obj)
    assert problem is not None and fragment in problem


def test_contract_problem_accepts_builtins():
    reg = Registry(load_entrypoints=False)
    for kind in ("importance_metrics", "pruners", "model_sources", "architectures"):
        for entry in reg.items(kind):
            assert contract_problem(kind, entry.obj) is None, entry.name


def test_plugins_command_lists_kinds_without_importing_torch():
    import json
    import subprocess
    import sys

    code = ("import sys, io, contextlib; from fairprune.cli import main; buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf): main(['plugins', '--json'])\n"
            "print(buf.getvalue()); print('TORCH' if 'torch' in sys.modules else 'NO_TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    body, marker = out.rsplit("\n", 2)[0], out.strip().rsplit("\n", 1)[-1]
    assert marker == "NO_TORCH"
    data = json.loads(body)
    assert {"broken", "disabled", "pruners", "importance_metrics"} <= set(data)
    assert all(set(e) == {"name", "description", "package"} for e in data["pruners"])
