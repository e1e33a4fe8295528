"""Each importance metric against a hand computation, and the core's checks on metric outputs."""

from __future__ import annotations

import math

import pytest
import torch

import fairprune as fp
from fairprune.core.contract.errors import ConfigError, PluginContractError
from fairprune.core.contract.registry import Registry
from fairprune.testing import tiny_model

REG = Registry(load_entrypoints=False)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", seed=7)


def rows(model, layer):
    mlp = model.model.layers[layer].mlp
    gate, up, down = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
    return gate.tolist(), up.tolist(), [list(col) for col in zip(*down.tolist())]


def variance(values):
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


HAND = {
    "max_abs_weight": lambda g, u, d: max(map(abs, g)) + max(map(abs, u)),
    "peak_to_peak": lambda g, u, d: max(g) + abs(min(g)) + max(u) + abs(min(u)),
    "variance": lambda g, u, d: variance(g) + variance(u),
    "l1_product": lambda g, u, d: sum(map(abs, g)) * sum(map(abs, u)) * sum(map(abs, d)),
    "l2": lambda g, u, d: math.sqrt(sum(v * v for v in g + u + d)),
}


@pytest.mark.parametrize("metric", sorted(HAND))
def test_weight_metric_matches_hand_computation(model, metric):
    scores = fp.importance(model, metric, registry=REG)
    assert sorted(scores) == [0, 1]
    for layer in (0, 1):
        gate, up, down = rows(model, layer)
        expected = torch.tensor([HAND[metric](g, u, d) for g, u, d in zip(gate, up, down)])
        assert scores[layer].dtype == torch.float32 and scores[layer].shape == (64,)
        torch.testing.assert_close(scores[layer], expected, rtol=1e-5, atol=1e-6)


def test_activation_weight_matches_hand_computation_and_protects_massive_neurons(model):
    mean_abs = torch.rand(64, generator=torch.Generator().manual_seed(0))
    mean_abs[9] = 500.0  # one massive-activation neuron
    stats = {layer: {"mean_abs": mean_abs, "mean": mean_abs / 2} for layer in (0, 1)}
    scores = fp.importance(model, "activation_weight", stats=stats, registry=REG)
    for layer in (0, 1):
        _, _, down = rows(model, layer)
        expected = torch.tensor([a * math.sqrt(sum(v * v for v in col)) for a, col in zip(mean_abs.tolist(), down)])
        torch.testing.assert_close(scores[layer], expected, rtol=1e-5, atol=1e-6)
        assert int(scores[layer].argmax()) == 9


def test_activation_metric_without_stats_says_what_is_missing(model):
    with pytest.raises(ConfigError, match="needs activation statistics"):
        fp.importance(model, "activation_weight", registry=REG)
    with pytest.raises(ConfigError, match="no 'mean_abs' for layer 1"):
        fp.importance(model, "activation_weight", stats={0: {"mean_abs": torch.ones(64)}}, registry=REG)


class _Bad:
    description = "returns a bad tensor"
    needs_activations = False

    def __init__(self, name, make):
        self.name, self.make = name, make

    def score(self, weights, stats):
        return self.make(weights)


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda w: torch.ones(w.gate.shape[0] + 1), "shape"),
    (lambda w: torch.full((w.gate.shape[0],), float("inf")), "non-finite"),
    (lambda w: torch.ones(w.gate.shape[0], dtype=torch.long), "expected a float tensor"),
    (lambda w: [1.0] * w.gate.shape[0], "expected a float tensor"),
])
def test_bad_metric_output_names_metric_and_layer(model, make, fragment):
    with pytest.raises(PluginContractError, match=fragment) as info:
        fp.importance(model, _Bad("broken_metric", make), registry=REG)
    assert "broken_metric" in str(info.value) and "layer 0" in str(info.value)


def test_importance_follows_pruned_widths_and_fused_layout():
    pruned = tiny_model("phi3")
    fp.prune(pruned, {0: [1, 2, 3]}, registry=REG)
    scores = fp.importance(pruned, registry=REG)
    assert [s.shape[0] for s in scores.values()] == [53, 56]
    gate_up = pruned.model.layers[1].mlp.gate_up_proj.weight
    expected = gate_up[:56].abs().amax(1) + gate_up[56:].abs().amax(1)
    torch.testing.assert_close(scores[1], expected)
