"""Human-readable outputs of a run: the console summary, ``report.md`` and the model card.

All figures are read from the metrics dictionary that is also written to
``metrics.json``, so what a person reads always matches what a program reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: (evaluator, metric, label, unit) of the headline figures, in display order
HEADLINES: tuple[tuple[str, str, str, str], ...] = (
    ("activation_bias", "reduction_pct", "Held-out activation bias (residual stream) reduction", "%"),
    ("activation_bias", "mlp_out_reduction_pct", "Held-out activation bias (MLP output) reduction", "%"),
    ("output_bias", "js_reduction_pct", "Held-out next-token JS divergence reduction", "%"),
    ("output_bias", "logprob_gap_reduction_pct", "Held-out continuation log-prob gap reduction", "%"),
    ("capability", "lambada_ppl_change_pct", "LAMBADA last-word perplexity change", "%"),
    ("capability", "lambada_acc_change_pts", "LAMBADA accuracy change", " pts"),
    ("capability", "text_ppl_change_pct", "Perplexity change on the general English text", "%"),
    ("capability", "cloze_acc_change_pts", "Cloze accuracy change", " pts"),
)


def metric(metrics: dict[str, Any], evaluator: str, key: str) -> float | None:
    """One evaluator metric from a run's metrics dictionary, or None when absent."""
    return metrics.get("evaluation", {}).get(evaluator, {}).get("metrics", {}).get(key)


def interval(metrics: dict[str, Any], evaluator: str, key: str) -> tuple[float, float] | None:
    found = metrics.get("evaluation", {}).get(evaluator, {}).get("intervals", {}).get(key)
    return tuple(found) if found else None


def headline_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value with 95% CI) for every headline figure the run measured."""
    pr = metrics["pruning"]
    rows = [("Parameters removed", f"{pr['params_removed']:,} of {pr['params_before']:,} "
                                   f"({pr['params_removed_pct']:.3f}%), {pr['neurons_removed']} neurons "
                                   f"in {pr['layers_touched']} layers")]
    for evaluator, key, label, unit in HEADLINES:
        value = metric(metrics, evaluator, key)
        if value is None:
            continue
        ci = interval(metrics, evaluator, key)
        ci_text = f" (95% CI {ci[0]:+.1f} to {ci[1]:+.1f})" if ci else ""
        rows.append((label, f"{value:+.2f}{unit}{ci_text}"))
    return rows


def generations(metrics: dict[str, Any]) -> list[dict[str, str]]:
    return metrics.get("evaluation", {}).get("generations", {}).get("tables", {}).get("generations", [])


def summary_text(metrics: dict[str, Any], output_dir: str | Path | None = None) -> str:
    """The short console summary of a run (bias, parameters, capability, completions)."""
    width = max(len(label) for label, _ in headline_rows(metrics))
    lines = ["fairprune run summary" + (f" ({output_dir})" if output_dir else "")]
    lines += [f"  {label:<{width}}  {value}" for label, value in headline_rows(metrics)]
    for row in generations(metrics):
        lines += ["", f"  prompt: {row.get('prompt', '')}", f"    before: {row.get('base', '').strip()}",
                  f"    after:  {row.get('pruned', '').strip()}"]
    return "\n".join(lines)


def _table(rows: list[tuple[str, str]], header: tuple[str, str] = ("", "")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def report_markdown(config: Any, metrics: dict[str, Any], evaluations: dict[str, Any]) -> str:
    """``report.md``: headline figures, each evaluator's section, the plan settings and the config."""
    parts = [f"# fairprune report: {config.model.source}", "",
             f"Config hash `{metrics['config_hash'][:12]}`; bias axes: {', '.join(config.bias.axes)}; "
             f"site `{config.bias.site}`, pooling `{config.bias.pooling}`, metric `{config.bias.metric.name}`; "
             f"scorer `{config.scoring.scorer.name}` (bias_weight {config.scoring.bias_weight}), importance "
             f"`{config.scoring.importance.name}`, pruner `{config.pruning.pruner.name}`, budget "
             f"{config.pruning.budget.describe()} ({config.pruning.selection} selection).", "",
             "## Headline figures (held-out prompts, base vs pruned)", "", _table(headline_rows(metrics), ("", "")), ""]
    for name, result in evaluations.items():
        if getattr(result, "summary", ""):
            parts += [f"## {name}", "", result.summary.strip(), ""]
    parts += ["## Config", "", "```yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).strip(),
              "```", ""]
    return "\n".join(parts)


def model_card(config: Any, metrics: dict[str, Any], base_model: str, license: str | None = None) -> str:
    """A Hugging Face style model card (``README.md``) stating the measured figures and limitations."""
    front: dict[str, Any] = {"base_model": base_model, "library_name": "transformers",
                             "pipeline_tag": "text-generation",
                             "tags": ["fairprune", "fairness", "bias-mitigation", "pruning", "structured-pruning"]}
    if license:
        front["license"] = license
    pr = metrics["pruning"]
    body = [
        f"# {Path(config.output.dir).name}", "",
        f"A fairness-pruned version of `{base_model}` made with fairprune. {pr['neurons_removed']} MLP neurons "
        f"({pr['params_removed_pct']:.3f}% of the parameters) were removed structurally: the neurons whose "
        f"activation moved most with the demographic word in prompt pairs of the axes "
        f"{', '.join(config.bias.axes)}, weighed against their importance.", "",
        "## Method", "",
        f"1. Prompt groups differing only in a demographic attribute ran through the base model; the "
        f"`{config.bias.site}` activation of every MLP neuron was pooled (`{config.bias.pooling}`) and scored with "
        f"`{config.bias.metric.name}`.",
        f"2. Importance `{config.scoring.importance.name}`; scorer `{config.scoring.scorer.name}` with bias weight "
        f"{config.scoring.bias_weight}.",
        f"3. Budget {config.pruning.budget.describe()}, {config.pruning.selection} selection; pruner "
        f"`{config.pruning.pruner.name}`. Layers may have different widths; load with "
        "`fairprune.load_pretrained(path)` (uniform widths also load with `AutoModelForCausalLM`).", "",
        "## Measured figures", "",
        "Bias figures are on held-out templates never used to choose neurons; 95% bootstrap intervals in brackets.",
        "", _table(headline_rows(metrics), ("measure", "value")), "",
        "## Limitations", "",
        "- Bias is measured on template prompts written for fairprune; a lower activation or output difference on "
        "them does not prove the model is fair in other contexts or languages.",
        "- Only the listed axes were targeted; other kinds of bias may be unchanged or larger.",
        "- Structural pruning changes the model: check the capability figures above for your use.",
        "- Inherits all limitations and the licence of the base model.", "",
    ]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(body)


def write_html_report(directory: str | Path) -> Path | None:
    """Write ``report.html`` beside ``report.md`` (plots embedded) from a run directory's files."""
    from ..viz.html import build_report

    return build_report(directory)
