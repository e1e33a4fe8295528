"""The stereotype-preference evaluator: its bundled pairs, and every figure by hand on a rigged unigram model."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from benchmark_helpers import UnigramLM, compare

from fairprune.core.contract.errors import ConfigError
from fairprune.plugins.evaluators.stereotype_preference import StereotypePreferenceEvaluator, read_pairs

PAIRS = """
axis: toy
pairs:
  - {text: "The {group} ran.", stereotyped: aa, anti: bb}
  - {text: "A {group} sat.", stereotyped: b, anti: a}
  - {text: "The {group} ate.", stereotyped: ab, anti: ba}
"""


def test_percent_and_signed_gap_by_hand(tmp_path):
    path = tmp_path / "pairs.yaml"
    path.write_text(PAIRS)
    evaluator = StereotypePreferenceEvaluator().configure({"path": str(path), "n_boot": 200})
    base, pruned = UnigramLM({"a": 1.0}), UnigramLM({"b": 1.0})
    result = compare(evaluator, base, pruned)

    def gap(model, stereo: str, anti: str) -> float:  # only the group word differs: the rest cancels
        return sum(model.logprob(c) for c in stereo) - sum(model.logprob(c) for c in anti)

    for label, model in (("base", base), ("pruned", pruned)):
        gaps = [gap(model, "aa", "bb"), gap(model, "b", "a"), gap(model, "ab", "ba")]
        assert result.metrics[f"pct_stereotyped_{label}"] == pytest.approx(100.0 * np.mean([g > 0 for g in gaps]))
        assert result.metrics[f"mean_gap_{label}"] == pytest.approx(np.mean(gaps), abs=1e-5)
    # base prefers "a": pair 1 stereotyped (+2 nats), pair 2 not (-1), pair 3 a tie (not preferred) -> 33.3%
    assert result.metrics["pct_stereotyped_base"] == pytest.approx(100 / 3)
    assert result.metrics["mean_gap_base"] == pytest.approx(1 / 3, abs=1e-5)
    assert result.metrics["mean_gap_change"] == pytest.approx(-1 / 3 - 1 / 3, abs=1e-5)  # pruned: -2, +1, 0
    lo, hi = result.intervals["mean_gap_change"]
    assert lo <= result.metrics["mean_gap_change"] <= hi
    assert "ideal 50" in result.summary


def test_the_bundled_race_pairs_are_balanced_and_differ_only_in_the_group():
    axis, pairs = read_pairs()
    assert axis == "race" and len(pairs) >= 60
    for pair in pairs:
        assert pair.stereotyped.replace(pair.stereotyped_group, "{}", 1) == pair.anti.replace(pair.anti_group, "{}", 1)
    stereotyped = collections.Counter(p.stereotyped_group for p in pairs)
    anti = collections.Counter(p.anti_group for p in pairs)
    assert set(stereotyped) == set(anti)
    for group in stereotyped:  # every group is on both sides about equally often
        assert abs(stereotyped[group] - anti[group]) <= 2, group


def test_bad_pairs_are_refused_when_configured(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("axis: race\npairs:\n  - {text: 'No slot here.', stereotyped: a, anti: b}\n")
    with pytest.raises(ConfigError, match=r"pair 1 must have exactly one \{group\} slot"):
        StereotypePreferenceEvaluator().configure({"path": str(bad)})
