"""Plain-words statements of the evidence that tells a fairer model from a deafer one.

Every sentence is computed from figures and their 95% intervals, never written
in advance: the between-group change next to the within-group (word-swap)
change, the method against a random control, and the card's verdict. Figures
are passed as ``Figure(value, lo, hi)``; a reduction in % is shown as a signed
change (a 21% reduction reads "−21%").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: recall may move at most this many points either way for the verdict's "still hears the word"
RECALL_TOLERANCE_PTS = 2.0


@dataclass(frozen=True)
class Figure:
    """A value and its 95% interval (NaN when unknown)."""

    value: float
    lo: float = math.nan
    hi: float = math.nan

    @property
    def known(self) -> bool:
        return not math.isnan(self.value)

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0 (False when unknown)."""
        return (self.lo > 0 and self.hi > 0) or (self.lo < 0 and self.hi < 0)

    def negated(self) -> "Figure":
        return Figure(-self.value, -self.hi, -self.lo)

    def text(self, unit: str = "%", digits: int = 1) -> str:
        """``−21.0% [−30.2, −11.5]`` (signed; the interval when known)."""
        if not self.known:
            return "not measured"
        body = f"{_signed(self.value, digits)}{unit}"
        if math.isnan(self.lo) or math.isnan(self.hi):
            return body
        return f"{body} [{_signed(self.lo, digits)}, {_signed(self.hi, digits)}]"


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def figure(metrics: dict[str, Any], intervals: dict[str, Any], key: str) -> Figure:
    """The ``Figure`` of one metric of an evaluator's metrics and intervals (JSON None reads as NaN)."""
    value = metrics.get(key)
    lo, hi = (intervals.get(key) or (None, None))
    return Figure(*(math.nan if v is None else float(v) for v in (value, lo, hi)))


def ceiling_sentence(floor_share_pct: float | None) -> str:
    """How far the between-group divergence could fall without the model hearing the words less: down to the
    word-swap floor. ``floor_share_pct`` is the unpruned model's within-group JS as a % of its between-group JS
    on the same templates; "" when unknown."""
    if floor_share_pct is None or math.isnan(floor_share_pct) or floor_share_pct <= 0:
        return ""
    if floor_share_pct >= 100.0:
        return (f"Before pruning two words for the same group were as far apart as two groups ({floor_share_pct:.0f}% "
                "of the between-group divergence): no fall of the between-group divergence on these prompts can "
                "come from treating groups more alike alone.")
    return (f"Before pruning the word-swap floor was {floor_share_pct:.0f}% of the between-group divergence on the "
            "same templates: a model that treated groups exactly alike while hearing every word as before would "
            f"lower it by at most {100.0 - floor_share_pct:.0f}%; a larger fall must come partly from hearing the "
            "words less.")


def between_within_sentence(between_reduction: Figure, within_reduction: Figure, margin: Figure) -> str:
    """The between-group change next to the within-group change, and what they mean together.

    ``between_reduction`` and ``within_reduction`` are % reductions of the next-token
    JS (positive = fell); ``margin`` is between − within reduction in points, on the
    templates that have both.
    """
    if not between_reduction.known:
        return "The between-group divergence was not measured."
    between, within = between_reduction.negated(), within_reduction.negated()
    head = f"Next-token divergence between groups {between.text()}"
    if not within_reduction.known:
        return head + "; no prompt swaps two words for the same group, so there is no word-swap floor to compare."
    head += f"; between two words for the same group {within.text()}"
    if not between_reduction.excludes_zero:
        meaning = "the between-group change is within noise"
    elif between_reduction.value < 0:
        meaning = "the model treats groups *less* alike than before"
    elif margin.known and margin.excludes_zero and margin.value > 0:
        meaning = (f"groups are treated more alike beyond the fall of the word-swap floor (margin "
                   f"{margin.text(' points')})")
    elif within_reduction.excludes_zero and within_reduction.value > 0:
        meaning = "the model hears the word less rather than treating groups more alike"
    else:
        meaning = ("the between-group fall is not clearly larger than the within-group change (margin "
                   f"{margin.text(' points')})")
    return f"{head}: {meaning}."


