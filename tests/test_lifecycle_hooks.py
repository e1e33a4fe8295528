"""Lifecycle hooks: a recording plugin, as an experiment-tracker integration would be, sees a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import fairprune
from fairprune.core.contract.config import RunConfig
from fairprune.core.contract.errors import ModelSourceError, PlanError
from fairprune.core.contract.hookspecs import hookimpl
from fairprune.core.contract.registry import Registry
from fairprune.testing.models import tiny_model
from fairprune.testing.tokenizer import tiny_tokenizer


class Recorder:
    """Records every lifecycle call, in order, as ``(hook, arguments)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def fairprune_run_started(self, config, output_dir):
        self.events.append(("run_started", {"config": config, "output_dir": output_dir}))

    @hookimpl
    def fairprune_layer_pruned(self, layer, removed, width_before, width_after):
        self.events.append(("layer_pruned", {"layer": layer, "removed": removed, "width_before": width_before,
                                             "width_after": width_after}))

    @hookimpl
    def fairprune_run_finished(self, config, output_dir, metrics):
        self.events.append(("run_finished", {"config": config, "output_dir": output_dir, "metrics": metrics}))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def test_layer_pruned_is_called_per_layer_with_indices_and_widths() -> None:
    recorder = Recorder()
    registry = Registry(load_entrypoints=False, extra_plugins=(recorder,))
    model = tiny_model("llama")
    fairprune.prune(model, {1: [5, 0], 0: [3]}, registry=registry)
    calls = sorted((e["layer"], sorted(e["removed"]), e["width_before"], e["width_after"])
                   for name, e in recorder.events if name == "layer_pruned")
    assert calls == [(0, [3], 64, 63), (1, [0, 5], 64, 62)]
    assert recorder.names() == ["layer_pruned", "layer_pruned"]


def test_layer_pruned_is_not_called_for_an_invalid_plan() -> None:
    recorder = Recorder()
    registry = Registry(load_entrypoints=False, extra_plugins=(recorder,))
    with pytest.raises(PlanError):
        fairprune.prune(tiny_model("llama"), {0: [64]}, registry=registry)
    assert recorder.events == []


#: prompt pairs inside the tiny tokenizer's vocabulary (the built-in axes use words it does not know)
PAIRS: list[tuple[str, str]] = [
    (f"the {a} {who} {rest}", f"the {b} {who} {rest}")
    for a, b in (("black", "white"), ("asian", "hispanic"))
    for who, rest in (("man", "walked into the room and"), ("woman", "has a new job at the"),
                      ("doctor", "said that the"), ("student", "went to school because"))
]


def write_prompts(directory: Path) -> Path:
    path = directory / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompts": list(pair), "template_id": f"t{i % 4}"}) + "\n"
                            for i, pair in enumerate(PAIRS)))
    return path


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    fairprune.save_pretrained(tiny_model("llama"), tiny_tokenizer(), path)
    return path


def test_a_run_reports_start_layers_and_finish_with_its_metrics(tiny_model_dir: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    registry = Registry(load_entrypoints=False, extra_plugins=(recorder,))
    out = tmp_path / "run"
    config = {"model": {"source": str(tiny_model_dir)}, "bias": {"axes": [], "prompts": str(write_prompts(tmp_path)), "batch_size": 8},
              "method": {"guard_magnitude_ratio": None}, "pruning": {"budget": {"neurons": 6}},
              "evaluation": {"evaluators": ["parameters"]}, "output": {"dir": str(out), "save_model": False}}
    result = fairprune.run(config, registry=registry, progress=False)

    names = recorder.names()
    assert names[0] == "run_started" and names[-1] == "run_finished"
    assert set(names[1:-1]) == {"layer_pruned"}
    started, finished = recorder.events[0][1], recorder.events[-1][1]
    assert isinstance(started["config"], RunConfig) and started["config"].model.source == str(tiny_model_dir)
    assert Path(started["output_dir"]) == Path(finished["output_dir"]) == out
    assert finished["metrics"] == result.metrics == json.loads((out / "metrics.json").read_text())
    pruned = {e["layer"]: len(e["removed"]) for name, e in recorder.events if name == "layer_pruned"}
    assert pruned == {layer: len(idx) for layer, idx in result.plan.removed.items()}
    assert sum(pruned.values()) == finished["metrics"]["pruning"]["neurons_removed"] == 6


def test_run_finished_is_not_called_when_a_run_fails(tiny_model_dir: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    registry = Registry(load_entrypoints=False, extra_plugins=(recorder,))
    config = {"model": {"source": str(tmp_path / "no-such-model")}, "output": {"dir": str(tmp_path / "run")},
              "evaluation": {"evaluators": ["parameters"]}}
    with pytest.raises(ModelSourceError):
        fairprune.run(config, registry=registry, progress=False)
    assert "run_finished" not in recorder.names()
