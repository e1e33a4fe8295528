"""Meta-tests on the plugin contract: every hook has a test, is documented with its signature, and is used."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from fairprune.core.contract import hookspecs
from fairprune.core.contract.registry import HOOK_KINDS

ROOT = Path(__file__).resolve().parents[1]
HOOKS: dict[str, object] = {name: fn for name, fn in vars(hookspecs).items()
                            if name.startswith(f"{hookspecs.PROJECT}_") and callable(fn)}


def signature(name: str) -> str:
    """``name(arg, ...)`` as written in the docs."""
    return f"{name}({', '.join(inspect.signature(HOOKS[name]).parameters)})"


def test_hooks_are_found() -> None:
    assert len(HOOKS) >= 12 and set(HOOK_KINDS) <= set(HOOKS)
    assert all(getattr(fn, f"{hookspecs.PROJECT}_spec", None) is not None for fn in HOOKS.values())


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_is_implemented_in_some_test(hook: str) -> None:
    here = Path(__file__).name
    pattern = re.compile(rf"def {hook}\(")
    users = [p.name for p in (ROOT / "tests").glob("test_*.py") if p.name != here and pattern.search(p.read_text())]
    assert users, f"no test implements the hook {hook}; add one (tests/test_plugin_hygiene.py or a new test)"


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_signature_is_documented(hook: str) -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert f"`{signature(hook)}`" in text, f"CONTRIBUTING.md must document `{signature(hook)}`"


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_has_a_docstring(hook: str) -> None:
    assert (HOOKS[hook].__doc__ or "").strip(), f"hookspec {hook} needs a docstring"


@pytest.mark.parametrize("hook", sorted(set(HOOKS) - set(HOOK_KINDS)))
def test_every_lifecycle_hook_is_called_by_the_library(hook: str) -> None:
    pattern = re.compile(rf"hook\.{hook}\(")
    callers = [p for p in (ROOT / "fairprune").rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert callers, f"nothing in fairprune/ calls {hook}; a hook nobody calls is dead contract"


def test_hook_implementations_must_not_have_defaults() -> None:
    # pluggy never passes an implementation's default arguments, so the specs declare none either
    for name, fn in HOOKS.items():
        defaults = [p for p in inspect.signature(fn).parameters.values() if p.default is not inspect.Parameter.empty]
        assert not defaults, f"{name} declares defaults {defaults}"
