"""Bias metrics: known values, zero for identical members, invariance to member and group order, scale-freeness."""

from __future__ import annotations

import pytest
import torch

from fairprune.core.contract.registry import Registry

REGISTRY = Registry(load_entrypoints=False)
METRICS = ["mean_abs_diff", "max_abs_diff", "group_variance", "relative_mean_abs_diff", "relative_group_variance"]


def metric(name):
    return REGISTRY.create("bias_metrics", name)


def random_pooled(groups=5, members=3, width=7, seed=0):
    return torch.randn(groups, members, width, generator=torch.Generator().manual_seed(seed))


def test_all_metrics_are_registered():
    assert set(METRICS) <= set(REGISTRY.names("bias_metrics"))


def test_mean_abs_diff_of_pairs_is_mean_over_groups_of_abs_difference():
    pooled = torch.tensor([[[1.0, 0.0], [3.0, 0.5]], [[2.0, 1.0], [1.0, 1.0]]])  # 2 groups, 2 members, width 2
    torch.testing.assert_close(metric("mean_abs_diff").score(pooled, torch.ones(2)), torch.tensor([1.5, 0.25]))
    torch.testing.assert_close(metric("max_abs_diff").score(pooled, torch.ones(2)), torch.tensor([2.0, 0.5]))


def test_mean_abs_diff_with_three_members_averages_all_member_pairs():
    pooled = torch.tensor([[[0.0], [1.0], [3.0]]])  # pairs: 1, 3, 2
    assert metric("mean_abs_diff").score(pooled, torch.ones(1)).item() == pytest.approx(2.0)


def test_group_variance_is_variance_of_member_means():
    pooled = torch.tensor([[[0.0], [2.0]], [[2.0], [4.0]]])  # member means 1 and 3 -> variance 1
    assert metric("group_variance").score(pooled, torch.ones(1)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", METRICS)
def test_identical_members_give_zero_bias(name):
    pooled = random_pooled(members=1).expand(5, 4, 7)
    assert torch.equal(metric(name).score(pooled, torch.ones(7)), torch.zeros(7))


@pytest.mark.parametrize("name", METRICS)
def test_swapping_members_and_reordering_groups_changes_nothing(name):
    pooled = random_pooled()
    magnitude = pooled.abs().mean(dim=(0, 1))
    base = metric(name).score(pooled, magnitude)
    swapped = pooled[:, [2, 0, 1]]
    reordered = pooled[[4, 2, 0, 1, 3]]
    torch.testing.assert_close(metric(name).score(swapped, magnitude), base)
    torch.testing.assert_close(metric(name).score(reordered, magnitude), base)


@pytest.mark.parametrize("name", ["relative_mean_abs_diff", "relative_group_variance"])
def test_relative_metrics_ignore_a_neurons_scale(name):
    pooled = random_pooled() + 2.0
    scale = torch.tensor([1.0, 1000.0, 0.01, 1.0, 5.0, 1.0, 1.0])
    magnitude = pooled.abs().mean(dim=(0, 1))
    a = metric(name).score(pooled, magnitude)
    b = metric(name).score(pooled * scale, magnitude * scale)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=0)  # up to eps
    absolute = metric(name.replace("relative_", "")).score(pooled * scale, magnitude * scale)
    assert absolute.argmax() == 1  # the absolute score is dominated by the loud neuron


def test_relative_metric_params_are_validated():
    with pytest.raises(Exception, match="eps"):
        REGISTRY.create("bias_metrics", "relative_mean_abs_diff", {"eps": -1})
    with pytest.raises(Exception, match="extra|epsilon"):
        REGISTRY.create("bias_metrics", "relative_mean_abs_diff", {"epsilon": 1.0})


def test_one_member_is_an_error():
    with pytest.raises(ValueError, match="at least two members"):
        metric("mean_abs_diff").score(torch.zeros(3, 1, 4), torch.ones(4))
