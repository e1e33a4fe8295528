"""The first table of the report and the model card: the evidence a skeptic reads first, and the verdict.

Rows, each from a run's metrics dictionary (as in ``metrics.json``) and shown
only when measured: between-group change, within-group (word-swap) change,
attribute-recall change, the effect against the random control, transfer
(every headline of any evaluator whose key or label says "transfer", "register" or
"first name": held-out prompts of other registers or with names, never used in selection),
stereotype preference, and capability (LAMBADA, else the general text). The
figures come from the built-in evaluators ``random_control`` (else
``output_bias``), ``attribute_recall``, ``stereotype_preference`` and
``capability``. Below the table: the evaluators' findings in plain words and
one computed verdict (``evidence_text.verdict``) with its rule.
"""

from __future__ import annotations

import math
from typing import Any

from ..core.contract.summary import findings, headlines, interval, metric
from .evidence_text import VERDICT_RULE, Evidence, Figure, verdict

#: a headline is a transfer figure when its key or label (underscores read as spaces) holds one of these
TRANSFER_WORDS = ("transfer", "register", "first name")


def _figure(metrics: dict[str, Any], evaluator: str, key: str) -> Figure:
    value = metric(metrics, evaluator, key)
    ci = interval(metrics, evaluator, key)
    return Figure(math.nan if value is None else float(value), *(ci if ci else (math.nan, math.nan)))


def _level(value: float | None, unit: str, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}g}{unit}"


def _divergence(metrics: dict[str, Any]) -> dict[str, tuple[str, str, str, str]]:
    """``{"between"|"within": (evaluator, base key, pruned key, reduction key)}`` of the run's JS figures."""
    if metric(metrics, "random_control", "between_base") is not None:
        return {"between": ("random_control", "between_base", "between_pruned", "between_reduction_pct"),
                "within": ("random_control", "within_base", "within_pruned", "within_reduction_pct")}
    if metric(metrics, "output_bias", "js_base") is not None:
        return {"between": ("output_bias", "js_base", "js_pruned", "js_reduction_pct"),
                "within": ("output_bias", "js_within_base", "js_within_pruned", "js_within_reduction_pct")}
    return {}


def evidence(metrics: dict[str, Any]) -> Evidence:
    """The figures the verdict reads, from a run's metrics (unknown where not measured)."""
    js = _divergence(metrics)
    between = _figure(metrics, js["between"][0], js["between"][3]) if js else Figure(math.nan)
    within = _figure(metrics, js["within"][0], js["within"][3]) if js else Figure(math.nan)
    beyond = metric(metrics, "random_control", "between_beyond_control")
    return Evidence(between, within, _figure(metrics, "random_control", "between_minus_within_pts"),
                    _figure(metrics, "attribute_recall", "accuracy_change"),
                    None if beyond is None else beyond == 1.0)


def evidence_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(measure, base, pruned, change with 95% CI)`` rows of the first table, in the order a reader needs."""
    rows: list[tuple[str, str, str, str]] = []
    js = _divergence(metrics)
    labels = {"between": "Next-token divergence between groups (held-out prompts, JS nats)",
              "within": "Next-token divergence between two words for the same group (word-swap floor)"}
    for name, (evaluator, base, pruned, reduction) in js.items():
        change = _figure(metrics, evaluator, reduction)
        if change.known:
            rows.append((labels[name], _level(metric(metrics, evaluator, base), ""),
                         _level(metric(metrics, evaluator, pruned), ""), change.negated().text("%")))
    recall = _figure(metrics, "attribute_recall", "accuracy_change")
    if recall.known:
        rows.append(("Attribute recall: names the group a prompt stated",
                     _level(metric(metrics, "attribute_recall", "accuracy_base"), "%", 3),
                     _level(metric(metrics, "attribute_recall", "accuracy_pruned"), "%", 3), recall.text(" pts")))
    rows += _control_rows(metrics)
    rows += _transfer_rows(metrics)
    stereo = _figure(metrics, "stereotype_preference", "pct_stereotyped_change")
    if stereo.known:
        rows.append(("Stereotyped sentence preferred (ideal 50%)",
                     _level(metric(metrics, "stereotype_preference", "pct_stereotyped_base"), "%", 3),
                     _level(metric(metrics, "stereotype_preference", "pct_stereotyped_pruned"), "%", 3),
                     stereo.text(" pts")))
    rows += _capability_rows(metrics)
    return rows


def _control_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    n = metric(metrics, "random_control", "n_draws")
    difference = _figure(metrics, "random_control", "between_vs_control_pts")
    if not n or not difference.known:
        return []
    draws = [metric(metrics, "random_control", f"control_between_reduction_pct_{k + 1}") for k in range(int(n))]
    changes = ", ".join(Figure(-d).text("%") for d in draws if d is not None)
    beyond = metric(metrics, "random_control", "between_beyond_control") == 1.0
    return [(f"Between-group change, method minus a random control ({int(n)} draws of the same per-layer counts: "
             f"{changes}); {'beyond' if beyond else 'not beyond'} every draw", "", "",
             difference.negated().text(" pts"))]


def _transfer_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for evaluator, h in headlines(metrics):
        text = f"{h['key']} {h['label']}".lower().replace("_", " ")
        if not any(word in text for word in TRANSFER_WORDS):
            continue
        value = _figure(metrics, evaluator, h["key"])
        if not value.known:
            continue
        unit, label = h.get("unit", ""), h["label"]
        if h.get("kind", "change") != "change":
            rows.append((label, "", "", _level(value.value, unit)))
            continue
        if "reduction" in h["key"]:  # the column holds signed changes, as the divergence rows above it
            value, label = value.negated(), label.replace(" reduction", "")
        rows.append((label, "", "", value.text(unit)))
    return rows


def _capability_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for task, label in (("lambada", "LAMBADA"), ("cloze", "Cloze")):
        acc = _figure(metrics, "capability", f"{task}_acc_change_pts")
        if acc.known:
            base = metric(metrics, "capability", f"{task}_acc_base")
            pruned = metric(metrics, "capability", f"{task}_acc_pruned")
            rows.append((f"{label} last-word accuracy", _level(None if base is None else 100 * base, "%", 3),
                         _level(None if pruned is None else 100 * pruned, "%", 3), acc.text(" pts")))
            ppl = _figure(metrics, "capability", f"{task}_ppl_change_pct")
            base_ppl = metric(metrics, "capability", f"{task}_ppl_base")
            rows.append((f"{label} last-word perplexity", _level(base_ppl, ""),
                         _level(metric(metrics, "capability", f"{task}_ppl_pruned"), ""), ppl.text("%")))
            return rows
    text = _figure(metrics, "capability", "text_ppl_change_pct")
    if text.known:
        rows.append(("Perplexity on the general English text",
                     _level(metric(metrics, "capability", "text_ppl_base"), ""),
                     _level(metric(metrics, "capability", "text_ppl_pruned"), ""), text.text("%")))
    return rows


def evidence_section(metrics: dict[str, Any]) -> list[str]:
    """Markdown lines: the first table, the findings in plain words, the verdict and its rule ([] when the run
    measured none of these figures)."""
    rows = evidence_rows(metrics)
    if not rows:
        return []
    lines = ["| measure | base | pruned | change [95% CI] |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(_cell(c) for c in row)} |" for row in rows]
    lines += [""] + [f"- {text}" for text in findings(metrics)]
    lines += ["", verdict(evidence(metrics)), "", f"*Rule: {VERDICT_RULE}.*", ""]
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
