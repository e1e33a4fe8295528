"""The attribute-recall evaluator: prompts built from its frames, and every figure checked by hand on a rigged
unigram model whose log-probabilities are known (``benchmark_helpers``)."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from benchmark_helpers import UnigramLM, context

from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.registry import Registry
from fairprune.plugins.evaluators.attribute_recall import (
    AttributeRecallEvaluator,
    build_prompts,
    read_frames,
    recall_features,
)

FRAMES = """
people: [nurse, pilot]
axes:
  race:
    statements: ["My neighbor is {a} {word} {person}.", "Form. Race: {word}."]
    questions: ["Q: What race is the {person}? A:"]
"""

RACE = Registry().get("bias_axes", "race").attribute_groups()


def _word_logprob(model: UnigramLM, word: str) -> float:
    """log p(" " + word) under the unigram model: the sum of its characters' log-probabilities."""
    return sum(model.logprob(c) for c in " " + word)


def _group_score(model: UnigramLM, forms: tuple[str, ...]) -> float:
    words = set(forms) | {f[0].upper() + f[1:] for f in forms}
    return math.log(sum(math.exp(_word_logprob(model, w)) for w in words))


def _recall(tmp_path, base: UnigramLM, pruned: UnigramLM):
    path = tmp_path / "frames.yaml"
    path.write_text(FRAMES)
    evaluator = AttributeRecallEvaluator().configure({"path": str(path), "axes": ["race"], "n_boot": 200})
    seen = {label: evaluator.observe(model, context(label=label)) for label, model in (("base", base),
                                                                                        ("pruned", pruned))}
    return evaluator.compare(seen["base"], seen["pruned"], context()), seen


def test_accuracy_and_stated_logprob_by_hand(tmp_path):
    base, pruned = UnigramLM(dict.fromkeys("white", 3.0)), UnigramLM(dict.fromkeys("Black", 3.0))
    result, seen = _recall(tmp_path, base, pruned)
    n_forms = sum(len(forms) for forms in RACE.values())
    assert len(seen["base"]["stated"]) == 2 * 1 * n_forms  # statements x questions x words
    for model, label, winner in ((base, "base", "white"), (pruned, "pruned", "Black")):
        scores = {group: _group_score(model, forms) for group, forms in RACE.items()}
        assert max(scores, key=scores.get) == winner
        # every prompt gets the same scores (the model ignores context): only prompts stating the winner are recalled
        expected_acc = 100.0 * len(RACE[winner]) / n_forms
        assert result.metrics[f"accuracy_{label}"] == pytest.approx(expected_acc)
        stated_mean = np.mean([scores[g] for g in RACE for _ in RACE[g]])
        assert result.metrics[f"stated_logprob_{label}"] == pytest.approx(stated_mean, abs=1e-4)
    assert result.metrics["accuracy_change"] == pytest.approx(0.0)  # both name one group of two words
    lo, hi = result.intervals["accuracy_base"]
    assert lo <= result.metrics["accuracy_base"] <= hi
    assert "names the group a recall prompt stated" in result.summary
    assert result.tables["findings"][0]["text"] in result.summary


def test_a_model_that_forgets_loses_recall(tmp_path):
    base, deaf = UnigramLM(dict.fromkeys("white", 3.0)), UnigramLM({})  # the pruned one favours no group
    result, _ = _recall(tmp_path, base, deaf)
    scores = {group: _group_score(deaf, forms) for group, forms in RACE.items()}
    winner = max(scores, key=scores.get)
    n_forms = sum(len(forms) for forms in RACE.values())
    assert result.metrics["accuracy_pruned"] == pytest.approx(100.0 * len(RACE[winner]) / n_forms)
    assert result.metrics["stated_logprob_change"] < 0  # the stated words lost their boosted letters


def test_a_tie_is_not_a_recall():
    scores = np.array([[-1.0, -1.0, -3.0], [-0.5, -2.0, -1.0]])
    feats = recall_features(scores, np.array([0, 0]))
    assert feats[:, 0].tolist() == [0.0, 1.0]
    assert feats[:, 1].tolist() == [-1.0, -0.5]


def test_prompts_state_the_word_and_ask_it_back():
    people, frames = read_frames()
    assert {"race", "gender", "religion", "nationality", "age"} <= set(frames)
    prompts = build_prompts("race", frames["race"], people, RACE)
    per_axis = len(frames["race"].statements) * len(frames["race"].questions)
    assert len(prompts) == per_axis * sum(len(f) for f in RACE.values())
    assert 100 <= len(prompts) <= 200  # the demo's budget
    first = prompts[0]
    assert first.stated == "Black" and " Black " in first.text and first.text.count("?") + first.text.count(",") > 0
    assert "an African American" in next(p.text for p in prompts if "African American" in p.text)


def test_frames_are_not_the_axis_templates():
    """No run of six words of an axis template appears in a recall frame of that axis."""
    _, frames = read_frames()
    registry = Registry()
    for axis, axis_frames in frames.items():
        text = " ".join(axis_frames.statements + axis_frames.questions).lower()
        for group in registry.get("bias_axes", axis).prompt_groups("all"):
            words = re.findall(r"[a-z']+", group.prompts[0].lower())
            for k in range(len(words) - 5):
                assert " ".join(words[k:k + 6]) not in text, (axis, group.template_id)


def test_bad_frames_are_refused_when_configured(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("people: [nurse]\naxes:\n  race:\n    statements: ['The {person} said hi.']\n"
                   "    questions: ['Q: race? A:']\n")
    with pytest.raises(ConfigError, match="does not state the attribute"):
        AttributeRecallEvaluator().configure({"path": str(bad)})
    with pytest.raises(ConfigError, match="no recall frames for \\['disability'\\]"):
        AttributeRecallEvaluator().configure({"axes": ["disability"]})


def test_axes_default_to_the_heldout_groups_axes():
    evaluator = AttributeRecallEvaluator().configure({})
    ctx = SimpleNamespace(groups=[SimpleNamespace(axis="race"), SimpleNamespace(axis="custom")])
    assert evaluator._axes(ctx, read_frames()[1]) == ["race"]
