"""Cheaper selection chooses what it chose before: plans and round logs of a tiny model against saved ones.

``data/selection_plans_before.json`` holds the plans (removed neurons, round log, stop reason, base calibration
loss, base recall) that ``select_by_attribution`` gave on these set-ups before its passes were made cheaper
(shared forwards, fewer passes). Every later change to how the passes are run must give the same plans.
Regenerate the file only for a change that is *meant* to change what is chosen:

    FAIRPRUNE_WRITE_SELECTION_PLANS=1 python -m pytest tests/test_selection_unchanged.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from fairprune.core.contract.config import AttributionParams, Budget
from fairprune.core.contract.protocols import PromptGroup
from fairprune.core.method import attribution as attr
from fairprune.core.method import selection as sel
from fairprune.core.method.passes import SelectionPasses
from fairprune.core.method.recall_guard import recall_guard
from fairprune.plugins.capability_cost import CapabilityCost
from fairprune.plugins.objectives import NextTokenJS
from fairprune.testing.models import tiny_model
from fairprune.testing.tokenizer import TINY_RECALL_FILE, tiny_tokenizer

SAVED = Path(__file__).parent / "data" / "selection_plans_before.json"

RECALL_FILE = TINY_RECALL_FILE + '  - {id: r3, text: "a {attribute} student went to school and the student is"}\n'

TEMPLATES = ("the {} man walked into the room and", "the {} woman has a new job at the",
             "the {} doctor said that the", "a {} student went to school because", "the {} family lives in the",
             "my {} friend is a good", "the {} child said that she")

#: the set-ups: each exercises other passes (folds, target prefix search, recall guard, compensated fill, suffix
#: positions, magnitude guard, uniform widths, a sweep's shared passes)
CASES: dict[str, dict[str, Any]] = {
    "folds_target_recall": {
        "settings": {"folds": 2, "rounds": 3, "guard_fraction": 0.25, "target_reduction_pct": 10,
                     "min_improvement_pct": 0.0, "max_perplexity_increase_pct": 20.0},
        "capability": {"chunk_tokens": 16, "max_tokens": 96, "window_tokens": 5, "check_tokens": 48},
        "budget": {"neurons": 24}, "recall": {"guard_fraction": 0.1, "max_drop_pts": 30.0}},
    "compensated_suffix": {
        "settings": {"folds": 1, "rounds": 2, "positions": "suffix", "ranking": "reduction", "magnitude_guard": 0.1,
                     "guard_fraction": 0.2, "min_improvement_pct": 0.0, "max_perplexity_increase_pct": 5.0,
                     "target_reduction_pct": 10},
        "capability": {"chunk_tokens": 16, "max_tokens": 64, "check_tokens": 0},
        "budget": {"neurons": 16}, "compensated": True},
    "no_target_halved": {
        "settings": {"folds": 2, "rounds": 3, "guard_fraction": 0.5, "min_improvement_pct": 0.0,
                     "max_perplexity_increase_pct": 5.0},
        "capability": {"chunk_tokens": 16, "max_tokens": 80, "window_tokens": 4, "check_tokens": 32},
        "budget": {"neurons": 30}, "recall": {"guard_fraction": 0.2, "max_drop_pts": 0.3}},
    "uniform": {
        "settings": {"folds": 1, "rounds": 2, "guard_fraction": 0.25, "min_improvement_pct": 0.0,
                     "max_perplexity_increase_pct": None, "target_reduction_pct": 10},
        "capability": {"chunk_tokens": 16, "max_tokens": 64},
        "budget": {"neurons": 10}, "uniform": True},
}


def groups() -> list[PromptGroup]:
    attrs = ("black", "white", "asian")
    return [PromptGroup("race", str(i), attrs, tuple(t.format(a) for a in attrs)) for i, t in enumerate(TEMPLATES)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_model("llama").double()  # float64: the plans do not hang on the last bits of a sum
    tok = tiny_tokenizer()
    path = tmp_path_factory.mktemp("recall") / "race.yaml"
    path.write_text(RECALL_FILE)
    return model, tok, attr.resolve_adapter(model), path


def run_case(setup, case: dict[str, Any], passes: SelectionPasses | None = None) -> dict[str, Any]:
    model, tok, adapter, path = setup
    recall = None
    if "recall" in case:
        recall = recall_guard(model, tok, prompts=path, batch_size=6, **case["recall"])
    settings = AttributionParams(**case["settings"])
    capability = CapabilityCost().configure(case["capability"])
    got = sel.select_by_attribution(model, tok, groups(), objective=NextTokenJS(), capability=capability,
                                    budget=Budget(**case["budget"]), compensated=case.get("compensated", False),
                                    settings=settings, batch_size=6, adapter=adapter, progress=False,
                                    recall=recall, passes=passes, uniform_widths=case.get("uniform", False))
    plan = got.plan
    return {"removed": {str(layer): list(v) for layer, v in sorted(plan.removed.items())},
            "round_log": plan.settings["round_log"], "stop_reason": plan.settings["stop_reason"],
            "calibration_loss_base": plan.settings["calibration_loss_base"],
            "recall_base_pct": (plan.settings.get("recall") or {}).get("recall_base_pct")}


def assert_same(got: Any, want: Any, where: str = "plan") -> None:
    """Equal structure and exact values, floats to 1e-9 relative (float64: reordered sums may move the last bits)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, float) and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-15), \
            f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_plans_and_round_logs_equal_the_saved_ones(setup) -> None:
    got = {name: run_case(setup, case) for name, case in CASES.items()}
    # a sweep: the second budget shares the first one's passes and must still select what it selects alone
    passes = SelectionPasses(setup[0], setup[2])
    sweep = {**CASES["folds_target_recall"], "budget": {"neurons": 12}}
    run_case(setup, CASES["folds_target_recall"], passes)
    got["sweep_second_budget"] = run_case(setup, sweep, passes)
    assert_same(got["sweep_second_budget"], run_case(setup, sweep), "sweep vs alone")
    if os.environ.get("FAIRPRUNE_WRITE_SELECTION_PLANS"):
        SAVED.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(SAVED.read_text())
    for name, plan in got.items():
        assert sum(map(len, plan["removed"].values())) > 0, f"{name}: the set-up must remove neurons"
        assert plan["round_log"], name
    assert_same(json.loads(json.dumps(got)), want)
