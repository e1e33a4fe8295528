"""The example plugin package, installed like any third-party package, end to end.

``make test`` installs ``examples/plugins/fairprune-example`` (editable); this
module checks it is discovered through its entry point, that ``fairprune
plugins`` lists each of its plugins with the package name, runs the package's
own contract tests (imported below, so the root test run collects them), and
runs a config that selects every one of its plugins by name on a tiny model.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugins" / "fairprune-example"
PACKAGE = "fairprune-example"
#: kind -> the example plugin of that kind
EXAMPLE_PLUGINS: dict[str, str] = {
    "bias_axes": "body_type",
    "importance_metrics": "act_times_weight",
    "bias_metrics": "group_range",
    "scorers": "geometric",
    "evaluators": "next_token_consistency",
    "methods": "random_neurons",
}


def _example_contract_tests() -> dict[str, type]:
    """The ``Test*`` classes of the example package's own test module, to be collected here too."""
    path = EXAMPLE / "tests" / "test_contracts.py"
    spec = importlib.util.spec_from_file_location("fairprune_example_contract_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: obj for name, obj in vars(module).items() if name.startswith("Test") and isinstance(obj, type)}


globals().update(_example_contract_tests())


def test_example_package_is_installed_with_an_entry_point() -> None:
    dist = metadata.distribution(PACKAGE)
    points = [ep for ep in dist.entry_points if ep.group == "fairprune"]
    assert [(ep.name, ep.value) for ep in points] == [("example", "fairprune_example")]


def test_plugins_command_lists_each_example_plugin_with_its_package() -> None:
    out = subprocess.run([sys.executable, "-m", "fairprune.cli", "plugins", "--json"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    data = json.loads(out)
    for kind, name in EXAMPLE_PLUGINS.items():
        entry = {e["name"]: e for e in data[kind]}.get(name)
        assert entry is not None, f"{name} missing from {kind}"
        assert entry["package"] == PACKAGE and "example plugin" in entry["description"]
    assert not [b for b in data["broken"] if b["package"] == PACKAGE]


def test_entry_module_and_registration_do_not_import_torch() -> None:
    code = ("import sys, fairprune_example as m\n"
            "got = []\n"
            "for hook in [n for n in dir(m) if n.startswith('fairprune_register_')]:\n"
            "    getattr(m, hook)(register=got.append)\n"
            "print(len(got), 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["6", "False"]


def test_body_type_split_is_stable_and_about_a_quarter() -> None:
    from fairprune_example.axis import TEMPLATES, BodyTypeAxis, heldout_templates

    held = {g.template_id for g in BodyTypeAxis().prompt_groups("heldout")}
    assert held == set(heldout_templates(list(reversed(TEMPLATES))))  # independent of listing order
    assert len(held) == 3 and len(TEMPLATES) == 12


def test_act_times_weight_is_activation_times_column_norm() -> None:
    import torch
    from fairprune_example.importance import ActivationWeightImportance

    from fairprune.core.contract.protocols import MLPWeights

    down = torch.tensor([[3.0, 0.0, 1.0], [4.0, 2.0, 0.0]])  # columns have norms 5, 2, 1
    weights = MLPWeights(0, torch.zeros(3, 2), torch.zeros(3, 2), down)
    scores = ActivationWeightImportance().score(weights, {"mean_abs": torch.tensor([1.0, 10.0, 0.5])})
    torch.testing.assert_close(scores, torch.tensor([5.0, 20.0, 0.5]))


def test_act_times_weight_without_activations_says_what_to_do() -> None:
    import torch
    from fairprune_example.importance import ActivationWeightImportance

    from fairprune.core.contract.errors import ConfigError
    from fairprune.core.contract.protocols import MLPWeights

    weights = MLPWeights(0, torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="'act_times_weight' needs activation statistics"):
        ActivationWeightImportance().score(weights, None)


def test_group_range_on_three_members() -> None:
    import torch
    from fairprune_example.bias_metric import GroupRangeBias

    pooled = torch.tensor([[[1.0], [4.0], [2.0]], [[0.0], [0.0], [1.0]]])  # ranges 3 and 1
    metric = GroupRangeBias().configure({"relative": False})
    torch.testing.assert_close(metric.score(pooled, torch.ones(1)), torch.tensor([2.0]))


def test_geometric_scorer_never_prefers_the_most_important_neuron() -> None:
    import torch
    from fairprune_example.scorer import GeometricScorer

    bias = torch.tensor([10.0, 1.0, 0.5, 0.2])
    importance = torch.tensor([9.0, 0.1, 0.2, 0.3])  # the most biased neuron is also the most important
    scores = GeometricScorer().score(bias, importance, 0.8)
    assert int(scores.argmax()) == 1


# -- end to end ------------------------------------------------------------------------------------

def tokenizer_for_body_type() -> Any:
    """The tiny word-level tokenizer plus every attribute word of the body_type axis as its own token."""
    from fairprune_example.axis import GROUPS
    from tokenizers import AddedToken

    from fairprune.testing.tokenizer import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_tokens([AddedToken(w, single_word=True) for forms in GROUPS.values() for w in forms])
    return tok


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import fairprune
    from fairprune.testing.models import tiny_model

    tok = tokenizer_for_body_type()
    model = tiny_model("llama", vocab_size=len(tok))
    path = tmp_path_factory.mktemp("models") / "tiny-llama-body-type"
    fairprune.save_pretrained(model, tok, path)
    return path


def example_config(model_dir: Path, out_dir: Path) -> dict[str, Any]:
    """A run that selects every example plugin by name (and built-ins for the rest)."""
    return {
        "model": {"source": str(model_dir)},
        "bias": {"axes": ["body_type"], "batch_size": 8},
        "method": {"name": "activation", "metric": {"name": "group_range", "params": {"relative": True}},
                   "importance": {"name": "act_times_weight", "params": {"norm": "l2"}},
                   "scorer": "geometric", "bias_weight": 0.7, "guard_magnitude_ratio": None},
        "pruning": {"budget": {"layer_percent": 10}},
        "evaluation": {"evaluators": [{"name": "next_token_consistency", "params": {"n_boot": 50}}, "parameters"],
                       "batch_size": 8},
        "output": {"dir": str(out_dir), "save_model": True},
    }


def test_run_selecting_every_example_plugin_end_to_end(saved_model: Path, tmp_path: Path) -> None:
    import fairprune
    from fairprune.core.contract.registry import Registry

    out = tmp_path / "run"
    result = fairprune.run(example_config(saved_model, out), registry=Registry(), progress=False)

    plan = json.loads((out / "plan.json").read_text())
    assert plan["settings"]["importance"] == "act_times_weight" and plan["settings"]["scorer"] == "geometric"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pruning"]["neurons_removed"] == result.plan.n_neurons > 0
    assert metrics["pruning"]["widths_after"] == [58, 58]  # 10% of each 64-wide layer, rounded up
    consistency = metrics["evaluation"]["next_token_consistency"]["metrics"]
    assert consistency["n_groups"] == 9.0  # 3 held-out templates x 3 surface forms
    assert 0.0 <= consistency["top1_agreement"] <= 1.0
    pruned, _ = fairprune.load_pretrained(out)
    assert [layer.mlp.down_proj.in_features for layer in pruned.model.layers] == [58, 58]


def test_a_config_runs_the_example_method_by_entry_point(saved_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "random.yaml"
    config.write_text(json.dumps({
        "model": {"source": str(saved_model)}, "bias": {"axes": ["body_type"], "batch_size": 8},
        "method": {"name": "random_neurons", "seed": 3}, "pruning": {"budget": {"neurons": 5}},
        "evaluation": {"evaluators": ["parameters"]}, "output": {"dir": str(tmp_path / "out")}}))
    from fairprune.cli import main as cli_main

    assert cli_main(["run", str(config), "--quiet"]) == 0
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["settings"]["method"] == "random_neurons" and plan["settings"]["seed"] == 3
    assert plan["n_neurons"] == 5
