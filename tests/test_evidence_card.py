"""The plain-words findings, the verdict rule and the card's first table, computed from intervals."""

from __future__ import annotations

import math

import pytest

from fairprune.core.contract.summary import summary_text
from fairprune.plugins.evidence_card import evidence, evidence_rows, evidence_section
from fairprune.plugins.evidence_text import Evidence, Figure, between_within_sentence, recall_sentence, verdict


def _result(metrics: dict, intervals: dict | None = None, headlines: list | None = None, tables: dict | None = None):
    return {"metrics": metrics, "intervals": intervals or {}, "headlines": headlines or [], "tables": tables or {}}


def _metrics(between=(21.0, 12.0, 30.0), within=(21.0, 10.0, 31.0), margin=(0.0, -5.0, 5.0),
             recall=(-2.5, -5.0, 0.0), beyond=1.0) -> dict:
    rc = {"between_base": 0.0126, "between_pruned": 0.00997, "between_reduction_pct": between[0],
          "within_base": 0.0115, "within_pruned": 0.00905, "within_reduction_pct": within[0],
          "between_minus_within_pts": margin[0], "n_draws": 3.0, "control_between_reduction_pct_1": 11.0,
          "control_between_reduction_pct_2": 5.0, "control_between_reduction_pct_3": -6.0,
          "between_vs_control_pts": 17.7, "between_beyond_control": beyond}
    rc_ci = {"between_reduction_pct": between[1:], "within_reduction_pct": within[1:],
             "between_minus_within_pts": margin[1:], "between_vs_control_pts": (8.0, 25.0)}
    return {"pruning": {"params_removed": 10, "params_before": 1000, "params_removed_pct": 1.0,
                        "neurons_removed": 2, "layers_touched": 1},
            "evaluation": {
                "random_control": _result(rc, rc_ci, tables={"findings": [{"text": "between vs within"}]}),
                "attribute_recall": _result({"accuracy_base": 95.0, "accuracy_pruned": 95.0 + recall[0],
                                             "accuracy_change": recall[0]}, {"accuracy_change": recall[1:]}),
                "stereotype_preference": _result({"pct_stereotyped_base": 46.1, "pct_stereotyped_pruned": 46.1,
                                                  "pct_stereotyped_change": 0.0},
                                                 {"pct_stereotyped_change": (-3.0, 3.0)}),
                "output_bias": _result({"js_reduction_pct_names_transfer": 35.0},
                                       {"js_reduction_pct_names_transfer": (20.0, 50.0)},
                                       [{"key": "js_reduction_pct_names_transfer", "label": "Transfer: first names, "
                                         "between-group JS reduction", "unit": "%", "kind": "change"}]),
                "capability": _result({"lambada_acc_base": 0.297, "lambada_acc_pruned": 0.287,
                                       "lambada_acc_change_pts": -1.0, "lambada_ppl_base": 16.67,
                                       "lambada_ppl_pruned": 16.92, "lambada_ppl_change_pct": 1.4},
                                      {"lambada_acc_change_pts": (-2.0, 0.0), "lambada_ppl_change_pct": (0.5, 2.5)}),
            }}


def test_falling_alike_reads_as_hearing_the_word_less():
    text = between_within_sentence(Figure(21.0, 12.0, 30.0), Figure(21.0, 10.0, 31.0), Figure(0.0, -5.0, 5.0))
    assert "between groups −21.0% [−30.0, −12.0]" in text
    assert "between two words for the same group −21.0% [−31.0, −10.0]" in text
    assert text.endswith("the model hears the word less rather than treating groups more alike.")


def test_a_margin_above_zero_reads_as_treating_groups_more_alike():
    text = between_within_sentence(Figure(40.0, 30.0, 50.0), Figure(10.0, 2.0, 18.0), Figure(30.0, 20.0, 40.0))
    assert "groups are treated more alike beyond the fall of the word-swap floor" in text


def test_recall_within_two_points_still_hears_the_word():
    assert "still hears the word" in recall_sentence(95.0, 94.5, Figure(-0.5, -1.5, 0.5))
    assert "hears the word less" in recall_sentence(95.0, 80.0, Figure(-15.0, -20.0, -10.0))
    assert "too wide" in recall_sentence(95.0, 92.5, Figure(-2.5, -5.0, 0.0))


@pytest.mark.parametrize(("change", "expected"), [
    ({}, "between-group reduction is not clearly larger"),                       # the SmolLM2 figures
    ({"margin": (15.0, 5.0, 25.0), "recall": (-0.5, -1.5, 0.5)}, "**Fairer beyond chance"),
    ({"margin": (15.0, 5.0, 25.0), "recall": (-0.5, -1.5, 0.5), "beyond": 0.0}, "not beyond every random draw"),
    ({"margin": (15.0, 5.0, 25.0), "recall": (-2.5, -5.0, 0.0)}, "recall change's interval is not within ±2"),
    ({"between": (5.0, -2.0, 12.0)}, "interval does not lie above 0"),
])
def test_the_verdict_follows_its_rule(change, expected):
    text = verdict(evidence(_metrics(**change)))
    assert expected in text
    assert text.startswith("**Fairer") == (expected == "**Fairer beyond chance")


def test_the_verdict_names_what_was_not_measured():
    unknown = Figure(math.nan)
    text = verdict(Evidence(Figure(20.0, 10.0, 30.0), unknown, unknown, unknown, None))
    assert "no random control was measured" in text and "attribute recall was not measured" in text


def test_the_first_table_leads_with_between_within_recall_control_transfer_stereotype_capability():
    rows = evidence_rows(_metrics())
    labels = [r[0] for r in rows]
    order = ["between groups", "same group", "recall", "random control", "Transfer", "Stereotyped", "LAMBADA"]
    positions = [next(i for i, label in enumerate(labels) if key.lower() in label.lower()) for key in order]
    assert positions == sorted(positions)
    assert rows[0][3] == "−21.0% [−30.0, −12.0]"
    control = rows[labels.index(next(x for x in labels if "random control" in x))]
    assert "−11.0%, −5.0%, +6.0%" in control[0] and control[3] == "−17.7 pts [−25.0, −8.0]"
    transfer = next(r for r in rows if r[0].startswith("Transfer"))  # a reduction, shown as the signed change
    assert transfer == ("Transfer: first names, between-group JS", "", "", "−35.0% [−50.0, −20.0]")
    lambada = next(r for r in rows if r[0] == "LAMBADA last-word accuracy")
    assert lambada[1:] == ("29.7%", "28.7%", "−1.0 pts [−2.0, +0.0]")


def test_the_section_states_its_rule_and_the_summary_prints_findings():
    section = "\n".join(evidence_section(_metrics()))
    assert "*Rule: fairer beyond chance while still hearing the word" in section
    assert "- between vs within" in section
    assert "between vs within" in summary_text(_metrics())
    assert evidence_section({"pruning": {}, "evaluation": {}}) == []


def test_the_ceiling_says_how_far_a_model_that_still_hears_the_word_could_go():
    from fairprune.plugins.evidence_text import ceiling_sentence

    text = ceiling_sentence(80.0)
    assert "floor was 80% of the between-group divergence" in text and "at most 20%" in text
    assert "no fall" in ceiling_sentence(104.0)
    assert ceiling_sentence(None) == "" and ceiling_sentence(float("nan")) == ""
