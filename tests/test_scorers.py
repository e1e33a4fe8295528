"""Scorers: the hybrid blend of bias and importance, per layer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fairprune.core.contract.registry import Registry
from fairprune.plugins.scorers import min_max, rank01

REGISTRY = Registry(load_entrypoints=False)
SCORERS = ["linear", "rank", "bias_only", "importance_only"]
vectors = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=40)


def test_linear_matches_the_formula():
    bias, imp = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([10.0, 0.0, 5.0])
    got = REGISTRY.get("scorers", "linear").score(bias, imp, 0.8)
    expected = 0.8 * torch.tensor([0.0, 1 / 3, 1.0]) + 0.2 * (1 - torch.tensor([1.0, 0.0, 0.5]))
    assert torch.allclose(got, expected)


def test_rank_is_robust_to_one_massive_outlier():
    bias = torch.tensor([1.0, 2.0, 3.0, 1e6])
    imp = torch.zeros(4)
    linear = REGISTRY.get("scorers", "linear").score(bias, imp, 1.0)
    rank = REGISTRY.get("scorers", "rank").score(bias, imp, 1.0)
    assert linear[:3].max() < 1e-5  # min-max squashes everything but the outlier
    assert torch.allclose(rank, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))


def test_baselines_ignore_the_other_signal():
    bias, imp = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 2.0])
    assert REGISTRY.get("scorers", "bias_only").score(bias, imp, 0.0).argmax() == 0
    assert REGISTRY.get("scorers", "importance_only").score(bias, imp, 1.0).argmax() == 0


@pytest.mark.parametrize("name", SCORERS)
@settings(max_examples=25, deadline=None)
@given(bias=vectors, data=st.data(), weight=st.floats(0, 1))
def test_scores_are_finite_in_unit_interval_and_shaped(name, bias, data, weight):
    imp = data.draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=len(bias), max_size=len(bias)))
    s = REGISTRY.get("scorers", name).score(torch.tensor(bias), torch.tensor(imp), weight)
    assert s.shape == (len(bias),)
    assert torch.isfinite(s).all() and s.min() >= -1e-6 and s.max() <= 1 + 1e-6


@pytest.mark.parametrize("name", ["linear", "rank"])
def test_more_bias_never_lowers_prunability(name):
    imp = torch.tensor([0.5, 0.5, 0.5])
    s = REGISTRY.get("scorers", name).score(torch.tensor([0.1, 0.2, 0.9]), imp, 0.8)
    assert s[0] <= s[1] <= s[2] and s[0] < s[2]


def test_constant_layer_normalises_to_zero_not_nan():
    assert torch.equal(min_max(torch.full((4,), 7.0)), torch.zeros(4))
    assert torch.equal(rank01(torch.tensor([5.0])), torch.zeros(1))
