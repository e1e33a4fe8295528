"""Plugins: one that exits at import or two that claim one name break only what asks for them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import DuplicatePluginError, PluginContractError
from fairprune.core.contract.registry import DISABLE_ENV, STRICT_ENV, Registry, reset_registry
from fairprune.testing import snapshot
from fairprune.testing.plugins import install_plugin

EXITS = "import sys\nsys.exit('this plugin needs a GPU')\n"

SCORER = '''
from fairprune.core.contract.hookspecs import hookimpl

class Same:
    name = "same_name"
    description = "registered by {dist}"
    def score(self, bias, importance, bias_weight):
        return bias

@hookimpl
def fairprune_register_scorers(register):
    register(Same())
'''


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.delenv(STRICT_ENV, raising=False)
    install_plugin(tmp_path, "fp-exits", "exits", "fp_exits_zz", EXITS)
    install_plugin(tmp_path, "fp-one", "one", "fp_one_zz", SCORER.format(dist="fp-one"))
    install_plugin(tmp_path, "fp-two", "two", "fp_two_zz", SCORER.format(dist="fp-two"))
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_registry()
    yield tmp_path
    reset_registry()
    for module in ("fp_exits_zz", "fp_one_zz", "fp_two_zz"):
        sys.modules.pop(module, None)


def test_a_plugin_calling_sys_exit_is_reported_and_commands_go_on(site, capsys):
    assert cli_main(["plugins", "--json"]) == 0
    broken = {b["plugin"]: b["error"] for b in json.loads(capsys.readouterr().out)["broken"]}
    assert broken["exits"] == "failed to import: SystemExit: this plugin needs a GPU"


def test_two_plugins_with_one_name_are_reported_like_a_broken_plugin(site, capsys):
    assert cli_main(["plugins"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "registered twice" in line)
    assert "'one' (fp-one)" in line and "'two' (fp-two)" in line and f"{DISABLE_ENV}=two" in line
    assert "same_name" not in out.split("broken plugins")[0], "neither plugin's object is listed as usable"


def test_only_a_run_that_asks_for_the_clashing_name_fails(site, tmp_path, capsys):
    registry = Registry()
    assert registry.get("scorers", "linear").name == "linear"
    with pytest.raises(DuplicatePluginError, match=f"registered twice.*{DISABLE_ENV}=two"):
        registry.get("scorers", "same_name")
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": {"source": str(tmp_path / "no-model")},
                                  "method": {"scorer": "same_name"}, "output": {"dir": str(tmp_path / "out")}}))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(["run", str(config), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and DISABLE_ENV in err
    assert err.startswith("error: method.scorer.name: scorer 'same_name' is registered twice")
    assert snapshot(tmp_path) == before


def test_disabling_one_of_the_pair_gives_the_name_to_the_other(site, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "two")
    assert Registry().get("scorers", "same_name").description == "registered by fp-one"


def test_strict_mode_still_fails_on_either_problem(site, monkeypatch):
    monkeypatch.setenv(STRICT_ENV, "1")
    monkeypatch.setenv(DISABLE_ENV, "two")
    with pytest.raises(PluginContractError, match="SystemExit: this plugin needs a GPU"):
        Registry()
    monkeypatch.setenv(DISABLE_ENV, "exits")
    with pytest.raises(DuplicatePluginError, match="registered twice"):
        Registry()