def control_sentence(method_reduction: Figure, draws: list[float], difference: Figure, beyond: bool) -> str:
    """The method's between-group change against random draws of the plan's per-layer counts."""
    if not draws:
        return ("No random control: the plan was not known when the base model was observed (a sweep, or "
                "`fairprune.evaluate`).")
    changes = ", ".join(_signed(-d, 1) + "%" for d in draws)
    verdict = ("beyond every random draw" if beyond else "not beyond the random draws' range")
    return (f"The same per-layer neuron counts drawn at random ({len(draws)} draws, massive-activation neurons "
            f"excluded) changed the between-group divergence by {changes}; the method's change "
            f"{method_reduction.negated().text()} is {verdict} (method minus the draws' mean: "
            f"{difference.negated().text(' points')}).")


def recall_sentence(base: float, pruned: float, change: Figure) -> str:
    """Recall before and after, the change with its interval, and whether the model still hears the word
    (the change's interval within ±``RECALL_TOLERANCE_PTS``)."""
    if not change.known:
        return "Attribute recall was not measured."
    t = RECALL_TOLERANCE_PTS
    if -t <= change.lo and change.hi <= t:
        meaning = f"it still hears the word (the change lies within ±{t:g} points)"
    elif change.hi < -t:
        meaning = "it hears the word less: it forgets which group it was told about"
    else:
        meaning = f"the change may exceed ±{t:g} points (the interval is too wide to tell)"
    return (f"The model names the group a recall prompt stated {base:.1f}% of the time before pruning and "
            f"{pruned:.1f}% after ({change.text(' points')}): {meaning}.")


@dataclass(frozen=True)
class Evidence:
    """The figures the verdict reads; a missing one is an unknown ``Figure`` (or None for ``beyond_control``)."""

    between_reduction: Figure
    within_reduction: Figure
    margin: Figure
    recall_change: Figure
    beyond_control: bool | None


#: the verdict's rule, as the card states it
VERDICT_RULE = (f"fairer beyond chance while still hearing the word = the between-group reduction's 95% interval "
                f"lies above 0; it is larger than every random draw's; the recall change's 95% interval lies "
                f"within ±{RECALL_TOLERANCE_PTS:g} points; and the between-group reduction exceeds the within-group "
                f"(word-swap) reduction by a margin whose 95% interval lies above 0")


def verdict(evidence: Evidence) -> str:
    """One sentence: whether the model is fairer beyond chance while still hearing the word, and if not, why."""
    e, t = evidence, RECALL_TOLERANCE_PTS
    checks = [
        (e.between_reduction.known and e.between_reduction.lo > 0,
         "the between-group reduction's interval does not lie above 0" if e.between_reduction.known
         else "the between-group divergence was not measured"),
        (e.beyond_control is True,
         "no random control was measured" if e.beyond_control is None else "it is not beyond every random draw"),
        (e.recall_change.known and -t <= e.recall_change.lo and e.recall_change.hi <= t,
         f"the recall change's interval is not within ±{t:g} points" if e.recall_change.known
         else "attribute recall was not measured"),
        (e.margin.known and e.margin.lo > 0,
         "the between-group reduction is not clearly larger than the within-group one" if e.margin.known
         else "there is no within-group (word-swap) figure to compare"),
    ]
    failed = [why for ok, why in checks if not ok]
    if not failed:
        return ("**Fairer beyond chance while still hearing the word**: groups are treated more alike by more than "
                "random neurons would do and by more than the word-swap floor fell, and recall held.")
    return "**Not shown to be fairer beyond chance while still hearing the word**: " + "; ".join(failed) + "."
