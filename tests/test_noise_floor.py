"""The word-swap noise floor of ``output_bias``: within-group JS beside the between-group JS."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import fairprune as fp
from fairprune.core.contract.protocols import PromptGroup
from fairprune.plugins.evaluators.output_bias import js_divergence, noise_floor
from fairprune.testing import tiny_char_tokenizer, tiny_model

FORMS = {("race", "Black"): "Black", ("race", "African American"): "Black", ("race", "white"): "white",
         ("race", "Caucasian"): "white"}


def group(template: str, attributes: tuple[str, ...]) -> PromptGroup:
    return PromptGroup("race", template, attributes, tuple(f"The {a} man" for a in attributes))


def distributions(n: int, seed: int = 0) -> torch.Tensor:
    return torch.log_softmax(torch.randn(n, 7, generator=torch.Generator().manual_seed(seed)), dim=-1)


def js(lp: torch.Tensor, i: int, j: int) -> float:
    return js_divergence(lp[i], lp[j]).item()


def test_floor_pairs_surface_forms_of_the_same_group_by_hand():
    groups = [group("t1", ("Black", "white")), group("t1", ("African American", "Caucasian"))]
    lp = distributions(4)
    between, within = noise_floor(groups, lp, FORMS)
    assert within == [pytest.approx((js(lp, 0, 2) + js(lp, 1, 3)) / 2)]
    assert between == [pytest.approx((js(lp, 0, 1) + js(lp, 2, 3)) / 2)]


def test_repeated_forms_and_other_groups_are_not_swaps():
    # "white" has one form in t2, so only the Black pair is a swap; t3 has no second variant at all
    groups = [group("t2", ("Black", "white")), group("t2", ("African American", "white")),
              group("t3", ("Black", "white"))]
    lp = distributions(6, seed=1)
    between, within = noise_floor(groups, lp, FORMS)
    assert within == [pytest.approx(js(lp, 0, 2))] and len(between) == 1
    # the same position holding forms of two different groups is no within-group swap
    crossed = {**FORMS, ("race", "African American"): "white"}
    assert noise_floor(groups[:2], lp[:4], crossed) == ([], [])


def test_output_bias_reports_the_floor_and_the_excess_over_it():
    base = tiny_model("llama")
    pruned = copy.deepcopy(base)
    fp.prune(pruned, {0: [0, 1, 2, 3]})
    result = fp.evaluate(base, pruned, tiny_char_tokenizer(), evaluators=["output_bias"], axes=["race"],
                         params={"output_bias": {"n_boot": 50}}, progress=False)["output_bias"]
    m = result.metrics
    assert m["n_floor_templates"] > 0 and m["js_within_base"] > 0
    assert m["js_above_floor_pct_change"] == pytest.approx(m["js_above_floor_pct_pruned"] - m["js_above_floor_pct_base"])
    assert "exceeds the within-group floor by" in result.summary


def test_groups_without_surface_forms_give_no_floor():
    base = tiny_model("llama")
    groups = [PromptGroup("x", "t", ("a", "b"), ("The a man", "The b man"))]
    m = fp.evaluate(base, base, tiny_char_tokenizer(), evaluators=["output_bias"], groups=groups,
                    params={"output_bias": {"n_boot": 50}}, progress=False)["output_bias"].metrics
    assert m["n_floor_templates"] == 0 and math.isnan(m["js_above_floor_pct_base"])
