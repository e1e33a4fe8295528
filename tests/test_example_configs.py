"""Every example config validates, with every plugin it names, before any model work."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairprune.core.contract.registry import get_registry
from fairprune.core.io.outputs import release_output_dir
from fairprune.core.run.pipeline import prepare, resolve_method

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_validates_before_any_model_work(path, tmp_path):
    registry = get_registry()
    run = prepare(str(path), overrides=[f"output.dir={tmp_path / 'out'}"], registry=registry, progress=False)
    try:
        # prepare refuses unknown plugins and keys that would do nothing; the method must resolve by its name
        assert resolve_method(run.config, registry).name == run.config.method.name
    finally:
        release_output_dir(run.output_dir)


def test_the_examples_include_the_register_recipe():
    assert {p.name for p in EXAMPLES} >= {"fair-smollm2.yaml", "fair-smollm2-registers.yaml"}
