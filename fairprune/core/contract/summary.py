"""The console summary of a run, read from its metrics dictionary (as written to ``metrics.json``).

Which figures are shown is decided by the evaluators: each evaluator's result
carries its declared headlines (``protocols.Headline``), so a third-party
evaluator's figures appear here without the core knowing its name. Completions
are shown from any evaluator table named ``generations`` (rows with ``prompt``,
``base`` and ``pruned``), and plain-words findings from any table named
``findings`` (rows with ``text``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the table name under which evaluators report completions side by side
GENERATIONS_TABLE = "generations"
#: the table name under which evaluators state what their figures mean, in plain words (rows with ``text``)
FINDINGS_TABLE = "findings"


def headlines(metrics: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """``[(evaluator, headline dict)]`` of every evaluator of a run, in evaluation order."""
    return [(name, h) for name, result in metrics.get("evaluation", {}).items() for h in result.get("headlines", [])]


def metric(metrics: dict[str, Any], evaluator: str, key: str) -> float | None:
    """One evaluator metric from a run's metrics dictionary, or None when absent."""
    return metrics.get("evaluation", {}).get(evaluator, {}).get("metrics", {}).get(key)


def interval(metrics: dict[str, Any], evaluator: str, key: str) -> tuple[float, float] | None:
    """The 95% interval of one metric, or None."""
    found = metrics.get("evaluation", {}).get(evaluator, {}).get("intervals", {}).get(key)
    return tuple(found) if found and None not in found else None


def headline_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value with 95% CI) for parameters removed and every headline the run measured."""
    pr = metrics["pruning"]
    rows = [("Parameters removed", f"{pr['params_removed']:,} of {pr['params_before']:,} "
                                   f"({pr['params_removed_pct']:.3f}%), {pr['neurons_removed']} neurons "
                                   f"in {pr['layers_touched']} layers")]
    rec = pr.get("recovery")
    if rec is not None:
        rows.append(("Recovery distillation", f"held-out KL to the unpruned model {rec['held_out_kl_before']:.4f} -> "
                                              f"{rec['held_out_kl_after']:.4f} nats in {rec['steps']} steps"
                                              + ("" if rec["kept"] else " (undone: it did not lower the KL)")))
    for evaluator, h in headlines(metrics):
        value = metric(metrics, evaluator, h["key"])
        if value is None:
            continue
        ci = interval(metrics, evaluator, h["key"])
        sign = "+" if h.get("kind", "change") == "change" else ""
        ci_text = f" (95% CI {ci[0]:{sign}.1f} to {ci[1]:{sign}.1f})" if ci else ""
        rows.append((h["label"], f"{value:{sign}.2f}{h.get('unit', '')}{ci_text}"))
    return rows


def generations(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """Completion rows (``prompt``, ``base``, ``pruned``) of every evaluator's ``generations`` table."""
    return [row for result in metrics.get("evaluation", {}).values()
            for row in result.get("tables", {}).get(GENERATIONS_TABLE, [])]


def findings(metrics: dict[str, Any]) -> list[str]:
    """The plain-words findings (``text`` of every evaluator's ``findings`` rows), in evaluation order."""
    return [row["text"] for result in metrics.get("evaluation", {}).values()
            for row in result.get("tables", {}).get(FINDINGS_TABLE, []) if row.get("text")]


def summary_text(metrics: dict[str, Any], output_dir: str | Path | None = None) -> str:
    """The short console summary of a run (parameters, headline figures, findings in words, completions)."""
    rows = headline_rows(metrics)
    width = max(len(label) for label, _ in rows)
    lines = ["fairprune run summary" + (f" ({output_dir})" if output_dir else "")]
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    for text in findings(metrics):
        lines += ["", f"  {text}"]
    for row in generations(metrics):
        lines += ["", f"  prompt: {row.get('prompt', '')}", f"    before: {(row.get('base') or '').strip()}",
                  f"    after:  {(row.get('pruned') or '').strip()}"]
    return "\n".join(lines)
