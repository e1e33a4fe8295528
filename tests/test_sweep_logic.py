"""Sweep bookkeeping: the Pareto front and the choice under a capability constraint."""

from __future__ import annotations

from fairprune.core.contract.results import EvalResult
from fairprune.core.run.sweep import choose, pareto_front, point_figure


def point(bias, loss):
    return {"bias_reduction_pct": bias, "capability_loss_pct": loss}


POINTS = [point(10, 1.0), point(20, 3.0), point(15, 0.5), point(5, 2.0), point(20, 4.0)]


def test_pareto_front_keeps_only_undominated_points():
    assert pareto_front(POINTS) == [1, 2]


def test_choice_is_the_largest_reduction_within_the_limit():
    assert choose(POINTS, 1.0) == point(15, 0.5)
    assert choose(POINTS, 3.0) == point(20, 3.0)
    assert choose(POINTS, 0.1) is None
    assert choose(POINTS, None) is None


def test_point_figure_takes_the_first_reported_candidate():
    candidates = [("capability", "lambada_ppl_change_pct"), ("capability", "text_ppl_change_pct")]
    both = {"capability": EvalResult("capability", {"text_ppl_change_pct": 2.0, "lambada_ppl_change_pct": 1.0})}
    text_only = {"capability": EvalResult("capability", {"text_ppl_change_pct": 2.0})}
    assert point_figure(both, candidates, "capability") == ("capability.lambada_ppl_change_pct", 1.0)
    assert point_figure(text_only, candidates, "capability") == ("capability.text_ppl_change_pct", 2.0)
